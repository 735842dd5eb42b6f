/**
 * Declined rounds over real gRPC/TLS with real client runners: clients that sit a round out —
 * in audit mode without the operator's approval, or with nothing to contribute — tell the
 * coordinator with a decline, and it stops waiting for them. Phase 0 closes as soon as only
 * decliners are missing (the coordinator's own phase timeline shows it, against a one-minute
 * advertise deadline); round status, the job list, the dashboard API and /metrics report the
 * declines by reason, and nothing names a client. A training job whose round fails because
 * clients await approval fails at once and says what to do; done, the job runs on.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditBook } from '../../client/audit/audit.js';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import type { TrainingRound } from '../../client/admission/training-round.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { CoordinatorMetrics } from '../../coordinator/service/metrics.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import { serveMetrics, type MetricsServer } from '../../shared/metrics/serve.js';
import { errorReasonToProto, phaseToProto } from '../../shared/rpc/convert.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';
import { dashLogin } from '../support/dashboard-http.js';

const DIM = 8;
/** Phase 0 may wait a minute; every other phase 20 s. A round that ends sooner closed phase 0 early. */
const DEADLINES = { advertiseMs: 60_000, shareMs: 20_000, maskedMs: 20_000, consistencyMs: 20_000, unmaskMs: 20_000 };

let c: Coordinator | undefined;
let runners: ClientRunner[] = [];
let metricsServer: MetricsServer | undefined;
afterEach(async () => {
  await Promise.all(runners.map((r) => r.stop()));
  runners = [];
  await metricsServer?.close();
  metricsServer = undefined;
  await c?.close();
  c = undefined;
});

/** Audit books in fresh data dirs, in audit mode: each job then needs the operator's approval. */
async function auditBooks(n: number): Promise<AuditBook[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const book = await AuditBook.open(await mkdtemp(join(tmpdir(), 'aegis-declines-')));
      await book.enter('operator', 'declines test');
      return book;
    }),
  );
}

/** How long a round's phase 0 stayed open, by the coordinator's phase timeline. */
function phase0Ms(coordinator: Coordinator, jobId: string, round: number): number {
  const { timeline } = coordinator.timingOf(jobId, round);
  expect(timeline[0]!.phase).toBe(Phase.AdvertiseKeys);
  return timeline[1]!.at - timeline[0]!.at;
}

/** The dashboard API's answer for `path`, after a real login. */
async function dashboardGet(coordinator: Coordinator, path: string): Promise<string> {
  const dash = await coordinator.startDashboard('127.0.0.1:0');
  const { token } = coordinator.issueDashboardToken(60_000);
  const session = await dashLogin(dash.url, token);
  const res = await fetch(`http://${dash.address}${path}`, { headers: { cookie: `aegis_dashboard=${session}` } });
  expect(res.status).toBe(200);
  return res.text();
}

const declineCount = (reason: Parameters<typeof errorReasonToProto>[0], clients: number) => ({ reason: errorReasonToProto(reason), clients });
const plain = (list: readonly admin.DeclineCount[]) => list.map((d) => ({ reason: d.reason, clients: d.clients }));

describe('a plain round some clients decline', () => {
  test('phase 0 closes once only decliners are missing; status, list, dashboard and /metrics show the declines by reason', async () => {
    const metrics = new CoordinatorMetrics({ defaultMetrics: false });
    c = await startCoordinator({ metrics });
    metricsServer = await serveMetrics(metrics, '127.0.0.1:0');
    // Eight clients: 0..4 take part; 5 and 6 are in audit mode (nobody approved the job on
    // them); 7 has no input for a plain round.
    const clients = await enrollClients(c, 8, 'plain');
    const books = await auditBooks(2);
    const events: { id: string; e: RunnerEvent }[] = [];
    runners = startRunners(c, clients, DIM, (id, e) => events.push({ id, e }), (i) => (i === 5 || i === 6 ? { audit: books[i - 5]! } : i === 7 ? { input: undefined } : {}));
    await waitFor(() => c!.connectedClients().length === 8, 20_000, 'clients to connect');

    // n = 8, t = 4: five advertisements are enough.
    await c.launch(manifest({ jobId: 'declined', round: { dim: DIM, cohort: 8 }, deadlines: DEADLINES }), { gatherMs: 5_000 });
    const o = await c.outcomeOf('declined', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual(clients.slice(0, 5).map((x) => x.clientId));
    expect(Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([0, 1, 2, 3, 4], DIM).buffer))).toBe(true);
    // The sat-out clients' own reasons; the one without input declines with its own code.
    const satOut = new Map(events.filter((x) => x.e.kind === 'sat-out').map((x) => [x.id, x.e.kind === 'sat-out' ? x.e.code : '']));
    expect(satOut.get(clients[5]!.clientId)).toBe('approval-required');
    expect(satOut.get(clients[6]!.clientId)).toBe('approval-required');
    const noInput = satOut.get(clients[7]!.clientId)!;
    expect(['no-input', 'invalid-argument']).toContain(noInput);

    // Phase 0 did not wait out its minute: share-keys began as soon as the answers were in.
    expect(phase0Ms(c, 'declined', 0)).toBeLessThan(DEADLINES.advertiseMs / 4);

    const s = c.statusOf('declined');
    expect(s).toMatchObject({ ok: true, finished: true, invited: 8, dropouts: 0 });
    expect(plain(s.declines)).toEqual([declineCount('approval-required', 2), declineCount(noInput as 'no-input', 1)]);
    expect(s.clientsPerPhase[0]).toMatchObject({ phase: phaseToProto(Phase.AdvertiseKeys), clients: 5, expected: 8 });
    expect(plain(c.listJobs()[0]!.declines)).toEqual(plain(s.declines));

    const detail = await dashboardGet(c, '/api/jobs/declined');
    const round = (JSON.parse(detail) as { rounds: { declines: unknown; dropouts: number }[] }).rounds[0]!;
    expect(round.declines).toEqual([
      { reason: 'approval-required', clients: 2 },
      { reason: noInput, clients: 1 },
    ]);
    expect(round.dropouts).toBe(0);
    for (const x of clients) expect(detail).not.toContain(x.clientId);

    const text = await (await fetch(`http://${metricsServer.address}/metrics`)).text();
    expect(text).toMatch(/^aegis_round_declines_total\{reason="approval-required"\} 2$/m);
    expect(text).toMatch(new RegExp(`^aegis_round_declines_total\\{reason="${noInput}"\\} 1$`, 'm'));
    expect(text).toMatch(/^aegis_dropouts_total\{phase="advertise-keys"\} 0$/m);
    for (const x of clients) expect(text).not.toContain(x.clientId);
  });
});

