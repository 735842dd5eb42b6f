/**
 * Fixed-point encoding into Z_{2^32} (DESIGN.md §2, "Quantization"): non-finite values are
 * errors, the cohort sum cannot wrap, values are clipped, stochastic rounding is unbiased and
 * off by less than one step, and the FedAvg weight travels as the last word.
 */
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { ErrorCode } from '../../shared/errors.js';
import {
  assertNoOverflow,
  assertQuantParams,
  decodeWeightedSum,
  dequantizeSum,
  encodeWeightedInput,
  quantize,
  type QuantParams,
} from '../../shared/crypto/quantize.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { codeOf } from '../support/codes.js';


const rng = (seed: number | string = 0): DeterministicRng => DeterministicRng.fromSeed('quantize test', seed);
const step = (p: QuantParams): number => (2 * p.clip) / (2 ** p.bits - 1);

describe('non-finite values and parameters', () => {
  test('NaN, +Infinity and -Infinity anywhere in the input are non-finite-value errors', () => {
    const p = { clip: 1, bits: 16 };
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      for (const at of [0, 5, 4095, 4096, 9999]) {
        const values = new Float64Array(10000).fill(0.25);
        values[at] = bad;
        expect(codeOf(() => quantize(values, p, rng()))).toBe(ErrorCode.NonFiniteValue);
        expect(codeOf(() => encodeWeightedInput(values, 1, p, rng()))).toBe(ErrorCode.NonFiniteValue);
      }
    }
  });

  test('clip ranges that are not finite and positive, and bits outside 1..24, are refused', () => {
    for (const clip of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) expect(codeOf(() => assertQuantParams({ clip, bits: 8 }))).toBe(ErrorCode.InvalidArgument);
    for (const bits of [0, 25, 8.5, -3]) expect(codeOf(() => assertQuantParams({ clip: 1, bits }))).toBe(ErrorCode.InvalidArgument);
    expect(codeOf(() => assertQuantParams({ clip: 1e-9, bits: 1 }))).toBeUndefined();
    expect(codeOf(() => assertQuantParams({ clip: 1e9, bits: 24 }))).toBeUndefined();
    expect(codeOf(() => quantize([0], { clip: 1, bits: 25 }, rng()))).toBe(ErrorCode.InvalidArgument);
  });

  test('a clip range accepted by assertQuantParams maps −c to 0, 0 to the middle level and +c to the top level, however large c is', () => {
    // Accepted clips stop at 10^12, so 2c and the step stay finite; anything larger is refused.
    for (const clip of [1e13, 1e300, 1e308, Number.MAX_VALUE]) expect(codeOf(() => assertQuantParams({ clip, bits: 8 }))).toBe(ErrorCode.InvalidArgument);
    const results = [1e-9, 1, 1e6, 1e12].map((clip) => {
      const p = { clip, bits: 8 };
      expect(codeOf(() => assertQuantParams(p))).toBeUndefined();
      const [low, middle, top] = quantize([-clip, 0, clip], p, rng());
      return { clip, low, middleIsMiddle: middle === 127 || middle === 128, top };
    });
    expect(results).toEqual(results.map(({ clip }) => ({ clip, low: 0, middleIsMiddle: true, top: 255 })));
  });
});

describe('assertNoOverflow (n · 2^b < 2^32)', () => {
  test.each([1, 8, 16, 20, 24])('with b = %i bits it refuses n · 2^b ≥ 2^32 and accepts the largest n just below', (bits) => {
    const limit = 2 ** (32 - bits); // the first refused cohort
    expect(codeOf(() => assertNoOverflow(limit, bits))).toBe(ErrorCode.OverflowRisk);
    expect(codeOf(() => assertNoOverflow(limit + 1, bits))).toBe(ErrorCode.OverflowRisk);
    expect(codeOf(() => assertNoOverflow(limit - 1, bits))).toBeUndefined();
    // Just below really cannot wrap: the largest possible sum, weight word included, fits.
    expect((limit - 1) * (2 ** bits - 1)).toBeLessThan(2 ** 32);
  });

  test('refuses a cohort that is not a positive integer', () => {
    for (const n of [0, -1, 2.5, Number.NaN]) expect(codeOf(() => assertNoOverflow(n, 8))).toBe(ErrorCode.InvalidArgument);
  });
});

