/**
 * The client's encrypted local store (DESIGN.md §5 "Data at rest, assume leak"): records in
 * `DATA_DIR/store.db` (SQLite through better-sqlite3), every sensitive field value sealed on its
 * own with `sealField` (one fresh DEK per value, AAD bound to record id, field name and schema
 * version), so a copied `store.db` — or its WAL — holds no address, coordinate or transcript in
 * clear, and a ciphertext moved to another record or field no longer opens.
 *
 * Schema (version 1):
 *   records(id TEXT PRIMARY KEY  -- lowercase UUID v4, the AAD's asset id
 *           created_at TEXT)      -- ISO 8601
 *   fields(record_id, name, schema_version INTEGER, sensitive INTEGER, value BLOB,
 *          kek_version INTEGER, PRIMARY KEY(record_id, name))
 *     sensitive = 1: value = sealField(kek, { record id, name, schema_version }, utf8(JSON)),
 *                    kek_version = the KEK version its DEK is wrapped under (an index for
 *                    rotation; the sealed header is the truth and `references(true)` reads it)
 *     sensitive = 0: value = utf8(JSON), kek_version NULL
 *   meta(key TEXT PRIMARY KEY, value BLOB) -- schema version and a sealed KEK check value
 *
 * Errors name record indexes, field names and line numbers — never a value.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, closeSync, constants as fsc, existsSync, openSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import Database from 'better-sqlite3';
import { utf8 } from '../../shared/bytes.js';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { openField, parseSealedHeader, rewrapField, sealField, type FieldContext, type KekProvider } from '../../shared/keystore/envelope.js';
import type { ManagedKek } from '../../shared/keystore/kek.js';
import type { KeyHolder } from '../../shared/keystore/rotation.js';
import { MemoryDataStore, readJsonlRecords } from '../../shared/store/memory.js';
import type { DataRecord, ExampleFields, LocalDataStore, TrainingExamples } from '../../shared/store/types.js';

/** Bound into every sealed value's AAD; bump it when the encoding of a value changes. */
export const STORE_SCHEMA_VERSION = 1;
export const STORE_FILE = 'store.db';
/** DESIGN.md §5: postal addresses, GPS coordinates and transcripts are always encrypted. */
export const MANDATORY_SENSITIVE_FIELDS: readonly string[] = Object.freeze(['address', 'lat', 'lon', 'transcript']);

