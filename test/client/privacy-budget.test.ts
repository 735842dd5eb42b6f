/**
 * The client's privacy budget (client/admission/privacy-budget.ts): RDP composed per order over
 * every charged round, refusal past the limit and not at it, non-DP rounds refused with a limit,
 * nothing refused without one, breakdowns per publisher and job; the ledger charging a round
 * with its contribution (once), in memory and sealed in the data dir across a reopen, a restore
 * merging charges, and an altered charge refused like any altered ledger.
 */
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryLedger, type RoundClaim } from '../../client/admission/ledger.js';
import { LEDGER_FILE, openLedger } from '../../client/admission/ledger-file.js';
import {
  checkRoundPrivacy,
  epsilonOf,
  mergeCharges,
  parsePrivacyBudget,
  privacyView,
  RDP_ORDERS,
  rdpOnGrid,
  totalRdp,
  type PrivacyCharge,
  type PrivacyClaim,
} from '../../client/admission/privacy-budget.js';
import { ddgRdp, epsilonFromRdpOrders, gaussianRdp } from '../../shared/dp/accountant.js';
import { roundPrivacyOf } from '../../client/admission/round-privacy.js';
import type { DpSpec } from '../../shared/protocol/dp-manifest.js';
import { ErrorCode } from '../../shared/errors.js';
import type { JobManifest } from '../../shared/protocol/manifest.js';
import type { RoundRef } from '../../shared/protocol/messages.js';
import { restoreBackup, writeBackup } from '../../client/store/backup.js';
import { SqliteDataStore } from '../../client/store/sqlite.js';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { codeOf, codeOfAsync } from '../support/codes.js';

const H1 = 'a'.repeat(64);
const H2 = 'b'.repeat(64);
/** One round of the Gaussian mechanism with noise multiplier 4 (ε ≈ 1.2 at δ = 1e-5 for one round). */
const COST = rdpOnGrid((a) => gaussianRdp(4, a));
const DELTA = 1e-5;

const charge = (publisher: string, manifestSha256: string, roundIndex: number, at = `2026-12-06T10:00:0${roundIndex}.000Z`): PrivacyCharge => ({
  publisher,
  manifestSha256,
  jobId: manifestSha256 === H1 ? 'job-a' : 'job-b',
  roundIndex,
  at,
  rdp: [...COST],
});
const dpClaim = (manifestSha256: string, roundIndex: number, publisher = 'pub1'): PrivacyClaim => ({ publisher, manifestSha256, roundIndex, privacy: { dp: true, rdp: COST } });
/** ε at DELTA after `n` rounds of COST. */
const epsAfter = (n: number): number => epsilonOf(totalRdp(Array.from({ length: n }, () => ({ rdp: COST }))), DELTA).epsilon;

