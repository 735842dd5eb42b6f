/**
 * RoundHost: the I/O around one round's coordinator state machine (the embedded default: one
 * process, state in memory). It takes authenticated client messages, closes each phase as soon
 * as nothing more is needed or when its deadline passes, and queues every outbound message for
 * its recipient until a subscriber takes it. Transports (gRPC handlers, the simulator) stay
 * thin around it.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ClientMessage, PhaseDeadlines, RoundRef, ServerMessage } from '../../shared/protocol/messages.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { assertMessageFrom, cancelRound, close, finishUnmask, isFinal, outcomeOf, phaseComplete, planUnmask, receiveChecked, start, type CoordinatorState, type CoordinatorTransition, type MaskJob, type RoundOutcome } from '../round/index.js';
import { abortRound } from '../round/aborted.js';
import { declinesOf } from '../round/declines.js';
import { assertTakes, awaitedClients, deadlineOf, expectedClients, hasAnswered, receivedCount, waitsOnlyForGone, type PhaseMark } from '../round/phases.js';
import { Outbox } from './outbox.js';
import type { PhaseClosedEvent, PhaseStart, RoundHostLike, RoundStatus } from './types.js';

export type { PhaseDeadlines };

export interface RoundHostConfig {
  params: RoundParams;
  /** r: the bits of the round's sum (coordinator/round/types.ts CoordinatorConfig.sumBits). */
  sumBits?: number;
  round: RoundRef;
  /** The round view the members are sent (shared/protocol/view.ts). */
  view: Uint8Array;
  identityOf: (clientId: string) => Uint8Array | undefined;
  deadlines: PhaseDeadlines;
  /**
   * How many clients were invited, when fewer than the manifest's cohort n were connected: phase
   * 0 then closes as soon as all of them answered (advertised keys or declined) instead of
   * waiting out its deadline.
   */
  invited?: number;
  /** Called after each phase change (also the final one). */
  onPhase?: (phase: Phase) => void;
  /** Called when a protocol phase closes: how long it ran, who answered out of how many it waited for. */
  onPhaseClosed?: (e: PhaseClosedEvent) => void;
  /**
   * Expands the unmasking phase's mask jobs elsewhere (worker jobs on Redis, coordinator/queue/
   * unmask-queue.ts) and returns their partial sums; without it they are expanded here.
   */
  unmask?: (jobs: readonly MaskJob[], words: number) => Promise<Uint32Array[]>;
  /**
   * The invited client ids. With them, a phase also closes early once every client it still
   * waits for is known to be gone (`lost`), instead of waiting out its deadline.
   */
  cohort?: readonly string[];
}

type Listener = (m: ServerMessage) => void;

export class RoundHost implements RoundHostLike {
  private state: CoordinatorState;
  private readonly cfg: RoundHostConfig;
  private readonly outbox = new Outbox();
  private timer: NodeJS.Timeout | undefined;
  private refused = 0;
  /** When each phase began (ms since the epoch), in order. */
  readonly timeline: PhaseStart[] = [{ phase: Phase.AdvertiseKeys, at: Date.now() }];
  /** The coordinator's own compute time closing each phase (ms): unmasking's is the reconstruction. */
  readonly closeMs: Partial<Record<Phase, number>> = {};
  /** Members whose connection is gone: phases do not wait for them. */
  private readonly gone = new Set<string>();
  private readonly startedAt = Date.now();
  private settle!: (o: RoundOutcome) => void;
  /** Resolves once, when the round completes or aborts. */
  readonly outcome: Promise<RoundOutcome>;
  /** True while the unmask workers expand the masks: the phase is closing and takes no more messages. */
  private closing = false;
  private phaseStartedAt = performance.now();

  constructor(cfg: RoundHostConfig) {
    this.cfg = cfg;
    this.state = start({ params: cfg.params, ...(cfg.sumBits !== undefined ? { sumBits: cfg.sumBits } : {}), round: cfg.round, view: cfg.view, identityOf: cfg.identityOf });
    this.outcome = new Promise((resolve) => (this.settle = resolve));
    this.arm();
  }

  get phase(): Phase {
    return this.state.phase;
  }

  private get mark(): PhaseMark {
    return { phase: this.state.phase, closing: this.closing };
  }

  /**
   * Takes one message from an authenticated client. The id inside the message must be the
   * authenticated one. Throws a typed AegisError when refused; the round is then unchanged.
   */
  submit(authenticatedId: string, msg: ClientMessage): void {
    const s = this.state;
    if (isFinal(s)) throw new AegisError(ErrorCode.WrongPhase, `the round is ${s.phase === Phase.Aborted && s.reason === AbortReason.Cancelled ? 'cancelled' : s.phase}`);
    try {
      assertMessageFrom(authenticatedId, msg);
      assertTakes(this.mark, msg.type);
      this.state = receiveChecked(this.state, msg).next;
    } catch (err) {
      this.refused++;
      throw err;
    }
    if (phaseComplete(this.state) || this.allInvitedAnswered()) this.closePhase();
    else this.closeIfOnlyGoneAreMissing();
  }

  /**
   * A client's connection is gone (its stream ended and did not come back in time): the phases
   * stop waiting for it. Its messages are still taken if it returns before a phase closes.
   */
  lost(clientId: string): void {
    if (isFinal(this.state)) return;
    this.gone.add(clientId);
    this.closeIfOnlyGoneAreMissing();
  }

