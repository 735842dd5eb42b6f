/**
 * Declines in the in-memory round hosts (coordinator/hosts/): a member that sits the round out
 * counts as answered, so phase 0 closes as soon as only decliners (and gone clients) are missing
 * — well before its deadline, as the host's own phase timeline shows; the status reports the
 * declines by reason, a grouped round per group and summed, a retired round still.
 */
import { describe, expect, test } from '@jest/globals';
import { makeIdentities } from '../../bench/sim/client-host.js';
import { handle, start, type ClientState } from '../../client/round/index.js';
import { GroupedRoundHost } from '../../coordinator/hosts/grouped-host.js';
import { retiredHost } from '../../coordinator/hosts/retired-host.js';
import { RoundHost, type PhaseDeadlines } from '../../coordinator/hosts/round-host.js';
import type { PhaseClosedEvent } from '../../coordinator/hosts/types.js';
import { addInto } from '../../shared/crypto/vecops.js';
import { ErrorCode } from '../../shared/errors.js';
import { validateRoundParams } from '../../shared/protocol/params.js';
import { sha256 } from '../../shared/protocol/session.js';
import { roundViewDigest } from '../../shared/protocol/view.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { codeOf } from '../support/codes.js';

const totalOf = (c: Record<string, number | undefined>): number => Object.values(c).reduce<number>((a, n) => a + (n ?? 0), 0);

/** Phase 0 waits a minute; the others are short, so a round that completes at all closed phase 0 early. */
const LONG_ADVERTISE: PhaseDeadlines = { advertiseMs: 60_000, shareMs: 5_000, maskedMs: 5_000, consistencyMs: 5_000, unmaskMs: 5_000 };

/**
 * `n` members wired to a host (invited: all of them); `declines` maps a member to the reason it
 * declines with instead of advertising; `silent` members never answer.
 */
function setup(n: number, opts: { declines?: Record<string, ErrorCode>; silent?: string[]; manifest?: string; ids?: ReturnType<typeof makeIdentities> } = {}) {
  const params = validateRoundParams({ dim: 8, cohort: n });
  const round = { manifestHash: sha256(opts.manifest ?? 'declines host test'), roundIndex: 0 };
  const ids = opts.ids ?? makeIdentities(n);
  const directory = new Map(ids.map((c) => [c.id, c.publicKey]));
  const view = roundViewDigest({ round, params });
  const closed: PhaseClosedEvent[] = [];
  const host = new RoundHost({ params, round, view, identityOf: (id) => directory.get(id), deadlines: LONG_ADVERTISE, invited: n, cohort: ids.map((c) => c.id), onPhaseClosed: (e) => closed.push(e) });
  const inputs = new Map<string, Uint32Array>();
  const states = new Map<string, ClientState>();
  ids.forEach((c, i) => {
    if (opts.silent?.includes(c.id)) return;
    const reason = opts.declines?.[c.id];
    if (reason !== undefined) return void setImmediate(() => host.submit(c.id, { type: 'decline', round, clientId: c.id, reason }));
    const input = Uint32Array.from({ length: params.dim + 1 }, (_, j) => (j === params.dim ? 1 : (i + 1) * (j + 3)));
    inputs.set(c.id, input);
    const { next, outbound } = start({ clientId: c.id, identityKey: c.identityKey, params, round, view, identityOf: (id) => directory.get(id), input: () => input });
    states.set(c.id, next);
    host.subscribe(c.id, (m) => {
      const t = handle(states.get(c.id)!, m);
      states.set(c.id, t.next);
      setImmediate(() => t.outbound.forEach((o) => codeOf(() => host.submit(c.id, o))));
    });
    setImmediate(() => outbound.forEach((o) => host.submit(c.id, o)));
  });
  const sumOf = (members: Iterable<string>): number[] => {
    const s = new Uint32Array(params.dim + 1);
    for (const id of members) addInto(s, inputs.get(id)!);
    return Array.from(s);
  };
  return { host, ids: ids.map((c) => c.id), round, inputs, closed, sumOf };
}

/** Resolves once `cond` holds (checked every 10 ms; the suite's timeout bounds it). */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 10));
}

/** How long phase 0 stayed open, by the host's timeline. */
const phase0Ms = (host: { timeline: { phase: Phase; at: number }[] }): number => host.timeline[1]!.at - host.timeline[0]!.at;

