/**
 * Small statistics helpers for the DP tests: chi-square goodness of fit with bins merged until
 * each expects at least 5 draws, its critical value, and binomial z-scores. The tests use fixed
 * seeds, so each verdict is reproducible; the thresholds are upper quantiles at 10^−4 (a correct
 * sampler fails one seed in ten thousand), not hand-tuned tolerances.
 */

/** Upper-tail standard normal quantile for p = 10^−4. */
export const Z_1E4 = 3.719;

/**
 * The chi-square critical value with k degrees of freedom at upper-tail probability 10^−4, by
 * the Wilson–Hilferty approximation (accurate to a percent or so for k >= 3).
 */
export function chiSquareCritical(k: number, z = Z_1E4): number {
  const a = 2 / (9 * k);
  return k * (1 - a + z * Math.sqrt(a)) ** 3;
}

export interface ChiSquare {
  statistic: number;
  dof: number;
  critical: number;
  bins: number;
}

/**
 * Pearson's chi-square of `counts` (integer value → count) against `pmf` over integers lo..hi
 * (everything outside is lumped into the end bins), bins merged left to right until each
 * expects >= 5.
 */
export function chiSquare(counts: Map<number, number>, pmf: (x: number) => number, lo: number, hi: number, draws: number): ChiSquare {
  let below = 0;
  let above = 0;
  for (const [x, c] of counts) {
    if (x < lo) below += c;
    if (x > hi) above += c;
  }
  let pBelow = 1;
  for (let x = lo; x <= hi; x++) pBelow -= pmf(x);
  // Cells: (expected, observed); the tails outside [lo, hi] join the first and last cells.
  const cells: [number, number][] = [];
  let e = 0;
  let o = 0;
  for (let x = lo; x <= hi; x++) {
    e += pmf(x) * draws;
    o += counts.get(x) ?? 0;
    if (e >= 5) {
      cells.push([e, o]);
      e = 0;
      o = 0;
    }
  }
  if (cells.length === 0) throw new Error('too few draws for a chi-square test');
  const last = cells[cells.length - 1]!;
  last[0] += e;
  last[1] += o;
  // Whatever lies outside [lo, hi] (both tails; its probability is pBelow) joins the end cells.
  cells[0]![0] += (Math.max(0, pBelow) / 2) * draws;
  cells[0]![1] += below;
  last[0] += (Math.max(0, pBelow) / 2) * draws;
  last[1] += above;
  let statistic = 0;
  for (const [ex, ob] of cells) statistic += (ob - ex) ** 2 / ex;
  const dof = cells.length - 1;
  return { statistic, dof, critical: chiSquareCritical(dof), bins: cells.length };
}

/** |observed − n·p| / √(n·p·(1 − p)): a binomial count's z-score. */
export function binomialZ(observed: number, n: number, p: number): number {
  const sd = Math.sqrt(n * p * (1 - p));
  return sd === 0 ? (observed === n * p ? 0 : Infinity) : Math.abs(observed - n * p) / sd;
}

/** The exact PMF of N_Z(0, σ²) over |x| <= K (K = 40σ + 10: the rest is below 1e-300). */
export function discreteGaussianPmf(sigma2: number): { pmf: (x: number) => number; variance: number; tail: (k: number) => number } {
  const K = Math.ceil(40 * Math.sqrt(sigma2)) + 10;
  let z = 0;
  let m2 = 0;
  for (let x = -K; x <= K; x++) {
    const w = Math.exp((-x * x) / (2 * sigma2));
    z += w;
    m2 += x * x * w;
  }
  const pmf = (x: number): number => Math.exp((-x * x) / (2 * sigma2)) / z;
  /** P[|X| >= k] for k >= 1. */
  const tail = (k: number): number => {
    let s = 0;
    for (let x = k; x <= K; x++) s += 2 * pmf(x);
    return s;
  };
  return { pmf, variance: m2 / z, tail };
}
