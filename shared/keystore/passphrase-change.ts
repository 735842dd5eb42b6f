/**
 * Changing the passphrase of a data dir (`aegis keys passphrase`, `aegis keys rotate --emergency`,
 * a restore under a new passphrase): every passphrase-sealed keyfile at the top level of the dir
 * (`*.keyfile.json`: the KEK keyfile, the client's identity key and a pending next identity key)
 * is opened with the current passphrase and sealed again under the new one, with a fresh salt and
 * nonce and the file's own scrypt cost and label. What is sealed under the KEK (the store, the
 * coordinator's vault) needs no change: the KEK versions themselves did not change.
 *
 * Crash safety, in three steps, so a kill at any point leaves a dir that opens with the old
 * passphrase or with the new one, never a mix:
 *   1. stage: each keyfile's new copy is written beside it as `<name>.new-passphrase` (atomic).
 *      A kill here: the old files are untouched; the staged copies are dropped at the next open.
 *   2. commit: `keys-passphrase.json` (no secret: the file names, and whether an emergency
 *      rotation follows) is written atomically. From here on the change goes forward.
 *   3. apply: each staged copy is renamed over its file, the emergency rotation (if any) is
 *      journaled (rotation.ts), the commit file is removed. A kill here is finished by
 *      `settlePassphraseChange` at the next open (every command that opens a data dir's KEK or
 *      the client's identity calls it), which only renames files and needs no passphrase.
 *
 * A keyfile that does not open with the current passphrase stops the change before step 2 (a
 * file under another passphrase is named; no secret is printed).
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AegisError, ErrorCode } from '../errors.js';
import { readJsonFile, writeFileAtomic } from '../fs.js';
import { openSecrets, parseKeyfile, writeKeyfile } from './passphrase-keyfile.js';
import { markLeakRotation } from './rotation.js';

export const PASSPHRASE_JOURNAL = 'keys-passphrase.json';
const STAGED = '.new-passphrase';
const KEYFILE_NAME = /^[A-Za-z0-9._-]{1,128}\.keyfile\.json$/;

const JournalSchema = z
  .object({
    version: z.literal(1),
    files: z.array(z.string().regex(KEYFILE_NAME)).max(64),
    /** Set by `keys rotate --emergency`: the leak rotation (rotation.ts `leak`) is journaled when the change applies. */
    then: z.literal('leak-rotation').optional(),
  })
  .strict();
type PassphraseJournal = z.infer<typeof JournalSchema>;

/** The passphrase-sealed keyfiles at the top level of DIR (by name, sorted). */
export async function passphraseKeyfiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    if (!KEYFILE_NAME.test(name)) continue;
    try {
      parseKeyfile(new Uint8Array(await readFile(join(dir, name))));
      out.push(name);
    } catch {
      // Not a sealed keyfile: not ours to re-seal.
    }
  }
  return out;
}

/** Opens the keyfile at `from` with `oldPassphrase` and writes it sealed under `newPassphrase` to `to` (same label and scrypt cost). */
export async function resealKeyfile(from: string, to: string, oldPassphrase: string, newPassphrase: string): Promise<void> {
  const parsed = parseKeyfile(new Uint8Array(await readFile(from)));
  const secrets = await openSecrets(oldPassphrase, parsed);
  try {
    await writeKeyfile(to, newPassphrase, parsed.label, secrets, { N: parsed.kdf.N, r: parsed.kdf.r, p: parsed.kdf.p });
  } finally {
    for (const v of Object.values(secrets)) v.fill(0);
  }
}

export interface PassphraseChangeOptions {
  /** Journal the leak rotation as part of the change (`keys rotate --emergency`). */
  thenLeakRotation?: boolean;
  /** Fault injection for the crash tests: SIGKILL after 'staged' or after 'committed' (AEGIS_TEST_KILL_AT; never set in production). */
  killAt?: string;
}

/**
 * Re-seals every keyfile of DIR under `newPassphrase` (see the header). Returns the names of the
 * files changed. The caller's open KEK (PassphraseKek) must adopt the new passphrase afterwards.
 */
