/**
 * Declines in the coordinator's round state machine (coordinator/round/r0-advertise-keys.ts,
 * declines.ts): a member that sits the round out is recorded with its reason code only, once,
 * and counts as phase 0's answer; every other decline is a typed refusal that changes nothing;
 * phase 0's end turns who declined into counts by reason, which the round's final state and
 * outcome carry; a round that aborted because clients await approval says so.
 *
 * Rounds run through the real client state machines; the harness only routes messages.
 */
import { describe, expect, test } from '@jest/globals';
import { makeIdentities } from '../../bench/sim/client-host.js';
import { handle, start as startClient, type ClientState } from '../../client/round/index.js';
import { atPhaseStart, hasAnswered, receivedCount, waitsOnlyForGone } from '../../coordinator/round/phases.js';
import { approvalShortfall, countDeclines } from '../../coordinator/round/declines.js';
import { cancelRound, close, groupedOutcome, isFinal, outcomeOf, phaseComplete, receive, start, type AbortedState, type CoordinatorState, type RoundOutcome } from '../../coordinator/round/index.js';
import { ErrorCode } from '../../shared/errors.js';
import type { AdvertiseKeys, ClientMessage, Decline, RoundRef } from '../../shared/protocol/messages.js';
import { validateRoundParams, type RoundParams } from '../../shared/protocol/params.js';
import { sha256 } from '../../shared/protocol/session.js';
import { roundViewDigest } from '../../shared/protocol/view.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { codeOf } from '../support/codes.js';

class Round {
  readonly params: RoundParams;
  readonly round: RoundRef = { manifestHash: sha256('aegis-test:declines'), roundIndex: 3 };
  readonly view: Uint8Array;
  readonly ids: string[];
  readonly clients = new Map<string, ClientState>();
  readonly adverts = new Map<string, AdvertiseKeys>();
  readonly inputs = new Map<string, Uint32Array>();
  state: CoordinatorState;

  constructor(n: number, opts: { threshold?: number; enrolled?: number } = {}) {
    this.params = validateRoundParams({ dim: 6, cohort: n, ...(opts.threshold === undefined ? {} : { threshold: opts.threshold }) });
    this.view = roundViewDigest({ round: this.round, params: this.params });
    const parties = makeIdentities(opts.enrolled ?? n);
    const directory = new Map(parties.map((p) => [p.id, p.publicKey]));
    this.ids = parties.slice(0, n).map((p) => p.id);
    this.state = start({ params: this.params, round: this.round, view: this.view, identityOf: (id) => directory.get(id) });
    parties.slice(0, n).forEach((p, i) => {
      const input = Uint32Array.from({ length: this.params.dim + 1 }, (_, j) => (j === this.params.dim ? 1 : i * 31 + j));
      this.inputs.set(p.id, input);
      const { next, outbound } = startClient({ clientId: p.id, identityKey: p.identityKey, params: this.params, round: this.round, view: this.view, identityOf: (id) => directory.get(id), input: () => input });
      this.clients.set(p.id, next);
      this.adverts.set(p.id, outbound[0] as AdvertiseKeys);
    });
  }

  decline(id: string, reason: ErrorCode = ErrorCode.ApprovalRequired, round: RoundRef = this.round): Decline {
    return { type: 'decline', round, clientId: id, reason };
  }

  send(m: ClientMessage): void {
    this.state = receive(this.state, m).next;
  }

  /** Closes phase after phase, every client that got a message answering it, to the end. */
  finish(): CoordinatorState {
    while (!isFinal(this.state)) {
      const { next, outbound } = close(this.state);
      this.state = next;
      for (const { to, message } of outbound) {
        const t = handle(this.clients.get(to)!, message);
        this.clients.set(to, t.next);
        for (const m of t.outbound) this.send(m);
      }
    }
    return this.state;
  }

  plainSum(ids: readonly string[]): number[] {
    const out = new Uint32Array(this.params.dim + 1);
    for (const id of ids) this.inputs.get(id)!.forEach((x, i) => (out[i] = (out[i]! + x) >>> 0));
    return Array.from(out);
  }
}

/** `m` is refused with `code` (message matching `text`) and the round's phase-0 state is as it was. */
function expectRefused(r: Round, m: unknown, code: ErrorCode, text?: RegExp): void {
  const s = r.state;
  const before = s.phase === Phase.AdvertiseKeys ? { received: [...s.received.keys()], declined: [...s.declined] } : null;
  let err: unknown;
  try {
    receive(r.state, m as ClientMessage);
  } catch (e) {
    err = e;
  }
  expect((err as { code?: string } | undefined)?.code).toBe(code);
  if (text) expect((err as Error).message).toMatch(text);
  if (before && s.phase === Phase.AdvertiseKeys) expect({ received: [...s.received.keys()], declined: [...s.declined] }).toEqual(before);
}

