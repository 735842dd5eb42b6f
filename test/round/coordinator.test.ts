/**
 * The coordinator's round state machine (coordinator/round/*) against bad client messages: every
 * refusal throws an AegisError with a stable code and leaves the state exactly as it was, and
 * the round then still completes with the exact sum. Also: the running sum is the only O(m)
 * thing the coordinator holds, parameters that could overflow are refused, and a reconstructed
 * key that does not match its advertisement aborts the round without publishing anything.
 *
 * Rounds run through the real client state machines; the harness only routes messages.
 */
import { roundViewDigest } from '../../shared/protocol/view.js';
import { describe, expect, test } from '@jest/globals';
import { KeyObject } from 'node:crypto';
import { makeIdentities } from '../../bench/sim/client-host.js';
import { handle, start as startClient, type ClientState } from '../../client/round/index.js';
import { close, isFinal, receive, start as startCoordinator, type CoordinatorState } from '../../coordinator/round/index.js';
import { ed25519Sign } from '../../shared/crypto/ed25519.js';
import { combine, decodeShareValue, encodeShareValue } from '../../shared/crypto/shamir.js';
import { x25519KeyPair } from '../../shared/crypto/x25519.js';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import { sharedContentOf, type AdvertiseKeys, type ClientMessage, type ConsistencySignature, type MaskedInput, type RoundRef, type ShareKeys, type UnmaskResponse } from '../../shared/protocol/messages.js';
import { sumBitsOf, validateRoundParams, type RoundParams, type RoundParamsInput } from '../../shared/protocol/params.js';
import { Roster } from '../../shared/protocol/roster.js';
import { advertiseTranscript, consistencyTranscript, sha256 } from '../../shared/protocol/session.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { SMALL_ORDER_X25519_HEX } from '../support/codes.js';

// ---------------------------------------------------------------------------------------------
// Harness

interface Party {
  id: string;
  identityKey: Uint8Array;
  publicKey: Uint8Array;
}

type LivePhase = typeof Phase.AdvertiseKeys | typeof Phase.ShareKeys | typeof Phase.MaskedInput | typeof Phase.ConsistencyCheck | typeof Phase.Unmasking;
type Drops = Partial<Record<LivePhase, string[]>>;

interface HarnessOptions {
  n: number;
  dim?: number;
  neighbors?: number;
  threshold?: number;
  /** Clients the PKI knows; the first n take part. Default n. */
  enrolled?: number;
}

class Harness {
  readonly params: RoundParams;
  readonly round: RoundRef = { manifestHash: sha256('aegis-test:coordinator'), roundIndex: 7 };
  /** The round view every party signs (no model, group or deadlines in this harness). */
  view!: Uint8Array;
  readonly parties: Party[];
  readonly directory: Map<string, Uint8Array>;
  readonly inputs = new Map<string, Uint32Array>();
  readonly clients = new Map<string, ClientState>();
  /** Each client's first state, which holds its round keys. */
  readonly initial = new Map<string, ClientState>();
  readonly crashed = new Set<string>();
  /** Every client message produced, by the phase that takes it. */
  readonly produced = new Map<LivePhase, ClientMessage[]>();
  coordinator: CoordinatorState;
  /** Client messages of the open phase not yet handed to the coordinator. */
  pending: ClientMessage[] = [];

  constructor(o: HarnessOptions) {
    this.params = validateRoundParams({ dim: o.dim ?? 24, cohort: o.n, neighbors: o.neighbors, threshold: o.threshold });
    this.parties = makeIdentities(o.enrolled ?? o.n);
    this.view = roundViewDigest({ round: this.round, params: this.params });
    this.directory = new Map(this.parties.map((p) => [p.id, p.publicKey]));
    this.coordinator = startCoordinator({ params: this.params, round: this.round, view: this.view, identityOf: (id) => this.directory.get(id) });
    const m = this.params.dim + 1;
    this.parties.slice(0, o.n).forEach((p, i) => {
      const input = Uint32Array.from({ length: m }, (_, j) => (j === m - 1 ? i + 1 : (i * 7919 + j * 104729) % 2 ** this.params.bits));
      this.inputs.set(p.id, input);
      const { next, outbound } = startClient({
        clientId: p.id,
        identityKey: p.identityKey,
        params: this.params,
        round: this.round,
        view: this.view,
        identityOf: (id) => this.directory.get(id),
        input: () => input,
      });
      this.clients.set(p.id, next);
      this.initial.set(p.id, next);
      this.record(outbound);
    });
  }

