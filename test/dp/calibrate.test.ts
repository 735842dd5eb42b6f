/**
 * The calibrator (shared/dp/calibrate.ts): the noise it asks for is at least the noise promised,
 * the ε it reports is what the accountant gives for its own parameters, automatic bits are the
 * fewest within 1% of the continuous Gaussian, a target ε is met from below, and infeasible
 * settings are refused with the reason. (The simulated no-wrap check is in encode.test.ts.)
 */
import { describe, expect, test } from '@jest/globals';
import { accountDdg, gaussianEpsilon } from '../../shared/dp/accountant.js';
import { AUTO_BITS_SLACK, calibrate, dpParamsOf, wrapProbabilityBound } from '../../shared/dp/calibrate.js';
import { parseRational, rationalToNumber } from '../../shared/dp/sampler.js';

const base = { delta: 1e-5, rounds: 100, clients: 100, dim: 1000, clip: 1 };

describe('calibration for a noise multiplier', () => {
  const c = calibrate({ ...base, noiseMultiplier: 1 });

  test('the sum of n_min clients carries at least z·C of noise, and σ >= 1/2 integer step per client', () => {
    expect(Math.sqrt(c.clients) * c.sigma_per_client).toBeGreaterThanOrEqual(c.noise_multiplier * c.clip);
    expect(Math.sqrt(c.clients) * c.sigma_per_client).toBeLessThan(c.noise_multiplier * c.clip * (1 + 1e-5));
    expect(rationalToNumber(parseRational(c.sigma2_per_client))).toBeGreaterThanOrEqual(0.25);
  });

  test('ε is the accountant’s for the calibrated parameters, above the continuous Gaussian and within 1% of it', () => {
    const p = dpParamsOf(c);
    const again = accountDdg({ sigma2: rationalToNumber(p.sigma2), clients: c.clients, dim: c.padded_dim, normBound2: p.normBound2 }, c.rounds, c.delta);
    expect(c.epsilon).toBe(again.epsilon);
    expect(c.gaussian_epsilon).toBe(gaussianEpsilon(1, 100, 1e-5));
    expect(c.epsilon).toBeGreaterThanOrEqual(c.gaussian_epsilon);
    expect(c.epsilon).toBeLessThanOrEqual(AUTO_BITS_SLACK * c.gaussian_epsilon);
  });

  test('automatic bits are the fewest that stay within 1%: one bit fewer is infeasible or costs more', () => {
    let fewer: ReturnType<typeof calibrate> | undefined;
    try {
      fewer = calibrate({ ...base, noiseMultiplier: 1, bits: c.bits - 1 });
    } catch {
      fewer = undefined;
    }
    if (fewer) expect(fewer.epsilon).toBeGreaterThan(AUTO_BITS_SLACK * c.gaussian_epsilon);
    const more = calibrate({ ...base, noiseMultiplier: 1, bits: 32 });
    expect(more.epsilon).toBeLessThanOrEqual(c.epsilon);
    expect(more.gamma).toBeLessThan(c.gamma);
  });

  test('the wrap bound of the chosen parameters is within the target, and recomputes the same', () => {
    expect(c.wrap_probability).toBeLessThanOrEqual(1e-9);
    expect(wrapProbabilityBound(dpParamsOf(c), c.max_clients)).toBe(c.wrap_probability);
    const loose = calibrate({ ...base, noiseMultiplier: 1, bits: 20, wrapProbability: 1e-3 });
    const tight = calibrate({ ...base, noiseMultiplier: 1, bits: 20 });
    expect(loose.gamma).toBeLessThan(tight.gamma); // a looser wrap target allows a finer grid
  });

  test('more survivors in the sum than n_min need a coarser grid but no more noise per client', () => {
    const wide = calibrate({ ...base, noiseMultiplier: 1, bits: 20, maxClients: 400 });
    const narrow = calibrate({ ...base, noiseMultiplier: 1, bits: 20 });
    expect(wide.gamma).toBeGreaterThan(narrow.gamma);
    expect(Math.abs(wide.sigma_per_client / narrow.sigma_per_client - 1)).toBeLessThan(1e-5); // both z·C/√n_min, rounded up
  });
});