describe('phase 0 takes a decline from a member that has not advertised', () => {
  test('recorded with its reason code only; an answer for the phase, not an advertisement', () => {
    const r = new Round(5);
    const [a, b] = r.ids as [string, string];
    r.send(r.decline(a, ErrorCode.NoInput));
    r.send(r.adverts.get(b)!);
    const s = r.state;
    if (s.phase !== Phase.AdvertiseKeys) throw new Error('phase 0 expected');
    expect([...s.declined]).toEqual([[a, ErrorCode.NoInput]]);
    expect(receivedCount(s)).toBe(1);
    expect(hasAnswered(s, a)).toBe(true);
    expect(hasAnswered(s, r.ids[2]!)).toBe(false);
    // A phase re-built from its records starts with nobody declined.
    const fresh = atPhaseStart(s);
    expect(fresh.phase === Phase.AdvertiseKeys && fresh.declined.size).toBe(0);
  });

  test('the phase needs nothing more once every member advertised or declined', () => {
    const r = new Round(5);
    const [a, b, ...rest] = r.ids;
    for (const id of rest) r.send(r.adverts.get(id)!);
    r.send(r.decline(a!, ErrorCode.ApprovalRequired));
    expect(phaseComplete(r.state)).toBe(false);
    r.send(r.decline(b!, ErrorCode.ReplayedRound));
    expect(phaseComplete(r.state)).toBe(true);
    // Only decliners (and gone clients) missing: a host closes the phase without its deadline.
    const s = r.state;
    expect(waitsOnlyForGone(r.ids, (id) => hasAnswered(s, id), new Set([rest[0]!]))).toBe(true);
  });

  test('the round goes on with those that advertised: U1 has no decliner, the sum is theirs, the counts by reason stay', () => {
    const r = new Round(8, { threshold: 4 });
    const [a, b, c, ...rest] = r.ids as [string, string, string, ...string[]];
    r.send(r.decline(a, ErrorCode.ApprovalRequired));
    r.send(r.decline(b, ErrorCode.ApprovalRequired));
    r.send(r.decline(c, ErrorCode.InputReused));
    for (const id of rest) r.send(r.adverts.get(id)!);
    const { next } = close(r.state);
    expect(next.phase).toBe(Phase.ShareKeys);
    if (next.phase !== Phase.ShareKeys) return;
    expect(next.roster.ids).toEqual([...rest].sort());
    expect(next.stats).toMatchObject({ u1: 5, advertised: 5, declines: { 'approval-required': 2, 'input-reused': 1 } });
    // Nothing but counts leaves phase 0: no client id in the stats.
    expect(JSON.stringify(next.stats)).not.toMatch(/client/);
  });
});

describe('declines the coordinator refuses, each with a typed error that changes nothing', () => {
  test('after advertising, a second decline, advertising after declining, from an unknown client, for another round, an unknown reason', () => {
    const r = new Round(4, { enrolled: 5 });
    const [a, b] = r.ids as [string, string];
    r.send(r.adverts.get(a)!);
    r.send(r.decline(b, ErrorCode.NoInput));
    expectRefused(r, r.decline(a), ErrorCode.AlreadyExists, /already advertised/);
    expectRefused(r, r.decline(b, ErrorCode.NoInput), ErrorCode.AlreadyExists, /identical/);
    expectRefused(r, r.decline(b, ErrorCode.ReplayedRound), ErrorCode.AlreadyExists, /conflicting/);
    expectRefused(r, r.adverts.get(b)!, ErrorCode.AlreadyExists, /declined this round/);
    expectRefused(r, r.decline('client-9999'), ErrorCode.UnknownSender, /not a member/);
    expectRefused(r, r.decline(r.ids[2]!, ErrorCode.NoInput, { ...r.round, roundIndex: r.round.roundIndex + 1 }), ErrorCode.SessionMismatch, /another round/);
    expectRefused(r, r.decline(r.ids[2]!, ErrorCode.NoInput, { ...r.round, manifestHash: sha256('another job') }), ErrorCode.SessionMismatch);
    expectRefused(r, { ...r.decline(r.ids[2]!), reason: 'because' }, ErrorCode.InvalidArgument);
    expectRefused(r, { ...r.decline(r.ids[2]!), clientId: '' }, ErrorCode.InvalidArgument);
  });

  test('a decline once phase 0 closed is wrong-phase', () => {
    const r = new Round(4);
    for (const id of r.ids.slice(1)) r.send(r.adverts.get(id)!);
    r.state = close(r.state).next;
    expect(r.state.phase).toBe(Phase.ShareKeys);
    expect(codeOf(() => receive(r.state, r.decline(r.ids[0]!)))).toBe(ErrorCode.WrongPhase);
  });
});

