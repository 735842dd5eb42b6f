/**
 * Generators for the protocol fuzzer (test/net/fuzz.test.ts): fast-check arbitraries of calls
 * to the coordinator's RPCs, each one a method path, the exact bytes to put on the wire, whose
 * certificate and which round token goes with it, and what the coordinator may answer
 * ('refused': it must refuse; 'any': a reply or a refusal).
 *
 * Three families:
 * - protocol messages (SecAgg.Send) built from a live round's genuine messages with hostile
 *   field values: wrong lengths, other rounds, sessions, views and manifests, other senders,
 *   empty and oversized repeated fields, vectors of the wrong dimension, numbers the proto
 *   cannot hold (negative, beyond 32 bits, NaN written as a double, overlong varints);
 * - raw bytes: bit flips, truncation, extension, splices and random bytes, of valid encodings;
 * - every other RPC (SecAgg, Enrollment, Admin, Trust, health) with hostile requests.
 *
 * `poisoned` messages are invalid by construction (at least one field the coordinator checks is
 * wrong); the fuzzer sends them while the sender's genuine message of the phase is still held
 * back, when anything the coordinator took would corrupt the round. Raw mutations of a genuine
 * message are used then only for signed messages, and filtered so that none decodes back to the
 * genuine message itself.
 */
import fc from 'fast-check';
import { create, toBinary, fromBinary } from '@bufbuild/protobuf';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { ClientMessage, EncryptedShare, RevealedShare } from '../../shared/protocol/messages.js';
import { fromClientEnvelope, toClientEnvelope } from '../../shared/rpc/convert.js';
import { ErrorReasonSchema } from '../../shared/gen/aegis/v1/vocabulary_pb.js';
import { sameRound } from '../../shared/protocol/session.js';
import { SHARE_CIPHERTEXT_BYTES } from '../../coordinator/round/r1-share-keys.js';

// ---------------------------------------------------------------------------------------------
// Budget and seed.

/** The seed used when AEGIS_FUZZ_SEED is not set (CI runs this one). */
export const DEFAULT_FUZZ_SEED = 20_240_917;
/** Runs per property when AEGIS_FUZZ_RUNS is not set (CI). */
export const DEFAULT_FUZZ_RUNS = 50;

