/**
 * Retention of round records (coordinator/hosts/retired-host.ts, `--retention-round-days`): a
 * round that ended longer ago than the retention forgets which clients took part — cohort,
 * per-phase members, survivors and the protocol state — while its counts, timeline, outcome
 * and sum stay. The clock is moved, not waited for.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import type { ClientRunner } from '../../client/agent/connection.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';

const DIM = 6;
const DAY = 86_400_000;
let c: Coordinator | undefined;
let runners: ClientRunner[] = [];
afterEach(async () => {
  for (const r of runners) r.stop();
  runners = [];
  await c?.close();
  c = undefined;
});

/** Every string in a value (deep), to look for client ids in what the coordinator still holds. */
function strings(v: unknown, seen = new Set<unknown>()): string[] {
  if (typeof v === 'string') return [v];
  if (typeof v !== 'object' || v === null || seen.has(v) || ArrayBuffer.isView(v)) return [];
  seen.add(v);
  if (v instanceof Map) return [...v.entries()].flatMap((e) => strings(e, seen));
  if (v instanceof Set) return [...v].flatMap((e) => strings(e, seen));
  return Object.values(v).flatMap((x) => strings(x, seen));
}

describe('retention.round_days', () => {
  test('a round past its retention forgets who took part; counts, outcome and sum stay; a recent round is kept whole', async () => {
    // Real time plus an offset the test moves (certificates and tokens are checked on this clock).
    let offset = 0;
    c = await startCoordinator({ clock: () => Date.now() + offset, roundRetentionMs: 7 * DAY });
    const clients = await enrollClients(c, 4, 'retained');
    // Two jobs with the same inputs: the clients opt in to contribute them again.
    runners = startRunners(c, clients, DIM, undefined, () => ({ inputReuse: true }));
    await waitFor(() => c!.connectedClients().length === 4, 20_000, 'all clients connected');
    await c.launch(manifest({ jobId: 'old', round: { dim: DIM, cohort: 4, neighbors: 3 } }), { gatherMs: 5_000 });
    const o = await c.outcomeOf('old', 0);
    expect(o.ok).toBe(true);
    const ids = clients.map((x) => x.clientId).sort();
    const before = { status: c.statusOf('old'), result: c.resultOf('old') };
    expect([...before.result.survivors].sort()).toEqual(ids);
    expect(before.result.survivorCount).toBe(4);

    // A second round, a moment later (certificates, tokens and manifests stay valid: the clock
    // moves only once both rounds are over).
    await new Promise((r) => setTimeout(r, 500));
    await c.launch(manifest({ jobId: 'recent', round: { dim: DIM, cohort: 4, neighbors: 3 } }), { gatherMs: 5_000 });
    expect((await c.outcomeOf('recent', 0)).ok).toBe(true);
    const oldEnd = c.timingOf('old', 0).endedAt!;
    const recentEnd = c.timingOf('recent', 0).endedAt!;
    expect(recentEnd - oldEnd).toBeGreaterThanOrEqual(500);

    // Six days after: nothing is forgotten yet.
    offset = oldEnd + 6 * DAY - Date.now();
    expect(c.retireRounds()).toBe(0);
    expect(c.resultOf('old').survivors).toHaveLength(4);

    // Past seven days since the first round's end, not since the second's: only the first is retired.
    offset = oldEnd + 7 * DAY + Math.floor((recentEnd - oldEnd) / 2) - Date.now();
    expect(c.retireRounds()).toBe(1);
    const after = { status: c.statusOf('old'), result: c.resultOf('old') };
    expect(after.result.survivors).toEqual([]);
    expect(after.result.survivorCount).toBe(4);
    expect(Buffer.from(after.result.sum).equals(Buffer.from(before.result.sum))).toBe(true);
    expect(Buffer.from(after.result.sum).equals(Buffer.from(expectedSum([0, 1, 2, 3], DIM).buffer))).toBe(true);
    // The status an engineer reads is unchanged (invited, counts per phase, dropouts, outcome).
    expect({ ...after.status, elapsedMs: 0n }).toEqual({ ...before.status, elapsedMs: 0n, roundsDone: after.status.roundsDone });
    expect(after.status.invited).toBe(4);
    // Nothing the coordinator still holds of that round names a client: status, result, outcome, timing.
    const held = [after.status, after.result, await c.outcomeOf('old', 0), c.timingOf('old', 0)];
    for (const id of ids) expect(strings(held).filter((s) => s.includes(id))).toEqual([]);
    // The recent round still knows its survivors.
    expect([...c.resultOf('recent').survivors].sort()).toEqual(ids);
    // Retiring again changes nothing.
    expect(c.retireRounds()).toBe(0);
  });
});