  get ids(): string[] {
    return [...this.inputs.keys()];
  }

  party(id: string): Party {
    return this.parties.find((p) => p.id === id)!;
  }

  private record(msgs: ClientMessage[]): void {
    for (const m of msgs) {
      const phase = TAKEN_IN[m.type];
      this.produced.set(phase, [...(this.produced.get(phase) ?? []), m]);
      this.pending.push(m);
    }
  }

  /** Client messages of `phase` from `id`. */
  messageOf<M extends ClientMessage>(phase: LivePhase, id: string): M {
    const m = this.produced.get(phase)?.find((x) => x.clientId === id);
    if (!m) throw new Error(`no ${phase} message from ${id}`);
    return m as M;
  }

  send(msg: ClientMessage): void {
    this.coordinator = receive(this.coordinator, msg).next;
  }

  /** Hands the pending messages to the coordinator; the clients in `drop` crash instead. */
  sendPending(drop: readonly string[] = []): void {
    for (const id of drop) this.crashed.add(id);
    const msgs = this.pending;
    this.pending = [];
    for (const m of msgs) if (!this.crashed.has(m.clientId)) this.send(m);
  }

  /** Closes the open phase and delivers the coordinator's messages to the clients still up. */
  advance(): void {
    const { next, outbound } = close(this.coordinator);
    this.coordinator = next;
    for (const { to, message } of outbound) {
      if (this.crashed.has(to)) continue;
      const tr = handle(this.clients.get(to)!, message);
      this.clients.set(to, tr.next);
      this.record(tr.outbound);
    }
  }

  /** Runs the round until `phase` is open, its client messages pending (not yet sent). */
  runTo(phase: LivePhase, drops: Drops = {}): this {
    while (this.coordinator.phase !== phase) {
      if (isFinal(this.coordinator)) throw new Error(`the round ended (${this.coordinator.phase}) before ${phase}`);
      this.sendPending(drops[this.coordinator.phase as LivePhase]);
      this.advance();
    }
    return this;
  }

  /** Runs the round to its end. */
  finish(drops: Drops = {}): CoordinatorState {
    while (!isFinal(this.coordinator)) {
      this.sendPending(drops[this.coordinator.phase as LivePhase]);
      this.advance();
    }
    return this.coordinator;
  }

  /** The plain sum mod 2^32 of the inputs of `survivors`. */
  plainSum(survivors: readonly string[]): number[] {
    const out = new Uint32Array(this.params.dim + 1);
    for (const id of survivors) {
      const x = this.inputs.get(id)!;
      for (let i = 0; i < out.length; i++) out[i] = (out[i]! + x[i]!) >>> 0;
    }
    return Array.from(out);
  }

  /** Finishes the round and checks it completed with exactly the sum of `survivors`' inputs. */
  expectExactCompletion(survivors: readonly string[] = this.ids, drops: Drops = {}): void {
    const final = this.finish(drops);
    expect(final.phase).toBe(Phase.Completed);
    if (final.phase !== Phase.Completed) return;
    expect([...final.survivors].sort()).toEqual([...survivors].sort());
    expect(Array.from(final.sum)).toEqual(this.plainSum(survivors));
  }
}

const TAKEN_IN: Record<ClientMessage['type'], LivePhase> = {
  'advertise-keys': Phase.AdvertiseKeys,
  decline: Phase.AdvertiseKeys,
  'share-keys': Phase.ShareKeys,
  'masked-input': Phase.MaskedInput,
  'consistency-signature': Phase.ConsistencyCheck,
  'unmask-response': Phase.Unmasking,
};

/** A canonical serialization of a coordinator state: equal strings, equal states. */
function fingerprint(state: CoordinatorState): string {
  const enc = (v: unknown): unknown => {
    if (v instanceof Roster) return { sessionId: enc(v.sessionId), ids: v.ids, entries: enc(v.entries), classic: v.classic };
    if (ArrayBuffer.isView(v)) return `${v.constructor.name}:${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')}`;
    if (v instanceof Map) return { map: [...v].map(([k, x]) => [enc(k), enc(x)]) };
    if (v instanceof Set) return { set: [...v].map(enc) };
    if (v instanceof KeyObject) return 'key-object';
    if (Array.isArray(v)) return v.map(enc);
    if (typeof v === 'function') return 'function';
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, enc(x)]));
    return v;
  };
  return JSON.stringify(enc(state));
}

