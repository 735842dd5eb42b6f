/**
 * A round's outcome, derived from its final state: the only place an outcome is made, for the
 * in-memory host, the Redis host and (combining its groups' outcomes) a grouped round.
 */
import { Phase } from '../../shared/protocol/vocabulary.js';
import { addDeclines, approvalShortfall } from './declines.js';
import { combineGroups } from './groups.js';
import type { FinalState, RoundOutcome } from './types.js';

export function outcomeOf(final: FinalState): RoundOutcome {
  const declines = final.stats.declines ?? {};
  if (final.phase === Phase.Completed) return { ok: true, survivors: final.survivors, sum: final.sum, declines, state: final };
  return { ok: false, reason: final.reason, at: final.at, detail: final.detail, declines, approvalShortfall: approvalShortfall(final), state: final };
}

/**
 * A round run as aggregation groups: complete when at least one group completed, with the sum of
 * the completed groups' sums (mod 2^32, weights included) and their survivors;
 * aborted only when every group aborted, with the first group's reason. `state` is the first
 * completed (or, aborted, the first) group's final state.
 */
export function groupedOutcome(groups: readonly { members: readonly string[]; outcome: RoundOutcome }[]): RoundOutcome {
  const outcomes = groups.map((g) => g.outcome);
  const combined = combineGroups(outcomes.map((o, i) => (o.ok ? { ok: true as const, survivors: o.survivors, sum: o.sum } : { ok: false as const, reason: o.reason, at: o.at, members: groups[i]!.members })));
  const firstOk = outcomes.find((o) => o.ok);
  const declines = addDeclines(...outcomes.map((o) => o.declines));
  if (combined.ok && firstOk?.ok) {
    return { ok: true, survivors: combined.survivors, sum: combined.sum!, declines, state: firstOk.state };
  }
  const first = outcomes[0]!;
  if (first.ok) throw new Error('unreachable: a completed group makes the round complete');
  const detail = `all ${groups.length} aggregation groups aborted (first: ${first.reason} in ${first.at}${first.detail ? `: ${first.detail}` : ''})`;
  // One group that would have run with its members' approval makes the round one that would have.
  const shortfall = outcomes.some((o) => !o.ok && o.approvalShortfall);
  return { ok: false, reason: first.reason, at: first.at, detail, declines, approvalShortfall: shortfall, state: first.state };
}
