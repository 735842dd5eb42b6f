/**
 * The exact samplers of Canonne, Kamath and Steinke (NeurIPS 2020), shared/dp/sampler.ts, checked
 * against the exact distributions they claim: Bernoulli(exp(−γ)) rates for rational γ (both the
 * double and the BigInt paths), the discrete Laplace and the discrete Gaussian by chi-square
 * goodness of fit and tail frequencies, with fixed seeds (test/dp/stats.ts for the thresholds).
 */
import { describe, expect, test } from '@jest/globals';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import {
  bernoulli,
  bernoulliBig,
  bernoulliExp,
  cryptoSource,
  DiscreteGaussian,
  parseRational,
  formatRational,
  rationalAtLeast,
  sampleDiscreteLaplace,
  uniformBelow,
  uniformBelowBig,
  type Rational,
} from '../../shared/dp/sampler.js';
import { binomialZ, chiSquare, discreteGaussianPmf, Z_1E4 } from './stats.js';

const rng = (label: string) => DeterministicRng.fromSeed(`dp-sampler-${label}`, 1);

function histogram(draw: () => number, n: number): Map<number, number> {
  const m = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const x = draw();
    m.set(x, (m.get(x) ?? 0) + 1);
  }
  return m;
}

describe('uniform integers and Bernoulli(p) for rational p', () => {
  test('uniformBelow stays in range and hits every value of a small range about equally (double and two-word paths)', () => {
    const src = rng('uniform');
    for (const n of [1, 7, 2 ** 21, 2 ** 21 + 1, 2 ** 32, 2 ** 40 + 3]) {
      for (let i = 0; i < 2000; i++) {
        const u = uniformBelow(src, n);
        expect(Number.isInteger(u) && u >= 0 && u < n).toBe(true);
      }
    }
    const h = histogram(() => uniformBelow(src, 7), 14000);
    const r = chiSquare(h, () => 1 / 7, 0, 6, 14000);
    expect(r.statistic).toBeLessThan(r.critical);
    const big = 3n * (1n << 70n);
    let high = 0;
    for (let i = 0; i < 4000; i++) {
      const u = uniformBelowBig(src, big);
      expect(u >= 0n && u < big).toBe(true);
      if (u >= 2n * (1n << 70n)) high++;
    }
    expect(binomialZ(high, 4000, 1 / 3)).toBeLessThan(Z_1E4);
  });

  test('uniformBelow on the multiply-and-shift path (n <= 2^21) spreads evenly over a range that is not a power of two (n = 3·2^19, chi-square over its thirds)', () => {
    const src = rng('uniform-lemire');
    const n = 3 * 2 ** 19;
    const h = histogram(() => Math.floor((uniformBelow(src, n) * 3) / n), 30000);
    const r = chiSquare(h, () => 1 / 3, 0, 2, 30000);
    expect(r.statistic).toBeLessThan(r.critical);
  });

  test('bernoulli(a, b) decides on the first word exactly as the exact first base-2^32 digit of a/b says (both the exact-double and the float-quotient paths)', () => {
    // A source that hands out a chosen first word, then fresh words: with w below the digit
    // ⌊a·2^32/b⌋ the answer must be true, above it false, whatever comes after.
    const fresh = rng('bernoulli-digit');
    const pick = rng('bernoulli-cases');
    const withFirst = (w: number) => {
      let first = true;
      return {
        nextU32: () => {
          if (!first) return fresh.nextU32();
          first = false;
          return w;
        },
      };
    };
    for (const bMax of [2 ** 21, 2 ** 53]) {
      for (let i = 0; i < 3000; i++) {
        const b = 1 + uniformBelow(pick, bMax);
        const a = uniformBelow(pick, b + 1);
        const digit = (BigInt(a) << 32n) / BigInt(b);
        if (digit >= 1n << 32n) {
          expect(bernoulli(withFirst(pick.nextU32()), a, b)).toBe(true);
          continue;
        }
        const d = Number(digit);
        if (d > 0) expect(bernoulli(withFirst(uniformBelow(pick, d)), a, b)).toBe(true);
        if (d < 2 ** 32 - 1) expect(bernoulli(withFirst(d + 1 + uniformBelow(pick, 2 ** 32 - 1 - d)), a, b)).toBe(false);
      }
    }
  });

  test('bernoulli(a, b) has rate a/b, including a power-of-two denominator (a digit expansion that ends) and one past 2^21', () => {
    const src = rng('bernoulli-rate');
    const n = 20000;
    for (const [a, b] of [
      [5, 64],
      [1, 3],
      [12345, 2 ** 21 + 7],
      [2 ** 40, 3 * 2 ** 40 + 1],
    ] as const) {
      let hits = 0;
      for (let i = 0; i < n; i++) if (bernoulli(src, a, b)) hits++;
      expect(binomialZ(hits, n, a / b)).toBeLessThan(Z_1E4);
    }
    expect(bernoulli(src, 0, 7)).toBe(false);
    expect(bernoulli(src, 7, 7)).toBe(true);
  });

  test('bernoulliBig(r, d) has rate r/d for a denominator far beyond 2^53', () => {
    const src = rng('bernoulli-big');
    const d = 7n * (1n << 80n);
    const r = 2n * (1n << 80n) + 12345n;
    let hits = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) if (bernoulliBig(src, r, d)) hits++;
    expect(binomialZ(hits, n, 2 / 7)).toBeLessThan(Z_1E4);
    expect(bernoulliBig(src, 0n, d)).toBe(false);
    expect(bernoulliBig(src, d, d)).toBe(true);
  });
});

