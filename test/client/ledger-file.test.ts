/**
 * The contribution ledger in a data dir (client/admission/ledger-file.ts), on real files in
 * temporary dirs: kept across restarts, refused when altered, truncated or another identity's
 * (never read as empty), the missing-ledger policy, crash-safe writes (temp file and rename; a
 * stale temp file is ignored; a lock a killed process left), identity rotation, two writers on
 * one dir, and restores that merge rather than roll the ledger back.
 */
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open as openFile, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { quantizedInputId, type RoundClaim } from '../../client/admission/ledger.js';
import { LEDGER_FILE, openLedger } from '../../client/admission/ledger-file.js';
import { restoreBackup, writeBackup } from '../../client/store/backup.js';
import { SqliteDataStore } from '../../client/store/sqlite.js';
import { ErrorCode } from '../../shared/errors.js';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import type { RoundRef } from '../../shared/protocol/messages.js';
import { codeOf, codeOfAsync } from '../support/codes.js';

const H = 'c'.repeat(64);
const seed = new Uint8Array(randomBytes(32));
const ref = (roundIndex: number): RoundRef => ({ manifestHash: new Uint8Array(Buffer.from(H, 'hex')), roundIndex });
const claim = (roundIndex: number, modelVersion?: number): RoundClaim => ({
  manifestSha256: H,
  roundIndex,
  kind: modelVersion === undefined ? 'plain' : 'training',
  jobId: 'files',
  rounds: 100,
  ...(modelVersion !== undefined ? { modelVersion } : {}),
});

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'aegis-ledger-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const open = (d = dir, s = seed) => openLedger(d, s, { missing: 'create' }).then((r) => r.ledger);

describe('kept across restarts', () => {
  it('a reopened ledger still refuses the rounds and inputs it recorded', async () => {
    const a = await open();
    const x = quantizedInputId(new Uint32Array([5, 6, 1]));
    await a.join(claim(0), a.inputDigest(x, ref(0), { reuse: false }));
    await a.contribute(ref(0), { reuse: false });
    // A new process: nothing shared but the file.
    const b = await open();
    expect(codeOf(() => b.check(claim(0)))).toBe(ErrorCode.ReplayedRound);
    expect(codeOf(() => b.inputDigest(x, ref(1), { reuse: false }))).toBe(ErrorCode.InputReused);
    expect(b.view().jobs[0]).toMatchObject({ jobId: 'files', contributions: 1, joined: [[0, 0]] });
  });

  it('a join and a contribution are on disk when they return (before the message they record leaves)', async () => {
    const a = await open();
    await a.join(claim(4, 2));
    expect((await open()).view().jobs[0]!.recent).toEqual([expect.objectContaining({ roundIndex: 4, modelVersion: 2 })]);
    await a.contribute(ref(4), { reuse: false });
    expect((await open()).view().jobs[0]).toMatchObject({ contributedFrom: 2, recent: [expect.objectContaining({ contributedAt: expect.any(String) })] });
  });

  it('after a restart, an outcome of a round joined before it is not taken (a replay it declines ends with one)', async () => {
    const a = await open();
    await a.join(claim(0, 0));
    const b = await open();
    await b.outcome(ref(0), { ok: false });
    expect((await open()).view().jobs[0]!.recent[0]!.outcome).toBeUndefined();
  });

  it('the file is 0600 and holds no input, only hashes, indexes, versions and times', async () => {
    const a = await open();
    await a.join(claim(0), a.inputDigest(quantizedInputId(new Uint32Array([123456789, 1])), ref(0), { reuse: false }));
    await a.contribute(ref(0), { reuse: false });
    const path = join(dir, LEDGER_FILE);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const text = await readFile(path, 'utf8');
    expect(text).not.toContain('123456789');
    expect(JSON.parse(text)).toMatchObject({ format: 'aegis-contribution-ledger', version: 1, seals: [{ mac: expect.stringMatching(/^[0-9a-f]{64}$/) }] });
  });
});

