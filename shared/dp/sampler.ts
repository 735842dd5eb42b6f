/**
 * Exact samplers for the discrete Gaussian N_Z(0, σ²), after Canonne, Kamath and Steinke, "The
 * Discrete Gaussian for Differential Privacy" (NeurIPS 2020), Algorithms 1–3.
 *
 * Exact means every probability the algorithm decides on is a rational number compared against
 * uniform integers: no floating point touches a sample, so the output distribution is exactly
 *   P[X = x] = exp(−x²/(2σ²)) / Σ_y exp(−y²/(2σ²))   for every integer x,
 * given a uniform source (Mironov 2012 showed how floating-point samplers leak through their
 * low-order bits). Integers are JavaScript numbers while they stay below 2^53 (exact there) and
 * BigInt beyond.
 *
 *   Bernoulli(p), p = a/b         a uniform real U (lazy 32-bit words) against the base-2^32 digits of a/b: accept iff U < a/b
 *   Bernoulli(exp(−γ)), γ ∈ [0,1] (CKS Alg. 1) K = 1, 2, … while Bernoulli(γ/K); accept iff the last K is odd
 *   Bernoulli(exp(−γ)), γ > 1     ⌊γ⌋ independent Bernoulli(exp(−1)) all accepting, then Bernoulli(exp(−(γ−⌊γ⌋)))
 *   Geometric(1 − exp(−1/t))      (CKS Alg. 2) u uniform in [0, t) accepted w.p. exp(−u/t); v ~ Geometric(1 − e^{−1}); return v·t + u
 *   discrete Laplace with scale t   sign and magnitude, refusing "−0"; P[x] ∝ exp(−|x|/t)
 *   discrete Gaussian σ²          (CKS Alg. 3) t = ⌊σ⌋ + 1; Y ~ DLap(t) accepted w.p. exp(−(|Y| − σ²/t)²/(2σ²))
 *
 * The last acceptance probability is exp(−N/D) with N = (|Y|·b·t − a)², D = 2·a·b·t² for σ² = a/b.
 * Its fractional part is tested by comparing a uniform real U = 0.w₁w₂… (32-bit words) with the
 * base-2^32 digits of r/D computed by exact long division: the first word decides with
 * probability 1 − 2^−32, so one BigInt division per candidate is the usual cost.
 *
 * All randomness comes from a `UniformSource` (32-bit words): `cryptoSource()` for production,
 * the repository's `DeterministicRng` for seeded tests and simulation.
 */
import { randomFillSync } from 'node:crypto';
import { ErrorCode, fail } from '../errors.js';

/** A source of independent uniform 32-bit words. `DeterministicRng` is one. */
export interface UniformSource {
  nextU32(): number;
}

/** Uniform words from the operating system's CSPRNG (crypto.randomFillSync), refilled 64 KiB at a time into one buffer. */
export function cryptoSource(): UniformSource {
  const words = new Uint32Array(16384);
  let pos = words.length;
  return {
    nextU32(): number {
      if (pos >= words.length) {
        randomFillSync(words);
        pos = 0;
      }
      return words[pos++]!;
    },
  };
}

/** A non-negative rational number num/den (den > 0), in BigInt. */
export interface Rational {
  num: bigint;
  den: bigint;
}

const TWO32 = 4294967296;
const TWO53 = 9007199254740992;
const SMALL_DEN = 1n << 53n;
/** Largest n for which w·n (w a 32-bit word) and a·2^32 (a <= n) stay exact doubles. */
const DIGIT_DEN = 2 ** 21;

/**
 * Uniform integer in [0, n) for an integer 1 <= n <= 2^53, without bias: for n <= 2^21 by
 * Lemire's multiply-and-shift (the product w·n is an exact double; the rare low products below
 * 2^32 mod n are redrawn), beyond by rejection of whole words above the largest multiple of n.
 */
export function uniformBelow(src: UniformSource, n: number): number {
  if (n <= DIGIT_DEN) {
    let x = src.nextU32() * n;
    let hi = Math.floor(x / TWO32);
    let lo = x - hi * TWO32;
    if (lo < n) {
      const threshold = (TWO32 - n) % n; // 2^32 mod n
      while (lo < threshold) {
        x = src.nextU32() * n;
        hi = Math.floor(x / TWO32);
        lo = x - hi * TWO32;
      }
    }
    return hi;
  }
  if (n <= TWO32) {
    const limit = TWO32 - (TWO32 % n);
    for (;;) {
      const r = src.nextU32();
      if (r < limit) return r % n;
    }
  }
  const limit = TWO53 - (TWO53 % n); // exact: both are integers below 2^54
  for (;;) {
    const r = (src.nextU32() >>> 11) * TWO32 + src.nextU32(); // 53 uniform bits
    if (r < limit) return r % n;
  }
}

