/**
 * Client backups, restores and exports (DESIGN.md §5: "backups and exports are encrypted and
 * audited"). Everything leaves the data dir only inside an AEGIS-STREAM file
 * (shared/keystore/stream.ts: chunked AES-256-GCM that detects truncation, reordering and trailing
 * data), protected by a backup passphrase or an X25519 recipient key. There is no code path that
 * writes the plaintext anywhere: it is produced record by record, encrypted chunk by chunk.
 *
 * Plaintext inside the stream: JSON Lines.
 *   backup: {"type":"aegis-backup","version":1}
 *           {"type":"file","name":"client.json","data":"<base64>"}   one per small file of the dir
 *           {"type":"record","id":…,"createdAt":…,"fields":[{name,sensitive,value}]}   one per record
 *           {"type":"end","files":F,"records":N}
 *   export: {"type":"aegis-export","version":1}, then records, then {"type":"end","files":0,"records":N}
 * The files copied are the client's identity (its keyfile stays sealed under its own passphrase),
 * certificates, trust and audit state and its contribution ledger; not the KEK (a restore makes the new dir's own) and not
 * store.db (its records travel re-encrypted under the backup key, so a restore works without the
 * old KEK — on a new machine whose HSM or keyring never saw it).
 *
 * Restore writes into a fresh sibling temp dir, and moves it into place only once the whole file
 * has authenticated and every record is stored: a wrong key, a truncated or tampered file leaves
 * nothing behind.
 *
 * The contribution ledger never goes back in time: a restore may go into a dir that holds only a
 * ledger (nothing else), and then that ledger stays, the backup's comes beside it as
 * `ledger.restored-*.json`, and the client merges the two (the union) the next time it opens
 * them — so restoring an older backup cannot make the client forget rounds it joined since.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, mkdir, open, readFile, readdir, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import { BACKUP_PASSPHRASE_ENV } from '../../shared/cli/passphrase.js';
import { initKek, type KekInitOptions, type KekSecrets } from '../../shared/keystore/kek-config.js';
import { adoptKeyfiles } from '../../shared/keystore/passphrase-change.js';
import { decryptFile, encryptToFile, parseRecipient, STREAM_DECRYPTION_FAILED, type StreamKey, type StreamRecipient } from '../../shared/keystore/stream.js';
import { AuditBook } from '../audit/audit.js';
import { isKeptLedgerFile, isLedgerFile, LEDGER_FILE, restoredLedgerName } from '../admission/ledger-file.js';
import { SqliteDataStore, type PlainRecord } from './sqlite.js';

/** The data dir's small files a backup carries (whichever exist). */
export const BACKUP_FILES: readonly string[] = Object.freeze(['client.json', 'client.pem', 'ca.pem', 'identity.keyfile.json', 'trust.json', 'audit.json', 'audit.log', LEDGER_FILE]);
const MAX_FILE_BYTES = 4 << 20;
const RESTORE_BATCH = 500;

const line = (o: unknown): Uint8Array => Buffer.from(`${JSON.stringify(o)}\n`, 'utf8');

/** Who can open the file, as the audit log names it: 'passphrase' or a key fingerprint. */
export function protectedBy(r: StreamRecipient): string {
  if ('passphrase' in r) return 'passphrase';
  return `x25519:${createHash('sha256').update(parseRecipient(r.x25519)).digest('hex').slice(0, 16)}`;
}

export interface WrittenFile {
  file: string;
  bytes: number;
  sha256: string;
  records: number;
  files: number;
}

async function* backupLines(dir: string, store: SqliteDataStore, kind: 'backup' | 'export', counts: { records: number; files: number }): AsyncGenerator<Uint8Array> {
  yield line({ type: kind === 'backup' ? 'aegis-backup' : 'aegis-export', version: 1 });
  if (kind === 'backup') {
    for (const name of BACKUP_FILES) {
      const path = join(dir, name);
      if (!existsSync(path)) continue;
      const data = await readFile(path);
      if (data.length > MAX_FILE_BYTES) throw new AegisError(ErrorCode.TooLarge, `${name} is larger than ${MAX_FILE_BYTES} bytes`);
      yield line({ type: 'file', name, data: data.toString('base64') });
      counts.files++;
    }
  }
  for await (const r of store.plainRecords()) {
    yield line({ type: 'record', ...r });
    counts.records++;
  }
  yield line({ type: 'end', files: counts.files, records: counts.records });
}

