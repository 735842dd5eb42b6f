/**
 * The surface every round host offers the coordinator: the in-memory RoundHost (round-host.ts),
 * a round run as aggregation groups (grouped-host.ts), a round on Redis
 * (coordinator/queue/redis-round-host.ts) and a retired round (retired-host.ts).
 */
import type { ClientMessage, ServerMessage } from '../../shared/protocol/messages.js';
import type { Phase } from '../../shared/protocol/vocabulary.js';
import type { DeclineCounts, RoundOutcome } from '../round/index.js';

export interface RoundStatus {
  phase: Phase;
  /** Messages taken in the current phase. */
  received: number;
  /** Sizes of U1..U4 fixed so far. */
  sets: { u1?: number; u2?: number; u3?: number; u4?: number };
  refused: number;
  elapsedMs: number;
  /** Clients that declined the round, by reason (counts only; phase 0 stopped waiting for them). */
  declines: DeclineCounts;
}

export interface PhaseClosedEvent {
  phase: Phase;
  next: Phase;
  /** From the phase's start to its close (deadline or early close), seconds. */
  seconds: number;
  /** Clients whose message for the phase was taken. */
  clients: number;
  /** Clients the phase waited for: the invited cohort, then |U1|..|U4|. */
  expected: number;
  /** Phase 0: the clients that declined instead of advertising keys, by reason (not dropouts). */
  declines?: DeclineCounts;
}

/** When a phase began (ms since the epoch). */
export interface PhaseStart {
  phase: Phase;
  at: number;
}

/** What the coordinator needs of a round's host. */
export interface RoundHostLike {
  readonly phase: Phase;
  /** Resolves once, when the round completes or aborts. */
  readonly outcome: Promise<RoundOutcome>;
  /** When each phase began, in order. */
  readonly timeline: PhaseStart[];
  /** The coordinator's own compute time closing each phase (ms). */
  readonly closeMs: Partial<Record<Phase, number>>;
  /**
   * Takes one message from an authenticated client (a host on Redis answers asynchronously).
   * Throws a typed AegisError when refused; the round is then unchanged.
   */
  submit(authenticatedId: string, msg: ClientMessage): void | Promise<void>;
  /** The client's connection is gone: the phases stop waiting for it. */
  lost(clientId: string): void;
  /** The client is connected again. */
  back(clientId: string): void;
  /** Delivers this client's queued and future messages to `listener`; returns an unsubscribe. */
  subscribe(clientId: string, listener: (m: ServerMessage) => void): () => void;
  /** True while the round waits for keys this client has neither advertised nor declined. */
  awaitsAdvertisement(clientId: string): boolean;
  status(): RoundStatus;
  /** Ends the round now (it aborts with reason `cancelled`); nothing is published. */
  cancel(detail?: string): void;
}
