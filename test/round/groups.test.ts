/**
 * Aggregation groups (coordinator/round/groups.ts): a fixed, balanced, seeded split of the
 * cohort; the round's sum is the sum of the completed groups' sums; a failed group loses only its
 * own clients. The grouped simulator round checks the whole path end to end.
 */
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { combineGroups, groupableCohort, planGroups } from '../../coordinator/round/groups.js';
import { simulate } from '../../bench/sim/simulate.js';
import { codeOf } from '../support/codes.js';
import { checkRoundStart, manifestOfRoundStart } from '../../client/admission/round-start.js';
import { groupRoundParams, minimumGroupSize, validateRoundParams } from '../../shared/protocol/params.js';
import { sha256 } from '../../shared/protocol/session.js';
import { manifest } from '../support/cluster.js';
import type { RoundStart } from '../../shared/protocol/messages.js';

const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `c${i}`);

describe('planGroups', () => {
  test('every member in exactly one group; sizes differ by at most one and never exceed the group size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 400 }), fc.integer({ min: 6, max: 120 }), fc.integer(), (asked, g, seed) => {
        // The coordinator invites a cohort that splits (groupableCohort); any other count is refused.
        const n = groupableCohort(asked, g);
        if (n !== asked) expect(() => planGroups(ids(asked), g, seed)).toThrow();
        const groups = planGroups(ids(n), g, seed);
        const flat = groups.flat();
        expect(flat.length).toBe(n);
        expect(new Set(flat).size).toBe(n);
        const sizes = groups.map((x) => x.length);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
        expect(Math.max(...sizes)).toBeLessThanOrEqual(g);
        expect(groups.length).toBe(n <= g ? 1 : Math.ceil(n / g));
        if (n > g) expect(Math.min(...sizes)).toBeGreaterThan(g / 2);
      }),
    );
  });

  test('the split is fixed by the seed and independent of the input order; another seed gives another split', () => {
    const a = planGroups(ids(100), 10, 'session-a');
    expect(planGroups([...ids(100)].reverse(), 10, 'session-a')).toEqual(a);
    expect(planGroups(ids(100), 10, 'session-b')).not.toEqual(a);
  });

  test('bad sizes and repeated members are refused', () => {
    expect(codeOf(() => planGroups(ids(10), 5, 1))).toBe('invalid-argument');
    expect(codeOf(() => planGroups(['a', 'a', 'b'], 3, 1))).toBe('invalid-argument');
  });
});

describe('combineGroups', () => {
  test('adds the completed groups mod 2^32 and leaves the failed ones out', () => {
    const s1 = Uint32Array.of(0xffffffff, 5, 1);
    const s2 = Uint32Array.of(2, 7, 1);
    const c = combineGroups([
      { ok: true, survivors: ['a', 'b'], sum: s1 },
      { ok: false, reason: 'too-few-clients', at: 'masked-input', members: ['c', 'd', 'e'] },
      { ok: true, survivors: ['f'], sum: s2 },
    ]);
    expect(c.ok).toBe(true);
    expect([...c.sum!]).toEqual([1, 12, 2]);
    expect(c.survivors).toEqual(['a', 'b', 'f']);
    expect(c.failed).toEqual([{ group: 1, reason: 'too-few-clients', at: 'masked-input', members: 3 }]);
    expect(s1[0]).toBe(0xffffffff); // inputs untouched
    expect(combineGroups([{ ok: false, reason: 'x', at: 'y', members: ['a'] }])).toMatchObject({ ok: false, sum: undefined, completedGroups: 0 });
  });
});