describe('calibration for a target ε', () => {
  test('meets the target from below, with a noise multiplier at least the continuous Gaussian’s', () => {
    const c = calibrate({ ...base, epsilon: 3 });
    expect(c.epsilon).toBeLessThanOrEqual(3);
    expect(c.epsilon).toBeGreaterThan(3 * 0.999);
    expect(gaussianEpsilon(c.noise_multiplier, 100, 1e-5)).toBeLessThanOrEqual(c.epsilon);
    // The continuous Gaussian reaches ε = 3 with a smaller z, by at most 1% (automatic bits).
    const zG = calibrate({ ...base, epsilon: 3, bits: 32 }).noise_multiplier;
    expect(c.noise_multiplier).toBeGreaterThanOrEqual(zG);
    expect(c.noise_multiplier).toBeLessThanOrEqual(AUTO_BITS_SLACK * zG * 1.001);
  });
});

describe('calibration assuming honest Poisson sampling (opt-in)', () => {
  test('a target ε applies to the sampled figure; the worst-case ε clients charge is reported beside it and is larger; the noise is below the unsampled calibration’s', () => {
    const base = { epsilon: 4, delta: 1e-5, rounds: 50, clients: 40, dim: 2000, clip: 1 };
    const plain = calibrate(base);
    const sampled = calibrate({ ...base, assumeSamplingRate: 0.05 });
    expect(plain.assuming_sampling).toBeUndefined();
    expect(sampled.assuming_sampling!.rate).toBe(0.05);
    expect(sampled.assuming_sampling!.epsilon).toBeLessThanOrEqual(4);
    expect(sampled.assuming_sampling!.epsilon).toBeGreaterThan(3.9);
    expect(sampled.epsilon).toBeGreaterThan(4);
    expect(sampled.noise_multiplier).toBeLessThan(plain.noise_multiplier);
    // The worst-case ε is the plain accountant's for the same parameters: what a manifest's clients charge.
    const again = calibrate({ ...base, epsilon: undefined, noiseMultiplier: sampled.noise_multiplier, bits: sampled.bits });
    expect(again.epsilon).toBeCloseTo(sampled.epsilon, 9);
  });

  test('a rate outside (0, 1] is refused', () => {
    expect(() => calibrate({ noiseMultiplier: 1, delta: 1e-5, rounds: 1, clients: 10, dim: 10, clip: 1, assumeSamplingRate: 0 })).toThrow(/sampling rate/);
  });
});

describe('infeasible settings', () => {
  test('a modulus too small for the cohort names the bits', () => {
    expect(() => calibrate({ ...base, clients: 5000, noiseMultiplier: 1, bits: 12 })).toThrow(/infeasible at 12 bits/);
  });

  test('an ε the rounding alone exceeds at few bits is out of reach', () => {
    expect(() => calibrate({ ...base, rounds: 10000, clients: 1000, dim: 1 << 20, epsilon: 0.05, bits: 10 })).toThrow(/infeasible at 10 bits/);
  });

  test('a cohort no 32-bit modulus can hold asks for more than 32 bits', () => {
    expect(() => calibrate({ ...base, clients: 1e6, dim: 4, noiseMultiplier: 0.01 })).toThrow(/more than 32 needed/);
  });

  test('both or neither of z and ε, and out-of-range inputs, are refused', () => {
    expect(() => calibrate({ ...base })).toThrow(/exactly one/);
    expect(() => calibrate({ ...base, noiseMultiplier: 1, epsilon: 1 })).toThrow(/exactly one/);
    expect(() => calibrate({ ...base, noiseMultiplier: 1, delta: 0 })).toThrow(/δ/);
    expect(() => calibrate({ ...base, noiseMultiplier: 1, maxClients: 5 })).toThrow(/max clients/);
    expect(() => calibrate({ ...base, noiseMultiplier: 1, bits: 33 })).toThrow(/bits/);
  });
});
