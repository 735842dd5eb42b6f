/**
 * The OS keyring KEK provider (shared/keystore/kek-os.ts).
 *
 * The keyring binding reads DBUS_SESSION_BUS_ADDRESS from the real process environment, which a
 * Jest test cannot change, so this file runs itself twice more in child Jest processes, each
 * selected by AEGIS_KEK_OS_MODE:
 *   'no-keyring'      the bus address points at nothing: every keyring path is `unavailable`,
 *                     with a clean message, and nothing falls back to the kernel keyring;
 *   'secret-service'  a private dbus-daemon + gnome-keyring (test/support/secret-service.ts):
 *                     the full lifecycle, the wrap format, crash-ordering repairs, and a locked
 *                     keyring.
 * The outer run (no mode) starts both and fails when either child fails or runs no tests; it
 * fails (never skips) when gnome-keyring or dbus is not installed.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFile } from 'node:child_process';
import { createDecipheriv } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Entry, findCredentialsAsync } from '@napi-rs/keyring';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { openField, sealField, type FieldContext } from '../../shared/keystore/envelope.js';
import {
  OS_KEK_PROBE_SERVICE,
  OS_KEK_SERVICE,
  OS_KEYRING_LOCKED,
  OS_KEYRING_UNAVAILABLE,
  OsKeyringKek,
  osKekNameFor,
  osKeyringAvailable,
} from '../../shared/keystore/kek-os.js';
import { codeOfAsync } from '../support/codes.js';
import { runRotationMatrix } from '../support/kek-matrix.js';
import { assertSecretServiceTools, lockSecretServiceCollection, startSecretService, type SecretService } from '../support/secret-service.js';
import { lp, u32 } from '../support/bytes.js';
import { initKek, openKek, readKekConfig } from '../../shared/keystore/kek-config.js';

const CTX_AUTO: FieldContext = { assetUuid: '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0', fieldName: 'auto', schemaVersion: 1 };

const MODE = process.env.AEGIS_KEK_OS_MODE;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const THIS_FILE = fileURLToPath(import.meta.url);
const CTX: FieldContext = { assetUuid: '0d7e2b4c-9a1f-4c3e-8b5d-6f7a8b9c0d1e', fieldName: 'home_address', schemaVersion: 2 };
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const untext = (b: Uint8Array): string => new TextDecoder().decode(b);

async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AegisError) return { code: e.code, message: e.message };
    return { message: `unexpected: ${String(e)}` };
  }
  return { message: 'no error' };
}

/** No native detail ever reaches a message: one line, no backtrace, no Rust error chain. */
function expectClean(message: string): void {
  expect(message).not.toMatch(/backtrace|Caused by|AccessDenied|zbus|\n|<unknown>/i);
}


/** What the keyring holds for KEK `name`, by account suffix ('meta', 'v1', …). */
async function entriesOf(name: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const c of await findCredentialsAsync(OS_KEK_SERVICE)) if (c.account.startsWith(`${name}/`)) out[c.account.slice(name.length + 1)] = c.password;
  return out;
}

const states = async (kek: OsKeyringKek): Promise<[number, string][]> => (await kek.versions()).map((v) => [v.version, v.state]);

interface JestJson {
  numPassedTests: number;
  numFailedTests: number;
  numTotalTests: number;
  numRuntimeErrorTestSuites: number;
  testResults: { message: string; assertionResults: { fullName: string; status: string; failureMessages: string[] }[] }[];
}

/** Runs this file in a child Jest with `env`; resolves with its JSON report (and output on failure). */
function runChild(env: NodeJS.ProcessEnv): Promise<{ report: JestJson | undefined; output: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-kek-os-child-'));
  const out = join(dir, 'report.json');
  const args = [
    '--experimental-vm-modules',
    '--no-warnings=ExperimentalWarning',
    join(ROOT, 'node_modules/jest/bin/jest.js'),
    '--ci',
    '--runInBand',
    '--reporters=default',
    '--json',
    `--outputFile=${out}`,
    '--runTestsByPath',
    THIS_FILE,
  ];
  return new Promise((res) => {
    execFile(process.execPath, args, { cwd: ROOT, env, timeout: 240_000, maxBuffer: 16 * 1024 * 1024 }, (_err, stdout, stderr) => {
      let report: JestJson | undefined;
      try {
        report = JSON.parse(readFileSync(out, 'utf8')) as JestJson;
      } catch {
        report = undefined;
      }
      rmSync(dir, { recursive: true, force: true });
      res({ report, output: `${stdout}\n${stderr}` });
    });
  });
}