/** A fixed context for the KEK check value (no record can use it: record ids are random v4). */
const KEK_CHECK_CTX: FieldContext = { assetUuid: '00000000-0000-4000-8000-000000000000', fieldName: 'aegis-store-kek-check', schemaVersion: STORE_SCHEMA_VERSION };
const KEK_CHECK_PLAINTEXT = 'aegis-store-v1';
const MAX_FIELD_NAME_BYTES = 1024;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fields (
  record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  schema_version INTEGER NOT NULL,
  sensitive INTEGER NOT NULL CHECK (sensitive IN (0, 1)),
  value BLOB NOT NULL,
  kek_version INTEGER,
  PRIMARY KEY (record_id, name)
);`;
const INDEX = 'CREATE INDEX IF NOT EXISTS fields_kek_version ON fields (kek_version) WHERE kek_version IS NOT NULL';

type FieldValue = number | string | number[];

interface FieldRow {
  record_id: string;
  name: string;
  schema_version: number;
  sensitive: number;
  value: Buffer;
}

/** Normalizes one value to what JSON can carry exactly, or throws naming record and field. */
function normalizeValue(index: number, name: string, v: unknown): FieldValue {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) fail(ErrorCode.InvalidArgument, `record ${index}: field '${name}' is not a finite number`);
    return v;
  }
  // Arrays and typed arrays (DataRecord allows ArrayLike<number>) become plain arrays.
  if (typeof v === 'object' && v !== null && (Array.isArray(v) || ArrayBuffer.isView(v))) {
    const arr = Array.from(v as ArrayLike<unknown>);
    if (arr.every((x) => typeof x === 'number' && Number.isFinite(x))) return arr as number[];
  }
  return fail(ErrorCode.InvalidArgument, `record ${index}: field '${name}' must be a string, a finite number or an array of finite numbers`);
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
   * the first read.
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
          put.run('schema', Buffer.from(String(STORE_SCHEMA_VERSION)));
          put.run('kek-check', Buffer.from(sealed));
        })();
      } else {
        if (schema === undefined || check === undefined || Buffer.from(schema.value).toString('utf8') !== String(STORE_SCHEMA_VERSION)) {
          throw new AegisError(ErrorCode.Malformed, `${path} is not an Aegis store of schema version ${STORE_SCHEMA_VERSION}`);
        }
        try {
          await openField(kek, KEK_CHECK_CTX, new Uint8Array(check.value));
        } catch {
          throw new AegisError(ErrorCode.DecryptionFailed, `the KEK ${kek.id} does not open ${path}`);
        }
      }
    } catch (e) {
      db.close();
      throw e;
    }
    return new SqliteDataStore(path, db, kek);
  }

  /**
   * Stores `records` in one transaction: every value is validated and sealed first, then all
   * rows are written or none. `address`, `lat`, `lon`, `transcript` are always sealed; `opts.sensitive`
   * names further fields to seal.
   */
  async importRecords(records: readonly DataRecord[], opts: { sensitive?: readonly string[] } = {}): Promise<{ imported: number; ids: string[] }> {
    const sensitive = new Set(MANDATORY_SENSITIVE_FIELDS);
    for (const s of opts.sensitive ?? []) {
      if (typeof s !== 'string') fail(ErrorCode.InvalidArgument, 'sensitive field names must be strings');
      assertFieldName(s, 'sensitive');
      sensitive.add(s);
    }
    const created = new Date().toISOString();
    const plain: PlainRecord[] = [];
    for (const [index, record] of records.entries()) {
      if (typeof record !== 'object' || record === null || Array.isArray(record)) fail(ErrorCode.InvalidArgument, `record ${index} is not an object`);
      const names = Object.keys(record);
      if (names.length === 0) fail(ErrorCode.InvalidArgument, `record ${index} has no fields`);
      plain.push({
        id: randomUUID(),
        createdAt: created,
        fields: names.map((name) => {
          assertFieldName(name, `record ${index}`);
          return { name, sensitive: sensitive.has(name), value: normalizeValue(index, name, record[name]) };
        }),
      });
    }
    await this.#insert(plain);
    return { imported: plain.length, ids: plain.map((r) => r.id) };
  }

  /**
   * Puts records back as a backup or export carried them: same ids, creation times and
   * sensitivity (mandatory fields are sealed whatever the source says). One transaction; an id
   * already in the store is refused.
   */
  async restoreRecords(records: readonly PlainRecord[]): Promise<number> {
    const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    for (const [index, r] of records.entries()) {
      if (typeof r?.id !== 'string' || !UUID.test(r.id) || typeof r.createdAt !== 'string' || !Array.isArray(r.fields) || r.fields.length === 0) {
        fail(ErrorCode.Malformed, `record ${index} of the backup is malformed`);
      }
      for (const f of r.fields) {
        assertFieldName(f.name, `record ${index}`);
        normalizeValue(index, f.name, f.value);
      }
    }
    await this.#insert(records.map((r) => ({ ...r, fields: r.fields.map((f) => ({ ...f, sensitive: f.sensitive || MANDATORY_SENSITIVE_FIELDS.includes(f.name) })) })));
    return records.length;
  }

  /** Seals every sensitive value first, then writes all rows in one transaction or none. */
  async #insert(records: readonly PlainRecord[]): Promise<void> {
    const rows: { id: string; createdAt: string; fields: { name: string; sensitive: 0 | 1; value: Buffer; kekVersion: number | null }[] }[] = [];
    for (const r of records) {
      const fields: { name: string; sensitive: 0 | 1; value: Buffer; kekVersion: number | null }[] = [];
      for (const f of r.fields) {
        const json = utf8(JSON.stringify(f.value));
        if (f.sensitive) {
          const sealed = await sealField(this.#kek, { assetUuid: r.id, fieldName: f.name, schemaVersion: STORE_SCHEMA_VERSION }, json);
          json.fill(0);
          fields.push({ name: f.name, sensitive: 1, value: Buffer.from(sealed), kekVersion: parseSealedHeader(sealed).kekVersion });
        } else {
          fields.push({ name: f.name, sensitive: 0, value: Buffer.from(json), kekVersion: null });
        }
      }
      rows.push({ id: r.id, createdAt: r.createdAt, fields });
    }
    const putRecord = this.#db.prepare('INSERT INTO records (id, created_at) VALUES (?, ?)');
    const putField = this.#db.prepare('INSERT INTO fields (record_id, name, schema_version, sensitive, value, kek_version) VALUES (?, ?, ?, ?, ?, ?)');
    try {
      this.#db.transaction(() => {
        for (const r of rows) {
          putRecord.run(r.id, r.createdAt);
          for (const f of r.fields) putField.run(r.id, f.name, STORE_SCHEMA_VERSION, f.sensitive, f.value, f.kekVersion);
        }
      })();
    } catch (e) {
      if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') fail(ErrorCode.AlreadyExists, 'a record with the same id is already in the store');
      throw e;
    }
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
      const get = this.#db.prepare<[string], FieldRow>('SELECT record_id, name, schema_version, sensitive, value FROM fields WHERE record_id = ? ORDER BY name');
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
    const rows = this.#db
      .prepare<[number, number], FieldRow>('SELECT record_id, name, schema_version, sensitive, value FROM fields WHERE sensitive = 1 AND kek_version IS NOT ? LIMIT ?')
      .all(target, Math.max(0, limit - moved));
    const updates: { row: FieldRow; value: Buffer }[] = [];
    for (const row of rows) {
      updates.push({ row, value: await move({ assetUuid: row.record_id, fieldName: row.name, schemaVersion: row.schema_version }, new Uint8Array(row.value)) });
    }
    // Compare-and-set on the old value: a row changed meanwhile is left for the next batch.
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

  async count(): Promise<number> {
    return this.#db.prepare<[], { n: number }>('SELECT count(*) AS n FROM records').get()?.n ?? 0;
  }

  /**
   * Decrypts the two fields of every record (in import order) and packs them exactly like
   * MemoryDataStore, with its validation and errors (record indexes are import positions).
   */
  async trainingExamples(fields: ExampleFields): Promise<TrainingExamples> {
    const ids = this.#db.prepare<[], { id: string }>('SELECT id FROM records ORDER BY rowid').all();
    const rows = this.#db
      .prepare<[string, string], FieldRow>('SELECT record_id, name, schema_version, sensitive, value FROM fields WHERE name IN (?, ?)')
      .all(fields.features, fields.label);
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

  /** One stored value back to JSON; a mandatory-sensitive field stored in clear is refused (tampering). */
  async #decode(index: number, f: FieldRow): Promise<FieldValue> {
    let bytes: Uint8Array;
    if (f.sensitive === 1) {
      bytes = await openField(this.#kek, { assetUuid: f.record_id, fieldName: f.name, schemaVersion: f.schema_version }, new Uint8Array(f.value));
    } else {
      if (MANDATORY_SENSITIVE_FIELDS.includes(f.name)) fail(ErrorCode.Malformed, `record ${index}: field '${f.name}' must be sealed but is stored in clear`);
      bytes = new Uint8Array(f.value);
    }
    try {
      return normalizeValue(index, f.name, JSON.parse(Buffer.from(bytes).toString('utf8')));
    } catch {
      return fail(ErrorCode.Malformed, `record ${index}: field '${f.name}' does not hold a valid value`);
    } finally {
      if (f.sensitive === 1) bytes.fill(0);
    }
  }
}

/** A cell: a finite number, a JSON array of numbers (starting with '['), else the string. */
function csvCell(line: number, column: string, raw: string): FieldValue {
  const t = raw.trim();
  if (t.startsWith('[')) {
    let v: unknown;
    try {
      v = JSON.parse(t);
    } catch {
      v = undefined;
    }
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      fail(ErrorCode.InvalidArgument, `line ${line}, column '${column}': not a JSON array of numbers`);
    }
    return v as number[];
  }
  if (t !== '' && Number.isFinite(Number(t))) return Number(t);
  return raw;
}

/**
 * Splits CSV text (RFC 4180: quoted fields may hold commas, newlines and doubled quotes) into
 * rows, each with the 1-based line it starts on.
 */
function csvRows(text: string): { line: number; cells: string[] }[] {
  const rows: { line: number; cells: string[] }[] = [];
  let cells: string[] = [];
  let cell = '';
  let line = 1;
  let start = 1;
  let i = 0;
  let quoted = false; // the current cell began with a quote (and it is closed)
  const endRow = (): void => {
    cells.push(cell);
    if (!(cells.length === 1 && cells[0] === '' && !quoted)) rows.push({ line: start, cells });
    cells = [];
    cell = '';
    quoted = false;
  };
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"' && cell === '' && !quoted) {
      // A quoted cell: read to the closing quote.
      i++;
      for (;;) {
        if (i >= text.length) fail(ErrorCode.InvalidArgument, `line ${start}: unterminated quoted field`);
        const q = text[i]!;
        if (q === '"') {
          if (text[i + 1] === '"') {
            cell += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        if (q === '\n') line++;
        cell += q;
        i++;
      }
      quoted = true;
      const next = text[i];
      if (next !== undefined && next !== ',' && next !== '\n' && next !== '\r') fail(ErrorCode.InvalidArgument, `line ${line}: text after a closing quote`);
      continue;
    }
    if (c === ',') {
      cells.push(cell);
      cell = '';
      quoted = false;
      i++;
    } else if (c === '\r' || c === '\n') {
      endRow();
      i += c === '\r' && text[i + 1] === '\n' ? 2 : 1;
      line++;
      start = line;
    } else {
      if (c === '"' || quoted) fail(ErrorCode.InvalidArgument, `line ${line}: a quote inside an unquoted field`);
      cell += c;
      i++;
    }
  }
  if (cell !== '' || cells.length > 0 || quoted) endRow();
  return rows;
}

/** Parses a CSV file's text: a header row, then records; an empty cell leaves the field out. */
export function parseCsvRecords(text: string): DataRecord[] {
  const rows = csvRows(text.startsWith('\uFEFF') ? text.slice(1) : text);
  const header = rows.shift();
  if (header === undefined) fail(ErrorCode.InvalidArgument, 'the CSV file has no header row');
  const names = header.cells.map((c) => c.trim());
  const seen = new Set<string>();
  for (const n of names) {
    if (n === '') fail(ErrorCode.InvalidArgument, `line ${header.line}: an empty column name`);
    if (seen.has(n)) fail(ErrorCode.InvalidArgument, `line ${header.line}: column '${n}' appears twice`);
    seen.add(n);
  }
  return rows.map(({ line, cells }) => {
    if (cells.length !== names.length) fail(ErrorCode.InvalidArgument, `line ${line} has ${cells.length} fields, the header has ${names.length}`);
    const rec: Record<string, FieldValue> = {};
    cells.forEach((raw, j) => {
      const name = names[j]!;
      if (raw !== '') rec[name] = csvCell(line, name, raw);
    });
    return rec;
  });
}

/** Reads records from JSON Lines (one object per line) or, for a `.csv` name, CSV with a header. */
export async function readRecordsFile(path: string): Promise<DataRecord[]> {
  if (extname(path).toLowerCase() !== '.csv') return readJsonlRecords(path);
  const text = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new AegisError(ErrorCode.NotFound, `no such file: ${path}`);
    throw e;
  });
  return parseCsvRecords(text);
}
