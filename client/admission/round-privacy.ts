/**
 * A round's privacy cost, from its manifest, as the privacy budget charges it
 * (privacy-budget.ts). The manifest's signed `dp` section (mechanism
 * 'distributed-discrete-gaussian') gives the per-client noise variance σ² (a fraction "num/den"
 * in integer units), the norm bound B of a rounded update ("decimal"), the fewest clients whose
 * noise is in a released sum (minClients) and the dimension; one round costs the KLS21 RDP of
 * shared/dp/accountant.ts at each order. A manifest without a `dp` section is not
 * differentially private.
 *
 * Until the manifest schema carries the section, it is read here through a local type of the
 * agreed shape; the schema's own `dpRoundCost` replaces `dpRdpOf` once it lands.
 */
import { ddgRdp, type DdgRound } from '../../shared/dp/accountant.js';
import { paddedDim } from '../../shared/dp/hadamard.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { JobManifest } from '../../shared/protocol/manifest.js';
import { rdpOnGrid, type RoundPrivacy } from './privacy-budget.js';

/** The manifest's `dp` section (the agreed shape; the fields the cost needs are checked here). */
export interface ManifestDp {
  mechanism: 'distributed-discrete-gaussian';
  clip: number;
  noiseMultiplier: number;
  delta: number;
  epsilon: number;
  minClients: number;
  maxClients: number;
  bits: number;
  gamma: number;
  /** Per-client variance σ² in integer units, "num/den". */
  sigma2: string;
  /** Integer bound B on a rounded update's squared L2 norm, decimal. */
  normBound2: string;
  beta: number;
}

const bad = (why: string): AegisError => new AegisError(ErrorCode.InvalidArgument, `the manifest's dp section ${why}`);

/** One round's KLS21 parameters from a manifest's `dp` section and the round's dimension. */
export function ddgRoundOf(dp: ManifestDp, dim: number): DdgRound {
  if (dp.mechanism !== 'distributed-discrete-gaussian') throw bad(`names mechanism '${String(dp.mechanism)}', which this client does not account for`);
  const m = /^([1-9][0-9]{0,30})\/([1-9][0-9]{0,30})$/.exec(dp.sigma2);
  if (!m) throw bad(`sigma2 '${String(dp.sigma2).slice(0, 40)}' is not num/den`);
  if (!/^(0|[1-9][0-9]{0,60})$/.test(dp.normBound2)) throw bad(`normBound2 is not a decimal integer`);
  if (!Number.isInteger(dp.minClients) || dp.minClients < 1) throw bad('minClients is not a positive integer');
  return { sigma2: Number(m[1]) / Number(m[2]), clients: dp.minClients, dim: paddedDim(dim), normBound2: BigInt(dp.normBound2) };
}

/** One round's RDP at order α for a DP manifest. */
export function dpRdpOf(dp: ManifestDp, dim: number): (alpha: number) => number {
  const r = ddgRoundOf(dp, dim);
  return (alpha) => ddgRdp(r, alpha);
}

/** Whether the round of `manifest` is differentially private, and if so its cost on the grid. */
export function roundPrivacyOf(manifest: JobManifest): RoundPrivacy {
  const dp = (manifest as JobManifest & { dp?: ManifestDp }).dp;
  if (dp === undefined) return { dp: false };
  return { dp: true, rdp: rdpOnGrid(dpRdpOf(dp, manifest.round.dim)) };
}