function summary(r: { report: JestJson | undefined; output: string }): string {
  if (r.report === undefined) return `no report; output:\n${r.output}`;
  const lines = r.report.testResults.flatMap((f) => [
    ...(f.message ? [f.message] : []),
    ...f.assertionResults.map((a) => `${a.status}: ${a.fullName}${a.failureMessages.length ? `\n${a.failureMessages.join('\n')}` : ''}`),
  ]);
  return lines.join('\n');
}

function expectChildPassed(r: { report: JestJson | undefined; output: string }, count: number): void {
  const ok = r.report !== undefined && r.report.numFailedTests === 0 && r.report.numRuntimeErrorTestSuites === 0 && r.report.numPassedTests === count && r.report.numTotalTests === count;
  if (!ok) throw new Error(`the child Jest run failed:\n${summary(r)}`);
}

// ---------------------------------------------------------------------------------------------
// Outer run: pure logic here; the keyring suites in child processes.

if (MODE === undefined) {
  describe('OS keyring KEK: names (no keyring needed)', () => {
    test('osKekNameFor: readable, distinct per absolute path, always a valid name', async () => {
      const a = osKekNameFor('/var/lib/aegis/client-a');
      expect(a).toMatch(/^client-a-[0-9a-f]{16}$/);
      expect(osKekNameFor('/srv/other/client-a')).not.toBe(a);
      expect(osKekNameFor('/var/lib/aegis/client-a/')).toBe(a);
      expect(osKekNameFor('/tmp/ weird name! ')).toMatch(/^weird_name__-[0-9a-f]{16}$/);
      expect(osKekNameFor('/')).toMatch(/^aegis-[0-9a-f]{16}$/);
    });

    test('a bad name is invalid-argument before the keyring is touched', async () => {
      for (const name of ['', '/abs', 'a/b', 'has space', '-lead', 'x'.repeat(129), 'ctl\u0001']) {
        expect(await codeOfAsync(OsKeyringKek.open({ name }, { create: true }))).toBe(ErrorCode.InvalidArgument);
      }
      expect(await codeOfAsync(OsKeyringKek.open(undefined as unknown as { name: string }))).toBe(ErrorCode.InvalidArgument);
    });
  });

  describe('OS keyring KEK with no keyring reachable (child Jest process)', () => {
    test('the no-keyring suite passes: unavailable everywhere, clean messages, no fallback', async () => {
      const empty = mkdtempSync(join(tmpdir(), 'aegis-no-bus-'));
      try {
        const env = { ...process.env, AEGIS_KEK_OS_MODE: 'no-keyring', DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(empty, 'no-bus')}`, XDG_RUNTIME_DIR: empty };
        const r = await runChild(env);
        if (process.env.AEGIS_KEK_OS_DEBUG === '1') process.stderr.write(`${summary(r)}\n`);
        expectChildPassed(r, 5);
      } finally {
        rmSync(empty, { recursive: true, force: true });
      }
    });
  });

  describe('OS keyring KEK on a private Secret Service (child Jest process)', () => {
    let ss: SecretService | undefined;
    beforeAll(async () => {
      assertSecretServiceTools(); // fails (not skips) without gnome-keyring / dbus
      ss = await startSecretService();
    });
    afterAll(async () => {
      await ss?.stop();
    });

    test('the real-keyring suite passes: lifecycle, reopen, wrap format, crash ordering, locked keyring', async () => {
      const r = await runChild({ ...process.env, ...ss!.env, AEGIS_KEK_OS_MODE: 'secret-service', AEGIS_KEK_OS_COLLECTION: ss!.collection });
      if (process.env.AEGIS_KEK_OS_DEBUG === '1') process.stderr.write(`${summary(r)}\n`);
      expectChildPassed(r, 10);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Child: no keyring reachable.

if (MODE === 'no-keyring') {
  describe('OS keyring KEK with no keyring reachable', () => {
    test('open is unavailable with the clean message naming the fallbacks', async () => {
      const f = await failure(OsKeyringKek.open({ name: 'nokeyring' }));
      expect(f).toEqual({ code: ErrorCode.Unavailable, message: OS_KEYRING_UNAVAILABLE });
      expect(OS_KEYRING_UNAVAILABLE).toBe(
        'no OS keyring is reachable (the Secret Service is not running); use --kek passphrase (a passphrase-sealed keyfile) or --kek pkcs11',
      );
      expectClean(f.message);
    });

    test('create is unavailable too, and nothing is left in the kernel keyring the binding would fall back to', async () => {
      const f = await failure(OsKeyringKek.open({ name: 'nokeyring' }, { create: true }));
      expect(f).toEqual({ code: ErrorCode.Unavailable, message: OS_KEYRING_UNAVAILABLE });
      expectClean(f.message);
      // Without a Secret Service an Entry is backed by keyutils (volatile); the provider never wrote there.
      for (const acct of ['nokeyring/v1', 'nokeyring/meta']) expect(new Entry(OS_KEK_SERVICE, acct).getPassword()).toBeNull();
    });

    test('osKeyringAvailable() is false and does not throw', async () => {
      await expect(osKeyringAvailable()).resolves.toBe(false);
    });

    test('--kek auto falls back to the passphrase keyfile; --kek os fails and leaves no dir behind', async () => {
      const root = mkdtempSync(join(tmpdir(), 'aegis-kek-auto-'));
      try {
        const secrets = { passphrase: async () => 'auto fallback passphrase', pin: async () => '' };
        const kek = await initKek(join(root, 'a'), { kind: 'auto' }, secrets);
        expect([kek.kind, (await readKekConfig(join(root, 'a')))?.kind]).toEqual(['passphrase', 'passphrase']);
        await kek.close();
        expect(await codeOfAsync(initKek(join(root, 'b'), { kind: 'os' }, secrets))).toBe('unavailable');
        expect(existsSync(join(root, 'b'))).toBe(false);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    });

    test('the error is an AegisError whose message names both fallbacks', async () => {
      try {
        await OsKeyringKek.open({ name: 'nokeyring' });
        throw new Error('no error');
      } catch (e) {
        expect(e).toBeInstanceOf(AegisError);
        expect((e as AegisError).message).toContain('--kek passphrase');
        expect((e as AegisError).message).toContain('--kek pkcs11');
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Child: a private, real Secret Service (gnome-keyring).

if (MODE === 'secret-service') {
  describe('OS keyring KEK on a real Secret Service', () => {
    test('osKeyringAvailable() is true and its probe leaves nothing behind', async () => {
      await expect(osKeyringAvailable()).resolves.toBe(true);
      expect(await findCredentialsAsync(OS_KEK_PROBE_SERVICE)).toEqual([]);
    });

    test('--kek auto picks the OS keyring; kek.json names it and a re-open finds the same KEK', async () => {
      const root = mkdtempSync(join(tmpdir(), 'aegis-kek-auto-'));
      try {
        const secrets = { passphrase: async () => 'never asked for here', pin: async () => '' };
        const kek = await initKek(join(root, 'a'), { kind: 'auto' }, secrets);
        const sealed = await sealField(kek, CTX_AUTO, new TextEncoder().encode('auto'));
        expect(kek.kind).toBe('os');
        await kek.close();
        expect((await readKekConfig(join(root, 'a')))?.kind).toBe('os');
        const again = await openKek(join(root, 'a'), secrets);
        expect(new TextDecoder().decode(await openField(again, CTX_AUTO, sealed))).toBe('auto');
        await again.close();
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    });

    test('open without create is not-found; create makes v1 primary; the metadata holds no key material', async () => {
      expect(await failure(OsKeyringKek.open({ name: 'fresh' }))).toEqual({ code: ErrorCode.NotFound, message: 'no KEK "fresh" in the OS keyring (service aegis-kek)' });
      const kek = await OsKeyringKek.open({ name: 'fresh' }, { create: true });
      expect(kek.id).toBe('os:fresh');
      expect(kek.kind).toBe('os');
      expect(await kek.primaryVersion()).toBe(1);
      expect(await states(kek)).toEqual([[1, 'primary']]);
      const stored = await entriesOf('fresh');
      expect(Object.keys(stored).sort()).toEqual(['meta', 'v1']);
      expect(Buffer.from(stored.v1!, 'base64')).toHaveLength(32);
      const meta = JSON.parse(stored.meta!) as { primary: number; versions: Record<string, { state: string; createdAt: string }> };
      expect(Object.keys(meta).sort()).toEqual(['primary', 'versions']);
      expect(meta.primary).toBe(1);
      expect(Object.keys(meta.versions)).toEqual(['1']);
      expect(Object.keys(meta.versions['1']!).sort()).toEqual(['createdAt', 'state']);
      expect(meta.versions['1']!.state).toBe('primary');
      expect(stored.meta).not.toContain(stored.v1!);
      // create on an existing KEK opens it (same key: a value sealed before opens after).
      const sealed = await sealField(kek, CTX, text('kept'));
      kek.close();
      const again = await OsKeyringKek.open({ name: 'fresh' }, { create: true });
      expect(untext(await openField(again, CTX, sealed))).toBe('kept');
      expect((await entriesOf('fresh')).v1).toBe(stored.v1);
      again.close();
      expect(await codeOfAsync(again.wrap(new Uint8Array(32)))).toBe(ErrorCode.InvalidArgument);
    });

    test('rotation matrix: every value opens exactly while its KEK version is usable', async () => {
      const kek = await OsKeyringKek.open({ name: 'matrix' }, { create: true });
      const rows = await runRotationMatrix(kek);
      expect(rows.at(-1)!.states).toEqual({ 1: 'destroyed', 2: 'primary' });
      expect(Object.keys(await entriesOf('matrix')).sort()).toEqual(['meta', 'v2']);
      kek.close();
    });

    test('full lifecycle persists: add, setPrimary, disable, enable, destroy; a reopen sees the same state', async () => {
      const kek = await OsKeyringKek.open({ name: 'life' }, { create: true });
      const at1 = await sealField(kek, CTX, text('under v1'));
      expect(await kek.addVersion()).toBe(2);
      expect(await states(kek)).toEqual([[1, 'primary'], [2, 'enabled']]);
      await kek.setPrimary(2);
      const at2 = await sealField(kek, CTX, text('under v2'));
      expect(await states(kek)).toEqual([[1, 'enabled'], [2, 'primary']]);
      await kek.disable(1);
      expect(await codeOfAsync(openField(kek, CTX, at1))).toBe(ErrorCode.DecryptionFailed);
      expect(Object.keys(await entriesOf('life')).sort()).toEqual(['meta', 'v1', 'v2']); // disable keeps the entry

      // A second object sees the disabled state too.
      const other = await OsKeyringKek.open({ name: 'life' });
      expect(await states(other)).toEqual([[1, 'disabled'], [2, 'primary']]);
      expect(await codeOfAsync(openField(other, CTX, at1))).toBe(ErrorCode.DecryptionFailed);
      other.close();

      await kek.enable(1);
      expect(untext(await openField(kek, CTX, at1))).toBe('under v1');
      expect(await kek.rotate()).toBe(3);
      expect(await codeOfAsync(kek.destroy(1))).toBeUndefined();
      expect(await codeOfAsync(openField(kek, CTX, at1))).toBe(ErrorCode.DecryptionFailed);
      expect(Object.keys(await entriesOf('life')).sort()).toEqual(['meta', 'v2', 'v3']); // destroy deletes the entry
      const before = await kek.versions();
      kek.close();

      const re = await OsKeyringKek.open({ name: 'life' });
      expect(await re.versions()).toEqual(before);
      expect(await states(re)).toEqual([[1, 'destroyed'], [2, 'enabled'], [3, 'primary']]);
      expect(untext(await openField(re, CTX, at2))).toBe('under v2');
      expect(await codeOfAsync(openField(re, CTX, at1))).toBe(ErrorCode.DecryptionFailed);
      // Forbidden transitions and unknown versions.
      expect(await codeOfAsync(re.disable(3))).toBe(ErrorCode.FailedPrecondition);
      expect(await codeOfAsync(re.destroy(3))).toBe(ErrorCode.FailedPrecondition);
      expect(await codeOfAsync(re.enable(1))).toBe(ErrorCode.FailedPrecondition);
      expect(await codeOfAsync(re.setPrimary(1))).toBe(ErrorCode.FailedPrecondition);
      expect(await codeOfAsync(re.disable(9))).toBe(ErrorCode.NotFound);
      expect(await codeOfAsync(re.wrap(new Uint8Array(32), 1))).toBe(ErrorCode.FailedPrecondition);
      expect(await codeOfAsync(re.wrap(new Uint8Array(32), 9))).toBe(ErrorCode.NotFound);
      expect(await codeOfAsync(re.wrap(new Uint8Array(31)))).toBe(ErrorCode.BadKeyLength);
      // A destroyed version is never reused.
      expect(await re.addVersion()).toBe(4);
      for (const v of await re.versions()) expect(Number.isNaN(Date.parse(v.createdAt))).toBe(false);
      re.close();
    });

    test('wrap format: AES-256-GCM under the version key, AAD = lp(label, id, u32be(version)); every bad unwrap is the one error', async () => {
      const kek = await OsKeyringKek.open({ name: 'format' }, { create: true });
      await kek.addVersion();
      const dek = new Uint8Array(32).map((_, i) => i + 1);
      const { version, wrapped } = await kek.wrap(dek);
      expect(version).toBe(1);
      expect(wrapped).toHaveLength(60);
      const key = Buffer.from((await entriesOf('format')).v1!, 'base64');
      const d = createDecipheriv('aes-256-gcm', key, wrapped.subarray(0, 12));
      d.setAAD(lp('aegis-os-kek-wrap-v1', 'os:format', u32(1)));
      d.setAuthTag(wrapped.subarray(44));
      expect(new Uint8Array(Buffer.concat([d.update(wrapped.subarray(12, 44)), d.final()]))).toEqual(dek);
      expect(await kek.unwrap(wrapped, 1)).toEqual(dek);

      const one = { code: ErrorCode.DecryptionFailed, message: 'decryption failed' };
      expect(await failure(kek.unwrap(wrapped, 2))).toEqual(one); // another (enabled) version
      expect(await failure(kek.unwrap(wrapped, 7))).toEqual(one); // unknown version
      expect(await failure(kek.unwrap(wrapped, -1))).toEqual(one);
      expect(await failure(kek.unwrap(wrapped.subarray(1), 1))).toEqual(one);
      for (const i of [0, 12, 30, 59]) {
        const bad = new Uint8Array(wrapped);
        bad[i]! ^= 1;
        expect(await failure(kek.unwrap(bad, 1))).toEqual(one);
      }
      // The same key material under another KEK id does not open it (the id is in the AAD).
      const under2 = await kek.wrap(dek, 2);
      expect(under2.version).toBe(2);
      expect(await failure(kek.unwrap(under2.wrapped, 1))).toEqual(one);
      kek.close();
    });

    test('crash ordering: an orphan version entry is skipped, never overwritten; a half-done destroy is finished on open', async () => {
      const kek = await OsKeyringKek.open({ name: 'crash' }, { create: true });
      // A crash in addVersion after the entry, before the metadata: v2 exists, unnamed.
      const orphan = Buffer.alloc(32, 7).toString('base64');
      new Entry(OS_KEK_SERVICE, 'crash/v2').setPassword(orphan);
      const re = await OsKeyringKek.open({ name: 'crash' });
      expect(await states(re)).toEqual([[1, 'primary']]);
      expect(await re.addVersion()).toBe(3);
      expect((await entriesOf('crash')).v2).toBe(orphan);
      await re.destroy(3);
      // A crash in destroy after the metadata, before the delete: the entry lingers.
      new Entry(OS_KEK_SERVICE, 'crash/v3').setPassword(Buffer.alloc(32, 9).toString('base64'));
      re.close();
      const third = await OsKeyringKek.open({ name: 'crash' });
      expect(await states(third)).toEqual([[1, 'primary'], [3, 'destroyed']]);
      expect(Object.keys(await entriesOf('crash')).sort()).toEqual(['meta', 'v1', 'v2']);
      third.close();
      kek.close();
    });

    test('never created over: versions without metadata refuse create; metadata naming a lost key is malformed', async () => {
      const kek = await OsKeyringKek.open({ name: 'lost' }, { create: true });
      kek.close();
      const v1 = (await entriesOf('lost')).v1!;
      new Entry(OS_KEK_SERVICE, 'lost/meta').deletePassword();
      const f = await failure(OsKeyringKek.open({ name: 'lost' }, { create: true }));
      expect(f.code).toBe(ErrorCode.FailedPrecondition);
      expectClean(f.message);
      expect((await entriesOf('lost')).v1).toBe(v1); // untouched

      const k2 = await OsKeyringKek.open({ name: 'gone' }, { create: true });
      k2.close();
      new Entry(OS_KEK_SERVICE, 'gone/v1').deletePassword();
      expect(await codeOfAsync(OsKeyringKek.open({ name: 'gone' }))).toBe(ErrorCode.Malformed);
      new Entry(OS_KEK_SERVICE, 'gone/v1').setPassword('not base64 of 32 bytes');
      expect(await codeOfAsync(OsKeyringKek.open({ name: 'gone' }))).toBe(ErrorCode.Malformed);
      new Entry(OS_KEK_SERVICE, 'gone/meta').setPassword('{"primary":1,"versions":{"1":{"state":"enabled","createdAt":"2026-01-01"}}}');
      expect(await codeOfAsync(OsKeyringKek.open({ name: 'gone' }))).toBe(ErrorCode.Malformed); // no primary state
    });

    test('a change made by another object is detected: the stale one refuses lifecycle changes', async () => {
      const a = await OsKeyringKek.open({ name: 'race' }, { create: true });
      const b = await OsKeyringKek.open({ name: 'race' });
      expect(await a.addVersion()).toBe(2);
      expect(await codeOfAsync(b.addVersion())).toBe(ErrorCode.FailedPrecondition);
      expect((await entriesOf('race')).v3).toBeUndefined();
      const c = await OsKeyringKek.open({ name: 'race' });
      expect(await states(c)).toEqual([[1, 'primary'], [2, 'enabled']]);
      a.close();
      b.close();
      c.close();
    });

    // Last: it leaves the collection locked.
    test('a locked keyring: open and lifecycle changes are unavailable (clean message); an open provider still wraps in memory', async () => {
      const kek = await OsKeyringKek.open({ name: 'locked' }, { create: true });
      const sealed = await sealField(kek, CTX, text('before the lock'));
      await lockSecretServiceCollection(process.env.DBUS_SESSION_BUS_ADDRESS!, process.env.AEGIS_KEK_OS_COLLECTION!);
      const f = await failure(OsKeyringKek.open({ name: 'locked' }));
      expect(f).toEqual({ code: ErrorCode.Unavailable, message: OS_KEYRING_LOCKED });
      expectClean(f.message);
      const g = await failure(kek.addVersion());
      expect(g.code).toBe(ErrorCode.Unavailable);
      expectClean(g.message);
      await expect(osKeyringAvailable()).resolves.toBe(false);
      expect(untext(await openField(kek, CTX, sealed))).toBe('before the lock');
      expect(await states(kek)).toEqual([[1, 'primary']]);
      kek.close();
    });
  });
}
