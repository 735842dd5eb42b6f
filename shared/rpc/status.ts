/**
 * Errors on the wire (DESIGN.md §4: every error is a gRPC status with a stable reason code).
 * One map from `ErrorCode` to gRPC status code; the reason travels in trailing metadata as
 * `aegis-reason` (the string code, e.g. `wrong-phase`) and `aegis-reason-enum` (the
 * `aegis.v1.ErrorReason` value name, e.g. `ERROR_REASON_WRONG_PHASE`).
 */
import { Metadata, status as Status } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import { ErrorCode, isAegisError } from '../errors.js';
import { errorReasonName } from './convert.js';

/** Metadata key of the reason code (string form). */
export const REASON_KEY = 'aegis-reason';
/** Metadata key of the reason code (`ErrorReason` enum value name). */
export const REASON_ENUM_KEY = 'aegis-reason-enum';

/** The gRPC status of each error code. Anything that is not an `AegisError` is INTERNAL. */
export const GRPC_STATUS: Readonly<Record<ErrorCode, Status>> = {
  'wrong-phase': Status.FAILED_PRECONDITION,
  'session-mismatch': Status.FAILED_PRECONDITION,
  'insufficient-shares': Status.FAILED_PRECONDITION,
  'already-exists': Status.ALREADY_EXISTS,
  'too-large': Status.RESOURCE_EXHAUSTED,
  'unknown-sender': Status.PERMISSION_DENIED,
  'invalid-argument': Status.INVALID_ARGUMENT,
  'bad-signature': Status.INVALID_ARGUMENT,
  'bad-key-length': Status.INVALID_ARGUMENT,
  'low-order-point': Status.INVALID_ARGUMENT,
  'malformed-shares': Status.INVALID_ARGUMENT,
  'non-finite-value': Status.INVALID_ARGUMENT,
  'overflow-risk': Status.INVALID_ARGUMENT,
  'decryption-failed': Status.INVALID_ARGUMENT,
  unauthenticated: Status.UNAUTHENTICATED,
  'permission-denied': Status.PERMISSION_DENIED,
  'key-already-bound': Status.ALREADY_EXISTS,
  'insecure-keyfile': Status.FAILED_PRECONDITION,
  'enrollment-refused': Status.PERMISSION_DENIED,
  'not-found': Status.NOT_FOUND,
  'too-few-clients': Status.FAILED_PRECONDITION,
  unavailable: Status.UNAVAILABLE,
  'hash-mismatch': Status.FAILED_PRECONDITION,
  'unknown-key': Status.PERMISSION_DENIED,
  'expired': Status.FAILED_PRECONDITION,
  'rollback': Status.FAILED_PRECONDITION,
  'registry-mismatch': Status.FAILED_PRECONDITION,
  'backup-behind': Status.FAILED_PRECONDITION,
  'malformed': Status.INVALID_ARGUMENT,
  'approval-required': Status.FAILED_PRECONDITION,
  'failed-precondition': Status.FAILED_PRECONDITION,
  'replayed-round': Status.FAILED_PRECONDITION,
  'round-out-of-range': Status.FAILED_PRECONDITION,
  'model-rollback': Status.FAILED_PRECONDITION,
  'input-reused': Status.FAILED_PRECONDITION,
  'manifest-required': Status.FAILED_PRECONDITION,
  'parameters-mismatch': Status.INVALID_ARGUMENT,
  'no-input': Status.FAILED_PRECONDITION,
  'upload-slot-required': Status.FAILED_PRECONDITION,
  'trainer-failed': Status.FAILED_PRECONDITION,
  'trainer-unavailable': Status.FAILED_PRECONDITION,
  'privacy-budget': Status.FAILED_PRECONDITION,
};

/** The gRPC status code for an error code. */
export function grpcStatusOf(code: ErrorCode): Status {
  return GRPC_STATUS[code];
}

/**
 * The status a handler reports for `err`. An `AegisError` keeps its message (by contract it
 * names no key material, only names, counts and lengths) and its reason code; any other error
 * becomes INTERNAL with a fixed message, so stack traces and library messages never leave the
 * process.
 */
export function toServiceError(err: unknown): ServiceError {
  const metadata = new Metadata();
  let code: Status = Status.INTERNAL;
  let details = 'internal error';
  if (isAegisError(err)) {
    code = GRPC_STATUS[err.code];
    details = err.message;
    metadata.set(REASON_KEY, err.code);
    metadata.set(REASON_ENUM_KEY, errorReasonName(err.code));
  }
  return Object.assign(new Error(`${code} ${Status[code]}: ${details}`), { code, details, metadata });
}

const CODES = new Set<string>(Object.values(ErrorCode));

/** The reason code of a status a client received, or undefined (INTERNAL, transport errors). */
export function reasonOf(err: unknown): ErrorCode | undefined {
  if (typeof err !== 'object' || err === null || !('metadata' in err) || !(err.metadata instanceof Metadata)) return undefined;
  const [value] = err.metadata.get(REASON_KEY);
  return typeof value === 'string' && CODES.has(value) ? (value as ErrorCode) : undefined;
}
