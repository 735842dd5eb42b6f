/**
 * The DDG client pipeline and the coordinator's decode (shared/dp/encode.ts): conditional
 * rounding never exceeds its norm bound, the modular wrap is exact, and encode → sum in Z_2^32
 * over n simulated clients → decode returns the true sum plus noise whose variance is the one
 * promised (n·γ²·Var N_Z(0, σ²) plus at most n·γ²/4 of rounding), by a chi-square band on the
 * sample variance.
 */
import { describe, expect, test } from '@jest/globals';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { roundedNormBound2 } from '../../shared/dp/accountant.js';
import { calibrate, dpParamsOf } from '../../shared/dp/calibrate.js';
import { clipRotateRound, dpDecodeSum, dpDecodeSum64, dpEncode, encodedLength, liftCentered, squaredNormExact, wrapToModulus, type DpParams } from '../../shared/dp/encode.js';
import { paddedDim } from '../../shared/dp/hadamard.js';
import { DiscreteGaussian, rationalAtLeast } from '../../shared/dp/sampler.js';
import { discreteGaussianPmf, Z_1E4 } from './stats.js';

const seed = new Uint8Array(32).fill(9);

function randomUpdate(rng: DeterministicRng, m: number, norm: number): Float32Array {
  const v = Float32Array.from({ length: m }, () => rng.nextFloat() * 2 - 1);
  const n = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  return v.map((x) => (x * norm) / n);
}

function params(over: Partial<DpParams> = {}): DpParams {
  const base = { dim: 1000, clip: 1, gamma: 1 / 64, bits: 24, sigma2: { num: 400n, den: 1n }, beta: Math.exp(-0.5) };
  const p = { ...base, ...over };
  return { dim: p.dim, clip: p.clip, gamma: p.gamma, bits: p.bits, sigma2: p.sigma2, normBound2: over.normBound2 ?? roundedNormBound2(p.clip / p.gamma, paddedDim(p.dim), base.beta) };
}

describe('conditional randomized rounding', () => {
  test('the rounded vector never exceeds the norm bound, even where plain rounding would', () => {
    // A bound near the median of plain rounding's squared norm (8² + about 256/6 for uniform
    // fractional parts), tighter than any β gives, so that redraws really happen.
    const p = params({ dim: 256, gamma: 1 / 8, normBound2: BigInt(Math.round(64 + 256 / 6)) });
    const rng = DeterministicRng.fromSeed('rounding', 1);
    for (let i = 0; i < 50; i++) {
      const r = clipRotateRound(randomUpdate(rng, 256, 5), p, seed, rng); // clipped to 1, i.e. 8 steps
      expect(r.every((x) => Number.isInteger(x))).toBe(true);
      expect(squaredNormExact(r)).toBeLessThanOrEqual(p.normBound2);
    }
    // The same rounding without the condition: how often it exceeds the bound (it must, or the test shows nothing).
    let over = 0;
    for (let i = 0; i < 200; i++) {
      const r = clipRotateRound(randomUpdate(rng, 256, 5), { ...p, normBound2: 1n << 60n }, seed, rng);
      if (squaredNormExact(r) > p.normBound2) over++;
    }
    expect(over).toBeGreaterThan(0);
  });

  test('a bound no rounding can meet is an error after the retry limit, not a loop', () => {
    const p = params({ dim: 16, gamma: 1 / 64, normBound2: 1n });
    expect(() => clipRotateRound(randomUpdate(DeterministicRng.fromSeed('x', 1), 16, 1), p, seed, DeterministicRng.fromSeed('x', 2))).toThrow(/norm bound/);
  });

  test('non-finite values and wrong lengths are refused', () => {
    const p = params({ dim: 4 });
    expect(() => clipRotateRound([0, NaN, 0, 0], p, seed, DeterministicRng.fromSeed('x', 1))).toThrow(/index 1 is not finite/);
    expect(() => clipRotateRound([0, 0, 0], p, seed, DeterministicRng.fromSeed('x', 1))).toThrow(/expects 4/);
  });

  test('the exact squared norm switches to BigInt where doubles would round', () => {
    const v = Float64Array.from([2 ** 30 + 1, 3, -(2 ** 27) - 5]);
    expect(squaredNormExact(v)).toBe((2n ** 30n + 1n) ** 2n + 9n + (2n ** 27n + 5n) ** 2n);
  });
});

describe('the modular wrap', () => {
  test.each([8, 16, 31, 32])('bits = %i: any integer in the centred range survives wrap → wrapping Uint32 sum → lift', (bits) => {
    const half = 2 ** (bits - 1);
    const rng = DeterministicRng.fromSeed('wrap', bits);
    for (let trial = 0; trial < 200; trial++) {
      // Five integers whose sum lies in [−2^(bits−1), 2^(bits−1)), some of them outside it on their own.
      const target = Math.floor(rng.nextFloat() * 2 * half) - half;
      const parts = [0, 0, 0, 0].map(() => Math.floor((rng.nextFloat() - 0.5) * 4 * half));
      parts.push(target - parts.reduce((a, b) => a + b, 0));
      let acc = 0;
      for (const x of parts) acc = (acc + wrapToModulus(x, bits)) >>> 0;
      expect(liftCentered(acc, bits)).toBe(target);
    }
    expect(liftCentered(wrapToModulus(-half, bits), bits)).toBe(-half);
    expect(liftCentered(wrapToModulus(half - 1, bits), bits)).toBe(half - 1);
    expect(liftCentered(wrapToModulus(half, bits), bits)).toBe(-half); // one past the range wraps
  });
});

