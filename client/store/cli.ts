/**
 * `aegis client init` and `aegis client data import|list`: the client's encrypted local store
 * (DESIGN.md §5). Output never carries a stored value — only ids, field names and counts.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { assertFileExists } from '../../shared/cli/files.js';
import { reportError, printResult } from '../../shared/cli/output.js';
import { BACKUP_PASSPHRASE_ENV, cliKekSecrets, obtainPassphrase, SOURCE_PASSPHRASE_ENV } from '../../shared/cli/passphrase.js';
import { openRecipientIdentity, readStreamMeta, type StreamKey, type StreamRecipient } from '../../shared/keystore/stream.js';
import { restoreBackup, writeBackup } from './backup.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ManagedKek } from '../../shared/keystore/kek.js';
import { hasKek, initKek, openKek } from '../../shared/keystore/kek-config.js';
import { kekInitOptions, resumePendingRotation, withKekOptions, type HolderOpener, type KekCliOptions } from '../../shared/keystore/keys-cli.js';
import { AuditBook } from '../audit/audit.js';
import { csvCell } from './csv.js';
import { fieldList, mandatoryClass, normaliseFieldName, planSchemaChange, type SchemaChange } from './schema.js';
import { SqliteDataStore, STORE_FILE, readRecordsFileLines } from './sqlite.js';

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

/** Each stored or declared field with its class and why: declared, default (sealed), or its mandatory class. */
export function schemaView(store: SqliteDataStore): { version: number; fields: { field: string; class: 'plain' | 'sealed'; why: string }[] } {
  const schema = store.schema();
  const names = new Set([...schema.fields.keys(), ...store.fieldNames().map(normaliseFieldName)]);
  const fields = [...names].sort().map((field) => {
    const m = mandatoryClass(field);
    if (m !== undefined) return { field, class: 'sealed' as const, why: `always (${m})` };
    const d = schema.fields.get(field);
    return d === undefined ? { field, class: 'sealed' as const, why: 'default' } : { field, class: d, why: 'declared' };
  });
  return { version: schema.version, fields };
}

function schemaText(v: ReturnType<typeof schemaView>): string {
  const rows = v.fields.map((f) => `  ${f.field}  ${f.class}  (${f.why})`);
  return [`field schema version ${v.version} (every field not declared plain is sealed)`, ...(rows.length ? rows : ['  (no fields yet)'])].join('\n');
}

/** Changes the store's field schema and, when anything changed, records it in the audit log. */
async function changeSchemaAudited(store: SqliteDataStore, dir: string, want: { plain: string[]; sealed: string[] }): Promise<{ version: number; changes: SchemaChange[]; resealed: number }> {
  const r = await store.changeSchema(want);
  if (r.changes.length > 0) await (await AuditBook.open(dir)).schemaEvent({ schemaVersion: r.version, changes: r.changes });
  return r;
}

