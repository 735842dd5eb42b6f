/** The encrypted local store: sensitive fields never reach the disk in clear, and packing matches MemoryDataStore. */
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteDataStore, parseCsvRecords, readRecordsFile } from '../../client/store/sqlite.js';
import { isAegisError } from '../../shared/errors.js';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { MemoryDataStore } from '../../shared/store/memory.js';
import type { DataRecord } from '../../shared/store/types.js';
import { codeOfAsync } from '../support/codes.js';

const PASS = 'correct horse battery staple';
const FAST = { N: 2 ** 14, r: 8, p: 1 };
const ADDRESS = '221B Baker Street, London NW1 6XE';
const SENTENCE = 'please remind me to call the cardiologist tomorrow';
const LAT = 51.5237729;
const LON = -0.1585474;
const VISIBLE = 'visible-marker-7d1f';

let dir: string;
let kek: PassphraseKek;
let store: SqliteDataStore | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'aegis-sqlite-'));
  kek = await PassphraseKek.create(join(dir, 'kek.keyfile.json'), PASS, { kdf: FAST });
});
afterEach(async () => {
  store?.close();
  store = undefined;
  kek.close();
  await rm(dir, { recursive: true, force: true });
});

const records: DataRecord[] = [
  { address: ADDRESS, lat: LAT, lon: LON, transcript: SENTENCE, x: [1, 2.5, -3], y: 1, note: VISIBLE, secret: 'declared-secret-value' },
  { address: '1 Infinite Loop', lat: 37.3318, lon: -122.0312, transcript: 'hello', x: [0.1, 0.2, 0.3], y: 0 },
  { x: new Float32Array([4, 5, 6]), y: 2 },
  { note: 'no training fields' },
];

/** All bytes SQLite left on disk for the store (after close: the WAL is checkpointed). */
async function diskBytes(): Promise<Buffer> {
  const parts = [await readFile(join(dir, 'store.db'))];
  for (const s of ['-wal', '-shm']) parts.push(await readFile(join(dir, `store.db${s}`)).catch(() => Buffer.alloc(0)));
  return Buffer.concat(parts);
}