describe('encode → masked-style sum → decode', () => {
  test('n clients: the decoded sum is the true sum plus noise of the promised variance', () => {
    const n = 6;
    const m = 8000;
    const p = params({ dim: m, gamma: 1 / 256, bits: 32, sigma2: { num: 900n, den: 1n } });
    const rng = DeterministicRng.fromSeed('e2e', 1);
    const sum = new Uint32Array(encodedLength(p));
    const truth = new Float64Array(m);
    const sampler = new DiscreteGaussian(p.sigma2);
    for (let c = 0; c < n; c++) {
      const u = randomUpdate(rng, m, 0.9); // within the clip: the true sum is the plain sum
      u.forEach((x, i) => (truth[i]! += x));
      const words = dpEncode(u, p, seed, rng, sampler);
      expect(words.length).toBe(8192);
      for (let i = 0; i < words.length; i++) sum[i] = (sum[i]! + words[i]!) >>> 0;
    }
    const decoded = dpDecodeSum64(sum, p, seed);
    let mean = 0;
    let sq = 0;
    for (let i = 0; i < m; i++) {
      const e = decoded[i]! - truth[i]!;
      mean += e;
      sq += e * e;
    }
    mean /= m;
    const variance = sq / m;
    // Per coordinate: n·γ²·Var N_Z(0, 900) from the noise, plus between 0 and n·γ²/4 from the
    // rounding (the un-rotation keeps variances of independent coordinates).
    const noise = n * p.gamma ** 2 * discreteGaussianPmf(900).variance;
    const lo = noise;
    const hi = noise + (n * p.gamma ** 2) / 4;
    const band = Z_1E4 * Math.sqrt(2 / m); // relative sd of a sample variance over m coordinates
    expect(variance).toBeGreaterThan(lo * (1 - band));
    expect(variance).toBeLessThan(hi * (1 + band));
    expect(Math.abs(mean)).toBeLessThan(Z_1E4 * Math.sqrt(hi / m));
    // And the noise is really there: without it the error would be rounding only.
    expect(variance).toBeGreaterThan(100 * (n * p.gamma ** 2) / 4);
    const f32 = dpDecodeSum(sum, p, seed, 10);
    expect(f32).toBeInstanceOf(Float32Array);
    expect(Array.from(f32)).toEqual(Array.from(decoded.slice(0, 10), Math.fround));
  });

  test('with a calibrated setting at its chosen bits, n_max clients of aligned updates decode without wrapping', () => {
    const c = calibrate({ noiseMultiplier: 0.7, delta: 1e-5, rounds: 10, clients: 16, maxClients: 20, dim: 500, clip: 2 });
    const p = dpParamsOf(c);
    expect(c.bits).toBeLessThan(32);
    const rng = DeterministicRng.fromSeed('calibrated', 1);
    const u = randomUpdate(rng, 500, 2); // every client sends the same update: the worst case for ||Σ x||
    const padded = encodedLength(p);
    const wrapped = new Uint32Array(padded);
    const exact = new Float64Array(padded); // the integer sum without any modulus
    const sampler = new DiscreteGaussian(p.sigma2);
    for (let i = 0; i < c.max_clients; i++) {
      const r = clipRotateRound(u, p, seed, rng);
      for (let j = 0; j < padded; j++) {
        const v = r[j]! + sampler.sample(rng);
        exact[j]! += v;
        wrapped[j] = (wrapped[j]! + wrapToModulus(v, p.bits)) >>> 0;
      }
    }
    const half = 2 ** (p.bits - 1);
    const peak = Math.max(...Array.from(exact, Math.abs));
    expect(peak).toBeLessThan(half);
    for (let j = 0; j < padded; j++) expect(liftCentered(wrapped[j]!, p.bits)).toBe(exact[j]);
    // The sum uses a real share of the range: at a third of the granularity (three times the
    // integer values) it would have wrapped, so the check above is not vacuous.
    expect(3 * peak).toBeGreaterThan(half);
    const decoded = dpDecodeSum64(wrapped, p, seed);
    let err = 0;
    for (let j = 0; j < 500; j++) err = Math.max(err, Math.abs(decoded[j]! - c.max_clients * u[j]!));
    expect(err).toBeLessThan(10 * Math.sqrt(c.max_clients) * c.sigma_per_client);
  });

  test('a sum of the wrong length or parameters out of range are refused', () => {
    const p = params({ dim: 100 });
    expect(() => dpDecodeSum64(new Uint32Array(100), p, seed)).toThrow(/expects 128/);
    expect(() => dpEncode(new Float32Array(100), { ...p, bits: 33 }, seed, DeterministicRng.fromSeed('x', 1))).toThrow(/bits/);
    expect(() => dpEncode(new Float32Array(100), { ...p, sigma2: rationalAtLeast(0.2) }, seed, DeterministicRng.fromSeed('x', 1))).toThrow(/1\/4/);
  });
});