describe('integrity', () => {
  async function recorded(): Promise<Buffer> {
    const a = await open();
    await a.join(claim(0, 0));
    await a.contribute(ref(0), { reuse: false });
    await a.outcome(ref(0), { ok: true });
    return readFile(join(dir, LEDGER_FILE));
  }

  it('a flipped bit anywhere in the file is refused, never read as empty', async () => {
    const bytes = await recorded();
    const codes = new Set<string | undefined>();
    for (let i = 0; i < bytes.length; i++) {
      const bad = Buffer.from(bytes);
      bad[i]! ^= 0x01;
      await writeFile(join(dir, LEDGER_FILE), bad);
      const code = await codeOfAsync(openLedger(dir, seed, { missing: 'create' }));
      codes.add(code);
      if (code === undefined) throw new Error(`a flip at byte ${i} of ${bytes.length} was accepted`);
    }
    expect([...codes].sort()).toEqual([ErrorCode.BadSignature, ErrorCode.Malformed]);
  });

  it('a truncated or empty file is refused', async () => {
    const bytes = await recorded();
    for (const n of [0, 1, bytes.length >> 1, bytes.length - 2]) {
      await writeFile(join(dir, LEDGER_FILE), bytes.subarray(0, n));
      expect(await codeOfAsync(openLedger(dir, seed, { missing: 'create' }))).toBe(ErrorCode.Malformed);
    }
  });

  it('another identity’s ledger (or a ledger under another seed) is refused', async () => {
    await recorded();
    const other = new Uint8Array(randomBytes(32));
    const err = await openLedger(dir, other, { missing: 'create' }).catch((e: unknown) => e as Error);
    expect(err).toMatchObject({ code: ErrorCode.BadSignature, message: expect.stringContaining(LEDGER_FILE) });
  });

  it('the error names the file and carries no value', async () => {
    const bytes = await recorded();
    await writeFile(join(dir, LEDGER_FILE), bytes.subarray(0, 40));
    const err = (await openLedger(dir, seed, { missing: 'create' }).catch((e: unknown) => e)) as Error;
    expect(err.message).toContain(join(dir, LEDGER_FILE));
    expect(err.message).not.toContain(bytes.subarray(0, 40).toString('utf8'));
  });
});

describe('a data dir without a ledger', () => {
  it('a new dir gets an empty one; one that took part in rounds before (audit.log, trust.json) is refused unless asked for a new one', async () => {
    expect((await openLedger(dir, seed, { missing: 'create-if-new' })).created).toBe(true);
    await rm(join(dir, LEDGER_FILE));
    for (const evidence of ['audit.log', 'trust.json']) {
      await writeFile(join(dir, evidence), '{}\n');
      const err = (await openLedger(dir, seed, { missing: 'create-if-new' }).catch((e: unknown) => e)) as Error & { code: string };
      expect(err.code).toBe(ErrorCode.FailedPrecondition);
      expect(err.message).toContain(evidence);
      expect(err.message).toContain('--new-ledger');
      expect(existsSync(join(dir, LEDGER_FILE))).toBe(false);
      await rm(join(dir, evidence));
    }
    await writeFile(join(dir, 'audit.log'), '{}\n');
    expect((await openLedger(dir, seed, { missing: 'create' })).created).toBe(true);
    expect(existsSync(join(dir, LEDGER_FILE))).toBe(true);
  });

  it('`client ledger` (refuse) does not create one', async () => {
    expect(await codeOfAsync(openLedger(dir, seed, { missing: 'refuse' }))).toBe(ErrorCode.NotFound);
    expect(existsSync(join(dir, LEDGER_FILE))).toBe(false);
  });
});

describe('crash safety', () => {
  it('each write replaces the whole file by rename (never in place), leaving no temp file behind', async () => {
    const a = await open();
    await a.join(claim(0));
    for (let i = 1; i < 4; i++) {
      // A reader holding the file open keeps the complete previous version: it was never rewritten in place.
      const before = await readFile(join(dir, LEDGER_FILE));
      const held = await openFile(join(dir, LEDGER_FILE), 'r');
      try {
        await a.join(claim(i));
        expect(await held.readFile()).toEqual(before);
      } finally {
        await held.close();
      }
      expect((await readFile(join(dir, LEDGER_FILE))).equals(before)).toBe(false);
      expect((await readdir(dir)).sort()).toEqual([LEDGER_FILE]);
    }
  });

  it('a temp file a crash left behind (half written) is ignored, and the last complete ledger opens', async () => {
    const a = await open();
    await a.join(claim(0));
    const full = await readFile(join(dir, LEDGER_FILE));
    await writeFile(join(dir, `.${LEDGER_FILE}.0123456789ab.tmp`), full.subarray(0, full.length >> 1));
    const b = await open();
    expect(codeOf(() => b.check(claim(0)))).toBe(ErrorCode.ReplayedRound);
    await b.join(claim(1));
    expect((await open()).view().jobs[0]!.joined).toEqual([[0, 1]]);
  });

  it('a lock left by a process killed mid-write does not block the next writer', async () => {
    const a = await open();
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    await writeFile(join(dir, 'ledger.lock'), `${dead}.0123456789abcdef`);
    const started = Date.now();
    await a.join(claim(0));
    expect(Date.now() - started).toBeLessThan(2000);
    expect(existsSync(join(dir, 'ledger.lock'))).toBe(false);
  });

  it('two writers on one dir (client run and client ledger) never lose each other’s entries', async () => {
    const a = await open();
    const b = await open();
    await Promise.all([a.join(claim(0)), b.join(claim(1)), a.join(claim(2)), b.join(claim(3))]);
    expect((await open()).view().jobs[0]!.joined).toEqual([[0, 3]]);
  });
});

