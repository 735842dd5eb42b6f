/**
 * Calibration of the distributed discrete Gaussian mechanism: from what an engineer states
 * (a noise multiplier z or a target ε; δ, rounds, clients, dimension, clip) to the parameters
 * every client and the coordinator use (γ, bits, σ² per client, the rounding bound B), with the
 * ε those parameters actually give.
 *
 * Noise: the released sum must carry Gaussian noise of standard deviation z·C (real units) even
 * when only n_min clients survive, so each client adds variance (z·C/γ)²/n_min in integer units
 * (rounded up to a rational the exact sampler handles quickly, samplerVariance, which only adds noise). More survivors add
 * more noise; fewer cannot complete the round.
 *
 * Granularity γ from the modulus (no wrap). Coordinate j of the integer sum of up to n_max
 * clients is S_j = A_j + E_j + N_j:
 *   A_j = ((1/√D) H diag(ξ) Σᵢ xᵢ)_j / γ    a Rademacher sum over the signs ξ with variance proxy
 *                                           ||Σ xᵢ||²/(γ²D) <= (n_max·C/γ)²/D (Hoeffding), for
 *                                           updates that do not depend on ξ
 *   E_j                                     the rounding errors, |E_j| < n_max
 *   N_j = Σᵢ N_Z(0, σ²)                     σ²-subgaussian each (Canonne–Kamath–Steinke 2020), so
 *                                           n_max·σ²-subgaussian, independent of A
 * so P[|A_j + N_j| >= t] <= 2·exp(−t²/(2v)) with v = (n_max·C/γ)²/D + n_max·σ². A union bound
 * over the D coordinates with t = 2^(bits−1) − 1 − n_max gives
 *   P[some coordinate wraps in a round] <= 2D·exp(−t²/(2v)) <= p_wrap        (default 10^−9),
 * which holds when  γ >= C·√(2 ln(2D/p_wrap)·(n_max²/D + n_max z²/n_min)) / t.  The smallest such
 * γ is used (the finest grid: least rounding error and least norm inflation). A wrap never costs
 * privacy (reduction mod 2^bits is post-processing); it only spoils that round's sum.
 *
 * Bits: given, or the smallest b in 2..32 whose discretization costs at most 1% (ε within 1% of
 * the continuous Gaussian's for the same z; for a target ε, z within 1% of the continuous
 * Gaussian's z), else 32. The masked words are 32-bit either way; fewer bits matter only once
 * words are packed.
 */
import { ErrorCode, fail } from '../errors.js';
import { accountDdg, accountDdgSampled, gaussianEpsilon, gaussianEpsilonSampled, roundedNormBound2 } from './accountant.js';
import type { DpParams } from './encode.js';
import { paddedDim } from './hadamard.js';
import { formatRational, parseRational, rationalToNumber, samplerVariance } from './sampler.js';

/** Default β of conditional randomized rounding: e^(−1/2), as in TensorFlow Federated. */
export const DEFAULT_BETA = Math.exp(-0.5);
/** Default bound on the probability that any coordinate of a round's sum wraps. */
export const DEFAULT_WRAP_PROBABILITY = 1e-9;
/** Accepted discretization cost when bits are chosen automatically (1%). */
export const AUTO_BITS_SLACK = 1.01;

export interface CalibrateInput {
  /** Noise multiplier z: the sum's noise standard deviation over the clip norm. Give this or `epsilon`. */
  noiseMultiplier?: number;
  /** Target ε after all rounds. Give this or `noiseMultiplier`. */
  epsilon?: number;
  /** δ of the (ε, δ) guarantee, in (0, 1). */
  delta: number;
  /** Rounds R every client may take part in (composition over R rounds). */
  rounds: number;
  /** n_min: the fewest clients (honest survivors) whose noise is in every released sum. */
  clients: number;
  /** n_max: the most clients a sum can hold (for the wrap bound); default `clients`. */
  maxClients?: number;
  /** Update length m (padded to D = 2^⌈log₂ m⌉ inside). */
  dim: number;
  /** L2 clip norm C. */
  clip: number;
  /** Modulus bits, 2..32; chosen automatically when absent. */
  bits?: number;
  /** β of conditional rounding, in [0, 1); default e^(−1/2). */
  beta?: number;
  /** Bound on the per-round wrap probability, in (0, 10^−3]; default 10^−9. */
  wrapProbability?: number;
  /**
   * Opt-in: also account as if every client joined each round independently with probability q
   * (honest Poisson sampling by the coordinator). A target ε then applies to that figure; the
   * worst-case `epsilon`, which clients charge, is reported beside it.
   */
  assumeSamplingRate?: number;
}

