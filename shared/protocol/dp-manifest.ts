/**
 * The optional `dp` section of a job manifest: distributed differential privacy inside the
 * secure sum (the distributed discrete Gaussian mechanism, docs/differential-privacy.md). The
 * section is part of the signed manifest, so a coordinator cannot strip or change it without
 * clients refusing the round (the manifest hash binds the session id).
 *
 * The section carries the calibrated parameters themselves (γ, bits, σ², B, β), not only the
 * targets: clients and the coordinator encode and decode with exactly these values, and every
 * reader recomputes the privacy they give from them with the accountant (`dpRoundCost`), never
 * trusting the claimed `epsilon`. `checkDpSpec` refuses a section whose parameters are
 * inconsistent with the job (its rounds, round.dim, cohort and threshold).
 */
import { z } from 'zod';
import { ErrorCode, fail } from '../errors.js';
import { accountDdg, ddgRdp, ddgRho, roundedNormBound2, type DdgRound } from '../dp/accountant.js';
import { assertDpParams, encodedLength, type DpParams } from '../dp/encode.js';
import { paddedDim } from '../dp/hadamard.js';
import { parseRational, rationalToNumber } from '../dp/sampler.js';
import { wrapProbabilityBound, type Calibration } from '../dp/calibrate.js';
import { utf8 } from '../bytes.js';
import { hkdfSha256 } from '../crypto/hkdf.js';
import { ceilLog2, sumBitsOf, type RoundParams } from './params.js';

/** The largest per-round wrap probability a manifest may accept (the calibrator's upper limit). */
export const MAX_WRAP_PROBABILITY = 1e-3;

const finite = () => z.number().refine(Number.isFinite, 'must be a finite number');

export const DpSpecSchema = z
  .object({
    /** The only mechanism: each client adds discrete Gaussian noise to its rotated, rounded update. */
    mechanism: z.literal('distributed-discrete-gaussian'),
    /** L2 clip norm C applied to each client's update (real units). */
    clip: finite().positive(),
    /** Noise multiplier z: the released sum's noise std over C when minClients survive. */
    noiseMultiplier: finite().positive(),
    /** δ of the job's (ε, δ) guarantee, in (0, 1). */
    delta: finite().gt(0).lt(1),
    /** The job's total ε over `rounds` rounds as calibrated (informational: readers recompute it). */
    epsilon: finite().positive(),
    /** n_min: the fewest survivors a round can complete with; round.threshold must be at least this. */
    minClients: z.number().int().min(2).max(10_000_000),
    /** n_max: the most clients a sum can hold (for the wrap bound); at least round.cohort. */
    maxClients: z.number().int().min(2).max(10_000_000),
    /** The sum lives in Z_{2^bits} (2^bits divides 2^32, so the 32-bit SecAgg sum reduces exactly). */
    bits: z.number().int().min(2).max(32),
    /** Granularity γ: one integer step in real units. */
    gamma: finite().positive(),
    /** Per-client noise variance σ² in integer units, an exact rational "num/den". */
    sigma2: z.string().regex(/^[0-9]{1,40}\/[0-9]{1,40}$/, 'must be "num/den"'),
    /** Bound B on a client's squared rounded norm (integer units), a decimal integer. */
    normBound2: z.string().regex(/^[1-9][0-9]{0,39}$/, 'must be a positive decimal integer'),
    /** β of conditional randomized rounding, in [0, 1). */
    beta: finite().min(0).lt(1),
  })
  .strict();

export type DpSpec = z.output<typeof DpSpecSchema>;

/** The part of a manifest the DP helpers read (kept structural: manifest.ts imports this module). */
export interface DpManifestView {
  rounds: number;
  round: { dim: number; cohort: number; threshold?: number };
  dp?: DpSpec;
}

/** The manifest's `dp` section for a calibration (`aegis dp calibrate`'s output, camel-cased). */
export function dpSpecOfCalibration(c: Calibration): DpSpec {
  return {
    mechanism: c.mechanism,
    clip: c.clip,
    noiseMultiplier: c.noise_multiplier,
    delta: c.delta,
    epsilon: c.epsilon,
    minClients: c.clients,
    maxClients: c.max_clients,
    bits: c.bits,
    gamma: c.gamma,
    sigma2: c.sigma2_per_client,
    normBound2: c.norm_bound2,
    beta: c.beta,
  };
}

/** The encoder's parameters for a manifest's `dp` section (dim = round.dim). */
export function dpParamsOfSpec(dp: DpSpec, dim: number): DpParams {
  const p: DpParams = { dim, clip: dp.clip, gamma: dp.gamma, bits: dp.bits, sigma2: parseRational(dp.sigma2), normBound2: BigInt(dp.normBound2) };
  assertDpParams(p);
  return p;
}

/** The encoder's parameters of a DP manifest. Throws invalid-argument for a manifest without `dp`. */
export function dpParamsOfManifest(m: DpManifestView): DpParams {
  if (!m.dp) fail(ErrorCode.InvalidArgument, 'the manifest has no dp section');
  return dpParamsOfSpec(m.dp, m.round.dim);
}

/** One round of the mechanism as the accountant sees it: the padded dimension, n_min clients. */
function ddgRoundOf(dp: DpSpec, dim: number): DdgRound {
  return { sigma2: rationalToNumber(parseRational(dp.sigma2)), clients: dp.minClients, dim: paddedDim(dim), normBound2: BigInt(dp.normBound2) };
}

/** The privacy cost of one round of a DP manifest, from its own parameters (never its claimed ε). */
export function dpRoundCost(m: DpManifestView): { rho: number; rdp: (alpha: number) => number } {
  if (!m.dp) fail(ErrorCode.InvalidArgument, 'the manifest has no dp section');
  const r = ddgRoundOf(m.dp, m.round.dim);
  return { rho: ddgRho(r), rdp: (alpha: number) => ddgRdp(r, alpha) };
}