describe('Bernoulli(exp(−γ)) (CKS20 Algorithm 1)', () => {
  const cases: [string, Rational][] = [
    ['0', { num: 0n, den: 1n }],
    ['1/3', { num: 1n, den: 3n }],
    ['1', { num: 1n, den: 1n }],
    ['5/2', { num: 5n, den: 2n }],
    ['7/5', { num: 7n, den: 5n }],
    ['a fraction over 2^70', { num: (1n << 70n) + 1n, den: 3n << 69n }],
  ];
  test.each(cases)('γ = %s is accepted at rate exp(−γ)', (_name, gamma) => {
    const src = rng(`bexp-${formatRational(gamma)}`);
    const n = 20000;
    let hits = 0;
    for (let i = 0; i < n; i++) if (bernoulliExp(src, gamma)) hits++;
    const p = Math.exp(-Number(gamma.num) / Number(gamma.den));
    expect(binomialZ(hits, n, p)).toBeLessThan(Z_1E4);
  });

  test('a negative or malformed γ is refused', () => {
    expect(() => bernoulliExp(rng('bad'), { num: -1n, den: 1n })).toThrow(/rational/);
    expect(() => bernoulliExp(rng('bad'), { num: 1n, den: 0n })).toThrow(/rational/);
  });
});

describe('discrete Laplace (CKS20 Algorithm 2)', () => {
  test('t = 3 matches P[x] = (e^{1/t} − 1)/(e^{1/t} + 1) · e^{−|x|/t} by chi-square', () => {
    const t = 3;
    const src = rng('dlap');
    const n = 20000;
    const h = histogram(() => sampleDiscreteLaplace(src, t), n);
    const c = (Math.exp(1 / t) - 1) / (Math.exp(1 / t) + 1);
    const r = chiSquare(h, (x) => c * Math.exp(-Math.abs(x) / t), -40, 40, n);
    expect(r.statistic).toBeLessThan(r.critical);
  });
});