/** `msg` is refused with `code` (and a message matching `text`), and the state is unchanged. */
function expectRefused(h: Harness, msg: unknown, code: ErrorCode, text?: RegExp): void {
  const before = fingerprint(h.coordinator);
  const phase = h.coordinator.phase;
  let err: unknown;
  try {
    receive(h.coordinator, msg as ClientMessage);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(AegisError);
  expect(isAegisError(err) && err.code).toBe(code);
  if (text) expect((err as Error).message).toMatch(text);
  expect(h.coordinator.phase).toBe(phase);
  expect(fingerprint(h.coordinator)).toBe(before);
}

const flipBit = (b: Uint8Array, bit: number): Uint8Array => {
  const c = b.slice();
  c[bit >>> 3]! ^= 1 << (bit & 7);
  return c;
};

/** A copy of a message sharing nothing with it (a resend as a transport would decode it). */
function copyOf<T>(v: T): T {
  if (v instanceof Uint32Array) return Uint32Array.from(v) as T;
  if (v instanceof Uint8Array) return Uint8Array.from(v) as T;
  if (Array.isArray(v)) return v.map(copyOf) as T;
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, copyOf(x)])) as T;
  return v;
}

const otherSession = sha256('aegis-test:another-session');

/** A signed advertisement of chosen keys by `party`. */
function advertisement(h: Harness, party: Party, cPk: Uint8Array, sPk: Uint8Array, round: RoundRef = h.round): AdvertiseKeys {
  const signature = ed25519Sign(party.identityKey, advertiseTranscript(round, h.view, party.id, cPk, sPk));
  return { type: 'advertise-keys', round, clientId: party.id, cPk, sPk, view: h.view, signature };
}

// ---------------------------------------------------------------------------------------------

