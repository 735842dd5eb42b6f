/**
 * A throwaway SoftHSM2 token for tests of the PKCS#11 KEK provider: a softhsm2.conf and token
 * directory in a temp dir, tokens made with `softhsm2-util --init-token --free`, random PINs.
 *
 * SoftHSM2 reads SOFTHSM2_CONF from the process environment when C_Initialize runs. Under Jest the
 * test's `process.env` is a copy that native code never sees, so the variable is set in the real
 * environment through a worker thread sharing it (worker_threads SHARE_ENV), and restored by
 * `cleanup()`. It must be set before the module is first initialized in the process; a module
 * already initialized keeps the configuration it read then.
 *
 * `inspect` opens a pkcs11js session of the test's own, to read what the token holds. PKCS#11
 * initializes a module once per process, so open it only while a provider is open on the same
 * module (its C_Initialize then answers CKR_CRYPTOKI_ALREADY_INITIALIZED) and close it before the
 * last provider closes; it never finalizes the module.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SHARE_ENV, Worker } from 'node:worker_threads';
import type * as Pkcs11Js from 'pkcs11js';

const MODULE_CANDIDATES = [
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/local/lib/softhsm/libsofthsm2.so',
  '/opt/homebrew/lib/softhsm/libsofthsm2.so',
];

/** The SoftHSM2 module (SOFTHSM2_MODULE overrides the usual install paths), or undefined. */
export function findSoftHsmModule(): string | undefined {
  const fromEnv = process.env.SOFTHSM2_MODULE;
  if (fromEnv !== undefined && fromEnv !== '') return existsSync(fromEnv) ? fromEnv : undefined;
  return MODULE_CANDIDATES.find((p) => existsSync(p));
}

/** True when the module and softhsm2-util are both there. */
export function softHsmAvailable(): boolean {
  return findSoftHsmModule() !== undefined && spawnSync('softhsm2-util', ['--version'], { encoding: 'utf8' }).status === 0;
}

/** Sets (or, with undefined, unsets) a variable in the real process environment, which native code reads. */
async function setRealEnv(name: string, value: string | undefined): Promise<void> {
  const worker = new Worker(
    `const { workerData: d } = require('node:worker_threads');
     if (d.value === undefined) delete process.env[d.name]; else process.env[d.name] = d.value;`,
    { eval: true, env: SHARE_ENV, workerData: { name, value } },
  );
  const [code] = (await once(worker, 'exit')) as [number];
  if (code !== 0) throw new Error(`could not set ${name} in the process environment`);
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

/** The real environment's value (the Jest sandbox's copy may be stale). */
function realEnv(name: string): string | undefined {
  const r = spawnSync(process.execPath, ['-e', `process.stdout.write(process.env[${JSON.stringify(name)}] ?? '\\u0000')`], { encoding: 'utf8' });
  return r.stdout === '\u0000' ? undefined : r.stdout;
}

export interface SoftHsmToken {
  label: string;
  pin: string;
  soPin: string;
}

export interface SoftHsm {
  module: string;
  dir: string;
  conf: string;
  /** Initializes a token in a free slot; label defaults to a random one. */
  addToken(label?: string): SoftHsmToken;
  /** Restores SOFTHSM2_CONF and removes the temp dir. Close every provider first. */
  cleanup(): Promise<void>;
}

export async function startSoftHsm(): Promise<SoftHsm> {
  const module = findSoftHsmModule();
  if (module === undefined) throw new Error('SoftHSM2 is not installed (libsofthsm2.so not found; set SOFTHSM2_MODULE)');
  const dir = mkdtempSync(join(tmpdir(), 'aegis-softhsm-'));
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens, { mode: 0o700 });
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`, { mode: 0o600 });
  const previous = realEnv('SOFTHSM2_CONF');
  await setRealEnv('SOFTHSM2_CONF', conf);
  return {
    module,
    dir,
    conf,
    addToken(label = `aegis-${randomBytes(4).toString('hex')}`): SoftHsmToken {
      const pin = randomBytes(6).toString('hex');
      const soPin = randomBytes(6).toString('hex');
      const r = spawnSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', soPin], {
        env: { ...process.env, SOFTHSM2_CONF: conf },
        encoding: 'utf8',
      });
      if (r.status !== 0) throw new Error(`softhsm2-util --init-token failed: ${r.stderr || r.stdout}`);
      return { label, pin, soPin };
    },
    async cleanup(): Promise<void> {
      await setRealEnv('SOFTHSM2_CONF', previous);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TokenInspector {
  api: typeof Pkcs11Js;
  lib: Pkcs11Js.PKCS11;
  session: Buffer;
  /** Token objects whose CKA_LABEL starts with `prefix` (optionally of one class), with their labels. */
  objects(prefix: string, cls?: number): { handle: Buffer; label: string }[];
  /** One attribute's raw value, or the CKR_* name the token answered with. */
  attr(handle: Buffer, type: number): Buffer | string;
  close(): void;
}

/** A logged-in session of the test's own (see the module comment for when it may be opened). */
export function inspect(module: string, token: SoftHsmToken): TokenInspector {
  const api = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Js;
  const lib = new api.PKCS11();
  lib.load(module);
  try {
    lib.C_Initialize();
  } catch (e) {
    if ((e as { code?: number }).code !== api.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw e;
  }
  const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trimEnd() === token.label);
  if (slot === undefined) throw new Error(`no token ${token.label}`);
  const session = lib.C_OpenSession(slot, api.CKF_SERIAL_SESSION | api.CKF_RW_SESSION);
  try {
    lib.C_Login(session, api.CKU_USER, token.pin);
  } catch (e) {
    if ((e as { code?: number }).code !== api.CKR_USER_ALREADY_LOGGED_IN) throw e;
  }
  return {
    api,
    lib,
    session,
    objects(prefix, cls) {
      const template: Pkcs11Js.Template = [{ type: api.CKA_TOKEN, value: true }];
      if (cls !== undefined) template.push({ type: api.CKA_CLASS, value: cls });
      lib.C_FindObjectsInit(session, template);
      const handles: Buffer[] = [];
      for (let batch = lib.C_FindObjects(session, 64); batch.length > 0; batch = lib.C_FindObjects(session, 64)) handles.push(...batch);
      lib.C_FindObjectsFinal(session);
      return handles
        .map((handle) => ({ handle, label: lib.C_GetAttributeValue(session, handle, [{ type: api.CKA_LABEL }])[0]!.value.toString('utf8') }))
        .filter((o) => o.label.startsWith(prefix))
        .sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
    },
    attr(handle, type) {
      try {
        return lib.C_GetAttributeValue(session, handle, [{ type }])[0]!.value;
      } catch (e) {
        return e instanceof Error ? e.message : String(e);
      }
    },
    close() {
      try {
        lib.C_CloseSession(session);
      } catch {
        // already closed (the module was finalized)
      }
    },
  };
}
