/**
 * Hostile inputs against a running round, over real gRPC and TLS 1.3 on loopback: one enrolled
 * member (its own certificate and tokens, so every call passes authentication) sends random
 * bytes, truncated and wrongly typed protobuf, oversized messages, vectors too short, ragged
 * and too long, keys of the wrong length or of small order, bad signatures, other rounds' and
 * sessions' ids, messages for the wrong phase, and exact and conflicting resends. Its honest
 * runner holds its real messages back meanwhile, so the round sits in a known phase. Each
 * refusal is asserted as it arrives (status code and `aegis-reason`); afterwards the health
 * service still answers SERVING and the round completes with the exact sum.
 */
import { packedBytes } from '../../shared/crypto/bitpack.js';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import tls from 'node:tls';
import { create, toBinary } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import type { ClientRunner } from '../../client/agent/connection.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { ErrorCode } from '../../shared/errors.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { AdvertiseKeys, ClientMessage, MaskedInput } from '../../shared/protocol/messages.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { phaseToProto, toClientEnvelope } from '../../shared/rpc/convert.js';
import { callUnary } from '../../shared/rpc/service.js';
import { SMALL_ORDER_X25519_HEX } from '../support/codes.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { credentialsOf, healthStatus, issueTokens, holdBefore, dropBefore, rawSendClient, refusal, releaseAll, secAgg, send, TokenPool, type Refusal, type SecAggClient } from '../support/raw-calls.js';

const MAX_MESSAGE_BYTES = 256 * 1024;
const DIM = 1000;
const previousMinVersion = tls.DEFAULT_MIN_VERSION;

let c: Coordinator;
let members: Enrolled[];
let runners: ClientRunner[] = [];
let attacker: SecAggClient;
let raw: ReturnType<typeof rawSendClient>;
let pool: TokenPool;

beforeAll(async () => {
  c = await startCoordinator({ maxMessageBytes: MAX_MESSAGE_BYTES });
  members = await enrollClients(c, 4, 'member');
  const creds = credentialsOf(c.ca.certificatePem, members[0]!);
  attacker = secAgg(c.address, creds);
  raw = rawSendClient(c.address, creds);
  pool = new TokenPool(attacker);
});

afterAll(async () => {
  releaseAll();
  await Promise.all(runners.map((r) => r.stop()));
  attacker?.close();
  raw?.close();
  await c.close();
  tls.DEFAULT_MIN_VERSION = previousMinVersion;
});

/** Deterministic "random" bytes (the same every run, so the statuses are too). */
function noise(label: string, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i * 32 < length; i++) out.set(createHash('sha256').update(`${label}/${i}`).digest().subarray(0, Math.min(32, length - i * 32)), i * 32);
  return out;
}

const encode = (m: ClientMessage): Uint8Array => toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(m));
const sendMsg = async (m: ClientMessage): Promise<Refusal> => refusal(send(attacker, toClientEnvelope(m), await pool.next()));
const sendBytes = async (b: Uint8Array): Promise<Refusal> => refusal(raw.send(b, await pool.next()));
const status = (code: grpc.status, reason: ErrorCode | undefined) => ({ code, reason });
/** Takes one of the round's upload slots as the attacker, then sends. */
const withSlot = async <T>(sendIt: () => Promise<T>): Promise<T> => {
  await callUnary(attacker.acquireUpload.bind(attacker), create(pb.AcquireUploadRequestSchema, {}), await pool.next());
  return sendIt();
};
const pick = (r: Refusal) => ({ code: r.code, reason: r.reason });

async function serving(): Promise<void> {
  const creds = credentialsOf(c.ca.certificatePem, members[0]!);
  await expect(healthStatus(c.address, creds)).resolves.toBe('SERVING');
  await expect(healthStatus(c.address, creds, 'aegis.v1.SecAgg')).resolves.toBe('SERVING');
}

