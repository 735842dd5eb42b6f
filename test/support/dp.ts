/** A manifest's `dp` section from the calibrator, for the DP tests. */
import { calibrate } from '../../shared/dp/calibrate.js';
import { dpSpecOfCalibration, type DpSpec } from '../../shared/protocol/dp-manifest.js';
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
