/**
 * The host of a round read back from the job history (coordinator/jobs/job-history.ts) after a
 * restart: the round ran in an earlier coordinator process, so only what the history kept is
 * here — the outcome, the counts per phase, the declines by reason, the timeline. It takes no
 * message and sends none; a round that was still running when its process stopped stands here
 * as aborted with reason `interrupted`.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import type { RoundOutcome } from '../round/index.js';
import type { PhaseStart, RoundHostLike, RoundStatus } from './types.js';

export class StoredHost implements RoundHostLike {
  readonly outcome: Promise<RoundOutcome>;
  readonly phase: Phase;
  readonly timeline: PhaseStart[];
  readonly closeMs: Partial<Record<Phase, number>>;
  private readonly frozen: RoundStatus;

  constructor(outcome: RoundOutcome, status: RoundStatus, timeline: PhaseStart[], closeMs: Partial<Record<Phase, number>>) {
    this.outcome = Promise.resolve(outcome);
    this.phase = outcome.ok ? Phase.Completed : Phase.Aborted;
    this.timeline = timeline.map((t) => ({ ...t }));
    this.closeMs = { ...closeMs };
    this.frozen = { ...status, phase: this.phase, sets: { ...status.sets }, declines: { ...status.declines } };
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
