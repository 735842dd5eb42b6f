/** Checks shared by the coordinator's phase handlers; each throws a typed error. */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ClientMessage } from '../../shared/protocol/messages.js';

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

