/**
 * `aegis client init` and `aegis client data import|list`: the client's encrypted local store
 * (DESIGN.md §5). Output never carries a stored value — only ids, field names and counts.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { reportError, printResult } from '../../shared/cli/output.js';
import { BACKUP_PASSPHRASE_ENV, cliKekSecrets, obtainPassphrase, SOURCE_PASSPHRASE_ENV } from '../../shared/cli/passphrase.js';
import { openRecipientIdentity, readStreamMeta, type StreamKey, type StreamRecipient } from '../../shared/keystore/stream.js';
import { restoreBackup, writeBackup } from './backup.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ManagedKek } from '../../shared/keystore/kek.js';
import { hasKek, initKek, openKek } from '../../shared/keystore/kek-config.js';
import { kekInitOptions, resumePendingRotation, withKekOptions, type HolderOpener, type KekCliOptions } from '../../shared/keystore/keys-cli.js';
import { SqliteDataStore, STORE_FILE, readRecordsFile } from './sqlite.js';

const DEFAULT_DIR = process.env.AEGIS_CLIENT_DIR ?? './aegis-client';

/** The client's store as a holder of sealed values, for `aegis keys` (absent when the dir has none). */
export const openStoreHolder: HolderOpener = async (dir, kek) => (existsSync(join(dir, STORE_FILE)) ? SqliteDataStore.open(dir, kek) : undefined);

/**
 * Opens the data dir's KEK and store (finishing any interrupted key rotation first), runs `fn`,
 * and closes both whatever happens.
 */
export async function withStore<T>(dataDir: string, fn: (store: SqliteDataStore, kek: ManagedKek, dir: string) => Promise<T>): Promise<T> {
  const dir = resolve(dataDir);
  if (!(await hasKek(dir))) throw new AegisError(ErrorCode.NotFound, `no KEK in ${dir}; run: aegis client init --data-dir ${dir}`);
  const kek = await openKek(dir, cliKekSecrets(`the data key in ${dir}`));
  try {
    const store = await SqliteDataStore.open(dir, kek);
    try {
      await resumePendingRotation(dir, kek, [store]);
      return await fn(store, kek, dir);
    } finally {
      store.close();
    }
  } finally {
    await kek.close();
  }
}

