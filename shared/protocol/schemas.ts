/**
 * Shape checks of every client message (zod), run by the coordinator before any handler reads
 * a field: a malformed message is refused with `invalid-argument` and never reaches the state.
 * The transport layer's protobuf decoding produces exactly these shapes.
 */
import { z } from 'zod';
import { AegisError, ErrorCode } from '../errors.js';
import type { ClientMessage } from './messages.js';

const bytes = z.instanceof(Uint8Array);
const id = z.string().min(1).max(128);
const roundRef = z.object({ manifestHash: bytes, roundIndex: z.number().int().min(0).max(0xffffffff) });
const share = z.object({ peer: id, ciphertext: bytes });
const revealed = z.object({ owner: id, value: bytes });

const ClientMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('advertise-keys'), round: roundRef, clientId: id, cPk: bytes, sPk: bytes, view: bytes, signature: bytes }),
  z.object({ type: z.literal('decline'), round: roundRef, clientId: id, reason: z.enum(Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]]) }),
  z.object({ type: z.literal('share-keys'), sessionId: bytes, clientId: id, shares: z.array(share).max(10000) }),
  z.object({ type: z.literal('masked-input'), sessionId: bytes, clientId: id, vector: z.instanceof(Uint32Array), bits: z.number().int().min(1).max(32) }),
  z.object({ type: z.literal('consistency-signature'), sessionId: bytes, clientId: id, signature: bytes }),
  z.object({ type: z.literal('unmask-response'), sessionId: bytes, clientId: id, keyShares: z.array(revealed).max(10000), selfMaskShares: z.array(revealed).max(10000) }),
]);

/** Throws `invalid-argument` unless `msg` has the shape of a client message. */
export function assertClientMessage(msg: unknown): asserts msg is ClientMessage {
  const r = ClientMessageSchema.safeParse(msg);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new AegisError(ErrorCode.InvalidArgument, `malformed message: ${issue?.path.join('.') || 'message'} ${issue?.message ?? ''}`.trim());
  }
}
