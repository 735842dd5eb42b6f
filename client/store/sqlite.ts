/**
 * The client's encrypted local store (DESIGN.md §5 "Data at rest, assume leak"): records in
 * `DATA_DIR/store.db` (SQLite through better-sqlite3), every field value sealed on its own with
 * `sealField` (one fresh DEK per value, AAD bound to record id, field name, schema version and
 * record version) unless the data dir's field schema (schema.ts) declares the field plain —
 * default deny — so a copied `store.db` — or its WAL — holds no address, coordinate or
 * transcript in clear, a ciphertext moved to another record or field no longer opens, and a
 * stale ciphertext copied back over a newer one of the same record fails too.
 *
 * Layout (version 2; meta 'schema'):
 *   records(id TEXT PRIMARY KEY  -- lowercase UUID v4, the AAD's asset id
 *           created_at TEXT,      -- ISO 8601
 *           version INTEGER)      -- the record version: 1 when imported, +1 on every update;
 *                                    0 for records of a layout-1 store never updated since
 *   fields(record_id, name, schema_version INTEGER, sensitive INTEGER, value BLOB,
 *          kek_version INTEGER, PRIMARY KEY(record_id, name))
 *     sensitive = 1: value = sealField(kek, { record id, name, schema_version, record version },
 *                    utf8(JSON)) — format 2; a record of version 0 holds format-1 values (no
 *                    record version in their AAD). kek_version = the KEK version its DEK is
 *                    wrapped under (an index for rotation; the sealed header is the truth and
 *                    `references(true)` reads it)
 *     sensitive = 0: value = utf8(JSON), kek_version NULL
 *   field_schema, meta 'field-schema-version': the field schema (schema.ts)
 *   meta(key TEXT PRIMARY KEY, value BLOB) -- layout version, field schema version, KEK check value
 * `schema_version` in the AAD is the encoding of values (STORE_SCHEMA_VERSION, 1); the field
 * schema's own version counts its changes and is not bound into values.
 *
 * A layout-1 store is migrated when opened: the record version column (0 for its records), an
 * empty field schema in which every field it held in clear is declared plain — except fields of a
 * mandatory class (`home_address`, `GPS`, ...), whose clear values are sealed there and then.
 *
 * Errors name record indexes, field names and line numbers — never a value.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, closeSync, constants as fsc, existsSync, openSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { utf8 } from '../../shared/bytes.js';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { openField, parseSealedHeader, rewrapField, sealField, type FieldContext, type KekProvider } from '../../shared/keystore/envelope.js';
import type { ManagedKek } from '../../shared/keystore/kek.js';
import type { KeyHolder } from '../../shared/keystore/rotation.js';
import { MemoryDataStore } from '../../shared/store/memory.js';
import type { DataRecord, ExampleFields, LocalDataStore, TrainingExamples } from '../../shared/store/types.js';
import { classify, mandatoryClass, normaliseFieldName, planSchemaChange, type FieldClass, type FieldSchema, type SchemaChange } from './schema.js';

/** Bound into every sealed value's AAD; bump it when the encoding of a value changes. */
export const STORE_SCHEMA_VERSION = 1;
/** The layout of store.db (tables and columns); a layout-1 store is migrated when opened. */
export const STORE_LAYOUT_VERSION = 2;
export const STORE_FILE = 'store.db';

