/**
 * shared/rpc/convert.ts: every protocol message survives TS -> protobuf -> wire bytes ->
 * protobuf -> TS unchanged (fast-check for contents), the vocabulary enums mirror the string
 * constants one to one, and malformed protobuf content is refused with 'invalid-argument'.
 */
import { describe, expect, test } from '@jest/globals';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { ErrorCode, isAegisError } from '../../shared/errors.js';
import type * as M from '../../shared/protocol/messages.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { AbortReasonSchema, ErrorReasonSchema, PhaseSchema, type ErrorReason } from '../../shared/gen/aegis/v1/vocabulary_pb.js';
import {
  abortReasonFromProto,
  abortReasonToProto,
  errorReasonFromProto,
  errorReasonName,
  errorReasonToProto,
  fromClientEnvelope,
  fromServerEnvelope,
  maskedInputFromProto,
  phaseFromProto,
  phaseToProto,
  toClientEnvelope,
  toServerEnvelope,
  vectorFromBytes,
  vectorToBytes,
} from '../../shared/rpc/convert.js';

const bytes = (max = 80) => fc.uint8Array({ maxLength: max }).map((b) => new Uint8Array(b));
const id = fc.string({ maxLength: 12 });
const ids = fc.array(id, { maxLength: 6 });
const round = fc.record({ manifestHash: bytes(32), roundIndex: fc.nat({ max: 0xffffffff }) });
const shares = fc.array(fc.record({ peer: id, ciphertext: bytes() }), { maxLength: 5 });
const revealed = fc.array(fc.record({ owner: id, value: bytes(33) }), { maxLength: 5 });
// A masked input: r in 1..32 and words of Z_{2^r}, any count (bit-packed on the wire).
const masked = fc
  .integer({ min: 1, max: 32 })
  .chain((bits) => fc.record({ bits: fc.constant(bits), vector: fc.array(fc.nat({ max: 2 ** bits - 1 }), { maxLength: 64 }).map((a) => Uint32Array.from(a)) }));

const clientMessages: fc.Arbitrary<M.ClientMessage> = fc.oneof(
  fc.record({ type: fc.constant('advertise-keys' as const), round, clientId: id, cPk: bytes(32), sPk: bytes(32), view: bytes(32), signature: bytes(64) }),
  fc.record({ type: fc.constant('decline' as const), round, clientId: id, reason: fc.constantFrom(...Object.values(ErrorCode)) }),
  fc.record({ type: fc.constant('share-keys' as const), sessionId: bytes(32), clientId: id, shares }),
  fc.tuple(fc.record({ type: fc.constant('masked-input' as const), sessionId: bytes(32), clientId: id }), masked).map(([m, v]) => ({ ...m, ...v })),
  fc.record({ type: fc.constant('consistency-signature' as const), sessionId: bytes(32), clientId: id, signature: bytes(64) }),
  fc.record({ type: fc.constant('unmask-response' as const), sessionId: bytes(32), clientId: id, keyShares: revealed, selfMaskShares: revealed }),
);

const serverMessages: fc.Arbitrary<M.ServerMessage> = fc.oneof(
  fc.record({
    type: fc.constant('advertise-broadcast' as const),
    round,
    entries: fc.array(fc.record({ clientId: id, cPk: bytes(32), sPk: bytes(32), view: bytes(32), signature: bytes(64) }), { maxLength: 5 }),
  }),
  fc.record({ type: fc.constant('share-broadcast' as const), sessionId: bytes(32), u2: ids, shares }),
  fc.record({ type: fc.constant('consistency-request' as const), sessionId: bytes(32), u3: ids }),
  fc.record({
    type: fc.constant('unmask-request' as const),
    sessionId: bytes(32),
    u3: ids,
    signatures: fc.array(fc.record({ clientId: id, signature: bytes(64) }), { maxLength: 5 }),
    keyShareOf: ids,
    selfMaskShareOf: ids,
  }),
);

function expectInvalid(fn: () => unknown): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(isAegisError(caught, ErrorCode.InvalidArgument)).toBe(true);
}