describe('discrete Gaussian N_Z(0, σ²) (CKS20 Algorithm 3)', () => {
  const cases: [string, Rational, number][] = [
    ['σ² = 1/4 (the smallest the mechanism allows)', { num: 1n, den: 4n }, 20000],
    ['σ² = 2 (double path)', { num: 2n, den: 1n }, 20000],
    ['σ² = 37/3', { num: 37n, den: 3n }, 20000],
    ['σ² = 37.7 rounded up to a 2^-20 grid (BigInt path, as the calibrator produces)', rationalAtLeast(37.7), 20000],
  ];
  test.each(cases)('%s matches the exact PMF by chi-square, and its tails', (_name, sigma2, n) => {
    const s2 = Number(sigma2.num) / Number(sigma2.den);
    const g = new DiscreteGaussian(sigma2);
    const src = rng(`dg-${formatRational(sigma2)}`);
    const h = histogram(() => g.sample(src), n);
    const { pmf, tail } = discreteGaussianPmf(s2);
    const K = Math.ceil(8 * Math.sqrt(s2)) + 2;
    const r = chiSquare(h, pmf, -K, K, n);
    expect(r.bins).toBeGreaterThanOrEqual(3);
    expect(r.statistic).toBeLessThan(r.critical);
    // Tail frequencies at 1σ, 2σ and 3σ (rounded up to integers): binomial z-scores.
    for (const k of [1, 2, 3].map((j) => Math.max(1, Math.ceil(j * Math.sqrt(s2))))) {
      let count = 0;
      for (const [x, c] of h) if (Math.abs(x) >= k) count += c;
      expect(binomialZ(count, n, tail(k))).toBeLessThan(Z_1E4);
    }
  });

  test('a large σ² = 10^12 (BigInt bias) has the right variance and a symmetric sign', () => {
    const g = new DiscreteGaussian({ num: 10n ** 12n, den: 1n });
    const src = rng('dg-large');
    const n = 4000;
    const xs = new Float64Array(n);
    g.fill(src, xs);
    let m2 = 0;
    let pos = 0;
    for (const x of xs) {
      expect(Number.isInteger(x)).toBe(true);
      m2 += x * x;
      if (x > 0) pos++;
    }
    // n·s²/σ² is chi-square with n degrees of freedom for Gaussian draws: a two-sided 10^-4 band.
    const ratio = m2 / n / 1e12;
    expect(Math.abs(ratio - 1)).toBeLessThan(Z_1E4 * Math.sqrt(2 / n));
    expect(binomialZ(pos, n, 0.5)).toBeLessThan(Z_1E4);
  });

  test('draws depend only on the seed: the same seed repeats them, another does not', () => {
    const g = new DiscreteGaussian({ num: 9n, den: 1n });
    const draw = (seed: number) => Array.from({ length: 50 }, ((s) => () => g.sample(s))(DeterministicRng.fromSeed('dg-repeat', seed)));
    expect(draw(1)).toEqual(draw(1));
    expect(draw(1)).not.toEqual(draw(2));
  });

  test('the crypto source draws integers of the right spread', () => {
    const g = new DiscreteGaussian({ num: 100n, den: 1n });
    const src = cryptoSource();
    const xs = Array.from({ length: 200 }, () => g.sample(src));
    expect(xs.every((x) => Number.isInteger(x) && Math.abs(x) < 100)).toBe(true);
    expect(new Set(xs).size).toBeGreaterThan(10);
  });

  test('σ² must be a positive rational; rationals round up and parse back', () => {
    expect(() => new DiscreteGaussian({ num: 0n, den: 1n })).toThrow(/positive/);
    expect(() => new DiscreteGaussian({ num: 1n, den: -2n })).toThrow(/rational/);
    const r = rationalAtLeast(0.1);
    expect(Number(r.num) / Number(r.den)).toBeGreaterThanOrEqual(0.1);
    expect(Number(r.num - 1n) / Number(r.den)).toBeLessThan(0.1);
    expect(parseRational(formatRational(r))).toEqual(r);
    expect(() => parseRational('1.5')).toThrow(/num\/den/);
  });
});