/** The fuzzer's seed and runs per property, from AEGIS_FUZZ_SEED and AEGIS_FUZZ_RUNS. */
export function fuzzSettings(env: NodeJS.ProcessEnv = process.env): { seed: number; numRuns: number } {
  const int = (name: string, fallback: number, min: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}, got '${raw}'`);
    return n;
  };
  return { seed: int('AEGIS_FUZZ_SEED', DEFAULT_FUZZ_SEED, -(2 ** 31)) | 0, numRuns: int('AEGIS_FUZZ_RUNS', DEFAULT_FUZZ_RUNS, 1) };
}

// ---------------------------------------------------------------------------------------------
// Calls.

/** Whose connection a call goes on. `anonymous` is the enrollment listener (no client certificate). */
export type Caller = 'attacker' | 'outsider' | 'operator' | 'anonymous';
/** The round token a call carries: a fresh one, none, garbage, or one already used. */
export type Auth = 'token' | 'none' | 'garbage' | 'replayed';

export interface Call {
  /** What the call is, for the failure report. */
  label: string;
  path: string;
  bytes: Uint8Array;
  as: Caller;
  auth: Auth;
  /** A server-streaming method. */
  stream: boolean;
  /** 'refused': the coordinator must refuse it; 'any': it may also take it. */
  expect: 'refused' | 'any';
  /** Ask for an upload slot (SecAgg.AcquireUpload) right before this call. */
  withSlot?: boolean;
  /** A stream that stays open when taken (Subscribe, health Watch): the fuzzer ends it once answered. */
  staysOpen?: boolean;
}

const SECAGG = '/aegis.v1.SecAgg/';
const ADMIN = '/aegis.v1.Admin/';
export const SEND = `${SECAGG}Send`;
const HEALTH = '/grpc.health.v1.Health/';

/** A call printed by its label in fast-check's reports (not as kilobytes of bytes). */
function call(c: Call): Call {
  const label = `${c.label} [${c.path} as ${c.as}, ${c.auth}${c.withSlot ? ', with an upload slot' : ''}, ${c.bytes.length} bytes]`;
  return Object.assign({ ...c, label }, { [fc.toStringMethod]: () => label });
}

export const sendCall = (label: string, bytes: Uint8Array, expect: Call['expect'], extra: Partial<Call> = {}): Call =>
  call({ label, path: SEND, bytes, as: 'attacker', auth: 'token', stream: false, expect, ...extra });

// ---------------------------------------------------------------------------------------------
// Hostile values.

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Bytes of lengths around `want` (and empty, tiny and large), or random content of the right length. */
export function hostileBytes(want: number): fc.Arbitrary<Uint8Array> {
  const lengths = [...new Set([0, 1, want - 1, want + 1, 2 * want, 16, 31, 33, 63, 65].filter((n) => n >= 0))];
  return fc.oneof(
    fc.constantFrom(...lengths).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
    fc.uint8Array({ minLength: want, maxLength: want }),
    fc.constantFrom(new Uint8Array(want), new Uint8Array(want).fill(0xff)),
    fc.integer({ min: 200, max: 4096 }).map((n) => new Uint8Array(n).fill(0x41)),
  );
}

/** Client ids and names: empty, too long, control characters, unicode, paths, injections. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('', ' ', 'a'.repeat(129), 'x'.repeat(5000), '\u0000', 'é', '💥', '../../etc/passwd', 'member-0\n', "'; DROP TABLE clients;--", '%s%n', '*', 'ghost-1'),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
);

/** uint32 values at the edges, and random ones. */
export const hostileUint32: fc.Arbitrary<number> = fc.oneof(fc.constantFrom(0, 1, 2, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff), fc.nat({ max: 0xffffffff }));

/**
 * A number as the wire can carry it where the proto says uint32: negative 64-bit varints,
 * values beyond 32 bits, overlong varints, or the wrong wire type (a double NaN or infinity, a
 * float, a length-delimited blob).
 */
export type WireNumber = (w: BinaryWriter, field: number) => void;
export const hostileWireNumber: fc.Arbitrary<WireNumber> = fc.oneof(
  fc.constantFrom(-1n, -(2n ** 31n), -(2n ** 63n), 2n ** 32n, 2n ** 32n + 1n, 2n ** 53n, 2n ** 64n - 1n).map((v): WireNumber => (w, f) => (v < 0n ? w.tag(f, WireType.Varint).int64(v) : w.tag(f, WireType.Varint).uint64(v))),
  fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, -1, 1e300, 0.5).map((v): WireNumber => (w, f) => w.tag(f, WireType.Bit64).double(v)),
  fc.constantFrom(Number.NaN, -1).map((v): WireNumber => (w, f) => w.tag(f, WireType.Bit32).float(v)),
  // An overlong varint (eleven bytes) and an unterminated one.
  fc.constant<WireNumber>((w, f) => w.tag(f, WireType.Varint).raw(Uint8Array.from([0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]))),
  fc.constant<WireNumber>((w, f) => w.tag(f, WireType.Varint).raw(Uint8Array.from([0xff, 0xff, 0xff]))),
  fc.uint8Array({ maxLength: 8 }).map((b): WireNumber => (w, f) => w.tag(f, WireType.LengthDelimited).bytes(b)),
);

// ---------------------------------------------------------------------------------------------
// Raw byte mutations.

/** Mutations of `base`: bit flips, truncation, extension, splices, duplication, random bytes. */
export function mutatedBytes(base: Uint8Array): fc.Arbitrary<{ how: string; bytes: Uint8Array }> {
  const n = base.length;
  const at = fc.nat({ max: Math.max(0, n - 1) });
  return fc.oneof(
    fc.array(fc.tuple(at, fc.nat({ max: 7 })), { minLength: 1, maxLength: 4 }).map((flips) => {
      const b = new Uint8Array(base);
      for (const [i, bit] of flips) if (i < n) b[i]! ^= 1 << bit;
      return { how: `bit flips at ${flips.map(([i, bit]) => `${i}.${bit}`).join(',')}`, bytes: b };
    }),
    fc.nat({ max: Math.max(0, n - 1) }).map((k) => ({ how: `truncated to ${k} of ${n}`, bytes: base.slice(0, k) })),
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map((tail) => ({ how: `extended by ${tail.length} random bytes`, bytes: concat(base, tail) })),
    // A trailing unknown field (well-formed), and the message twice (protobuf merges the copies).
    fc.tuple(fc.integer({ min: 16, max: 536_870_911 }), fc.uint8Array({ maxLength: 32 })).map(([f, v]) => ({ how: `extended by unknown field ${f}`, bytes: concat(base, new BinaryWriter().tag(f, WireType.LengthDelimited).bytes(v).finish()) })),
    fc.constant({ how: 'sent twice in one body', bytes: concat(base, base) }),
    fc.tuple(at, fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([i, chunk]) => {
      const b = new Uint8Array(base);
      b.set(chunk.subarray(0, Math.max(0, n - i)), Math.min(i, n));
      return { how: `${chunk.length} bytes overwritten at ${i}`, bytes: b };
    }),
    fc.tuple(at, fc.constantFrom(0x00, 0xff, 0x80, 0x7f)).map(([i, v]) => {
      const b = new Uint8Array(base);
      if (i < n) b[i] = v;
      return { how: `byte ${i} set to ${v}`, bytes: b };
    }),
    fc.uint8Array({ maxLength: 512 }).map((b) => ({ how: 'random bytes', bytes: b })),
  );
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Protocol messages.

export const encode = (m: ClientMessage): Uint8Array => toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(m));

/** `bytes` decoded as the coordinator decodes a Send, re-encoded canonically; undefined if it does not decode. */
export function canonical(bytes: Uint8Array): Uint8Array | undefined {
  try {
    return toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(fromClientEnvelope(fromBinary(pb.ClientEnvelopeSchema, bytes))), { writeUnknownFields: false });
  } catch {
    return undefined;
  }
}

const sameBytes = (a: Uint8Array | undefined, b: Uint8Array): boolean => a !== undefined && Buffer.from(a).equals(Buffer.from(b));

function decoded(bytes: Uint8Array): ClientMessage | undefined {
  try {
    return fromClientEnvelope(fromBinary(pb.ClientEnvelopeSchema, bytes));
  } catch {
    return undefined;
  }
}

const SIGNED: readonly ClientMessage['type'][] = ['advertise-keys', 'consistency-signature'];

/**
 * True when raw `bytes` might be taken while the sender's genuine `current` message is held:
 * they decode to a decline of the sender for the live round, or to a `current` message of the
 * sender that is the genuine one (signed kinds: any other content fails its signature) or names
 * the live session (unsigned kinds: the coordinator cannot tell their content from honest
 * content). The fuzzer sends no such bytes then.
 */
export function mayBeTaken(ctx: RoundContext, current: ClientMessage['type'], bytes: Uint8Array): boolean {
  const d = decoded(bytes);
  if (!d || d.clientId !== ctx.clientId) return false;
  const adv = ctx.genuine['advertise-keys'];
  if (d.type === 'decline') return adv?.type === 'advertise-keys' && sameRound(d.round, adv.round);
  const g = ctx.genuine[current];
  if (d.type !== current || !g) return false;
  if (SIGNED.includes(current)) return sameBytes(canonical(bytes), encode(g));
  return 'sessionId' in d && 'sessionId' in g && sameBytes(d.sessionId, g.sessionId);
}

/** What the generators know of the live round and its sender. */
export interface RoundContext {
  /** The sender (the attacker's certificate). */
  clientId: string;
  /** The round's other members. */
  others: string[];
  dim: number;
  /** The sender's genuine messages of the live round so far, by type (the current one included). */
  genuine: Partial<Record<ClientMessage['type'], ClientMessage>>;
  /** Genuine messages of other rounds and of other clients (replays). */
  replays: ClientMessage[];
}

type Poison<M> = fc.Arbitrary<{ how: string; apply: (m: M) => M }>;

const notEqual = (want: Uint8Array, arb: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> => arb.filter((b) => !Buffer.from(b).equals(Buffer.from(want)));
const otherString = (not: string, ctx: RoundContext): fc.Arbitrary<string> => fc.oneof(fc.constantFrom(...ctx.others), hostileString).filter((s) => s !== not);

function sessionPoison<M extends { sessionId: Uint8Array }>(): Poison<M> {
  return fc.oneof(
    hostileBytes(32).map((b) => ({ how: `session id of ${b.length} bytes`, apply: (m: M) => ({ ...m, sessionId: b }) })),
    fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => ({ how: 'another session', apply: (m: M) => ({ ...m, sessionId: b }) })),
  ).map((p) => ({ ...p, apply: (m: M) => { const out = p.apply(m); return Buffer.from(out.sessionId).equals(Buffer.from(m.sessionId)) ? { ...out, sessionId: new Uint8Array(33) } : out; } }));
}

function senderPoison<M extends { clientId: string }>(ctx: RoundContext): Poison<M> {
  return otherString(ctx.clientId, ctx).map((id) => ({ how: `client id '${id.slice(0, 40)}'`, apply: (m: M) => ({ ...m, clientId: id }) }));
}

/** `base` with 1-3 poisons, each of another field (so that no two undo each other). */
function poisoned<M extends ClientMessage>(base: M, poisons: Poison<M>[]): fc.Arbitrary<{ how: string; msg: M }> {
  return fc
    .shuffledSubarray(poisons, { minLength: 1, maxLength: Math.min(3, poisons.length) })
    .chain((chosen) => fc.tuple(...chosen))
    .map((ps) => ({ how: ps.map((p) => p.how).join(' + '), msg: ps.reduce((m, p) => p.apply(m), base) }));
}

/** Shares of the wrong shape: none, too many, renamed or twice the same peer, ciphertexts of the wrong length. */
function sharesPoison(ctx: RoundContext): Poison<Extract<ClientMessage, { type: 'share-keys' }>> {
  type S = Extract<ClientMessage, { type: 'share-keys' }>;
  return fc.oneof(
    fc.constant({ how: 'no shares', apply: (m: S) => ({ ...m, shares: [] }) }),
    fc.constant({ how: 'one share missing', apply: (m: S) => ({ ...m, shares: m.shares.slice(1) }) }),
    fc.integer({ min: 1, max: 40 }).map((k) => ({ how: `${k} extra shares`, apply: (m: S) => ({ ...m, shares: [...m.shares, ...Array.from({ length: k }, (_, i): EncryptedShare => ({ peer: `extra-${i}`, ciphertext: new Uint8Array(SHARE_CIPHERTEXT_BYTES) }))] }) })),
    fc.constant({ how: 'one peer twice', apply: (m: S) => ({ ...m, shares: m.shares.map((s, i) => (i === 1 ? { ...s, peer: m.shares[0]!.peer } : s)) }) }),
    otherString('', ctx)
      .filter((p) => p !== ctx.clientId)
      .map((p) => ({ how: `a share for '${p.slice(0, 40)}'`, apply: (m: S) => ({ ...m, shares: m.shares.map((s, i) => (i === 0 ? { ...s, peer: m.shares.some((x) => x.peer === p) ? `${p}-not` : p } : s)) }) })),
    fc.constant({ how: 'a share addressed to the sender', apply: (m: S) => ({ ...m, shares: m.shares.map((s, i) => (i === 0 ? { ...s, peer: ctx.clientId } : s)) }) }),
    hostileBytes(SHARE_CIPHERTEXT_BYTES)
      .filter((b) => b.length !== SHARE_CIPHERTEXT_BYTES)
      .map((b) => ({ how: `a ciphertext of ${b.length} bytes`, apply: (m: S) => ({ ...m, shares: m.shares.map((s, i) => (i === m.shares.length - 1 ? { ...s, ciphertext: b } : s)) }) })),
  );
}

function revealedPoison(key: 'keyShares' | 'selfMaskShares', ctx: RoundContext): Poison<Extract<ClientMessage, { type: 'unmask-response' }>> {
  type U = Extract<ClientMessage, { type: 'unmask-response' }>;
  const edit = (f: (s: RevealedShare[]) => RevealedShare[]) => (m: U): U => ({ ...m, [key]: f(m[key]) });
  return fc.oneof(
    fc.integer({ min: 1, max: 40 }).map((k) => ({ how: `${key}: ${k} shares not asked for`, apply: edit((s) => [...s, ...Array.from({ length: k }, (_, i) => ({ owner: `ghost-${i}`, value: new Uint8Array(33) }))]) })),
    fc.constant({ how: `${key}: one share twice`, apply: edit((s) => (s.length > 0 ? [...s, s[0]!] : [{ owner: ctx.clientId, value: new Uint8Array(33) }])) }),
    fc.constant({ how: `${key}: one share missing`, apply: edit((s) => (s.length > 0 ? s.slice(1) : [{ owner: 'ghost', value: new Uint8Array(33) }])) }),
    hostileBytes(33)
      .filter((b) => b.length !== 33)
      .map((b) => ({ how: `${key}: a value of ${b.length} bytes`, apply: edit((s) => (s.length > 0 ? s.map((x, i) => (i === 0 ? { ...x, value: b } : x)) : [{ owner: 'ghost', value: b }])) })),
    fc.constant({ how: `${key}: a value outside the field`, apply: edit((s) => (s.length > 0 ? s.map((x, i) => (i === 0 ? { ...x, value: new Uint8Array(33).fill(0xff) } : x)) : [{ owner: 'ghost', value: new Uint8Array(33).fill(0xff) }])) }),
  );
}

/** The sender's current genuine message with 1-3 invalidating changes (structured). */
export function poisonedCurrent(ctx: RoundContext, type: ClientMessage['type']): fc.Arbitrary<{ how: string; msg: ClientMessage }> {
  const g = ctx.genuine[type];
  if (!g) throw new Error(`no genuine ${type} message yet`);
  switch (g.type) {
    case 'advertise-keys': {
      type A = typeof g;
      return poisoned<A>(g, [
        senderPoison<A>(ctx),
        notEqual(g.round.manifestHash, hostileBytes(32)).map((b) => ({ how: `manifest hash of ${b.length} bytes`, apply: (m: A) => ({ ...m, round: { ...m.round, manifestHash: b } }) })),
        hostileUint32.filter((i) => i !== g.round.roundIndex).map((i) => ({ how: `round index ${i}`, apply: (m: A) => ({ ...m, round: { ...m.round, roundIndex: i } }) })),
        notEqual(g.cPk, hostileBytes(32)).map((b) => ({ how: `c_pk of ${b.length} bytes`, apply: (m: A) => ({ ...m, cPk: b }) })),
        notEqual(g.sPk, hostileBytes(32)).map((b) => ({ how: `s_pk of ${b.length} bytes`, apply: (m: A) => ({ ...m, sPk: b }) })),
        fc.constant({ how: 'c_pk and s_pk swapped', apply: (m: A) => ({ ...m, cPk: m.sPk, sPk: m.cPk }) }),
        fc.constant({ how: 's_pk = c_pk', apply: (m: A) => ({ ...m, sPk: m.cPk }) }),
        notEqual(g.view, hostileBytes(32)).map((b) => ({ how: `view of ${b.length} bytes`, apply: (m: A) => ({ ...m, view: b }) })),
        notEqual(g.signature, hostileBytes(64)).map((b) => ({ how: `signature of ${b.length} bytes`, apply: (m: A) => ({ ...m, signature: b }) })),
      ]);
    }
    case 'decline':
      throw new Error('the fuzzer holds keys, not declines');
    case 'share-keys': {
      type S = typeof g;
      return poisoned<S>(g, [sessionPoison<S>(), senderPoison<S>(ctx), sharesPoison(ctx)]);
    }
    case 'masked-input': {
      type V = typeof g;
      const lengths = [0, 1, ctx.dim, ctx.dim + 2, 2 * (ctx.dim + 1), 20_000];
      return poisoned<V>(g, [
        sessionPoison<V>(),
        senderPoison<V>(ctx),
        fc.tuple(fc.constantFrom(...lengths), fc.constantFrom(0, 0xffffffff, 1)).map(([n, fill]) => ({ how: `a vector of ${n} words`, apply: (m: V) => ({ ...m, vector: new Uint32Array(n).fill(fill) }) })),
        // Reduced to other bits than the round's sum has (each still a valid packing).
        fc.constantFrom(1, 8, 31, 32).map((bits) => ({ how: `reduced to ${bits} bits`, apply: (m: V) => (m.bits === bits ? { ...m, bits: bits === 32 ? 31 : bits + 1 } : { ...m, bits, vector: m.vector.map((w) => (bits === 32 ? w : w % 2 ** bits)) }) })),
      ]);
    }
    case 'consistency-signature': {
      type C = typeof g;
      return poisoned<C>(g, [sessionPoison<C>(), senderPoison<C>(ctx), notEqual(g.signature, hostileBytes(64)).map((b) => ({ how: `signature of ${b.length} bytes`, apply: (m: C) => ({ ...m, signature: b }) }))]);
    }
    case 'unmask-response': {
      type U = typeof g;
      return poisoned<U>(g, [sessionPoison<U>(), senderPoison<U>(ctx), revealedPoison('keyShares', ctx), revealedPoison('selfMaskShares', ctx)]);
    }
  }
}

/** A decline that cannot be taken: another round, another sender, or a reason that is no decline reason. */
export function poisonedDecline(ctx: RoundContext): fc.Arbitrary<{ how: string; bytes: Uint8Array }> {
  const adv = ctx.genuine['advertise-keys'];
  if (adv?.type !== 'advertise-keys') throw new Error('no genuine advertisement yet');
  // Built on the wire: the reason field takes any number there, the typed message only known codes.
  const build = (round: { manifestHash: Uint8Array; roundIndex: WireNumber | number }, clientId: string, reason: WireNumber | number): Uint8Array => {
    const w = new BinaryWriter().tag(6, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).bytes(round.manifestHash);
    if (typeof round.roundIndex === 'number') w.tag(2, WireType.Varint).uint32(round.roundIndex);
    else round.roundIndex(w, 2);
    w.join().tag(2, WireType.LengthDelimited).string(clientId);
    if (typeof reason === 'number') w.tag(3, WireType.Varint).int32(reason);
    else reason(w, 3);
    return w.join().finish();
  };
  // UNSPECIFIED and values no reason code has (a decline takes any known code).
  const badReason = fc.oneof(fc.constantFrom(0, 9999, -1, 0x7fffffff), hostileWireNumber);
  const goodReason = fc.constantFrom(...declineReasonNumbers());
  return fc.oneof(
    fc.tuple(badReason).map(([r]) => ({ how: 'decline with a reason that is none', bytes: build(adv.round, ctx.clientId, r) })),
    fc.tuple(otherString(ctx.clientId, ctx), goodReason).map(([id, r]) => ({ how: `decline for '${id.slice(0, 40)}'`, bytes: build(adv.round, id, r) })),
    fc.tuple(hostileWireNumber, goodReason).map(([n, r]) => ({ how: 'decline with a round index the proto cannot hold', bytes: build({ ...adv.round, roundIndex: n }, ctx.clientId, r) })),
    fc.tuple(notEqual(adv.round.manifestHash, hostileBytes(32)), goodReason).map(([h, r]) => ({ how: `decline for manifest hash of ${h.length} bytes`, bytes: build({ ...adv.round, manifestHash: h }, ctx.clientId, r) })),
  ).filter((d) => !mayBeTaken(ctx, 'advertise-keys', d.bytes));
}

/** The ErrorReason numbers of the known reason codes (a decline may carry any of them). */
const declineReasonNumbers = (): number[] => ErrorReasonSchema.values.map((v) => v.number).filter((n) => n !== 0);

/** An advertisement with a round index written as a number the proto's uint32 cannot hold. */
export function wireNumberAdvertisement(ctx: RoundContext): fc.Arbitrary<{ how: string; bytes: Uint8Array }> {
  const adv = ctx.genuine['advertise-keys'];
  if (adv?.type !== 'advertise-keys') throw new Error('no genuine advertisement yet');
  return hostileWireNumber
    .map((n) => {
      const w = new BinaryWriter().tag(1, WireType.LengthDelimited).fork();
      w.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).bytes(adv.round.manifestHash);
      n(w, 2);
      w.join().tag(2, WireType.LengthDelimited).string(adv.clientId).tag(3, WireType.LengthDelimited).bytes(adv.cPk).tag(4, WireType.LengthDelimited).bytes(adv.sPk);
      w.tag(5, WireType.LengthDelimited).bytes(adv.signature).tag(6, WireType.LengthDelimited).bytes(adv.view);
      return { how: 'advertisement with a round index the proto cannot hold', bytes: w.join().finish() };
    })
    .filter((d) => !mayBeTaken(ctx, 'advertise-keys', d.bytes));
}

/** A message of another kind than the phase takes, with arbitrary content. */
export function otherKind(ctx: RoundContext, not: readonly ClientMessage['type'][]): fc.Arbitrary<{ how: string; msg: ClientMessage }> {
  const sid = hostileBytes(32);
  const id = fc.oneof(fc.constant(ctx.clientId), otherString(ctx.clientId, ctx));
  const round = fc.record({ manifestHash: hostileBytes(32), roundIndex: hostileUint32 });
  const all: fc.Arbitrary<ClientMessage>[] = [
    fc.record({ type: fc.constant('advertise-keys' as const), round, clientId: id, cPk: hostileBytes(32), sPk: hostileBytes(32), view: hostileBytes(32), signature: hostileBytes(64) }),
    fc.record({ type: fc.constant('share-keys' as const), sessionId: sid, clientId: id, shares: fc.array(fc.record({ peer: id, ciphertext: hostileBytes(SHARE_CIPHERTEXT_BYTES) }), { maxLength: 6 }) }),
    fc.record({ type: fc.constant('masked-input' as const), sessionId: sid, clientId: id, vector: fc.constantFrom(0, ctx.dim, ctx.dim + 1, ctx.dim + 2).map((n) => new Uint32Array(n)), bits: fc.integer({ min: 1, max: 32 }) }),
    fc.record({ type: fc.constant('consistency-signature' as const), sessionId: sid, clientId: id, signature: hostileBytes(64) }),
    fc.record({
      type: fc.constant('unmask-response' as const),
      sessionId: sid,
      clientId: id,
      keyShares: fc.array(fc.record({ owner: id, value: hostileBytes(33) }), { maxLength: 4 }),
      selfMaskShares: fc.array(fc.record({ owner: id, value: hostileBytes(33) }), { maxLength: 4 }),
    }),
  ].filter((_, i) => !not.includes((['advertise-keys', 'share-keys', 'masked-input', 'consistency-signature', 'unmask-response'] as const)[i]!));
  return fc.oneof(...all).map((msg) => ({ how: `${msg.type} in the wrong phase`, msg }));
}

/** The attacker's genuine messages of earlier phases and of other rounds, and other clients' messages, replayed as they were. */
export function replayed(ctx: RoundContext, current: ClientMessage['type']): fc.Arbitrary<{ how: string; msg: ClientMessage }> {
  const earlier = Object.values(ctx.genuine).filter((m): m is ClientMessage => m !== undefined && m.type !== current);
  const pool = [...earlier.map((msg) => ({ how: `the sender's own ${msg.type} of an earlier phase again`, msg })), ...ctx.replays.map((msg) => ({ how: `a replayed ${msg.type} of ${msg.clientId}`, msg }))];
  return fc.constantFrom(...pool);
}