describe('the rules', () => {
  it('composition is the sum of RDP per order, and ε comes from the summed curve (less than n times one round)', () => {
    const three = [charge('p', H1, 0), charge('p', H1, 1), charge('q', H2, 0)];
    const sum = totalRdp(three);
    RDP_ORDERS.forEach((a, i) => expect(sum[i]).toBeCloseTo(3 * gaussianRdp(4, a), 12));
    expect(epsilonOf(sum, DELTA)).toEqual(epsilonFromRdpOrders(RDP_ORDERS, sum, DELTA));
    const one = epsilonOf(COST, DELTA).epsilon;
    expect(epsilonOf(sum, DELTA).epsilon).toBeGreaterThan(one);
    expect(epsilonOf(sum, DELTA).epsilon).toBeLessThan(3 * one);
    expect(epsilonOf(totalRdp([]), DELTA).epsilon).toBe(0);
  });

  it('a round that would pass the limit is refused privacy-budget, naming the spending; one that fits is not', () => {
    const spent = [charge('pub1', H1, 0), charge('pub1', H1, 1)];
    const limit = { epsilon: (epsAfter(2) + epsAfter(3)) / 2, delta: DELTA };
    expect(() => checkRoundPrivacy(spent.slice(0, 1), limit, dpClaim(H1, 1))).not.toThrow();
    expect(codeOf(() => checkRoundPrivacy(spent, limit, dpClaim(H1, 2)))).toBe(ErrorCode.PrivacyBudget);
    expect(() => checkRoundPrivacy(spent, limit, dpClaim(H1, 2))).toThrow(/job|manifest/);
    expect(() => checkRoundPrivacy(spent, limit, dpClaim(H1, 2))).toThrow(/past its budget of epsilon/);
  });

  it('exactly at the limit is allowed; the next round is refused', () => {
    const limit = { epsilon: epsAfter(2), delta: DELTA };
    expect(() => checkRoundPrivacy([charge('pub1', H1, 0)], limit, dpClaim(H1, 1))).not.toThrow();
    expect(codeOf(() => checkRoundPrivacy([charge('pub1', H1, 0), charge('pub1', H1, 1)], limit, dpClaim(H1, 2)))).toBe(ErrorCode.PrivacyBudget);
  });

  it('the limit is on the total over publishers and jobs: another publisher’s job does not get a fresh budget', () => {
    const limit = { epsilon: epsAfter(2), delta: DELTA };
    const spent = [charge('pub1', H1, 0), charge('pub1', H1, 1)];
    expect(codeOf(() => checkRoundPrivacy(spent, limit, dpClaim(H2, 0, 'pub2')))).toBe(ErrorCode.PrivacyBudget);
  });

  it('with a limit a non-DP round is refused, even with nothing spent; without one nothing is refused', () => {
    const plain: PrivacyClaim = { publisher: 'pub1', manifestSha256: H1, roundIndex: 0, privacy: { dp: false } };
    expect(codeOf(() => checkRoundPrivacy([], { epsilon: 100, delta: DELTA }, plain))).toBe(ErrorCode.PrivacyBudget);
    expect(() => checkRoundPrivacy([], { epsilon: 100, delta: DELTA }, plain)).toThrow(/not differentially private/);
    const spent = Array.from({ length: 50 }, (_, i) => charge('pub1', H1, i));
    expect(() => checkRoundPrivacy(spent, undefined, plain)).not.toThrow();
    expect(() => checkRoundPrivacy(spent, undefined, dpClaim(H1, 50))).not.toThrow();
  });

  it('a round charged before is not charged again (a reconnect resends its input)', () => {
    const limit = { epsilon: epsAfter(1), delta: DELTA };
    expect(() => checkRoundPrivacy([charge('pub1', H1, 0)], limit, dpClaim(H1, 0))).not.toThrow();
  });

  it('breakdowns per publisher and per job, with first and last round and the limit’s δ', () => {
    const cs = [charge('pub1', H1, 0), charge('pub1', H1, 1), charge('pub2', H2, 3)];
    const v = privacyView(cs, 1e-6, { epsilon: 10, delta: DELTA });
    expect(v.delta).toBe(DELTA);
    expect(v.total).toMatchObject({ rounds: 3, epsilon: epsAfter(3), firstAt: cs[0]!.at, lastAt: cs[2]!.at });
    expect(v.remaining).toBeCloseTo(10 - epsAfter(3), 12);
    expect(v.publishers).toEqual([expect.objectContaining({ publisher: 'pub1', rounds: 2, epsilon: epsAfter(2) }), expect.objectContaining({ publisher: 'pub2', rounds: 1, epsilon: epsAfter(1) })]);
    expect(v.jobs).toEqual([
      expect.objectContaining({ publisher: 'pub1', manifestSha256: H1, jobId: 'job-a', roundIndexes: [0, 1], firstAt: cs[0]!.at, lastAt: cs[1]!.at }),
      expect.objectContaining({ publisher: 'pub2', manifestSha256: H2, jobId: 'job-b', roundIndexes: [3] }),
    ]);
    // Without a limit: at the δ asked for.
    expect(privacyView(cs, 1e-6).delta).toBe(1e-6);
    expect(privacyView(cs, 1e-6).total.epsilon).toBeGreaterThan(epsAfter(3));
  });

  it('merging keeps each round once, at its earliest time', () => {
    const a = [charge('p', H1, 0, '2026-12-06T10:00:05.000Z')];
    const b = [charge('p', H1, 0, '2026-12-06T10:00:01.000Z'), charge('p', H1, 1)];
    expect(mergeCharges(a, b).map((c) => [c.roundIndex, c.at])).toEqual([
      [0, '2026-12-06T10:00:01.000Z'],
      [1, '2026-12-06T10:00:01.000Z'],
    ]);
  });

  it('the budget parses strictly', () => {
    expect(parsePrivacyBudget('epsilon=8,delta=1e-5')).toEqual({ epsilon: 8, delta: 1e-5 });
    expect(parsePrivacyBudget('delta=0.001, epsilon=0.5')).toEqual({ epsilon: 0.5, delta: 0.001 });
    for (const bad of ['', 'epsilon=8', 'delta=1e-5', 'epsilon=0,delta=1e-5', 'epsilon=8,delta=1', 'epsilon=8,delta=0', 'epsilon=x,delta=1e-5', 'epsilon=8,delta=1e-5,foo=1', 'epsilon=8,epsilon=9,delta=1e-5', 'epsilon=Infinity,delta=1e-5', 'epsilon=-1,delta=1e-5']) {
      expect(codeOf(() => parsePrivacyBudget(bad))).toBe(ErrorCode.InvalidArgument);
    }
  });
});