describe('the coordinator refuses bad messages with typed errors and keeps its state', () => {
  test('a message of another phase is refused with wrong-phase in every phase, and the round still completes exactly', () => {
    const h = new Harness({ n: 4 });
    const [a] = h.ids as [string];
    const fakeShare: ShareKeys = { type: 'share-keys', sessionId: otherSession, clientId: a, shares: [] };
    expectRefused(h, fakeShare, ErrorCode.WrongPhase, /advertise-keys/);
    h.runTo(Phase.ShareKeys);
    expectRefused(h, h.messageOf(Phase.AdvertiseKeys, a), ErrorCode.WrongPhase);
    h.runTo(Phase.MaskedInput);
    expectRefused(h, h.messageOf(Phase.ShareKeys, a), ErrorCode.WrongPhase);
    h.runTo(Phase.ConsistencyCheck);
    expectRefused(h, h.messageOf(Phase.MaskedInput, a), ErrorCode.WrongPhase);
    h.runTo(Phase.Unmasking);
    expectRefused(h, h.messageOf(Phase.ConsistencyCheck, a), ErrorCode.WrongPhase);
    // A message of no known type is malformed, whatever the phase.
    expectRefused(h, { type: 'no-such-message' }, ErrorCode.InvalidArgument, /malformed message/);
    h.expectExactCompletion();
    expectRefused(h, h.messageOf(Phase.Unmasking, a), ErrorCode.WrongPhase, /completed/);
  });

  const PHASES: LivePhase[] = [Phase.AdvertiseKeys, Phase.ShareKeys, Phase.MaskedInput, Phase.ConsistencyCheck, Phase.Unmasking];

  test.each(PHASES)('an identical resend in %s is refused with already-exists, says it is identical, and changes nothing', (phase) => {
    const h = new Harness({ n: 4 }).runTo(phase);
    const first = h.pending[0]!;
    h.sendPending();
    const sum = 'sum' in h.coordinator ? h.coordinator.sum.slice() : null;
    expectRefused(h, copyOf(first), ErrorCode.AlreadyExists, /identical/);
    if (sum) expect('sum' in h.coordinator && Array.from(h.coordinator.sum)).toEqual(Array.from(sum));
    h.expectExactCompletion();
  });

  const CONFLICT: Record<LivePhase, (m: ClientMessage) => ClientMessage> = {
    [Phase.AdvertiseKeys]: (m) => ({ ...(m as AdvertiseKeys), signature: flipBit((m as AdvertiseKeys).signature, 0) }),
    [Phase.ShareKeys]: (m) => {
      const s = m as ShareKeys;
      return { ...s, shares: s.shares.map((x, i) => (i === 0 ? { ...x, ciphertext: flipBit(x.ciphertext, 100) } : x)) };
    },
    [Phase.MaskedInput]: (m) => {
      const v = (m as MaskedInput).vector.slice();
      v[0] = (v[0]! + 1) >>> 0;
      return { ...(m as MaskedInput), vector: v };
    },
    [Phase.ConsistencyCheck]: (m) => ({ ...(m as ConsistencySignature), signature: flipBit((m as ConsistencySignature).signature, 9) }),
    [Phase.Unmasking]: (m) => {
      const r = m as UnmaskResponse;
      return { ...r, selfMaskShares: r.selfMaskShares.map((s, i) => (i === 0 ? { ...s, value: flipBit(s.value, 263) } : s)) };
    },
  };

  test.each(PHASES)('a conflicting resend in %s is refused with already-exists, says it conflicts, and changes nothing', (phase) => {
    const h = new Harness({ n: 4 }).runTo(phase);
    const first = h.pending[0]!;
    h.sendPending();
    const sum = 'sum' in h.coordinator ? h.coordinator.sum.slice() : null;
    expectRefused(h, CONFLICT[phase](first), ErrorCode.AlreadyExists, /conflicting/);
    if (sum) expect('sum' in h.coordinator && Array.from(h.coordinator.sum)).toEqual(Array.from(sum));
    h.expectExactCompletion();
  });

  // Messages as a buggy or hostile client could hand them over in process (the types say
  // otherwise): every check must still end in a typed refusal, never a TypeError. The shape
  // check runs first, so a malformed resend is invalid-argument, not already-exists.
  test.each<[string, LivePhase, boolean, ErrorCode, (m: ClientMessage) => unknown]>([
    ['an advertisement resent with keys and signature that are not bytes', Phase.AdvertiseKeys, true, ErrorCode.InvalidArgument, (m) => ({ ...m, cPk: undefined, sPk: undefined, signature: 'c2lnbmF0dXJl' })],
    ['a consistency signature resent as a string', Phase.ConsistencyCheck, true, ErrorCode.InvalidArgument, (m) => ({ ...m, signature: 'c2lnbmF0dXJl' })],
    ['a share list with a null entry', Phase.ShareKeys, false, ErrorCode.InvalidArgument, (m) => ({ ...m, shares: (m as ShareKeys).shares.map((x, i) => (i === 0 ? null : x)) })],
    ['an unmasking response with a null share', Phase.Unmasking, false, ErrorCode.InvalidArgument, (m) => ({ ...m, selfMaskShares: (m as UnmaskResponse).selfMaskShares.map((x, i) => (i === 0 ? null : x)) })],
  ])('%s is refused with a typed error and changes nothing', (_name, phase, resend, code, malform) => {
    const h = new Harness({ n: 4 }).runTo(phase);
    const [first, ...rest] = h.pending;
    h.pending = resend ? [first!, ...rest] : rest;
    h.sendPending();
    expectRefused(h, malform(first!), code);
    h.pending = resend ? [] : [first!];
    h.expectExactCompletion();
  });

  test('a masked input of the wrong length or type is refused with invalid-argument, one longer than dim + 1 with too-large, and the sum is unchanged', () => {
    const h = new Harness({ n: 4, dim: 24 }).runTo(Phase.MaskedInput);
    const [first, ...rest] = h.pending as MaskedInput[];
    for (const m of rest) h.send(m);
    const sum = 'sum' in h.coordinator ? h.coordinator.sum.slice() : null;
    const m = first!;
    const withVector = (vector: unknown): unknown => ({ ...m, vector });
    expectRefused(h, withVector(m.vector.subarray(0, 24)), ErrorCode.InvalidArgument, /24 words, the round takes 25/);
    expectRefused(h, withVector(new Uint32Array(0)), ErrorCode.InvalidArgument);
    expectRefused(h, withVector(Array.from(m.vector)), ErrorCode.InvalidArgument);
    expectRefused(h, withVector(new Float64Array(m.vector)), ErrorCode.InvalidArgument);
    expectRefused(h, withVector(new Int32Array(m.vector)), ErrorCode.InvalidArgument);
    const longer = new Uint32Array(26);
    longer.set(m.vector);
    expectRefused(h, withVector(longer), ErrorCode.TooLarge, /26 words/);
    expectRefused(h, withVector(new Uint32Array(1 << 16)), ErrorCode.TooLarge);
    expect('sum' in h.coordinator && Array.from(h.coordinator.sum)).toEqual(Array.from(sum!));
    h.pending = [m];
    h.expectExactCompletion();
  });

  test('a masked input reduced to other bits than the round sums at, or with a word of more bits, is refused with invalid-argument and the sum is unchanged', () => {
    const h = new Harness({ n: 4, dim: 24 }).runTo(Phase.MaskedInput);
    const r = sumBitsOf(h.params);
    expect(r).toBe(16 + 2);
    const [first, ...rest] = h.pending as MaskedInput[];
    expect(first!.bits).toBe(r);
    expect(first!.vector.every((w) => w < 2 ** r)).toBe(true);
    for (const m of rest) h.send(m);
    const sum = 'sum' in h.coordinator ? h.coordinator.sum.slice() : null;
    const m = first!;
    // The honest words, claimed at other widths (narrower: reduced further, so they fit).
    expectRefused(h, { ...m, bits: 32 }, ErrorCode.InvalidArgument, /reduced to 32 bits, the round's sum has 18/);
    expectRefused(h, { ...m, bits: r + 1 }, ErrorCode.InvalidArgument, /reduced to 19 bits/);
    expectRefused(h, { ...m, bits: r - 1, vector: m.vector.map((w) => w % 2 ** (r - 1)) }, ErrorCode.InvalidArgument, /reduced to 17 bits/);
    // The right width, but a word above it: not a word of Z_{2^r}.
    const wide = m.vector.slice();
    wide[7] = wide[7]! + 2 ** r;
    expectRefused(h, { ...m, vector: wide }, ErrorCode.InvalidArgument, /a word of more than 18 bits/);
    for (const bits of [0, 33, 1.5, Number.NaN]) expectRefused(h, { ...m, bits }, ErrorCode.InvalidArgument);
    expect('sum' in h.coordinator && Array.from(h.coordinator.sum)).toEqual(Array.from(sum!));
    h.pending = [m];
    h.expectExactCompletion();
  });

  test('a message from a sender outside the current set is refused with unknown-sender in every phase', () => {
    // Nine clients, t = 5: one drops after advertising, one after sharing, one after masking.
    const h = new Harness({ n: 9, enrolled: 10 });
    const [d1, d2, d3] = h.ids.slice(6) as [string, string, string];
    const outsider = h.parties[9]!;
    expectRefused(h, advertisement(h, { ...outsider, id: 'not-enrolled' }, x25519KeyPair().publicKey, x25519KeyPair().publicKey), ErrorCode.UnknownSender, /not enrolled/);
    h.runTo(Phase.ShareKeys);
    const sessionId = (h.pending[0] as ShareKeys).sessionId;
    expectRefused(h, { type: 'share-keys', sessionId, clientId: outsider.id, shares: [] }, ErrorCode.UnknownSender, /not in U1/);
    h.runTo(Phase.MaskedInput, { [Phase.ShareKeys]: [d1] });
    expectRefused(h, { type: 'masked-input', sessionId, clientId: d1, vector: new Uint32Array(h.params.dim + 1), bits: sumBitsOf(h.params) }, ErrorCode.UnknownSender, /not in U2/);
    h.runTo(Phase.ConsistencyCheck, { [Phase.MaskedInput]: [d2] });
    const u3 = h.ids.filter((id) => id !== d1 && id !== d2).sort();
    const sig = ed25519Sign(h.party(d2).identityKey, consistencyTranscript(sessionId, u3));
    expectRefused(h, { type: 'consistency-signature', sessionId, clientId: d2, signature: sig }, ErrorCode.UnknownSender, /not in U3/);
    h.runTo(Phase.Unmasking, { [Phase.ConsistencyCheck]: [d3] });
    expectRefused(h, { type: 'unmask-response', sessionId, clientId: d3, keyShares: [], selfMaskShares: [] }, ErrorCode.UnknownSender, /not in U4/);
    h.expectExactCompletion(u3);
  });

  test('a message naming another round or session is refused with session-mismatch in every phase', () => {
    const h = new Harness({ n: 4 });
    const [a] = h.ids as [string];
    const own = h.messageOf<AdvertiseKeys>(Phase.AdvertiseKeys, a);
    expectRefused(h, advertisement(h, h.party(a), own.cPk, own.sPk, { ...h.round, roundIndex: h.round.roundIndex + 1 }), ErrorCode.SessionMismatch);
    expectRefused(h, advertisement(h, h.party(a), own.cPk, own.sPk, { ...h.round, manifestHash: sha256('another manifest') }), ErrorCode.SessionMismatch);
    for (const phase of [Phase.ShareKeys, Phase.MaskedInput, Phase.ConsistencyCheck, Phase.Unmasking] as const) {
      h.runTo(phase);
      const m = h.pending.find((x) => x.clientId === a)!;
      expectRefused(h, { ...m, sessionId: otherSession }, ErrorCode.SessionMismatch);
      expectRefused(h, { ...m, sessionId: otherSession.subarray(0, 16) }, ErrorCode.InvalidArgument);
    }
    h.expectExactCompletion();
  });

  test('an advertisement whose signature has any one bit flipped, or is by another identity, is refused with bad-signature', () => {
    const h = new Harness({ n: 4 });
    const [a, b] = h.ids as [string, string];
    const m = h.messageOf<AdvertiseKeys>(Phase.AdvertiseKeys, a);
    for (let bit = 0; bit < m.signature.length * 8; bit++) expectRefused(h, { ...m, signature: flipBit(m.signature, bit) }, ErrorCode.BadSignature);
    const byB = ed25519Sign(h.party(b).identityKey, advertiseTranscript(h.round, h.view, a, m.cPk, m.sPk));
    expectRefused(h, { ...m, signature: byB }, ErrorCode.BadSignature);
    expectRefused(h, { ...m, sPk: x25519KeyPair().publicKey }, ErrorCode.BadSignature);
    h.expectExactCompletion();
  });

  test('an advertised key of small order is refused with low-order-point, in either slot and in every encoding', () => {
    const h = new Harness({ n: 4 });
    const [a] = h.ids as [string];
    const small = [...SMALL_ORDER_X25519_HEX].map((x) => new Uint8Array(Buffer.from(x, 'hex')));
    const withHighBit = small.map((k) => {
      const c = k.slice();
      c[31]! |= 0x80;
      return c;
    });
    const good = x25519KeyPair().publicKey;
    for (const bad of [...small, ...withHighBit]) {
      expectRefused(h, advertisement(h, h.party(a), bad, good), ErrorCode.LowOrderPoint);
      expectRefused(h, advertisement(h, h.party(a), good, bad), ErrorCode.LowOrderPoint);
    }
    expectRefused(h, advertisement(h, h.party(a), good.subarray(0, 31), x25519KeyPair().publicKey), ErrorCode.BadKeyLength);
    h.expectExactCompletion();
  });

  test('a public key already advertised under another id is refused, as is one key in both slots', () => {
    const h = new Harness({ n: 4 });
    const [a, b] = h.ids as [string, string];
    const ma = h.messageOf<AdvertiseKeys>(Phase.AdvertiseKeys, a);
    h.send(ma);
    const fresh = x25519KeyPair().publicKey;
    expectRefused(h, advertisement(h, h.party(b), ma.cPk, fresh), ErrorCode.InvalidArgument, /another id/);
    expectRefused(h, advertisement(h, h.party(b), fresh, ma.sPk), ErrorCode.InvalidArgument, /another id/);
    expectRefused(h, advertisement(h, h.party(b), ma.sPk, fresh), ErrorCode.InvalidArgument, /another id/);
    expectRefused(h, advertisement(h, h.party(b), fresh, fresh), ErrorCode.InvalidArgument, /differ/);
    h.pending = h.pending.filter((m) => m !== ma);
    h.expectExactCompletion();
  });

  test('an advertiser beyond the cohort size n is refused and the round completes with the first n', () => {
    const h = new Harness({ n: 4, enrolled: 5 });
    const extra = h.parties[4]!;
    h.sendPending();
    expectRefused(h, advertisement(h, extra, x25519KeyPair().publicKey, x25519KeyPair().publicKey), ErrorCode.UnknownSender, /full/);
    expect(h.coordinator.phase === Phase.AdvertiseKeys && h.coordinator.received.size).toBe(4);
    h.expectExactCompletion();
  });

  test('an unmasking response with shares that were not asked for, too few, or one twice is refused with invalid-argument', () => {
    // Five clients, t = 3; one drops after sharing, so survivors are asked for its key share.
    const h = new Harness({ n: 5 });
    const dropped = h.ids[4]!;
    h.runTo(Phase.Unmasking, { [Phase.MaskedInput]: [dropped] });
    const r = h.pending[0] as UnmaskResponse;
    expect(r.keyShares.map((s) => s.owner)).toEqual([dropped]);
    const survivor = r.selfMaskShares[0]!;
    const value = survivor.value;
    const variants: unknown[] = [
      { ...r, selfMaskShares: [...r.selfMaskShares, { owner: dropped, value }] }, // both shares of the dropped client
      { ...r, keyShares: [...r.keyShares, { owner: survivor.owner, value }] }, // both shares of a survivor
      { ...r, keyShares: [{ owner: survivor.owner, value }] }, // a key share of a survivor instead
      { ...r, selfMaskShares: [{ owner: dropped, value }, ...r.selfMaskShares.slice(1)] }, // swapped owner
      { ...r, selfMaskShares: r.selfMaskShares.slice(1) }, // one missing
      { ...r, selfMaskShares: [survivor, survivor, ...r.selfMaskShares.slice(2)] }, // one twice, another missing
      { ...r, keyShares: [{ owner: r.clientId, value }] }, // its own key
    ];
    for (const v of variants) expectRefused(h, v, ErrorCode.InvalidArgument);
    h.expectExactCompletion(h.ids.filter((id) => id !== dropped));
  });
});

// ---------------------------------------------------------------------------------------------

/** Every typed array reachable from `root` (each object visited once). */
function typedArraysIn(root: unknown): ArrayBufferView[] {
  const seen = new Set<unknown>();
  const out: ArrayBufferView[] = [];
  const walk = (v: unknown): void => {
    if (v === null || typeof v !== 'object' || seen.has(v)) return;
    seen.add(v);
    if (ArrayBuffer.isView(v)) {
      out.push(v);
      return;
    }
    if (v instanceof Map) {
      for (const [k, x] of v) {
        walk(k);
        walk(x);
      }
    } else if (v instanceof Set) for (const x of v) walk(x);
    else for (const x of Object.values(v)) walk(x);
  };
  walk(root);
  return out;
}

describe('the running sum', () => {
  test('takes O(m) memory: after all masked inputs the state holds one vector of length dim + 1, the sum, and no copy of any input', () => {
    const dim = 2047;
    const vectorBytes = (dim + 1) * 4;
    const sizes = [4, 9].map((n) => {
      const h = new Harness({ n, dim }).runTo(Phase.MaskedInput);
      const sent = h.pending.map((m) => (m as MaskedInput).vector);
      h.sendPending();
      const state = h.coordinator;
      if (state.phase !== Phase.MaskedInput) throw new Error('not in masked-input');
      const arrays = typedArraysIn(state);
      const vectors = arrays.filter((a) => a.byteLength >= vectorBytes / 4);
      expect(vectors).toHaveLength(1);
      expect(vectors[0]).toBe(state.sum);
      expect(state.sum).toBeInstanceOf(Uint32Array);
      expect(state.sum).toHaveLength(dim + 1);
      // No buffer of a received vector is retained: changing them changes nothing.
      for (const v of sent) expect(arrays.some((a) => a.buffer === v.buffer)).toBe(false);
      const before = Array.from(state.sum);
      for (const v of sent) v.fill(0xdeadbeef);
      expect(Array.from(state.sum)).toEqual(before);
      // What the coordinator holds grows with n by keys and digests only, never by vectors.
      const total = arrays.reduce((acc, a) => acc + a.byteLength, 0);
      expect(total).toBeLessThan(vectorBytes + n * 1024);
      return total;
    });
    expect(sizes[1]! - sizes[0]!).toBeLessThan(vectorBytes / 2);
  });
});

describe('round parameters', () => {
  const base = { dim: 10, cohort: 10 };

  test('n * 2^b >= 2^32 is refused with overflow-risk, by validateRoundParams and by the coordinator', () => {
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return isAegisError(e) ? e.code : 'untyped';
      }
      return undefined;
    };
    expect(code(() => validateRoundParams({ ...base, cohort: 256, bits: 24 }))).toBe(ErrorCode.OverflowRisk);
    expect(code(() => validateRoundParams({ ...base, cohort: 4096, bits: 20 }))).toBe(ErrorCode.OverflowRisk);
    expect(code(() => validateRoundParams({ ...base, cohort: 255, bits: 24 }))).toBeUndefined();
    expect(code(() => validateRoundParams({ ...base, cohort: 4095, bits: 20 }))).toBeUndefined();
    const round = { manifestHash: sha256('x'), roundIndex: 0 };
    const raw: RoundParams = { dim: 10, cohort: 300, threshold: 150, neighbors: 299, clip: 1, bits: 24 };
    expect(code(() => startCoordinator({ params: raw, round, view: roundViewDigest({ round, params: raw }), identityOf: () => undefined }))).toBe(ErrorCode.OverflowRisk);
  });

  test.each<[string, RoundParamsInput]>([
    ['t > k', { ...base, neighbors: 4, threshold: 5 }],
    ['t > n - 1 in classic SecAgg', { ...base, threshold: 10 }],
    ['t = 1', { ...base, threshold: 1 }],
    ['t = 0', { ...base, threshold: 0 }],
    ['t not a majority of the k neighbours', { ...base, neighbors: 4, threshold: 2 }],
    ['t = k / 2 in classic SecAgg', { ...base, cohort: 11, threshold: 5 }],
    ['k = 1 (a perfect matching)', { ...base, neighbors: 1 }],
  ])('%s is refused with invalid-argument', (_name, input) => {
    expect(() => validateRoundParams(input)).toThrow(AegisError);
    try {
      validateRoundParams(input);
    } catch (e) {
      expect(isAegisError(e, ErrorCode.InvalidArgument)).toBe(true);
    }
  });

  test('t = k and t = floor(k/2) + 1, the default, are accepted', () => {
    expect(validateRoundParams({ ...base, neighbors: 4, threshold: 4 })).toMatchObject({ neighbors: 4, threshold: 4 });
    expect(validateRoundParams({ ...base, neighbors: 4, threshold: 3 })).toMatchObject({ neighbors: 4, threshold: 3 });
    expect(validateRoundParams({ ...base, neighbors: 4 })).toMatchObject({ neighbors: 4, threshold: 3 });
    expect(validateRoundParams({ ...base, threshold: 5 })).toMatchObject({ neighbors: 9, threshold: 5 });
  });
});