/**
 * Calls for the phase while the sender's genuine message of it is held back: each one must be
 * refused (the message names another round, session or sender, has a field of the wrong length
 * or value, is of the wrong kind, or is not a protocol message at all).
 */
export function heldPhaseCalls(ctx: RoundContext, current: ClientMessage['type']): fc.Arbitrary<Call> {
  const g = ctx.genuine[current]!;
  const msg = (m: { how: string; msg: ClientMessage }): Call => sendCall(m.how, encode(m.msg), 'refused');
  // Raw bytes are sent only when they cannot decode to a message the phase might take.
  const raw = (a: fc.Arbitrary<Call>): fc.Arbitrary<Call> => a.filter((c) => !mayBeTaken(ctx, current, c.bytes));
  const options: fc.Arbitrary<Call>[] = [
    poisonedCurrent(ctx, current).map(msg),
    otherKind(ctx, current === 'advertise-keys' ? ['advertise-keys'] : [current]).map(msg),
    replayed(ctx, current).map(msg),
    raw(fc.uint8Array({ maxLength: 256 }).map((b) => sendCall('random bytes', b, 'refused'))),
    raw(mutatedBytes(encode(replayPick(ctx, current))).map((m) => sendCall(`another client's message, ${m.how}`, m.bytes, 'refused'))),
  ];
  if (current === 'advertise-keys') {
    options.push(poisonedDecline(ctx).map((d) => sendCall(d.how, d.bytes, 'refused')), wireNumberAdvertisement(ctx).map((d) => sendCall(d.how, d.bytes, 'refused')));
  }
  if (current === 'masked-input') options.push(poisonedCurrent(ctx, current).map((m) => sendCall(m.how, encode(m.msg), 'refused', { withSlot: true })));
  // Raw mutations of the genuine message only where it is signed: any change breaks the signature.
  if (current === 'advertise-keys' || current === 'consistency-signature') {
    const good = encode(g);
    options.push(raw(mutatedBytes(good).map((m) => sendCall(`the genuine ${current}, ${m.how}`, m.bytes, 'refused'))));
  }
  return fc.oneof(...options);
}

