/**
 * `aegis client init` and `aegis client data import|list`: the client's encrypted local store
 * (DESIGN.md §5). Output never carries a stored value — only ids, field names and counts.
 */
import { constants as fsc } from 'node:fs';
import { access, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { reportError, printResult } from '../../shared/cli/output.js';
import { obtainPassphrase } from '../../shared/cli/passphrase.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { SqliteDataStore, readRecordsFile } from './sqlite.js';

const DEFAULT_DIR = process.env.AEGIS_CLIENT_DIR ?? './aegis-client';
export const KEK_FILE = 'kek.keyfile.json';

const exists = (path: string): Promise<boolean> =>
  access(path, fsc.F_OK).then(
    () => true,
    () => false,
  );


/** Opens the data dir's KEK and store, runs `fn`, and closes both whatever happens. */
async function withStore<T>(dataDir: string, fn: (store: SqliteDataStore) => Promise<T>): Promise<T> {
  const dir = resolve(dataDir);
  const kekPath = join(dir, KEK_FILE);
  if (!(await exists(kekPath))) throw new AegisError(ErrorCode.NotFound, `no KEK keyfile in ${dir}; run: aegis client init --data-dir ${dir}`);
  const kek = await PassphraseKek.open(kekPath, await obtainPassphrase({ what: `the data key in ${dir}` }));
  try {
    const store = await SqliteDataStore.open(dir, kek);
    try {
      return await fn(store);
    } finally {
      store.close();
    }
  } finally {
    kek.close();
  }
}

/** Adds `init` and `data import|list` to the `aegis client` group. */
export function registerData(client: Command): void {
  client
    .command('init')
    .description('create the data dir, its passphrase-sealed KEK and the encrypted local store')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--kek <provider>', 'the KEK provider: passphrase (os and pkcs11 are not in this build yet)', 'passphrase')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; kek: string; json?: boolean }) => {
      try {
        if (o.kek === 'os' || o.kek === 'pkcs11') {
          throw new AegisError(ErrorCode.Unavailable, `the '${o.kek}' KEK provider is not available in this build yet; only --kek passphrase is`);
        }
        if (o.kek !== 'passphrase') throw new AegisError(ErrorCode.InvalidArgument, `--kek must be passphrase, os or pkcs11`);
        const dir = resolve(o.dataDir);
        const kekPath = join(dir, KEK_FILE);
        // Checked before the prompt; PassphraseKek.create refuses a race with O_EXCL anyway.
        if (await exists(kekPath)) throw new AegisError(ErrorCode.AlreadyExists, `${kekPath} already exists; the store it protects would become unreadable if it were replaced`);
        await mkdir(dir, { recursive: true, mode: 0o700 });
        const passphrase = await obtainPassphrase({ confirm: true, what: `the data key in ${dir}` });
        const kek = await PassphraseKek.create(kekPath, passphrase);
        try {
          (await SqliteDataStore.open(dir, kek)).close();
        } finally {
          kek.close();
        }
        printResult(o, { ok: true, data_dir: dir, kek: { kind: kek.kind, id: kek.id, file: kekPath } }, `initialized ${dir}; import data: aegis client data import FILE --data-dir ${dir}`);
      } catch (err) {
        reportError(err, Boolean(o.json));
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