/** Uniform BigInt in [0, n), n >= 1, by rejection over whole 32-bit words with the top word masked. */
export function uniformBelowBig(src: UniformSource, n: bigint): bigint {
  if (n <= BigInt(TWO53)) return BigInt(uniformBelow(src, Number(n)));
  const bits = n.toString(2).length;
  const words = Math.ceil(bits / 32);
  const topBits = bits - 32 * (words - 1);
  for (;;) {
    let r = BigInt(src.nextU32() >>> (32 - topBits));
    for (let i = 1; i < words; i++) r = (r << 32n) | BigInt(src.nextU32());
    if (r < n) return r;
  }
}

/**
 * Bernoulli(a/b) for integers 0 <= a <= b, 1 <= b <= 2^53, without a modulo or a rejection:
 * a uniform real U = 0.w₁w₂… (32-bit words, drawn lazily) is compared with the base-2^32
 * expansion of a/b, so P[U < a/b] = a/b exactly and one word decides with probability
 * 1 − 2^−32. For b <= 2^21 every digit is computed in exact double arithmetic; beyond, the first
 * digit comes from the quotient in floating point when that cannot be off by one (its fraction
 * is away from an integer by far more than the quotient's 2^−21 error), and the rest — or the
 * whole comparison, near an integer — from `bernoulliBig`.
 */
export function bernoulli(src: UniformSource, a: number, b: number): boolean {
  if (a <= 0) return false;
  if (a >= b) return true;
  if (b <= DIGIT_DEN) {
    let rem = a;
    for (;;) {
      const x = rem * TWO32; // < 2^53: exact
      let digit = Math.floor(x / b);
      let r = x - digit * b; // exact: digit·b <= 2^53
      if (r < 0) {
        digit--;
        r += b;
      } else if (r >= b) {
        digit++;
        r -= b;
      }
      const w = src.nextU32();
      if (w !== digit) return w < digit;
      if (r === 0) return false; // a/b ended: U >= a/b from here on
      rem = r;
    }
  }
  const q = (a / b) * TWO32; // within 2^−21 of the exact a·2^32/b
  const digit = Math.floor(q);
  const frac = q - digit;
  if (frac > 2 ** -10 && frac < 1 - 2 ** -10) {
    const w = src.nextU32();
    if (w !== digit) return w < digit;
    const bb = BigInt(b);
    return bernoulliBig(src, (BigInt(a) << 32n) - BigInt(digit) * bb, bb);
  }
  return bernoulliBig(src, BigInt(a), BigInt(b));
}

/**
 * Bernoulli(r/d) for BigInts 0 <= r <= d, d >= 1, by comparing a lazily drawn uniform real
 * U = 0.w₁w₂… with the base-2^32 expansion of r/d: P[U < r/d] = r/d exactly.
 */
export function bernoulliBig(src: UniformSource, r: bigint, d: bigint): boolean {
  if (r >= d) return true;
  if (r <= 0n) return false;
  let rem = r;
  for (;;) {
    const scaled = rem << 32n;
    const digit = scaled / d;
    rem = scaled - digit * d;
    const w = src.nextU32();
    const dg = Number(digit);
    if (w < dg) return true;
    if (w > dg) return false;
    if (rem === 0n) return false; // r/d ended: U >= r/d from here on (U = 0.digits… exactly only on a null set)
  }
}

/** Bernoulli(exp(−a/b)) for integers 0 <= a <= b < 2^53 (CKS Algorithm 1, γ ≤ 1). */
function bernoulliExpUnit(src: UniformSource, a: number, b: number): boolean {
  let k = 1;
  // b·k leaves the exact range of doubles only for absurdly long runs (probability < 1/k!).
  while (b * k <= TWO53 ? bernoulli(src, a, b * k) : bernoulliBig(src, BigInt(a), BigInt(b) * BigInt(k))) k++;
  return k % 2 === 1;
}

/** Bernoulli(exp(−1)). */
const bernoulliExpOne = (src: UniformSource): boolean => bernoulliExpUnit(src, 1, 1);