/** ε (at the manifest's δ) of the first `rounds` rounds of a DP manifest, from the accountant. */
export function dpEpsilonAfter(m: DpManifestView, rounds: number): number {
  if (!m.dp) fail(ErrorCode.InvalidArgument, 'the manifest has no dp section');
  if (rounds <= 0) return 0;
  return accountDdg(ddgRoundOf(m.dp, m.round.dim), rounds, m.dp.delta).epsilon;
}

/**
 * How many 32-bit words a client masks per round besides the weight word: `round.dim` for a
 * plain or training job, the padded dimension `encodedLength` for a DP job. The one place that
 * decides the SecAgg vector length of a manifest.
 */
export function maskedDim(m: DpManifestView): number {
  return m.dp ? encodedLength(dpParamsOfManifest(m)) : m.round.dim;
}

/**
 * A round's SecAgg parameters for a manifest: the manifest's (or a group's) parameters with
 * `dim` replaced by `maskedDim` (the length the state machines mask, less the weight word).
 * The coordinator sends these in the round start and every client expects exactly these.
 */
export function maskedRoundParams<P extends { dim: number }>(m: DpManifestView, p: P): P {
  return { ...p, dim: maskedDim(m) };
}

/**
 * r: the bits of a round's sum (it is computed mod 2^r, and each masked word travels as r bits;
 * `p` is the round's or its group's parameters). A plain or training job: `sumBitsOf(p)`, the
 * fewest that hold n values of b bits. A DP job: the `dp` section's modulus, which its encoding
 * wraps into anyway — widened, if it must be, until the weight word (one per survivor) fits.
 * The coordinator and every client derive it from the signed manifest; it never travels alone.
 */
export function maskedSumBits(m: DpManifestView, p: Pick<RoundParams, 'cohort' | 'bits'>): number {
  if (!m.dp) return sumBitsOf(p);
  return Math.max(m.dp.bits, ceilLog2(p.cohort + 1));
}

/** HKDF info label of a DP round's public seed (the rotation's randomness). */
export const DP_SESSION_SEED_LABEL = 'aegis/v1/dp-session-seed';

/**
 * A DP round's public 32-byte seed, derived from its session id: the same for every member and
 * the coordinator, fixed only once U1 is (after every member committed its keys), and new in
 * every round.
 */
export function dpSessionSeed(sessionId: Uint8Array): Uint8Array {
  return hkdfSha256(sessionId, new Uint8Array(0), utf8(DP_SESSION_SEED_LABEL), 32);
}

const bad = (rule: string): never => fail(ErrorCode.InvalidArgument, `manifest: dp ${rule}`);

/**
 * Refuses a `dp` section inconsistent with its job: parameters the encoder rejects, a threshold
 * below minClients (a round could then complete with less noise than promised), maxClients
 * below the cohort, too few bits for the wrap bound at maxClients, a rounding bound B below what
 * conditional rounding needs, or a claimed ε lower than the accountant's for these parameters.
 */
export function checkDpSpec(dp: DpSpec, job: { rounds: number; dim: number; cohort: number; threshold: number; groupSize?: number }): void {
  let p: DpParams;
  try {
    p = dpParamsOfSpec(dp, job.dim);
  } catch (err) {
    return bad(`parameters invalid: ${(err as Error).message}`);
  }
  // Every group would rotate with its own session's seed: their sums could not be added.
  if (job.groupSize !== undefined && job.groupSize < job.cohort) bad('cannot be combined with aggregation groups (round.groupSize below round.cohort): a DP round is one SecAgg instance');
  if (dp.maxClients < dp.minClients) bad(`maxClients ${dp.maxClients} is below minClients ${dp.minClients}`);
  if (job.threshold < dp.minClients) {
    bad(`minClients is ${dp.minClients} but round.threshold is ${job.threshold}: a round could complete with fewer survivors than the noise is calibrated for (raise the threshold to at least minClients)`);
  }
  if (dp.maxClients < job.cohort) bad(`maxClients ${dp.maxClients} is below round.cohort ${job.cohort}`);
  const wrap = wrapProbabilityBound(p, dp.maxClients);
  if (!(wrap <= MAX_WRAP_PROBABILITY)) {
    bad(`bits ${dp.bits} are too few for ${dp.maxClients} clients: a coordinate of the sum wraps with probability up to ${wrap.toPrecision(3)} per round (at most ${MAX_WRAP_PROBABILITY} accepted; recalibrate)`);
  }
  const need = roundedNormBound2(dp.clip / dp.gamma, paddedDim(job.dim), dp.beta);
  if (p.normBound2 < need) bad(`normBound2 ${dp.normBound2} is below the rounding bound ${need} for this clip, gamma, dim and beta`);
  const sigma = Math.sqrt(rationalToNumber(p.sigma2) * dp.minClients) * dp.gamma;
  if (sigma < dp.noiseMultiplier * dp.clip * (1 - 1e-6)) {
    bad(`sigma2 gives the sum a noise std of ${sigma.toPrecision(4)} with minClients survivors, below noiseMultiplier × clip = ${(dp.noiseMultiplier * dp.clip).toPrecision(4)}`);
  }
  const eps = accountDdg(ddgRoundOf(dp, job.dim), job.rounds, dp.delta).epsilon;
  if (dp.epsilon < eps * (1 - 1e-9)) {
    bad(`epsilon ${dp.epsilon} is lower than the accountant's ${eps.toPrecision(6)} for these parameters over ${job.rounds} rounds`);
  }
}
