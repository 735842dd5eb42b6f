/**
 * Fixed-point encoding of model updates into Z_{2^32} (DESIGN.md §2, "Quantization").
 *
 * Each value v is clipped to [-c, c], mapped to t = (v + c) * (2^b - 1) / (2c) in [0, 2^b - 1]
 * and rounded stochastically: floor(t + u), u uniform in [0, 1). E[q] = t exactly, so the sum
 * of many clients' values is unbiased; the error of one value is below one step 2c / (2^b - 1).
 * The sum of n values stays below n * 2^b; a round with n * 2^b >= 2^32 could wrap and is
 * refused before anything is computed.
 *
 * Weighted FedAvg: the weight travels as the last word of the masked vector (an integer in
 * 0..2^b-1), so the coordinator learns only the total weight, never one client's.
 */
import { ErrorCode, fail } from '../errors.js';
import { BLOCK_WORDS, type DeterministicRng } from './rng.js';

export interface QuantParams {
  /** Clip range 0 < c <= 10^12: values are clipped to [-c, c]. */
  clip: number;
  /** Bits b per value, 1..24. */
  bits: number;
}

export function assertQuantParams({ clip, bits }: QuantParams): void {
  // Bounded above so that 2c and the step 2c / (2^b - 1) stay finite and meaningful.
  if (!(Number.isFinite(clip) && clip > 0 && clip <= 1e12)) fail(ErrorCode.InvalidArgument, 'clip range must be a number in (0, 1e12]');
  if (!Number.isInteger(bits) || bits < 1 || bits > 24) fail(ErrorCode.InvalidArgument, 'quantization bits must be an integer in 1..24');
}

/** Refuses a round whose cohort sum could wrap: n * 2^b >= 2^32. */
export function assertNoOverflow(cohort: number, bits: number): void {
  if (!Number.isInteger(cohort) || cohort < 1) fail(ErrorCode.InvalidArgument, 'cohort must be a positive integer');
  if (cohort * 2 ** bits >= 2 ** 32) {
    fail(ErrorCode.OverflowRisk, `cohort ${cohort} with ${bits}-bit quantization could exceed 2^32 (n * 2^b >= 2^32)`);
  }
}

const levels = (bits: number): number => 2 ** bits - 1;

/** Quantizes `values` into `out[0..values.length)` (clip + stochastic rounding). */
export function quantizeInto(out: Uint32Array, values: ArrayLike<number>, p: QuantParams, rng: DeterministicRng): void {
  assertQuantParams(p);
  const { clip } = p;
  const low = -clip;
  const max = levels(p.bits);
  const scale = max / (2 * clip);
  const n = values.length;
  // Branch-free clipping (Math.min/max compile to single instructions), and `>>> 0` for the
  // floor: the rounded value lies in [0, 2^b] with b <= 24, where truncation is the floor. Both
  // give exactly the bits of the clamp-and-Math.floor they replace, about twice as fast.
  for (let base = 0; base < n; base += BLOCK_WORDS) {
    const u = rng.nextBlock();
    const end = Math.min(n, base + BLOCK_WORDS);
    for (let i = base, j = 0; i < end; i++, j++) {
      const v = values[i]!;
      // v - v is 0 for every finite v, NaN for NaN and for either infinity.
      if (v - v !== 0) fail(ErrorCode.NonFiniteValue, `value at index ${i} is not finite`);
      const c = Math.min(clip, Math.max(low, v));
      out[i] = Math.min(((c + clip) * scale + u[j]! * 2.3283064365386963e-10) >>> 0, max);
    }
  }
}

export function quantize(values: ArrayLike<number>, p: QuantParams, rng: DeterministicRng): Uint32Array {
  const out = new Uint32Array(values.length);
  quantizeInto(out, values, p, rng);
  return out;
}

/** The float sum of `count` clients' values from the integer sum of their quantized values. */
export function dequantizeSum(sum: ArrayLike<number>, count: number, p: QuantParams, length = sum.length): Float64Array {
  assertQuantParams(p);
  const step = (2 * p.clip) / levels(p.bits);
  const offset = count * p.clip;
  const out = new Float64Array(length);
  for (let i = 0; i < length; i++) out[i] = sum[i]! * step - offset;
  return out;
}

/**
 * The vector one client masks: its (already weight-multiplied) update quantized, then its
 * weight as the last word. Length values.length + 1.
 */
export function encodeWeightedInput(values: ArrayLike<number>, weight: number, p: QuantParams, rng: DeterministicRng): Uint32Array {
  if (!Number.isInteger(weight) || weight < 0 || weight > levels(p.bits)) {
    fail(ErrorCode.InvalidArgument, `weight must be an integer in 0..${levels(p.bits)}`);
  }
  const out = new Uint32Array(values.length + 1);
  quantizeInto(out, values, p, rng);
  out[values.length] = weight;
  return out;
}

export interface WeightedSum {
  /** Sum over the survivors of their weighted updates. */
  sum: Float64Array;
  /** Sum of the survivors' weights. */
  totalWeight: number;
  /** sum / totalWeight (the FedAvg update); all zeros when totalWeight is 0. */
  mean: Float64Array;
}

export function decodeWeightedSum(intSum: Uint32Array, count: number, p: QuantParams): WeightedSum {
  const dim = intSum.length - 1;
  const sum = dequantizeSum(intSum, count, p, dim);
  const totalWeight = intSum[dim]!;
  const mean = new Float64Array(dim);
  if (totalWeight > 0) for (let i = 0; i < dim; i++) mean[i] = sum[i]! / totalWeight;
  return { sum, totalWeight, mean };
}