describe('a round host with declines', () => {
  test('phase 0 closes as soon as only decliners are missing (not at its deadline); the round completes with the others exactly', async () => {
    const ids = makeIdentities(6);
    const { host, closed, sumOf, inputs } = setup(6, { ids, declines: { [ids[1]!.id]: ErrorCode.ApprovalRequired, [ids[4]!.id]: ErrorCode.NoInput } });
    const out = await host.outcome;
    expect(out.ok).toBe(true);
    if (!out.ok) return;
    expect([...out.survivors].sort()).toEqual([...inputs.keys()].sort());
    expect(Array.from(out.sum)).toEqual(sumOf(inputs.keys()));
    expect(out.declines).toEqual({ 'approval-required': 1, 'no-input': 1 });
    // The timeline: share-keys began right after the answers, far from the 60 s deadline.
    expect(host.timeline[1]!.phase).toBe(Phase.ShareKeys);
    expect(phase0Ms(host)).toBeLessThan(LONG_ADVERTISE.advertiseMs / 4);
    // Phase 0's close reports the advertisers out of the invited, and the declines apart.
    expect(closed[0]).toMatchObject({ phase: Phase.AdvertiseKeys, clients: 4, expected: 6, declines: { 'approval-required': 1, 'no-input': 1 } });
    expect(closed.slice(1).every((e) => e.declines === undefined)).toBe(true);
    expect(host.status()).toMatchObject({ phase: Phase.Completed, sets: { u1: 4, u2: 4, u3: 4, u4: 4 }, declines: { 'approval-required': 1, 'no-input': 1 } });
  });

  test('only decliners and a gone client missing: phase 0 closes at once too', async () => {
    const ids = makeIdentities(6);
    const { host } = setup(6, { ids, declines: { [ids[0]!.id]: ErrorCode.ReplayedRound }, silent: [ids[5]!.id] });
    // Once the others answered, the silent one's stream is gone.
    await until(() => host.status().received === 4 && totalOf(host.status().declines) === 1);
    expect(host.phase).toBe(Phase.AdvertiseKeys);
    expect(host.status()).toMatchObject({ received: 4, declines: { 'replayed-round': 1 } });
    host.lost(ids[5]!.id);
    const out = await host.outcome;
    expect(out.ok).toBe(true);
    expect(phase0Ms(host)).toBeLessThan(LONG_ADVERTISE.advertiseMs / 4);
  });

  test('everyone declines: the round aborts at once with too-few-clients, and approval accounts for the shortfall', async () => {
    const ids = makeIdentities(4);
    const { host } = setup(4, { ids, declines: Object.fromEntries(ids.map((c) => [c.id, ErrorCode.ApprovalRequired])) });
    const out = await host.outcome;
    expect(out).toMatchObject({ ok: false, reason: 'too-few-clients', at: Phase.AdvertiseKeys, declines: { 'approval-required': 4 }, approvalShortfall: true });
    expect(phase0Ms(host)).toBeLessThan(LONG_ADVERTISE.advertiseMs / 4);
    // The counts survive retention, which forgets who took part.
    const retired = retiredHost(host, out);
    expect(retired.status().declines).toEqual({ 'approval-required': 4 });
  });

  test('a decline the host refuses counts as refused and changes nothing; a decliner is not sent the round start again', async () => {
    const ids = makeIdentities(4);
    const { host, round } = setup(4, { ids, silent: [ids[3]!.id] });
    await until(() => host.status().received === 3);
    const [a, , , d] = ids.map((c) => c.id) as [string, string, string, string];
    expect(codeOf(() => host.submit(a, { type: 'decline', round, clientId: a, reason: ErrorCode.NoInput }))).toBe('already-exists');
    expect(codeOf(() => host.submit(a, { type: 'decline', round, clientId: d, reason: ErrorCode.NoInput }))).toBe('unknown-sender');
    expect(codeOf(() => host.submit(d, { type: 'decline', round: { ...round, roundIndex: 1 }, clientId: d, reason: ErrorCode.NoInput }))).toBe('session-mismatch');
    expect(host.status()).toMatchObject({ phase: Phase.AdvertiseKeys, refused: 3, declines: {} });
    expect(host.awaitsAdvertisement(d)).toBe(true);
    host.submit(d, { type: 'decline', round, clientId: d, reason: ErrorCode.ModelRollback });
    expect(host.awaitsAdvertisement(d)).toBe(false);
    const out = await host.outcome;
    expect(out).toMatchObject({ ok: true, declines: { 'model-rollback': 1 } });
  });

  test('a grouped round: each group closes its phase 0 on its own answers; the status sums the groups’ declines', async () => {
    const ids = makeIdentities(8);
    const g1 = ids.slice(0, 4);
    const g2 = ids.slice(4);
    const a = setup(4, { ids: g1, manifest: 'grouped', declines: { [g1[0]!.id]: ErrorCode.ApprovalRequired } });
    const b = setup(4, { ids: g2, manifest: 'grouped', declines: { [g2[0]!.id]: ErrorCode.ApprovalRequired, [g2[1]!.id]: ErrorCode.NoInput } });
    const grouped = new GroupedRoundHost([
      { members: g1.map((c) => c.id), host: a.host },
      { members: g2.map((c) => c.id), host: b.host },
    ]);
    const out = await grouped.outcome;
    // Group 1 (3 of 4 advertised, t = 2) completes; group 2 (2 of 4) aborts: the round completes with group 1.
    expect(out.ok).toBe(true);
    expect(out.declines).toEqual({ 'approval-required': 2, 'no-input': 1 });
    expect(grouped.status().declines).toEqual({ 'approval-required': 2, 'no-input': 1 });
    expect(phase0Ms(a.host)).toBeLessThan(LONG_ADVERTISE.advertiseMs / 4);
    expect(phase0Ms(b.host)).toBeLessThan(LONG_ADVERTISE.advertiseMs / 4);
  });
});