/** Writes an encrypted backup (or export) of the data dir to `out` and records it in the audit log. */
export async function writeBackup(dir: string, store: SqliteDataStore, out: string, recipient: StreamRecipient, kind: 'backup' | 'export'): Promise<WrittenFile> {
  const file = resolve(out);
  if (file.startsWith(`${resolve(dir)}/`)) throw new AegisError(ErrorCode.InvalidArgument, 'write the backup outside the data dir it backs up');
  const counts = { records: 0, files: 0 };
  const r = await encryptToFile(file, backupLines(dir, store, kind, counts), recipient, { kind, tool: 'aegis', format: 1 });
  const audit = await AuditBook.open(dir);
  await audit.dataEvent({ event: kind, file, sha256: r.sha256, bytes: r.bytes, records: counts.records, protectedBy: protectedBy(recipient) });
  return { file, bytes: r.bytes, sha256: r.sha256, records: counts.records, files: counts.files };
}

/**
 * Puts the restored dir `tmp` in place of `target`, which holds only ledger files: they are
 * linked into `tmp` first (fsynced), so at every moment one of the two dirs holds them; the old
 * dir is moved aside, the new one into place, and only then is the old one removed.
 */
async function swapKeepingLedgers(target: string, tmp: string, kept: readonly string[]): Promise<void> {
  for (const name of kept) await link(join(target, name), join(tmp, name));
  const d = await open(tmp, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
  const old = join(dirname(target), `.${basename(target)}.replaced-${process.pid}`);
  await rm(old, { recursive: true, force: true });
  await rename(target, old);
  try {
    await rename(tmp, target);
  } catch (e) {
    await rename(old, target);
    throw e;
  }
  await rm(old, { recursive: true, force: true });
}

/** Splits decrypted chunks into JSON lines (a line may span chunks). */
async function* jsonLines(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Record<string, unknown>> {
  let rest = '';
  const dec = new TextDecoder('utf-8', { fatal: true });
  for await (const c of chunks) {
    rest += dec.decode(c, { stream: true });
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const l = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (l.length === 0) continue;
      let o: unknown;
      try {
        o = JSON.parse(l);
      } catch {
        // JSON.parse's own message quotes the text: never let a value reach an error.
        throw new AegisError(ErrorCode.Malformed, 'the backup holds a line that is not JSON');
      }
      if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new AegisError(ErrorCode.Malformed, 'the backup holds a line that is not an object');
      yield o as Record<string, unknown>;
    }
  }
  rest += dec.decode();
  if (rest.length > 0) throw new AegisError(ErrorCode.Malformed, 'the backup does not end with a complete line');
}

export interface RestoreReport {
  dataDir: string;
  kind: 'backup' | 'export';
  records: number;
  files: string[];
  kek: { kind: string; id: string };
  /** The dir already held a contribution ledger: it was kept, to be merged with the backup's. */
  keptLedger: boolean;
  /** Keyfiles sealed again under the new dir's passphrase (they came under the backed-up dir's). */
  resealed: string[];
}

export interface RestoreOptions {
  /** The backed-up dir's passphrase, asked only when a restored keyfile does not open with the new dir's. */
  sourcePassphrase?: () => Promise<string>;
}

/**
 * Restores `file` into the fresh data dir `dataDir` (absent, empty, or holding only a
 * contribution ledger, which is kept) under a new KEK (`kek`), all or nothing, and records the
 * restore in the new dir's audit log.
 */
export async function restoreBackup(file: string, key: StreamKey, dataDir: string, kek: KekInitOptions, secrets: KekSecrets, opts: RestoreOptions = {}): Promise<RestoreReport> {
  try {
    return await restoreInto(file, key, dataDir, kek, secrets, opts);
  } catch (err) {
    // The stream's one failure, for every cause, said with the file's name and what to check.
    if (isAegisError(err, ErrorCode.DecryptionFailed) && err.message === STREAM_DECRYPTION_FAILED) {
      const check = 'passphrase' in key ? `the backup passphrase (${BACKUP_PASSPHRASE_ENV} or the prompt) is wrong` : 'the identity is not one the file was encrypted to';
      throw new AegisError(ErrorCode.DecryptionFailed, `decryption failed: ${resolve(file)} does not open: ${check}, or the file was altered`);
    }
    throw err;
  }
}

async function restoreInto(file: string, key: StreamKey, dataDir: string, kek: KekInitOptions, secrets: KekSecrets, opts: RestoreOptions): Promise<RestoreReport> {
  const target = resolve(dataDir);
  const present = existsSync(target) ? await readdir(target) : [];
  if (present.some((n) => !isLedgerFile(n))) throw new AegisError(ErrorCode.AlreadyExists, `${target} is not empty; restore into a fresh data dir (one that holds only a ledger.json is fine: its ledger is kept)`);
  const keptLedgers = present.filter(isKeptLedgerFile);
  const src = resolve(file);
  const sha256 = createHash('sha256').update(await readFile(src)).digest('hex');
  const { meta, chunks } = await decryptFile(src, key);
  await mkdir(dirname(target), { recursive: true });
  const tmp = join(dirname(target), `.${basename(target)}.restoring-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { mode: 0o700 });
  try {
    const provider = await initKek(tmp, kek, secrets);
    const kekInfo = { kind: provider.kind, id: provider.id };
    let records = 0;
    const files: string[] = [];
    try {
      const store = await SqliteDataStore.open(tmp, provider);
      try {
        let header: string | undefined;
        let ended = false;
        let batch: PlainRecord[] = [];
        for await (const l of jsonLines(chunks)) {
          if (header === undefined) {
            if ((l.type !== 'aegis-backup' && l.type !== 'aegis-export') || l.version !== 1) throw new AegisError(ErrorCode.Malformed, 'not an Aegis backup or export');
            header = l.type;
            continue;
          }
          if (ended) throw new AegisError(ErrorCode.Malformed, 'data after the end of the backup');
          if (l.type === 'file' && header === 'aegis-backup') {
            const name = String(l.name);
            if (!BACKUP_FILES.includes(name) || typeof l.data !== 'string') throw new AegisError(ErrorCode.Malformed, 'the backup holds an unexpected file');
            // Beside a ledger the dir keeps, the backup's waits to be merged into it.
            const as = name === LEDGER_FILE && keptLedgers.length > 0 ? restoredLedgerName() : name;
            await writeFile(join(tmp, as), Buffer.from(l.data, 'base64'), { mode: name.endsWith('.pem') || name === 'client.json' ? 0o644 : 0o600, flag: 'wx' });
            files.push(name);
          } else if (l.type === 'record') {
            batch.push({ id: l.id as string, createdAt: l.createdAt as string, fields: l.fields as PlainRecord['fields'] });
            if (batch.length >= RESTORE_BATCH) {
              records += await store.restoreRecords(batch);
              batch = [];
            }
          } else if (l.type === 'end') {
            if (batch.length > 0) records += await store.restoreRecords(batch);
            batch = [];
            if (l.records !== records || l.files !== files.length) throw new AegisError(ErrorCode.Malformed, 'the backup does not hold what its last line says');
            ended = true;
          } else {
            throw new AegisError(ErrorCode.Malformed, 'the backup holds an unexpected line');
          }
        }
        // The stream authenticated to its last chunk (decryptFile throws otherwise); the content must be complete too.
        if (!ended) throw new AegisError(ErrorCode.Malformed, 'the backup has no end line');
      } finally {
        store.close();
      }
    } finally {
      await provider.close();
    }
    // The identity keyfile travels sealed under the backed-up dir's passphrase: sealed again
    // under this dir's, so the restored dir starts (the KEK keyfile is this dir's own already).
    const resealed = files.length > 0 ? await adoptKeyfiles(tmp, secrets.passphrase, opts.sourcePassphrase) : [];
    if (keptLedgers.length > 0) await swapKeepingLedgers(target, tmp, keptLedgers);
    else {
      // Whatever is left are a ledger's lock or a temp file a crash left: never read, dropped.
      for (const name of present) await rm(join(target, name), { force: true });
      if (existsSync(target)) await rmdir(target);
      await rename(tmp, target);
    }
    const kind = meta.kind;
    const audit = await AuditBook.open(target);
    const by = 'passphrase' in key ? { passphrase: '' } : { x25519: key.identity.recipient };
    await audit.dataEvent({ event: 'restore', file: src, sha256, bytes: (await readFile(src)).length, records, protectedBy: protectedBy(by) });
    return { dataDir: target, kind, records, files, kek: kekInfo, keptLedger: keptLedgers.length > 0, resealed };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}