/** Another client's genuine message of the same kind if one was recorded, else any. */
function replayPick(ctx: RoundContext, type: ClientMessage['type']): ClientMessage {
  return ctx.replays.find((m) => m.type === type && m.clientId !== ctx.clientId) ?? ctx.replays[0]!;
}

/**
 * Calls for the phase once the sender's genuine message of it was taken: everything of
 * `heldPhaseCalls`, and the genuine message itself resent, mutated in every way, on the wire and
 * with an upload slot. Each must be refused: the sender has answered this phase.
 */
export function answeredPhaseCalls(ctx: RoundContext, current: ClientMessage['type']): fc.Arbitrary<Call> {
  const good = encode(ctx.genuine[current]!);
  const slot = current === 'masked-input' ? { withSlot: true } : {};
  return fc.oneof(
    heldPhaseCalls(ctx, current),
    fc.constant(sendCall(`the genuine ${current} again`, good, 'refused', slot)),
    mutatedBytes(good).map((m) => sendCall(`the genuine ${current}, ${m.how}`, m.bytes, 'refused', slot)),
    fc.constantFrom<Auth>('none', 'garbage', 'replayed').map((auth) => sendCall(`the genuine ${current} with a ${auth} token`, good, 'refused', { auth })),
  );
}

// ---------------------------------------------------------------------------------------------
// Every other RPC.

