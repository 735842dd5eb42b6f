/** How the client reads the errors of its gRPC calls to the coordinator. */
import * as grpc from '@grpc/grpc-js';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import { reasonOf } from '../../shared/rpc/status.js';

/** A gRPC error as a typed AegisError: its reason code, or `unavailable` for transport failures. */
export function asAegisError(err: unknown): AegisError {
  if (isAegisError(err)) return err;
  const code = reasonOf(err);
  const details = (err as { details?: string }).details ?? (err instanceof Error ? err.message : String(err));
  if (code) return new AegisError(code, details);
  const status = (err as { code?: number }).code;
  if (status === grpc.status.UNAUTHENTICATED) return new AegisError(ErrorCode.Unauthenticated, details);
  if (status === grpc.status.RESOURCE_EXHAUSTED) return new AegisError(ErrorCode.TooLarge, details);
  return new AegisError(ErrorCode.Unavailable, `coordinator unreachable: ${details}`);
}

/** A transport failure (no reason code from the coordinator) that a retry may get past. */
export const isTransient = (err: unknown): boolean => {
  const s = (err as { code?: number }).code;
  return reasonOf(err) === undefined && (s === grpc.status.UNAVAILABLE || s === grpc.status.DEADLINE_EXCEEDED || s === grpc.status.CANCELLED || s === grpc.status.INTERNAL);
};