/** The calibrated parameters, in the JSON form the CLI prints and a manifest can carry. */
export interface Calibration {
  mechanism: 'distributed-discrete-gaussian';
  epsilon: number;
  delta: number;
  /** zCDP ρ over all rounds. */
  rho: number;
  /** The Rényi order that gave ε. */
  rdp_order: number;
  noise_multiplier: number;
  /** ε of the continuous Gaussian mechanism with the same z, R, δ (what discretization costs is the gap). */
  gaussian_epsilon: number;
  bits: number;
  gamma: number;
  /** Per-client noise standard deviation in real units (γ·σ). */
  sigma_per_client: number;
  /** Per-client noise variance σ² in integer units, exact, as "num/den". */
  sigma2_per_client: string;
  beta: number;
  /** Bound B on a client's squared rounded norm (integer units), as a decimal string. */
  norm_bound2: string;
  tau: number;
  rounds: number;
  clients: number;
  max_clients: number;
  dim: number;
  padded_dim: number;
  clip: number;
  /** The bound on P[some coordinate of a round's sum wraps] these parameters achieve. */
  wrap_probability: number;
  /**
   * Present only with `assumeSamplingRate`: the ε if the coordinator sampled each client with
   * probability `rate` in every round (an assumption no client can check; `epsilon` is what
   * holds without it, and what clients charge).
   */
  assuming_sampling?: { rate: number; epsilon: number; gaussian_epsilon: number };
}

interface Setting {
  delta: number;
  rounds: number;
  clients: number;
  maxClients: number;
  dim: number;
  padded: number;
  clip: number;
  beta: number;
  wrapProbability: number;
  samplingRate?: number;
}

function positiveInt(v: number, what: string, max: number): void {
  if (!Number.isInteger(v) || v < 1 || v > max) fail(ErrorCode.InvalidArgument, `${what} must be an integer in 1..${max}`);
}

function settingOf(input: CalibrateInput): Setting {
  const { delta, rounds, clients, dim, clip } = input;
  if (!(Number.isFinite(delta) && delta > 0 && delta < 1)) fail(ErrorCode.InvalidArgument, 'δ must be a number in (0, 1)');
  positiveInt(rounds, 'rounds', 1e9);
  positiveInt(clients, 'clients', 1e7);
  const maxClients = input.maxClients ?? clients;
  positiveInt(maxClients, 'max clients', 1e7);
  if (maxClients < clients) fail(ErrorCode.InvalidArgument, 'max clients must be at least clients (n_min)');
  const padded = paddedDim(dim);
  if (!(Number.isFinite(clip) && clip > 0 && clip <= 1e12)) fail(ErrorCode.InvalidArgument, 'clip must be a number in (0, 1e12]');
  const beta = input.beta ?? DEFAULT_BETA;
  if (!(beta >= 0 && beta < 1)) fail(ErrorCode.InvalidArgument, 'β must be in [0, 1)');
  const wrapProbability = input.wrapProbability ?? DEFAULT_WRAP_PROBABILITY;
  if (!(wrapProbability > 0 && wrapProbability <= 1e-3)) fail(ErrorCode.InvalidArgument, 'wrap probability must be in (0, 1e-3]');
  const samplingRate = input.assumeSamplingRate;
  if (samplingRate !== undefined && !(samplingRate > 0 && samplingRate <= 1)) fail(ErrorCode.InvalidArgument, 'assumed sampling rate must be in (0, 1]');
  return { delta, rounds, clients, maxClients, dim, padded, clip, beta, wrapProbability, ...(samplingRate !== undefined ? { samplingRate } : {}) };
}

