/**
 * The client's privacy budget: what the differentially private rounds it contributed to cost
 * it, and the rule that refuses a round whose cost would take it past its limit
 * (`aegis client run --privacy-budget 'epsilon=8,delta=1e-5'`). Pure: the charges are kept in
 * the contribution ledger (ledger.ts, sealed in the data dir by ledger-file.ts), so they survive
 * restarts, a restore merges them like the rest of the ledger, and an altered file is refused.
 *
 * Accounting. Each DP round's cost is its Rényi DP (RDP) curve, recorded on a fixed grid of
 * orders `RDP_ORDERS` (shared/dp/accountant.ts: KLS21 for the distributed discrete Gaussian).
 * Composition is the sum per order; ε at a δ is the best conversion over the grid
 * (`epsilonFromRdpOrders`). A grid, not the exact curve: ε over the grid is never below the
 * best over all real orders, so the budget errs towards refusing.
 *
 * Scope. The limit applies to the client's TOTAL over every publisher and job: each round
 * releases a noisy function of the same local data, whoever asked for it, so the spending
 * composes across jobs and publishers. The breakdowns per publisher and per job are shown
 * (`aegis client privacy status`) but not limited separately.
 *
 * Rules (`checkRoundPrivacy`):
 *   - a DP round is refused (`privacy-budget`) when ε(total + its cost) at the limit's δ is
 *     above the limit's ε; exactly at the limit is allowed;
 *   - with a limit, a round that is NOT differentially private is refused too: its cost is
 *     unbounded (a plain round's sum or a training update without noise);
 *   - without a limit nothing is refused, but every DP round contributed to is still charged,
 *     so the status is truthful once a limit is set;
 *   - a round is charged once (by manifest hash and round index): a charge is recorded when
 *     the masked input is recorded as sent (before it leaves), in the same sealed write.
 */
import { epsilonFromRdpOrders } from '../../shared/dp/accountant.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { roundName } from '../../shared/round-number.js';

/** The Rényi orders the costs are kept on (fixed: changing it would orphan recorded charges). */
export const RDP_ORDERS: readonly number[] = [1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 128, 256, 512, 1024, 4096];

/** How many charges the ledger keeps; past it, new DP rounds are refused (never forgotten). */
export const MAX_CHARGES = 8192;

/** The publisher name used for rounds whose manifest the client took without a signature. */
export const UNSIGNED_PUBLISHER = '(unsigned)';

/** A privacy limit: ε at δ. */
export interface PrivacyLimit {
  epsilon: number;
  delta: number;
}

/** One DP round the client contributed to, and what it cost. */
export interface PrivacyCharge {
  /** The manifest's signer (its registry key id), or UNSIGNED_PUBLISHER. */
  publisher: string;
  manifestSha256: string;
  jobId?: string;
  roundIndex: number;
  /** When the masked input was recorded as sent. */
  at: string;
  /** The round's RDP at each order of RDP_ORDERS. */
  rdp: number[];
}

/** A round's privacy, as admission establishes it from the manifest. */
export type RoundPrivacy =
  /** Not differentially private: unbounded cost. */
  | { dp: false }
  /** Differentially private: its RDP on RDP_ORDERS. */
  | { dp: true; rdp: number[] };

/** A round being admitted, as the budget's rules see it. */
export interface PrivacyClaim {
  publisher: string;
  manifestSha256: string;
  jobId?: string;
  roundIndex: number;
  privacy: RoundPrivacy;
}

/** An RDP curve on the grid. */
export function rdpOnGrid(rdp: (alpha: number) => number): number[] {
  return RDP_ORDERS.map((a) => {
    const v = rdp(a);
    if (!(v >= 0)) throw new AegisError(ErrorCode.InvalidArgument, `a round's RDP at order ${a} is ${v}, not a non-negative number`);
    return v;
  });
}

/** The composed RDP of `charges` (plus `extra`), per order. */
export function totalRdp(charges: readonly { rdp: readonly number[] }[], extra?: readonly number[]): number[] {
  const sum = RDP_ORDERS.map(() => 0);
  for (const c of extra ? [...charges, { rdp: extra }] : charges) c.rdp.forEach((v, i) => (sum[i]! += v));
  return sum;
}

/** ε at δ of composed RDP values on the grid (0 for nothing spent). */
export function epsilonOf(rdp: readonly number[], delta: number): { epsilon: number; order: number } {
  if (rdp.every((v) => v === 0)) return { epsilon: 0, order: NaN };
  return epsilonFromRdpOrders(RDP_ORDERS, rdp, delta);
}

const chargeKey = (c: { manifestSha256: string; roundIndex: number }): string => `${c.manifestSha256}:${c.roundIndex}`;
const fmt = (e: number): string => (Number.isFinite(e) ? e.toPrecision(4) : String(e));