describe('a round’s cost from its manifest', () => {
  const dp: DpSpec = { mechanism: 'distributed-discrete-gaussian', clip: 1, noiseMultiplier: 1, delta: 1e-5, epsilon: 5, minClients: 3, maxClients: 10, bits: 20, gamma: 0.001, sigma2: '90000/1', normBound2: '1000000', beta: 0.6 };
  const manifest = (d?: DpSpec): JobManifest => ({ rounds: 5, round: { dim: 100, cohort: 5, threshold: 3 }, ...(d ? { dp: d } : {}) }) as unknown as JobManifest;

  it('a manifest without a dp section is not DP; with one, its cost is the KLS21 RDP at each order (padded dimension, minClients)', () => {
    expect(roundPrivacyOf(manifest())).toEqual({ dp: false });
    const p = roundPrivacyOf(manifest(dp));
    if (!p.dp) throw new Error('expected a DP round');
    const r = { sigma2: 90000, clients: 3, dim: 128, normBound2: 1_000_000n };
    RDP_ORDERS.forEach((a, i) => expect(p.rdp[i]).toBe(ddgRdp(r, a)));
  });
});

// ---------------------------------------------------------------------------------------------
// In the ledger.

const ref = (h: string, roundIndex: number): RoundRef => ({ manifestHash: new Uint8Array(Buffer.from(h, 'hex')), roundIndex });
const dpJoin = (h: string, roundIndex: number, limit?: { epsilon: number; delta: number }): RoundClaim => ({
  manifestSha256: h,
  roundIndex,
  kind: 'plain',
  jobId: h === H1 ? 'job-a' : 'job-b',
  rounds: 100,
  charge: { publisher: h === H1 ? 'pub1' : 'pub2', rdp: [...COST], ...(limit ? { limit } : {}) },
});

describe('charged with the contribution', () => {
  it('a joined round is charged only when its masked input is recorded as sent, and once', async () => {
    const l = memoryLedger();
    await l.join(dpJoin(H1, 0));
    expect(l.privacyCharges()).toEqual([]);
    await l.contribute(ref(H1, 0), { reuse: false });
    expect(l.privacyCharges()).toEqual([expect.objectContaining({ publisher: 'pub1', manifestSha256: H1, jobId: 'job-a', roundIndex: 0, rdp: COST })]);
    await l.contribute(ref(H1, 0), { reuse: false });
    expect(l.privacyCharges()).toHaveLength(1);
  });

  it('a non-DP round is not charged', async () => {
    const l = memoryLedger();
    await l.join({ manifestSha256: H1, roundIndex: 0, kind: 'plain', rounds: 5 });
    await l.contribute(ref(H1, 0), { reuse: false });
    expect(l.privacyCharges()).toEqual([]);
  });

  it('the limit is checked again at the contribution: spending recorded since the join refuses it, and nothing is recorded', async () => {
    const limit = { epsilon: epsAfter(1), delta: DELTA };
    const l = memoryLedger();
    await l.join(dpJoin(H1, 0, limit));
    await l.join(dpJoin(H2, 0, limit));
    await l.contribute(ref(H1, 0), { reuse: false });
    expect(await codeOfAsync(l.contribute(ref(H2, 0), { reuse: false }))).toBe(ErrorCode.PrivacyBudget);
    expect(l.privacyCharges()).toHaveLength(1);
    expect(l.view().jobs.find((j) => j.manifestSha256 === H2)!.contributions).toBe(0);
  });
});

