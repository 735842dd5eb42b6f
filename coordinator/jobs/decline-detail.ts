/**
 * What a round's declines tell an operator, in words: when clients awaiting approval (audit
 * mode) are why a round had too few clients, how many of the invited they are and what to do
 * about it; how many declined for each other reason. The round's abort detail and a training
 * job's failure carry it. Counts only: never which client declined.
 */
import { ErrorCode } from '../../shared/errors.js';
import { AbortReason } from '../../shared/protocol/vocabulary.js';
import type { RoundOutcome } from '../round/index.js';

export interface DeclineDetailContext {
  jobId: string;
  /** The job's manifest hash, hex (what `aegis client approve` names). */
  manifestSha256: string;
  /** Clients invited to the round. */
  invited: number;
}

/**
 * "3 of 5 clients await approval (audit mode): …; 2 declined: replayed-round" for a round whose
 * shortfall the approvals account for; "2 declined: replayed-round; 1 declined: no-input"
 * otherwise; '' for a round nobody declined.
 */
export function declineDetail(o: RoundOutcome, ctx: DeclineDetailContext): string {
  const parts: string[] = [];
  const shortfall = !o.ok && o.approvalShortfall;
  const awaiting = o.declines[ErrorCode.ApprovalRequired] ?? 0;
  if (shortfall) {
    parts.push(
      `${awaiting} of ${ctx.invited} clients await approval (audit mode): approve the job on each of them (aegis client approve ${ctx.jobId} --manifest-sha256 ${ctx.manifestSha256}), then launch it again`,
    );
  }
  const others = Object.entries(o.declines)
    .filter(([reason, n]) => (n ?? 0) > 0 && !(shortfall && reason === ErrorCode.ApprovalRequired))
    .sort(([a, x], [b, y]) => (y ?? 0) - (x ?? 0) || (a < b ? -1 : 1));
  for (const [reason, n] of others) parts.push(`${n} declined: ${reason}`);
  return parts.join('; ');
}

/** The outcome with its declines in its detail (an aborted round's, unless an operator cancelled it). */
export function withDeclineDetail(o: RoundOutcome, ctx: DeclineDetailContext): RoundOutcome {
  if (o.ok || o.reason === AbortReason.Cancelled) return o;
  const extra = declineDetail(o, ctx);
  if (extra === '') return o;
  return { ...o, detail: o.detail ? `${o.detail}; ${extra}` : extra };
}