export interface RpcContext extends RoundContext {
  /** Job ids the fuzzer must leave running (never cancelled). */
  liveJobs: string[];
  /** Job ids that exist. */
  jobs: string[];
  /** Ids that must not be revoked (the round's members, the outsider). */
  protectedIds: string[];
  /** The operator's name and certificate serial (never revoked). */
  operator: { name: string; serial: string };
  /** A genuine CSR of the attacker (for mutated Renew requests). */
  csrDer: Uint8Array;
  /** A manifest of the live round's job (mutations of it must be refused). */
  manifestJson: Uint8Array;
}

const req = <S extends Parameters<typeof create>[0]>(schema: S, init: Parameters<typeof create<S>>[1]): Uint8Array => toBinary(schema, create(schema, init));

/** The request bytes, or a raw mutation of them, or random bytes. */
function bytesOf(valid: fc.Arbitrary<{ how: string; bytes: Uint8Array }>): fc.Arbitrary<{ how: string; bytes: Uint8Array }> {
  return fc.oneof(
    { weight: 3, arbitrary: valid },
    valid.chain((v) => mutatedBytes(v.bytes).map((m) => ({ how: `${v.how}, ${m.how}`, bytes: m.bytes }))),
    fc.uint8Array({ maxLength: 128 }).map((b) => ({ how: 'random bytes', bytes: b })),
  );
}

