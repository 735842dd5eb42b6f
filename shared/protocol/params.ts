/**
 * Round parameters, one zod schema, each documented where it is defined (Flower style). They
 * come from the signed job manifest; `validateRoundParams` also enforces the relations between
 * them.
 */
import { z } from 'zod';
import { AegisError, ErrorCode } from '../errors.js';
import { assertNoOverflow } from '../crypto/quantize.js';
import { MAX_SHARES } from '../crypto/shamir.js';

export const RoundParamsSchema = z
  .object({
    /**
     * m: the number of model values each client contributes. The masked vector carries one
     * more word, the client's weight. 1..2^26.
     */
    dim: z.number().int().min(1).max(2 ** 26),
    /**
     * n: the target cohort size — how many clients the coordinator invites and waits for in
     * the first phase. 3..10,000 (the Shamir x-coordinates are 1..n).
     */
    cohort: z.number().int().min(3).max(MAX_SHARES),
    /**
     * t: the threshold. Shamir shares of each client's secrets need t holders to reconstruct;
     * every phase needs >= t clients left, and unmasking needs >= t valid consistency
     * signatures (from the client's neighbours in SecAgg+). floor(k/2) + 1 <= t <= k: a
     * majority of each neighbourhood, so two disjoint sets of honest clients can never be
     * talked into revealing both secrets of one client. Default: floor(k / 2) + 1.
     */
    threshold: z.number().int().min(2).optional(),
    /**
     * k: neighbour degree. k = n - 1 (or larger) is classic SecAgg: everyone masks with
     * everyone. A smaller k is SecAgg+: each client masks with and shares among k neighbours of
     * a Harary graph derived from session_id; k ≈ 2·log2(n) keeps the cost O(log n) per client.
     * Default: n - 1.
     */
    neighbors: z.number().int().min(2).optional(),
    /** c: values are clipped to [-c, c] before quantization, 0 < c <= 10^12. Default 1. */
    clip: z.number().positive().max(1e12).default(1),
    /**
     * b: quantization bits per value (1..24). The cohort sum must fit 32 bits: n * 2^b < 2^32.
     * Default 16.
     */
    bits: z.number().int().min(1).max(24).default(16),
    /**
     * g: aggregation group size. A cohort larger than g is split into ceil(n/g) balanced groups
     * (each more than g/2 clients), each its own SecAgg(+) instance with its own session: k and t
     * apply within a group (k capped at the group's size − 1; a t above k, or not a majority of
     * k, falls back to floor(k/2) + 1). The round's sum is the sum of the completed groups' sums;
     * a group that aborts loses only its own clients. The coordinator learns each group's sum.
     * 6..10,000; default: no groups.
     */
    groupSize: z.number().int().min(6).max(MAX_SHARES).optional(),
  })
  .strict();

export type RoundParamsInput = z.input<typeof RoundParamsSchema>;

export interface RoundParams {
  dim: number;
  cohort: number;
  threshold: number;
  neighbors: number;
  clip: number;
  bits: number;
  /** g: aggregation group size (see the schema); absent: one SecAgg(+) instance for the whole cohort. */
  groupSize?: number;
}

/** Parses and checks the relations; throws `invalid-argument` / `overflow-risk`. */
export function validateRoundParams(input: RoundParamsInput): RoundParams {
  const r = RoundParamsSchema.safeParse(input);
  if (!r.success) {
    const first = r.error.issues[0];
    throw new AegisError(ErrorCode.InvalidArgument, `round parameters: ${first?.path.join('.') ?? ''} ${first?.message ?? 'invalid'}`.trim());
  }
  const p = r.data;
  const neighbors = Math.min(p.neighbors ?? p.cohort - 1, p.cohort - 1);
  const threshold = p.threshold ?? Math.floor(neighbors / 2) + 1;
  if (threshold > neighbors) {
    throw new AegisError(ErrorCode.InvalidArgument, `threshold ${threshold} exceeds the neighbour degree ${neighbors}: shares go to k neighbours`);
  }
  if (threshold < 2) throw new AegisError(ErrorCode.InvalidArgument, 'threshold must be >= 2: one share alone would reveal a secret');
  if (2 * threshold <= neighbors) {
    throw new AegisError(
      ErrorCode.InvalidArgument,
      `threshold ${threshold} is not a majority of the ${neighbors} neighbours: two disjoint sets of honest clients could then be asked for both secrets of one client (use t >= ${Math.floor(neighbors / 2) + 1})`,
    );
  }
  assertNoOverflow(p.cohort, p.bits);
  return { dim: p.dim, cohort: p.cohort, threshold, neighbors, clip: p.clip, bits: p.bits, ...(p.groupSize !== undefined ? { groupSize: p.groupSize } : {}) };
}

