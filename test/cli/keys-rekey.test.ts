/**
 * Recovering from a leaked passphrase, through the CLI (real processes, real keyfiles, a real
 * coordinator): `aegis keys rotate --emergency` moves the data dir to a new passphrase and destroys
 * the old KEK versions; `aegis keys passphrase` changes the passphrase alone; `aegis client
 * restore` under another passphrase re-seals the identity key; a SIGKILL at each step of the
 * passphrase change leaves a dir that opens with the old or the new passphrase and finishes.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openOrCreateIdentity } from '../../client/agent/data-dir.js';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { PASSPHRASE_JOURNAL } from '../../shared/keystore/passphrase-change.js';
import { openSecrets, parseKeyfile, readKeyfile, type SealedKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import { readKeysFile } from '../../shared/keystore/policy.js';
import { ROTATION_JOURNAL } from '../../shared/keystore/rotation.js';
import { SealedVault } from '../../shared/keystore/vault.js';
import { base64Aligned, filesUnder, scanFiles, type Needle } from '../support/canary.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';
import { codeOfAsync } from '../support/codes.js';
import { waitFor } from '../support/cluster.js';

const OLD = 'the leaked passphrase 41c7';
const NEW = 'the replacement passphrase 8d02';
const root = mkdtempSync(join(tmpdir(), 'aegis-rekey-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string): string => join(root, `${name}-${++n}`);

/** The CLI under `pass`; no output ever carries either passphrase. */
function aegis(args: string[], pass: string, extraEnv: NodeJS.ProcessEnv = {}): CliRun {
  const r = runCli(args, { ...process.env, AEGIS_PASSPHRASE: pass, AEGIS_LOG_LEVEL: 'warn', ...extraEnv });
  expect(r.stdout + r.stderr).not.toContain(OLD);
  expect(r.stdout + r.stderr).not.toContain(NEW);
  return r;
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed CLI JSON, checked by the callers
function ok(args: string[], pass: string, extraEnv: NodeJS.ProcessEnv = {}): any {
  const r = aegis([...args, '--json'], pass, extraEnv);
  const doc = cliJson(r);
  if (r.status !== 0 || doc.ok !== true) throw new Error(`aegis ${args.join(' ')} failed (exit ${r.status}): ${r.stdout} ${r.stderr.slice(-500)}`);
  return doc;
}
function failure(args: string[], pass: string, extraEnv: NodeJS.ProcessEnv = {}): { code: string; message: string } {
  const r = aegis([...args, '--json'], pass, extraEnv);
  expect(r.status).toBe(2);
  return cliJson(r).error;
}

const RECORDS = Array.from({ length: 12 }, (_, i) => ({ address: `${i} Leak Lane, Springfield`, transcript: `note ${i}`, x: [i, i / 2], y: i % 2 }));

/** A client data dir (KEK keyfile, store with RECORDS, identity keyfile) under OLD; returns the identity's public key. */
async function clientDir(dir: string): Promise<Buffer> {
  ok(['client', 'init', '--data-dir', dir], OLD);
  const file = `${dir}.jsonl`;
  writeFileSync(file, RECORDS.map((r) => JSON.stringify(r)).join('\n'));
  expect(ok(['client', 'data', 'import', file, '--data-dir', dir], OLD).imported).toBe(RECORDS.length);
  rmSync(file);
  const { identity, created } = await openOrCreateIdentity(dir, OLD);
  expect(created).toBe(true);
  return Buffer.from(identity.publicKey);
}

/** How many records `client data list` shows (it opens every value's KEK version). */
const listed = (dir: string, pass: string): number => (ok(['client', 'data', 'list', '--data-dir', dir], pass).records as unknown[]).length;

/** Every passphrase keyfile of DIR refuses `pass` with the one decryption error; returns how many there are. */
async function noKeyfileOpensWith(dir: string, pass: string): Promise<number> {
  let count = 0;
  for (const name of readdirSync(dir)) {
    let parsed: SealedKeyfile;
    try {
      parsed = parseKeyfile(new Uint8Array(readFileSync(join(dir, name))));
    } catch {
      continue;
    }
    count++;
    expect([name, await codeOfAsync(openSecrets(pass, parsed))]).toEqual([name, 'decryption-failed']);
  }
  return count;
}

/** Raw, hex and base64 (every alignment, both alphabets) of each key. */
function keyNeedles(keys: Record<string, Uint8Array>): Needle[] {
  const out: Needle[] = [];
  for (const [what, k] of Object.entries(keys)) {
    const b = Buffer.from(k);
    out.push({ what: `${what} raw`, bytes: b }, { what: `${what} hex`, bytes: Buffer.from(b.toString('hex')) }, { what: `${what} HEX`, bytes: Buffer.from(b.toString('hex').toUpperCase()) });
    for (const align of [0, 1, 2] as const) for (const url of [false, true]) out.push({ what: `${what} base64 ${align} ${url}`, bytes: Buffer.from(base64Aligned(b, align, url)) });
  }
  return out;
}

/** The KEK versions held in DIR's keyfile under `pass` (the test process reads them before they are destroyed). */
async function kekVersions(dir: string, pass: string): Promise<Record<string, Uint8Array>> {
  const s = await readKeyfile(join(dir, 'kek.keyfile.json'), pass, { expectedLabel: 'aegis-kek' });
  return Object.fromEntries(Object.entries(s).filter(([k]) => /^v\d+$/.test(k)));
}

describe('keys rotate --emergency recovers from a leaked passphrase (client dir)', () => {
  test('the old passphrase opens nothing, the old KEK versions are gone from every file and cannot be enabled, and every value still opens', async () => {
    const dir = fresh('client');
    const publicKey = await clientDir(dir);
    expect(ok(['keys', 'rotate', '--data-dir', dir], OLD).primary).toBe(2);
    const old = await kekVersions(dir, OLD);
    expect(Object.keys(old).sort()).toEqual(['v1', 'v2']);
    // Positive control: the scan finds a planted copy of an old key.
    writeFileSync(join(root, 'planted.bin'), Buffer.from(old.v1!).toString('base64'));
    expect(scanFiles([join(root, 'planted.bin')], keyNeedles(old)).map((h) => h.file)).toContain(join(root, 'planted.bin'));
    rmSync(join(root, 'planted.bin'));

    // Without a new passphrase the emergency is refused before anything changes.
    expect(failure(['keys', 'rotate', '--emergency', '--data-dir', dir], OLD).message).toContain('AEGIS_NEW_PASSPHRASE');
    expect(failure(['keys', 'rotate', '--emergency', '--data-dir', dir], OLD, { AEGIS_NEW_PASSPHRASE: OLD }).message).toContain('new passphrase is the current one');
    expect(listed(dir, OLD)).toBe(RECORDS.length);

    const r = ok(['keys', 'rotate', '--emergency', '--data-dir', dir], OLD, { AEGIS_NEW_PASSPHRASE: NEW });
    expect(r).toMatchObject({ primary: 3, emergency: true, disabled: [], destroyed: [1, 2], resealed: ['identity.keyfile.json', 'kek.keyfile.json'] });
    expect(r.moved.store).toBeGreaterThan(RECORDS.length);
    expect(existsSync(join(dir, ROTATION_JOURNAL)) || existsSync(join(dir, PASSPHRASE_JOURNAL))).toBe(false);

    // The old passphrase opens nothing: the KEK, the identity, the store (through the CLI).
    expect(await noKeyfileOpensWith(dir, OLD)).toBe(2);
    expect(await codeOfAsync(PassphraseKek.open(join(dir, 'kek.keyfile.json'), OLD))).toBe('decryption-failed');
    expect(await codeOfAsync(openOrCreateIdentity(dir, OLD))).toBe('decryption-failed');
    expect(failure(['client', 'data', 'list', '--data-dir', dir], OLD).code).toBe('decryption-failed');
    // The old versions' key material is in no file of the dir (the keyfile holds v3 only).
    expect(Object.keys(await kekVersions(dir, NEW))).toEqual(['v3']);
    expect(scanFiles(filesUnder(dir), keyNeedles(old))).toEqual([]);
    // A destroyed version cannot come back.
    const enable = failure(['keys', 'enable', '--version', '1', '--data-dir', dir], NEW);
    expect(enable).toMatchObject({ code: 'failed-precondition' });
    expect(enable.message).toContain('destroyed');
    const status = ok(['keys', 'status', '--data-dir', dir], NEW);
    expect((status.versions as { version: number; state: string }[]).map((v) => [v.version, v.state])).toEqual([
      [1, 'destroyed'],
      [2, 'destroyed'],
      [3, 'primary'],
    ]);
    // Every value still opens under the new key; the client loads the same identity.
    expect(listed(dir, NEW)).toBe(RECORDS.length);
    const again = await openOrCreateIdentity(dir, NEW);
    expect([again.created, Buffer.from(again.identity.publicKey).equals(publicKey)]).toEqual([false, true]);
    // The text output says what was destroyed.
    const text = aegis(['keys', 'rotate', '--emergency', '--data-dir', dir], NEW, { AEGIS_NEW_PASSPHRASE: `${NEW} again` });
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/destroyed v3 \(key material erased; cannot be enabled again\)/);
    expect(text.stdout).toMatch(/re-sealed under the new passphrase: identity\.keyfile\.json, kek\.keyfile\.json/);
  });
});

