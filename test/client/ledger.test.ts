/**
 * The contribution ledger's rules (client/admission/ledger.ts), in memory: each round of a job
 * joined once and within the manifest's rounds, training model versions that only move forward
 * to the version the previous round published, and a plain input contributed once unless the
 * client opted in. Then the same rules through admission, as a round start reaches them.
 */
import { describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { admitRound, newAdmissionMemory, recordRoundOutcome, type AdmissionContext, type AdmissionEvent } from '../../client/admission/admission.js';
import {
  addRanges,
  Ledger,
  emptyLedgerData,
  MAX_JOBS,
  MAX_RANGES,
  memoryLedger,
  mergeLedgers,
  quantizedInputId,
  rawInputId,
  type ContributionLedger,
  type RoundClaim,
} from '../../client/admission/ledger.js';
import { ErrorCode } from '../../shared/errors.js';
import type { RoundRef, RoundStart } from '../../shared/protocol/messages.js';
import { parseManifest } from '../../shared/protocol/manifest.js';
import { manifest } from '../support/cluster.js';
import { codeOf, codeOfAsync } from '../support/codes.js';

const H1 = 'a'.repeat(64);
const H2 = 'b'.repeat(64);
const ref = (h: string, roundIndex: number): RoundRef => ({ manifestHash: new Uint8Array(Buffer.from(h, 'hex')), roundIndex });
const plain = (h: string, roundIndex: number, rounds = 10): RoundClaim => ({ manifestSha256: h, roundIndex, kind: 'plain', jobId: 'plain-job', rounds });
const training = (roundIndex: number, modelVersion: number, rounds = 10): RoundClaim => ({ manifestSha256: H1, roundIndex, kind: 'training', jobId: 'fedavg', rounds, modelVersion });

/** Joins a round and sends its masked input; the outcome, if given, as the coordinator announces it. */
async function contribute(l: ContributionLedger, c: RoundClaim, outcome?: { ok: boolean; poisoningFlagged?: boolean }): Promise<void> {
  l.check(c);
  await l.join(c);
  await l.contribute(ref(c.manifestSha256, c.roundIndex), { reuse: false });
  if (outcome) await l.outcome(ref(c.manifestSha256, c.roundIndex), outcome);
}

describe('rounds of a job', () => {
  it('joins each round index once: the same index again is replayed-round, another index is fine', async () => {
    const l = memoryLedger();
    await contribute(l, plain(H1, 0));
    expect(codeOf(() => l.check(plain(H1, 0)))).toBe(ErrorCode.ReplayedRound);
    expect(await codeOfAsync(l.join(plain(H1, 0)))).toBe(ErrorCode.ReplayedRound);
    expect(() => l.check(plain(H1, 1))).not.toThrow();
    // The same index of another job (another manifest hash) is another round.
    expect(() => l.check(plain(H2, 0))).not.toThrow();
  });

  it('a round joined but never contributed to is still joined: replayed-round', async () => {
    const l = memoryLedger();
    await l.join(plain(H1, 3));
    expect(codeOf(() => l.check(plain(H1, 3)))).toBe(ErrorCode.ReplayedRound);
  });

  it('refuses a round index at or past the manifest’s rounds, and records nothing for it', async () => {
    const l = memoryLedger();
    expect(codeOf(() => l.check(plain(H1, 2, 2)))).toBe(ErrorCode.RoundOutOfRange);
    expect(codeOf(() => l.check(plain(H1, 9999, 2)))).toBe(ErrorCode.RoundOutOfRange);
    expect(await codeOfAsync(l.join(plain(H1, 2, 2)))).toBe(ErrorCode.RoundOutOfRange);
    expect(l.view().jobs).toEqual([]);
    expect(() => l.check(plain(H1, 1, 2))).not.toThrow();
  });

  it('a masked input goes only to a round joined through the ledger', async () => {
    const l = memoryLedger();
    expect(await codeOfAsync(l.contribute(ref(H1, 0), { reuse: false }))).toBe(ErrorCode.FailedPrecondition);
  });

  it('keeps joined indexes as ranges; past the bound the smallest gap is closed (those rounds are sat out too)', () => {
    // MAX_RANGES + 1 single indexes, two apart from the next, but 32 is one apart from 30.
    const many = Array.from({ length: MAX_RANGES + 1 }, (_, i): [number, number] => [i * 3, i * 3]);
    many[11] = [32, 32];
    const r = addRanges([], many);
    expect(r).toHaveLength(MAX_RANGES);
    const covered = (i: number): boolean => r.some(([a, b]) => a <= i && i <= b);
    for (const [a] of many) expect(covered(a)).toBe(true);
    // The smallest gap (31) was closed: round 31 now counts as joined; the other gaps stay open.
    expect(covered(31)).toBe(true);
    expect(covered(1)).toBe(false);
    expect(addRanges([[0, 2]], [[3, 3], [5, 6]])).toEqual([
      [0, 3],
      [5, 6],
    ]);
  });

  it('refuses a new job once it holds MAX_JOBS live jobs (never drops one a replay could use)', async () => {
    const l = memoryLedger();
    const expires = new Date(Date.now() + 3_600_000).toISOString();
    for (let j = 0; j < MAX_JOBS; j++) await l.join({ manifestSha256: j.toString(16).padStart(64, '0'), roundIndex: 0, kind: 'plain', expiresAt: expires });
    expect(codeOf(() => l.check(plain(H1, 0)))).toBe(ErrorCode.FailedPrecondition);
    // A round of a job it already holds is still decided by the rules.
    expect(() => l.check({ manifestSha256: '0'.repeat(64), roundIndex: 1, kind: 'plain' })).not.toThrow();
  });
});

describe('model versions of a training job', () => {
  it('after a completed round, the next must start from the version it published (one more)', async () => {
    const l = memoryLedger();
    await contribute(l, training(0, 0), { ok: true });
    expect(codeOf(() => l.check(training(1, 0)))).toBe(ErrorCode.ReplayedRound); // the version it contributed from
    expect(codeOf(() => l.check(training(1, 2)))).toBe(ErrorCode.ModelRollback); // not the published one
    expect(() => l.check(training(1, 1))).not.toThrow();
    await contribute(l, training(1, 1), { ok: true });
    expect(() => l.check(training(2, 2))).not.toThrow();
  });

  it('after an aborted or flagged round it contributed to, the retry from the same version is sat out (replayed-round)', async () => {
    for (const outcome of [{ ok: false }, { ok: true, poisoningFlagged: true }]) {
      const l = memoryLedger();
      await contribute(l, training(0, 0), outcome);
      // The model is unchanged, and this client's input from it may already be in a sum.
      expect(codeOf(() => l.check(training(1, 0)))).toBe(ErrorCode.ReplayedRound);
      // A version the aborted round never published is not the one to train from either.
      expect(codeOf(() => l.check(training(1, 1)))).toBe(ErrorCode.ModelRollback);
    }
  });

  it('after an aborted round it joined without sending an input, it takes the retry from the unchanged version', async () => {
    const l = memoryLedger();
    await l.join(training(0, 4));
    await l.outcome(ref(H1, 0), { ok: false });
    expect(() => l.check(training(1, 4))).not.toThrow();
    expect(codeOf(() => l.check(training(1, 5)))).toBe(ErrorCode.ModelRollback);
  });

  it('refuses a version older than one it contributed from (model-rollback), even without any outcome seen', async () => {
    const l = memoryLedger();
    await contribute(l, training(0, 3));
    expect(codeOf(() => l.check(training(5, 2)))).toBe(ErrorCode.ModelRollback);
    expect(codeOf(() => l.check(training(5, 3)))).toBe(ErrorCode.ReplayedRound);
    // Without the previous round's outcome only "forward" is checked.
    expect(() => l.check(training(5, 9))).not.toThrow();
  });

  it('the first word on a round’s outcome counts: a later one does not change it', async () => {
    const l = memoryLedger();
    await contribute(l, training(0, 0), { ok: true });
    await l.outcome(ref(H1, 0), { ok: false });
    expect(() => l.check(training(1, 1))).not.toThrow();
    // Outcomes of rounds it never joined change nothing.
    await l.outcome(ref(H1, 7), { ok: false });
    expect(l.view().jobs[0]!.recent.map((r) => r.roundIndex)).toEqual([0]);
  });
});

describe('plain inputs', () => {
  const x = quantizedInputId(new Uint32Array([1, 2, 3, 1]));
  const y = quantizedInputId(new Uint32Array([1, 2, 4, 1]));

  it('contributes one input to one round only: the same input in another round or job is input-reused', async () => {
    const l = memoryLedger();
    const d = l.inputDigest(x, ref(H1, 0), { reuse: false });
    await l.join(plain(H1, 0), d);
    await l.contribute(ref(H1, 0), { reuse: false });
    expect(codeOf(() => l.inputDigest(x, ref(H1, 1), { reuse: false }))).toBe(ErrorCode.InputReused);
    expect(codeOf(() => l.inputDigest(x, ref(H2, 0), { reuse: false }))).toBe(ErrorCode.InputReused);
    // Another input is fine.
    expect(() => l.inputDigest(y, ref(H1, 1), { reuse: false })).not.toThrow();
  });

  it('an input recorded under another of its keys (a merged ledger) is still input-reused; a new one is recorded under the first key', async () => {
    const first = memoryLedger();
    const other = memoryLedger();
    await other.join(plain(H2, 0), other.inputDigest(x, ref(H2, 0), { reuse: false }));
    await other.contribute(ref(H2, 0), { reuse: false });
    const merged = new Ledger(mergeLedgers(first.data(), other.data()));
    const [firstKey, otherKey] = [...first.data().inputKeys.keys(), ...other.data().inputKeys.keys()];
    expect(codeOf(() => merged.inputDigest(x, ref(H1, 0), { reuse: false }))).toBe(ErrorCode.InputReused);
    expect(merged.inputDigest(y, ref(H1, 0), { reuse: false }).key).toBe(firstKey);
    expect(merged.inputDigest(y, ref(H1, 0), { reuse: false }).key).not.toBe(otherKey);
  });

  it('with the opt-in (--input-reuse) the same input goes to another round', async () => {
    const l = memoryLedger();
    await l.join(plain(H1, 0), l.inputDigest(x, ref(H1, 0), { reuse: false }));
    await l.contribute(ref(H1, 0), { reuse: false });
    const again = l.inputDigest(x, ref(H1, 1), { reuse: true });
    await l.join(plain(H1, 1), again);
    await l.contribute(ref(H1, 1), { reuse: true });
    expect(l.view().inputs).toBe(2);
    // Without the opt-in at the contribution, it is refused there too (and nothing is recorded).
    await l.join(plain(H1, 2), l.inputDigest(x, ref(H1, 2), { reuse: true }));
    expect(await codeOfAsync(l.contribute(ref(H1, 2), { reuse: false }))).toBe(ErrorCode.InputReused);
    expect(l.view().inputs).toBe(2);
  });

  it('the digest is keyed: two ledgers give one input different digests, and the view shows no value', async () => {
    const a = memoryLedger();
    const b = memoryLedger();
    expect(a.inputDigest(x, ref(H1, 0), { reuse: false }).digest).not.toBe(b.inputDigest(x, ref(H1, 0), { reuse: false }).digest);
    expect(Buffer.concat(rawInputId([0.5, -1], 3))).toHaveLength(1 + 3 * 8);
    await a.join(plain(H1, 0), a.inputDigest(x, ref(H1, 0), { reuse: false }));
    await a.contribute(ref(H1, 0), { reuse: false });
    const shown = JSON.stringify(a.view());
    expect(shown).not.toMatch(/"values"|\[1,2,3,1\]/);
  });
});

describe('merging two ledgers (restores)', () => {
  it('is the union: rounds, contributions, outcomes and inputs of both, keys of both', () => {
    const a = emptyLedgerData();
    const b = emptyLedgerData();
    a.jobs.push({ manifestSha256: H1, kind: 'training', joined: [[0, 1]], contributedFrom: 1, contributions: 2, recent: [{ roundIndex: 1, modelVersion: 1, joinedAt: '2030-01-01T00:00:01.000Z', contributedAt: '2030-01-01T00:00:02.000Z' }] });
    b.jobs.push({ manifestSha256: H1, kind: 'training', joined: [[0, 0], [5, 5]], contributedFrom: 5, contributions: 2, recent: [{ roundIndex: 5, modelVersion: 5, joinedAt: '2030-01-02T00:00:00.000Z', outcome: 'ok' }] });
    b.jobs.push({ manifestSha256: H2, kind: 'plain', joined: [[0, 0]], contributions: 1, recent: [] });
    const m = mergeLedgers(a, b);
    const job = m.jobs.find((j) => j.manifestSha256 === H1)!;
    expect(job.joined).toEqual([
      [0, 1],
      [5, 5],
    ]);
    expect(job.contributedFrom).toBe(5);
    expect(job.recent.map((r) => r.roundIndex)).toEqual([1, 5]);
    expect(m.jobs.map((j) => j.manifestSha256).sort()).toEqual([H1, H2]);
    expect(m.inputKeys.size).toBe(2);
  });
});

describe('through admission', () => {
  const sha = (b: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(b).digest());
  const job = manifest({ jobId: 'ledgered', rounds: 2, round: { dim: 4, cohort: 3 } });
  const parsed = parseManifest(job).manifest;
  const start = (roundIndex: number): RoundStart => ({
    type: 'round-start',
    round: { manifestHash: sha(job), roundIndex },
    params: parsed.round,
    deadlines: parsed.deadlines,
    manifestJson: job,
    group: { index: 0, count: 1, members: ['me', 'peer-1', 'peer-2'] },
  });

  function context(events: AdmissionEvent[], over: Partial<AdmissionContext> = {}): AdmissionContext {
    return {
      clientId: 'me',
      hasPlainInput: true,
      plainInput: async () => quantizedInputId(new Uint32Array([7, 7, 7, 1])),
      fetchModel: () => Promise.reject(new Error('no model fetch expected')),
      memory: newAdmissionMemory(),
      ledger: memoryLedger(),
      onEvent: (e) => events.push(e),
      ...over,
    };
  }

  it('records the join on admission, then declines the same round (replayed-round), a round past the manifest, and the same input', async () => {
    const events: AdmissionEvent[] = [];
    const ctx = context(events);
    expect(await admitRound(ctx, start(0))).toMatchObject({ admitted: true, kind: 'plain' });
    expect(await admitRound(ctx, start(0))).toEqual({ admitted: false, code: ErrorCode.ReplayedRound, message: expect.any(String) });
    expect(await admitRound(ctx, start(2))).toMatchObject({ admitted: false, code: ErrorCode.RoundOutOfRange });
    // Round 1 is new, but once round 0's input left, the same input is refused for it.
    await ctx.ledger.contribute(start(0).round, { reuse: false });
    expect(await admitRound(ctx, start(1))).toMatchObject({ admitted: false, code: ErrorCode.InputReused });
    expect(events.map((e) => (e.kind === 'sat-out' ? [e.roundIndex, e.code] : e.kind))).toEqual([
      [0, ErrorCode.ReplayedRound],
      [2, ErrorCode.RoundOutOfRange],
      [1, ErrorCode.InputReused],
    ]);
    // The opt-in takes it.
    expect(await admitRound({ ...ctx, inputReuse: true }, start(1))).toMatchObject({ admitted: true });
  });

  it('an outcome reaches the ledger through recordRoundOutcome', async () => {
    const events: AdmissionEvent[] = [];
    const ctx = context(events);
    await admitRound(ctx, start(0));
    await recordRoundOutcome(ctx, { type: 'round-outcome', round: start(0).round, ok: false, reason: 'too-few-clients' });
    expect(ctx.ledger.view().jobs[0]!.recent[0]!.outcome).toBe('aborted');
  });
});

describe('input ids', () => {
  it('are the bytes they always were, given in parts: a tag byte, then the vector in place (digests in ledgers on disk still match)', () => {
    const values = Float64Array.of(0.5, -1, 1e-300);
    const raw = rawInputId(values, 3);
    expect(Buffer.concat(raw)).toEqual(Buffer.concat([Buffer.from([2]), Buffer.from(Float64Array.of(0.5, -1, 1e-300, 3).buffer)]));
    // A Float64Array is hashed where it lies; other numbers are converted first.
    expect(raw[1]!.buffer).toBe(values.buffer);
    expect(Buffer.concat(rawInputId([0.5, -1, 1e-300], 3))).toEqual(Buffer.concat(raw));
    const words = new Uint32Array([7, 0xffffffff, 1]);
    const q = quantizedInputId(words.subarray(1));
    expect(Buffer.concat(q)).toEqual(Buffer.concat([Buffer.from([1]), Buffer.from(new Uint32Array([0xffffffff, 1]).buffer)]));
    // One ledger, one key: the digest of the parts is the digest of their concatenation.
    const l = memoryLedger();
    expect(l.inputDigest(raw, ref(H1, 0), { reuse: false })).toEqual(l.inputDigest([Buffer.concat(raw)], ref(H1, 0), { reuse: false }));
    expect(l.inputDigest(q, ref(H1, 0), { reuse: false }).digest).not.toBe(l.inputDigest(raw, ref(H1, 0), { reuse: false }).digest);
  });
});