describe('identity rotation', () => {
  it('sealed for both identities while the key rotates, then for the new one alone', async () => {
    const next = new Uint8Array(randomBytes(32));
    const a = await open();
    await a.join(claim(0));
    await a.sealAlsoFor(next);
    // A crash now: the dir settles on either identity, and the ledger opens under both.
    expect((await open(dir, seed)).view().jobs).toHaveLength(1);
    expect((await open(dir, next)).view().jobs).toHaveLength(1);
    await a.sealOnlyFor(next);
    expect(await codeOfAsync(openLedger(dir, seed, { missing: 'create' }))).toBe(ErrorCode.BadSignature);
    const b = await open(dir, next);
    expect(codeOf(() => b.check(claim(0)))).toBe(ErrorCode.ReplayedRound);
  });
});

describe('restores', () => {
  const PASS = 'ledger restore test passphrase';
  const FAST = { N: 2 ** 14, r: 8, p: 1 };
  const secrets = { passphrase: async () => PASS, pin: async () => '' };

  async function backupOf(src: string, out: string): Promise<void> {
    const kek = await PassphraseKek.create(join(src, `kek-${randomBytes(4).toString('hex')}.keyfile.json`), PASS, { kdf: FAST });
    const store = await SqliteDataStore.open(src, kek);
    try {
      await writeBackup(src, store, out, { passphrase: PASS, kdf: FAST }, 'backup');
    } finally {
      store.close();
      kek.close();
    }
  }

  it('the ledger travels in a backup; restoring an older backup over a newer ledger loses nothing (the union)', async () => {
    const src = join(dir, 'src');
    await mkdir(src);
    const a = await open(src);
    await a.join(claim(0));
    const old = join(dir, 'old.aegis');
    await backupOf(src, old);
    // Rounds joined after the backup.
    await a.join(claim(1));
    await a.join(claim(2));

    // Into a fresh dir: the backup's ledger, as it was.
    const fresh = join(dir, 'fresh');
    const r1 = await restoreBackup(old, { passphrase: PASS }, fresh, { kind: 'passphrase' }, secrets);
    expect(r1.files).toContain(LEDGER_FILE);
    expect(r1.keptLedger).toBe(false);
    expect((await open(fresh)).view().jobs[0]!.joined).toEqual([[0, 0]]);

    // Into a dir that holds the newer ledger (and only that): it stays, the old one merges in.
    const target = join(dir, 'target');
    await mkdir(target);
    await writeFile(join(target, LEDGER_FILE), await readFile(join(src, LEDGER_FILE)));
    const r2 = await restoreBackup(old, { passphrase: PASS }, target, { kind: 'passphrase' }, secrets);
    expect(r2.keptLedger).toBe(true);
    expect((await readdir(target)).filter((n) => n.startsWith('ledger.restored-'))).toHaveLength(1);
    const merged = await open(target);
    expect(merged.view().jobs[0]!.joined).toEqual([[0, 2]]);
    for (const i of [0, 1, 2]) expect(codeOf(() => merged.check(claim(i)))).toBe(ErrorCode.ReplayedRound);
    // Merged into ledger.json, and the restored file is gone.
    expect((await readdir(target)).filter((n) => n.startsWith('ledger'))).toEqual([LEDGER_FILE]);
    expect(await readdir(dir)).not.toEqual(expect.arrayContaining([expect.stringMatching(/replaced|restoring/)]));
  });

  it('a restore into a dir with anything besides a ledger is still refused', async () => {
    const src = join(dir, 'src');
    await mkdir(src);
    await open(src);
    const b = join(dir, 'b.aegis');
    await backupOf(src, b);
    const target = join(dir, 'busy');
    await mkdir(target);
    await writeFile(join(target, LEDGER_FILE), await readFile(join(src, LEDGER_FILE)));
    await writeFile(join(target, 'client.json'), '{}');
    expect(await codeOfAsync(restoreBackup(b, { passphrase: PASS }, target, { kind: 'passphrase' }, secrets))).toBe(ErrorCode.AlreadyExists);
  });

  it('a restored ledger that fails its check stops the client (not merged, not dropped)', async () => {
    const a = await open();
    await a.join(claim(0));
    await writeFile(join(dir, 'ledger.restored-0123456789ab.json'), '{"format":"aegis-contribution-ledger"');
    expect(await codeOfAsync(openLedger(dir, seed, { missing: 'create' }))).toBe(ErrorCode.Malformed);
    expect(existsSync(join(dir, 'ledger.restored-0123456789ab.json'))).toBe(true);
  });
});