/** The wrap bound of the header for concrete parameters: 2D·exp(−t²/(2v)), capped at 1. */
export function wrapProbabilityBound(p: DpParams, maxClients: number): number {
  const padded = paddedDim(p.dim);
  const t = 2 ** (p.bits - 1) - 1 - maxClients;
  if (t <= 0) return 1;
  const c = p.clip / p.gamma;
  const v = (maxClients * c) ** 2 / padded + maxClients * rationalToNumber(p.sigma2);
  return Math.min(1, 2 * padded * Math.exp(-(t * t) / (2 * v)));
}

/** The DP parameters a calibration fixes (what dpEncode / dpDecodeSum take). */
export function dpParamsOf(c: Calibration): DpParams {
  return { dim: c.dim, clip: c.clip, gamma: c.gamma, bits: c.bits, sigma2: parseRational(c.sigma2_per_client), normBound2: BigInt(c.norm_bound2) };
}

/** The calibration for noise multiplier z at `bits`, or a reason it is infeasible. */
function evaluate(s: Setting, z: number, bits: number): Calibration | string {
  const headroom = 2 ** (bits - 1) - 1 - s.maxClients;
  if (headroom <= 0) return `${bits} bits cannot hold the rounding error of ${s.maxClients} clients`;
  const spread = Math.sqrt(2 * Math.log((2 * s.padded) / s.wrapProbability) * ((s.maxClients * s.maxClients) / s.padded + (s.maxClients * z * z) / s.clients));
  // The 1e-5 slack absorbs σ² being rounded up to a rational (relative 2^−18 at most, σ² >= 1/4).
  const gamma = (s.clip * spread) / (headroom * (1 - 1e-5));
  const scaledClip = s.clip / gamma;
  if (scaledClip > 2 ** 50) return 'the scaled clip exceeds 2^50';
  const sigma2 = samplerVariance((z * scaledClip) ** 2 / s.clients);
  const sigma2Num = rationalToNumber(sigma2);
  if (sigma2Num < 0.25) return `${bits} bits leave a per-client σ below 1/2 integer step (KLS21 needs σ >= 1/2)`;
  const normBound2 = roundedNormBound2(scaledClip, s.padded, s.beta);
  const account = accountDdg({ sigma2: sigma2Num, clients: s.clients, dim: s.padded, normBound2 }, s.rounds, s.delta);
  const c: Calibration = {
    mechanism: 'distributed-discrete-gaussian',
    epsilon: account.epsilon,
    delta: s.delta,
    rho: account.rho,
    rdp_order: account.order,
    noise_multiplier: z,
    gaussian_epsilon: gaussianEpsilon(z, s.rounds, s.delta),
    bits,
    gamma,
    sigma_per_client: gamma * Math.sqrt(sigma2Num),
    sigma2_per_client: formatRational(sigma2),
    beta: s.beta,
    norm_bound2: normBound2.toString(),
    tau: account.tau,
    rounds: s.rounds,
    clients: s.clients,
    max_clients: s.maxClients,
    dim: s.dim,
    padded_dim: s.padded,
    clip: s.clip,
    wrap_probability: 0,
  };
  if (s.samplingRate !== undefined) {
    const sampled = accountDdgSampled({ sigma2: sigma2Num, clients: s.clients, dim: s.padded, normBound2 }, s.rounds, s.delta, s.samplingRate);
    c.assuming_sampling = { rate: s.samplingRate, epsilon: sampled.epsilon, gaussian_epsilon: gaussianEpsilonSampled(z, s.rounds, s.delta, s.samplingRate) };
  }
  c.wrap_probability = wrapProbabilityBound(dpParamsOf(c), s.maxClients);
  if (!(c.wrap_probability <= s.wrapProbability)) return 'internal: wrap bound not met'; // guards the γ formula
  return c;
}

const Z_MIN = 1e-3;
const Z_MAX = 1e6;

/** The ε a target is held to: the sampled one when sampling is assumed, else the worst case. */
const targetEpsilon = (c: Calibration): number => c.assuming_sampling?.epsilon ?? c.epsilon;

