/** A manifest's `dp` section from the calibrator, for the DP tests. */
import { expect } from '@jest/globals';
import { calibrate } from '../../shared/dp/calibrate.js';
import { dpDecodeSum64, encodedLength } from '../../shared/dp/encode.js';
import { parseRational, rationalToNumber } from '../../shared/dp/sampler.js';
import { dpParamsOfSpec, dpSessionSeed, dpSpecOfCalibration, type DpSpec } from '../../shared/protocol/dp-manifest.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import type { Trainer } from '../../client/admission/training-round.js';

const CLIP = 1;

/** The `dp` section the calibrator gives for this job (z = 1 unless given, δ = 1e-5, clip 1, one round unless given). */
export function dpSection(o: { dim: number; minClients: number; maxClients: number; rounds?: number; z?: number }): DpSpec {
  const c = calibrate({ noiseMultiplier: o.z ?? 1, delta: 1e-5, rounds: o.rounds ?? 1, clients: o.minClients, maxClients: o.maxClients, dim: o.dim, clip: CLIP });
  return dpSpecOfCalibration(c);
}


/**
 * Client i's unweighted update for the DP round tests: fixed pseudo-random values (seeded by
 * `label` and i) with L2 norm 0.6, inside the clip.
 */
export function dpUpdate(label: string, i: number, dim: number): Float64Array {
  const rng = DeterministicRng.fromSeed(label, i);
  const v = new Float64Array(dim);
  for (let j = 0; j < dim; j++) v[j] = rng.nextFloat() * 2 - 1;
  const norm = Math.hypot(...v);
  return v.map((x) => (0.6 * x) / norm);
}

/** A trainer that reports client i's update weighted by its example count (10 + i), as trainers do. */
export const dpTrainer =
  (label: string, i: number, dim: number): Trainer =>
  async () => {
    const weight = 10 + i;
    return { values: Float32Array.from(dpUpdate(label, i, dim), (x) => x * weight), weight, examples: weight };
  };

/** χ²_k quantile by Wilson–Hilferty at standard-normal quantile q. */
export const chi2Quantile = (k: number, q: number): number => k * (1 - 2 / (9 * k) + q * Math.sqrt(2 / (9 * k))) ** 3;

/**
 * Checks a DP round's released sum (the unmasked words, weight word last) against what the
 * manifest promises, and returns it decoded: the weight word is the survivor count (every client
 * masks weight 1), and the error against the true sum of `update(i)` over the survivors has the
 * promised noise — n discrete Gaussians of variance σ² (integer units) times γ², at least (z·C)²
 * since n >= minClients. The rotation keeps the variance per coordinate (orthonormal, i.i.d.
 * noise); rounding adds at most 1/4 per client and coordinate, which the upper end allows for. A
 * two-sided χ²_dim interval at ±6 standard-normal quantiles: it fails by chance with probability
 * about 2e-9, so the noise is present and of the promised size.
 */
export function expectPromisedNoise(sum: Uint32Array, dp: DpSpec, dim: number, sessionId: Uint8Array, survivors: number, update: (i: number) => Float64Array): Float64Array {
  const params = dpParamsOfSpec(dp, dim);
  const d = encodedLength(params);
  expect(sum).toHaveLength(d + 1);
  expect(sum[d]).toBe(survivors);
  const released = dpDecodeSum64(sum.subarray(0, d), params, dpSessionSeed(sessionId));
  const truth = new Float64Array(dim);
  for (let i = 0; i < survivors; i++) update(i).forEach((x, j) => (truth[j]! += x));
  let sq = 0;
  for (let j = 0; j < dim; j++) sq += (released[j]! - truth[j]!) ** 2;
  const noiseVar = survivors * rationalToNumber(parseRational(dp.sigma2)) * dp.gamma ** 2;
  expect(noiseVar).toBeGreaterThanOrEqual((dp.noiseMultiplier * dp.clip) ** 2);
  const roundingVar = (survivors / 4) * dp.gamma ** 2;
  expect(sq / noiseVar).toBeGreaterThan(chi2Quantile(dim, -6));
  expect(sq / (noiseVar + roundingVar)).toBeLessThan(chi2Quantile(dim, 6));
  return released;
}