/**
 * The parameters of one aggregation group of `size` clients in a round run with `p` (both the
 * coordinator, which runs the group, and its clients, which check what they are sent, derive
 * them): k capped at size − 1, t kept when it is still a majority of k and at most k, else
 * floor(k/2) + 1. Without groups (or one group of the whole cohort) it is `p` itself.
 */
export function groupRoundParams(p: RoundParams, size: number): RoundParams {
  const { groupSize, ...base } = p;
  if (groupSize === undefined) return base;
  const neighbors = Math.min(p.neighbors, size - 1);
  const threshold = p.threshold <= neighbors && 2 * p.threshold > neighbors ? p.threshold : Math.floor(neighbors / 2) + 1;
  return { ...base, cohort: size, neighbors, threshold };
}

/** ⌈log2 n⌉ for an integer n >= 1, exactly. */
export const ceilLog2 = (n: number): number => 32 - Math.clz32(n - 1);

/**
 * r: the bits a round's sum needs — the sum of n values below 2^b is below n · 2^b <= 2^r, so
 * r = ⌈log2 n⌉ + b (at most 32: `validateRoundParams` refuses n · 2^b >= 2^32). The masked words
 * are reduced mod 2^r and travel as r bits each: 2^r divides 2^32, so the masks still cancel and
 * the unmasked sum mod 2^r is exact (shared/crypto/bitpack.ts). A DP job's rounds use its own
 * modulus instead (dp-manifest.ts `maskedSumBits`).
 */
export function sumBitsOf(p: Pick<RoundParams, 'cohort' | 'bits'>): number {
  return Math.min(32, p.bits + ceilLog2(p.cohort));
}

/** r of a round: the bits its configuration fixes (from the signed manifest), else `sumBitsOf(params)`. */
export const roundSumBits = (cfg: { params: Pick<RoundParams, 'cohort' | 'bits'>; sumBits?: number }): number => cfg.sumBits ?? sumBitsOf(cfg.params);

/** Refuses (invalid-argument) a sum bit count r outside 1..32. */
export function assertSumBits(bits: number): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 32) throw new AegisError(ErrorCode.InvalidArgument, `the round's sum bits must be an integer in 1..32, got ${bits}`);
}

/** True when this is classic SecAgg (everyone is everyone's neighbour). */
export const isClassic = (p: Pick<RoundParams, 'cohort' | 'neighbors'>, u1Size = p.cohort): boolean => p.neighbors >= u1Size - 1;

/**
 * The fewest members a round's group may have — the rule both the coordinator (when it gathers a
 * cohort) and each client (when it checks the group it is put in) apply. Always 3 or more (with
 * 2, each would learn the other's input); a round of one group needs more than the threshold t;
 * and when the manifest splits cohorts into groups of g, every group holds more than half of
 * min(g, n). (A group of a split round runs with its own threshold, derived by
 * `groupRoundParams`, which never exceeds its size − 1.) A coordinator therefore cannot put a
 * client in a small group to learn its input from a sum over few clients.
 */
export function minimumGroupSize(p: Pick<RoundParams, 'threshold' | 'cohort' | 'groupSize'>, groups = 1): number {
  let min = 3;
  if (groups === 1) min = Math.max(min, p.threshold + 1);
  if (p.groupSize !== undefined) min = Math.max(min, Math.floor(Math.min(p.groupSize, p.cohort) / 2) + 1);
  return min;
}