/** The continuous Gaussian baseline for the same setting (sampled when sampling is assumed). */
const baselineEpsilon = (s: Setting, z: number): number => (s.samplingRate !== undefined ? gaussianEpsilonSampled(z, s.rounds, s.delta, s.samplingRate) : gaussianEpsilon(z, s.rounds, s.delta));

/** The smallest z (to relative 1e-9) with ε(z) <= target at `bits`, or a reason there is none. */
function solveZ(s: Setting, target: number, bits: number): Calibration | string {
  let hi = 0.125;
  let best = evaluate(s, hi, bits);
  while (typeof best === 'string' || targetEpsilon(best) > target) {
    hi *= 2;
    if (hi > Z_MAX) return typeof best === 'string' ? best : `ε = ${target} is out of reach at ${bits} bits (the rounding error alone costs more)`;
    best = evaluate(s, hi, bits);
  }
  let lo = Math.max(Z_MIN, hi / 2);
  if (lo === hi) return best;
  for (let i = 0; i < 100 && hi - lo > 1e-9 * hi; i++) {
    const mid = (lo + hi) / 2;
    const r = evaluate(s, mid, bits);
    if (typeof r !== 'string' && targetEpsilon(r) <= target) [hi, best] = [mid, r];
    else lo = mid;
  }
  return best;
}

/** The smallest z with the continuous Gaussian's ε(z) <= target. */
function gaussianZ(s: Setting, target: number): number {
  let lo = Z_MIN;
  let hi = 1;
  while (baselineEpsilon(s, hi) > target) hi *= 2;
  for (let i = 0; i < 100 && hi - lo > 1e-9 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (baselineEpsilon(s, mid) <= target) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** Calibrates the mechanism (see the header). Throws invalid-argument with the reason when infeasible. */
export function calibrate(input: CalibrateInput): Calibration {
  const s = settingOf(input);
  const byZ = input.noiseMultiplier !== undefined;
  if (byZ === (input.epsilon !== undefined)) fail(ErrorCode.InvalidArgument, 'give exactly one of a noise multiplier and a target ε');
  if (byZ && !(Number.isFinite(input.noiseMultiplier) && input.noiseMultiplier! >= Z_MIN && input.noiseMultiplier! <= Z_MAX)) {
    fail(ErrorCode.InvalidArgument, `noise multiplier must be a number in ${Z_MIN}..${Z_MAX}`);
  }
  if (!byZ && !(Number.isFinite(input.epsilon) && input.epsilon! > 0 && input.epsilon! <= 1e4)) fail(ErrorCode.InvalidArgument, 'target ε must be a number in (0, 1e4]');
  const run = (bits: number): Calibration | string => (byZ ? evaluate(s, input.noiseMultiplier!, bits) : solveZ(s, input.epsilon!, bits));
  if (input.bits !== undefined) {
    if (!Number.isInteger(input.bits) || input.bits < 2 || input.bits > 32) fail(ErrorCode.InvalidArgument, 'bits must be an integer in 2..32');
    const r = run(input.bits);
    if (typeof r === 'string') fail(ErrorCode.InvalidArgument, `infeasible at ${input.bits} bits: ${r}`, 'try more bits (up to 32), fewer clients, or a larger ε');
    return r;
  }
  // Automatic bits: the smallest whose discretization costs at most 1% (see the header).
  const reference = byZ ? baselineEpsilon(s, input.noiseMultiplier!) : gaussianZ(s, input.epsilon!);
  let last: Calibration | string = 'no bit width was tried';
  for (let bits = 2; bits <= 32; bits++) {
    last = run(bits);
    if (typeof last === 'string') continue;
    if ((byZ ? targetEpsilon(last) : last.noise_multiplier) <= AUTO_BITS_SLACK * reference) return last;
  }
  if (typeof last === 'string') fail(ErrorCode.InvalidArgument, `infeasible even with 32 bits (more than 32 needed): ${last}`, 'fewer clients per round, a larger ε, or a larger δ');
  return last;
}
