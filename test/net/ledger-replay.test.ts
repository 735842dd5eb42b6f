/**
 * A coordinator that forgot its rounds (a second instance with the first one's CA, token key and
 * registry) starts a finished round of a job again, with a smaller cohort: over real gRPC and
 * mTLS, real ClientRunners whose contribution ledgers are files in their data dirs — reopened
 * after a restart — sit it out with `replayed-round` before advertising any key, so no masked
 * input of theirs reaches the replay; asked for the same plain input in the next round, they
 * sit that out too (`input-reused`).
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunnerEvent } from '../../client/agent/connection.js';
import { openLedger, type FileLedger } from '../../client/admission/ledger-file.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import type { ServerEvent } from '../../shared/protocol/messages.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';

const DIM = 8;
const N = 5;
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

describe('a replayed round over gRPC', () => {
  test('a restarted coordinator replays round 0 without one client: every client declines (replayed-round) and sends nothing', async () => {
    const root = await mkdtemp(join(tmpdir(), 'aegis-ledger-net-'));
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    const first = await startCoordinator();
    const clients = await enrollClients(first, N);
    const ledgersIn = async (): Promise<FileLedger[]> =>
      Promise.all(
        clients.map(async (c, i) => {
          await mkdir(join(root, `dev-${i}`), { recursive: true, mode: 0o700 });
          return (await openLedger(join(root, `dev-${i}`), c.identity.seed, { missing: 'create' })).ledger;
        }),
      );
    const events = new Map<string, RunnerEvent[]>(clients.map((c) => [c.clientId, []]));
    const onEvent = (id: string, e: RunnerEvent): void => void events.get(id)!.push(e);
    const start = async (c: Coordinator, who: Enrolled[], ledgers: FileLedger[]) => {
      const runners = startRunners(c, who, DIM, onEvent, (i) => ({ ledger: ledgers[i]! }));
      cleanups.push(async () => void (await Promise.all(runners.map((r) => r.stop()))));
      return runners;
    };

    const job = manifest({
      jobId: 'replayed',
      rounds: 3,
      round: { dim: DIM, cohort: N, neighbors: 4 },
      deadlines: { advertiseMs: 30_000, shareMs: 30_000, maskedMs: 30_000, consistencyMs: 30_000, unmaskMs: 30_000 },
    });
    const firstRunners = await start(first, clients, await ledgersIn());
    await waitFor(() => first.connectedClients().length === N, 20_000, 'five subscribers');
    await first.launch(job);
    const o = await first.outcomeOf('replayed', 0);
    expect(o.ok).toBe(true);
    if (o.ok) expect(Array.from(o.sum)).toEqual(Array.from(expectedSum([0, 1, 2, 3, 4], DIM)));
    await waitFor(() => clients.every((c) => events.get(c.clientId)!.some((e) => e.kind === 'round-ended' && e.roundIndex === 0 && e.ok)), 20_000, 'every client to hear the outcome');

    // Both sides restart: the coordinator has forgotten its rounds; the clients have their ledger files.
    await Promise.all(firstRunners.map((r) => r.stop()));
    const [host, port] = [first.address.split(':')[0]!, Number(first.address.split(':')[1])];
    await first.close();
    const delivered: ServerEvent['type'][] = [];
    const second = new Coordinator({
      ca: first.ca,
      tokens: TokenIssuer.fromSeed((first as unknown as { tokens: TokenIssuer }).tokens.exportSeed()),
      registry: first.registry,
      tap: (_id, type) => void delivered.push(type),
    });
    cleanups.push(() => second.close());
    await second.listen(`${host}:${port}`, '127.0.0.1:0');
    for (const list of events.values()) list.length = 0;
    const cohort = clients.slice(0, N - 1);
    await start(second, cohort, (await ledgersIn()).slice(0, N - 1));
    await waitFor(() => second.connectedClients().length === N - 1, 30_000, 'four clients back');

    // The replay: the same manifest, round 0 again, a cohort without the last client.
    const replay = await second.launch(job);
    expect(replay.roundIndex).toBe(0);
    expect(replay.cohort).toEqual(cohort.map((c) => c.clientId));
    const satOut = (id: string, code: string): boolean => events.get(id)!.some((e) => e.kind === 'sat-out' && e.roundIndex === 0 && e.code === code);
    await waitFor(() => cohort.every((c) => satOut(c.clientId, 'replayed-round')), 20_000, 'every client to sit the replay out');
    const replayed = await second.outcomeOf('replayed', 0);
    expect(replayed.ok).toBe(false);
    // No key was advertised, so the round never reached the phase that asks for masked inputs.
    for (const c of cohort) expect(events.get(c.clientId)!.filter((e) => e.kind === 'joined')).toEqual([]);
    expect(delivered).not.toContain('share-broadcast');

    // The next round asks for the same plain inputs again: sat out as well.
    const next = await second.launch(job);
    expect(next.roundIndex).toBe(1);
    await waitFor(() => cohort.every((c) => events.get(c.clientId)!.some((e) => e.kind === 'sat-out' && e.roundIndex === 1 && e.code === 'input-reused')), 20_000, 'input-reused');
    expect((await second.outcomeOf('replayed', 1)).ok).toBe(false);
    expect(delivered).not.toContain('share-broadcast');

    // What each client's ledger says: round 0 joined and contributed, nothing else.
    const after = await ledgersIn();
    for (const l of after) {
      const j = l.view().jobs[0]!;
      expect(j).toMatchObject({ jobId: 'replayed', joined: [[0, 0]], contributions: 1 });
      expect(j.recent).toEqual([expect.objectContaining({ roundIndex: 0, contributedAt: expect.any(String), outcome: 'ok' })]);
    }
  });
});
