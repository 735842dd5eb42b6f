/**
 * Privacy accounting for the distributed discrete Gaussian mechanism (DDG): Rényi DP per round,
 * composed over rounds, converted to (ε, δ).
 *
 * Per round (Kairouz, Liu and Steinke, "The Distributed Discrete Gaussian Mechanism for
 * Federated Learning with Secure Aggregation", ICML 2021, Theorem 1 and Proposition 14 of the
 * arXiv version 2102.06387): n clients each add N_Z(0, σ²)^D (σ >= 1/2, integer units) to an
 * integer vector; two neighbouring inputs differ by a vector with ||·||₂ <= Δ₂ and ||·||₁ <= Δ₁.
 * With
 *   τ  = 10 · Σ_{k=1}^{n−1} exp(−2π²σ² · k/(k+1))          (the sum of n discrete Gaussians is
 *                                                            not one; τ bounds the difference)
 *   l₂ = Δ₂ / (√n σ),  l₁ = Δ₁ / (√n σ)
 * the Rényi divergence of order α > 1 is at most
 *   ε(α) = min{ α·l₂²/2 + τD,  (α/2)(l₂² + 2·l₁·τ + τ²D),  (α/2)(l₂ + τ√D)² }
 * and the round is ρ-zCDP with ρ = min{ l₂²/2 + τD, (l₂² + 2l₁τ + τ²D)/2, (l₂ + τ√D)²/2 }
 * (the first term because τD <= α·τD for α >= 1). With τ = 0 this is the continuous Gaussian's
 * α·Δ₂²/(2nσ²): the discrete mechanism never does better than that, and `gaussianRdp` is the
 * baseline the tests hold it to.
 *
 * Δ₂ is the bound the client enforces on its rounded vector (conditional randomized rounding,
 * encode.ts): Δ₂² = B, an integer, with B <= min{ (c + √D)², c² + D/4 + √(2 ln(1/β))·(c + √D/2) }
 * for the scaled clip c = C/γ (KLS21 Theorem 1, eq. 2). Δ₁ = Δ₂ · min(√D, Δ₂): Cauchy–Schwarz,
 * and ||v||₁ <= ||v||₂² for integer vectors.
 *
 * Composition: RDP adds over rounds (Mironov 2017, Prop. 1). Conversion to (ε, δ): for every
 * order α > 1 (Canonne, Kamath and Steinke 2020, Prop. 12; Balle et al. 2020, Thm. 21; the
 * conversion TF Privacy and dp_accounting use)
 *   ε = R·ε(α) + log(1/δ)/(α − 1) + log(1 − 1/α) − log(α)/(α − 1),
 * minimised over α numerically (any α gives a valid bound, so the search only affects tightness).
 *
 * Neighbouring relation: one client's update replaced by zero (its noise still added), i.e.
 * user-level "zero-out" adjacency, sensitivity Δ₂. No amplification by subsampling is assumed:
 * the coordinator chooses each cohort, and a malicious one need not sample at random.
 *
 * Opt-in, and only for reporting: `accountDdgSampled` gives the ε *if* every client joined each
 * round independently with probability q (Poisson sampling) — an assumption about an honest
 * coordinator that no client can check, so clients never charge their budgets by it. It uses the
 * general upper bound for Poisson-subsampled mechanisms of Zhu and Wang ("Poisson Subsampled
 * Rényi Differential Privacy", ICML 2019, Theorem 6), which needs nothing of the mechanism but
 * its RDP curve ε(·), at integer orders α >= 2:
 *   (α−1)·ε'(α) <= log[ (1−q)^(α−1)(1 + (α−1)q) + C(α,2) q² (1−q)^(α−2) e^{ε(2)}
 *                       + 3 Σ_{j=3}^{α} C(α,j) q^j (1−q)^(α−j) e^{(j−1)ε(j)} ]
 * and ε'(α) <= ε(α) besides (Rényi divergence is jointly quasi-convex). Without the factor 3 this
 * is exactly the sampled Gaussian mechanism's RDP (Mironov, Talwar and Zhang 2019) when ε(·) is
 * the Gaussian's; with it the bound can only be larger, so it is kept whatever reading of the
 * theorem one takes.
 */
import { ErrorCode, fail } from '../errors.js';

/** One round of the distributed discrete Gaussian, in integer units (after scaling by 1/γ). */
export interface DdgRound {
  /** Per-client noise variance σ² (integer units), >= 1/4. */
  sigma2: number;
  /** The fewest clients whose noise is in a released sum (n_min). */
  clients: number;
  /** Dimension D the noise is added in (the padded dimension). */
  dim: number;
  /** Integer bound B on the squared L2 norm of one client's rounded vector: Δ₂ = √B. */
  normBound2: bigint;
}