describe('every protocol message survives the wire unchanged', () => {
  test('client messages round-trip through ClientEnvelope bytes', () => {
    fc.assert(
      fc.property(clientMessages, (m) => {
        const wire = toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(m));
        expect(fromClientEnvelope(fromBinary(pb.ClientEnvelopeSchema, wire))).toEqual(m);
      }),
      { numRuns: 300 },
    );
  });

  test('server messages round-trip through ServerEnvelope bytes', () => {
    fc.assert(
      fc.property(serverMessages, (m) => {
        const wire = toBinary(pb.ServerEnvelopeSchema, toServerEnvelope(m));
        expect(fromServerEnvelope(fromBinary(pb.ServerEnvelopeSchema, wire))).toEqual(m);
      }),
      { numRuns: 300 },
    );
  });

  test('each of the ten message types is covered', () => {
    const seen = new Set<string>();
    fc.assert(fc.property(clientMessages, (m) => void seen.add(m.type)), { numRuns: 200 });
    fc.assert(fc.property(serverMessages, (m) => void seen.add(m.type)), { numRuns: 200 });
    expect(seen.size).toBe(10);
  });

  test('the vector travels as little-endian uint32 words', () => {
    const b = vectorToBytes(Uint32Array.from([1, 0xdeadbeef]));
    expect([...b]).toEqual([1, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
    // Decoding an unaligned slice still yields the right words.
    const padded = new Uint8Array(9);
    padded.set(b, 1);
    expect([...vectorFromBytes(padded.subarray(1))]).toEqual([1, 0xdeadbeef]);
  });

  test('round lifecycle envelopes carry no protocol message', () => {
    const start = create(pb.ServerEnvelopeSchema, { message: { case: 'roundStart', value: {} } });
    const outcome = create(pb.ServerEnvelopeSchema, { message: { case: 'roundOutcome', value: { ok: true } } });
    expect(fromServerEnvelope(start)).toBeUndefined();
    expect(fromServerEnvelope(outcome)).toBeUndefined();
  });
});

describe('malformed protobuf content is refused as invalid-argument', () => {
  test('a masked input whose packing does not match its bits and count: another length, set padding bits, bits outside 1..32', () => {
    // 3 words of 32 bits take 12 bytes; of 5 bits, 2 bytes (one padding bit).
    for (const n of [1, 2, 3, 5, 7, 11, 13, 401]) {
      expectInvalid(() => maskedInputFromProto(create(pb.MaskedInputSchema, { vector: new Uint8Array(n), bits: 32, count: 3 })));
    }
    expect(maskedInputFromProto(create(pb.MaskedInputSchema, { vector: new Uint8Array(2), bits: 5, count: 3 })).vector).toEqual(new Uint32Array(3));
    expectInvalid(() => maskedInputFromProto(create(pb.MaskedInputSchema, { vector: Uint8Array.from([0, 0x80]), bits: 5, count: 3 })));
    for (const bits of [0, 33, 1000]) expectInvalid(() => maskedInputFromProto(create(pb.MaskedInputSchema, { vector: new Uint8Array(0), bits, count: 0 })));
    // No `bits` at all (the field's default, 0): refused, not read as 32-bit words.
    expectInvalid(() => maskedInputFromProto(create(pb.MaskedInputSchema, { vector: new Uint8Array(12), count: 3 })));
  });

  test('a masked input travels bit-packed: ⌈count·bits/8⌉ bytes of vector, with its bits and count beside them', () => {
    const m: M.MaskedInput = { type: 'masked-input', sessionId: new Uint8Array(32), clientId: 'a', vector: Uint32Array.from({ length: 1001 }, (_, i) => (i * 7919) % 2 ** 25), bits: 25 };
    const env = toClientEnvelope(m).message;
    expect(env.case).toBe('maskedInput');
    if (env.case !== 'maskedInput') return;
    expect(env.value.vector.length).toBe(Math.ceil((1001 * 25) / 8));
    expect([env.value.bits, env.value.count]).toEqual([25, 1001]);
    expect(fromClientEnvelope(fromBinary(pb.ClientEnvelopeSchema, toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(m))))).toEqual(m);
  });

  test('an empty client or server envelope', () => {
    expectInvalid(() => fromClientEnvelope(create(pb.ClientEnvelopeSchema)));
    expectInvalid(() => fromServerEnvelope(create(pb.ServerEnvelopeSchema)));
  });

  test('an advertisement or broadcast without its round reference', () => {
    const ak = create(pb.ClientEnvelopeSchema, { message: { case: 'advertiseKeys', value: { clientId: 'a' } } });
    const ab = create(pb.ServerEnvelopeSchema, { message: { case: 'advertiseBroadcast', value: {} } });
    expectInvalid(() => fromClientEnvelope(ak));
    expectInvalid(() => fromServerEnvelope(ab));
  });

  test('a round index that is not a uint32', () => {
    for (const roundIndex of [-1, 1.5, 2 ** 32, Number.NaN]) {
      const m: M.AdvertiseKeys = {
        type: 'advertise-keys',
        round: { manifestHash: new Uint8Array(32), roundIndex },
        clientId: 'a',
        cPk: new Uint8Array(32),
        view: new Uint8Array(32),
        sPk: new Uint8Array(32),
        signature: new Uint8Array(64),
      };
      expectInvalid(() => toClientEnvelope(m));
    }
  });

  test('an unknown message type', () => {
    expectInvalid(() => toClientEnvelope({ type: 'nope' } as unknown as M.ClientMessage));
    expectInvalid(() => toServerEnvelope({ type: 'nope' } as unknown as M.ServerMessage));
  });
});

describe('the proto enums mirror the vocabulary exactly', () => {
  test('every phase maps to its PHASE_ value and back, and nothing else exists', () => {
    for (const p of Object.values(Phase)) expect(phaseFromProto(phaseToProto(p))).toBe(p);
    expect(PhaseSchema.values.length).toBe(Object.values(Phase).length + 1);
    expect(phaseToProto(Phase.AdvertiseKeys)).toBe(1);
    expectInvalid(() => phaseFromProto(0));
  });

  test('every abort reason maps to its ABORT_REASON_ value and back, and nothing else exists', () => {
    for (const r of Object.values(AbortReason)) expect(abortReasonFromProto(abortReasonToProto(r))).toBe(r);
    expect(AbortReasonSchema.values.length).toBe(Object.values(AbortReason).length + 1);
    expectInvalid(() => abortReasonFromProto(0));
  });

  test('every error code maps to its ERROR_REASON_ value and back, and nothing else exists', () => {
    for (const c of Object.values(ErrorCode)) expect(errorReasonFromProto(errorReasonToProto(c))).toBe(c);
    expect(ErrorReasonSchema.values.length).toBe(Object.values(ErrorCode).length + 1);
    expect(errorReasonName(ErrorCode.WrongPhase)).toBe('ERROR_REASON_WRONG_PHASE');
    expectInvalid(() => errorReasonFromProto(99 as ErrorReason));
  });
});
