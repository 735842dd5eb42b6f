/** Checks shared by the coordinator's phase handlers; each throws a typed error. */
import { isDeepStrictEqual } from 'node:util';
import { AegisError, ErrorCode } from '../../shared/errors.js';

export function assertSession(got: unknown, want: Uint8Array): void {
  if (!(got instanceof Uint8Array) || got.length !== want.length) throw new AegisError(ErrorCode.InvalidArgument, 'session id must be 32 bytes');
  if (Buffer.compare(got, want) !== 0) throw new AegisError(ErrorCode.SessionMismatch, 'message for another session');
}

/** A second message from one sender in one phase: always refused, and said which kind. */
export function refuseResend(msg: unknown, prior: unknown): never {
  const same = isDeepStrictEqual(msg, prior);
  throw new AegisError(ErrorCode.AlreadyExists, same ? 'already received (identical resend changes nothing)' : 'already received (conflicting resend refused)');
}