/** Bernoulli(exp(−r/d)) for BigInts 0 <= r <= d (CKS Algorithm 1, γ ≤ 1). */
function bernoulliExpUnitBig(src: UniformSource, r: bigint, d: bigint): boolean {
  if (d < SMALL_DEN) return bernoulliExpUnit(src, Number(r), Number(d));
  let k = 1n;
  while (bernoulliBig(src, r, d * k)) k++;
  return k % 2n === 1n;
}

/** Bernoulli(exp(−γ)) for a rational γ = num/den >= 0. */
export function bernoulliExp(src: UniformSource, gamma: Rational): boolean {
  const { num, den } = checkRational(gamma, 'γ');
  const whole = num / den;
  for (let i = 0n; i < whole; i++) if (!bernoulliExpOne(src)) return false;
  return bernoulliExpUnitBig(src, num - whole * den, den);
}

/** Geometric: the number of successes before the first failure of Bernoulli(exp(−1)) trials. */
function geometricExpOne(src: UniformSource): number {
  let k = 0;
  while (bernoulliExpOne(src)) k++;
  return k;
}

/**
 * X >= 0 with P[X = x] = (1 − e^{−1/t}) e^{−x/t}, for an integer scale 1 <= t <= 2^40
 * (CKS Algorithm 2 with γ = 1/t: U uniform in [0, t) accepted with probability e^{−U/t}, then
 * X = V·t + U for V geometric with ratio e^{−1}).
 */
function geometricExpInv(src: UniformSource, t: number): number {
  let u: number;
  do u = uniformBelow(src, t);
  while (!bernoulliExpUnit(src, u, t));
  return geometricExpOne(src) * t + u;
}

/** Discrete Laplace: P[x] ∝ exp(−|x|/t) over all integers, for an integer scale 1 <= t <= 2^40. */
export function sampleDiscreteLaplace(src: UniformSource, t: number): number {
  if (!Number.isInteger(t) || t < 1 || t > 2 ** 40) fail(ErrorCode.InvalidArgument, 'discrete Laplace scale must be an integer in 1..2^40');
  for (;;) {
    const negative = (src.nextU32() & 1) === 1;
    const magnitude = geometricExpInv(src, t);
    if (negative && magnitude === 0) continue; // −0 and +0 would count zero twice
    return negative ? -magnitude : magnitude;
  }
}

function checkRational(r: Rational, what: string): Rational {
  if (typeof r?.num !== 'bigint' || typeof r.den !== 'bigint' || r.num < 0n || r.den <= 0n) fail(ErrorCode.InvalidArgument, `${what} must be a rational num/den with num >= 0 and den > 0`);
  return r;
}

/** ⌊√(a/b)⌋ exactly, by integer square root of ⌊a/b⌋ (⌊√⌊x⌋⌋ = ⌊√x⌋). */
function floorSqrt(a: bigint, b: bigint): bigint {
  const n = a / b;
  if (n < 2n) return n;
  let x = BigInt(Math.floor(Math.sqrt(Number(n)))); // a guess, corrected exactly below
  while (x * x > n) x--;
  while ((x + 1n) * (x + 1n) <= n) x++;
  return x;
}

/**
 * A discrete Gaussian N_Z(0, σ²) sampler for one σ² = a/b, with everything that depends only on
 * σ² computed once: the vector path of the mechanism draws millions of values from one σ².
 */
export class DiscreteGaussian {
  readonly sigma2: Rational;
  private readonly t: number;
  private readonly a: bigint;
  private readonly bt: bigint;
  private readonly den: bigint;
  /** The bias fits in doubles exactly when |Y|·b·t − a stays below 2^26 in magnitude. */
  private readonly smallLimit: number;
  private readonly aNum: number;
  private readonly btNum: number;
  private readonly denNum: number;

  /** σ² = num/den > 0, with σ at most 2^40 (far beyond any 32-bit modulus). */
  constructor(sigma2: Rational) {
    const { num, den } = checkRational(sigma2, 'σ²');
    if (num === 0n) fail(ErrorCode.InvalidArgument, 'σ² must be positive');
    if (num / den >= 1n << 80n) fail(ErrorCode.InvalidArgument, 'σ must be at most 2^40');
    const t = floorSqrt(num, den) + 1n;
    if (t > 1n << 40n) fail(ErrorCode.InvalidArgument, 'σ must be at most 2^40');
    this.sigma2 = { num, den };
    this.t = Number(t);
    this.a = num;
    this.bt = den * t;
    this.den = 2n * num * den * t * t;
    const small = this.den < 1n << 52n && num < 1n << 26n && this.bt < 1n << 26n;
    this.smallLimit = small ? 2 ** 26 : -1;
    this.aNum = Number(num);
    this.btNum = Number(this.bt);
    this.denNum = Number(this.den);
  }