/** τ of KLS21 Theorem 1 for n clients each adding N_Z(0, σ²). */
export function ddgTau(clients: number, sigma2: number): number {
  if (!Number.isInteger(clients) || clients < 1) fail(ErrorCode.InvalidArgument, 'clients must be a positive integer');
  const c = 2 * Math.PI * Math.PI * sigma2;
  // Every term is at most exp(−c/2); once that is below 1e-320 the whole sum is 0 in doubles.
  if (c / 2 > 740) return 0;
  let sum = 0;
  for (let k = 1; k < clients; k++) sum += Math.exp((-c * k) / (k + 1));
  return 10 * sum;
}

/** Δ₂² as a double, rounded up by a few ulps so that it is never below the integer B. */
function delta2Squared(b: bigint): number {
  return Number(b) * (1 + 2 ** -50);
}

interface Scales {
  l2: number;
  l1: number;
  tau: number;
  dim: number;
}

function scales(r: DdgRound): Scales {
  if (!(Number.isFinite(r.sigma2) && r.sigma2 >= 0.25)) fail(ErrorCode.InvalidArgument, 'per-client σ² must be at least 1/4 (σ >= 1/2 in integer units)');
  if (!Number.isInteger(r.dim) || r.dim < 1) fail(ErrorCode.InvalidArgument, 'dimension must be a positive integer');
  if (typeof r.normBound2 !== 'bigint' || r.normBound2 < 0n) fail(ErrorCode.InvalidArgument, 'norm bound must be a non-negative integer');
  const total = Math.sqrt(r.clients * r.sigma2);
  const d2 = Math.sqrt(delta2Squared(r.normBound2));
  const d1 = d2 * Math.min(Math.sqrt(r.dim), d2);
  return { l2: d2 / total, l1: d1 / total, tau: ddgTau(r.clients, r.sigma2), dim: r.dim };
}

function rdpOf(s: Scales, alpha: number): number {
  const { l2, l1, tau, dim } = s;
  const t1 = (alpha * l2 * l2) / 2 + tau * dim;
  const t2 = (alpha / 2) * (l2 * l2 + 2 * l1 * tau + tau * tau * dim);
  const t3 = (alpha / 2) * (l2 + tau * Math.sqrt(dim)) ** 2;
  return Math.min(t1, t2, t3);
}

/** Rényi DP of one DDG round at order α > 1 (KLS21 Prop. 14). */
export function ddgRdp(r: DdgRound, alpha: number): number {
  if (!(alpha > 1)) fail(ErrorCode.InvalidArgument, 'Rényi order must be > 1');
  return rdpOf(scales(r), alpha);
}

/** zCDP ρ of one DDG round (KLS21 Theorem 1). */
export function ddgRho(r: DdgRound): number {
  const { l2, l1, tau, dim } = scales(r);
  return Math.min((l2 * l2) / 2 + tau * dim, (l2 * l2 + 2 * l1 * tau + tau * tau * dim) / 2, (l2 + tau * Math.sqrt(dim)) ** 2 / 2);
}

/** Rényi DP of the continuous Gaussian mechanism with noise multiplier z = σ/Δ at order α: α/(2z²). */
export const gaussianRdp = (z: number, alpha: number): number => alpha / (2 * z * z);

/** ε at one order α for a composed RDP value `rdp` (the conversion in the header). */
export function epsilonAtOrder(rdp: number, alpha: number, delta: number): number {
  return rdp + Math.log(1 / delta) / (alpha - 1) + Math.log1p(-1 / alpha) - Math.log(alpha) / (alpha - 1);
}

function checkDelta(delta: number): void {
  if (!(Number.isFinite(delta) && delta > 0 && delta < 1)) fail(ErrorCode.InvalidArgument, 'δ must be a number in (0, 1)');
}

/** The best ε over the given orders (what TF Privacy's compute_epsilon does), and the order. */
export function epsilonFromRdpOrders(orders: readonly number[], rdps: readonly number[], delta: number): { epsilon: number; order: number } {
  checkDelta(delta);
  let best = { epsilon: Infinity, order: NaN };
  orders.forEach((a, i) => {
    if (!(a > 1)) fail(ErrorCode.InvalidArgument, 'Rényi orders must be > 1');
    const e = epsilonAtOrder(rdps[i]!, a, delta);
    if (e < best.epsilon) best = { epsilon: e, order: a };
  });
  return { epsilon: Math.max(0, best.epsilon), order: best.order };
}

/**
 * The best ε over all real orders α in (1, 10^7] for a composed RDP curve: a log-spaced grid
 * (α − 1 from 10^−5 to 10^7), then golden-section search around the best grid point.
 */
