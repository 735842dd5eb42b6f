/**
 * A round run as aggregation groups (coordinator/round/groups.ts; DESIGN.md §6): one round host
 * per group — its own session, neighbour graph, threshold and deadlines — behind the host
 * surface the coordinator uses (types.ts), so a grouped round is launched, followed, cancelled and finished
 * like any other. Each client's messages go to its group's host only.
 *
 * The outcome waits for every group (coordinator/round/outcome.ts, `groupedOutcome`): it completes
 * when at least one group did, with the sum of the completed groups' sums (mod 2^32, weights
 * included) and their survivors, and aborts only when every group aborted (with the first
 * group's reason).
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ClientMessage, ServerMessage } from '../../shared/protocol/messages.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { addDeclines, groupedOutcome, type RoundOutcome } from '../round/index.js';
import { isFinalPhase, phaseIndex } from '../round/phases.js';
import type { PhaseStart, RoundHostLike, RoundStatus } from './types.js';

export class GroupedRoundHost implements RoundHostLike {
  readonly outcome: Promise<RoundOutcome>;
  private readonly hosts: RoundHostLike[];
  private readonly groupOf = new Map<string, number>();

  constructor(groups: readonly { members: readonly string[]; host: RoundHostLike }[]) {
    if (groups.length === 0) throw new AegisError(ErrorCode.InvalidArgument, 'a grouped round needs at least one group');
    this.hosts = groups.map((g) => g.host);
    groups.forEach((g, i) => {
      for (const id of g.members) this.groupOf.set(id, i);
    });
    this.outcome = Promise.all(this.hosts.map((h) => h.outcome)).then((outcomes) => groupedOutcome(groups.map((g, i) => ({ members: g.members, outcome: outcomes[i]! }))));
  }

  /** The group count. */
  get size(): number {
    return this.hosts.length;
  }

  /** The phase of the least advanced group still running (the round's phase as a whole). */
  get phase(): Phase {
    const running = this.hosts.map((h) => h.phase).filter((p) => !isFinalPhase(p));
    if (running.length === 0) return this.hosts.some((h) => h.phase === Phase.Completed) ? Phase.Completed : Phase.Aborted;
    return running.reduce((a, b) => (phaseIndex(a) <= phaseIndex(b) ? a : b));
  }

  /** Group 0's phase timeline (every group starts together and runs the same deadlines). */
  get timeline(): PhaseStart[] {
    return this.hosts[0]!.timeline;
  }

  get closeMs(): Partial<Record<Phase, number>> {
    return this.hosts[0]!.closeMs;
  }

  private hostOf(clientId: string): RoundHostLike {
    const g = this.groupOf.get(clientId);
    if (g === undefined) throw new AegisError(ErrorCode.UnknownSender, 'the client is not in this round');
    return this.hosts[g]!;
  }

  submit(authenticatedId: string, msg: ClientMessage): void | Promise<void> {
    return this.hostOf(authenticatedId).submit(authenticatedId, msg);
  }

  lost(clientId: string): void {
    if (this.groupOf.has(clientId)) this.hostOf(clientId).lost(clientId);
  }

  back(clientId: string): void {
    if (this.groupOf.has(clientId)) this.hostOf(clientId).back(clientId);
  }

  subscribe(clientId: string, listener: (m: ServerMessage) => void): () => void {
    return this.hostOf(clientId).subscribe(clientId, listener);
  }

  awaitsAdvertisement(clientId: string): boolean {
    return this.groupOf.has(clientId) && this.hostOf(clientId).awaitsAdvertisement(clientId);
  }

  /** Summed over the groups: messages taken, set sizes, refusals, declines; the slowest group's phase. */
  status(): RoundStatus {
    const all = this.hosts.map((h) => h.status());
    const sets: RoundStatus['sets'] = {};
    for (const k of ['u1', 'u2', 'u3', 'u4'] as const) {
      const known = all.filter((s) => s.sets[k] !== undefined);
      if (known.length > 0) sets[k] = known.reduce((a, s) => a + s.sets[k]!, 0);
    }
    return {
      phase: this.phase,
      received: all.reduce((a, s) => a + s.received, 0),
      sets,
      refused: all.reduce((a, s) => a + s.refused, 0),
      elapsedMs: Math.max(...all.map((s) => s.elapsedMs)),
      declines: addDeclines(...all.map((s) => s.declines)),
    };
  }

  cancel(detail?: string): void {
    for (const h of this.hosts) h.cancel(detail);
  }
}
