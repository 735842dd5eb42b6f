import { describe, expect, test } from '@jest/globals';
import { toBinary } from '@bufbuild/protobuf';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { MaskedInput } from '../../shared/protocol/messages.js';
import { toClientEnvelope } from '../../shared/rpc/convert.js';
import { clientMessageBytes, serverMessageBytes, varintBytes } from '../../shared/rpc/wire-bytes.js';

describe('bytes of a protocol message on the wire', () => {
  test('a masked input: the size computed from its count and bits is the encoded envelope\'s, across the varint boundaries of its lengths', () => {
    // Vector lengths around 127/128 and 16383/16384 bytes, whose length prefixes grow a byte.
    for (const [count, bits] of [[0, 7], [1, 1], [36, 28], [37, 28], [127, 8], [128, 8], [4680, 28], [4682, 28], [16383, 8], [16384, 8], [100_001, 25], [100_001, 32]] as const) {
      const m: MaskedInput = { type: 'masked-input', sessionId: new Uint8Array(32).fill(3), clientId: 'client-042', vector: Uint32Array.from({ length: count }, (_, i) => i % 2 ** bits), bits };
      expect(clientMessageBytes(m)).toBe(toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(m)).length);
    }
  });

  test('other messages are their encoded envelopes', () => {
    const sig = { type: 'consistency-signature' as const, sessionId: new Uint8Array(32), clientId: 'c', signature: new Uint8Array(64) };
    expect(clientMessageBytes(sig)).toBe(toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(sig)).length);
    const req = { type: 'consistency-request' as const, sessionId: new Uint8Array(32), u3: ['a', 'b', 'c'] };
    // tag + length + (session id 2 + 32, three 1-character ids 3 each)
    expect(serverMessageBytes(req)).toBe(2 + 34 + 9);
  });

  test('varints', () => {
    expect([0, 127, 128, 16383, 16384, 2 ** 21 - 1, 2 ** 21, 2 ** 32].map(varintBytes)).toEqual([1, 1, 2, 2, 3, 3, 4, 5]);
  });
});
