/** shared/rpc/status.ts: one gRPC status per error code, the reason in trailing metadata. */
import { describe, expect, test } from '@jest/globals';
import { Metadata, status as Status } from '@grpc/grpc-js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { GRPC_STATUS, REASON_ENUM_KEY, REASON_KEY, reasonOf, toServiceError } from '../../shared/rpc/status.js';

const EXPECTED: Record<ErrorCode, Status> = {
  'wrong-phase': Status.FAILED_PRECONDITION,
  'already-exists': Status.ALREADY_EXISTS,
  'too-large': Status.RESOURCE_EXHAUSTED,
  'unknown-sender': Status.PERMISSION_DENIED,
  'session-mismatch': Status.FAILED_PRECONDITION,
  'bad-signature': Status.INVALID_ARGUMENT,
  'invalid-argument': Status.INVALID_ARGUMENT,
  'bad-key-length': Status.INVALID_ARGUMENT,
  'low-order-point': Status.INVALID_ARGUMENT,
  'malformed-shares': Status.INVALID_ARGUMENT,
  'non-finite-value': Status.INVALID_ARGUMENT,
  'overflow-risk': Status.INVALID_ARGUMENT,
  'decryption-failed': Status.INVALID_ARGUMENT,
  'insufficient-shares': Status.FAILED_PRECONDITION,
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

describe('error codes become gRPC statuses', () => {
  test.each(Object.values(ErrorCode))('%s maps to its status and carries its reason code', (code) => {
    expect(GRPC_STATUS[code]).toBe(EXPECTED[code]);
    const err = toServiceError(new AegisError(code, `a ${code} happened`));
    expect(err.code).toBe(EXPECTED[code]);
    expect(err.details).toBe(`a ${code} happened`);
    expect(err.metadata.get(REASON_KEY)).toEqual([code]);
    expect(err.metadata.get(REASON_ENUM_KEY)).toEqual([`ERROR_REASON_${code.toUpperCase().replaceAll('-', '_')}`]);
    expect(reasonOf(err)).toBe(code);
  });

  test('any other error is INTERNAL with a fixed message and no reason', () => {
    const err = toServiceError(new Error('secret key 0123abcd leaked into a message'));
    expect(err.code).toBe(Status.INTERNAL);
    expect(err.details).toBe('internal error');
    expect(err.message).not.toContain('0123abcd');
    expect(reasonOf(err)).toBeUndefined();
  });

  test('reasonOf ignores missing or unknown reason codes', () => {
    const md = new Metadata();
    md.set(REASON_KEY, 'not-a-code');
    expect(reasonOf({ metadata: md })).toBeUndefined();
    expect(reasonOf(new Error('x'))).toBeUndefined();
    expect(reasonOf(null)).toBeUndefined();
  });
});
