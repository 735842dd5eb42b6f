/**
 * Aggregation groups in the coordinator's own rounds, over real gRPC/TLS (round.groupSize): a
 * cohort larger than the group size runs as several SecAgg(+) instances whose sums add; every
 * member is sent its group's parameters; a group whose clients vanish aborts alone and the round
 * completes from the others.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import { planGroups } from '../../coordinator/round/groups.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { sha256 } from '../../shared/protocol/session.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';

const DIM = 8;
let c: Coordinator | undefined;
let runners: ClientRunner[] = [];
afterEach(async () => {
  for (const r of runners) r.stop();
  runners = [];
  await c?.close();
  c = undefined;
});

const sumEquals = (a: Uint32Array, b: Uint32Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('a round in aggregation groups', () => {
  test('9 clients in groups of at most 6: two instances, each member sent its group parameters, the sums add up exactly', async () => {
    c = await startCoordinator();
    const clients = await enrollClients(c, 9);
    const satOut: string[] = [];
    runners = startRunners(c, clients, DIM, (id, e: RunnerEvent) => e.kind === 'sat-out' && satOut.push(id));
    await waitFor(() => c!.connectedClients().length === 9, 20_000, 'all clients connected');
    const m = manifest({ jobId: 'grouped', round: { dim: DIM, cohort: 9, groupSize: 6 } });
    const r = await c.launch(m, { gatherMs: 5_000 });
    expect(r.cohort).toHaveLength(9);
    const o = await c.outcomeOf('grouped', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual(clients.map((x) => x.clientId).sort());
    expect(sumEquals(o.sum, expectedSum([0, 1, 2, 3, 4, 5, 6, 7, 8], DIM))).toBe(true);
    const groups = planGroups(r.cohort, 6, `${Buffer.from(sha256(m)).toString('hex')}:0`);
    expect(groups.map((g) => g.length).sort()).toEqual([4, 5]);
    // Every client took its group's parameters (none sat the round out over a parameter check).
    expect(satOut).toEqual([]);
  });

  test('a cohort of no more than half the group size is refused with too-few-clients (clients refuse such groups too)', async () => {
    c = await startCoordinator();
    const clients = await enrollClients(c, 6);
    runners = startRunners(c, clients, DIM);
    await waitFor(() => c!.connectedClients().length === 6, 20_000, 'all clients connected');
    // t = 3 would take 4 clients; a group size of 12 takes 7 (more than half of min(12, 20)).
    const m = manifest({ jobId: 'too-small', round: { dim: DIM, cohort: 20, groupSize: 12, neighbors: 4, threshold: 3 } });
    await expect(c.launch(m, { gatherMs: 200 })).rejects.toMatchObject({ code: 'too-few-clients', message: expect.stringMatching(/6 clients connected, the round needs at least 7 .*more than half the group size/) });
    expect(() => c!.statusOf('too-small')).toThrow(/no job/);
  });

  test('a group whose clients vanish aborts alone: the round completes with the other group exactly', async () => {
    c = await startCoordinator({ lostAfterMs: 500 });
    const clients = await enrollClients(c, 9);
    runners = startRunners(c, clients, DIM);
    await waitFor(() => c!.connectedClients().length === 9, 20_000, 'all clients connected');
    const m = manifest({ jobId: 'half-lost', round: { dim: DIM, cohort: 9, groupSize: 6 }, deadlines: { advertiseMs: 8_000, shareMs: 8_000, maskedMs: 8_000, consistencyMs: 8_000, unmaskMs: 8_000 } });
    const r = await c.launch(m, { gatherMs: 5_000 });
    const groups = planGroups(r.cohort, 6, `${Buffer.from(sha256(m)).toString('hex')}:0`);
    // The clients of the 4-member group go away as soon as the round has started.
    const leaving = new Set(groups.find((g) => g.length === 4)!);
    clients.forEach((x, i) => leaving.has(x.clientId) && void runners[i]!.stop());
    const o = await c.outcomeOf('half-lost', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    const staying = groups.find((g) => g.length === 5)!;
    expect([...o.survivors].sort()).toEqual([...staying].sort());
    const indices = clients.map((x, i) => (staying.includes(x.clientId) ? i : -1)).filter((i) => i >= 0);
    expect(sumEquals(o.sum, expectedSum(indices, DIM))).toBe(true);
  });
});