const rpc = (path: string, as: Caller, auth: Auth, stream: boolean, expect: Call['expect'], v: { how: string; bytes: Uint8Array }): Call => call({ label: v.how, path, bytes: v.bytes, as, auth, stream, expect });

/**
 * A manifest that cannot be launched, by construction: the live job's manifest with 1-3 of
 * its fields made invalid (numbers negative, fractional, huge, infinite or not numbers; dates
 * malformed or past; ids malformed; the version unknown), or not JSON at all.
 */
export function badManifest(base: Uint8Array): fc.Arbitrary<{ how: string; bytes: Uint8Array }> {
  const m = JSON.parse(new TextDecoder().decode(base)) as Record<string, unknown> & { round: Record<string, unknown>; deadlines: Record<string, unknown> };
  const badNumber = fc.constantFrom<unknown>(-1, 0, 0.5, 1e12, 2 ** 53, '1e309', 'NaN', '10', null, true, [], {});
  const edits: fc.Arbitrary<{ how: string; edit: (j: typeof m) => void }>[] = [
    fc.constantFrom('dim', 'cohort', 'neighbors', 'threshold', 'bits', 'clip').chain((k) => badNumber.map((v) => ({ how: `round.${k} = ${JSON.stringify(v)}`, edit: (j: typeof m) => void (j.round[k] = v) }))),
    fc.constantFrom('advertiseMs', 'shareMs', 'maskedMs', 'consistencyMs', 'unmaskMs').chain((k) => badNumber.map((v) => ({ how: `deadlines.${k} = ${JSON.stringify(v)}`, edit: (j: typeof m) => void (j.deadlines[k] = v) }))),
    badNumber.map((v) => ({ how: `rounds = ${JSON.stringify(v)}`, edit: (j: typeof m) => void (j.rounds = v) })),
    fc.constantFrom<unknown>(0, 2, 99, '1', null).map((v) => ({ how: `version = ${JSON.stringify(v)}`, edit: (j: typeof m) => void (j.version = v) })),
    fc.constantFrom<unknown>('', 'a'.repeat(65), 'job/1', '../x', 'job 1', 7, null).map((v) => ({ how: `jobId = ${JSON.stringify(v)}`, edit: (j: typeof m) => void (j.jobId = v) })),
    fc.constantFrom<unknown>('yesterday', '', '2001-01-01T00:00:00Z', 0).map((v) => ({ how: `expiresAt = ${JSON.stringify(v)}`, edit: (j: typeof m) => void (j.expiresAt = v) })),
    fc.constantFrom('round', 'deadlines', 'jobId', 'version').map((k) => ({ how: `no ${k}`, edit: (j: typeof m) => void delete (j as Record<string, unknown>)[k] })),
  ];
  const edited = fc.array(fc.oneof(...edits), { minLength: 1, maxLength: 3 }).map((es) => {
    const j = structuredClone(m);
    for (const e of es) e.edit(j);
    // '1e309' and 'NaN' as bare JSON tokens: a number too large for a double, and no JSON at all.
    const text = JSON.stringify(j).replaceAll('"1e309"', '1e309').replaceAll('"NaN"', 'NaN');
    return { how: `manifest with ${es.map((e) => e.how).join(', ')}`, bytes: utf8(text) };
  });
  return fc.oneof(
    { weight: 4, arbitrary: edited },
    fc.constantFrom('', '{}', '[]', 'null', '{"version":1', '\u0000', '{"version":1,"jobId":"x","round":{"dim":1e400}}').map((t) => ({ how: `manifest ${JSON.stringify(t)}`, bytes: utf8(t) })),
    fc.uint8Array({ maxLength: 256 }).map((b) => ({ how: 'manifest of random bytes', bytes: b })),
  );
}

