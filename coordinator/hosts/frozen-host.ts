/**
 * The host of a round that has ended, standing in for the one it ran on: its outcome, counts per
 * phase, declines by reason, timeline and compute times, frozen. It takes no message and sends
 * none. Three kinds of finished round are held this way:
 * - a round whose record is in the job history (coordinator/jobs/job-history.ts) once it has
 *   been written there: the live host's protocol state (advertised keys, encrypted shares,
 *   subscriptions) is let go, so a coordinator that runs for weeks keeps only this per round;
 * - a round read back from the history after a restart (one still running when its process
 *   stopped stands here as aborted with reason `interrupted`);
 * - a round past its retention (retired-host.ts), whose outcome no longer names its clients.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import type { RoundOutcome } from '../round/index.js';
import type { PhaseStart, RoundHostLike, RoundStatus } from './types.js';

export class FrozenHost implements RoundHostLike {
  readonly outcome: Promise<RoundOutcome>;
  readonly phase: Phase;
  readonly timeline: PhaseStart[];
  readonly closeMs: Partial<Record<Phase, number>>;
  private readonly frozen: RoundStatus;

  constructor(outcome: RoundOutcome, status: RoundStatus, timeline: readonly PhaseStart[], closeMs: Partial<Record<Phase, number>>) {
    this.outcome = Promise.resolve(outcome);
    this.phase = outcome.ok ? Phase.Completed : Phase.Aborted;
    this.timeline = timeline.map((t) => ({ ...t }));
    this.closeMs = { ...closeMs };
    this.frozen = { ...status, phase: this.phase, sets: { ...status.sets }, declines: { ...status.declines } };
  }

  /** `from`, a host whose round has ended with `outcome`, frozen as it is now. */
  static of(from: RoundHostLike, outcome: RoundOutcome): FrozenHost {
    return new FrozenHost(outcome, from.status(), from.timeline, from.closeMs);
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