describe('a grouped simulated round', () => {
  test('300 clients in groups of 100 with dropouts: every group exact, survivors add up', async () => {
    // The neighbour graph comes from the session id, which hashes the clients' fresh keys, so it
    // changes every run. With k = 12 (t = 7) and 10 of 100 dropping, about one run in seven had a
    // client with 6 of its 12 neighbours gone: that group aborts (insufficient-shares) by chance.
    // k = 24 (t = 13) and 5% dropping make that chance negligible (under 10^-9 per run).
    const r = await simulate({ clients: 300, dim: 64, groupSize: 100, neighbors: 24, dropout: 0.05, seed: 5, workers: 0 });
    expect(r.ok && r.exact).toBe(true);
    expect(r.groups).toMatchObject({ group_size: 100, count: 3, completed: 3, failed: [], sizes: [100, 100, 100] });
    expect(r.survivors).toBeLessThan(300);
    expect(r.survivors).toBeGreaterThan(270);
    expect(r.total_weight).toBeGreaterThan(0);
  });

  test('a group that aborts loses only its own clients; the others still complete exactly', async () => {
    const r = await simulate({ clients: 90, dim: 16, groupSize: 30, failGroups: 1, dropPhase: 'share', dropout: 0.1, seed: 11, workers: 0 });
    expect(r.groups).toMatchObject({ count: 3, completed: 2 });
    expect(r.groups!.failed).toEqual([{ group: expect.any(Number), reason: 'too-few-clients', at: expect.any(String), members: 30 }]);
    expect(r.ok && r.exact).toBe(true);
    expect(r.survivors).toBeLessThanOrEqual(60);
    expect(r.survivors).toBeGreaterThan(45);
    // Every group failing: no sum at all, a typed reason.
    const none = await simulate({ clients: 60, dim: 8, groupSize: 30, failGroups: 2, seed: 3, workers: 0 });
    expect(none).toMatchObject({ ok: false, reason: 'all-groups-aborted', exact: false });
  });

  test('with worker threads the groups run side by side, one whole group per thread, with the same outcome as one after the other', async () => {
    const opts = { clients: 120, dim: 32, groupSize: 40, neighbors: 8, dropout: 0.1, seed: 9 };
    const parallel = await simulate({ ...opts, workers: 2 });
    const serial = await simulate({ ...opts, workers: 0 });
    expect(parallel.ok && parallel.exact).toBe(true);
    expect(parallel.groups).toEqual(serial.groups);
    expect([parallel.survivors, parallel.total_weight, parallel.sets]).toEqual([serial.survivors, serial.total_weight, serial.sets]);
  });

  test('n * 2^b must fit 32 bits over the whole cohort, not per group', async () => {
    await expect(simulate({ clients: 600, dim: 4, groupSize: 100, bits: 23, workers: 0 })).rejects.toThrow(/2\^32/);
  });
});

