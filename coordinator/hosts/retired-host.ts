/**
 * Retention of round records (`coordinator start --retention-round-days N`, config
 * `{"retention": {"round_days": N}}`): once a round ended longer ago than that, the coordinator
 * forgets which clients took part — its cohort, who answered in each phase, the survivors, and
 * the protocol state the round's host kept (the members' advertised keys and encrypted shares).
 * What stays is what an ML engineer reads: the counts per phase, the declines by reason (counts
 * only), the timeline, the outcome and reason, and the unmasked sum. A retired round's RetiredHost stands in for the host it ran on.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import type { RoundOutcome } from '../round/index.js';
import type { PhaseStart, RoundHostLike, RoundStatus } from './types.js';

/** The default: 30 days. */
export const DEFAULT_ROUND_RETENTION_MS = 30 * 86_400_000;

/** The outcome without the client ids in it (a completed round's survivors; the sum and its decoding stay). */
export function withoutClients(o: RoundOutcome): RoundOutcome {
  if (!o.ok) return o;
  return { ...o, survivors: [], state: { ...o.state, survivors: [] } };
}

/** A finished round's host once its participants are forgotten: counts, timeline and outcome only. */
export class RetiredHost implements RoundHostLike {
  readonly outcome: Promise<RoundOutcome>;
  readonly phase: Phase;
  readonly timeline: PhaseStart[];
  readonly closeMs: Partial<Record<Phase, number>>;
  private readonly frozen: RoundStatus;

  constructor(from: RoundHostLike, outcome: RoundOutcome) {
    this.outcome = Promise.resolve(withoutClients(outcome));
    this.phase = outcome.ok ? Phase.Completed : Phase.Aborted;
    this.timeline = from.timeline.map((t) => ({ ...t }));
    this.closeMs = { ...from.closeMs };
    const s = from.status();
    this.frozen = { phase: this.phase, received: s.received, sets: { ...s.sets }, refused: s.refused, elapsedMs: s.elapsedMs, declines: { ...s.declines } };
  }

  status(): RoundStatus {
    return { ...this.frozen, sets: { ...this.frozen.sets }, declines: { ...this.frozen.declines } };
  }

  submit(): void {
    throw new AegisError(ErrorCode.WrongPhase, `the round is ${this.phase}`);
  }

  subscribe(): () => void {
    return () => undefined;
  }

  awaitsAdvertisement(): boolean {
    return false;
  }

  lost(): void {}

  back(): void {}

  cancel(): void {}
}