describe('a round with declines, to its end', () => {
  test('completes with the exact sum of those that advertised; the outcome carries the counts by reason', () => {
    const r = new Round(6, { threshold: 3 });
    const [a, b, ...rest] = r.ids as [string, string, ...string[]];
    r.send(r.decline(a, ErrorCode.ModelRollback));
    r.send(r.decline(b, ErrorCode.ApprovalRequired));
    for (const id of rest) r.send(r.adverts.get(id)!);
    const final = r.finish();
    expect(final.phase).toBe(Phase.Completed);
    if (final.phase !== Phase.Completed) return;
    expect([...final.survivors].sort()).toEqual([...rest].sort());
    expect(Array.from(final.sum)).toEqual(r.plainSum(rest));
    const o = outcomeOf(final);
    expect(o.declines).toEqual({ 'approval-required': 1, 'model-rollback': 1 });
  });

  test('too few advertised because clients await approval: aborted, and the outcome says approval accounts for the shortfall', () => {
    // t = 3 (n = 5): 4 are needed; 2 advertised, 3 await approval.
    const r = new Round(5);
    const [a, b, c, d, e] = r.ids as [string, string, string, string, string];
    r.send(r.adverts.get(a)!);
    r.send(r.adverts.get(b)!);
    for (const id of [c, d, e]) r.send(r.decline(id, ErrorCode.ApprovalRequired));
    const final = r.finish();
    expect(final).toMatchObject({ phase: Phase.Aborted, reason: AbortReason.TooFewClients, at: Phase.AdvertiseKeys });
    const o = outcomeOf(final as AbortedState);
    expect(o).toMatchObject({ ok: false, declines: { 'approval-required': 3 }, approvalShortfall: true });
    expect((final as AbortedState).stats).toMatchObject({ advertised: 2 });
  });

  test('approval does not account for the shortfall when too few would advertise even with it, or nobody awaits it', () => {
    // 4 needed; 1 advertised, 2 await approval, 2 silent: 3 < 4 even with the approvals.
    const r = new Round(5);
    const [a, b, c] = r.ids as [string, string, string];
    r.send(r.adverts.get(a)!);
    r.send(r.decline(b, ErrorCode.ApprovalRequired));
    r.send(r.decline(c, ErrorCode.ApprovalRequired));
    expect(outcomeOf(r.finish() as AbortedState)).toMatchObject({ ok: false, approvalShortfall: false, declines: { 'approval-required': 2 } });
    const other = new Round(5);
    for (const id of other.ids.slice(0, 2)) other.send(other.adverts.get(id)!);
    for (const id of other.ids.slice(2)) other.send(other.decline(id, ErrorCode.ReplayedRound));
    expect(outcomeOf(other.finish() as AbortedState)).toMatchObject({ ok: false, approvalShortfall: false, declines: { 'replayed-round': 3 } });
    // Not a phase-0 shortfall at all.
    expect(approvalShortfall({ reason: AbortReason.Cancelled, at: Phase.AdvertiseKeys, stats: { prgWords: 0, advertised: 3, declines: { 'approval-required': 2 } }, cfg: { params: { threshold: 3 } } })).toBe(false);
  });

  test('a round cancelled in phase 0 keeps its declines as counts', () => {
    const r = new Round(4);
    r.send(r.decline(r.ids[0]!, ErrorCode.ParametersMismatch));
    const { next } = cancelRound(r.state, 'stop');
    expect(next.stats.declines).toEqual({ 'parameters-mismatch': 1 });
    expect(outcomeOf(next)).toMatchObject({ ok: false, reason: AbortReason.Cancelled, declines: { 'parameters-mismatch': 1 }, approvalShortfall: false });
  });

  test('a grouped round adds its groups’ declines; one group short only of approvals makes the round so', () => {
    const aborted = (declines: RoundOutcome['declines'], shortfall: boolean): RoundOutcome => {
      const r = new Round(4);
      const final = cancelRound(r.state, 'x').next;
      return { ok: false, reason: AbortReason.TooFewClients, at: Phase.AdvertiseKeys, detail: '', declines, approvalShortfall: shortfall, state: final };
    };
    const o = groupedOutcome([
      { members: ['a', 'b', 'c'], outcome: aborted({ 'approval-required': 2 }, true) },
      { members: ['d', 'e', 'f'], outcome: aborted({ 'approval-required': 1, 'no-input': 1 }, false) },
    ]);
    expect(o).toMatchObject({ ok: false, declines: { 'approval-required': 3, 'no-input': 1 }, approvalShortfall: true });
    expect(countDeclines([ErrorCode.NoInput, ErrorCode.ApprovalRequired, ErrorCode.NoInput])).toEqual({ 'approval-required': 1, 'no-input': 2 });
  });
});
