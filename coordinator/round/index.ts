/**
 * The coordinator's round driver: routes a client message to the handler of the current phase
 * and closes phases (`close`) when `phaseComplete` says nothing more is needed or a deadline
 * passes. `receive` never closes a phase by itself. Every message's shape is checked (zod)
 * before any handler reads it. A message the phase does not take throws `wrong-phase` and
 * leaves the state as it was (phase 0 takes keys or a decline, each later phase one message). `cancelRound` ends a running round; `outcomeOf` reads how a
 * round ended from its final state.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ClientMessage } from '../../shared/protocol/messages.js';
import { assertSumBits, validateRoundParams } from '../../shared/protocol/params.js';
import { assertClientMessage } from '../../shared/protocol/schemas.js';
import { assertRoundRef } from '../../shared/protocol/session.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { assertTakes, isFinalPhase } from './phases.js';
import * as r0 from './r0-advertise-keys.js';
import * as r1 from './r1-share-keys.js';
import * as r2 from './r2-masked-input.js';
import * as r3 from './r3-consistency-check.js';
import * as r4 from './r4-unmasking.js';
import type { AdvertiseKeysState, CoordinatorConfig, CoordinatorState, CoordinatorTransition, FinalState } from './types.js';

export type * from './types.js';
export { applyMaskJobs, finish as finishUnmask, plan as planUnmask } from './r4-unmasking.js';
export { cancelRound } from './aborted.js';
export { decodeRoundSum } from './completed.js';
export { groupedOutcome, outcomeOf } from './outcome.js';
export { addDeclines, declinesOf, describeDeclines, totalDeclines, type DeclineCounts } from './declines.js';

/** Opens a round (phase 0). Parameters are re-validated: a bad manifest never starts a round. */
export function start(cfg: CoordinatorConfig): AdvertiseKeysState {
  assertRoundRef(cfg.round);
  const params = validateRoundParams(cfg.params);
  if (cfg.sumBits !== undefined) assertSumBits(cfg.sumBits);
  return r0.start({ ...cfg, params });
}

declare const checked: unique symbol;
/** A client message checked on its way in (`assertMessageFrom`): its shape, and who sent it. */
export type CheckedMessage = ClientMessage & { readonly [checked]: true };

/**
 * Checks a message once on its way into a host: its shape (zod; `invalid-argument`) and that it
 * names the authenticated client (`unknown-sender`). Hosts then hand it to `receiveChecked`.
 */
export function assertMessageFrom(authenticatedId: string, msg: ClientMessage): asserts msg is CheckedMessage {
  assertClientMessage(msg);
  if (msg.clientId !== authenticatedId) throw new AegisError(ErrorCode.UnknownSender, 'the message names another client than the authenticated one');
}

/** Takes one client message into the current phase; its shape is checked first. */
export function receive(state: CoordinatorState, msg: ClientMessage): CoordinatorTransition {
  assertClientMessage(msg);
  return route(state, msg);
}

/** `receive` for a message a host checked already (`assertMessageFrom`): its shape is not checked again. */
export function receiveChecked(state: CoordinatorState, msg: CheckedMessage): CoordinatorTransition {
  return route(state, msg);
}

function route(state: CoordinatorState, msg: ClientMessage): CoordinatorTransition {
  assertTakes({ phase: state.phase, closing: false }, msg.type);
  switch (state.phase) {
    case Phase.AdvertiseKeys:
      return r0.receive(state, msg as Parameters<typeof r0.receive>[1]);
    case Phase.ShareKeys:
      return r1.receive(state, msg as Parameters<typeof r1.receive>[1]);
    case Phase.MaskedInput:
      return r2.receive(state, msg as Parameters<typeof r2.receive>[1]);
    case Phase.ConsistencyCheck:
      return r3.receive(state, msg as Parameters<typeof r3.receive>[1]);
    case Phase.Unmasking:
      return r4.receive(state, msg as Parameters<typeof r4.receive>[1]);
    default:
      throw new AegisError(ErrorCode.WrongPhase, `the round is ${state.phase}`);
  }
}

/** Ends the current phase (its deadline passed): proceed with who answered, or abort. */
export function close(state: CoordinatorState): CoordinatorTransition {
  switch (state.phase) {
    case Phase.AdvertiseKeys:
      return r0.close(state);
    case Phase.ShareKeys:
      return r1.close(state);
    case Phase.MaskedInput:
      return r2.close(state);
    case Phase.ConsistencyCheck:
      return r3.close(state);
    case Phase.Unmasking:
      return r4.close(state);
    default:
      return { next: state, outbound: [] };
  }
}

/**
 * True when the current phase needs nothing more: every expected client has answered (or, when
 * unmasking, every secret has t shares). The driver then closes the phase without waiting for
 * its deadline.
 */
export function phaseComplete(state: CoordinatorState): boolean {
  switch (state.phase) {
    case Phase.AdvertiseKeys:
      return r0.complete(state);
    case Phase.ShareKeys:
      return r1.complete(state);
    case Phase.MaskedInput:
      return r2.complete(state);
    case Phase.ConsistencyCheck:
      return r3.complete(state);
    case Phase.Unmasking:
      return r4.complete(state);
    default:
      return false;
  }
}

export const isFinal = (s: CoordinatorState): s is FinalState => isFinalPhase(s.phase);