describe('SqliteDataStore', () => {
  it('seals every field not declared plain, lists names only, and packs like MemoryDataStore', async () => {
    store = await SqliteDataStore.open(dir, kek);
    // Default deny: only the declared fields are stored in clear; 'secret' is sealed without being named.
    await store.changeSchema({ plain: ['note', 'x', 'y'] });
    const r = await store.importRecords(records);
    expect(r.imported).toBe(4);
    expect(r.ids.every((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id))).toBe(true);
    expect(await store.count()).toBe(4);

    const listed = await store.list();
    expect(listed.map((l) => l.id)).toEqual(r.ids);
    expect(listed[0]!.fields.sort()).toEqual(['address', 'lat', 'lon', 'note', 'secret', 'transcript', 'x', 'y']);
    expect(listed[0]!.sensitive.sort()).toEqual(['address', 'lat', 'lon', 'secret', 'transcript']);
    const listText = JSON.stringify(listed);
    for (const s of [ADDRESS, SENTENCE, String(LAT), VISIBLE, 'declared-secret-value']) expect(listText).not.toContain(s);

    const fields = { features: 'x', label: 'y' };
    const mine = await store.trainingExamples(fields);
    const ref = await new MemoryDataStore(records).trainingExamples(fields);
    expect(mine.count).toBe(3);
    expect(mine.featureDim).toBe(ref.featureDim);
    expect(Array.from(mine.features)).toEqual(Array.from(ref.features));
    expect(Array.from(mine.labels)).toEqual(Array.from(ref.labels));
    // Sensitive fields decrypt for training too (lat as a label).
    const byLat = await store.trainingExamples({ features: 'x', label: 'lat' });
    const refLat = await new MemoryDataStore(records).trainingExamples({ features: 'x', label: 'lat' });
    expect(Array.from(byLat.labels)).toEqual(Array.from(refLat.labels));

    store.close();
    const disk = await diskBytes();
    for (const s of [ADDRESS, 'Baker Street', SENTENCE, 'cardiologist', String(LAT), '5237729', String(LON), '1585474', 'declared-secret-value', 'Infinite Loop']) {
      expect(disk.includes(s)).toBe(false);
    }
    expect(disk.includes(VISIBLE)).toBe(true);
    expect((await stat(join(dir, 'store.db'))).mode & 0o777).toBe(0o600);
  });

  it('finds no plaintext in the WAL either, while the store is open', async () => {
    store = await SqliteDataStore.open(dir, kek);
    await store.changeSchema({ plain: ['note'] });
    await store.importRecords(records.slice(0, 2));
    expect((await stat(join(dir, 'store.db-wal'))).size).toBeGreaterThan(0);
    const disk = await diskBytes();
    for (const s of [ADDRESS, SENTENCE, String(LAT)]) expect(disk.includes(s)).toBe(false);
    expect(disk.includes(VISIBLE)).toBe(true);
  });

  it('imports a CSV with only address/lat/lon/transcript, quoted commas and doubled quotes', async () => {
    const csv = ['address,lat,lon,transcript', `"${ADDRESS}",${LAT},${LON},"she said ""hi"", then left"`, '"10 Downing St, London",51.5034,-0.1276,short', ''].join('\r\n');
    const file = join(dir, 'places.csv');
    await writeFile(file, csv);
    const recs = await readRecordsFile(file);
    expect(recs).toEqual([
      { address: ADDRESS, lat: LAT, lon: LON, transcript: 'she said "hi", then left' },
      { address: '10 Downing St, London', lat: 51.5034, lon: -0.1276, transcript: 'short' },
    ]);
    store = await SqliteDataStore.open(dir, kek);
    expect((await store.importRecords(recs)).imported).toBe(2);
    const listed = await store.list();
    expect(listed.every((l) => l.sensitive.length === 4 && l.fields.length === 4)).toBe(true);
    store.close();
    const disk = await diskBytes();
    for (const s of [ADDRESS, 'Downing', 'then left', String(LAT), '51.5034']) expect(disk.includes(s)).toBe(false);
  });

  it('parses CSV JSON-array cells as feature vectors and names the line of an error, never a value', async () => {
    expect(parseCsvRecords('x,y\n"[1, 2, 3]",1\n[4],0\n')).toEqual([
      { x: [1, 2, 3], y: 1 },
      { x: [4], y: 0 },
    ]);
    const bad = (text: string): string => {
      try {
        parseCsvRecords(text);
        return 'no error';
      } catch (e) {
        return isAegisError(e) ? e.message : String(e);
      }
    };
    expect(bad('a,b\n1,2\nsecret-value-1\n')).toMatch(/line 3/);
    expect(bad('a,b\n1,2\nsecret-value-1\n')).not.toContain('secret-value-1');
    expect(bad('a,b\n1,"unterminated secret\n')).toMatch(/line 2/);
    expect(bad('x\n"[1, ""secret""]"\n')).toMatch(/line 2, column 'x'/);
    expect(bad('x\n"[1, ""secret""]"\n')).not.toContain('secret');
  });

  it('imports a JSONL file', async () => {
    const file = join(dir, 'data.jsonl');
    await writeFile(file, `${JSON.stringify({ address: ADDRESS, x: [1, 2], y: 1 })}\n\n${JSON.stringify({ x: [3, 4], y: 0 })}\n`);
    store = await SqliteDataStore.open(dir, kek);
    expect((await store.importRecords(await readRecordsFile(file))).imported).toBe(2);
    expect(await store.count()).toBe(2);
  });

  it('imports nothing when one record in the middle is bad', async () => {
    store = await SqliteDataStore.open(dir, kek);
    const code = await codeOfAsync(store.importRecords([{ x: [1], y: 1 }, { x: [1], y: { nested: true } as unknown as number }, { x: [2], y: 0 }]));
    expect(code).toBe('invalid-argument');
    expect(await store.count()).toBe(0);
    // And a file with a bad line in the middle is refused before anything is stored.
    const file = join(dir, 'bad.jsonl');
    await writeFile(file, `${JSON.stringify({ x: [1], y: 1 })}\nnot json\n${JSON.stringify({ x: [2], y: 0 })}\n`);
    await expect(readRecordsFile(file)).rejects.toThrow(/line 2/);
    expect(await store.count()).toBe(0);
  });

  it('refuses a wrong passphrase and a foreign KEK', async () => {
    store = await SqliteDataStore.open(dir, kek);
    await store.importRecords(records.slice(0, 1));
    store.close();
    expect(await codeOfAsync(PassphraseKek.open(join(dir, 'kek.keyfile.json'), 'wrong passphrase, long enough'))).toBe('decryption-failed');
    const other = await PassphraseKek.create(join(dir, 'other.json'), PASS, { kdf: FAST, id: kek.id });
    try {
      expect(await codeOfAsync(SqliteDataStore.open(dir, other))).toBe('decryption-failed');
    } finally {
      other.close();
    }
    const again = await PassphraseKek.open(join(dir, 'kek.keyfile.json'), PASS);
    try {
      const s = await SqliteDataStore.open(dir, again);
      expect(await s.count()).toBe(1);
      s.close();
    } finally {
      again.close();
    }
  });

  it('fails with decryption-failed when a sealed value is moved to another record', async () => {
    store = await SqliteDataStore.open(dir, kek);
    const { ids } = await store.importRecords(records.slice(0, 2));
    store.close();
    store = undefined;
    const db = new Database(join(dir, 'store.db'));
    db.prepare("UPDATE fields SET value = (SELECT value FROM fields WHERE record_id = ? AND name = 'lat') WHERE record_id = ? AND name = 'lat'").run(ids[0], ids[1]);
    db.close();
    store = await SqliteDataStore.open(dir, kek);
    expect(await codeOfAsync(store.trainingExamples({ features: 'x', label: 'lat' }))).toBe('decryption-failed');
    // A mandatory field flipped to cleartext is refused too.
    store.close();
    const db2 = new Database(join(dir, 'store.db'));
    db2.prepare("UPDATE fields SET sensitive = 0, value = ? WHERE record_id = ? AND name = 'lon'").run(Buffer.from('1'), ids[0]);
    db2.close();
    store = await SqliteDataStore.open(dir, kek);
    expect(await codeOfAsync(store.trainingExamples({ features: 'x', label: 'lon' }))).toBe('malformed');
  });
});

