/**
 * The client side of the distributed discrete Gaussian mechanism, and the coordinator's decode
 * of the unmasked sum (Kairouz, Liu and Steinke, ICML 2021, Algorithm 1 / §4; the same steps as
 * TensorFlow Federated's DistributedDiscreteGaussianSumQuery).
 *
 * Client, on an update x ∈ R^m:
 *   1. clip       x ← x · min(1, C/||x||₂)
 *   2. rotate     y = (1/√D) H diag(ξ) pad(x)        D = 2^⌈log₂ m⌉, ξ from the round's public seed
 *   3. scale      y ← y / γ                           γ the granularity
 *   4. round      each coordinate to ⌊y⌋ or ⌈y⌉, up with probability y − ⌊y⌋; redrawn until
 *                 ||ỹ||₂² <= B (conditional randomized rounding; B from accountant.ts)
 *   5. noise      ỹ + N_Z(0, σ²)^D                    σ² per client, sized for the fewest survivors
 *   6. wrap       each coordinate mod 2^bits, as a Uint32 word (two's complement for bits = 32)
 * The words are then masked and summed in Z_{2^32} as usual: 2^bits divides 2^32, so the
 * unmasked sum mod 2^bits is the sum of the clients' integer vectors mod 2^bits.
 *
 * Coordinator, on the unmasked sum: reduce mod 2^bits, lift to the centred range
 * [−2^(bits−1), 2^(bits−1)), multiply by γ, un-rotate, drop the padding. The lift is exact when
 * no coordinate of the true integer sum left that range; calibrate.ts sizes γ so that happens
 * with negligible probability.
 *
 * Only step 4's norm check and step 5 matter for privacy; they run in exact integer arithmetic
 * (the squared norm falls back to BigInt past 2^52). The clip, rotation and rounding are float64:
 * their errors can only move the vector, and the check bounds whatever vector results.
 */
import { ErrorCode, fail } from '../errors.js';
import { paddedDim, rotate, rotationSigns, unrotateInPlace } from './hadamard.js';
import { DiscreteGaussian, type Rational, type UniformSource } from './sampler.js';

export interface DpParams {
  /** Length m of the update (before padding), 1..2^26. */
  dim: number;
  /** L2 clip norm C > 0 applied to each update (real units). */
  clip: number;
  /** Granularity γ > 0: one integer step is γ in real units. */
  gamma: number;
  /** The sum lives in Z_{2^bits}, 2..32 (the masked words are 32-bit whatever bits is). */
  bits: number;
  /** Per-client noise variance σ² in integer units (exact rational, >= 1/4). */
  sigma2: Rational;
  /** Bound B on the squared L2 norm of a client's rounded vector (integer units). */
  normBound2: bigint;
}

/** How many times rounding is redrawn before giving up (each fails with probability <= β < 1). */
export const MAX_ROUNDING_TRIES = 1000;

export function assertDpParams(p: DpParams): void {
  if (!Number.isInteger(p.dim) || p.dim < 1) fail(ErrorCode.InvalidArgument, 'DP dimension must be a positive integer');
  paddedDim(p.dim);
  if (!(Number.isFinite(p.clip) && p.clip > 0)) fail(ErrorCode.InvalidArgument, 'DP clip norm must be a positive number');
  if (!(Number.isFinite(p.gamma) && p.gamma > 0)) fail(ErrorCode.InvalidArgument, 'DP granularity γ must be a positive number');
  if (!Number.isInteger(p.bits) || p.bits < 2 || p.bits > 32) fail(ErrorCode.InvalidArgument, 'DP modulus bits must be an integer in 2..32');
  if (typeof p.normBound2 !== 'bigint' || p.normBound2 < 1n) fail(ErrorCode.InvalidArgument, 'DP norm bound must be a positive integer');
  if (p.clip / p.gamma > 2 ** 50) fail(ErrorCode.InvalidArgument, 'DP clip / γ must be at most 2^50');
  if (typeof p.sigma2?.num !== 'bigint' || typeof p.sigma2.den !== 'bigint' || p.sigma2.den <= 0n || 4n * p.sigma2.num < p.sigma2.den) {
    fail(ErrorCode.InvalidArgument, 'DP per-client σ² must be a rational >= 1/4');
  }
}

/** The number of words a client sends: the padded dimension D. */
export const encodedLength = (p: DpParams): number => paddedDim(p.dim);

/** Exact ||v||₂² of an integer vector held in doubles: Number sums while safe, BigInt beyond. */
export function squaredNormExact(v: Float64Array): bigint {
  let big = 0n;
  let acc = 0;
  for (let i = 0; i < v.length; i++) {
    const x = v[i]!;
    if (x > 67108863 || x < -67108863) {
      big += BigInt(x) * BigInt(x); // |x| >= 2^26: x² may not be exact as a double
      continue;
    }
    acc += x * x; // each term < 2^52
    if (acc >= 2 ** 52) {
      big += BigInt(acc); // acc < 2^53: still an exact integer
      acc = 0;
    }
  }
  return big + BigInt(acc);
}

