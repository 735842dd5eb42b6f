/**
 * Declines: a client that sits a round out says so in phase 0 with a reason code and nothing
 * else. The phase takes the decline as that client's answer (it waits for it no longer); the
 * round keeps who declined only in its phase-0 state, and from phase 0's end on only the counts
 * by reason (`CoordinatorStats.declines`), which outlive every client id the coordinator keeps.
 *
 * Pure: no I/O.
 */
import { ErrorCode } from '../../shared/errors.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import type { CoordinatorStats, DeclineCounts, PhaseBase } from './types.js';

export type { DeclineCounts } from './types.js';

const CODES = new Set<string>(Object.values(ErrorCode));

/** True when `x` is a reason code a decline may carry (any `ErrorCode`). */
export const isDeclineReason = (x: unknown): x is ErrorCode => typeof x === 'string' && CODES.has(x);

/** The counts of a list of reasons, keys in code order (so equal counts serialize equally). */
export function countDeclines(reasons: Iterable<ErrorCode>): DeclineCounts {
  const by = new Map<ErrorCode, number>();
  for (const r of reasons) by.set(r, (by.get(r) ?? 0) + 1);
  return Object.fromEntries([...by.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) as DeclineCounts;
}

/** The sum of several rounds' (or groups') counts; anything that is not a count is left out. */
export function addDeclines(...all: readonly (DeclineCounts | undefined)[]): DeclineCounts {
  const out: ErrorCode[] = [];
  for (const c of all) {
    for (const [reason, n] of Object.entries(c ?? {})) {
      if (!isDeclineReason(reason) || typeof n !== 'number' || !Number.isInteger(n) || n <= 0) continue;
      for (let i = 0; i < n; i++) out.push(reason);
    }
  }
  return countDeclines(out);
}

/** How many clients declined in all. */
export const totalDeclines = (c: DeclineCounts | undefined): number => Object.values(c ?? {}).reduce((a, n) => a + (n ?? 0), 0);

/**
 * A state's declines: in phase 0 counted from who declined so far, later the counts fixed when
 * phase 0 ended (none for a round that never left phase 0 and was not closed there).
 */
export function declinesOf(s: PhaseBase & { declined?: ReadonlyMap<string, ErrorCode> }): DeclineCounts {
  if (s.phase === Phase.AdvertiseKeys && s.declined) return countDeclines(s.declined.values());
  return s.stats.declines ?? {};
}

/** `stats` with the declines of a state that leaves phase 0 folded in. */
export function statsWithDeclines(s: PhaseBase & { declined?: ReadonlyMap<string, ErrorCode> }): CoordinatorStats {
  return s.phase === Phase.AdvertiseKeys ? { ...s.stats, declines: declinesOf(s) } : s.stats;
}

/** What a final state says about its declines (`outcomeOf`). */
export interface ApprovalShortfallInput {
  reason: AbortReason;
  at: Phase;
  stats: CoordinatorStats;
  cfg: { params: { threshold: number } };
}

/**
 * True when a round aborted in phase 0 for too few clients and the clients that declined with
 * `approval-required` (audit mode) account for the shortfall: with them the round would have
 * had the max(t + 1, 3) clients it needs. Retrying cannot help then; an operator's approval can.
 */
export function approvalShortfall(a: ApprovalShortfallInput): boolean {
  if (a.reason !== AbortReason.TooFewClients || a.at !== Phase.AdvertiseKeys) return false;
  const awaiting = a.stats.declines?.[ErrorCode.ApprovalRequired] ?? 0;
  if (awaiting === 0) return false;
  const needed = Math.max(a.cfg.params.threshold + 1, 3);
  return (a.stats.advertised ?? 0) + awaiting >= needed;
}

/** The counts in words, most first: "approval-required 3, replayed-round 1" ('' for none). */
export function describeDeclines(c: DeclineCounts | undefined): string {
  return Object.entries(c ?? {})
    .filter(([, n]) => (n ?? 0) > 0)
    .sort(([a, x], [b, y]) => (y ?? 0) - (x ?? 0) || (a < b ? -1 : 1))
    .map(([reason, n]) => `${reason} ${n}`)
    .join(', ');
}