describe('quantize', () => {
  test('clips values outside [−c, c] to the end levels', () => {
    const p = { clip: 2, bits: 10 };
    const q = quantize([-1e300, -2.0000001, -2, 2, 2.5, 1e300, -Number.MAX_VALUE, Number.MAX_VALUE], p, rng());
    expect(Array.from(q)).toEqual([0, 0, 0, 1023, 1023, 1023, 0, 1023]);
  });

  test('every quantized value is an integer in [0, 2^b − 1] and within one step of the clipped value', () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ noNaN: true, noDefaultInfinity: true }), { minLength: 1, maxLength: 300 }),
        fc.integer({ min: 1, max: 24 }),
        fc.double({ min: 1e-3, max: 1e6, noNaN: true }),
        fc.nat(),
        (values, bits, clip, seed) => {
          const p = { clip, bits };
          const q = quantize(values, p, rng(seed));
          const max = 2 ** bits - 1;
          values.forEach((v, i) => {
            const qi = q[i]!;
            expect(Number.isInteger(qi) && qi >= 0 && qi <= max).toBe(true);
            const clipped = Math.min(clip, Math.max(-clip, v));
            expect(Math.abs(qi * step(p) - clip - clipped)).toBeLessThanOrEqual(step(p) * (1 + 1e-9));
          });
        },
      ),
      { numRuns: 200 },
    );
  });

  test('the dequantized sum of n clients is within n · step of the float sum', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 500 }),
        fc.integer({ min: 2, max: 20 }),
        fc.nat(),
        (n, dim, bits, seed) => {
          const p = { clip: 1.5, bits };
          const data = rng(`data ${seed}`);
          const sum = new Uint32Array(dim);
          const floatSum = new Float64Array(dim);
          for (let c = 0; c < n; c++) {
            const values = Array.from({ length: dim }, () => (data.nextFloat() * 2 - 1) * 1.5);
            const q = quantize(values, p, rng(`client ${seed} ${c}`));
            for (let i = 0; i < dim; i++) {
              sum[i] = sum[i]! + q[i]!;
              floatSum[i] = floatSum[i]! + values[i]!;
            }
          }
          const back = dequantizeSum(sum, n, p);
          for (let i = 0; i < dim; i++) expect(Math.abs(back[i]! - floatSum[i]!)).toBeLessThan(n * step(p));
        },
      ),
      { numRuns: 60 },
    );
  });

  test('stochastic rounding is unbiased: the mean of many roundings of one value is that value, to within a small fraction of a step', () => {
    // 4 bits: a step of 2/15. A rounding that always went down, or to the nearest level, would
    // be off by 0.3 or 0.7 of a step here; the mean of 256 · 1024 unbiased roundings has a
    // standard deviation of at most 0.5 / 512 ≈ 0.001 step, and the bound is five of those.
    const p = { clip: 1, bits: 4 };
    const s = step(p);
    for (const frac of [0.3, 0.7, 0.05]) {
      const v = -1 + (6 + frac) * s;
      const values = new Float64Array(1024).fill(v);
      let total = 0;
      let offGrid = 0; // roundings that are neither neighbouring level
      const seeds = 256;
      for (let seed = 0; seed < seeds; seed++) {
        const q = quantize(values, p, rng(`unbiased ${frac} ${seed}`));
        for (const x of q) {
          if (x !== 6 && x !== 7) offGrid++;
          total += x;
        }
      }
      expect(offGrid).toBe(0);
      const meanLevel = total / (seeds * values.length);
      expect(Math.abs(meanLevel - (6 + frac))).toBeLessThan(0.005);
    }
  });

  test('every word is exactly floor((clamp(v, −c, c) + c) · (2^b − 1) / 2c + u / 2^32), capped at 2^b − 1: the textbook formula, at every b (200 random inputs of up to 9,000 values, clipped ones included)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 24 }),
        fc.constantFrom(1e-9, 0.5, 1, 3.75, 1e6, 1e12),
        fc.array(fc.double({ min: -2, max: 2, noNaN: true }), { minLength: 1, maxLength: 9000 }),
        fc.integer(),
        (bits, clip, unit, seed) => {
          const values = unit.map((x) => x * clip);
          const p = { clip, bits };
          const got = quantize(values, p, rng(seed));
          const draws = rng(seed);
          const max = 2 ** bits - 1;
          const scale = max / (2 * clip);
          let u = draws.nextBlock();
          for (let i = 0; i < values.length; i++) {
            if (i > 0 && i % 4096 === 0) u = draws.nextBlock();
            const c = Math.min(Math.max(values[i]!, -clip), clip);
            const want = Math.min(Math.floor((c + clip) * scale + u[i % 4096]! / 2 ** 32), max);
            if (got[i] !== want) expect({ i, got: got[i], want }).toBe('the same word');
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  test('the same seed gives the same quantization, another seed a different one', () => {
    const values = Array.from({ length: 1000 }, (_, i) => Math.sin(i));
    const p = { clip: 1, bits: 12 };
    expect(Array.from(quantize(values, p, rng(1)))).toEqual(Array.from(quantize(values, p, rng(1))));
    expect(Array.from(quantize(values, p, rng(1)))).not.toEqual(Array.from(quantize(values, p, rng(2))));
  });
});

describe('weighted FedAvg encoding', () => {
  test('the weight travels as the last word, and decodeWeightedSum returns the sum, the total weight and sum / totalWeight', () => {
    const p = { clip: 4, bits: 16 };
    const dim = 50;
    const clients = [
      { w: 3, x: Array.from({ length: dim }, (_, i) => Math.cos(i) * 0.9) },
      { w: 10, x: Array.from({ length: dim }, (_, i) => Math.sin(i) * 0.3) },
      { w: 1, x: Array.from({ length: dim }, () => -0.5) },
    ];
    const intSum = new Uint32Array(dim + 1);
    for (const [c, { w, x }] of clients.entries()) {
      const enc = encodeWeightedInput(x.map((v) => v * w), w, p, rng(`weighted ${c}`));
      expect(enc).toHaveLength(dim + 1);
      expect(enc[dim]).toBe(w);
      for (let i = 0; i <= dim; i++) intSum[i] = intSum[i]! + enc[i]!;
    }
    const out = decodeWeightedSum(intSum, clients.length, p);
    const totalWeight = 14;
    expect(out.totalWeight).toBe(totalWeight);
    expect(out.sum).toHaveLength(dim);
    expect(out.mean).toHaveLength(dim);
    for (let i = 0; i < dim; i++) {
      const weighted = clients.reduce((acc, { w, x }) => acc + w * x[i]!, 0);
      expect(Math.abs(out.sum[i]! - weighted)).toBeLessThan(clients.length * step(p));
      expect(out.mean[i]).toBeCloseTo(out.sum[i]! / totalWeight, 12);
      expect(Math.abs(out.mean[i]! - weighted / totalWeight)).toBeLessThan((clients.length * step(p)) / totalWeight);
    }
  });

  test('a total weight of zero gives an all-zero mean rather than NaN', () => {
    const p = { clip: 1, bits: 8 };
    const enc = encodeWeightedInput([0.5, -0.5], 0, p, rng());
    const out = decodeWeightedSum(enc, 1, p);
    expect(out.totalWeight).toBe(0);
    expect(Array.from(out.mean)).toEqual([0, 0]);
  });

  test('weights that are not integers in 0..2^b − 1 are refused', () => {
    const p = { clip: 1, bits: 8 };
    for (const w of [-1, 256, 1.5, Number.NaN]) expect(codeOf(() => encodeWeightedInput([0], w, p, rng()))).toBe(ErrorCode.InvalidArgument);
    expect(encodeWeightedInput([0], 255, p, rng())[1]).toBe(255);
  });
});