/** One call to any RPC other than SecAgg.Send, with a hostile request. */
export function otherRpcCalls(ctx: RpcContext): fc.Arbitrary<Call> {
  const notProtected = hostileString.filter((s) => !ctx.protectedIds.includes(s) && s !== ctx.operator.name && s !== ctx.operator.serial);
  const jobId = fc.oneof(fc.constantFrom(...ctx.jobs), hostileString);
  const optionalIndex = fc.option(hostileUint32, { nil: undefined });
  const anyAuth = fc.constantFrom<Auth>('token', 'none', 'garbage', 'replayed');
  const secagg: fc.Arbitrary<Call>[] = [
    fc.tuple(anyAuth, bytesOf(fc.record({ manifestHash: hostileBytes(32), roundIndex: hostileUint32 }, { requiredKeys: [] }).map((r) => ({ how: 'heartbeat', bytes: req(pb.HeartbeatRequestSchema, { round: r }) })))).map(([a, v]) => rpc(`${SECAGG}Heartbeat`, 'attacker', a, false, 'any', v)),
    bytesOf(hostileUint32.map((n) => ({ how: `issue ${n} tokens`, bytes: req(pb.IssueTokensRequestSchema, { count: n }) }))).map((v) => rpc(`${SECAGG}IssueTokens`, 'attacker', 'none', false, 'any', v)),
    fc.tuple(anyAuth, bytesOf(hostileBytes(32).map((b) => ({ how: `upload slot for a session id of ${b.length} bytes`, bytes: req(pb.AcquireUploadRequestSchema, { sessionId: b }) })))).map(([a, v]) => rpc(`${SECAGG}AcquireUpload`, 'attacker', a, false, 'any', v)),
    bytesOf(fc.tuple(hostileBytes(32), hostileUint32).map(([h, v]) => ({ how: `model ${v} of a manifest hash of ${h.length} bytes`, bytes: req(pb.FetchModelRequestSchema, { manifestHash: h, version: v }) }))).map((v) => rpc(`${SECAGG}FetchModel`, 'attacker', 'none', true, 'any', v)),
    // Subscribe on the attacker's connection without a usable token (a usable one would take its
    // runner's stream over); with a fresh token only as the outsider, whose stream is then closed.
    fc.tuple(fc.constantFrom<Auth>('none', 'garbage', 'replayed'), bytesOf(hostileString.map((j) => ({ how: `subscribe to '${j.slice(0, 40)}'`, bytes: req(pb.SubscribeRequestSchema, { jobId: j }) })))).map(([a, v]) => rpc(`${SECAGG}Subscribe`, 'attacker', a, true, 'refused', v)),
    bytesOf(hostileString.map((j) => ({ how: `outsider subscribes to '${j.slice(0, 40)}'`, bytes: req(pb.SubscribeRequestSchema, { jobId: j }) }))).map((v) => ({ ...rpc(`${SECAGG}Subscribe`, 'outsider', 'token', true, 'any', v), staysOpen: true })),
  ];
  const enrollment: fc.Arbitrary<Call>[] = [
    bytesOf(fc.tuple(hostileString, hostileBytes(300)).map(([t, csr]) => ({ how: `enroll with token '${t.slice(0, 40)}' and a CSR of ${csr.length} bytes`, bytes: req(enroll.EnrollRequestSchema, { token: t, csrDer: csr }) }))).map((v) => rpc('/aegis.v1.Enrollment/Enroll', 'anonymous', 'none', false, 'refused', v)),
    fc.tuple(fc.boolean(), mutatedBytes(ctx.csrDer)).map(([rekey, m]) => rpc('/aegis.v1.Enrollment/Renew', 'attacker', 'none', false, 'any', { how: `renew (rekey ${rekey}) with the genuine CSR, ${m.how}`, bytes: req(enroll.RenewRequestSchema, { csrDer: m.bytes, rekey }) })),
    bytesOf(hostileBytes(300).map((csr) => ({ how: `renew with a CSR of ${csr.length} bytes`, bytes: req(enroll.RenewRequestSchema, { csrDer: csr }) }))).map((v) => rpc('/aegis.v1.Enrollment/Renew', 'attacker', 'none', false, 'refused', v)),
  ];
  const op = (method: string, v: fc.Arbitrary<{ how: string; bytes: Uint8Array }>, expect: Call['expect'] = 'any', stream = false): fc.Arbitrary<Call> => bytesOf(v).map((x) => rpc(`${ADMIN}${method}`, 'operator', 'none', stream, expect, x));
  const adminCalls: fc.Arbitrary<Call>[] = [
    op('CreateInvite', fc.tuple(hostileUint32, hostileString).map(([ttl, id]) => ({ how: `invite for '${id.slice(0, 40)}', ttl ${ttl}`, bytes: req(admin.CreateInviteRequestSchema, { ttlSeconds: ttl, clientId: id }) }))),
    op('ListClients', fc.constant({ how: 'list clients', bytes: new Uint8Array(0) })),
    op('RevokeClient', fc.tuple(notProtected, hostileString, hostileString).map(([id, reason, detail]) => ({ how: `revoke '${id.slice(0, 40)}'`, bytes: req(admin.RevokeClientRequestSchema, { clientId: id, reason, detail }) }))),
    fc.tuple(badManifest(ctx.manifestJson), fc.constantFrom(0, 1, 100), hostileBytes(64), fc.option(fc.uint8Array({ maxLength: 200 }), { nil: undefined })).map(([m, gatherMs, weights, signed]) =>
      rpc(`${ADMIN}LaunchRound`, 'operator', 'none', false, 'refused', {
        how: `launch a ${m.how}`,
        bytes: req(admin.LaunchRoundRequestSchema, { manifestJson: m.bytes, gatherMs, initialWeights: weights, ...(signed ? { signedManifest: signed } : {}) }),
      }),
    ),
    op('RoundStatus', fc.tuple(jobId, optionalIndex).map(([j, i]) => ({ how: `status of '${j.slice(0, 40)}' round ${i}`, bytes: req(admin.RoundStatusRequestSchema, { jobId: j, ...(i === undefined ? {} : { roundIndex: i }) }) }))),
    op('RoundResult', fc.tuple(jobId, optionalIndex).map(([j, i]) => ({ how: `result of '${j.slice(0, 40)}' round ${i}`, bytes: req(admin.RoundResultRequestSchema, { jobId: j, ...(i === undefined ? {} : { roundIndex: i }) }) }))),
    op('FetchModel', fc.tuple(jobId, optionalIndex).map(([j, v]) => ({ how: `model of '${j.slice(0, 40)}' version ${v}`, bytes: req(admin.FetchJobModelRequestSchema, { jobId: j, ...(v === undefined ? {} : { version: v }) }) })), 'any', true),
    op('ListRounds', fc.constant({ how: 'list jobs', bytes: new Uint8Array(0) })),
    op('CancelRound', fc.tuple(jobId.filter((j) => !ctx.liveJobs.includes(j)), hostileString).map(([j, r]) => ({ how: `cancel '${j.slice(0, 40)}'`, bytes: req(admin.CancelRoundRequestSchema, { jobId: j, reason: r }) }))),
    op('GetCrl', fc.constant({ how: 'the CRL', bytes: new Uint8Array(0) })),
    op('IssueDashboardToken', hostileUint32.map((t) => ({ how: `dashboard token, ttl ${t}`, bytes: req(admin.IssueDashboardTokenRequestSchema, { ttlSeconds: t }) }))),
    op('ListOperators', fc.constant({ how: 'list operators', bytes: new Uint8Array(0) })),
    op('IssueOperator', fc.tuple(notProtected, hostileBytes(300), hostileUint32).map(([n, csr, ttl]) => ({ how: `issue operator '${n.slice(0, 40)}'`, bytes: req(admin.IssueOperatorRequestSchema, { name: n, csrDer: csr, ttlSeconds: ttl }) }))),
    op('ReissueOperator', fc.tuple(notProtected, hostileBytes(300), hostileUint32).map(([n, csr, ttl]) => ({ how: `reissue operator '${n.slice(0, 40)}'`, bytes: req(admin.ReissueOperatorRequestSchema, { name: n, csrDer: csr, ttlSeconds: ttl }) }))),
    op('RevokeOperator', fc.tuple(notProtected, notProtected, hostileString).map(([n, s, r]) => ({ how: `revoke operator '${n.slice(0, 40)}' / serial '${s.slice(0, 40)}'`, bytes: req(admin.RevokeOperatorRequestSchema, { name: n, serial: s, reason: r }) }))),
    op('RevokeTokens', fc.tuple(hostileString, hostileString, notProtected).map(([jti, token, id]) => ({ how: 'revoke tokens', bytes: req(admin.RevokeTokensRequestSchema, { jti, token, clientId: id }) }))),
  ];
  const wrongCaller: fc.Arbitrary<Call>[] = [
    // A client certificate on Admin, an operator certificate on SecAgg: refused whatever the request.
    fc.constantFrom('ListClients', 'LaunchRound', 'RevokeClient', 'CreateInvite').chain((m) => fc.uint8Array({ maxLength: 64 }).map((b) => rpc(`${ADMIN}${m}`, 'attacker', 'none', false, 'refused', { how: `a client calls Admin.${m}`, bytes: b }))),
    fc.constantFrom('Send', 'Heartbeat', 'IssueTokens', 'AcquireUpload').chain((m) => fc.uint8Array({ maxLength: 64 }).map((b) => rpc(`${SECAGG}${m}`, 'operator', 'none', false, 'refused', { how: `an operator calls SecAgg.${m}`, bytes: b }))),
  ];
  const trust: fc.Arbitrary<Call>[] = [
    fc.tuple(fc.constantFrom<Caller>('attacker', 'anonymous'), fc.uint8Array({ maxLength: 64 })).map(([as, b]) => rpc('/aegis.v1.Trust/GetRegistry', as, 'none', false, 'any', { how: 'the publisher registry', bytes: b })),
  ];
  const health = fc
    .tuple(fc.constantFrom('Check', 'Watch', 'List'), fc.constantFrom<Caller>('attacker', 'anonymous', 'operator'), bytesOf(fc.oneof(fc.constantFrom('', 'aegis.v1.SecAgg', 'aegis.v1.Admin'), hostileString).map((s) => ({ how: `health of '${s.slice(0, 40)}'`, bytes: healthRequest(s) }))))
    .map(([method, as, v]) => (method === 'Watch' ? { ...rpc(`${HEALTH}Watch`, as, 'none', true, 'any', v), staysOpen: true } : rpc(`${HEALTH}${method}`, as, 'none', false, 'any', v)));
  return fc.oneof(...secagg, ...enrollment, ...adminCalls, ...wrongCaller, ...trust, health);
}

/** grpc.health.v1.HealthCheckRequest { string service = 1; } */
function healthRequest(service: string): Uint8Array {
  return new BinaryWriter().tag(1, WireType.LengthDelimited).string(service).finish();
}