describe('a training job whose clients await approval', () => {
  test('fails at once saying how many await approval and what to do; approved and launched again, it runs on', async () => {
    c = await startCoordinator();
    // Six clients: 0 and 1 train; 2..4 are in audit mode; 5 has no training data.
    const clients = await enrollClients(c, 6, 'trainer');
    const books = await auditBooks(3);
    const trained: number[] = [];
    const train = async (round: TrainingRound) => {
      trained.push(round.roundIndex);
      return { values: new Float32Array(round.manifest.round.dim).fill(0.25), weight: 2 };
    };
    runners = startRunners(c, clients, DIM, undefined, (i) => ({ input: undefined, ...(i < 2 ? { train } : {}), ...(i >= 2 && i <= 4 ? { train, audit: books[i - 2]! } : {}) }));
    await waitFor(() => c!.connectedClients().length === 6, 20_000, 'clients to connect');

    const initial = new Float32Array(DIM).fill(0.5);
    const bytes = manifest({
      jobId: 'audited-training',
      rounds: 2,
      round: { dim: DIM, cohort: 6, clip: 4, bits: 16 },
      deadlines: DEADLINES,
      model: { format: 'tfjs-layers', architecture: { class_name: 'Sequential' }, initialWeightsSha256: createHash('sha256').update(weightBytes(initial)).digest('hex') },
      training: { maxAbortedRounds: 3 },
    });
    const hash = createHash('sha256').update(bytes).digest('hex');
    await c.launch(bytes, { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    // n = 6, t = 3: four are needed; two advertised and three await approval.
    expect(await c.trainingFinished('audited-training')).toBe('failed');
    const s = c.statusOf('audited-training');
    const todo = `3 of 6 clients await approval (audit mode): approve the job on each of them (aegis client approve audited-training --manifest-sha256 ${hash}), then launch it again`;
    const others = /; 1 declined: (no-input|invalid-argument)$/;
    // No retry until it gives up (maxAbortedRounds 3): one round, aborted, and the job failed.
    expect(s).toMatchObject({ roundIndex: 0, finished: true, ok: false, jobState: admin.JobState.FAILED });
    expect(s.training).toMatchObject({ state: 'failed', roundsAborted: 1, roundsCompleted: 0 });
    expect(s.training!.detail.startsWith(todo)).toBe(true);
    expect(s.training!.detail).toMatch(others);
    // The round's own abort detail says the same after why it aborted.
    expect(s.detail).toMatch(/^2 clients advertised keys, at least 4 are needed; 3 of 6 clients await approval \(audit mode\)/);
    expect(phase0Ms(c, 'audited-training', 0)).toBeLessThan(DEADLINES.advertiseMs / 4);

    // What the detail says to do: approve on each client, then launch again.
    for (const b of books) await b.approve('audited-training', hash);
    await c.launch(bytes, { gatherMs: 5_000 });
    expect(await c.trainingFinished('audited-training')).toBe('completed');
    const after = c.statusOf('audited-training');
    expect(after).toMatchObject({ roundIndex: 1, ok: true, jobState: admin.JobState.COMPLETED });
    expect(after.training).toMatchObject({ state: 'completed', roundsCompleted: 1, roundsAborted: 1, model: { version: 1 } });
    expect(after.declines.map((d) => d.clients)).toEqual([1]);
    expect(c.resultOf('audited-training', 1).survivors).toHaveLength(5);
    expect(trained.filter((r) => r === 1)).toHaveLength(5);
    // A completed job is not launched a third time.
    await expect(c.launch(bytes, { gatherMs: 1_000 })).rejects.toMatchObject({ code: 'already-exists' });
  });
});