export async function changeDirPassphrase(dir: string, oldPassphrase: string, newPassphrase: string, opts: PassphraseChangeOptions = {}): Promise<string[]> {
  await settlePassphraseChange(dir);
  if (oldPassphrase === newPassphrase) throw new AegisError(ErrorCode.InvalidArgument, 'the new passphrase is the current one; choose another');
  const files = await passphraseKeyfiles(dir);
  if (files.length === 0) throw new AegisError(ErrorCode.NotFound, `no passphrase-sealed keyfile in ${dir}`);
  try {
    for (const name of files) {
      await resealKeyfile(join(dir, name), join(dir, name + STAGED), oldPassphrase, newPassphrase).catch((e: unknown) => {
        if (e instanceof AegisError && e.code === ErrorCode.DecryptionFailed) throw new AegisError(ErrorCode.DecryptionFailed, `decryption failed: ${name} does not open with the current passphrase`);
        throw e;
      });
    }
  } catch (e) {
    await dropStaged(dir);
    throw e;
  }
  if (opts.killAt === 'staged') process.kill(process.pid, 'SIGKILL');
  const journal: PassphraseJournal = { version: 1, files, ...(opts.thenLeakRotation ? { then: 'leak-rotation' as const } : {}) };
  await writeFileAtomic(join(dir, PASSPHRASE_JOURNAL), `${JSON.stringify(journal)}\n`);
  if (opts.killAt === 'committed') process.kill(process.pid, 'SIGKILL');
  await settlePassphraseChange(dir);
  return files;
}

async function dropStaged(dir: string): Promise<void> {
  for (const name of await readdir(dir)) if (name.endsWith(STAGED)) await unlink(join(dir, name)).catch(() => undefined);
}

/**
 * Finishes a committed passphrase change (renames the staged copies, journals a leak rotation if
 * asked) or drops an uncommitted one. Idempotent, and a no-op on a dir with neither.
 */
export async function settlePassphraseChange(dir: string): Promise<void> {
  const path = join(dir, PASSPHRASE_JOURNAL);
  if (!existsSync(path)) {
    if (existsSync(dir) && (await readdir(dir)).some((n) => n.endsWith(STAGED))) await dropStaged(dir);
    return;
  }
  const journal = await readJsonFile(path, JournalSchema, PASSPHRASE_JOURNAL);
  if (journal === undefined) return;
  for (const name of journal.files) {
    const staged = join(dir, name + STAGED);
    if (existsSync(staged)) await rename(staged, join(dir, name));
  }
  if (journal.then === 'leak-rotation') await markLeakRotation(dir);
  await unlink(path);
}

/**
 * A restore's keyfiles (a dir being made, not yet in place: no journal needed, the caller drops
 * the whole dir on failure): each keyfile that does not open with `target` (the restored dir's
 * passphrase) is opened with the backed-up dir's passphrase (`source`, asked only then) and
 * sealed again under `target`. Returns the files re-sealed.
 */
export async function adoptKeyfiles(dir: string, targetPassphrase: () => Promise<string>, source: (() => Promise<string>) | undefined): Promise<string[]> {
  const out: string[] = [];
  let target: string | undefined;
  for (const name of await passphraseKeyfiles(dir)) {
    const path = join(dir, name);
    target ??= await targetPassphrase();
    try {
      const s = await openSecrets(target, parseKeyfile(new Uint8Array(await readFile(path))));
      for (const v of Object.values(s)) v.fill(0);
      continue;
    } catch (e) {
      if (!(e instanceof AegisError && e.code === ErrorCode.DecryptionFailed)) throw e;
    }
    if (source === undefined) throw new AegisError(ErrorCode.InvalidArgument, `${name} in the backup is sealed under another passphrase than the new dir's: give the backed-up dir's passphrase too`);
    await resealKeyfile(path, path, await source(), target).catch((e: unknown) => {
      if (e instanceof AegisError && e.code === ErrorCode.DecryptionFailed) throw new AegisError(ErrorCode.DecryptionFailed, `decryption failed: ${name} in the backup does not open with the passphrase given for the backed-up dir`);
      throw e;
    });
    out.push(name);
  }
  return out;
}
