/**
 * The real client state machine against a hostile coordinator (Bonawitz et al. CCS'17 §4, Bell et
 * al. CCS'20), in the manner of fcp's `secagg_client_*_test`. Each test takes the honest message
 * of one phase from a real round (test/support/round-fixture.ts), tampers with it as a malicious
 * coordinator could, and hands it to the client: the client must end in `aborted` with the
 * precise reason and send nothing — above all no unmasking response, no share.
 *
 * Classic SecAgg: n = 7, k = 6, t = 4. client-6 drops before sharing its keys (U2 = 6) and
 * client-5 after sharing them (U3 = 5), so the client under test, client-2, is asked for the key
 * share of client-5 and the self-mask shares of the four other survivors, with exactly t valid
 * consistency signatures from others. SecAgg+: n = 12, k = 4, t = 3, one neighbour of the client
 * under test dropping after sharing and one non-neighbour before.
 */
import { describe, expect, test } from '@jest/globals';
import { finish, handle, type ClientState, type ClientTransition } from '../../client/round/index.js';
import { x25519KeyPair } from '../../shared/crypto/x25519.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { AdvertiseBroadcast, AdvertisedEntry, ServerMessage, UnmaskRequest, UnmaskResponse } from '../../shared/protocol/messages.js';
import { Roster } from '../../shared/protocol/roster.js';
import { advertiseTranscript } from '../../shared/protocol/session.js';
import { roundViewDigest } from '../../shared/protocol/view.js';
import { ed25519Sign } from '../../shared/crypto/ed25519.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { HonestRound, manifestHash, STEPS, type PhaseOf, type Step } from '../support/round-fixture.js';

// ---------------------------------------------------------------------------------------------
// Fixtures and helpers

const once = <T>(make: () => T): (() => T) => {
  let v: T | undefined;
  return () => (v ??= make());
};

/** Classic SecAgg. */
const ME = 'client-2';
const DROPPED = 'client-5'; // shared its keys, sent no masked input: in U2 \ U3
const NEVER_SHARED = 'client-6'; // advertised keys only: in U1 \ U2
const SURVIVORS_BUT_ME = ['client-0', 'client-1', 'client-3', 'client-4'];
const classicDrops = { beforeShare: [NEVER_SHARED], beforeMask: [DROPPED] };

/** A real earlier round of the same job and the same clients; the round under test follows it. */
const earlier = once(() => new HonestRound({ n: 7, roundIndex: 0, drops: () => classicDrops }));
const classic = once(() => new HonestRound({ n: 7, roundIndex: 1, identities: earlier().identities, drops: () => classicDrops }));

/** SecAgg+: a neighbour of client-00 drops after sharing, a client far from both before. */
const PLUS_ME = 'client-00';
function plusDrops(roster: Roster, params: { threshold: number }): { beforeShare: string[]; beforeMask: string[] } {
  const mine = roster.neighboursOf(PLUS_ME);
  for (const d of mine) {
    for (const w of roster.ids) {
      if (w === PLUS_ME || w === d || mine.includes(w)) continue;
      const gone = new Set([w, d]);
      // No client keeps fewer than t live neighbours, so the honest round can finish.
      const ok = roster.ids.every((v) => v === w || roster.neighboursOf(v).filter((x) => !gone.has(x)).length >= params.threshold);
      if (ok) return { beforeShare: [w], beforeMask: [d] };
    }
  }
  throw new Error('no drop pair keeps the SecAgg+ round alive');
}
const plus = once(() => new HonestRound({ n: 12, k: 4, drops: plusDrops }));

function expectAbort(t: ClientTransition, reason: AbortReason): void {
  const sent = t.outbound.map((m) => m.type);
  const got = t.next.phase === Phase.Aborted ? { phase: t.next.phase, reason: t.next.reason, sent } : { phase: t.next.phase, sent };
  expect(got).toEqual({ phase: Phase.Aborted, reason, sent: [] });
  expect(t.outbound).toEqual([]);
  // The aborted state keeps nothing of the round: no keys, no seed, no held shares, no response.
  expect(Object.keys(t.next).sort()).toEqual(['at', 'cfg', 'detail', 'phase', 'reason', 'stats']);
}

/** The reason the client aborts with, or its phase when it did not abort (for loops). */
function outcome(t: ClientTransition): string {
  if (t.outbound.length > 0) return `sent ${t.outbound.map((m) => m.type).join(',')}`;
  return t.next.phase === Phase.Aborted ? t.next.reason : t.next.phase;
}

function flipBit(b: Uint8Array, bit: number): Uint8Array {
  const c = Uint8Array.from(b);
  c[bit >> 3] = c[bit >> 3]! ^ (1 << (bit & 7));
  return c;
}

function entryOf(msg: AdvertiseBroadcast, id: string): AdvertisedEntry {
  const e = msg.entries.find((x) => x.clientId === id);
  if (!e) throw new Error(`no entry ${id}`);
  return e;
}

function onlyResponse(t: ClientTransition): UnmaskResponse {
  expect(t.outbound.map((m) => m.type)).toEqual(['unmask-response']);
  return t.outbound[0] as UnmaskResponse;
}

const owners = (shares: { owner: string }[]): string[] => shares.map((s) => s.owner);

/** Checks a response reveals exactly what `req` asked, each value the share this client holds. */
function expectExactlyRequested(fx: HonestRound, me: string, req: UnmaskRequest, res: UnmaskResponse): void {
  const held = fx.stateBefore('unmask-request', me).held;
  expect(res.clientId).toBe(me);
  expect(Buffer.compare(res.sessionId, fx.sessionId)).toBe(0);
  expect(owners(res.keyShares)).toEqual(req.keyShareOf);
  expect(owners(res.selfMaskShares)).toEqual(req.selfMaskShareOf);
  for (const s of res.keyShares) expect(s.value).toEqual(held.get(s.owner)!.s);
  for (const s of res.selfMaskShares) expect(s.value).toEqual(held.get(s.owner)!.b);
}