describe('keys rotate --emergency on a coordinator replaces the token and queue keys', () => {
  test('the vault opens only under the new passphrase, the secrets that can be replaced are, the others are named, and the coordinator starts and serves', async () => {
    const dir = fresh('coord');
    const start = (pass: string): ReturnType<typeof spawn> =>
      spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', dir, '--allow-unsigned'], {
        env: { ...process.env, AEGIS_PASSPHRASE: pass, AEGIS_LOG_LEVEL: 'warn' },
        stdio: 'ignore',
      });
    const stop = async (p: ReturnType<typeof spawn>): Promise<void> => {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    };
    let p = start(OLD);
    await waitFor(() => existsSync(join(dir, 'coordinator.json')), 30_000, 'the coordinator to listen');
    await stop(p);
    const oldKek = await PassphraseKek.open(join(dir, 'kek.keyfile.json'), OLD);
    const vault0 = await SealedVault.open(join(dir, 'secrets.vault.json'));
    const before = Object.fromEntries(await Promise.all(['token-seed', 'queue-key', 'ca-seed', 'operator-seed'].map(async (k) => [k, await vault0.get(oldKek, k)] as const)));
    oldKek.close();
    const old = await kekVersions(dir, OLD);

    const r = ok(['keys', 'rotate', '--emergency', '--data-dir', dir], OLD, { AEGIS_NEW_PASSPHRASE: NEW });
    expect(r).toMatchObject({ primary: 2, destroyed: [1], moved: { secrets: 6 }, resealed: ['kek.keyfile.json'] });
    expect((r.replaced as { secret: string }[]).map((x) => x.secret).sort()).toEqual(['queue-key', 'token-key']);
    expect((r.notReplaced as { secret: string; how: string }[]).map((x) => x.secret).sort()).toEqual(['ca', 'dashboard', 'operator']);
    expect((r.notReplaced as { secret: string; how: string }[]).find((x) => x.secret === 'operator')!.how).toContain('aegis operators reissue admin');
    expect((r.notReplaced as { secret: string; how: string }[]).find((x) => x.secret === 'ca')!.how).toContain('re-enroll');

    // The old passphrase opens nothing; the old KEK version is in no file.
    expect(await noKeyfileOpensWith(dir, OLD)).toBe(1);
    expect(scanFiles(filesUnder(dir), keyNeedles(old))).toEqual([]);
    expect(failure(['keys', 'enable', '--version', '1', '--data-dir', dir], NEW).code).toBe('failed-precondition');
    // Under the new passphrase: new token and queue keys, the same CA and operator key.
    const kek = await PassphraseKek.open(join(dir, 'kek.keyfile.json'), NEW);
    const vault = await SealedVault.open(join(dir, 'secrets.vault.json'));
    for (const k of ['token-seed', 'queue-key']) expect([k, Buffer.from(await vault.get(kek, k)).equals(Buffer.from(before[k]!))]).toEqual([k, false]);
    for (const k of ['ca-seed', 'operator-seed']) expect([k, Buffer.from(await vault.get(kek, k)).equals(Buffer.from(before[k]!))]).toEqual([k, true]);
    kek.close();
    // The replaced token key verifies nothing any more (no retired public key is kept).
    expect((await readKeysFile(dir)).keys.token).toMatchObject({ version: 2, previous: [] });

    // The coordinator starts under the new passphrase (not the old) and serves an operator call.
    const refused = spawnSync(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', dir, '--allow-unsigned'], {
      env: { ...process.env, AEGIS_PASSPHRASE: OLD, AEGIS_LOG_LEVEL: 'warn' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toContain('decryption-failed');
    rmSync(join(dir, 'coordinator.json'), { force: true });
    p = start(NEW);
    try {
      await waitFor(() => existsSync(join(dir, 'coordinator.json')), 30_000, 'the coordinator to listen again');
      const invite = aegis(['clients', 'invite', '--data-dir', dir, '--json'], NEW);
      expect(invite.status).toBe(0);
      expect(cliJson(invite).token).toEqual(expect.any(String));
    } finally {
      await stop(p);
    }
  });
});