/** Adds `init` and `data import|list` to the `aegis client` group. */
export function registerData(client: Command): void {
  withKekOptions(
    client
      .command('init')
      .description('create the data dir, its KEK (passphrase keyfile, OS keyring or PKCS#11 token) and the encrypted local store')
      .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR),
  )
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: KekCliOptions & { dataDir: string; json?: boolean }) => {
      try {
        const dir = resolve(o.dataDir);
        const kek = await initKek(dir, kekInitOptions(o), cliKekSecrets(`the data key in ${dir}`, true));
        try {
          (await SqliteDataStore.open(dir, kek)).close();
        } finally {
          await kek.close();
        }
        printResult(o, { ok: true, data_dir: dir, kek: { kind: kek.kind, id: kek.id } }, `initialized ${dir} (KEK ${kek.id}); import data: aegis client data import FILE --data-dir ${dir}`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  client
    .command('backup')
    .description('write an encrypted backup of the data dir (records, identity, trust and audit state, contribution ledger); logged in the audit log')
    .requiredOption('--out <file>', 'the backup file (outside the data dir)')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--recipient <key>', `encrypt to an X25519 recipient (aegis keys recipient) instead of a backup passphrase (${BACKUP_PASSPHRASE_ENV})`)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { out: string; dataDir: string; recipient?: string; json?: boolean }) => {
      try {
        const r = await withStore(o.dataDir, async (store, _kek, dir) => {
          const recipient: StreamRecipient = o.recipient ? { x25519: o.recipient } : { passphrase: await obtainPassphrase({ env: BACKUP_PASSPHRASE_ENV, confirm: true, what: 'the backup' }) };
          return writeBackup(dir, store, o.out, recipient, 'backup');
        });
        printResult(o, { ok: true, ...r }, `backed up ${r.records} records and ${r.files} files to ${r.file} (${r.bytes} bytes, sha256 ${r.sha256})`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  client
    .command('export')
    .description("write the store's records encrypted to a recipient's X25519 key (for another party); logged in the audit log")
    .requiredOption('--out <file>', 'the export file')
    .requiredOption('--recipient <key>', 'the recipient key (aegis-x25519:…; made with aegis keys recipient)')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { out: string; recipient: string; dataDir: string; json?: boolean }) => {
      try {
        const r = await withStore(o.dataDir, (store, _kek, dir) => writeBackup(dir, store, o.out, { x25519: o.recipient }, 'export'));
        printResult(o, { ok: true, ...r }, `exported ${r.records} records to ${r.file} (${r.bytes} bytes, sha256 ${r.sha256})`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  withKekOptions(
    client
      .command('restore')
      .description('restore a backup (or an export) into a fresh data dir under a new KEK; all or nothing (a dir holding only a contribution ledger keeps it: merged with the backup\'s)')
      .argument('<file>', 'the backup or export file')
      .requiredOption('--data-dir <dir>', 'the fresh data dir to create')
      .option('--identity <file>', 'the recipient identity file, for files encrypted to a recipient key'),
    'for the new data dir: ',
  )
    .option('--json', 'print one JSON object on stdout')
    .action(async (file: string, o: KekCliOptions & { dataDir: string; identity?: string; json?: boolean }) => {
      let key: StreamKey | undefined;
      try {
        const kekOptions = kekInitOptions(o);
        const { recipient } = await readStreamMeta(file);
        if (recipient.type === 'x25519') {
          if (!o.identity) throw new AegisError(ErrorCode.InvalidArgument, `${file} is encrypted to a recipient key: pass --identity FILE`);
          key = { identity: await openRecipientIdentity(o.identity, await obtainPassphrase({ what: `the identity ${o.identity}` })) };
        } else {
          key = { passphrase: await obtainPassphrase({ env: BACKUP_PASSPHRASE_ENV, what: 'the backup' }) };
        }
        const dir = resolve(o.dataDir);
        // Keyfiles of the backed-up dir (its identity key) are sealed again under the new dir's
        // passphrase; the old passphrase is asked (AEGIS_SOURCE_PASSPHRASE or a prompt) only if they differ.
        const sourcePassphrase = (): Promise<string> => obtainPassphrase({ env: SOURCE_PASSPHRASE_ENV, what: 'the backed-up data dir (its identity key)' });
        const r = await restoreBackup(file, key, dir, kekOptions, cliKekSecrets(`the data key in ${dir}`, true), { sourcePassphrase });
        const kept = r.keptLedger ? `; the dir's contribution ledger was kept and is merged with the backup's when the client next opens it` : '';
        printResult(o, { ok: true, ...r }, `restored ${r.records} records${r.files.length ? ` and ${r.files.join(', ')}` : ''} into ${r.dataDir} (KEK ${r.kek.id})${r.resealed.length ? `; re-sealed under the new passphrase: ${r.resealed.join(', ')}` : ''}${kept}`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      } finally {
        if (key && 'identity' in key) key.identity.close();
      }
    });

  const data = client.command('data').description("the client's encrypted local training data");
  data
    .command('import')
    .description('import records from JSON Lines or CSV (.csv, header row); address, lat, lon, transcript are always encrypted')
    .argument('<file>', 'a .jsonl file (one JSON object per line) or a .csv file')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--sensitive <fields>', 'more fields to encrypt, comma-separated')
    .option('--json', 'print one JSON object on stdout')
    .action(async (file: string, o: { dataDir: string; sensitive?: string; json?: boolean }) => {
      try {
        const sensitive = (o.sensitive ?? '')
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s.length > 0);
        const records = await readRecordsFile(file);
        const r = await withStore(o.dataDir, (store) => store.importRecords(records, { sensitive }));
        printResult(o, { ok: true, imported: r.imported, ids: r.ids }, `imported ${r.imported} records`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  data
    .command('list')
    .description('record ids and field names (never values)')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; json?: boolean }) => {
      try {
        const records = await withStore(o.dataDir, (store) => store.list());
        const human = records.map((r) => `${r.id}  ${r.fields.map((f) => (r.sensitive.includes(f) ? `${f}*` : f)).join(', ')}`).join('\n');
        printResult(o, { ok: true, count: records.length, records }, records.length === 0 ? 'no records' : `${human}\n(* encrypted)`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