export function epsilonFromRdp(rdp: (alpha: number) => number, delta: number): { epsilon: number; order: number } {
  checkDelta(delta);
  const f = (a: number): number => epsilonAtOrder(rdp(a), a, delta);
  const STEP = 0.02;
  let bestU = -5;
  let bestE = Infinity;
  for (let u = -5; u <= 7 + 1e-9; u += STEP) {
    const e = f(1 + 10 ** u);
    if (e < bestE) [bestE, bestU] = [e, u];
  }
  // Golden-section search on u in [bestU − STEP, bestU + STEP] (ε is unimodal there in practice;
  // the grid value is kept if the search does not improve on it).
  let lo = bestU - STEP;
  let hi = bestU + STEP;
  const g = (Math.sqrt(5) - 1) / 2;
  let x1 = hi - g * (hi - lo);
  let x2 = lo + g * (hi - lo);
  let f1 = f(1 + 10 ** x1);
  let f2 = f(1 + 10 ** x2);
  for (let i = 0; i < 60; i++) {
    if (f1 < f2) {
      hi = x2;
      x2 = x1;
      f2 = f1;
      x1 = hi - g * (hi - lo);
      f1 = f(1 + 10 ** x1);
    } else {
      lo = x1;
      x1 = x2;
      f1 = f2;
      x2 = lo + g * (hi - lo);
      f2 = f(1 + 10 ** x2);
    }
  }
  const [u, e] = f1 < f2 ? [x1, f1] : [x2, f2];
  const [order, epsilon] = e < bestE ? [1 + 10 ** u, e] : [1 + 10 ** bestU, bestE];
  return { epsilon: Math.max(0, epsilon), order };
}

/** ε for ρ-zCDP (RDP αρ at every order), by the same conversion. */
export const epsilonFromZcdp = (rho: number, delta: number): number => epsilonFromRdp((a) => a * rho, delta).epsilon;

export interface DdgAccount {
  /** ε after `rounds` rounds at the given δ. */
  epsilon: number;
  delta: number;
  /** The Rényi order that gave ε. */
  order: number;
  /** zCDP ρ over all rounds (ρ adds up). */
  rho: number;
  /** τ of one round. */
  tau: number;
  /** Δ₂ / (√n σ): sensitivity over total noise, the inverse of the effective noise multiplier. */
  l2Scale: number;
}

/** The privacy of `rounds` rounds of the DDG mechanism `r`, at δ. */
export function accountDdg(r: DdgRound, rounds: number, delta: number): DdgAccount {
  if (!Number.isInteger(rounds) || rounds < 1) fail(ErrorCode.InvalidArgument, 'rounds must be a positive integer');
  const s = scales(r);
  const { epsilon, order } = epsilonFromRdp((a) => rounds * rdpOf(s, a), delta);
  return { epsilon, delta, order, rho: rounds * ddgRho(r), tau: s.tau, l2Scale: s.l2 };
}

/** ε of `rounds` rounds of the continuous Gaussian mechanism with noise multiplier z (the baseline). */
export function gaussianEpsilon(z: number, rounds: number, delta: number): number {
  if (!(Number.isFinite(z) && z > 0)) fail(ErrorCode.InvalidArgument, 'noise multiplier must be positive');
  return epsilonFromRdp((a) => rounds * gaussianRdp(z, a), delta).epsilon;
}

/**
 * The integer bound B on ||rounded vector||² for conditional randomized rounding of a vector
 * with ||x||₂ <= c (integer units) in D dimensions (KLS21 Theorem 1, eq. 2): without
 * conditioning, ||round(x)||₂ <= c + √D always; with β in (0, 1), ||round(x)||₂² exceeds
 * c² + D/4 + √(2 ln(1/β))·(c + √D/2) with probability at most β, so the client redraws the
 * rounding until the norm fits (expected at most 1/(1 − β) draws).
 */
export function roundedNormBound2(scaledClip: number, dim: number, beta: number): bigint {
  if (!(Number.isFinite(scaledClip) && scaledClip > 0)) fail(ErrorCode.InvalidArgument, 'scaled clip must be positive');
  if (!(beta >= 0 && beta < 1)) fail(ErrorCode.InvalidArgument, 'β must be in [0, 1)');
  const sq = Math.sqrt(dim);
  let bound = (scaledClip + sq) ** 2;
  if (beta > 0) bound = Math.min(bound, scaledClip * scaledClip + dim / 4 + Math.sqrt(2 * Math.log(1 / beta)) * (scaledClip + sq / 2));
  if (!(bound < 2 ** 100)) fail(ErrorCode.InvalidArgument, 'norm bound out of range: the scaled clip is too large');
  return BigInt(Math.floor(bound));
}