/** Throws `privacy-budget` when `limit` refuses the round `claim`; nothing without a limit. */
export function checkRoundPrivacy(charges: readonly PrivacyCharge[], limit: PrivacyLimit | undefined, claim: PrivacyClaim): void {
  if (!limit) return;
  const round = `${roundName(claim.roundIndex)} of ${claim.jobId ? `job '${claim.jobId}'` : `manifest ${claim.manifestSha256.slice(0, 12)}…`}`;
  if (!claim.privacy.dp) {
    throw new AegisError(ErrorCode.PrivacyBudget, `${round} is not differentially private (its manifest has no dp section): a client with a privacy budget joins only DP rounds`);
  }
  // A round charged before (a reconnect) costs nothing more.
  if (charges.some((c) => chargeKey(c) === chargeKey(claim))) return;
  if (charges.length >= MAX_CHARGES) throw new AegisError(ErrorCode.PrivacyBudget, `the ledger holds ${MAX_CHARGES} privacy charges, as many as it keeps; this client joins no more DP rounds`);
  const now = epsilonOf(totalRdp(charges), limit.delta).epsilon;
  const after = epsilonOf(totalRdp(charges, claim.privacy.rdp), limit.delta).epsilon;
  if (after > limit.epsilon) {
    throw new AegisError(
      ErrorCode.PrivacyBudget,
      `${round} would take this client's privacy spending from epsilon ${fmt(now)} to ${fmt(after)} at delta ${limit.delta}, past its budget of epsilon ${limit.epsilon}`,
    );
  }
}

/** `charges` with `c` added (a round already charged is not charged twice). */
export function addCharge(charges: readonly PrivacyCharge[], c: PrivacyCharge): PrivacyCharge[] {
  if (charges.some((x) => chargeKey(x) === chargeKey(c))) return [...charges];
  return [...charges, c];
}

/** The union of two charge lists (restores, concurrent writers): each round once, its earliest record. */
export function mergeCharges(a: readonly PrivacyCharge[], b: readonly PrivacyCharge[]): PrivacyCharge[] {
  const out = new Map<string, PrivacyCharge>();
  for (const c of [...a, ...b]) {
    const seen = out.get(chargeKey(c));
    if (!seen || c.at < seen.at) out.set(chargeKey(c), c);
  }
  return [...out.values()].sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : x.roundIndex - y.roundIndex));
}

/** Spending over a set of charges. */
export interface Spending {
  rounds: number;
  epsilon: number;
  /** The Rényi order the ε comes from (NaN when nothing was spent). */
  order: number;
  firstAt?: string;
  lastAt?: string;
}

/** What `aegis client privacy status` shows. */
export interface PrivacyView {
  delta: number;
  limit?: PrivacyLimit;
  /** At the limit's δ when there is a limit, else at `delta`. */
  total: Spending;
  /** ε left under the limit (0 when spent). */
  remaining?: number;
  publishers: (Spending & { publisher: string })[];
  jobs: (Spending & { publisher: string; manifestSha256: string; jobId?: string; roundIndexes: number[] })[];
}

function spending(charges: readonly PrivacyCharge[], delta: number): Spending {
  const { epsilon, order } = epsilonOf(totalRdp(charges), delta);
  const times = charges.map((c) => c.at).sort();
  return { rounds: charges.length, epsilon, order, ...(times.length ? { firstAt: times[0]!, lastAt: times[times.length - 1]! } : {}) };
}

function groupBy<T>(xs: readonly T[], key: (x: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const x of xs) m.set(key(x), [...(m.get(key(x)) ?? []), x]);
  return m;
}

/** The spending in total, per publisher and per job, at `delta` (the limit's δ when a limit is given). */
export function privacyView(charges: readonly PrivacyCharge[], delta: number, limit?: PrivacyLimit): PrivacyView {
  const d = limit?.delta ?? delta;
  const total = spending(charges, d);
  return {
    delta: d,
    ...(limit ? { limit, remaining: Math.max(0, limit.epsilon - total.epsilon) } : {}),
    total,
    publishers: [...groupBy(charges, (c) => c.publisher)].map(([publisher, cs]) => ({ publisher, ...spending(cs, d) })),
    jobs: [...groupBy(charges, (c) => `${c.publisher}\n${c.manifestSha256}`)].map(([, cs]) => ({
      publisher: cs[0]!.publisher,
      manifestSha256: cs[0]!.manifestSha256,
      ...(cs[0]!.jobId !== undefined ? { jobId: cs[0]!.jobId } : {}),
      roundIndexes: cs.map((c) => c.roundIndex).sort((x, y) => x - y),
      ...spending(cs, d),
    })),
  };
}

/**
 * Parses `epsilon=E,delta=D` (either order, both required, nothing else): ε a finite number
 * > 0, δ in (0, 1). Throws `invalid-argument` naming what is wrong (the CLI names the flag).
 */
export function parsePrivacyBudget(text: string): PrivacyLimit {
  const bad = (why: string): AegisError => new AegisError(ErrorCode.InvalidArgument, `${why} (expected 'epsilon=E,delta=D', e.g. 'epsilon=8,delta=1e-5')`);
  const seen = new Map<string, number>();
  for (const part of text.split(',')) {
    const m = /^\s*(epsilon|delta)\s*=\s*([0-9.eE+-]+)\s*$/.exec(part);
    if (!m) throw bad(`'${part.slice(0, 40)}' is not epsilon=NUMBER or delta=NUMBER`);
    if (seen.has(m[1]!)) throw bad(`${m[1]} is given twice`);
    const v = Number(m[2]);
    if (!Number.isFinite(v) || m[2]!.trim() === '') throw bad(`${m[1]}=${m[2]} is not a number`);
    seen.set(m[1]!, v);
  }
  const epsilon = seen.get('epsilon');
  const delta = seen.get('delta');
  if (epsilon === undefined) throw bad('epsilon is missing');
  if (delta === undefined) throw bad('delta is missing');
  if (!(epsilon > 0)) throw bad(`epsilon must be above 0, not ${epsilon}`);
  if (!(delta > 0 && delta < 1)) throw bad(`delta must be in (0, 1), not ${delta}`);
  return { epsilon, delta };
}