describe('a hostile member during a live round', () => {
  test('every hostile input is refused with its status and reason, the coordinator stays SERVING, and the round completes with the exact sum', async () => {
    // Several rounds with the same inputs: the clients opt in to contribute them again.
    runners = startRunners(c, members, DIM, undefined, () => ({ inputReuse: true }));
    const [att, slow] = [runners[0]!, runners[1]!];
    const attAdvertise = holdBefore(att, 'advertise-keys');
    const slowAdvertise = holdBefore(slow, 'advertise-keys');
    const attMasked = holdBefore(att, 'masked-input');
    const slowMasked = holdBefore(slow, 'masked-input');
    await waitFor(() => members.every((m) => c.connectedClients().includes(m.clientId)), 20_000, 'four subscribers');
    const deadlines = { advertiseMs: 20_000, shareMs: 20_000, maskedMs: 20_000, consistencyMs: 20_000, unmaskMs: 20_000 };
    await c.launch(manifest({ round: { dim: DIM, cohort: 4, neighbors: 3 }, deadlines }));

    // ---- Phase 0 (AdvertiseKeys): the attacker's and one honest member's keys are held back.
    const adv = (await attAdvertise.reached) as AdvertiseKeys;
    await slowAdvertise.reached;
    expect(c.statusOf('job-1').phase).toBe(phaseToProto(Phase.AdvertiseKeys));
    const good = encode(adv);

    // Bytes that are not protobuf at all: the lenient request deserializer (shared/rpc/service.ts)
    // marks them and the handler answers INVALID_ARGUMENT with its reason (grpc-js alone would say
    // INTERNAL without one).
    expect(pick(await sendBytes(noise('random', 64)))).toEqual(status(grpc.status.INVALID_ARGUMENT, 'invalid-argument'));
    expect(pick(await sendBytes(new Uint8Array(64).fill(0xff)))).toEqual(status(grpc.status.INVALID_ARGUMENT, 'invalid-argument'));
    // A truncated envelope (the attacker's real one cut in half): the same.
    expect(pick(await sendBytes(good.subarray(0, good.length >> 1)))).toEqual(status(grpc.status.INVALID_ARGUMENT, 'invalid-argument'));
    // Field 1 (advertise_keys, a message) sent as a varint: a wire-type mismatch, the same.
    expect(pick(await sendBytes(Uint8Array.from([0x08, 0x01])))).toEqual(status(grpc.status.INVALID_ARGUMENT, 'invalid-argument'));
    // Well-formed protobuf that is not a protocol message: an empty envelope.
    expect(pick(await sendBytes(new Uint8Array(0)))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.InvalidArgument));
    // Above the server's max_receive_message_length, and above what a Send of this round takes:
    // RESOURCE_EXHAUSTED with the reason too-large, from the length prefix.
    const oversized = await sendBytes(noise('oversized', MAX_MESSAGE_BYTES + 1024));
    expect(pick(oversized)).toEqual(status(grpc.status.RESOURCE_EXHAUSTED, ErrorCode.TooLarge));

    // Wrong phase, another round, another client.
    const maskedNow: MaskedInput = { type: 'masked-input', sessionId: new Uint8Array(32), clientId: adv.clientId, vector: new Uint32Array(DIM + 1), bits: 32 };
    expect(pick(await sendMsg(maskedNow))).toEqual(status(grpc.status.FAILED_PRECONDITION, ErrorCode.WrongPhase));
    expect(pick(await sendMsg({ type: 'consistency-signature', sessionId: new Uint8Array(32), clientId: adv.clientId, signature: new Uint8Array(64) }))).toEqual(
      status(grpc.status.FAILED_PRECONDITION, ErrorCode.WrongPhase),
    );
    expect(pick(await sendMsg({ ...adv, round: { ...adv.round, roundIndex: 1 } }))).toEqual(status(grpc.status.FAILED_PRECONDITION, ErrorCode.SessionMismatch));
    expect(pick(await sendMsg({ ...adv, round: { manifestHash: noise('other-job', 32), roundIndex: 0 } }))).toEqual(status(grpc.status.FAILED_PRECONDITION, ErrorCode.SessionMismatch));
    expect(pick(await sendMsg({ ...adv, clientId: members[2]!.clientId }))).toEqual(status(grpc.status.PERMISSION_DENIED, ErrorCode.UnknownSender));
    expect(pick(await sendMsg({ ...adv, clientId: 'no-such-member' }))).toEqual(status(grpc.status.PERMISSION_DENIED, ErrorCode.UnknownSender));

    // Malformed, wrong-length and out-of-range fields.
    expect(pick(await sendMsg({ ...adv, clientId: '' }))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.InvalidArgument));
    expect(pick(await sendMsg({ ...adv, cPk: adv.cPk.subarray(0, 31) }))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.BadKeyLength));
    expect(pick(await sendMsg({ ...adv, sPk: new Uint8Array(33) }))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.BadKeyLength));
    expect(pick(await sendMsg({ ...adv, cPk: new Uint8Array(Buffer.from(SMALL_ORDER_X25519_HEX[2], 'hex')) }))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.LowOrderPoint));
    expect(pick(await sendMsg({ ...adv, sPk: adv.cPk }))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.InvalidArgument));
    const flipped = new Uint8Array(adv.signature);
    flipped[0]! ^= 1;
    expect(pick(await sendMsg({ ...adv, signature: flipped }))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.BadSignature));
    expect(pick(await sendMsg({ ...adv, signature: adv.signature.subarray(0, 10) }))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.BadSignature));
    await serving();

    // The attacker's honest advertisement goes through; resending it exactly, or changed, is ALREADY_EXISTS.
    attAdvertise.release();
    await attAdvertise.sent;
    expect(c.statusOf('job-1').phase).toBe(phaseToProto(Phase.AdvertiseKeys));
    const dup = await sendMsg(adv);
    expect(pick(dup)).toEqual(status(grpc.status.ALREADY_EXISTS, ErrorCode.AlreadyExists));
    expect(dup.details).toMatch(/identical resend changes nothing/);
    const conflicting = await sendMsg({ ...adv, signature: flipped });
    expect(pick(conflicting)).toEqual(status(grpc.status.ALREADY_EXISTS, ErrorCode.AlreadyExists));
    expect(conflicting.details).toMatch(/conflicting resend refused/);
    slowAdvertise.release();

    // ---- Phase 2 (MaskedInput): both masked inputs held back again.
    const masked = (await attMasked.reached) as MaskedInput;
    await slowMasked.reached;
    expect(c.statusOf('job-1').phase).toBe(phaseToProto(Phase.MaskedInput));
    const m = (over: Partial<MaskedInput>): MaskedInput => ({ ...masked, ...over });
    // Without an upload slot a masked input is refused whatever it holds.
    expect(pick(await sendMsg(masked))).toEqual(status(grpc.status.FAILED_PRECONDITION, ErrorCode.UploadSlotRequired));
    // With one (each refusal gives it back, so it is asked for again before every send):
    // a vector far longer than dim + 1 is refused from its length prefix, more than a Send of
    // this round takes even with a slot.
    const huge = await withSlot(() => sendMsg(m({ vector: new Uint32Array(50_000) })));
    expect(pick(huge)).toEqual(status(grpc.status.RESOURCE_EXHAUSTED, ErrorCode.TooLarge));
    expect(huge.details).toMatch(/larger than aegis\.v1\.SecAgg\.Send takes \(\d+ bytes\)/);
    // One word too many, or too few: the state machine's too-large and invalid-argument.
    expect(pick(await withSlot(() => sendMsg(m({ vector: new Uint32Array(DIM + 2) }))))).toEqual(status(grpc.status.RESOURCE_EXHAUSTED, ErrorCode.TooLarge));
    expect(pick(await withSlot(() => sendMsg(m({ vector: new Uint32Array(DIM) }))))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.InvalidArgument));
    expect(pick(await withSlot(() => sendMsg(m({ vector: new Uint32Array(0) }))))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.InvalidArgument));
    // A ragged packing (one byte more than its count and bits take), and a vector without its
    // bits, straight on the wire.
    const packed = (vector: Uint8Array, bits: number): Uint8Array => toBinary(pb.ClientEnvelopeSchema, create(pb.ClientEnvelopeSchema, { message: { case: 'maskedInput', value: { sessionId: masked.sessionId, clientId: masked.clientId, vector, bits, count: DIM + 1 } } }));
    expect(pick(await withSlot(() => sendBytes(packed(new Uint8Array(packedBytes(DIM + 1, masked.bits) + 1), masked.bits))))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.InvalidArgument));
    expect(pick(await withSlot(() => sendBytes(packed(new Uint8Array(4 * (DIM + 1)), 0))))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.InvalidArgument));
    // Another session, a session id of the wrong length, the previous phase, the next phase.
    expect(pick(await withSlot(() => sendMsg(m({ sessionId: noise('other-session', 32) }))))).toEqual(status(grpc.status.FAILED_PRECONDITION, ErrorCode.SessionMismatch));
    expect(pick(await withSlot(() => sendMsg(m({ sessionId: masked.sessionId.subarray(0, 16) }))))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.InvalidArgument));
    expect(pick(await sendMsg(adv))).toEqual(status(grpc.status.FAILED_PRECONDITION, ErrorCode.WrongPhase));
    expect(pick(await sendMsg({ type: 'share-keys', sessionId: masked.sessionId, clientId: masked.clientId, shares: [] }))).toEqual(status(grpc.status.FAILED_PRECONDITION, ErrorCode.WrongPhase));
    expect(pick(await sendMsg({ type: 'unmask-response', sessionId: masked.sessionId, clientId: masked.clientId, keyShares: [], selfMaskShares: [] }))).toEqual(
      status(grpc.status.FAILED_PRECONDITION, ErrorCode.WrongPhase),
    );
    expect(pick(await sendMsg(m({ clientId: members[3]!.clientId })))).toEqual(status(grpc.status.PERMISSION_DENIED, ErrorCode.UnknownSender));
    expect(pick(await sendBytes(noise('random-2', 4096)))).toEqual(status(grpc.status.INVALID_ARGUMENT, 'invalid-argument'));
    await serving();

    // The real masked input is taken; an exact resend changes nothing, a changed one is refused.
    attMasked.release();
    await attMasked.sent;
    const dupMasked = await withSlot(() => sendMsg(masked));
    expect(pick(dupMasked)).toEqual(status(grpc.status.ALREADY_EXISTS, ErrorCode.AlreadyExists));
    expect(dupMasked.details).toMatch(/identical resend changes nothing/);
    const changed = new Uint32Array(masked.vector);
    changed[0] = (changed[0]! + 1) >>> 0;
    const conflictMasked = await withSlot(() => sendMsg(m({ vector: changed })));
    expect(pick(conflictMasked)).toEqual(status(grpc.status.ALREADY_EXISTS, ErrorCode.AlreadyExists));
    expect(conflictMasked.details).toMatch(/conflicting resend refused/);
    slowMasked.release();

    const o = await c.outcomeOf('job-1', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual(members.map((x) => x.clientId).sort());
    // Exact: nothing the attacker sent (the conflicting resend included) entered the sum.
    expect(Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([0, 1, 2, 3], DIM).buffer))).toBe(true);
    await waitFor(() => runners.every((r) => r.agent.history.length === 1), 10_000, 'outcomes at every member');
    expect(runners.every((r) => r.agent.history[0]!.ok)).toBe(true);
    expect(c.statusOf('job-1').refused).toBeGreaterThan(20);
    await serving();
    await expect(healthStatus(c.enrollAddress, grpc.credentials.createSsl(Buffer.from(c.ca.certificatePem)))).resolves.toBe('SERVING');
  });

  test('after the hostile member drops out mid-round, a round still completes with the members left (>= t); outsiders and bad token requests are refused', async () => {
    expect(runners).toHaveLength(4);
    // An enrolled client outside the cohort, and a token request above the per-call limit.
    const outsider = await enrollClients(c, 1, 'outsider');
    const out = secAgg(c.address, credentialsOf(c.ca.certificatePem, outsider[0]!));
    try {
      const outPool = new TokenPool(out);
      const r = await refusal(send(out, toClientEnvelope({ type: 'masked-input', sessionId: new Uint8Array(32), clientId: outsider[0]!.clientId, vector: new Uint32Array(DIM + 1), bits: 32 }), await outPool.next()));
      expect(pick(r)).toEqual(status(grpc.status.FAILED_PRECONDITION, ErrorCode.WrongPhase));
      expect(r.details).toMatch(/no round is running for this client/);
      expect(pick(await refusal(issueTokens(out, 65)))).toEqual(status(grpc.status.INVALID_ARGUMENT, ErrorCode.InvalidArgument));
    } finally {
      out.close();
    }

    const [att] = runners;
    const dropped = dropBefore(att!, 'masked-input');
    const deadlines = { advertiseMs: 20_000, shareMs: 20_000, maskedMs: 1_500, consistencyMs: 20_000, unmaskMs: 20_000 };
    await c.launch(manifest({ jobId: 'job-2', round: { dim: DIM, cohort: 4, neighbors: 3 }, deadlines }));
    const masked = (await dropped) as MaskedInput;
    // While it is gone, more junk under its name (its certificate and tokens still work).
    expect(pick(await sendMsg({ ...masked, vector: new Uint32Array(DIM + 100) }))).toEqual(status(grpc.status.FAILED_PRECONDITION, ErrorCode.UploadSlotRequired));
    expect(pick(await withSlot(() => sendMsg({ ...masked, vector: new Uint32Array(DIM + 100) })))).toEqual(status(grpc.status.RESOURCE_EXHAUSTED, ErrorCode.TooLarge));
    expect(pick(await sendBytes(noise('random-3', 512)))).toEqual(status(grpc.status.INVALID_ARGUMENT, 'invalid-argument'));
    const o = await c.outcomeOf('job-2', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual(members.slice(1).map((x) => x.clientId).sort());
    expect(Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([1, 2, 3], DIM).buffer))).toBe(true);
    // The dropped member's late message, and a resend of the round's first phase: wrong phase.
    expect(pick(await sendMsg(masked))).toEqual(status(grpc.status.FAILED_PRECONDITION, ErrorCode.WrongPhase));
    await serving();
  });
});
