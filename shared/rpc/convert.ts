/**
 * Pure mappings between the protocol's plain TypeScript messages (shared/protocol/messages.ts,
 * what the state machines see) and the generated protobuf messages (shared/gen/aegis/v1/), both
 * directions, plus the vocabulary enums (Phase, AbortReason, ErrorCode <-> ErrorReason).
 *
 * Wire choices and checks:
 * - `MaskedInput.vector` travels bit-packed at the message's `bits` (shared/crypto/bitpack.ts):
 *   ⌈count·bits / 8⌉ bytes with the word count beside them. Decoding refuses a `bits` outside
 *   1..32, a length other than that, and set padding bits, and yields words below 2^bits.
 * - Other vectors (a round's unmasked sum) travel as bytes: the Uint32Array's words in
 *   little-endian order, 4 per word. Encoding on a little-endian host is a view of the vector
 *   (no copy; the message must be serialized before the vector changes); decoding copies into a
 *   fresh, aligned Uint32Array. A byte length that is not a multiple of 4 is malformed.
 * - Decoding rejects what the proto cannot express as a valid protocol message: an empty oneof,
 *   a missing round reference, a ragged vector. Those throw `AegisError('invalid-argument')`.
 *   Key, signature and session-id lengths are left to the state machines: they decide whether
 *   a wrong length is an error for the sender or an abort reason for the receiver.
 */
import { create } from '@bufbuild/protobuf';
import type { DescEnum } from '@bufbuild/protobuf';
import { bytesOf } from '../bytes.js';
import { AegisError, ErrorCode } from '../errors.js';
import { packWords, unpackWords } from '../crypto/bitpack.js';
import type * as M from '../protocol/messages.js';
import { AbortReason, Phase } from '../protocol/vocabulary.js';
import * as pb from '../gen/aegis/v1/secagg_pb.js';
import {
  AbortReasonSchema,
  ErrorReasonSchema,
  PhaseSchema,
  type AbortReason as PbAbortReason,
  type ErrorReason as PbErrorReason,
  type Phase as PbPhase,
} from '../gen/aegis/v1/vocabulary_pb.js';

const invalid = (message: string): never => {
  throw new AegisError(ErrorCode.InvalidArgument, message);
};

// ---------------------------------------------------------------------------------------------
// Vocabulary: each string constant maps to the enum value named PREFIX_UPPER_SNAKE.

interface EnumMap<S extends string> {
  toPb: Map<S, number>;
  fromPb: Map<number, S>;
  names: Map<S, string>;
}

function enumMap<S extends string>(schema: DescEnum, prefix: string, values: readonly S[]): EnumMap<S> {
  const map: EnumMap<S> = { toPb: new Map(), fromPb: new Map(), names: new Map() };
  for (const s of values) {
    const name = `${prefix}_${s.toUpperCase().replaceAll('-', '_')}`;
    const v = schema.values.find((x) => x.name === name);
    if (!v) throw new Error(`${schema.typeName} has no value ${name} for '${s}'`);
    map.toPb.set(s, v.number);
    map.fromPb.set(v.number, s);
    map.names.set(s, name);
  }
  return map;
}

const PHASES = enumMap(PhaseSchema, 'PHASE', Object.values(Phase));
const ABORTS = enumMap(AbortReasonSchema, 'ABORT_REASON', Object.values(AbortReason));
const ERRORS = enumMap(ErrorReasonSchema, 'ERROR_REASON', Object.values(ErrorCode));

function fromEnum<S extends string>(map: EnumMap<S>, n: number, what: string): S {
  return map.fromPb.get(n) ?? invalid(`${what}: unknown or unspecified value ${n}`);
}

export const phaseToProto = (p: Phase): PbPhase => PHASES.toPb.get(p) as PbPhase;
export const phaseFromProto = (p: PbPhase): Phase => fromEnum(PHASES, p, 'phase');
export const abortReasonToProto = (r: AbortReason): PbAbortReason => ABORTS.toPb.get(r) as PbAbortReason;
export const abortReasonFromProto = (r: PbAbortReason): AbortReason => fromEnum(ABORTS, r, 'abort reason');
export const errorReasonToProto = (c: ErrorCode): PbErrorReason => ERRORS.toPb.get(c) as PbErrorReason;
export const errorReasonFromProto = (r: PbErrorReason): ErrorCode => fromEnum(ERRORS, r, 'error reason');
/** The enum value name of an error code: 'wrong-phase' -> 'ERROR_REASON_WRONG_PHASE'. */
export const errorReasonName = (c: ErrorCode): string => ERRORS.names.get(c) ?? 'ERROR_REASON_UNSPECIFIED';