  /** The client is connected again. */
  back(clientId: string): void {
    this.gone.delete(clientId);
  }

  private closeIfOnlyGoneAreMissing(): void {
    if (isFinal(this.state) || this.closing) return;
    const s = this.state;
    const awaited = awaitedClients(s, this.cfg.cohort);
    if (awaited && waitsOnlyForGone(awaited, (id) => hasAnswered(s, id), this.gone)) this.closePhase();
  }

  /** Phase 0 has an answer from every invited client: keys, or a decline. */
  private allInvitedAnswered(): boolean {
    const s = this.state;
    return s.phase === Phase.AdvertiseKeys && this.cfg.invited !== undefined && s.received.size + s.declined.size >= this.cfg.invited;
  }

  /**
   * Delivers this client's queued and future messages to `listener`; returns an unsubscribe. A
   * round that has ended sends nothing more: its subscriptions are dropped when it ends (a
   * finished round stays on record for its retention period, and each listener holds what it
   * needs to reach its member — the advertise broadcast's certificates among it), and a later
   * subscription is not kept.
   */
  subscribe(clientId: string, listener: Listener): () => void {
    if (isFinal(this.state)) return () => undefined;
    return this.outbox.subscribe(clientId, listener);
  }

  /** True while the round waits for keys this client has neither advertised nor declined. */
  awaitsAdvertisement(clientId: string): boolean {
    const s = this.state;
    return s.phase === Phase.AdvertiseKeys && !hasAnswered(s, clientId);
  }

  status(): RoundStatus {
    const { u1, u2, u3, u4 } = this.state.stats;
    const sets = { ...(u1 === undefined ? {} : { u1 }), ...(u2 === undefined ? {} : { u2 }), ...(u3 === undefined ? {} : { u3 }), ...(u4 === undefined ? {} : { u4 }) };
    return { phase: this.state.phase, received: receivedCount(this.state), sets, refused: this.refused, elapsedMs: Date.now() - this.startedAt, declines: declinesOf(this.state) };
  }

  /** Ends the round now (it aborts with reason `cancelled` in its current phase); nothing is published. */
  cancel(detail = 'cancelled by an operator'): void {
    if (isFinal(this.state)) return;
    const { next } = cancelRound(this.state, detail);
    this.state = next;
    clearTimeout(this.timer);
    this.outbox.clear();
    this.settle(outcomeOf(next));
  }

  private arm(): void {
    clearTimeout(this.timer);
    const phase = this.state.phase;
    const ms = deadlineOf(phase, this.cfg.deadlines);
    if (ms === undefined) return;
    this.timer = setTimeout(() => {
      if (this.state.phase === phase) this.closePhase();
    }, ms);
    this.timer.unref?.();
  }

  private closePhase(): void {
    if (this.closing) return;
    const phase = this.state.phase;
    const answered = receivedCount(this.state);
    const expected = this.expectedIn(phase);
    const declines = phase === Phase.AdvertiseKeys ? declinesOf(this.state) : undefined;
    const t0 = performance.now();
    if (phase === Phase.Unmasking && this.cfg.unmask) {
      const s = this.state;
      const p = planUnmask(s);
      if (!('aborted' in p)) {
        // The masks go out to workers; the phase takes no more messages meanwhile.
        this.closing = true;
        clearTimeout(this.timer);
        this.cfg
          .unmask(p.jobs, s.cfg.params.dim + 1)
          .then(
            (partials) => finishUnmask(s, partials, p.jobs.length),
            () => abortRound(s, AbortReason.UnmaskFailed, 'the unmask workers failed or did not answer in time'),
          )
          .then((t) => {
            this.closing = false;
            // A round cancelled meanwhile stays as it is.
            if (isFinal(this.state)) return;
            this.closeMs[phase] = performance.now() - t0;
            this.applyClose(phase, answered, expected, declines, t);
          });
        return;
      }
      this.closeMs[phase] = performance.now() - t0;
      this.applyClose(phase, answered, expected, declines, p.aborted);
      return;
    }
    const transition = close(this.state);
    this.closeMs[phase] = performance.now() - t0;
    this.applyClose(phase, answered, expected, declines, transition);
  }

  private applyClose(phase: Phase, answered: number, expected: number, declines: PhaseClosedEvent['declines'], { next, outbound }: CoordinatorTransition): void {
    this.state = next;
    this.cfg.onPhaseClosed?.({ phase, next: next.phase, seconds: (performance.now() - this.phaseStartedAt) / 1000, clients: answered, expected, ...(declines ? { declines } : {}) });
    this.phaseStartedAt = performance.now();
    this.timeline.push({ phase: next.phase, at: Date.now() });
    this.cfg.onPhase?.(this.state.phase);
    for (const { to, message } of outbound) this.outbox.deliver(to, message);
    if (isFinal(next)) {
      clearTimeout(this.timer);
      this.outbox.clear();
      this.settle(outcomeOf(next));
      return;
    }
    this.arm();
    // The new phase may already wait only for clients that are gone.
    this.closeIfOnlyGoneAreMissing();
  }

  private expectedIn(phase: Phase): number {
    return expectedClients(phase, this.state.stats, this.cfg.invited ?? this.cfg.params.cohort);
  }
}