/** A uniform double in [0, 1) with 53 random bits. */
function uniform01(rng: UniformSource): number {
  return ((rng.nextU32() >>> 5) * 67108864 + (rng.nextU32() >>> 6)) / 9007199254740992;
}

/**
 * Steps 1–4: the clipped, rotated, scaled and conditionally rounded update (integers in a
 * Float64Array of length D), with ||·||₂² <= p.normBound2.
 */
export function clipRotateRound(update: ArrayLike<number>, p: DpParams, sessionSeed: Uint8Array, rng: UniformSource): Float64Array {
  assertDpParams(p);
  if (update.length !== p.dim) fail(ErrorCode.InvalidArgument, `update has ${update.length} values, the round expects ${p.dim}`);
  let norm2 = 0;
  for (let i = 0; i < update.length; i++) {
    const v = update[i]!;
    if (!Number.isFinite(v)) fail(ErrorCode.NonFiniteValue, `value at index ${i} is not finite`);
    norm2 += v * v;
  }
  const norm = Math.sqrt(norm2);
  // The margin keeps float error in the norm from pushing ||x|| a hair past C.
  const clipScale = norm > p.clip * (1 - 1e-12) ? (p.clip * (1 - 1e-12)) / norm : 1;
  const signs = rotationSigns(sessionSeed, paddedDim(p.dim));
  const scale = clipScale / p.gamma;
  const scaled = new Float64Array(update.length);
  for (let i = 0; i < update.length; i++) scaled[i] = update[i]! * scale;
  const y = rotate(scaled, signs);
  const out = new Float64Array(y.length);
  for (let attempt = 0; attempt < MAX_ROUNDING_TRIES; attempt++) {
    for (let i = 0; i < y.length; i++) {
      const f = Math.floor(y[i]!);
      out[i] = uniform01(rng) < y[i]! - f ? f + 1 : f;
    }
    if (squaredNormExact(out) <= p.normBound2) return out;
  }
  return fail(ErrorCode.FailedPrecondition, `conditional rounding exceeded the norm bound ${MAX_ROUNDING_TRIES} times: the DP parameters do not match this update's dimension`);
}

/** Two's-complement reduction of an integer (a double, |v| < 2^53) into Z_{2^bits}, as a uint32. */
export function wrapToModulus(v: number, bits: number): number {
  const w = v >>> 0; // ToUint32 is exact reduction mod 2^32 of any integer-valued double
  return bits === 32 ? w : w & (2 ** bits - 1);
}

/**
 * The client's DP-encoded update: D words in Z_{2^bits} ready for masking. `sessionSeed` is the
 * round's public 32-byte seed (same for every client); `rng` is this client's private randomness
 * for rounding and noise (cryptoSource() in production; never shared or reused).
 */
export function dpEncode(update: ArrayLike<number>, p: DpParams, sessionSeed: Uint8Array, rng: UniformSource, sampler = new DiscreteGaussian(p.sigma2)): Uint32Array {
  const rounded = clipRotateRound(update, p, sessionSeed, rng);
  if (sampler.sigma2.num * p.sigma2.den !== p.sigma2.num * sampler.sigma2.den) fail(ErrorCode.InvalidArgument, 'sampler σ² does not match the DP parameters');
  const out = new Uint32Array(rounded.length);
  for (let i = 0; i < rounded.length; i++) out[i] = wrapToModulus(rounded[i]! + sampler.sample(rng), p.bits);
  return out;
}

/** The centred lift of a word of the Z_{2^32} sum into [−2^(bits−1), 2^(bits−1)). */
export function liftCentered(word: number, bits: number): number {
  const m = 2 ** bits;
  const r = bits === 32 ? word >>> 0 : (word >>> 0) % m;
  return r >= m / 2 ? r - m : r;
}

/** The decoded sum of the survivors' updates (plus the mechanism's noise), in float64, length `dim`. */
export function dpDecodeSum64(sum: Uint32Array, p: DpParams, sessionSeed: Uint8Array, dim = p.dim): Float64Array {
  assertDpParams(p);
  const padded = paddedDim(p.dim);
  if (sum.length !== padded) fail(ErrorCode.InvalidArgument, `sum has ${sum.length} words, the round expects ${padded}`);
  if (!Number.isInteger(dim) || dim < 1 || dim > p.dim) fail(ErrorCode.InvalidArgument, `dim must be in 1..${p.dim}`);
  const y = new Float64Array(padded);
  for (let i = 0; i < padded; i++) y[i] = liftCentered(sum[i]!, p.bits) * p.gamma;
  unrotateInPlace(y, rotationSigns(sessionSeed, padded));
  return y.slice(0, dim);
}

/** As `dpDecodeSum64`, as a Float32Array (the model's precision). */
export function dpDecodeSum(sum: Uint32Array, p: DpParams, sessionSeed: Uint8Array, dim = p.dim): Float32Array {
  return Float32Array.from(dpDecodeSum64(sum, p, sessionSeed, dim));
}