describe('aegis client init / data import / data list', () => {
  it('initializes, imports and lists without printing values', async () => {
    const { Command } = await import('commander');
    const { registerData } = await import('../../client/store/cli.js');
    const { jest } = await import('@jest/globals');
    const data = join(dir, 'cli');
    const out: string[] = [];
    const spy = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => (out.push(String(s)), true));
    const prev = process.env.AEGIS_PASSPHRASE;
    process.env.AEGIS_PASSPHRASE = PASS;
    const run = async (...args: string[]): Promise<Record<string, unknown>> => {
      const program = new Command().exitOverride();
      registerData(program.command('client'));
      out.length = 0;
      await program.parseAsync(['client', ...args, '--data-dir', data, '--json'], { from: 'user' });
      return JSON.parse(out.join('')) as Record<string, unknown>;
    };
    try {
      expect(await run('init')).toMatchObject({ ok: true });
      expect(await run('init')).toMatchObject({ ok: false, error: { code: 'already-exists' } });
      expect(await run('init', '--kek', 'pkcs11')).toMatchObject({ ok: false, error: { code: 'already-exists' } });
      const file = join(dir, 'in.jsonl');
      await writeFile(file, `${JSON.stringify(records[0])}\n`);
      expect(await run('data', 'import', file, '--sensitive', 'note')).toMatchObject({ ok: true, imported: 1 });
      const listed = await run('data', 'list');
      expect(listed).toMatchObject({ ok: true, count: 1 });
      expect(JSON.stringify(listed)).not.toContain(ADDRESS);
      expect(JSON.stringify(listed)).not.toContain(VISIBLE);

      // A bad file is refused naming the file, the line and the field (never a value), and nothing
      // of it is imported: neither the good lines before the bad one nor the rest.
      const badCsv = join(dir, 'bad.csv');
      await writeFile(badCsv, 'x,label\n"[1, 2]",1\n"[3, 4]",secret-cell-7,extra\n');
      const csvRefusal = await run('data', 'import', badCsv);
      expect(csvRefusal).toMatchObject({ ok: false, error: { code: 'invalid-argument', message: `${badCsv}: line 3 has 3 fields, the header has 2` } });
      const badJsonl = join(dir, 'bad.jsonl');
      await writeFile(badJsonl, `${JSON.stringify({ x: [1], label: 1 })}\n\n${JSON.stringify({ x: [2], label: { secret: 'nested-secret-9' } })}\n`);
      const jsonlRefusal = await run('data', 'import', badJsonl);
      expect(jsonlRefusal).toMatchObject({ ok: false, error: { code: 'invalid-argument', message: `${badJsonl} line 3: field 'label' must be a string, a finite number or an array of finite numbers` } });
      const badCell = join(dir, 'bad-cell.csv');
      await writeFile(badCell, 'x,label\n"[1, 2]",1\n"[3, oops]",0\n');
      expect(await run('data', 'import', badCell)).toMatchObject({ ok: false, error: { code: 'invalid-argument', message: `${badCell}: line 3, column 'x': not a JSON array of numbers` } });
      for (const r of [csvRefusal, jsonlRefusal]) expect(JSON.stringify(r)).not.toMatch(/secret-cell-7|nested-secret-9/);
      expect(await run('data', 'list')).toMatchObject({ ok: true, count: 1 });
    } finally {
      spy.mockRestore();
      process.exitCode = 0;
      if (prev === undefined) delete process.env.AEGIS_PASSPHRASE;
      else process.env.AEGIS_PASSPHRASE = prev;
    }
  });
});
