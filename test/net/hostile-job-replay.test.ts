/**
 * A coordinator that replays, over real gRPC and TLS 1.3: an honest coordinator runs a round of
 * a signed job with real ClientRunners (both registries, audit books), then the coordinator —
 * restarted with its CA, token key and client registry but no memory of the rounds, or gone
 * rogue (test/support/hostile-coordinator.ts) — offers the clients what would let it difference
 * two sums: the same round again with a different cohort, the same plain input in a later round,
 * a round past the manifest's last, an older model. Every client refuses with a typed decline,
 * the replayed round never completes, and no masked input leaves a client. The last test does it
 * with `aegis client run` processes, one killed with SIGKILL between the rounds and restarted.
 */
import { afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { AuditBook } from '../../client/audit/audit.js';
import { enrollWithToken, type ClientRunner, type RunnerEvent } from '../../client/agent/connection.js';
import { openOrCreateIdentity, saveEnrollment } from '../../client/agent/data-dir.js';
import { createCa, type CaCertificate } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import { errorReasonFromProto } from '../../shared/rpc/convert.js';
import { readSnapshot } from '../../shared/trust/registry-dir.js';
import { TrustBook } from '../../shared/trust/trust-book.js';
import { enrollClients, expectedSum, manifest, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { HostileCoordinator } from '../support/hostile-coordinator.js';
import { hex, publisherRegistry, sha256, signedJob as signJob, signedRoundStart, type SignedJob } from '../support/signed-jobs.js';

const CLIENT_PASSPHRASE = 'replay test passphrase, long enough';
const CLI = resolve('dist/bin/aegis.js');
const DIM = 6;
const N = 4;
const publisher = randomBytes(32);
const sha = sha256;
const DEADLINES = { advertiseMs: 20_000, shareMs: 10_000, maskedMs: 10_000, consistencyMs: 10_000, unmaskMs: 10_000 };

let registryDir: string;
let ca: CaCertificate;
let tokenSeed: Uint8Array;
let registry: Registry;
let clients: Enrolled[];

/** A coordinator process as the operator runs it: the shared CA, token key, client registry and publisher registry. */
async function coordinator(): Promise<Coordinator> {
  const c = new Coordinator({ ca, tokens: TokenIssuer.fromSeed(tokenSeed), registry, registryDir });
  await c.listen('127.0.0.1:0', '127.0.0.1:0');
  return c;
}

beforeAll(async () => {
  registryDir = await publisherRegistry(publisher);
  ca = await createCa({ name: 'Aegis replay test CA' });
  tokenSeed = TokenIssuer.create().exportSeed();
  registry = new Registry();
  const c = await coordinator();
  clients = await enrollClients(c, N + 1, 'member');
  await c.close();
});

const signedJob = (over: Parameters<typeof manifest>[0]): SignedJob => signJob(publisher, { deadlines: DEADLINES, ...over });

interface Fleet {
  runners: ClientRunner[];
  events: { id: string; e: RunnerEvent }[];
  ids: string[];
  closers: (() => Promise<unknown>)[];
}
let fleet: Fleet | undefined;
afterEach(async () => {
  if (!fleet) return;
  await Promise.all(fleet.runners.map((r) => r.stop()));
  for (const close of fleet.closers) await close();
  fleet = undefined;
});

/** N trusting runners that use `addresses` in order (the next one when a coordinator goes away). */
async function runnersOn(addresses: string[], opts: { train?: boolean } = {}): Promise<Fleet> {
  const members = clients.slice(0, N);
  const dirs = await Promise.all(members.map(() => mkdtemp(join(tmpdir(), 'aegis-replay-client-'))));
  const audits = await Promise.all(dirs.map((d) => AuditBook.open(d)));
  const events: Fleet['events'] = [];
  const target = { address: addresses.join(','), ca: { certificatePem: ca.certificatePem } } as unknown as Parameters<typeof startRunners>[0];
  const runners = startRunners(target, members, DIM, (id, e) => events.push({ id, e }), (i) => ({
    trust: { backup: () => readSnapshot(registryDir), book: TrustBook.open(dirs[i]!) },
    audit: audits[i]!,
    ...(opts.train ? { train: async () => ({ values: new Float32Array(DIM).fill(0.25), weight: 1 }) } : {}),
  }));
  fleet = { runners, events, ids: members.map((m) => m.clientId), closers: [] };
  return fleet;
}

/** The declines of a round by reason, from the coordinator's own status. */
function declinesOf(c: Coordinator, jobId: string, round: number): Record<string, number> {
  const s = c.statusOf(jobId, round);
  return Object.fromEntries(s.declines.map((d: admin.DeclineCount) => [errorReasonFromProto(d.reason), d.clients]));
}

describe('a coordinator that replays is refused by every client', () => {
  it('a finished round replayed by a restarted coordinator with a different cohort: every member declines replayed-round, nothing is summed', async () => {
    const honest = await coordinator();
    const replayer = await coordinator();
    const f = await runnersOn([honest.address, replayer.address]);
    f.closers.push(() => replayer.close());
    const job = signedJob({ jobId: 'replayed', rounds: 3, round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    await waitFor(() => honest.connectedClients().length === N, 20_000, 'clients on the honest coordinator');
    await honest.launch(new Uint8Array(), { signedManifest: job.envelope, gatherMs: 5_000 });
    const first = await honest.outcomeOf('replayed', 0);
    expect(first.ok).toBe(true);
    if (first.ok) expect(Array.from(first.sum)).toEqual(Array.from(expectedSum([0, 1, 2, 3], DIM)));
    // The coordinator restarts and forgets; one client is left out of the replay.
    await honest.close();
    await f.runners[N - 1]!.stop();
    await waitFor(() => replayer.connectedClients().length === N - 1, 20_000, 'clients on the restarted coordinator');
    await replayer.launch(new Uint8Array(), { signedManifest: job.envelope, gatherMs: 5_000, roundIndex: 0 });
    const replay = await replayer.outcomeOf('replayed', 0);
    expect(replay.ok).toBe(false);
    expect(declinesOf(replayer, 'replayed', 0)).toEqual({ 'replayed-round': N - 1 });
    expect(() => replayer.resultOf('replayed', 0)).toThrow();
    // Phase 0 closed on the declines, long before its deadline.
    const t = replayer.timingOf('replayed', 0);
    expect(t.timeline[1]!.at - t.timeline[0]!.at).toBeLessThan(DEADLINES.advertiseMs);
  });

  it('the same plain input asked for twice: the next round of the job is declined with input-reused', async () => {
    const c = await coordinator();
    const f = await runnersOn([c.address]);
    f.closers.push(() => c.close());
    const job = signedJob({ jobId: 'twice', rounds: 2, round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    await waitFor(() => c.connectedClients().length === N, 20_000, 'clients');
    await c.launch(new Uint8Array(), { signedManifest: job.envelope, gatherMs: 5_000 });
    expect((await c.outcomeOf('twice', 0)).ok).toBe(true);
    await c.launch(new Uint8Array(), { signedManifest: job.envelope, gatherMs: 5_000 });
    expect((await c.outcomeOf('twice', 1)).ok).toBe(false);
    expect(declinesOf(c, 'twice', 1)).toEqual({ 'input-reused': N });
  });

  it('a round past the manifest’s last is declined with round-out-of-range', async () => {
    const h = await HostileCoordinator.start(ca, clients, registryDir);
    const f = await runnersOn([h.address]);
    f.closers.push(() => h.close());
    const job = signedJob({ jobId: 'past-the-end', rounds: 2, round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    await waitFor(() => h.connected().length === N, 20_000, 'clients on the attacker');
    h.startRound(f.ids, () => signedRoundStart(job, f.ids, 2));
    await waitFor(() => f.ids.every((id) => h.sent('decline', id).some((d) => d.reason === 'round-out-of-range')), 20_000, 'declines');
    expect(h.sent('advertise-keys')).toEqual([]);
  });

  it('a model version rolled back after real training rounds is declined with model-rollback; the version already trained from, with replayed-round', async () => {
    const c = await coordinator();
    const h = await HostileCoordinator.start(ca, clients, registryDir);
    const f = await runnersOn([c.address, h.address], { train: true });
    f.closers.push(() => h.close());
    const w0 = new Uint8Array(new Float32Array(DIM).fill(0.5).buffer);
    const job = signedJob({
      jobId: 'rolled-back',
      rounds: 6,
      round: { dim: DIM, cohort: N, clip: 8, bits: 16 },
      model: { format: 'tfjs-layers', architecture: { class_name: 'Sequential', config: {} }, initialWeightsSha256: hex(sha(w0)) },
      training: { maxAbortedRounds: 0 },
    });
    await waitFor(() => c.connectedClients().length === N, 20_000, 'clients');
    await c.launch(new Uint8Array(), { signedManifest: job.envelope, initialWeights: w0, gatherMs: 5_000 });
    // Two honest rounds: every client trains from version 0, then from version 1.
    expect((await c.outcomeOf('rolled-back', 0)).ok).toBe(true);
    await waitFor(() => c.modelsOf('rolled-back').length >= 2 && c.listJobs()[0]!.roundIndex >= 1, 20_000, 'round 1 to start');
    expect((await c.outcomeOf('rolled-back', 1)).ok).toBe(true);
    c.cancelJob('rolled-back', 'the test takes over as the attacker');
    await c.close();
    await waitFor(() => h.connected().length === N, 20_000, 'clients on the attacker');
    const offer = (roundIndex: number, version: number, weights: Uint8Array): void => {
      h.models.set(`${hex(job.hash)}:${version}`, weights);
      h.startRound(f.ids, () => ({ ...signedRoundStart(job, f.ids, roundIndex), model: { version, sha256: sha(weights) } }));
    };
    // Version 0: older than the one every client trained from last.
    offer(4, 0, w0);
    await waitFor(() => f.ids.every((id) => h.sent('decline', id).some((d) => d.reason === 'model-rollback')), 20_000, 'model-rollback declines');
    // Version 1 again, as if it were new: the clients already contributed from it.
    const models = c.modelsOf('rolled-back');
    offer(5, 1, new Uint8Array(models[1]!.weights.buffer.slice(models[1]!.weights.byteOffset, models[1]!.weights.byteOffset + models[1]!.weights.byteLength)));
    await waitFor(() => f.ids.every((id) => h.sent('decline', id).some((d) => d.reason === 'replayed-round' || d.reason === 'model-rollback') && h.sent('decline', id).length >= 2), 20_000, 'declines of the repeated version');
    expect(h.sent('advertise-keys')).toEqual([]);
  });

});

describe('a client killed with SIGKILL between two rounds', () => {
  it('still refuses the replay after its restart: its ledger is on its disk', async () => {
    const root = await mkdtemp(join(tmpdir(), 'aegis-replay-cli-'));
    const honest = await coordinator();
    const replayer = await coordinator();
    const procs = new Map<string, ChildProcess>();
    const spawnClient = (id: string, dir: string, addresses: string): ChildProcess => {
      const child = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', dir, '--input', join(dir, 'update.json'), '--backup-registry', registryDir, '--coordinator', addresses], {
        env: { ...process.env, AEGIS_PASSPHRASE: CLIENT_PASSPHRASE, AEGIS_LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'ignore', 'ignore'],
      });
      procs.set(id, child);
      return child;
    };
    try {
      const ids: string[] = [];
      const dirs = new Map<string, string>();
      for (let i = 0; i < N; i++) {
        const id = `process-${i}`;
        const dir = join(root, id);
        const { identity } = await openOrCreateIdentity(dir, CLIENT_PASSPHRASE);
        const { token } = await honest.createInvite();
        const r = await enrollWithToken({ enrollAddress: honest.enrollAddress, caPem: ca.certificatePem, token, identity, clientId: id });
        await saveEnrollment(dir, { config: { version: 1, clientId: id, coordinator: honest.address, enrollAddress: honest.enrollAddress }, certificateDer: r.certificateDer, caDer: r.caDer });
        await writeFile(join(dir, 'update.json'), JSON.stringify({ values: Array.from({ length: DIM }, (_, j) => (i + j) / 100), weight: 1 }));
        ids.push(id);
        dirs.set(id, dir);
        spawnClient(id, dir, `${honest.address},${replayer.address}`);
      }
      await waitFor(() => honest.connectedClients().length === N, 60_000, 'client processes on the honest coordinator');
      const job = signedJob({ jobId: 'killed', rounds: 3, round: { dim: DIM, cohort: N, clip: 1, bits: 16 } });
      await honest.launch(new Uint8Array(), { signedManifest: job.envelope, gatherMs: 5_000 });
      expect((await honest.outcomeOf('killed', 0)).ok).toBe(true);
      // Between the rounds: one client process is killed outright, then started again.
      const victim = ids[0]!;
      const dead = procs.get(victim)!;
      const exited = new Promise((r) => dead.once('exit', r));
      dead.kill('SIGKILL');
      await exited;
      await honest.close();
      spawnClient(victim, dirs.get(victim)!, replayer.address);
      await waitFor(() => replayer.connectedClients().length === N, 60_000, 'every client process, the restarted one too, on the restarted coordinator');
      await replayer.launch(new Uint8Array(), { signedManifest: job.envelope, gatherMs: 5_000, roundIndex: 0 });
      expect((await replayer.outcomeOf('killed', 0)).ok).toBe(false);
      expect(declinesOf(replayer, 'killed', 0)).toEqual({ 'replayed-round': N });
    } finally {
      for (const p of procs.values()) p.kill('SIGKILL');
      await replayer.close();
    }
  });
});
