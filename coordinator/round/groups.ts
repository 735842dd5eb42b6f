/**
 * Aggregation groups (DESIGN.md §6; Bell et al. CCS'20 run SecAgg+ per group too): a cohort
 * larger than the manifest's group size is split into groups, each its own SecAgg+ instance with
 * its own session, neighbour graph, threshold and deadlines; the round's result is the sum of the
 * completed groups' unmasked sums. A group that aborts loses only its own clients.
 *
 * Why groups: per-client cost in SecAgg+ grows with log n, but the coordinator's per-phase work,
 * the Shamir field (x-coordinates 1..10,000) and the blast radius of one aborted instance grow
 * with n. Groups of a few hundred keep every instance small, let front ends and unmask workers
 * take whole groups, and bound what one failure costs.
 *
 * Privacy: the coordinator learns each group's sum, not only the total — a group of g clients
 * hides each input among g, so groups must stay large enough for that to mean something
 * (more than half the group size, and MIN_GROUP_SIZE), and the split is a seeded permutation the coordinator cannot steer per client.
 *
 * Pure: no I/O. The coordinator and the simulator call it.
 */
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { addInto } from '../../shared/crypto/vecops.js';

/** The smallest group: below this a group sum says too much about each member. */
export const MIN_GROUP_SIZE = 3;
/**
 * The smallest group size a round may name: a group of more than g/2 then has at least
 * MIN_GROUP_SIZE members.
 */
export const MIN_GROUP_SIZE_PARAM = 2 * MIN_GROUP_SIZE;

/** The fewest members a group of a split cohort has: more than half the group size (clients refuse less). */
const leastInGroup = (groupSize: number): number => Math.floor(groupSize / 2) + 1;

/**
 * The largest cohort of at most `n` clients that splits into groups of at most `groupSize` and
 * more than half of it each (n itself, or fewer: 7 clients do not split into groups of 4..6, 6
 * do). The coordinator invites that many.
 */
export function groupableCohort(n: number, groupSize: number): number {
  for (let m = n; m > groupSize; m--) if (Math.ceil(m / groupSize) * leastInGroup(groupSize) <= m) return m;
  return Math.min(n, groupSize);
}

/**
 * Splits `members` (in any order) into ceil(n / groupSize) groups whose sizes differ by at most
 * one, after a permutation seeded by `seed` (e.g. the round's session id): the assignment is
 * fixed by the seed, so it can be recomputed and checked, and no one picks who sits with whom.
 * With n <= groupSize it is one group of everyone. A count that does not split into groups of
 * more than half the group size each (`groupableCohort`) is refused with `invalid-argument`.
 */
export function planGroups(members: readonly string[], groupSize: number, seed: Uint8Array | string | number): string[][] {
  if (!Number.isInteger(groupSize) || groupSize < MIN_GROUP_SIZE_PARAM) throw new AegisError(ErrorCode.InvalidArgument, `the group size must be an integer >= ${MIN_GROUP_SIZE_PARAM}`);
  const n = members.length;
  if (new Set(members).size !== n) throw new AegisError(ErrorCode.InvalidArgument, 'group members must be distinct');
  if (n <= groupSize) return [[...members]];
  const count = Math.ceil(n / groupSize);
  // Sizes differ by at most one, none above groupSize, each > groupSize / 2 >= MIN_GROUP_SIZE.
  const base = Math.floor(n / count);
  if (base < leastInGroup(groupSize)) {
    throw new AegisError(ErrorCode.InvalidArgument, `${n} clients do not split into groups of more than half of ${groupSize} each (${groupableCohort(n, groupSize)} would)`);
  }
  const extra = n % count;
  const sorted = [...members].sort();
  const perm = DeterministicRng.fromSeed('aegis-aggregation-groups', typeof seed === 'number' ? seed : Buffer.from(seed).toString('hex')).permutation(n);
  const out: string[][] = [];
  let o = 0;
  for (let g = 0; g < count; g++) {
    const size = base + (g < extra ? 1 : 0);
    const group: string[] = [];
    for (let i = 0; i < size; i++) group.push(sorted[perm[o++]!]!);
    out.push(group);
  }
  return out;
}

export type GroupOutcome = { ok: true; survivors: readonly string[]; sum: Uint32Array } | { ok: false; reason: string; at: string; members: readonly string[] };

export interface CombinedOutcome {
  /** True when at least one group completed. */
  ok: boolean;
  /** The completed groups' survivors, in group order. */
  survivors: string[];
  /** Sum mod 2^32 of the completed groups' sums (the same encoding as one group's sum). */
  sum: Uint32Array | undefined;
  completedGroups: number;
  failed: { group: number; reason: string; at: string; members: number }[];
}

/** Adds the completed groups' sums; the failed groups' clients count as dropped. */
export function combineGroups(outcomes: readonly GroupOutcome[]): CombinedOutcome {
  let sum: Uint32Array | undefined;
  const survivors: string[] = [];
  const failed: CombinedOutcome['failed'] = [];
  outcomes.forEach((o, group) => {
    if (o.ok) {
      if (sum === undefined) sum = new Uint32Array(o.sum);
      else {
        if (o.sum.length !== sum.length) throw new AegisError(ErrorCode.InvalidArgument, 'group sums differ in length');
        addInto(sum, o.sum);
      }
      survivors.push(...o.survivors);
    } else {
      failed.push({ group, reason: o.reason, at: o.at, members: o.members.length });
    }
  });
  return { ok: sum !== undefined, survivors, sum, completedGroups: outcomes.length - failed.length, failed };
}
