/**
 * Which KEK provider protects a data dir, recorded in `DATA_DIR/kek.json` (no secret in it):
 *
 *   { "version": 1, "kind": "passphrase", "file": "kek.keyfile.json" }
 *   { "version": 1, "kind": "os", "name": "aegis-<uuid>" }
 *   { "version": 1, "kind": "pkcs11", "module": "/usr/lib/softhsm/libsofthsm2.so", "token": "aegis", "name": "aegis-<uuid>" }
 *
 * The secret that unlocks the provider never goes in the file: the passphrase comes from
 * AEGIS_PASSPHRASE or a prompt, the PKCS#11 PIN from AEGIS_PKCS11_PIN or a prompt; the OS keyring
 * needs none (the user's login session unlocks it). A data dir from before kek.json with only a
 * kek.keyfile.json is read as the passphrase provider.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { AegisError, ErrorCode } from '../errors.js';
import { writeFileAtomic } from '../fs.js';
import type { KekKind, ManagedKek } from './kek.js';
import { OsKeyringKek, osKeyringAvailable } from './kek-os.js';
import { PassphraseKek } from './kek-passphrase.js';
import { Pkcs11Kek } from './kek-pkcs11.js';
import { settlePassphraseChange } from './passphrase-change.js';

export const KEK_CONFIG_FILE = 'kek.json';
export const KEK_KEYFILE = 'kek.keyfile.json';
export const PKCS11_PIN_ENV = 'AEGIS_PKCS11_PIN';
export const PKCS11_MODULE_ENV = 'AEGIS_PKCS11_MODULE';
export const DEFAULT_PKCS11_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

const KekConfigSchema = z.discriminatedUnion('kind', [
  z.object({ version: z.literal(1), kind: z.literal('passphrase'), file: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/) }).strict(),
  z.object({ version: z.literal(1), kind: z.literal('os'), name: z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/) }).strict(),
  z
    .object({ version: z.literal(1), kind: z.literal('pkcs11'), module: z.string().min(1).max(4096), token: z.string().min(1).max(32), name: z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/) })
    .strict(),
]);
export type KekConfig = z.infer<typeof KekConfigSchema>;

/** Where the secrets that unlock a provider come from (the CLI prompts; tests pass values). */
export interface KekSecrets {
  passphrase: () => Promise<string>;
  pin: () => Promise<string>;
}

export interface KekInitOptions {
  /** 'auto': the OS keyring where a Secret Service answers, else the passphrase keyfile. */
  kind: KekKind | 'auto';
  pkcs11?: { module?: string; token?: string };
}

export async function readKekConfig(dir: string): Promise<KekConfig | undefined> {
  const path = join(dir, KEK_CONFIG_FILE);
  if (!existsSync(path)) return existsSync(join(dir, KEK_KEYFILE)) ? { version: 1, kind: 'passphrase', file: KEK_KEYFILE } : undefined;
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    throw new AegisError(ErrorCode.Malformed, `${path} is not a KEK configuration`);
  }
  const r = KekConfigSchema.safeParse(json);
  if (!r.success) throw new AegisError(ErrorCode.Malformed, `${path} is not a KEK configuration`);
  return r.data;
}

export const hasKek = async (dir: string): Promise<boolean> => (await readKekConfig(resolve(dir))) !== undefined;

/** Creates the data dir's KEK with the chosen provider and records the choice; refuses a dir that has one. */
export async function initKek(dir: string, opts: KekInitOptions, secrets: KekSecrets): Promise<ManagedKek> {
  const abs = resolve(dir);
  if ((await readKekConfig(abs)) !== undefined) throw new AegisError(ErrorCode.AlreadyExists, `${abs} already has a KEK; the data it protects would become unreadable if it were replaced`);
  const made = !existsSync(abs);
  await mkdir(abs, { recursive: true, mode: 0o700 });
  try {
    return await createKek(abs, opts, secrets);
  } catch (e) {
    // A provider that could not be reached leaves no half-made data dir behind.
    if (made) await rm(abs, { recursive: true, force: true });
    throw e;
  }
}

async function createKek(abs: string, opts: KekInitOptions, secrets: KekSecrets): Promise<ManagedKek> {
  const name = `aegis-${randomUUID()}`;
  let config: KekConfig;
  let kek: ManagedKek;
  const kind = opts.kind === 'auto' ? ((await osKeyringAvailable()) ? 'os' : 'passphrase') : opts.kind;
  switch (kind) {
    case 'passphrase':
      config = { version: 1, kind: 'passphrase', file: KEK_KEYFILE };
      kek = await PassphraseKek.create(join(abs, KEK_KEYFILE), await secrets.passphrase());
      break;
    case 'os':
      config = { version: 1, kind: 'os', name };
      kek = await OsKeyringKek.open({ name }, { create: true });
      break;
    case 'pkcs11': {
      const module = opts.pkcs11?.module ?? process.env[PKCS11_MODULE_ENV] ?? DEFAULT_PKCS11_MODULE;
      const token = opts.pkcs11?.token ?? 'aegis';
      config = { version: 1, kind: 'pkcs11', module, token, name: name.slice(0, 64) };
      kek = await Pkcs11Kek.open({ module, token, pin: await secrets.pin(), name: config.name }, { create: true });
      break;
    }
    default:
      throw new AegisError(ErrorCode.InvalidArgument, '--kek must be passphrase, os or pkcs11');
  }
  try {
    await writeFileAtomic(join(abs, KEK_CONFIG_FILE), `${JSON.stringify(config, null, 1)}\n`, 0o644);
  } catch (e) {
    await kek.close();
    throw e;
  }
  return kek;
}

/** Opens the data dir's KEK as recorded in kek.json. */
export async function openKek(dir: string, secrets: KekSecrets): Promise<ManagedKek> {
  const abs = resolve(dir);
  // A passphrase change a crash interrupted is finished (or dropped) first: the keyfiles then all
  // open with one passphrase, the old or the new.
  await settlePassphraseChange(abs);
  const config = await readKekConfig(abs);
  if (config === undefined) throw new AegisError(ErrorCode.NotFound, `no KEK in ${abs}; run: aegis client init --data-dir ${abs} (or start the coordinator there)`);
  switch (config.kind) {
    case 'passphrase':
      return PassphraseKek.open(join(abs, config.file), await secrets.passphrase());
    case 'os':
      return OsKeyringKek.open({ name: config.name }, { create: false });
    case 'pkcs11':
      return Pkcs11Kek.open({ module: config.module, token: config.token, pin: await secrets.pin(), name: config.name }, { create: false });
  }
}
