/** Audit mode: approvals bound to (job, manifest hash), used once, persisted, never silently reset. */
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AUDIT_JOBS, AuditBook } from '../../client/audit/audit.js';
import { isAegisError } from '../../shared/errors.js';
import { codeOfAsync } from '../support/codes.js';

const h = (s: string): string => createHash('sha256').update(s).digest('hex');
const H1 = h('manifest-1');
const H2 = h('manifest-2');

let dir: string;
let t = Date.parse('2030-01-01T00:00:00Z');
const clock = (): number => (t += 1000);

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'aegis-audit-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function logLines(): Promise<Record<string, unknown>[]> {
  const text = await readFile(join(dir, 'audit.log'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('AuditBook', () => {
  it('is not in audit mode when never entered: jobs run and nothing is stored', async () => {
    const book = await AuditBook.open(dir, clock);
    expect(await book.status()).toEqual({ inAuditMode: false, remaining: 0, approvals: [], admitted: [] });
    expect(await book.admit('job-a', H1)).toEqual({ decision: 'run', remaining: 0 });
    await expect(stat(join(dir, 'audit.json'))).rejects.toThrow();
    const r = await book.approve('job-a', H1);
    expect(r.needed).toBe(false);
    expect(r.status.approvals).toEqual([]);
  });

  it('after enter, each of the next 5 jobs needs an approval; job 6 runs without one', async () => {
    const book = await AuditBook.open(dir, clock);
    const s = await book.enter('validation-drop', 'accuracy fell by 0.12');
    expect(s).toMatchObject({ inAuditMode: true, remaining: AUDIT_JOBS, reason: 'validation-drop', detail: 'accuracy fell by 0.12' });
    for (let i = 1; i <= AUDIT_JOBS; i++) {
      const job = `job-${i}`;
      const sha = h(`m${i}`);
      const refused = await book.admit(job, sha).catch((e: unknown) => e);
      expect(isAegisError(refused, 'approval-required')).toBe(true);
      expect((refused as Error).message).toContain(`aegis client approve ${job} --manifest-sha256 ${sha}`);
      expect((await book.approve(job, sha)).needed).toBe(true);
      expect(await book.admit(job, sha)).toEqual({ decision: 'run', remaining: AUDIT_JOBS - i });
    }
    const after = await book.status();
    expect(after.inAuditMode).toBe(false);
    expect(after.approvals).toEqual([]);
    expect(await book.admit('job-6', h('m6'))).toEqual({ decision: 'run', remaining: 0 });
    expect((await book.status()).remaining).toBe(0);
  });

  it('binds an approval to (job, hash) and uses it once', async () => {
    const book = await AuditBook.open(dir, clock);
    await book.enter('poisoning-flag');
    await book.approve('job-a', H1);
    expect(await codeOfAsync(book.admit('job-a', H2))).toBe('approval-required');
    expect(await codeOfAsync(book.admit('job-b', H1))).toBe('approval-required');
    expect(await book.admit('job-a', H1)).toEqual({ decision: 'run', remaining: 4 });
    // used: another job with the same hash, or the same id with another hash, needs its own
    expect(await codeOfAsync(book.admit('job-b', H1))).toBe('approval-required');
    expect(await codeOfAsync(book.admit('job-a', H2))).toBe('approval-required');
    expect((await book.status()).approvals).toEqual([]);
  });

  it('admits a job already admitted again without an approval (many rounds), counting it once', async () => {
    const book = await AuditBook.open(dir, clock);
    await book.enter('operator');
    await book.approve('job-a', H1);
    for (let round = 0; round < 4; round++) expect(await book.admit('job-a', H1)).toEqual({ decision: 'run', remaining: 4 });
    const r = await book.approve('job-a', H1);
    expect(r.needed).toBe(false);
    expect(r.status.approvals).toEqual([]);
  });

  it('survives a restart mid-way: after 2 admitted jobs, 3 remain', async () => {
    const book = await AuditBook.open(dir, clock);
    await book.enter('registry-mismatch');
    for (const j of ['j1', 'j2']) {
      await book.approve(j, H1);
      await book.admit(j, H1);
    }
    await book.approve('j3', H2);
    const again = await AuditBook.open(dir, clock);
    const s = await again.status();
    expect(s).toMatchObject({ inAuditMode: true, remaining: 3, reason: 'registry-mismatch' });
    expect(s.approvals.map((a) => a.jobId)).toEqual(['j3']);
    expect(s.admitted.map((a) => a.jobId)).toEqual(['j1', 'j2']);
    expect(await again.admit('j1', H1)).toEqual({ decision: 'run', remaining: 3 });
    expect(await again.admit('j3', H2)).toEqual({ decision: 'run', remaining: 2 });
    expect(await codeOfAsync(again.admit('j4', H2))).toBe('approval-required');
  });

  it('re-entering resets the count to 5 and drops earlier approvals and admissions', async () => {
    const book = await AuditBook.open(dir, clock);
    await book.enter('operator');
    await book.approve('j1', H1);
    await book.admit('j1', H1);
    await book.approve('j2', H1);
    const s = await book.enter('poisoning-flag');
    expect(s).toMatchObject({ remaining: 5, reason: 'poisoning-flag', approvals: [], admitted: [] });
    expect(await codeOfAsync(book.admit('j1', H1))).toBe('approval-required');
    expect(await codeOfAsync(book.admit('j2', H1))).toBe('approval-required');
  });

  it('does not let two concurrent jobs share one approval', async () => {
    const book = await AuditBook.open(dir, clock);
    await book.enter('operator');
    await book.approve('job-a', H1);
    const results = await Promise.allSettled([book.admit('job-a', H1), book.admit('job-b', H1), book.admit('job-a', H2)]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect((await book.status()).remaining).toBe(4);
    // Two processes (two books) racing to admit the same approved job: it is counted once.
    await book.approve('job-c', H2);
    const other = await AuditBook.open(dir, clock);
    const both = await Promise.all([book.admit('job-c', H2), other.admit('job-c', H2)]);
    expect(both.map((r) => r.decision)).toEqual(['run', 'run']);
    expect((await book.status()).remaining).toBe(3);
  });

  it('loses no update when the CLI approves while a running client admits', async () => {
    const client = await AuditBook.open(dir, clock);
    const cli = await AuditBook.open(dir, clock);
    await cli.enter('operator');
    await cli.approve('j0', H1);
    // The client admits j0 while the CLI approves j1..j4, all interleaved.
    await Promise.all([client.admit('j0', H1), ...['j1', 'j2', 'j3', 'j4'].map((j) => cli.approve(j, H2))]);
    const s = await client.status();
    expect(s.remaining).toBe(4);
    expect(s.approvals.map((a) => a.jobId).sort()).toEqual(['j1', 'j2', 'j3', 'j4']);
    expect(s.admitted.map((a) => a.jobId)).toEqual(['j0']);
    const runs = await Promise.all(['j1', 'j2', 'j3', 'j4'].map((j) => (j === 'j2' ? cli : client).admit(j, H2)));
    expect(runs.map((r) => r.remaining).sort()).toEqual([0, 1, 2, 3]);
    expect((await cli.status()).inAuditMode).toBe(false);
  });

  it('refuses a corrupted or incomplete audit.json instead of resetting it', async () => {
    const book = await AuditBook.open(dir, clock);
    await book.enter('operator');
    const file = join(dir, 'audit.json');
    const good = await readFile(file, 'utf8');
    for (const bad of ['{"version":1,"remaining":3', '', JSON.stringify({ version: 1, remaining: 3, approvals: [], admitted: [] }), JSON.stringify({ version: 2, remaining: 0, approvals: [], admitted: [] }), JSON.stringify({ version: 1, approvals: [], admitted: [] })]) {
      await writeFile(file, bad);
      expect(await codeOfAsync(book.admit('j', H1))).toBe('invalid-argument');
      expect(await codeOfAsync(book.status())).toBe('invalid-argument');
      expect(await codeOfAsync(AuditBook.open(dir, clock))).toBe('invalid-argument');
      expect(await readFile(file, 'utf8')).toBe(bad); // left as is for the operator to inspect
    }
    const err = await book.status().catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/inspect/);
    await writeFile(file, good);
    expect((await book.status()).remaining).toBe(5);
  });

  it('validates job ids and hashes', async () => {
    const book = await AuditBook.open(dir, clock);
    await book.enter('operator');
    expect(await codeOfAsync(book.approve('../x', H1))).toBe('invalid-argument');
    expect(await codeOfAsync(book.approve('a'.repeat(65), H1))).toBe('invalid-argument');
    expect(await codeOfAsync(book.approve('ok', H1.toUpperCase()))).toBe('invalid-argument');
    expect(await codeOfAsync(book.admit('ok', H1.slice(1)))).toBe('invalid-argument');
    expect(await codeOfAsync(book.enter('coordinator-says-so' as never))).toBe('invalid-argument');
    const s = await book.enter('operator', `${'x'.repeat(300)}\nsecond line`);
    expect(s.detail).toHaveLength(200);
  });

  it('logs one JSON line per decision with only ids, hashes, reasons and counts; files are 0600', async () => {
    const book = await AuditBook.open(dir, clock);
    await book.enter('validation-drop', 'operator note');
    await book.approve('j1', H1); // approve
    await book.admit('j1', H1).catch(() => undefined); // admit-run
    await book.admit('j2', H2).catch(() => undefined); // admit-refused
    for (let i = 2; i <= 5; i++) {
      await book.approve(`k${i}`, H2);
      await book.admit(`k${i}`, H2); // the last one is followed by leave
    }
    const lines = await logLines();
    expect(lines.map((l) => l.event)).toEqual(['enter', 'approve', 'admit-run', 'admit-refused', 'approve', 'admit-run', 'approve', 'admit-run', 'approve', 'admit-run', 'approve', 'admit-run', 'leave']);
    const allowed = new Set(['at', 'event', 'jobId', 'manifestSha256', 'reason', 'remaining']);
    for (const l of lines) {
      for (const k of Object.keys(l)) expect(allowed.has(k)).toBe(true);
      expect(typeof l.at).toBe('string');
      expect(typeof l.remaining).toBe('number');
    }
    expect(lines[3]).toMatchObject({ event: 'admit-refused', jobId: 'j2', manifestSha256: H2, reason: 'no-approval', remaining: 4 });
    expect(lines.at(-1)).toMatchObject({ event: 'leave', remaining: 0 });
    // The operator's free text stays in audit.json, out of the log.
    expect(await readFile(join(dir, 'audit.log'), 'utf8')).not.toContain('operator note');
    for (const f of ['audit.json', 'audit.log']) expect((await stat(join(dir, f))).mode & 0o777).toBe(0o600);
    // No lock or temp file is left behind.
    expect((await readdir(dir)).sort()).toEqual(['audit.json', 'audit.log']);
    // The state file has a version field.
    expect(JSON.parse(await readFile(join(dir, 'audit.json'), 'utf8'))).toMatchObject({ version: 1, remaining: 0 });
  });

  it('waits for a held lock and breaks a stale one', async () => {
    const book = await AuditBook.open(dir, clock);
    const lock = join(dir, 'audit.lock');
    await writeFile(lock, 'someone');
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
    expect((await book.enter('operator')).remaining).toBe(5); // stale: broken
    await writeFile(lock, 'someone'); // fresh: waited for
    const pending = book.status();
    setTimeout(() => void rm(lock), 300);
    expect((await pending).remaining).toBe(5);
  });
});