const SMALL_ORDER_POINTS: [string, string][] = [
  ['0', '0000000000000000000000000000000000000000000000000000000000000000'],
  ['1', '0100000000000000000000000000000000000000000000000000000000000000'],
  ['a point of order 8', 'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800'],
  ['the other point of order 8', '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157'],
  ['p - 1', 'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
  ['p', 'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
  ['p + 1', 'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
];

// ---------------------------------------------------------------------------------------------

describe('the honest round the tests tamper with (positive controls)', () => {
  test.each([
    ['classic SecAgg', classic],
    ['SecAgg+', plus],
  ])('in %s the coordinator unmasks exactly the sum of the survivors’ inputs', (_name, fx) => {
    const r = fx();
    expect(r.outcome.phase).toBe(Phase.Completed);
    expect(r.outcome.survivors.length).toBeGreaterThanOrEqual(r.params.threshold);
    expect(r.outcome.sum).toEqual(r.plainSum);
  });

  test('in classic SecAgg U1, U2 and U3 are as the drops make them', () => {
    const fx = classic();
    expect(fx.roster.ids).toHaveLength(7);
    expect(fx.u2).toEqual(['client-0', 'client-1', 'client-2', 'client-3', 'client-4', 'client-5']);
    expect(fx.u3).toEqual(['client-0', 'client-1', 'client-2', 'client-3', 'client-4']);
    expect(fx.params).toMatchObject({ cohort: 7, neighbors: 6, threshold: 4 });
    const req = fx.message('unmask-request', ME);
    expect(req.keyShareOf).toEqual([DROPPED]);
    expect(req.selfMaskShareOf).toEqual(SURVIVORS_BUT_ME);
  });

  test.each([
    ['classic SecAgg', classic, ME],
    ['SecAgg+', plus, PLUS_ME],
  ])('in %s, with the untampered messages, the client completes every phase and its response contains exactly the requested shares', (_name, fx, me) => {
    const r = fx();
    let state: ClientState = r.startState(me);
    let last: ClientTransition | null = null;
    for (const step of STEPS) {
      last = handle(state, r.message(step, me));
      expect(last.next.phase).not.toBe(Phase.Aborted);
      expect(last.outbound).toHaveLength(1);
      state = last.next;
    }
    expect(state.phase).toBe(Phase.Unmasking);
    const req = r.message('unmask-request', me);
    expect(req.keyShareOf.length).toBeGreaterThan(0);
    expect(req.selfMaskShareOf.length).toBeGreaterThan(0);
    expectExactlyRequested(r, me, req, onlyResponse(last!));
    expect(finish(state).phase).toBe(Phase.Completed);
  });

  test('in SecAgg+ the client holds shares of its k neighbours only and is asked only for theirs', () => {
    const fx = plus();
    const mine = fx.roster.neighboursOf(PLUS_ME);
    expect(mine).toHaveLength(4);
    const [w] = fx.droppedBeforeShare;
    const [d] = fx.droppedBeforeMask;
    expect(mine).toContain(d);
    expect(mine).not.toContain(w);
    const req = fx.message('unmask-request', PLUS_ME);
    expect(req.keyShareOf).toEqual([d]);
    expect(req.selfMaskShareOf).toEqual(mine.filter((v) => v !== d));
    expect(req.signatures.map((s) => s.clientId).sort()).toEqual(mine.filter((v) => v !== d));
  });

  test('extra invalid signatures next to t valid ones do not stop an honest client from answering', () => {
    const fx = classic();
    const req = fx.message('unmask-request', ME);
    const junk = [
      { clientId: 'client-0', signature: new Uint8Array(64) },
      { clientId: 'nobody', signature: new Uint8Array(64) },
      fx.consistencySignature(DROPPED, fx.u3),
      { clientId: 'client-1', signature: flipBit(req.signatures[1]!.signature, 3) },
    ];
    req.signatures = [...junk, ...req.signatures, ...junk];
    expectExactlyRequested(fx, ME, req, onlyResponse(handle(fx.stateBefore('unmask-request', ME), req)));
  });

  test('an unmasking request listing U3 and the shares in another order is the same request', () => {
    const fx = classic();
    const req = fx.message('unmask-request', ME);
    req.u3.reverse();
    req.selfMaskShareOf.reverse();
    req.signatures.reverse();
    const res = onlyResponse(handle(fx.stateBefore('unmask-request', ME), req));
    expect(owners(res.selfMaskShares)).toEqual([...SURVIVORS_BUT_ME].reverse());
    expect(owners(res.keyShares)).toEqual([DROPPED]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('AdvertiseKeys: a tampered U1 broadcast makes the client abort before it shares anything', () => {
  const run = (tamper: (m: AdvertiseBroadcast) => void): ClientTransition => {
    const fx = classic();
    const msg = fx.message('advertise-broadcast', ME);
    tamper(msg);
    return handle(fx.startState(ME), msg);
  };

  test('a U1 broadcast that leaves this client out makes it abort as listed dead while alive', () => {
    expectAbort(run((m) => (m.entries = m.entries.filter((e) => e.clientId !== ME))), AbortReason.ListedDeadWhileAlive);
  });

  test('a U1 broadcast with fewer than t clients makes the client abort', () => {
    expectAbort(run((m) => (m.entries = m.entries.filter((e) => ['client-0', 'client-1', ME].includes(e.clientId)))), AbortReason.TooFewClients);
  });

  test('a U1 broadcast that lists one client twice makes the client abort', () => {
    expectAbort(
      run((m) => {
        const i = m.entries.findIndex((e) => e.clientId === 'client-3');
        m.entries[i] = structuredClone(entryOf(m, 'client-4'));
      }),
      AbortReason.DuplicateId,
    );
  });

  test('a U1 broadcast naming a client the PKI does not know makes the client abort', () => {
    expectAbort(run((m) => (entryOf(m, 'client-4').clientId = 'client-9')), AbortReason.UnknownId);
  });

  test('a U1 broadcast naming a malformed client id makes the client abort', () => {
    expectAbort(run((m) => (entryOf(m, 'client-4').clientId = 'client 4')), AbortReason.UnknownId);
  });

  test('a U1 broadcast with more clients than the cohort makes the client abort', () => {
    expectAbort(run((m) => m.entries.push({ ...structuredClone(entryOf(m, 'client-4')), clientId: 'client-7' })), AbortReason.UnknownId);
  });

  test.each([
    [31, 'c_pk'],
    [33, 'c_pk'],
    [31, 's_pk'],
    [33, 's_pk'],
    [0, 's_pk'],
  ] as const)('a U1 broadcast carrying a %i-byte %s makes the client abort with bad-key', (len, which) => {
    expectAbort(
      run((m) => {
        const e = entryOf(m, 'client-4');
        const k = which === 'c_pk' ? e.cPk : e.sPk;
        const bad = new Uint8Array(len);
        bad.set(k.subarray(0, Math.min(len, 32)));
        if (which === 'c_pk') e.cPk = bad;
        else e.sPk = bad;
      }),
      AbortReason.BadKey,
    );
  });

  test.each(SMALL_ORDER_POINTS)('a U1 broadcast carrying the small-order point %s as a peer’s key makes the client abort with bad-key', (_name, hex) => {
    const canonical = new Uint8Array(Buffer.from(hex, 'hex'));
    const highBit = Uint8Array.from(canonical);
    highBit[31] = highBit[31]! | 0x80; // RFC 7748 ignores the top bit: the same point
    for (const point of [canonical, highBit]) {
      expectAbort(run((m) => (entryOf(m, 'client-4').cPk = point)), AbortReason.BadKey);
      expectAbort(run((m) => (entryOf(m, 'client-4').sPk = point)), AbortReason.BadKey);
    }
  });

  test('a U1 broadcast in which one public key appears under two ids makes the client abort with bad-key', () => {
    expectAbort(run((m) => (entryOf(m, 'client-4').sPk = Uint8Array.from(entryOf(m, 'client-1').sPk))), AbortReason.BadKey);
    expectAbort(run((m) => (entryOf(m, 'client-4').cPk = Uint8Array.from(entryOf(m, 'client-1').sPk))), AbortReason.BadKey);
  });

  test('a U1 broadcast in which this client’s own key appears under a peer’s id makes the client abort with bad-key', () => {
    expectAbort(run((m) => (entryOf(m, 'client-4').sPk = Uint8Array.from(entryOf(m, ME).sPk))), AbortReason.BadKey);
  });

  test('a U1 broadcast in which a peer advertises one key as both c_pk and s_pk makes the client abort with bad-key', () => {
    expectAbort(run((m) => (entryOf(m, 'client-4').sPk = Uint8Array.from(entryOf(m, 'client-4').cPk))), AbortReason.BadKey);
  });

  test('flipping any one of the 512 bits of a peer’s advertisement signature makes the client abort with bad-signature', () => {
    const fx = classic();
    const honest = fx.message('advertise-broadcast', ME);
    const sig = entryOf(honest, 'client-4').signature;
    const outcomes = new Set<string>();
    for (let bit = 0; bit < 512; bit++) {
      const msg = structuredClone(honest);
      entryOf(msg, 'client-4').signature = flipBit(sig, bit);
      outcomes.add(outcome(handle(fx.startState(ME), msg)));
    }
    expect([...outcomes]).toEqual([AbortReason.BadSignature]);
  });

  test('a U1 broadcast in which a peer’s key was replaced by the coordinator’s makes the client abort with bad-signature', () => {
    expectAbort(run((m) => (entryOf(m, 'client-4').sPk = x25519KeyPair().publicKey)), AbortReason.BadSignature);
    expectAbort(run((m) => (entryOf(m, 'client-4').cPk = x25519KeyPair().publicKey)), AbortReason.BadSignature);
  });

  test('a U1 broadcast in which two peers’ signed keys are swapped between their ids makes the client abort with bad-signature', () => {
    expectAbort(
      run((m) => {
        const a = entryOf(m, 'client-3');
        const b = entryOf(m, 'client-4');
        [a.clientId, b.clientId] = [b.clientId, a.clientId];
      }),
      AbortReason.BadSignature,
    );
  });

  test('a U1 broadcast with a truncated advertisement signature makes the client abort with bad-signature', () => {
    expectAbort(run((m) => (entryOf(m, 'client-4').signature = entryOf(m, 'client-4').signature.subarray(0, 63))), AbortReason.BadSignature);
  });

  test.each(['cPk', 'sPk'] as const)('a U1 broadcast in which this client’s own %s is replaced makes the client abort with self-mismatch', (which) => {
    expectAbort(run((m) => (entryOf(m, ME)[which] = x25519KeyPair().publicKey)), AbortReason.SelfMismatch);
  });

  test('a U1 broadcast in which this client’s own two keys are swapped makes the client abort with self-mismatch', () => {
    expectAbort(
      run((m) => {
        const e = entryOf(m, ME);
        [e.cPk, e.sPk] = [e.sPk, e.cPk];
      }),
      AbortReason.SelfMismatch,
    );
  });

  test('a U1 broadcast for another round index of the job makes the client abort with session-mismatch', () => {
    expectAbort(run((m) => (m.round = { ...m.round, roundIndex: m.round.roundIndex + 1 })), AbortReason.SessionMismatch);
    expectAbort(run((m) => (m.round = { ...m.round, roundIndex: 0 })), AbortReason.SessionMismatch);
  });

  test('a U1 broadcast for another job (manifest hash) makes the client abort with session-mismatch', () => {
    expectAbort(run((m) => (m.round = { ...m.round, manifestHash: manifestHash('job-b') })), AbortReason.SessionMismatch);
    expectAbort(run((m) => (m.round = { ...m.round, manifestHash: flipBit(m.round.manifestHash, 255) })), AbortReason.SessionMismatch);
  });

  test('the U1 broadcast of a real earlier round, replayed, makes the client abort with session-mismatch', () => {
    expectAbort(handle(classic().startState(ME), earlier().message('advertise-broadcast', ME)), AbortReason.SessionMismatch);
  });

  test('the U1 broadcast of a real earlier round relabelled with this round makes the client abort with view-mismatch', () => {
    const msg = earlier().message('advertise-broadcast', ME);
    msg.round = structuredClone(classic().round);
    expectAbort(handle(classic().startState(ME), msg), AbortReason.ViewMismatch);
  });

  test('the same relabelled broadcast with every entry claiming this round’s view makes the client abort with self-mismatch', () => {
    const msg = earlier().message('advertise-broadcast', ME);
    msg.round = structuredClone(classic().round);
    for (const e of msg.entries) e.view = classic().view;
    expectAbort(handle(classic().startState(ME), msg), AbortReason.SelfMismatch);
  });

  test('a peer’s advertisement replayed from a real earlier round makes the client abort with view-mismatch', () => {
    const old = entryOf(earlier().message('advertise-broadcast', ME), 'client-4');
    expectAbort(
      run((m) => {
        const i = m.entries.findIndex((e) => e.clientId === 'client-4');
        m.entries[i] = old;
      }),
      AbortReason.ViewMismatch,
    );
  });

  test('a peer’s advertisement replayed from a real earlier round, its view relabelled as this round’s, makes the client abort with bad-signature', () => {
    const old = entryOf(earlier().message('advertise-broadcast', ME), 'client-4');
    expectAbort(
      run((m) => {
        const i = m.entries.findIndex((e) => e.clientId === 'client-4');
        m.entries[i] = { ...old, view: classic().view };
      }),
      AbortReason.BadSignature,
    );
  });

  test('a peer’s advertisement for another view (another model version shown to it) makes the client abort with view-mismatch, and its view relabelled makes it abort with bad-signature', () => {
    const fx = classic();
    const other = roundViewDigest({ round: fx.round, params: fx.params, model: { version: 3, sha256: new Uint8Array(32).fill(7) } });
    expectAbort(
      run((m) => {
        const e = m.entries.find((x) => x.clientId === 'client-4')!;
        e.view = other;
      }),
      AbortReason.ViewMismatch,
    );
    expectAbort(
      run((m) => {
        const e = m.entries.find((x) => x.clientId === 'client-4')!;
        const forged = ed25519Sign(fx.identity('client-4').identityKey, advertiseTranscript(fx.round, other, 'client-4', e.cPk, e.sPk));
        e.signature = forged;
      }),
      AbortReason.BadSignature,
    );
  });
});

// ---------------------------------------------------------------------------------------------

describe('ShareKeys: a tampered share broadcast makes the client abort before it sends its masked input', () => {
  const run = (tamper: (m: Extract<ServerMessage, { type: 'share-broadcast' }>) => void): ClientTransition => {
    const fx = classic();
    const msg = fx.message('share-broadcast', ME);
    tamper(msg);
    return handle(fx.stateBefore('share-broadcast', ME), msg);
  };

  test('U2 that leaves this client out makes it abort as listed dead while alive', () => {
    expectAbort(run((m) => (m.u2 = m.u2.filter((id) => id !== ME))), AbortReason.ListedDeadWhileAlive);
  });

  test('U2 that repeats an id makes the client abort', () => {
    expectAbort(run((m) => m.u2.push('client-3')), AbortReason.DuplicateId);
    expectAbort(run((m) => m.u2.push(ME)), AbortReason.DuplicateId);
  });

  test('U2 naming a client outside U1 makes the client abort', () => {
    expectAbort(run((m) => m.u2.push('client-9')), AbortReason.UnknownId);
  });

  test('U2 with fewer than t clients makes the client abort', () => {
    expectAbort(
      run((m) => {
        m.u2 = ['client-0', 'client-1', ME];
        m.shares = m.shares.filter((s) => m.u2.includes(s.peer));
      }),
      AbortReason.TooFewClients,
    );
  });

  test('flipping any one bit of a share pair ciphertext makes the client abort with bad-share', () => {
    const fx = classic();
    const honest = fx.message('share-broadcast', ME);
    const ct = honest.shares[0]!.ciphertext;
    const outcomes = new Set<string>();
    for (let bit = 0; bit < ct.length * 8; bit++) {
      const msg = structuredClone(honest);
      msg.shares[0]!.ciphertext = flipBit(ct, bit);
      outcomes.add(outcome(handle(fx.stateBefore('share-broadcast', ME), msg)));
    }
    expect([...outcomes]).toEqual([AbortReason.BadShare]);
  });

  test('a truncated share pair ciphertext makes the client abort with bad-share', () => {
    expectAbort(run((m) => (m.shares[0]!.ciphertext = m.shares[0]!.ciphertext.subarray(0, 20))), AbortReason.BadShare);
  });

  test('share pairs relabelled as coming from another neighbour make the client abort with bad-share', () => {
    expectAbort(
      run((m) => {
        const [a, b] = m.shares;
        [a!.peer, b!.peer] = [b!.peer, a!.peer];
      }),
      AbortReason.BadShare,
    );
  });

  test('this client’s own share pair reflected back to it as its neighbour’s makes the client abort with bad-share', () => {
    const fx = classic();
    const mine = fx.sent('share-keys', ME).shares.find((s) => s.peer === 'client-0')!;
    expectAbort(
      run((m) => {
        m.shares.find((s) => s.peer === 'client-0')!.ciphertext = mine.ciphertext;
      }),
      AbortReason.BadShare,
    );
  });

  test('a neighbour’s share pair replayed from a real earlier round makes the client abort with bad-share', () => {
    const old = earlier().message('share-broadcast', ME).shares.find((s) => s.peer === 'client-0')!;
    expectAbort(
      run((m) => {
        m.shares.find((s) => s.peer === 'client-0')!.ciphertext = old.ciphertext;
      }),
      AbortReason.BadShare,
    );
  });

  test('a neighbour’s share pair that is missing makes the client abort with bad-share', () => {
    expectAbort(run((m) => (m.shares = m.shares.filter((s) => s.peer !== 'client-3'))), AbortReason.BadShare);
  });

  test('a share pair from a client that never shared its keys (outside U2) makes the client abort with unknown-id', () => {
    expectAbort(run((m) => (m.shares[0]!.peer = NEVER_SHARED)), AbortReason.UnknownId);
    expectAbort(run((m) => m.shares.push({ peer: NEVER_SHARED, ciphertext: m.shares[0]!.ciphertext })), AbortReason.UnknownId);
  });

  test('a share pair claimed to come from this client itself makes the client abort with unknown-id', () => {
    expectAbort(run((m) => m.shares.push({ peer: ME, ciphertext: m.shares[0]!.ciphertext })), AbortReason.UnknownId);
  });

  test('a share pair from a client outside U1 makes the client abort with unknown-id', () => {
    expectAbort(run((m) => m.shares.push({ peer: 'client-9', ciphertext: m.shares[0]!.ciphertext })), AbortReason.UnknownId);
  });

  test('two share pairs from one sender make the client abort with duplicate-id', () => {
    expectAbort(run((m) => m.shares.push(structuredClone(m.shares[0]!))), AbortReason.DuplicateId);
  });
});

// ---------------------------------------------------------------------------------------------

describe('MaskedInput: a tampered U3 makes the client abort instead of signing it', () => {
  const run = (u3: (honest: string[]) => string[]): ClientTransition => {
    const fx = classic();
    const msg = fx.message('consistency-request', ME);
    msg.u3 = u3(msg.u3);
    return handle(fx.stateBefore('consistency-request', ME), msg);
  };

  test('U3 that leaves this client out, though it sent its masked input, makes it abort as listed dead while alive', () => {
    expectAbort(
      run((u3) => u3.filter((id) => id !== ME)),
      AbortReason.ListedDeadWhileAlive,
    );
  });

  test('U3 that repeats an id makes the client abort', () => {
    expectAbort(
      run((u3) => [...u3, 'client-4']),
      AbortReason.DuplicateId,
    );
    expectAbort(
      run((u3) => [...u3, ME]),
      AbortReason.DuplicateId,
    );
  });

  test('U3 naming a client outside U1 makes the client abort', () => {
    expectAbort(
      run((u3) => [...u3, 'client-9']),
      AbortReason.UnknownId,
    );
  });

  test('U3 that is not a subset of U2 makes the client abort', () => {
    expectAbort(
      run((u3) => [...u3, NEVER_SHARED]),
      AbortReason.UnknownId,
    );
  });

  test('U3 with fewer than t clients makes the client abort', () => {
    expectAbort(
      run(() => ['client-0', 'client-1', ME]),
      AbortReason.TooFewClients,
    );
  });

  test('U3 in another order is signed as the same sorted list', () => {
    const fx = classic();
    const msg = fx.message('consistency-request', ME);
    msg.u3.reverse();
    const t = handle(fx.stateBefore('consistency-request', ME), msg);
    expect(t.outbound).toEqual([fx.sent('consistency-signature', ME)]);
  });

  test('a second consistency request with another U3, once the client has signed, is refused as wrong-phase and nothing more is signed', () => {
    const fx = classic();
    const signed = handle(fx.stateBefore('consistency-request', ME), fx.message('consistency-request', ME)).next;
    const other = fx.message('consistency-request', ME);
    other.u3 = other.u3.filter((id) => id !== 'client-4');
    expect(() => handle(signed, other)).toThrow(expect.objectContaining({ code: ErrorCode.WrongPhase }));
  });
});

// ---------------------------------------------------------------------------------------------

describe('ConsistencyCheck: the client reveals nothing without t valid signatures over the U3 it signed', () => {
  const run = (tamper: (m: UnmaskRequest, fx: HonestRound) => void): ClientTransition => {
    const fx = classic();
    const msg = fx.message('unmask-request', ME);
    tamper(msg, fx);
    return handle(fx.stateBefore('unmask-request', ME), msg);
  };

  test('the honest request carries exactly t valid signatures from others, besides this client’s own', () => {
    const fx = classic();
    const ids = fx.message('unmask-request', ME).signatures.map((s) => s.clientId);
    expect(ids.filter((id) => id !== ME)).toHaveLength(fx.params.threshold);
  });

  test('an unmasking request with one signature removed makes the client abort with insufficient-signatures', () => {
    expectAbort(
      run((m) => (m.signatures = m.signatures.filter((s) => s.clientId !== 'client-0'))),
      AbortReason.InsufficientSignatures,
    );
  });

  test('an unmasking request with no signatures makes the client abort with insufficient-signatures', () => {
    expectAbort(
      run((m) => (m.signatures = [])),
      AbortReason.InsufficientSignatures,
    );
  });

  test('one signature duplicated to reach t makes the client abort: a signer never counts twice', () => {
    expectAbort(
      run((m) => {
        const one = m.signatures.find((s) => s.clientId === 'client-1')!;
        m.signatures = [...m.signatures.filter((s) => s.clientId !== 'client-0'), one, one, one];
      }),
      AbortReason.InsufficientSignatures,
    );
  });

  test('this client’s own signature does not count toward t', () => {
    expectAbort(
      run((m) => {
        const mine = m.signatures.find((s) => s.clientId === ME)!;
        m.signatures = [...m.signatures.filter((s) => s.clientId !== 'client-0'), mine];
      }),
      AbortReason.InsufficientSignatures,
    );
  });

  test('signatures over a different survivor list make the client abort with insufficient-signatures', () => {
    expectAbort(
      run((m, fx) => {
        const other = [...fx.u3, DROPPED];
        m.signatures = m.signatures.map((s) => fx.consistencySignature(s.clientId, other));
      }),
      AbortReason.InsufficientSignatures,
    );
    expectAbort(
      run((m, fx) => {
        const i = m.signatures.findIndex((s) => s.clientId === 'client-0');
        m.signatures[i] = fx.consistencySignature('client-0', fx.u3.filter((id) => id !== 'client-4'));
      }),
      AbortReason.InsufficientSignatures,
    );
  });

  test('signatures over the same U3 in another session make the client abort with insufficient-signatures', () => {
    expectAbort(
      run((m, fx) => (m.signatures = m.signatures.map((s) => fx.consistencySignature(s.clientId, fx.u3, earlier().sessionId)))),
      AbortReason.InsufficientSignatures,
    );
  });

  test('consistency signatures captured from a real earlier round make the client abort with insufficient-signatures', () => {
    const old = earlier().message('unmask-request', ME);
    expect(old.u3).toEqual(classic().u3); // the same survivors: only the session differs
    expectAbort(
      run((m) => (m.signatures = old.signatures)),
      AbortReason.InsufficientSignatures,
    );
  });

  test('flipping any one of the 512 bits of one consistency signature makes the client abort with insufficient-signatures', () => {
    const fx = classic();
    const honest = fx.message('unmask-request', ME);
    const i = honest.signatures.findIndex((s) => s.clientId === 'client-3');
    const outcomes = new Set<string>();
    for (let bit = 0; bit < 512; bit++) {
      const msg = structuredClone(honest);
      msg.signatures[i]!.signature = flipBit(honest.signatures[i]!.signature, bit);
      outcomes.add(outcome(handle(fx.stateBefore('unmask-request', ME), msg)));
    }
    expect([...outcomes]).toEqual([AbortReason.InsufficientSignatures]);
  });

  test('a signature attributed to another signer makes the client abort with insufficient-signatures', () => {
    expectAbort(
      run((m) => {
        const a = m.signatures.find((s) => s.clientId === 'client-0')!;
        const b = m.signatures.find((s) => s.clientId === 'client-1')!;
        [a.signature, b.signature] = [b.signature, a.signature];
      }),
      AbortReason.InsufficientSignatures,
    );
  });

  test('a valid signature over U3 from a client outside U3 does not count toward t', () => {
    expectAbort(
      run((m, fx) => {
        const i = m.signatures.findIndex((s) => s.clientId === 'client-0');
        m.signatures[i] = fx.consistencySignature(DROPPED, fx.u3);
      }),
      AbortReason.InsufficientSignatures,
    );
    expectAbort(
      run((m, fx) => {
        const i = m.signatures.findIndex((s) => s.clientId === 'client-0');
        m.signatures[i] = fx.consistencySignature(NEVER_SHARED, fx.u3);
      }),
      AbortReason.InsufficientSignatures,
    );
  });

  test('a signature under an id the PKI does not know does not count toward t', () => {
    expectAbort(
      run((m) => {
        const s = m.signatures.find((x) => x.clientId === 'client-0')!;
        s.clientId = 'client-9';
      }),
      AbortReason.InsufficientSignatures,
    );
  });

  test('an unmasking request whose U3 differs from the one the client signed makes it abort with survivor-list-mismatch, even with t valid signatures over it', () => {
    const fx = classic();
    const variants: [string, string[]][] = [
      ['one survivor removed', fx.u3.filter((id) => id !== 'client-4')],
      ['one client added', [...fx.u3, DROPPED]],
      ['one survivor replaced', [...fx.u3.filter((id) => id !== 'client-4'), DROPPED]],
      ['cut below t', ['client-0', 'client-1', ME]],
      ['an id repeated', [...fx.u3, 'client-4']],
      ['empty', []],
    ];
    for (const [, u3] of variants) {
      const msg = fx.message('unmask-request', ME);
      msg.u3 = u3;
      msg.signatures = [...new Set(u3)].map((id) => fx.consistencySignature(id, u3));
      msg.keyShareOf = [];
      msg.selfMaskShareOf = u3.filter((id) => id !== ME && fx.u2.includes(id));
      expectAbort(handle(fx.stateBefore('unmask-request', ME), msg), AbortReason.SurvivorListMismatch);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('Unmasking: never both shares of one peer, nothing it does not hold, whatever it is asked', () => {
  const run = (tamper: (m: UnmaskRequest) => void): ClientTransition => {
    const fx = classic();
    const msg = fx.message('unmask-request', ME);
    tamper(msg);
    return handle(fx.stateBefore('unmask-request', ME), msg);
  };

  test('unmasking request asking for both shares of one peer makes the client abort, revealing nothing', () => {
    expectAbort(
      run((m) => m.keyShareOf.push('client-0')),
      AbortReason.BothSharesRequested,
    );
    expectAbort(
      run((m) => m.selfMaskShareOf.push(DROPPED)),
      AbortReason.BothSharesRequested,
    );
  });

  test('unmasking request asking for the key share of a survivor in U3 makes the client abort, revealing nothing', () => {
    expectAbort(
      run((m) => {
        m.selfMaskShareOf = m.selfMaskShareOf.filter((id) => id !== 'client-0');
        m.keyShareOf.push('client-0');
      }),
      AbortReason.BothSharesRequested,
    );
  });

  test('unmasking request asking for the self-mask share of a client listed as dropped makes the client abort, revealing nothing', () => {
    expectAbort(
      run((m) => {
        m.keyShareOf = [];
        m.selfMaskShareOf.push(DROPPED);
      }),
      AbortReason.BothSharesRequested,
    );
  });

  test('unmasking request asking for this client’s own mask key makes it abort as listed dead while alive', () => {
    expectAbort(
      run((m) => m.keyShareOf.push(ME)),
      AbortReason.ListedDeadWhileAlive,
    );
  });

  test('unmasking request asking for a share of this client’s own self mask makes it abort with unknown-id', () => {
    expectAbort(
      run((m) => m.selfMaskShareOf.push(ME)),
      AbortReason.UnknownId,
    );
  });

  test('unmasking request whose key-share list repeats an id makes the client abort', () => {
    expectAbort(
      run((m) => m.keyShareOf.push(DROPPED)),
      AbortReason.DuplicateId,
    );
  });

  test('unmasking request whose self-mask list repeats an id makes the client abort', () => {
    expectAbort(
      run((m) => m.selfMaskShareOf.push('client-3')),
      AbortReason.DuplicateId,
    );
  });

  test('unmasking request naming a client outside U1 in either list makes the client abort', () => {
    expectAbort(
      run((m) => m.keyShareOf.push('client-9')),
      AbortReason.UnknownId,
    );
    expectAbort(
      run((m) => m.selfMaskShareOf.push('mallory')),
      AbortReason.UnknownId,
    );
  });

  test('unmasking request asking for the key share of a client that never shared its keys makes the client abort with unknown-id', () => {
    expectAbort(
      run((m) => m.keyShareOf.push(NEVER_SHARED)),
      AbortReason.UnknownId,
    );
  });
});

// ---------------------------------------------------------------------------------------------

describe('a message from another session or round makes the client abort with session-mismatch', () => {
  test.each([
    ['share broadcast', 'share-broadcast'],
    ['consistency request', 'consistency-request'],
    ['unmasking request', 'unmask-request'],
  ] as const)('a %s naming another session id makes the client abort with session-mismatch', (_name, step) => {
    const fx = classic();
    const variants = [flipBit(fx.sessionId, 0), flipBit(fx.sessionId, 255), fx.sessionId.subarray(0, 31), new Uint8Array(0), earlier().sessionId];
    for (const sessionId of variants) {
      const msg = fx.message(step, ME);
      msg.sessionId = sessionId;
      expectAbort(handle(fx.stateBefore(step, ME), msg), AbortReason.SessionMismatch);
    }
  });

  test.each(['share-broadcast', 'consistency-request', 'unmask-request'] as const)('a %s captured from a real earlier round, replayed, makes the client abort with session-mismatch', (step) => {
    expectAbort(handle(classic().stateBefore(step, ME), earlier().message(step, ME)), AbortReason.SessionMismatch);
  });
});

// ---------------------------------------------------------------------------------------------

describe('a second unmasking request in one session', () => {
  const again = (tamper: (m: UnmaskRequest) => void): ClientTransition => {
    const fx = classic();
    const msg = fx.message('unmask-request', ME);
    tamper(msg);
    return handle(fx.unmasking(ME), msg);
  };

  test('an identical repeat gets the identical response and changes nothing', () => {
    const fx = classic();
    const state = fx.unmasking(ME);
    const t = handle(state, fx.message('unmask-request', ME));
    expect(t.next).toBe(state);
    expect(t.outbound).toEqual([fx.sent('unmask-response', ME)]);
    expectExactlyRequested(fx, ME, fx.message('unmask-request', ME), onlyResponse(t));
  });

  test('a repeat listing the same shares in another order, with other signatures, gets the identical response', () => {
    const fx = classic();
    const t = again((m) => {
      m.selfMaskShareOf.reverse();
      m.u3.reverse();
      m.signatures = [];
    });
    expect(t.outbound).toEqual([fx.sent('unmask-response', ME)]);
  });

  test('a second, different unmasking request asking for less makes the client abort with conflicting-unmask-request', () => {
    expectAbort(
      again((m) => m.selfMaskShareOf.pop()),
      AbortReason.ConflictingUnmaskRequest,
    );
    expectAbort(
      again((m) => (m.keyShareOf = [])),
      AbortReason.ConflictingUnmaskRequest,
    );
  });

  test('a second request asking for the key share of a peer whose self-mask share was revealed makes the client abort, revealing nothing', () => {
    expectAbort(
      again((m) => {
        m.selfMaskShareOf = m.selfMaskShareOf.filter((id) => id !== 'client-0');
        m.keyShareOf.push('client-0');
      }),
      AbortReason.ConflictingUnmaskRequest,
    );
  });

  test('a second request asking for the self-mask share of the peer whose key share was revealed makes the client abort, revealing nothing', () => {
    expectAbort(
      again((m) => {
        m.keyShareOf = [];
        m.selfMaskShareOf.push(DROPPED);
      }),
      AbortReason.ConflictingUnmaskRequest,
    );
  });

  test('a second request with another U3 makes the client abort with conflicting-unmask-request', () => {
    expectAbort(
      again((m) => (m.u3 = m.u3.filter((id) => id !== 'client-4'))),
      AbortReason.ConflictingUnmaskRequest,
    );
  });

  test('a second request from another session makes the client abort with session-mismatch', () => {
    expectAbort(
      again((m) => (m.sessionId = flipBit(m.sessionId, 7))),
      AbortReason.SessionMismatch,
    );
    expectAbort(handle(classic().unmasking(ME), earlier().message('unmask-request', ME)), AbortReason.SessionMismatch);
  });
});

// ---------------------------------------------------------------------------------------------

describe('a message of the wrong type for the phase', () => {
  function expectWrongPhase(state: ClientState, msg: ServerMessage): void {
    const before = { ...state };
    let err: unknown = null;
    try {
      handle(state, msg);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AegisError);
    expect((err as AegisError).code).toBe(ErrorCode.WrongPhase);
    // The state is the same object with the same contents: nothing was touched.
    expect(Object.keys(state)).toEqual(Object.keys(before));
    for (const k of Object.keys(before) as (keyof typeof before)[]) expect(state[k]).toBe(before[k]);
  }

  test.each(STEPS.map((s) => [s] as const))('a client awaiting a %s refuses every other message type with wrong-phase and keeps its state', (step) => {
    const fx = classic();
    const state = fx.stateBefore(step, ME);
    for (const other of STEPS) if (other !== step) expectWrongPhase(state, fx.message(other, ME));
    // ...and still takes the message it was waiting for.
    const t = handle(state, fx.message(step, ME));
    expect(t.next.phase).not.toBe(Phase.Aborted);
    expect(t.outbound).toHaveLength(1);
  });

  test('a client that has revealed its shares refuses every other message type with wrong-phase', () => {
    const fx = classic();
    const state = fx.unmasking(ME);
    for (const other of STEPS) if (other !== 'unmask-request') expectWrongPhase(state, fx.message(other, ME));
  });

  test('a client refuses a message of no known type with wrong-phase', () => {
    const fx = classic();
    expectWrongPhase(fx.stateBefore('share-broadcast', ME), { ...fx.message('share-broadcast', ME), type: 'share-keys' } as unknown as ServerMessage);
    expectWrongPhase(fx.stateBefore('share-broadcast', ME), undefined as unknown as ServerMessage);
  });

  test('after refusing wrong-phase messages at every phase the client still completes the round and reveals exactly the requested shares', () => {
    const fx = classic();
    let state: ClientState = fx.startState(ME);
    let last: ClientTransition | null = null;
    for (const step of STEPS) {
      for (const other of STEPS) if (other !== step) expectWrongPhase(state, fx.message(other, ME));
      last = handle(state, fx.message(step, ME));
      expect(last.next.phase).not.toBe(Phase.Aborted);
      state = last.next;
    }
    const res = onlyResponse(last!);
    expectExactlyRequested(fx, ME, fx.message('unmask-request', ME), res);
    expect(res).toEqual(fx.sent('unmask-response', ME));
  });

  test('an aborted client, and a completed one, take no message at all', () => {
    const fx = classic();
    const aborted = handle(fx.stateBefore('unmask-request', ME), { ...fx.message('unmask-request', ME), signatures: [] }).next;
    expect(aborted.phase).toBe(Phase.Aborted);
    const completed = finish(fx.unmasking(ME));
    expect(completed.phase).toBe(Phase.Completed);
    for (const state of [aborted, completed]) for (const step of STEPS) expectWrongPhase(state, fx.message(step, ME));
  });
});

// ---------------------------------------------------------------------------------------------

describe('SecAgg+ (n = 12, k = 4, t = 3): the same refusals where the neighbour graph matters', () => {
  const nonNeighbourSurvivor = (fx: HonestRound): string => fx.u3.find((id) => id !== PLUS_ME && !fx.roster.areNeighbours(PLUS_ME, id))!;
  const run = <K extends Step>(step: K, tamper: (m: PhaseOf[K]['message'], fx: HonestRound) => void): ClientTransition => {
    const fx = plus();
    const msg = fx.message(step, PLUS_ME);
    tamper(msg, fx);
    return handle(fx.stateBefore(step, PLUS_ME), msg);
  };
  const neighbour = (fx: HonestRound): string => fx.roster.neighboursOf(PLUS_ME).find((v) => fx.u3.includes(v))!;
  const stranger = (fx: HonestRound): string => fx.u2.find((v) => v !== PLUS_ME && !fx.roster.areNeighbours(PLUS_ME, v))!;

  test('the client asks the PKI for its neighbours’ identities only: k certificate checks per round, not n', () => {
    const fx = plus();
    const state = fx.stateBefore('advertise-broadcast', PLUS_ME);
    const asked: string[] = [];
    const cfg = { ...state.cfg, identityOf: (id: string) => (asked.push(id), state.cfg.identityOf(id)) };
    const t = handle({ ...state, cfg } as typeof state, fx.message('advertise-broadcast', PLUS_ME));
    expect(outcome(t)).toBe('sent share-keys');
    expect(asked.sort()).toEqual([...fx.roster.neighboursOf(PLUS_ME)].sort());
    expect(asked.length).toBe(fx.params.neighbors);
  });

  test('a neighbour the PKI does not know in the U1 broadcast makes the client abort with unknown-id', () => {
    // A renamed entry moves in the neighbour graph (the ids enter the session id): look for an
    // unknown id that lands among this client's neighbours.
    const fx = plus();
    const honest = fx.message('advertise-broadcast', PLUS_ME);
    let tried = 0;
    for (const v of fx.roster.ids) {
      for (let i = 0; i < 20 && v !== PLUS_ME; i++) {
        const msg = structuredClone(honest);
        entryOf(msg, v).clientId = `unknown-${i}`;
        if (!new Roster(msg.round, msg.entries, fx.params.neighbors).neighboursOf(PLUS_ME).includes(`unknown-${i}`)) continue;
        expectAbort(handle(fx.stateBefore('advertise-broadcast', PLUS_ME), msg), AbortReason.UnknownId);
        tried++;
      }
    }
    expect(tried).toBeGreaterThan(0);
  });

  test.each(SMALL_ORDER_POINTS)('a neighbour’s key of small order (%s) in the U1 broadcast makes the client abort with bad-key', (_name, hex) => {
    // A key enters the session id, and so the neighbour graph: look for a tampered broadcast in
    // which the peer with the bad key is still this client's neighbour (a non-neighbour's keys
    // are left to that peer's own neighbours to check).
    const fx = plus();
    const honest = fx.message('advertise-broadcast', PLUS_ME);
    const canonical = new Uint8Array(Buffer.from(hex, 'hex'));
    const highBit = Uint8Array.from(canonical);
    highBit[31] = highBit[31]! | 0x80;
    let tried = 0;
    for (const point of [canonical, highBit]) {
      for (const which of ['cPk', 'sPk'] as const) {
        for (const v of fx.roster.ids) {
          if (v === PLUS_ME) continue;
          const msg = structuredClone(honest);
          entryOf(msg, v)[which] = point;
          if (!new Roster(msg.round, msg.entries, fx.params.neighbors).neighboursOf(PLUS_ME).includes(v)) continue;
          expectAbort(handle(fx.stateBefore('advertise-broadcast', PLUS_ME), msg), AbortReason.BadKey);
          tried++;
        }
      }
    }
    expect(tried).toBeGreaterThan(0); // ~16 of 44 candidates, by chance; none would fail with odds ~2^-29
  });

  test('a share broadcast whose U2 leaves out all of this client’s neighbours makes it abort rather than send an input masked by its self mask alone', () => {
    // With no neighbour in U2 the client adds no pairwise mask: y_u = x_u + PRG(b_u). Its
    // neighbours, told (truly) that u survived, then reveal their shares of b_u, and the
    // coordinator reads x_u. Every neighbour of u is a holder of b_u: fewer than t of them in U2
    // and the round could never unmask u anyway, so aborting costs nothing.
    expectAbort(
      run('share-broadcast', (m, fx) => {
        const mine = new Set(fx.roster.neighboursOf(PLUS_ME));
        m.u2 = m.u2.filter((id) => !mine.has(id));
        m.shares = [];
        expect(m.u2.length).toBeGreaterThanOrEqual(fx.params.threshold);
      }),
      AbortReason.TooFewClients,
    );
  });

  test('a share broadcast whose U2 keeps fewer than t of this client’s neighbours makes it abort', () => {
    expectAbort(
      run('share-broadcast', (m, fx) => {
        const cut = new Set(fx.roster.neighboursOf(PLUS_ME).slice(fx.params.threshold - 1));
        m.u2 = m.u2.filter((id) => !cut.has(id));
        m.shares = m.shares.filter((s) => !cut.has(s.peer));
      }),
      AbortReason.TooFewClients,
    );
  });

  test('a key of the wrong length anywhere in the U1 broadcast, neighbour or not, makes the client abort with bad-key', () => {
    expectAbort(
      run('advertise-broadcast', (m, fx) => (entryOf(m, stranger(fx)).cPk = new Uint8Array(33))),
      AbortReason.BadKey,
    );
  });

  test('a key under two ids anywhere in the U1 broadcast makes the client abort with bad-key', () => {
    expectAbort(
      run('advertise-broadcast', (m, fx) => {
        entryOf(m, stranger(fx)).cPk = Uint8Array.from(entryOf(m, neighbour(fx)).cPk);
      }),
      AbortReason.BadKey,
    );
  });

  test('a neighbour’s advertisement with a flipped signature bit makes the client abort with bad-signature', () => {
    expectAbort(
      run('advertise-broadcast', (m, fx) => {
        const e = entryOf(m, neighbour(fx));
        e.signature = flipBit(e.signature, 100);
      }),
      AbortReason.BadSignature,
    );
  });

  test('a share pair from a client that is not a neighbour makes the client abort with unknown-id', () => {
    const fx = plus();
    const s = stranger(fx);
    const real = fx.sent('share-keys', s).shares[0]!; // a real pair the stranger sent to one of its own neighbours
    expectAbort(
      run('share-broadcast', (m) => {
        m.shares.push({ peer: s, ciphertext: real.ciphertext });
      }),
      AbortReason.UnknownId,
    );
  });

  test('a share pair from a neighbour that is missing makes the client abort with bad-share', () => {
    expectAbort(
      run('share-broadcast', (m) => {
        m.shares.pop();
      }),
      AbortReason.BadShare,
    );
  });

  test('U2 that leaves this client out makes it abort as listed dead while alive', () => {
    expectAbort(
      run('share-broadcast', (m) => {
        m.u2 = m.u2.filter((id) => id !== PLUS_ME);
      }),
      AbortReason.ListedDeadWhileAlive,
    );
  });

  test('U3 that leaves this client out makes it abort as listed dead while alive', () => {
    expectAbort(
      run('consistency-request', (m) => {
        m.u3 = m.u3.filter((id) => id !== PLUS_ME);
      }),
      AbortReason.ListedDeadWhileAlive,
    );
  });

  test('U3 that is not a subset of U2 makes the client abort', () => {
    expectAbort(
      run('consistency-request', (m, fx) => {
        m.u3.push(fx.droppedBeforeShare[0]!);
      }),
      AbortReason.UnknownId,
    );
  });

  test('a valid signature from a survivor that is not a neighbour does not count toward t', () => {
    expectAbort(
      run('unmask-request', (m, fx) => {
        m.signatures[0] = fx.consistencySignature(nonNeighbourSurvivor(fx), fx.u3);
      }),
      AbortReason.InsufficientSignatures,
    );
  });

  test('valid signatures of every other survivor do not replace a missing neighbour’s signature', () => {
    expectAbort(
      run('unmask-request', (m, fx) => {
        const mine = new Set(fx.roster.neighboursOf(PLUS_ME));
        const others = fx.u3.filter((id) => id !== PLUS_ME && !mine.has(id)).map((id) => fx.consistencySignature(id, fx.u3));
        m.signatures = [...m.signatures.slice(1), ...others];
      }),
      AbortReason.InsufficientSignatures,
    );
  });

  test('unmasking request asking for both shares of one neighbour makes the client abort, revealing nothing', () => {
    expectAbort(
      run('unmask-request', (m) => {
        m.keyShareOf.push(m.selfMaskShareOf[0]!);
      }),
      AbortReason.BothSharesRequested,
    );
  });

  test('unmasking request asking for the key share of a neighbour in U3 makes the client abort, revealing nothing', () => {
    expectAbort(
      run('unmask-request', (m) => {
        m.keyShareOf = [m.selfMaskShareOf.shift()!];
      }),
      AbortReason.BothSharesRequested,
    );
  });

  test('unmasking request asking for the self-mask share of the neighbour listed as dropped makes the client abort, revealing nothing', () => {
    expectAbort(
      run('unmask-request', (m) => {
        m.selfMaskShareOf.push(m.keyShareOf.pop()!);
      }),
      AbortReason.BothSharesRequested,
    );
  });

  test('unmasking request asking for the self-mask share of a survivor that is not a neighbour makes the client abort with unknown-id', () => {
    expectAbort(
      run('unmask-request', (m, fx) => {
        m.selfMaskShareOf.push(nonNeighbourSurvivor(fx));
      }),
      AbortReason.UnknownId,
    );
  });

  test('a second, different unmasking request makes the client abort; an identical repeat gets the identical response', () => {
    const fx = plus();
    const state = fx.unmasking(PLUS_ME);
    const same = handle(state, fx.message('unmask-request', PLUS_ME));
    expect(same.outbound).toEqual([fx.sent('unmask-response', PLUS_ME)]);
    const other = fx.message('unmask-request', PLUS_ME);
    other.keyShareOf = [];
    expectAbort(handle(state, other), AbortReason.ConflictingUnmaskRequest);
  });
});
