/** Checks shared by the coordinator's phase handlers; each throws a typed error. */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ClientMessage } from '../../shared/protocol/messages.js';

/** What a client answers phase 0 with: its keys, or a decline. */
export type Phase0Answer = 'advertise-keys' | 'decline';

export function assertSession(got: unknown, want: Uint8Array): void {
  if (!(got instanceof Uint8Array) || got.length !== want.length) throw new AegisError(ErrorCode.InvalidArgument, 'session id must be 32 bytes');
  if (Buffer.compare(got, want) !== 0) throw new AegisError(ErrorCode.SessionMismatch, 'message for another session');
}

/** What each client message is called in a refusal. */
const NOUN: Record<ClientMessage['type'], string> = {
  'advertise-keys': 'key advertisement',
  decline: 'decline',
  'share-keys': 'share pairs',
  'masked-input': 'masked input',
  'consistency-signature': 'consistency signature',
  'unmask-response': 'unmasking response',
};

/**
 * A second message of `type` from one sender in one phase: always refused with
 * `already-exists`; the message says whether it was an identical resend (which changes nothing)
 * or a conflicting one.
 */
export function refuseResend(type: ClientMessage['type'], same: boolean): never {
  const what = NOUN[type];
  throw new AegisError(ErrorCode.AlreadyExists, same ? `${what} already received (identical resend changes nothing)` : `${what} already received (conflicting resend refused)`);
}


/**
 * A second answer to phase 0 from one client, which takes one advertisement or one decline per
 * client: the same kind again is a resend (`refuseResend`, `same`: identical); the other kind is
 * refused with `already-exists` as well, saying what the client answered first.
 */
export function refuseSecondAnswer(prior: Phase0Answer, type: Phase0Answer, same: boolean): never {
  if (prior === type) refuseResend(type, same);
  throw new AegisError(
    ErrorCode.AlreadyExists,
    prior === 'advertise-keys' ? 'keys already advertised: a client that advertised keys cannot decline the round' : 'the client declined this round: it cannot advertise keys for it',
  );
}