/** Adds `init` and `data import|list|schema|update` to the `aegis client` group. */
export function registerData(client: Command): void {
  withKekOptions(
    client
      .command('init')
      .description('create the data dir, its KEK (passphrase keyfile, OS keyring or PKCS#11 token) and the encrypted local store')
      .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR),
  )
    .option('--plain <fields>', 'fields to store in clear, comma-separated (every other field is encrypted; addresses, coordinates and transcripts always are)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: KekCliOptions & { dataDir: string; plain?: string; json?: boolean }) => {
      try {
        const dir = resolve(o.dataDir);
        const plain = fieldList(o.plain);
        // Refused names (a mandatory class) are refused before anything is created.
        planSchemaChange({ version: 1, fields: new Map() }, { plain });
        const kek = await initKek(dir, kekInitOptions(o), cliKekSecrets(`the data key in ${dir}`, true));
        let version = 1;
        try {
          const store = await SqliteDataStore.open(dir, kek);
          try {
            if (plain.length > 0) version = (await changeSchemaAudited(store, dir, { plain, sealed: [] })).version;
          } finally {
            store.close();
          }
        } finally {
          await kek.close();
        }
        const declared = plain.length ? `; stored in clear: ${plain.map(normaliseFieldName).join(', ')}` : '';
        printResult(
          o,
          { ok: true, data_dir: dir, kek: { kind: kek.kind, id: kek.id }, schema: { version, plain: plain.map(normaliseFieldName) } },
          `initialized ${dir} (KEK ${kek.id})${declared}; import data: aegis client data import FILE --data-dir ${dir}`,
        );
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
        await assertFileExists(file, '<file>');
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
    .description('import records from JSON Lines or CSV (.csv, header row); every field is encrypted unless the field schema declares it plain (aegis client data schema)')
    .argument('<file>', 'a .jsonl file (one JSON object per line) or a .csv file')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--sensitive <fields>', 'fields to encrypt in this import even if declared plain, comma-separated')
    .option('--json', 'print one JSON object on stdout')
    .action(async (file: string, o: { dataDir: string; sensitive?: string; json?: boolean }) => {
      try {
        const sensitive = fieldList(o.sensitive);
        // Read and parsed before the store is opened; a record the store refuses is named by its line.
        const { records, lines } = await readRecordsFileLines(file);
        const r = await withStore(o.dataDir, (store) => store.importRecords(records, { sensitive, where: (i) => `${file} line ${lines[i] ?? i + 1}` }));
        printResult(o, { ok: true, imported: r.imported, ids: r.ids }, `imported ${r.imported} records`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  data
    .command('list')
    .description('the field schema, then record ids and field names (never values)')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; json?: boolean }) => {
      try {
        const { records, schema } = await withStore(o.dataDir, async (store) => ({ records: await store.list(), schema: schemaView(store) }));
        const human = records.map((r) => `${r.id}  ${r.fields.map((f) => (r.sensitive.includes(f) ? `${f}*` : f)).join(', ')}`).join('\n');
        printResult(o, { ok: true, schema, count: records.length, records }, `${schemaText(schema)}\n${records.length === 0 ? 'no records' : `${human}\n(* encrypted)`}`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  data
    .command('schema')
    .description('show the field schema, or declare fields plain (stored in clear by later imports) or sealed (also seals the values stored in clear); changes are logged in the audit log')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--plain <fields>', 'fields to store in clear from now on, comma-separated (refused for addresses, coordinates and transcripts)')
    .option('--sealed <fields>', 'fields to encrypt from now on, comma-separated; their values stored in clear are sealed now')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; plain?: string; sealed?: string; json?: boolean }) => {
      try {
        const want = { plain: fieldList(o.plain), sealed: fieldList(o.sealed) };
        const r = await withStore(o.dataDir, async (store, _kek, dir) => {
          const changed = want.plain.length + want.sealed.length > 0 ? await changeSchemaAudited(store, dir, want) : undefined;
          return { changed, schema: schemaView(store) };
        });
        const head = r.changed === undefined ? '' : r.changed.changes.length === 0 ? 'no change\n' : `${r.changed.changes.map((c) => `${c.field}: ${c.from} -> ${c.to}`).join('\n')}\n${r.changed.resealed} values sealed\n`;
        printResult(o, { ok: true, ...(r.changed ? { changes: r.changed.changes, resealed: r.changed.resealed } : {}), schema: r.schema }, `${head}${schemaText(r.schema)}`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  data
    .command('update')
    .description("write new values into a record (sealed unless declared plain); bumps the record's version, so its older ciphertexts no longer open")
    .argument('<id>', 'the record id (aegis client data list)')
    .requiredOption('--set <field=value>', 'a field and its value (a number, a JSON array of numbers, else a string); repeatable', (v: string, prev: string[] | undefined) => {
      if (v.indexOf('=') <= 0) throw new InvalidArgumentError('--set takes field=value');
      return [...(prev ?? []), v];
    })
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--json', 'print one JSON object on stdout')
    .action(async (id: string, o: { set: string[]; dataDir: string; json?: boolean }) => {
      try {
        const values: Record<string, unknown> = {};
        for (const kv of o.set) {
          const eq = kv.indexOf('=');
          if (eq <= 0) throw new AegisError(ErrorCode.InvalidArgument, '--set takes field=value');
          const name = kv.slice(0, eq).trim();
          try {
            values[name] = csvCell(0, name, kv.slice(eq + 1));
          } catch {
            throw new AegisError(ErrorCode.InvalidArgument, `--set ${name}: a value starting with '[' must be a JSON array of numbers`);
          }
        }
        const r = await withStore(o.dataDir, (store) => store.updateFields(id, values));
        printResult(o, { ok: true, ...r }, `updated ${r.fields.join(', ')} of ${r.id} (record version ${r.version})`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