describe('reconstruction', () => {
  test('a tampered key share that reconstructs another s_sk aborts the round with reconstruction-mismatch and publishes nothing', () => {
    // Five clients, t = 3; one drops after sharing, so its s_sk is reconstructed from key shares.
    const h = new Harness({ n: 5 });
    const t = h.params.threshold;
    const dropped = h.ids[4]!;
    h.runTo(Phase.Unmasking, { [Phase.MaskedInput]: [dropped] });
    const own = h.initial.get(dropped)!;
    if (own.phase !== Phase.AdvertiseKeys) throw new Error(`no round keys in ${own.phase}`);
    const responses = h.pending as UnmaskResponse[];
    // Shift every key share by the same delta: any t of them then interpolate to s_sk + delta.
    const delta = 1n << 200n;
    const shares = responses.map((r) => ({ x: h.ids.slice().sort().indexOf(r.clientId) + 1, y: decodeShareValue(r.keyShares[0]!.value) }));
    expect(Buffer.from(combine(shares, t))).toEqual(Buffer.from(own.keys.sSk));
    const tampered = responses.map((r) => ({ ...r, keyShares: r.keyShares.map((s) => ({ ...s, value: encodeShareValue(decodeShareValue(s.value) + delta) })) }));
    const shifted = combine(shares.map((s) => ({ ...s, y: s.y + delta })), t);
    expect(Buffer.from(shifted)).not.toEqual(Buffer.from(own.keys.sSk));
    h.pending = [];
    for (const r of tampered) h.send(r);

    const { next, outbound } = close(h.coordinator);
    expect(outbound).toEqual([]);
    expect(next).toMatchObject({ phase: Phase.Aborted, reason: AbortReason.ReconstructionMismatch, at: Phase.Unmasking });
    expect(next.phase === Phase.Aborted && next.detail).toMatch(/does not match its advertised public key/);
    expect(next).not.toHaveProperty('sum');
    expect(next).not.toHaveProperty('result');
    expect(next).not.toHaveProperty('survivors');
    expect(typedArraysIn(next).some((a) => a.byteLength >= (h.params.dim + 1) * 4)).toBe(false);
  });
});

describe('broadcasts', () => {
  test('the advertise broadcast and the consistency request share their content across members (built and encoded once per round); the per-member messages do not', () => {
    const h = new Harness({ n: 5, dim: 8, neighbors: 4, threshold: 3 });
    const keys = new Map<string, Set<object>>();
    const messages = new Map<string, number>();
    while (!isFinal(h.coordinator)) {
      h.sendPending();
      const { outbound } = close(h.coordinator);
      for (const { message } of outbound) {
        keys.set(message.type, (keys.get(message.type) ?? new Set()).add(sharedContentOf(message)));
        messages.set(message.type, (messages.get(message.type) ?? 0) + 1);
      }
      h.advance();
    }
    expect(Object.fromEntries(messages)).toEqual({ 'advertise-broadcast': 5, 'share-broadcast': 5, 'consistency-request': 5, 'unmask-request': 5 });
    expect(Object.fromEntries([...keys].map(([t, s]) => [t, s.size]))).toEqual({ 'advertise-broadcast': 1, 'share-broadcast': 5, 'consistency-request': 1, 'unmask-request': 5 });
  });
});
