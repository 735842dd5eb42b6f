/**
 * How many bytes a protocol message takes on the wire: the length of its protobuf envelope
 * (ClientEnvelope / ServerEnvelope), what a client sends or is sent per message — gRPC framing
 * and TLS records aside. The simulator reports these per client and phase.
 *
 * A masked input's size follows from its word count and bits alone (⌈count·bits / 8⌉ bytes of
 * packed vector), so it is computed without packing the vector: counting costs no O(m) work.
 * Every other message is small and is simply encoded.
 */
import { create, toBinary } from '@bufbuild/protobuf';
import { packedBytes } from '../crypto/bitpack.js';
import * as pb from '../gen/aegis/v1/secagg_pb.js';
import type { ClientMessage, ServerMessage } from '../protocol/messages.js';
import { toClientEnvelope, toServerEnvelope } from './convert.js';

/** Bytes of a protobuf varint holding `n` (0 <= n < 2^53). */
export function varintBytes(n: number): number {
  let b = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    b++;
  }
  return b;
}

/** Bytes of a length-delimited field with a one-byte tag (field numbers 1..15) and `len` bytes of content. */
const delimited = (len: number): number => 1 + varintBytes(len) + len;

/** The encoded size of the ClientEnvelope carrying `m`. */
export function clientMessageBytes(m: ClientMessage): number {
  if (m.type !== 'masked-input') return toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(m)).length;
  // Everything but the vector, encoded; the vector field (3) added by its known length.
  const rest = toBinary(pb.MaskedInputSchema, create(pb.MaskedInputSchema, { sessionId: m.sessionId, clientId: m.clientId, bits: m.bits, count: m.vector.length })).length;
  const vector = packedBytes(m.vector.length, m.bits);
  const inner = rest + (vector > 0 ? delimited(vector) : 0);
  return delimited(inner);
}

/** The encoded size of the ServerEnvelope carrying `m`. */
export const serverMessageBytes = (m: ServerMessage): number => toBinary(pb.ServerEnvelopeSchema, toServerEnvelope(m)).length;