// ---------------------------------------------------------------------------------------------
// Vectors: Uint32Array <-> little-endian bytes.

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** y_u as little-endian bytes (a view of the vector on little-endian hosts). */
export function vectorToBytes(v: Uint32Array): Uint8Array {
  if (!(v instanceof Uint32Array)) invalid('vector must be a Uint32Array');
  if (LITTLE_ENDIAN) return bytesOf(v);
  const out = new Uint8Array(v.byteLength);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < v.length; i++) dv.setUint32(4 * i, v[i]!, true);
  return out;
}

/** Little-endian bytes as a fresh Uint32Array; throws 'invalid-argument' unless length % 4 == 0. */
export function vectorFromBytes(b: Uint8Array): Uint32Array {
  if (b.length % 4 !== 0) invalid(`vector bytes must be a multiple of 4, got ${b.length}`);
  const out = new Uint32Array(b.length / 4);
  if (LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(b);
  } else {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = dv.getUint32(4 * i, true);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Shared pieces.

function roundToProto(r: M.RoundRef): pb.RoundRef {
  if (!Number.isInteger(r.roundIndex) || r.roundIndex < 0 || r.roundIndex > 0xffffffff) {
    invalid(`round index must be a uint32, got ${r.roundIndex}`);
  }
  return create(pb.RoundRefSchema, { manifestHash: r.manifestHash, roundIndex: r.roundIndex });
}

function roundFromProto(r: pb.RoundRef | undefined, what: string): M.RoundRef {
  if (r === undefined) return invalid(`${what}: missing round`);
  return { manifestHash: r.manifestHash, roundIndex: r.roundIndex };
}

const sharesToProto = (s: M.EncryptedShare[]) => s.map((x) => create(pb.EncryptedShareSchema, { peer: x.peer, ciphertext: x.ciphertext }));
const sharesFromProto = (s: pb.EncryptedShare[]): M.EncryptedShare[] => s.map((x) => ({ peer: x.peer, ciphertext: x.ciphertext }));
const revealedToProto = (s: M.RevealedShare[]) => s.map((x) => create(pb.RevealedShareSchema, { owner: x.owner, value: x.value }));
const revealedFromProto = (s: pb.RevealedShare[]): M.RevealedShare[] => s.map((x) => ({ owner: x.owner, value: x.value }));

// ---------------------------------------------------------------------------------------------
// C->S messages.

export function advertiseKeysToProto(m: M.AdvertiseKeys): pb.AdvertiseKeys {
  return create(pb.AdvertiseKeysSchema, { round: roundToProto(m.round), clientId: m.clientId, cPk: m.cPk, sPk: m.sPk, view: m.view, signature: m.signature });
}
export function advertiseKeysFromProto(m: pb.AdvertiseKeys): M.AdvertiseKeys {
  return { type: 'advertise-keys', round: roundFromProto(m.round, 'advertise keys'), clientId: m.clientId, cPk: m.cPk, sPk: m.sPk, view: m.view, signature: m.signature };
}

export function declineToProto(m: M.Decline): pb.Decline {
  return create(pb.DeclineSchema, { round: roundToProto(m.round), clientId: m.clientId, reason: errorReasonToProto(m.reason) });
}
export function declineFromProto(m: pb.Decline): M.Decline {
  return { type: 'decline', round: roundFromProto(m.round, 'decline'), clientId: m.clientId, reason: errorReasonFromProto(m.reason) };
}

export function shareKeysToProto(m: M.ShareKeys): pb.ShareKeys {
  return create(pb.ShareKeysSchema, { sessionId: m.sessionId, clientId: m.clientId, shares: sharesToProto(m.shares) });
}
export function shareKeysFromProto(m: pb.ShareKeys): M.ShareKeys {
  return { type: 'share-keys', sessionId: m.sessionId, clientId: m.clientId, shares: sharesFromProto(m.shares) };
}

export function maskedInputToProto(m: M.MaskedInput): pb.MaskedInput {
  if (!(m.vector instanceof Uint32Array)) invalid('vector must be a Uint32Array');
  return create(pb.MaskedInputSchema, { sessionId: m.sessionId, clientId: m.clientId, vector: packWords(m.vector, m.bits), bits: m.bits, count: m.vector.length });
}
export function maskedInputFromProto(m: pb.MaskedInput): M.MaskedInput {
  if (m.bits < 1 || m.bits > 32) invalid(`masked input: bits must be 1..32, got ${m.bits}`);
  return { type: 'masked-input', sessionId: m.sessionId, clientId: m.clientId, vector: unpackWords(m.vector, m.count, m.bits), bits: m.bits };
}

export function consistencySignatureToProto(m: M.ConsistencySignature): pb.ConsistencySignature {
  return create(pb.ConsistencySignatureSchema, { sessionId: m.sessionId, clientId: m.clientId, signature: m.signature });
}
export function consistencySignatureFromProto(m: pb.ConsistencySignature): M.ConsistencySignature {
  return { type: 'consistency-signature', sessionId: m.sessionId, clientId: m.clientId, signature: m.signature };
}

export function unmaskResponseToProto(m: M.UnmaskResponse): pb.UnmaskResponse {
  return create(pb.UnmaskResponseSchema, {
    sessionId: m.sessionId,
    clientId: m.clientId,
    keyShares: revealedToProto(m.keyShares),
    selfMaskShares: revealedToProto(m.selfMaskShares),
  });
}
export function unmaskResponseFromProto(m: pb.UnmaskResponse): M.UnmaskResponse {
  return {
    type: 'unmask-response',
    sessionId: m.sessionId,
    clientId: m.clientId,
    keyShares: revealedFromProto(m.keyShares),
    selfMaskShares: revealedFromProto(m.selfMaskShares),
  };
}

// ---------------------------------------------------------------------------------------------
// S->C messages.

export function advertiseBroadcastToProto(m: M.AdvertiseBroadcast): pb.AdvertiseBroadcast {
  return create(pb.AdvertiseBroadcastSchema, {
    round: roundToProto(m.round),
    entries: m.entries.map((e) =>
      create(pb.AdvertisedEntrySchema, { clientId: e.clientId, cPk: e.cPk, sPk: e.sPk, view: e.view, signature: e.signature, certificateDer: e.certificate ?? new Uint8Array(0) }),
    ),
  });
}
export function advertiseBroadcastFromProto(m: pb.AdvertiseBroadcast): M.AdvertiseBroadcast {
  return {
    type: 'advertise-broadcast',
    round: roundFromProto(m.round, 'advertise broadcast'),
    entries: m.entries.map((e) => {
      const entry: M.AdvertisedEntry = { clientId: e.clientId, cPk: e.cPk, sPk: e.sPk, view: e.view, signature: e.signature };
      if (e.certificateDer.length > 0) entry.certificate = e.certificateDer;
      return entry;
    }),
  };
}

export function shareBroadcastToProto(m: M.ShareBroadcast): pb.ShareBroadcast {
  return create(pb.ShareBroadcastSchema, { sessionId: m.sessionId, u2: m.u2, shares: sharesToProto(m.shares) });
}
export function shareBroadcastFromProto(m: pb.ShareBroadcast): M.ShareBroadcast {
  return { type: 'share-broadcast', sessionId: m.sessionId, u2: [...m.u2], shares: sharesFromProto(m.shares) };
}

export function consistencyRequestToProto(m: M.ConsistencyRequest): pb.ConsistencyRequest {
  return create(pb.ConsistencyRequestSchema, { sessionId: m.sessionId, u3: m.u3 });
}
export function consistencyRequestFromProto(m: pb.ConsistencyRequest): M.ConsistencyRequest {
  return { type: 'consistency-request', sessionId: m.sessionId, u3: [...m.u3] };
}

export function unmaskRequestToProto(m: M.UnmaskRequest): pb.UnmaskRequest {
  return create(pb.UnmaskRequestSchema, {
    sessionId: m.sessionId,
    u3: m.u3,
    signatures: m.signatures.map((s) => create(pb.SignerSignatureSchema, { clientId: s.clientId, signature: s.signature })),
    keyShareOf: m.keyShareOf,
    selfMaskShareOf: m.selfMaskShareOf,
  });
}
export function unmaskRequestFromProto(m: pb.UnmaskRequest): M.UnmaskRequest {
  return {
    type: 'unmask-request',
    sessionId: m.sessionId,
    u3: [...m.u3],
    signatures: m.signatures.map((s) => ({ clientId: s.clientId, signature: s.signature })),
    keyShareOf: [...m.keyShareOf],
    selfMaskShareOf: [...m.selfMaskShareOf],
  };
}

// ---------------------------------------------------------------------------------------------
// Envelopes.

/** A C->S protocol message in its envelope. */
export function toClientEnvelope(m: M.ClientMessage): pb.ClientEnvelope {
  switch (m.type) {
    case 'advertise-keys':
      return create(pb.ClientEnvelopeSchema, { message: { case: 'advertiseKeys', value: advertiseKeysToProto(m) } });
    case 'decline':
      return create(pb.ClientEnvelopeSchema, { message: { case: 'decline', value: declineToProto(m) } });
    case 'share-keys':
      return create(pb.ClientEnvelopeSchema, { message: { case: 'shareKeys', value: shareKeysToProto(m) } });
    case 'masked-input':
      return create(pb.ClientEnvelopeSchema, { message: { case: 'maskedInput', value: maskedInputToProto(m) } });
    case 'consistency-signature':
      return create(pb.ClientEnvelopeSchema, { message: { case: 'consistencySignature', value: consistencySignatureToProto(m) } });
    case 'unmask-response':
      return create(pb.ClientEnvelopeSchema, { message: { case: 'unmaskResponse', value: unmaskResponseToProto(m) } });
    default:
      return invalid(`unknown client message type '${(m as { type?: unknown }).type}'`);
  }
}

/** The protocol message inside a C->S envelope; throws 'invalid-argument' when it is empty. */
export function fromClientEnvelope(e: pb.ClientEnvelope): M.ClientMessage {
  const { message } = e;
  switch (message.case) {
    case 'advertiseKeys':
      return advertiseKeysFromProto(message.value);
    case 'decline':
      return declineFromProto(message.value);
    case 'shareKeys':
      return shareKeysFromProto(message.value);
    case 'maskedInput':
      return maskedInputFromProto(message.value);
    case 'consistencySignature':
      return consistencySignatureFromProto(message.value);
    case 'unmaskResponse':
      return unmaskResponseFromProto(message.value);
    default:
      return invalid('client envelope carries no message');
  }
}

/** An S->C protocol message in its envelope. */
export function toServerEnvelope(m: M.ServerMessage): pb.ServerEnvelope {
  switch (m.type) {
    case 'advertise-broadcast':
      return create(pb.ServerEnvelopeSchema, { message: { case: 'advertiseBroadcast', value: advertiseBroadcastToProto(m) } });
    case 'share-broadcast':
      return create(pb.ServerEnvelopeSchema, { message: { case: 'shareBroadcast', value: shareBroadcastToProto(m) } });
    case 'consistency-request':
      return create(pb.ServerEnvelopeSchema, { message: { case: 'consistencyRequest', value: consistencyRequestToProto(m) } });
    case 'unmask-request':
      return create(pb.ServerEnvelopeSchema, { message: { case: 'unmaskRequest', value: unmaskRequestToProto(m) } });
    default:
      return invalid(`unknown server message type '${(m as { type?: unknown }).type}'`);
  }
}

/**
 * The protocol message inside an S->C envelope, or undefined for the two round-lifecycle
 * messages (RoundStart, RoundOutcome) that the client's I/O layer handles from the envelope
 * itself. Throws 'invalid-argument' when the envelope is empty.
 */
export function fromServerEnvelope(e: pb.ServerEnvelope): M.ServerMessage | undefined {
  const { message } = e;
  switch (message.case) {
    case 'advertiseBroadcast':
      return advertiseBroadcastFromProto(message.value);
    case 'shareBroadcast':
      return shareBroadcastFromProto(message.value);
    case 'consistencyRequest':
      return consistencyRequestFromProto(message.value);
    case 'unmaskRequest':
      return unmaskRequestFromProto(message.value);
    case 'roundStart':
    case 'roundOutcome':
      return undefined;
    default:
      return invalid('server envelope carries no message');
  }
}

// ---------------------------------------------------------------------------------------------
// Round lifecycle events (RoundStart, RoundOutcome) and any S->C event.

/** Any S->C event (protocol message, round start, round outcome) in its envelope. */
export function toEventEnvelope(e: M.ServerEvent): pb.ServerEnvelope {
  if (e.type === 'round-start') {
    const p = e.params;
    const d = e.deadlines;
    const parameters = create(pb.RoundParametersSchema, {
      dim: p.dim,
      cohort: p.cohort,
      threshold: p.threshold,
      neighbors: p.neighbors,
      clip: p.clip,
      bits: p.bits,
      advertiseKeysDeadlineMs: d?.advertiseMs ?? 0,
      shareKeysDeadlineMs: d?.shareMs ?? 0,
      maskedInputDeadlineMs: d?.maskedMs ?? 0,
      consistencyCheckDeadlineMs: d?.consistencyMs ?? 0,
      unmaskingDeadlineMs: d?.unmaskMs ?? 0,
    });
    const start = create(pb.RoundStartSchema, { round: roundToProto(e.round), parameters });
    if (e.manifestJson) start.manifestJson = e.manifestJson;
    if (e.signedManifest) start.signedManifest = e.signedManifest;
    if (e.model) start.model = create(pb.ModelVersionSchema, { version: e.model.version, sha256: e.model.sha256 });
    if (e.group) start.group = create(pb.RoundGroupSchema, { index: e.group.index, count: e.group.count, members: e.group.members });
    return create(pb.ServerEnvelopeSchema, { message: { case: 'roundStart', value: start } });
  }
  if (e.type === 'round-outcome') {
    const value = create(pb.RoundOutcomeSchema, {
      round: roundToProto(e.round),
      ok: e.ok,
      abortReason: !e.ok && e.reason !== undefined && ABORTS.toPb.has(e.reason as AbortReason) ? abortReasonToProto(e.reason as AbortReason) : 0,
      phase: phaseToProto(e.ok ? Phase.Completed : Phase.Aborted),
      poisoningFlagged: e.poisoningFlagged === true,
    });
    return create(pb.ServerEnvelopeSchema, { message: { case: 'roundOutcome', value } });
  }
  return toServerEnvelope(e);
}

/**
 * The event inside an S->C envelope. Round parameters are passed on as sent: the client's state
 * machine validates them (and sits out a round whose parameters it refuses). Throws
 * 'invalid-argument' for an empty envelope or a round start without parameters.
 */
export function fromEventEnvelope(e: pb.ServerEnvelope): M.ServerEvent {
  const { message } = e;
  if (message.case === 'roundStart') {
    const p = message.value.parameters ?? invalid('round start without parameters');
    const deadlines =
      p.advertiseKeysDeadlineMs > 0
        ? {
            advertiseMs: p.advertiseKeysDeadlineMs,
            shareMs: p.shareKeysDeadlineMs,
            maskedMs: p.maskedInputDeadlineMs,
            consistencyMs: p.consistencyCheckDeadlineMs,
            unmaskMs: p.unmaskingDeadlineMs,
          }
        : undefined;
    const ev: M.RoundStart = {
      type: 'round-start',
      round: roundFromProto(message.value.round, 'round start'),
      params: { dim: p.dim, cohort: p.cohort, threshold: p.threshold, neighbors: p.neighbors, clip: p.clip, bits: p.bits },
    };
    if (deadlines) ev.deadlines = deadlines;
    if (message.value.manifestJson.length > 0) ev.manifestJson = message.value.manifestJson;
    if (message.value.signedManifest.length > 0) ev.signedManifest = message.value.signedManifest;
    const model = message.value.model;
    if (model) {
      if (model.sha256.length !== 32) invalid('model hash must be 32 bytes');
      ev.model = { version: model.version, sha256: model.sha256 };
    }
    const group = message.value.group;
    if (group) ev.group = { index: group.index, count: group.count, members: [...group.members] };
    return ev;
  }
  if (message.case === 'roundOutcome') {
    const v = message.value;
    const ev: M.RoundOutcome = { type: 'round-outcome', round: roundFromProto(v.round, 'round outcome'), ok: v.ok };
    if (!v.ok) ev.reason = ABORTS.fromPb.get(v.abortReason) ?? 'unspecified';
    if (v.poisoningFlagged) ev.poisoningFlagged = true;
    return ev;
  }
  return fromServerEnvelope(e) ?? invalid('server envelope carries no message');
}
