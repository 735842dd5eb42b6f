/** The coordinator and in-process clients over real gRPC, TLS 1.3 and mTLS on loopback. */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { ClientRunner } from '../../client/agent/connection.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';

let c: Coordinator;
let clients: Enrolled[];
let runners: ClientRunner[] = [];

beforeAll(async () => {
  c = await startCoordinator();
  clients = await enrollClients(c, 6);
});

afterAll(async () => {
  await Promise.all(runners.map((r) => r.stop()));
  await c.close();
});

describe('rounds over gRPC', () => {
  test('six enrolled clients complete a round and the coordinator learns the exact sum', async () => {
    const dim = 1000;
    runners = startRunners(c, clients, dim);
    await waitFor(() => c.connectedClients().length === 6, 20_000, 'six subscribers');
    const launched = await c.launch(manifest({ round: { dim, cohort: 6, neighbors: 5 } }));
    expect(launched.cohort).toHaveLength(6);
    const o = await c.outcomeOf('job-1', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect(o.survivors).toHaveLength(6);
    expect(Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([0, 1, 2, 3, 4, 5], dim).buffer))).toBe(true);
    await waitFor(() => runners.every((r) => r.agent.history.length === 1), 10_000, 'outcomes at every client');
    expect(runners.every((r) => r.agent.history[0]!.ok)).toBe(true);
    // A finished round reports its duration: the status does not keep counting.
    const before = c.statusOf('job-1', 0).elapsedMs;
    await new Promise((r) => setTimeout(r, 50));
    expect(c.statusOf('job-1', 0)).toMatchObject({ finished: true, ok: true, elapsedMs: before });
  });

  test('with room for one vector at a time, the coordinator admits one upload at a time and the sum is still exact', async () => {
    const c1 = await startCoordinator({ uploadBudgetBytes: 1 });
    const cl = await enrollClients(c1, 5);
    const rs = startRunners(c1, cl, 5000);
    try {
      await waitFor(() => c1.connectedClients().length === 5, 20_000, 'five subscribers');
      await c1.launch(manifest({ round: { dim: 5000, cohort: 5, neighbors: 4 } }));
      const o = await c1.outcomeOf('job-1', 0);
      expect(o.ok).toBe(true);
      if (o.ok) expect(Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([0, 1, 2, 3, 4], 5000).buffer))).toBe(true);
      expect(c1.uploadPeakOf('job-1', 0)).toEqual({ peak: 1, slots: 1 });
    } finally {
      await Promise.all(rs.map((r) => r.stop()));
      await c1.close();
    }
  });
});