describe('sealed in the data dir', () => {
  let dir: string;
  const seed = new Uint8Array(randomBytes(32));
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aegis-privacy-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const open = () => openLedger(dir, seed, { missing: 'create' }).then((r) => r.ledger);

  it('the charges survive a reopen, and a reopened ledger still enforces them', async () => {
    const limit = { epsilon: epsAfter(2), delta: DELTA };
    const a = await open();
    for (const i of [0, 1]) {
      await a.join(dpJoin(H1, i, limit));
      await a.contribute(ref(H1, i), { reuse: false });
    }
    const b = await open();
    expect(b.privacyCharges().map((c) => c.roundIndex)).toEqual([0, 1]);
    expect(privacyView(b.privacyCharges(), DELTA).total.epsilon).toBe(epsAfter(2));
    expect(codeOf(() => checkRoundPrivacy(b.privacyCharges(), limit, dpClaim(H2, 0, 'pub2')))).toBe(ErrorCode.PrivacyBudget);
  });

  it('a charge lowered in the file is refused (integrity check), never read as less spending', async () => {
    const a = await open();
    await a.join(dpJoin(H1, 0));
    await a.contribute(ref(H1, 0), { reuse: false });
    const path = join(dir, LEDGER_FILE);
    const file = JSON.parse(await readFile(path, 'utf8')) as { ledger: { privacy: PrivacyCharge[] } };
    expect(file.ledger.privacy).toHaveLength(1);
    file.ledger.privacy[0]!.rdp = file.ledger.privacy[0]!.rdp.map(() => 0);
    await writeFile(path, JSON.stringify(file));
    expect(await codeOfAsync(openLedger(dir, seed, { missing: 'create' }))).toBe(ErrorCode.BadSignature);
    // Dropping the charges altogether is refused too.
    delete (file.ledger as { privacy?: unknown }).privacy;
    await writeFile(path, JSON.stringify(file));
    expect(await codeOfAsync(openLedger(dir, seed, { missing: 'create' }))).toBe(ErrorCode.BadSignature);
  });

  it('a ledger written before the budget existed (no privacy field) opens with nothing spent', async () => {
    const a = await open();
    await a.join({ manifestSha256: H1, roundIndex: 0, kind: 'plain', rounds: 5 });
    const text = await readFile(join(dir, LEDGER_FILE), 'utf8');
    expect(text).not.toContain('"privacy"');
    expect((await open()).privacyCharges()).toEqual([]);
  });

  it('an older backup restored over a newer ledger loses no charge (the union): spending never goes back', async () => {
    const PASS = 'privacy restore test passphrase';
    const FAST = { N: 2 ** 14, r: 8, p: 1 };
    const src = join(dir, 'src');
    await mkdir(src);
    const a = (await openLedger(src, seed, { missing: 'create' })).ledger;
    await a.join(dpJoin(H1, 0));
    await a.contribute(ref(H1, 0), { reuse: false });
    const old = join(dir, 'old.aegis');
    const kek = await PassphraseKek.create(join(src, 'kek.keyfile.json'), PASS, { kdf: FAST });
    const store = await SqliteDataStore.open(src, kek);
    try {
      await writeBackup(src, store, old, { passphrase: PASS, kdf: FAST }, 'backup');
    } finally {
      store.close();
      kek.close();
    }
    // Spent after the backup.
    await a.join(dpJoin(H1, 1));
    await a.contribute(ref(H1, 1), { reuse: false });
    const target = join(dir, 'target');
    await mkdir(target);
    await writeFile(join(target, LEDGER_FILE), await readFile(join(src, LEDGER_FILE)));
    await restoreBackup(old, { passphrase: PASS }, target, { kind: 'passphrase' }, { passphrase: async () => PASS, pin: async () => '' });
    const merged = (await openLedger(target, seed, { missing: 'refuse' })).ledger;
    expect(merged.privacyCharges().map((c) => c.roundIndex)).toEqual([0, 1]);
  });
});
