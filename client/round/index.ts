/**
 * The client's round driver: routes a coordinator message to the handler of the current phase.
 * A message the phase does not take throws `wrong-phase` and leaves the state as it was.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ServerMessage } from '../../shared/protocol/messages.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { complete } from './completed.js';
import * as r0 from './r0-advertise-keys.js';
import * as r1 from './r1-share-keys.js';
import * as r2 from './r2-masked-input.js';
import * as r3 from './r3-consistency-check.js';
import * as r4 from './r4-unmasking.js';
import type { ClientState, ClientTransition, CompletedState } from './types.js';

export { start } from './r0-advertise-keys.js';
export type * from './types.js';

const EXPECTS: Record<ClientState['phase'], ServerMessage['type'] | null> = {
  [Phase.AdvertiseKeys]: 'advertise-broadcast',
  [Phase.ShareKeys]: 'share-broadcast',
  [Phase.MaskedInput]: 'consistency-request',
  [Phase.ConsistencyCheck]: 'unmask-request',
  [Phase.Unmasking]: 'unmask-request',
  [Phase.Completed]: null,
  [Phase.Aborted]: null,
};

export function handle(state: ClientState, msg: ServerMessage): ClientTransition {
  if (EXPECTS[state.phase] !== msg?.type) {
    throw new AegisError(ErrorCode.WrongPhase, `a client in phase ${state.phase} does not take ${String(msg?.type)}`);
  }
  switch (state.phase) {
    case Phase.AdvertiseKeys:
      return r0.handle(state, msg as Parameters<typeof r0.handle>[1]);
    case Phase.ShareKeys:
      return r1.handle(state, msg as Parameters<typeof r1.handle>[1]);
    case Phase.MaskedInput:
      return r2.handle(state, msg as Parameters<typeof r2.handle>[1]);
    case Phase.ConsistencyCheck:
      return r3.handle(state, msg as Parameters<typeof r3.handle>[1]);
    case Phase.Unmasking:
      return r4.handle(state, msg as Parameters<typeof r4.handle>[1]);
    default:
      throw new AegisError(ErrorCode.WrongPhase, `a client in phase ${state.phase} takes no message`);
  }
}

/** Called when the transport learns the round has finished. */
export function finish(state: ClientState): ClientState | CompletedState {
  return state.phase === Phase.Unmasking ? complete(state) : state;
}