describe('keys passphrase', () => {
  test('re-seals the KEK keyfile and the identity under the new passphrase; the old one opens nothing; versions are unchanged', async () => {
    const dir = fresh('pass');
    const publicKey = await clientDir(dir);
    expect(failure(['keys', 'passphrase', '--data-dir', dir], OLD).message).toContain('AEGIS_NEW_PASSPHRASE');
    const r = ok(['keys', 'passphrase', '--data-dir', dir], OLD, { AEGIS_NEW_PASSPHRASE: NEW });
    expect(r.resealed).toEqual(['identity.keyfile.json', 'kek.keyfile.json']);
    expect(await noKeyfileOpensWith(dir, OLD)).toBe(2);
    expect(failure(['client', 'data', 'list', '--data-dir', dir], OLD).code).toBe('decryption-failed');
    expect(listed(dir, NEW)).toBe(RECORDS.length);
    expect(Buffer.from((await openOrCreateIdentity(dir, NEW)).identity.publicKey).equals(publicKey)).toBe(true);
    expect((ok(['keys', 'status', '--data-dir', dir], NEW).versions as { state: string }[]).map((v) => v.state)).toEqual(['primary']);
    expect(readdirSync(dir).filter((f) => f.endsWith('.new-passphrase') || f === PASSPHRASE_JOURNAL)).toEqual([]);
  });
});