/** A fixed context for the KEK check value (no record can use it: record ids are random v4). */
const KEK_CHECK_CTX: FieldContext = { assetUuid: '00000000-0000-4000-8000-000000000000', fieldName: 'aegis-store-kek-check', schemaVersion: STORE_SCHEMA_VERSION };
const KEK_CHECK_PLAINTEXT = 'aegis-store-v1';
const MAX_FIELD_NAME_BYTES = 1024;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS fields (
  record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  schema_version INTEGER NOT NULL,
  sensitive INTEGER NOT NULL CHECK (sensitive IN (0, 1)),
  value BLOB NOT NULL,
  kek_version INTEGER,
  PRIMARY KEY (record_id, name)
);
CREATE TABLE IF NOT EXISTS field_schema (name TEXT PRIMARY KEY, class TEXT NOT NULL CHECK (class IN ('plain', 'sealed')), since INTEGER NOT NULL);`;
const INDEX = 'CREATE INDEX IF NOT EXISTS fields_kek_version ON fields (kek_version) WHERE kek_version IS NOT NULL';
/** A field row with its record's version (what its AAD is bound to). */
const FIELD_COLUMNS = 'f.record_id, f.name, f.schema_version, f.sensitive, f.value, r.version AS record_version FROM fields f JOIN records r ON r.id = f.record_id';

type FieldValue = number | string | number[];

interface FieldRow {
  record_id: string;
  name: string;
  schema_version: number;
  sensitive: number;
  value: Buffer;
  record_version: number;
}

/** A sealed value's context; a version-0 record's values have no record version (format 1). */
function contextOf(recordId: string, name: string, schemaVersion: number, recordVersion: number): FieldContext {
  return { assetUuid: recordId, fieldName: name, schemaVersion, ...(recordVersion > 0 ? { recordVersion } : {}) };
}

/** A field's value prepared for its row. */
interface StoredField {
  name: string;
  sensitive: 0 | 1;
  value: Buffer;
  kekVersion: number | null;
}

/** The field schema as stored. */
function readSchema(db: Database.Database): FieldSchema {
  const v = db.prepare<[], { value: Buffer }>("SELECT value FROM meta WHERE key = 'field-schema-version'").get();
  const version = v === undefined ? 0 : Number(Buffer.from(v.value).toString('utf8'));
  if (!Number.isSafeInteger(version) || version < 1) throw new AegisError(ErrorCode.Malformed, 'the store has no valid field schema version');
  const fields = new Map<string, FieldClass>();
  for (const r of db.prepare<[], { name: string; class: FieldClass }>('SELECT name, class FROM field_schema').all()) fields.set(r.name, r.class);
  return { version, fields };
}

/** Writes `changes` as schema version `version` (inside the caller's transaction). */
function writeSchema(db: Database.Database, version: number, changes: readonly { field: string; to: FieldClass }[]): void {
  const put = db.prepare('INSERT INTO field_schema (name, class, since) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET class = excluded.class, since = excluded.since');
  for (const c of changes) put.run(c.field, c.to, version);
  db.prepare("INSERT INTO meta (key, value) VALUES ('field-schema-version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(Buffer.from(String(version)));
}

/** In a transaction: refuses to go on if the field schema changed since `version` was read. */
function assertSchemaVersion(db: Database.Database, version: number): void {
  if (readSchema(db).version !== version) fail(ErrorCode.FailedPrecondition, 'the field schema changed meanwhile; try again');
}

/** Normalizes one value to what JSON can carry exactly, or throws naming record and field. */
function normalizeValue(where: string, name: string, v: unknown): FieldValue {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) fail(ErrorCode.InvalidArgument, `${where}: field '${name}' is not a finite number`);
    return v;
  }
  // Arrays and typed arrays (DataRecord allows ArrayLike<number>) become plain arrays.
  if (typeof v === 'object' && v !== null && (Array.isArray(v) || ArrayBuffer.isView(v))) {
    const arr = Array.from(v as ArrayLike<unknown>);
    if (arr.every((x) => typeof x === 'number' && Number.isFinite(x))) return arr as number[];
  }
  return fail(ErrorCode.InvalidArgument, `${where}: field '${name}' must be a string, a finite number or an array of finite numbers`);
}

function assertFieldName(name: string, where: string): void {
  const b = utf8(name);
  if (name.length === 0 || b.length > MAX_FIELD_NAME_BYTES || Buffer.from(b).toString('utf8') !== name || /\p{Cc}/u.test(name)) {
    fail(ErrorCode.InvalidArgument, `${where}: field names must be 1..${MAX_FIELD_NAME_BYTES} bytes of printable UTF-8`);
  }
}

/** Creates `path` with mode 0600 before SQLite does (SQLite would use the umask), and tightens an existing one. */
function ensurePrivateFile(path: string): void {
  closeSync(openSync(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600));
  chmodSync(path, 0o600);
}

/** One record with its values in clear, as backups and exports carry it (never written to disk in clear). */
export interface PlainRecord {
  id: string;
  createdAt: string;
  fields: { name: string; sensitive: boolean; value: FieldValue }[];
}

export class SqliteDataStore implements LocalDataStore, KeyHolder {
  readonly name = 'store';
  readonly path: string;
  readonly #db: Database.Database;
  readonly #kek: KekProvider;

  private constructor(path: string, db: Database.Database, kek: KekProvider) {
    this.path = path;
    this.#db = db;
    this.#kek = kek;
  }

  /**
   * Opens (or creates) `dataDir/store.db`. A new store records a value sealed under `kek`; an
   * existing one must open it, so a wrong KEK fails here (`decryption-failed`) rather than at
   * the first read. A layout-1 store is migrated (see the header).
   */
  static async open(dataDir: string, kek: KekProvider): Promise<SqliteDataStore> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const path = join(dataDir, STORE_FILE);
    ensurePrivateFile(path);
    const db = new Database(path);
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('foreign_keys = ON');
      // Freed pages are zeroed: deleted rows do not linger in the file.
      db.pragma('secure_delete = ON');
      db.exec(SCHEMA);
      // Stores made before the kek_version index: add it and fill it from the sealed headers.
      if (!(db.pragma('table_info(fields)') as { name: string }[]).some((c) => c.name === 'kek_version')) {
        db.exec('ALTER TABLE fields ADD COLUMN kek_version INTEGER');
        const rows = db.prepare<[], { record_id: string; name: string; value: Buffer }>('SELECT record_id, name, value FROM fields WHERE sensitive = 1').all();
        const set = db.prepare('UPDATE fields SET kek_version = ? WHERE record_id = ? AND name = ?');
        db.transaction(() => {
          for (const r of rows) set.run(parseSealedHeader(new Uint8Array(r.value)).kekVersion, r.record_id, r.name);
        })();
      }
      // Layout-1 stores: their records are version 0 (values sealed without a record version).
      if (!(db.pragma('table_info(records)') as { name: string }[]).some((c) => c.name === 'version')) db.exec('ALTER TABLE records ADD COLUMN version INTEGER NOT NULL DEFAULT 0');
      db.exec(INDEX);
      // SQLite gives -wal/-shm the database's mode; tighten them anyway in case they pre-existed.
      for (const s of ['-wal', '-shm']) if (existsSync(path + s)) chmodSync(path + s, 0o600);
      const meta = db.prepare<[string], { value: Buffer }>('SELECT value FROM meta WHERE key = ?');
      const schema = meta.get('schema');
      const check = meta.get('kek-check');
      if (schema === undefined && check === undefined) {
        const sealed = await sealField(kek, KEK_CHECK_CTX, utf8(KEK_CHECK_PLAINTEXT));
        const put = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)');
        db.transaction(() => {
          put.run('schema', Buffer.from(String(STORE_LAYOUT_VERSION)));
          put.run('kek-check', Buffer.from(sealed));
          writeSchema(db, 1, []);
        })();
      } else {
        const layout = schema === undefined ? undefined : Buffer.from(schema.value).toString('utf8');
        if (check === undefined || (layout !== '1' && layout !== String(STORE_LAYOUT_VERSION))) {
          throw new AegisError(ErrorCode.Malformed, `${path} is not an Aegis store of layout version 1 or ${STORE_LAYOUT_VERSION}`);
        }
        try {
          await openField(kek, KEK_CHECK_CTX, new Uint8Array(check.value));
        } catch {
          throw new AegisError(ErrorCode.DecryptionFailed, `the KEK ${kek.id} does not open ${path}`);
        }
        if (layout === '1') await migrateLayout1(db, kek);
      }
    } catch (e) {
      db.close();
      throw e;
    }
    return new SqliteDataStore(path, db, kek);
  }

  /**
   * Stores `records` in one transaction: every value is validated and sealed first, then all
   * rows are written or none. A field is sealed unless the field schema declares it plain
   * (default deny; mandatory classes always); `opts.sensitive` names further fields to seal in
   * this import (redundant under default deny; it can only add sealed fields).
   */
  async importRecords(records: readonly DataRecord[], opts: { sensitive?: readonly string[]; where?: (index: number) => string } = {}): Promise<{ imported: number; ids: string[] }> {
    const where = opts.where ?? ((index: number): string => `record ${index}`);
    const schema = readSchema(this.#db);
    const extra = new Set<string>();
    for (const s of opts.sensitive ?? []) {
      if (typeof s !== 'string') fail(ErrorCode.InvalidArgument, 'sensitive field names must be strings');
      assertFieldName(s, 'sensitive');
      extra.add(normaliseFieldName(s));
    }
    const created = new Date().toISOString();
    const plain: PlainRecord[] = [];
    for (const [index, record] of records.entries()) {
      if (typeof record !== 'object' || record === null || Array.isArray(record)) fail(ErrorCode.InvalidArgument, `${where(index)} is not an object`);
      const names = Object.keys(record);
      if (names.length === 0) fail(ErrorCode.InvalidArgument, `${where(index)} has no fields`);
      plain.push({
        id: randomUUID(),
        createdAt: created,
        fields: names.map((name) => {
          assertFieldName(name, where(index));
          const sensitive = classify(schema, name) === 'sealed' || extra.has(normaliseFieldName(name));
          return { name, sensitive, value: normalizeValue(where(index), name, record[name]) };
        }),
      });
    }
    await this.#insert(plain, schema.version);
    return { imported: plain.length, ids: plain.map((r) => r.id) };
  }

  /**
   * Puts records back as a backup or export carried them: same ids, creation times and
   * sensitivity — but a mandatory-class field, or one the field schema declares sealed, is sealed
   * whatever the source says, and a field the source held in clear is declared plain in the
   * schema (so later imports keep it so). One transaction; an id already in the store is refused.
   */
  async restoreRecords(records: readonly PlainRecord[]): Promise<number> {
    const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    for (const [index, r] of records.entries()) {
      if (typeof r?.id !== 'string' || !UUID.test(r.id) || typeof r.createdAt !== 'string' || !Array.isArray(r.fields) || r.fields.length === 0) {
        fail(ErrorCode.Malformed, `record ${index} of the backup is malformed`);
      }
      for (const f of r.fields) {
        assertFieldName(f.name, `record ${index}`);
        normalizeValue(`record ${index}`, f.name, f.value);
      }
    }
    const schema = readSchema(this.#db);
    const declare = new Map<string, FieldClass>();
    const restored = records.map((r) => ({
      ...r,
      fields: r.fields.map((f) => {
        const n = normaliseFieldName(f.name);
        const sensitive = f.sensitive === true || mandatoryClass(f.name) !== undefined || schema.fields.get(n) === 'sealed';
        if (!sensitive && schema.fields.get(n) !== 'plain') declare.set(n, 'plain');
        return { ...f, sensitive };
      }),
    }));
    const changes = [...declare].map(([field, to]) => ({ field, to }));
    await this.#insert(restored, schema.version, changes.length > 0 ? () => writeSchema(this.#db, schema.version + 1, changes) : undefined);
    return records.length;
  }

  /** Seals or encodes one value for a record of version `recordVersion`. */
  async #store(recordId: string, recordVersion: number, name: string, sensitive: boolean, value: FieldValue): Promise<StoredField> {
    const json = utf8(JSON.stringify(value));
    if (!sensitive) return { name, sensitive: 0, value: Buffer.from(json), kekVersion: null };
    const sealed = await sealField(this.#kek, contextOf(recordId, name, STORE_SCHEMA_VERSION, recordVersion), json);
    json.fill(0);
    return { name, sensitive: 1, value: Buffer.from(sealed), kekVersion: parseSealedHeader(sealed).kekVersion };
  }

  /**
   * Seals every sensitive value first (records of version 1), then writes all rows in one
   * transaction or none — refused if the field schema is no longer version `schemaVersion`.
   */
  async #insert(records: readonly PlainRecord[], schemaVersion: number, alsoInTransaction?: () => void): Promise<void> {
    const rows: { id: string; createdAt: string; fields: StoredField[] }[] = [];
    for (const r of records) {
      const fields: StoredField[] = [];
      for (const f of r.fields) fields.push(await this.#store(r.id, 1, f.name, f.sensitive, f.value));
      rows.push({ id: r.id, createdAt: r.createdAt, fields });
    }
    const putRecord = this.#db.prepare('INSERT INTO records (id, created_at, version) VALUES (?, ?, 1)');
    const putField = this.#db.prepare('INSERT INTO fields (record_id, name, schema_version, sensitive, value, kek_version) VALUES (?, ?, ?, ?, ?, ?)');
    try {
      this.#db.transaction(() => {
        assertSchemaVersion(this.#db, schemaVersion);
        for (const r of rows) {
          putRecord.run(r.id, r.createdAt);
          for (const f of r.fields) putField.run(r.id, f.name, STORE_SCHEMA_VERSION, f.sensitive, f.value, f.kekVersion);
        }
        alsoInTransaction?.();
      })();
    } catch (e) {
      if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') fail(ErrorCode.AlreadyExists, 'a record with the same id is already in the store');
      throw e;
    }
  }

  /**
   * Writes `values` into the record `id` (new fields or new values of its fields; each sealed
   * unless the field schema declares it plain) and bumps the record version: every sealed value
   * of the record is sealed again for the new version, so none of its older ciphertexts opens
   * any more. One transaction; a record changed meanwhile is refused (`failed-precondition`).
   */
  async updateFields(id: string, values: Readonly<Record<string, unknown>>): Promise<{ id: string; version: number; fields: string[] }> {
    const rec = this.#db.prepare<[string], { version: number }>('SELECT version FROM records WHERE id = ?').get(String(id));
    if (rec === undefined) fail(ErrorCode.NotFound, `no record ${String(id)} in the store`);
    if (typeof values !== 'object' || values === null || Object.keys(values).length === 0) fail(ErrorCode.InvalidArgument, 'give at least one field to update');
    const schema = readSchema(this.#db);
    const next = rec.version + 1;
    const out: StoredField[] = [];
    for (const name of Object.keys(values)) {
      assertFieldName(name, 'update');
      out.push(await this.#store(id, next, name, classify(schema, name) === 'sealed', normalizeValue(`record ${id}`, name, values[name])));
    }
    const current = this.#db.prepare<[string], FieldRow>(`SELECT ${FIELD_COLUMNS} WHERE f.record_id = ? AND f.sensitive = 1`).all(id);
    for (const f of current) {
      if (Object.hasOwn(values, f.name)) continue;
      const plain = await openField(this.#kek, contextOf(id, f.name, f.schema_version, f.record_version), new Uint8Array(f.value));
      try {
        const sealed = await sealField(this.#kek, contextOf(id, f.name, STORE_SCHEMA_VERSION, next), plain);
        out.push({ name: f.name, sensitive: 1, value: Buffer.from(sealed), kekVersion: parseSealedHeader(sealed).kekVersion });
      } finally {
        plain.fill(0);
      }
    }
    const put = this.#db.prepare(
      `INSERT INTO fields (record_id, name, schema_version, sensitive, value, kek_version) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT(record_id, name) DO UPDATE SET schema_version = excluded.schema_version, sensitive = excluded.sensitive, value = excluded.value, kek_version = excluded.kek_version`,
    );
    this.#db.transaction(() => {
      if (this.#db.prepare('UPDATE records SET version = ? WHERE id = ? AND version = ?').run(next, id, rec.version).changes !== 1) fail(ErrorCode.FailedPrecondition, `record ${id} changed meanwhile; try again`);
      assertSchemaVersion(this.#db, schema.version);
      for (const f of out) put.run(id, f.name, STORE_SCHEMA_VERSION, f.sensitive, f.value, f.kekVersion);
    })();
    return { id, version: next, fields: Object.keys(values) };
  }

  /** The field schema: its version and every declared field with its class. */
  schema(): FieldSchema {
    return readSchema(this.#db);
  }

  /**
   * Declares fields plain or sealed (schema.ts `planSchemaChange`: a mandatory-class field asked
   * to be plain is refused and nothing changes) and bumps the schema version. Plain only affects
   * later writes (sealed values stay sealed); sealed also seals the values the store holds in
   * clear for those fields, in the same transaction.
   */
  async changeSchema(want: { plain?: readonly string[]; sealed?: readonly string[] }): Promise<{ version: number; changes: SchemaChange[]; resealed: number }> {
    const schema = readSchema(this.#db);
    const changes = planSchemaChange(schema, want);
    if (changes.length === 0) return { version: schema.version, changes, resealed: 0 };
    const sealing = new Set(changes.filter((c) => c.to === 'sealed').map((c) => c.field));
    const rows = sealing.size === 0 ? [] : this.#db.prepare<[], FieldRow>(`SELECT ${FIELD_COLUMNS} WHERE f.sensitive = 0`).all().filter((f) => sealing.has(normaliseFieldName(f.name)));
    const sealed: { row: FieldRow; value: StoredField }[] = [];
    for (const row of rows) {
      const value = JSON.parse(Buffer.from(row.value).toString('utf8')) as FieldValue;
      sealed.push({ row, value: await this.#store(row.record_id, row.record_version, row.name, true, value) });
    }
    const set = this.#db.prepare('UPDATE fields SET sensitive = 1, schema_version = ?, value = ?, kek_version = ? WHERE record_id = ? AND name = ? AND sensitive = 0 AND value = ?');
    this.#db.transaction(() => {
      assertSchemaVersion(this.#db, schema.version);
      for (const { row, value } of sealed) {
        if (set.run(STORE_SCHEMA_VERSION, value.value, value.kekVersion, row.record_id, row.name, row.value).changes !== 1) fail(ErrorCode.FailedPrecondition, 'a value changed meanwhile; try again');
      }
      writeSchema(this.#db, schema.version + 1, changes);
    })();
    return { version: schema.version + 1, changes, resealed: sealed.length };
  }

  /**
   * Every record with its values opened, in import order, a page at a time (for backups and
   * exports, which encrypt them again at once; nothing here writes them anywhere).
   */
  async *plainRecords(pageSize = 500): AsyncGenerator<PlainRecord> {
    let after = 0;
    for (;;) {
      const page = this.#db
        .prepare<[number, number], { rowid: number; id: string; created_at: string }>('SELECT rowid, id, created_at FROM records WHERE rowid > ? ORDER BY rowid LIMIT ?')
        .all(after, pageSize);
      if (page.length === 0) return;
      const get = this.#db.prepare<[string], FieldRow>(`SELECT ${FIELD_COLUMNS} WHERE f.record_id = ? ORDER BY f.name`);
      for (const [i, r] of page.entries()) {
        const fields: PlainRecord['fields'] = [];
        for (const f of get.all(r.id)) fields.push({ name: f.name, sensitive: f.sensitive === 1, value: await this.#decode(i, f) });
        yield { id: r.id, createdAt: r.created_at, fields };
      }
      after = page.at(-1)!.rowid;
    }
  }

  // ---- KeyHolder: rotation support (shared/keystore/rotation.ts) ----

  async references(verify = false): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    const add = (v: number, n = 1): void => void out.set(v, (out.get(v) ?? 0) + n);
    if (verify) {
      for (const r of this.#db.prepare<[], { value: Buffer }>('SELECT value FROM fields WHERE sensitive = 1').iterate()) add(parseSealedHeader(new Uint8Array(r.value)).kekVersion);
    } else {
      for (const r of this.#db.prepare<[], { v: number; n: number }>('SELECT kek_version AS v, count(*) AS n FROM fields WHERE sensitive = 1 GROUP BY kek_version').all()) add(r.v, r.n);
    }
    const check = this.#db.prepare<[], { value: Buffer }>("SELECT value FROM meta WHERE key = 'kek-check'").get();
    if (check !== undefined) add(parseSealedHeader(new Uint8Array(check.value)).kekVersion);
    return out;
  }

  /** Moves values to KEK version `target`; an emergency re-seal keeps each value's record version. */
  async rotateSome(kek: ManagedKek, target: number, emergency: boolean, limit: number): Promise<number> {
    const move = async (ctx: FieldContext, sealed: Uint8Array): Promise<Buffer> => {
      if (!emergency) return Buffer.from(await rewrapField(kek, kek, sealed, target));
      const plain = await openField(kek, ctx, sealed);
      try {
        const fresh = await sealField(kek, ctx, plain);
        if (parseSealedHeader(fresh).kekVersion !== target) fail(ErrorCode.FailedPrecondition, `KEK version ${target} is not the primary`);
        return Buffer.from(fresh);
      } finally {
        plain.fill(0);
      }
    };
    let moved = 0;
    const check = this.#db.prepare<[], { value: Buffer }>("SELECT value FROM meta WHERE key = 'kek-check'").get();
    if (check !== undefined && parseSealedHeader(new Uint8Array(check.value)).kekVersion !== target) {
      const next = await move(KEK_CHECK_CTX, new Uint8Array(check.value));
      this.#db.prepare("UPDATE meta SET value = ? WHERE key = 'kek-check' AND value = ?").run(next, check.value);
      moved++;
    }
    const rows = this.#db.prepare<[number, number], FieldRow>(`SELECT ${FIELD_COLUMNS} WHERE f.sensitive = 1 AND f.kek_version IS NOT ? LIMIT ?`).all(target, Math.max(0, limit - moved));
    const updates: { row: FieldRow; value: Buffer }[] = [];
    for (const row of rows) {
      updates.push({ row, value: await move(contextOf(row.record_id, row.name, row.schema_version, row.record_version), new Uint8Array(row.value)) });
    }
    // Compare-and-set on the old value: a row changed meanwhile (an update) is left for the next batch.
    const set = this.#db.prepare('UPDATE fields SET value = ?, kek_version = ? WHERE record_id = ? AND name = ? AND value = ?');
    this.#db.transaction(() => {
      for (const u of updates) moved += set.run(u.value, target, u.row.record_id, u.row.name, u.row.value).changes;
    })();
    return moved;
  }

  /** Record ids and field names (and which are sealed), in import order — never a value. */
  async list(): Promise<{ id: string; fields: string[]; sensitive: string[] }[]> {
    const out = new Map<string, { id: string; fields: string[]; sensitive: string[] }>();
    for (const { id } of this.#db.prepare<[], { id: string }>('SELECT id FROM records ORDER BY rowid').all()) out.set(id, { id, fields: [], sensitive: [] });
    const rows = this.#db.prepare<[], { record_id: string; name: string; sensitive: number }>('SELECT record_id, name, sensitive FROM fields ORDER BY record_id, name').all();
    for (const f of rows) {
      const r = out.get(f.record_id);
      if (r === undefined) continue;
      r.fields.push(f.name);
      if (f.sensitive === 1) r.sensitive.push(f.name);
    }
    return [...out.values()];
  }

  /** The stored field names (as imported), each once, sorted. */
  fieldNames(): string[] {
    return this.#db.prepare<[], { name: string }>('SELECT DISTINCT name FROM fields ORDER BY name').all().map((r) => r.name);
  }

  async count(): Promise<number> {
    return this.#db.prepare<[], { n: number }>('SELECT count(*) AS n FROM records').get()?.n ?? 0;
  }

  /**
   * Decrypts the two fields of every record (in import order) and packs them exactly like
   * MemoryDataStore, with its validation and errors (record indexes are import positions).
   */
  async trainingExamples(fields: ExampleFields): Promise<TrainingExamples> {
    const ids = this.#db.prepare<[], { id: string }>('SELECT id FROM records ORDER BY rowid').all();
    const rows = this.#db.prepare<[string, string], FieldRow>(`SELECT ${FIELD_COLUMNS} WHERE f.name IN (?, ?)`).all(fields.features, fields.label);
    const byRecord = new Map<string, FieldRow[]>();
    for (const r of rows) byRecord.set(r.record_id, [...(byRecord.get(r.record_id) ?? []), r]);
    const records: DataRecord[] = [];
    for (const [index, { id }] of ids.entries()) {
      const rec: Record<string, FieldValue> = {};
      for (const f of byRecord.get(id) ?? []) rec[f.name] = await this.#decode(index, f);
      records.push(rec);
    }
    return new MemoryDataStore(records).trainingExamples(fields);
  }

  /** Closes the database (checkpointing and removing the WAL); the KEK stays the caller's. */
  close(): void {
    if (this.#db.open) this.#db.close();
  }

  /**
   * One stored value back to JSON, opened for its record's version; a value of a mandatory
   * class (schema.ts) stored in clear is refused as tampering, whatever the field schema says.
   */
  async #decode(index: number, f: FieldRow): Promise<FieldValue> {
    let bytes: Uint8Array;
    if (f.sensitive === 1) {
      bytes = await openField(this.#kek, contextOf(f.record_id, f.name, f.schema_version, f.record_version), new Uint8Array(f.value));
    } else {
      const cls = mandatoryClass(f.name);
      if (cls !== undefined) fail(ErrorCode.Malformed, `record ${index}: field '${f.name}' is a ${cls} field and must be sealed, but is stored in clear`);
      bytes = new Uint8Array(f.value);
    }
    try {
      return normalizeValue(`record ${index}`, f.name, JSON.parse(Buffer.from(bytes).toString('utf8')));
    } catch {
      return fail(ErrorCode.Malformed, `record ${index}: field '${f.name}' does not hold a valid value`);
    } finally {
      if (f.sensitive === 1) bytes.fill(0);
    }
  }
}

/**
 * Layout 1 -> 2 (the record version column is already there): an empty field schema in which
 * every field held in clear is declared plain, except mandatory-class fields, whose clear values
 * are sealed now (format 1, as their records are version 0).
 */
async function migrateLayout1(db: Database.Database, kek: KekProvider): Promise<void> {
  const clear = db.prepare<[], FieldRow>(`SELECT ${FIELD_COLUMNS} WHERE f.sensitive = 0`).all();
  const plain = new Map<string, FieldClass>();
  const seal: { row: FieldRow; value: Buffer; kekVersion: number }[] = [];
  for (const row of clear) {
    if (mandatoryClass(row.name) === undefined) {
      plain.set(normaliseFieldName(row.name), 'plain');
      continue;
    }
    const sealed = await sealField(kek, contextOf(row.record_id, row.name, STORE_SCHEMA_VERSION, row.record_version), new Uint8Array(row.value));
    seal.push({ row, value: Buffer.from(sealed), kekVersion: parseSealedHeader(sealed).kekVersion });
  }
  const set = db.prepare('UPDATE fields SET sensitive = 1, schema_version = ?, value = ?, kek_version = ? WHERE record_id = ? AND name = ? AND sensitive = 0 AND value = ?');
  db.transaction(() => {
    const layout = db.prepare<[], { value: Buffer }>("SELECT value FROM meta WHERE key = 'schema'").get();
    if (layout === undefined || Buffer.from(layout.value).toString('utf8') !== '1') return; // another process migrated it
    for (const s of seal) set.run(STORE_SCHEMA_VERSION, s.value, s.kekVersion, s.row.record_id, s.row.name, s.row.value);
    writeSchema(db, 1, [...plain].map(([field, to]) => ({ field, to })));
    db.prepare("UPDATE meta SET value = ? WHERE key = 'schema'").run(Buffer.from(String(STORE_LAYOUT_VERSION)));
  })();
}

export { parseCsvRecords, readRecordsFile, readRecordsFileLines } from './csv.js';