/**
 * The integer Rényi orders the subsampled accountant evaluates: every order 2..64, then a sparser
 * run to 256 (TF Privacy's default orders are 1.1..10.9, 11..63, 128, 256, 512). Any set of
 * orders gives a valid ε; this one keeps a calibration's search fast.
 */
export const SAMPLED_ORDERS: readonly number[] = [...Array.from({ length: 63 }, (_, i) => i + 2), 72, 80, 96, 112, 128, 160, 192, 256];

function logSumExp(xs: readonly number[]): number {
  const m = Math.max(...xs);
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (const x of xs) s += Math.exp(x - m);
  return m + Math.log(s);
}

/**
 * RDP at integer order α >= 2 of a mechanism with RDP curve `rdp` run on a Poisson sample with
 * rate q in (0, 1] (Zhu and Wang 2019, Theorem 6, with the factor 3; see the header).
 */
export function poissonSampledRdp(rdp: (alpha: number) => number, q: number, alpha: number): number {
  if (!Number.isInteger(alpha) || alpha < 2) fail(ErrorCode.InvalidArgument, 'the sampled accountant needs an integer Rényi order >= 2');
  if (!(q > 0 && q <= 1)) fail(ErrorCode.InvalidArgument, 'sampling rate must be in (0, 1]');
  const base = new Float64Array(alpha + 1);
  for (let j = 2; j <= alpha; j++) base[j] = rdp(j);
  return sampledAt(base, q, alpha);
}

/** As `poissonSampledRdp`, with the base curve given at orders 2..α as base[2..α]. */
function sampledAt(base: Float64Array, q: number, alpha: number): number {
  const unsampled = base[alpha]!;
  if (q === 1) return unsampled;
  const lq = Math.log(q);
  const l1q = Math.log1p(-q);
  const terms = [(alpha - 1) * l1q + Math.log1p((alpha - 1) * q)];
  let logBinom = Math.log(alpha); // log C(α, 1)
  for (let j = 2; j <= alpha; j++) {
    logBinom += Math.log(alpha - j + 1) - Math.log(j);
    terms.push((j >= 3 ? Math.log(3) : 0) + logBinom + j * lq + (alpha - j) * l1q + (j - 1) * base[j]!);
  }
  return Math.min(unsampled, logSumExp(terms) / (alpha - 1));
}

/** R rounds of a sampled mechanism at every order of SAMPLED_ORDERS, converted to ε at δ. */
function sampledEpsilon(rdp: (alpha: number) => number, rounds: number, delta: number, q: number): { epsilon: number; order: number } {
  if (!(q > 0 && q <= 1)) fail(ErrorCode.InvalidArgument, 'sampling rate must be in (0, 1]');
  const top = SAMPLED_ORDERS[SAMPLED_ORDERS.length - 1]!;
  const base = new Float64Array(top + 1);
  for (let j = 2; j <= top; j++) base[j] = rdp(j);
  const rdps = SAMPLED_ORDERS.map((a) => rounds * sampledAt(base, q, a));
  return epsilonFromRdpOrders(SAMPLED_ORDERS, rdps, delta);
}

export interface SampledAccount {
  /** ε after `rounds` rounds if every client joined each round independently with probability `rate`. */
  epsilon: number;
  delta: number;
  /** The assumed Poisson sampling rate q. */
  rate: number;
  /** The integer Rényi order that gave ε. */
  order: number;
}

/** ε of `rounds` rounds of the DDG mechanism `r` on Poisson samples of rate q (opt-in; see the header). */
export function accountDdgSampled(r: DdgRound, rounds: number, delta: number, rate: number): SampledAccount {
  if (!Number.isInteger(rounds) || rounds < 1) fail(ErrorCode.InvalidArgument, 'rounds must be a positive integer');
  const s = scales(r);
  const sampled = sampledEpsilon((a) => rdpOf(s, a), rounds, delta, rate);
  // Both are bounds on the same mechanism: the worst-case one (all real orders) can be the smaller at q near 1.
  const worst = accountDdg(r, rounds, delta);
  return worst.epsilon < sampled.epsilon ? { epsilon: worst.epsilon, delta, rate, order: worst.order } : { ...sampled, delta, rate };
}

/** ε of `rounds` rounds of the continuous Gaussian mechanism with noise multiplier z on Poisson samples of rate q (the sampled baseline). */
export function gaussianEpsilonSampled(z: number, rounds: number, delta: number, rate: number): number {
  if (!(Number.isFinite(z) && z > 0)) fail(ErrorCode.InvalidArgument, 'noise multiplier must be positive');
  return Math.min(gaussianEpsilon(z, rounds, delta), sampledEpsilon((a) => gaussianRdp(z, a), rounds, delta, rate).epsilon);
}