describe('client restore under a new passphrase', () => {
  test('the identity key is re-sealed under the new dir passphrase and the restored dir runs; without the old passphrase nothing is left behind', async () => {
    const dir = fresh('src');
    const publicKey = await clientDir(dir);
    const backup = join(root, `backup-${n}.aegis`);
    const bEnv = { AEGIS_BACKUP_PASSPHRASE: 'the backup passphrase 77aa' };
    ok(['client', 'backup', '--data-dir', dir, '--out', backup], OLD, bEnv);

    const lost = fresh('restored-no-source');
    expect(failure(['client', 'restore', backup, '--data-dir', lost], NEW, bEnv).message).toContain('AEGIS_SOURCE_PASSPHRASE');
    expect(existsSync(lost)).toBe(false);
    const wrong = fresh('restored-wrong-source');
    expect(failure(['client', 'restore', backup, '--data-dir', wrong], NEW, { ...bEnv, AEGIS_SOURCE_PASSPHRASE: 'not the old passphrase' }).code).toBe('decryption-failed');
    expect(existsSync(wrong)).toBe(false);

    const target = fresh('restored');
    const r = ok(['client', 'restore', backup, '--data-dir', target], NEW, { ...bEnv, AEGIS_SOURCE_PASSPHRASE: OLD });
    expect(r).toMatchObject({ records: RECORDS.length, resealed: ['identity.keyfile.json'] });
    expect(await noKeyfileOpensWith(target, OLD)).toBe(2);
    expect(listed(target, NEW)).toBe(RECORDS.length);
    expect(Buffer.from((await openOrCreateIdentity(target, NEW)).identity.publicKey).equals(publicKey)).toBe(true);

    // Under the same passphrase nothing needs re-sealing (and the old one is never asked).
    const same = fresh('restored-same');
    expect(ok(['client', 'restore', backup, '--data-dir', same], OLD, bEnv).resealed).toEqual([]);
  });
});

