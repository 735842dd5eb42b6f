/**
 * Coordinator-side round states, one per phase (fcp's server states), each with its handler in
 * its own file: `receive(state, msg)` takes one client message, `complete(state)` says whether
 * the phase needs anything more, `close(state)` ends the phase (all answered, or deadline).
 *
 * A refused message throws an `AegisError` with a stable code and leaves the state exactly as it
 * was: every check runs before anything changes. A state owns its collections and the running
 * sum, which `receive` updates in place (copying an O(m) sum per message would cost more than
 * the round); callers hold on to the returned `next`, never to an earlier state.
 */
import type { ErrorCode } from '../../shared/errors.js';
import type { Addressed, AdvertiseKeys, RoundRef, ServerMessage, ShareKeys, UnmaskRequest, UnmaskResponse } from '../../shared/protocol/messages.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import type { Roster } from '../../shared/protocol/roster.js';
import type { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';

/** How many clients declined, by reason code (reasons nobody gave are absent). */
export type DeclineCounts = Partial<Record<ErrorCode, number>>;

export interface CoordinatorConfig {
  params: RoundParams;
  round: RoundRef;
  /** The round view its members are sent (shared/protocol/view.ts): advertisements for another view are refused. */
  view: Uint8Array;
  /** The PKI: identity public key enrolled under a client id, undefined when unknown. */
  identityOf: (clientId: string) => Uint8Array | undefined;
  /**
   * r: the bits of the round's sum — masked inputs must come reduced mod 2^r, and the unmasked
   * sum is reduced mod 2^r. Derived from the signed manifest (shared/protocol/dp-manifest.ts
   * `maskedSumBits`); default `sumBitsOf(params)`, what a manifest without a `dp` section sets.
   */
  sumBits?: number;
}

export interface CoordinatorStats {
  /** Keystream words generated while unmasking. */
  prgWords: number;
  /** Sizes of U1..U4 as they were fixed. */
  u1?: number;
  u2?: number;
  u3?: number;
  u4?: number;
  /** Clients whose keys phase 0 took, fixed when it closed (U1's size when the round went on, also when it aborted there). */
  advertised?: number;
  /** Clients that declined the round, by reason: counts only, fixed when phase 0 ended. */
  declines?: DeclineCounts;
}

/** What every state carries: the round's configuration and statistics. */
export interface StateBase {
  cfg: CoordinatorConfig;
  stats: CoordinatorStats;
}

/** A state's phase with what every state carries: enough to end the round where it is. */
export interface PhaseBase extends StateBase {
  phase: Phase;
}

export interface AdvertiseKeysState extends StateBase {
  phase: typeof Phase.AdvertiseKeys;
  received: Map<string, AdvertiseKeys>;
  /** Public keys already advertised (hex) -> client id: one key never appears under two ids. */
  keyOwners: Map<string, string>;
  /** Clients that declined the round -> the reason code they sent (phase 0 waits for them no longer). */
  declined: Map<string, ErrorCode>;
}

export interface ShareKeysState extends StateBase {
  phase: typeof Phase.ShareKeys;
  roster: Roster;
  received: Map<string, ShareKeys>;
}

export interface MaskedInputState extends StateBase {
  phase: typeof Phase.MaskedInput;
  roster: Roster;
  u2: readonly string[];
  /** Who may send in this phase (U2). */
  expected: ReadonlySet<string>;
  /** The running sum of masked inputs, length dim + 1: O(m) memory whatever n is. */
  sum: Uint32Array;
  /** SHA-256 of each accepted vector, to tell an identical resend from a conflicting one. */
  received: Map<string, Uint8Array>;
}

export interface ConsistencyCheckState extends StateBase {
  phase: typeof Phase.ConsistencyCheck;
  roster: Roster;
  u2: readonly string[];
  u3: readonly string[];
  /** Who may send in this phase (U3). */
  expected: ReadonlySet<string>;
  /** What each member of U3 signs: consistencyTranscript(session_id, U3), built once. */
  transcript: Uint8Array;
  sum: Uint32Array;
  signatures: Map<string, Uint8Array>;
}

export interface UnmaskingState extends StateBase {
  phase: typeof Phase.Unmasking;
  roster: Roster;
  u2: readonly string[];
  u3: readonly string[];
  /** The members of U4 that were asked to unmask (those able to check t signatures). */
  u4: readonly string[];
  /** Who may send in this phase. */
  expected: ReadonlySet<string>;
  sum: Uint32Array;
  requests: Map<string, UnmaskRequest>;
  responses: Map<string, UnmaskResponse>;
}

export interface CompletedState extends StateBase {
  phase: typeof Phase.Completed;
  /** The clients whose inputs are in the sum (U3), sorted. */
  survivors: readonly string[];
  /**
   * The unmasked integer sum, length dim + 1 (last word: total weight). Its decoding (float sum,
   * mean) is made by whoever reads it (`decodeRoundSum`), not kept: a finished round stays on
   * record for its retention period, and the decoding is four times the sum's size.
   */
  sum: Uint32Array;
  /** The round's session id: a DP round's sum is decoded with the public seed derived from it. */
  sessionId?: Uint8Array;
}

export interface AbortedState extends StateBase {
  phase: typeof Phase.Aborted;
  reason: AbortReason;
  /** The phase in which the round aborted. */
  at: Phase;
  detail: string;
}

export type CoordinatorState =
  | AdvertiseKeysState
  | ShareKeysState
  | MaskedInputState
  | ConsistencyCheckState
  | UnmaskingState
  | CompletedState
  | AbortedState;

export type FinalState = CompletedState | AbortedState;

/**
 * How a round ended, as its host reports it (made from the final state by `outcomeOf`,
 * coordinator/round/outcome.ts): a completed round's survivors and unmasked sum, or
 * an aborted round's reason, phase and detail; either with its declines by reason.
 */
export type RoundOutcome =
  | { ok: true; survivors: readonly string[]; sum: Uint32Array; declines: DeclineCounts; state: CompletedState }
  | {
      ok: false;
      reason: AbortReason;
      at: Phase;
      detail: string;
      /** The round's declines by reason (every group's, in a grouped round). */
      declines: DeclineCounts;
      /**
       * True when the round aborted in phase 0 for too few clients and the clients awaiting an
       * operator's approval (audit mode) account for the shortfall (in some group of a grouped
       * round): it would have run with their approval.
       */
      approvalShortfall: boolean;
      state: AbortedState;
    };

export interface CoordinatorTransition {
  next: CoordinatorState;
  outbound: Addressed<ServerMessage>[];
}

/** One keystream to add into the sum while unmasking: sum += sign * PRG(key). */
export interface MaskJob {
  key: Uint8Array;
  sign: 1 | -1;
}