  /** One sample. */
  sample(src: UniformSource): number {
    for (;;) {
      const y = sampleDiscreteLaplace(src, this.t);
      if (this.accept(src, y < 0 ? -y : y)) return y;
    }
  }

  /** Fills `out` with independent samples. */
  fill(src: UniformSource, out: Int32Array | Float64Array): void {
    for (let i = 0; i < out.length; i++) out[i] = this.sample(src);
  }

  /** Bernoulli(exp(−(|y| − σ²/t)²/(2σ²))) = Bernoulli(exp(−N/D)), N = (|y|bt − a)², D = 2abt². */
  private accept(src: UniformSource, absY: number): boolean {
    const diffNum = absY * this.btNum - this.aNum; // exact while |y|·b·t < 2^53
    if (this.smallLimit > 0 && Math.abs(diffNum) < this.smallLimit) {
      const n = diffNum * diffNum; // < 2^52: exact
      const whole = Math.floor(n / this.denNum); // exact: integer quotient of exact integers below 2^53
      for (let i = 0; i < whole; i++) if (!bernoulliExpOne(src)) return false;
      return bernoulliExpUnit(src, n - whole * this.denNum, this.denNum);
    }
    const diff = BigInt(absY) * this.bt - this.a;
    const n = diff * diff;
    const whole = n / this.den;
    for (let i = 0n; i < whole; i++) if (!bernoulliExpOne(src)) return false;
    return bernoulliExpUnitBig(src, n - whole * this.den, this.den);
  }
}

/** One sample of N_Z(0, σ²) (builds the sampler each call: use `DiscreteGaussian` for many). */
export function sampleDiscreteGaussian(src: UniformSource, sigma2: Rational): number {
  return new DiscreteGaussian(sigma2).sample(src);
}

/**
 * The smallest rational with denominator `den` that is >= x (x > 0, finite): how a calibrated
 * float variance becomes the exact σ² the sampler uses. Rounding up only adds noise.
 */
export function rationalAtLeast(x: number, den = 1n << 20n): Rational {
  if (!(Number.isFinite(x) && x > 0)) fail(ErrorCode.InvalidArgument, 'a variance must be a finite positive number');
  const scaled = x * Number(den);
  if (scaled >= 2 ** 100) fail(ErrorCode.InvalidArgument, 'variance too large');
  let num = BigInt(Math.ceil(scaled));
  // Math.ceil of the product can land one below when x·den rounded down in floating point.
  if (Number(num) / Number(den) < x) num += 1n;
  return { num, den };
}

/**
 * σ² >= x as a rational the sampler handles in doubles when it can: the denominator is the
 * largest power of two up to 2^20 with x·den <= 2^24, so a = x·den, b·t and 2abt² stay below
 * 2^26, 2^26 and 2^52 for σ up to 2^12 (the exact double path of `DiscreteGaussian`); the
 * rounding up adds at most a relative 2^−20 (or 1/x for larger x) to the variance.
 */
export function samplerVariance(x: number): Rational {
  if (!(Number.isFinite(x) && x > 0)) fail(ErrorCode.InvalidArgument, 'a variance must be a finite positive number');
  const k = Math.max(0, Math.min(20, Math.floor(24 - Math.log2(x))));
  return rationalAtLeast(x, 1n << BigInt(k));
}

/** σ² as a float (for accounting and reporting). */
export const rationalToNumber = (r: Rational): number => Number(r.num) / Number(r.den);

/** "num/den", the text form of a rational in JSON. */
export const formatRational = (r: Rational): string => `${r.num}/${r.den}`;

export function parseRational(s: string): Rational {
  const m = /^(\d{1,40})\/(\d{1,40})$/.exec(s);
  if (!m) fail(ErrorCode.InvalidArgument, 'a rational must be written num/den in decimal digits');
  return checkRational({ num: BigInt(m[1]!), den: BigInt(m[2]!) }, 'rational');
}