describe('a passphrase change killed at each step (SIGKILL)', () => {
  const killed = (dir: string, at: string, args: string[]): ReturnType<typeof spawnSync> =>
    spawnSync(process.execPath, [CLI, ...args, '--data-dir', dir], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, AEGIS_PASSPHRASE: OLD, AEGIS_NEW_PASSPHRASE: NEW, AEGIS_LOG_LEVEL: 'warn', AEGIS_TEST_KILL_AT: at },
    });

  test('killed after staging: the dir opens with the old passphrase only, and the staged copies are dropped', async () => {
    const dir = fresh('kill-staged');
    await clientDir(dir);
    const k = killed(dir, 'staged', ['keys', 'rotate', '--emergency']);
    expect([k.status, k.signal]).toEqual([null, 'SIGKILL']);
    expect(readdirSync(dir).filter((f) => f.endsWith('.new-passphrase')).length).toBe(2);
    expect(failure(['client', 'data', 'list', '--data-dir', dir], NEW).code).toBe('decryption-failed');
    expect(listed(dir, OLD)).toBe(RECORDS.length);
    expect(readdirSync(dir).filter((f) => f.endsWith('.new-passphrase'))).toEqual([]);
    expect(existsSync(join(dir, ROTATION_JOURNAL))).toBe(false);
    expect((await openOrCreateIdentity(dir, OLD)).created).toBe(false);
  });

  test('killed after the commit: the next open finishes the change under the new passphrase and the leak rotation destroys v1', async () => {
    const dir = fresh('kill-committed');
    const publicKey = await clientDir(dir);
    const old = await kekVersions(dir, OLD);
    const k = killed(dir, 'committed', ['keys', 'rotate', '--emergency']);
    expect([k.status, k.signal]).toEqual([null, 'SIGKILL']);
    expect(existsSync(join(dir, PASSPHRASE_JOURNAL))).toBe(true);
    // Any command that opens the dir finishes it: data list (new passphrase) applies the change and the rotation.
    expect(failure(['client', 'data', 'list', '--data-dir', dir], OLD).code).toBe('decryption-failed');
    expect(listed(dir, NEW)).toBe(RECORDS.length);
    expect(existsSync(join(dir, PASSPHRASE_JOURNAL)) || existsSync(join(dir, ROTATION_JOURNAL))).toBe(false);
    expect((ok(['keys', 'status', '--data-dir', dir], NEW).versions as { version: number; state: string }[]).map((v) => [v.version, v.state])).toEqual([
      [1, 'destroyed'],
      [2, 'primary'],
    ]);
    expect(await noKeyfileOpensWith(dir, OLD)).toBe(2);
    expect(scanFiles(filesUnder(dir), keyNeedles(old))).toEqual([]);
    expect(Buffer.from((await openOrCreateIdentity(dir, NEW)).identity.publicKey).equals(publicKey)).toBe(true);
  });

  test('keys passphrase killed after the commit: the identity alone (client run path) finishes it', async () => {
    const dir = fresh('kill-pass');
    const publicKey = await clientDir(dir);
    const k = killed(dir, 'committed', ['keys', 'passphrase']);
    expect([k.status, k.signal]).toEqual([null, 'SIGKILL']);
    // The client's identity loader settles the change before it reads the keyfile.
    expect(Buffer.from((await openOrCreateIdentity(dir, NEW)).identity.publicKey).equals(publicKey)).toBe(true);
    expect(existsSync(join(dir, PASSPHRASE_JOURNAL))).toBe(false);
    expect(await noKeyfileOpensWith(dir, OLD)).toBe(2);
    expect(listed(dir, NEW)).toBe(RECORDS.length);
  });
});