describe('group parameters', () => {
  test('k is capped at the group size; t is kept while it is a majority of k, else floor(k/2) + 1', () => {
    const p = validateRoundParams({ dim: 4, cohort: 1000, groupSize: 100, neighbors: 16, threshold: 9 });
    expect(groupRoundParams(p, 100)).toEqual({ dim: 4, cohort: 100, neighbors: 16, threshold: 9, clip: 1, bits: 16 });
    expect(groupRoundParams(p, 8)).toMatchObject({ cohort: 8, neighbors: 7, threshold: 4 });
    const classic = validateRoundParams({ dim: 4, cohort: 50, groupSize: 20 });
    expect(groupRoundParams(classic, 17)).toMatchObject({ cohort: 17, neighbors: 16, threshold: 9 });
    // Without groups the parameters are the round's.
    const plain = validateRoundParams({ dim: 4, cohort: 10 });
    expect(groupRoundParams(plain, 10)).toEqual(plain);
  });

  test('minimumGroupSize: more than t, at least 3, and more than half of min(g, n) with a group size', () => {
    expect(minimumGroupSize(validateRoundParams({ dim: 4, cohort: 10 }))).toBe(6); // t = 5
    expect(minimumGroupSize(validateRoundParams({ dim: 4, cohort: 3, threshold: 2 }))).toBe(3);
    expect(minimumGroupSize(validateRoundParams({ dim: 4, cohort: 20, neighbors: 4, threshold: 3 }))).toBe(4);
    // A group size: more than half of it (a group of 3 out of a group size of 250 is refused).
    expect(minimumGroupSize(validateRoundParams({ dim: 4, cohort: 1000, groupSize: 250, neighbors: 8, threshold: 5 }))).toBe(126);
    expect(minimumGroupSize(validateRoundParams({ dim: 4, cohort: 20, groupSize: 12, neighbors: 4, threshold: 3 }))).toBe(7);
    // n below g: more than half of n.
    expect(minimumGroupSize(validateRoundParams({ dim: 4, cohort: 9, groupSize: 20, neighbors: 4, threshold: 3 }))).toBe(5);
  });

  test('a cohort that does not split into groups of more than half the group size is refused; groupableCohort trims it', () => {
    const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `c-${i}`);
    // 7 into groups of at most 6: 4 + 3, and 3 is not more than half of 6.
    expect(codeOf(() => planGroups(ids(7), 6, 1))).toBe('invalid-argument');
    expect(groupableCohort(7, 6)).toBe(6);
    expect(groupableCohort(13, 12)).toBe(12);
    expect(groupableCohort(14, 12)).toBe(14);
    expect(groupableCohort(9, 6)).toBe(9);
    expect(groupableCohort(5, 6)).toBe(5);
    expect(planGroups(ids(14), 12, 1).map((g) => g.length)).toEqual([7, 7]);
  });

  test('a gathered cohort of at least minimumGroupSize splits into groups that each meet it with their own t', () => {
    fc.assert(
      fc.property(fc.integer({ min: 6, max: 60 }), fc.integer({ min: 7, max: 400 }), fc.integer({ min: 2, max: 12 }), fc.integer({ min: 0, max: 10_000 }), (g, n, k, seed) => {
        const p = validateRoundParams({ dim: 4, cohort: n, groupSize: g, neighbors: Math.min(k, n - 1) });
        const members = Array.from({ length: n }, (_, i) => `c-${i}`);
        for (let connected = minimumGroupSize(p); connected <= n; connected += Math.max(1, Math.floor(n / 7))) {
          const size = groupableCohort(connected, g);
          // Fewer than that: the coordinator refuses to start the round (too-few-clients).
          if (size < minimumGroupSize(p)) continue;
          const groups = planGroups(members.slice(0, size), g, seed);
          for (const group of groups) {
            const gp = groups.length > 1 ? groupRoundParams(p, group.length) : p;
            expect(group.length).toBeGreaterThanOrEqual(minimumGroupSize({ ...gp, cohort: n, groupSize: g }));
          }
        }
      }),
      { numRuns: 200 },
    );
  });

  test("a client takes its group's parameters, and nothing else the manifest does not allow", () => {
    const bytes = manifest({ jobId: 'g', round: { dim: 4, cohort: 9, groupSize: 6 } });
    const parsed = manifestOfRoundStart({ type: 'round-start', round: { manifestHash: sha256(bytes), roundIndex: 0 }, params: validateRoundParams({ dim: 4, cohort: 9 }), manifestJson: bytes });
    const m = parsed.round;
    const members = (n: number): string[] => ['me', ...Array.from({ length: n - 1 }, (_, i) => `peer-${i}`)].sort();
    const ev = (params: object, size: number, count = 2): RoundStart =>
      ({ type: 'round-start', round: { manifestHash: sha256(bytes), roundIndex: 0 }, params, deadlines: parsed.deadlines, manifestJson: bytes, group: { index: 0, count, members: members(size) } }) as unknown as RoundStart;
    const check = (e: RoundStart): string | undefined => codeOf(() => checkRoundStart(e, parsed, 'me'));
    expect(check(ev(groupRoundParams(m, 5), 5))).toBeUndefined();
    expect(check(ev(groupRoundParams(m, 4), 4))).toBeUndefined();
    // A weaker threshold, a group above the group size, or a group of half the group size or fewer is refused.
    expect(check(ev({ ...groupRoundParams(m, 5), threshold: 2 }, 5))).toBe('parameters-mismatch');
    expect(check(ev(groupRoundParams(m, 7), 7))).toBe('parameters-mismatch');
    expect(check(ev(groupRoundParams(m, 3), 3))).toBe('parameters-mismatch');
    expect(check(ev({ ...groupRoundParams(m, 3), cohort: 2 }, 2))).toBe('parameters-mismatch');
  });
});
