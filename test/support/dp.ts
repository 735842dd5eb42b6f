/** A manifest's `dp` section from the calibrator, for the DP tests. */
import { calibrate } from '../../shared/dp/calibrate.js';
import { dpSpecOfCalibration, type DpSpec } from '../../shared/protocol/dp-manifest.js';

const CLIP = 1;

/** The `dp` section the calibrator gives for this job (z = 1 unless given, δ = 1e-5, clip 1, one round unless given). */
export function dpSection(o: { dim: number; minClients: number; maxClients: number; rounds?: number; z?: number }): DpSpec {
  const c = calibrate({ noiseMultiplier: o.z ?? 1, delta: 1e-5, rounds: o.rounds ?? 1, clients: o.minClients, maxClients: o.maxClients, dim: o.dim, clip: CLIP });
  return dpSpecOfCalibration(c);
}

