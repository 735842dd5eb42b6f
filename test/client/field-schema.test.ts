/**
 * Default deny in the client store (client/store/schema.ts, client/store/sqlite.ts): field names
 * are normalised before any match, mandatory classes (postal address, GPS coordinates, transcript;
 * English and French names, whole or as a token) can never be declared plain, a new field is
 * sealed, and the record version in every sealed value's AAD makes a stale ciphertext copied
 * back over a newer one fail to open. Real SQLite, a real passphrase KEK.
 */
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { mandatoryClass, normaliseFieldName, matchKey, planSchemaChange } from '../../client/store/schema.js';
import { SqliteDataStore } from '../../client/store/sqlite.js';
import { isAegisError } from '../../shared/errors.js';
import { parseSealedHeader, sealField } from '../../shared/keystore/envelope.js';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { codeOfAsync } from '../support/codes.js';

const PASS = 'field schema passphrase 91c2';
const FAST = { N: 2 ** 14, r: 8, p: 1 };

describe('field names are normalised before any match', () => {
  it.each([
    ['Address', 'address'],
    ['  Home Address  ', 'home_address'],
    ['home-address', 'home_address'],
    ['home.address', 'home_address'],
    ['home__--..  address', 'home_address'],
    ['homeAddress', 'home_address'],
    ['GPSPoint', 'gps_point'],
    ['ＨＯＭＥ＿ＡＤＤＲＥＳＳ', 'home_address'], // full-width letters and low line (NFKC)
    ['ｌａｔ', 'lat'],
    ['Coordonnées', 'coordonnées'],
    ['Coordonne\u0301es', 'coordonnées'], // NFD input: the same name as the NFC one
    ['_label_', 'label'],
    ['Pixels', 'pixels'],
  ])('%j -> %j', (raw, norm) => {
    expect(normaliseFieldName(raw)).toBe(norm);
  });

  it('strips accents for the class match only', () => {
    expect(matchKey('Coordonnées')).toBe('coordonnees');
    expect(matchKey('Géolocalisation')).toBe('geolocalisation');
    expect(normaliseFieldName('Géolocalisation')).toBe('géolocalisation');
  });
});

describe('mandatory classes, English and French, whole names and tokens', () => {
  it.each([
    ['Address', 'postal address'],
    ['home_address', 'postal address'],
    ['HomeAddress', 'postal address'],
    ['homeaddress', 'postal address'],
    ['Adresse postale', 'postal address'],
    ['Adresse', 'postal address'],
    ['Rue', 'postal address'],
    ['street', 'postal address'],
    ['code-postal', 'postal address'],
    ['ZIP', 'postal address'],
    ['postcode', 'postal address'],
    ['address2', 'postal address'],
    ['GPS', 'GPS coordinates'],
    ['gps_point', 'GPS coordinates'],
    ['latitude', 'GPS coordinates'],
    ['LONGITUDE', 'GPS coordinates'],
    ['user_lat', 'GPS coordinates'],
    ['user.lng', 'GPS coordinates'],
    ['lon', 'GPS coordinates'],
    ['long', 'GPS coordinates'],
    ['coordonnées', 'GPS coordinates'],
    ['coordonnees', 'GPS coordinates'],
    ['Coordinates', 'GPS coordinates'],
    ['coords', 'GPS coordinates'],
    ['Location', 'GPS coordinates'],
    ['localisation', 'GPS coordinates'],
    ['Géolocalisation', 'GPS coordinates'],
    ['geo', 'GPS coordinates'],
    ['geolocation', 'GPS coordinates'],
    ['position', 'GPS coordinates'],
    ['ｇｐｓ', 'GPS coordinates'],
    ['Transcript', 'transcript'],
    ['voice-transcripts', 'transcript'],
    ['Transcription', 'transcript'],
    ['transcription_vocale', 'transcript'],
  ])('%j is a %s field', (name, cls) => {
    expect(mandatoryClass(name)).toBe(cls);
  });

  it.each(['pixels', 'label', 'digit', 'x', 'y', 'note', 'allocation', 'composition', 'coordinator', 'latency_ms', 'longevity', 'age'])('%j is not a mandatory class', (name) => {
    expect(mandatoryClass(name)).toBeUndefined();
  });

  it('refuses to declare a mandatory-class column plain, naming the column and its class, and plans nothing', () => {
    const empty = { version: 1, fields: new Map() };
    for (const [col, cls] of [
      ['Address', 'postal address'],
      ['home_address', 'postal address'],
      ['coordonnées', 'GPS coordinates'],
      ['Transcript', 'transcript'],
    ] as const) {
      let err: unknown;
      try {
        planSchemaChange(empty, { plain: ['pixels', col] });
      } catch (e) {
        err = e;
      }
      expect(isAegisError(err) && err.code).toBe('invalid-argument');
      expect((err as Error).message).toContain(`'${col}'`);
      expect((err as Error).message).toContain(cls);
    }
    // Sealed is always allowed, and a name asked both ways is refused.
    expect(planSchemaChange(empty, { sealed: ['Address'] })).toEqual([{ field: 'address', from: 'default', to: 'sealed' }]);
    expect(() => planSchemaChange(empty, { plain: ['Label'], sealed: ['label'] })).toThrow(/both/);
  });
});

describe('the store under default deny', () => {
  let dir: string;
  let kek: PassphraseKek;
  let store: SqliteDataStore | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aegis-schema-'));
    kek = await PassphraseKek.create(join(dir, 'kek.keyfile.json'), PASS, { kdf: FAST });
  });
  afterEach(async () => {
    store?.close();
    store = undefined;
    kek.close();
    await rm(dir, { recursive: true, force: true });
  });
  const sealedOf = async (s: SqliteDataStore): Promise<string[]> => (await s.list())[0]!.sensitive.sort();

  it('seals every field of a new store, a new column of a later import too, and keeps declared-plain fields in clear', async () => {
    store = await SqliteDataStore.open(dir, kek);
    expect(store.schema()).toEqual({ version: 1, fields: new Map() });
    await store.importRecords([{ pixels: [1, 2], label: 3 }]);
    expect(await sealedOf(store)).toEqual(['label', 'pixels']);
    const r = await store.changeSchema({ plain: ['Pixels', 'LABEL'] });
    expect(r).toEqual({ version: 2, resealed: 0, changes: [{ field: 'pixels', from: 'default', to: 'plain' }, { field: 'label', from: 'default', to: 'plain' }] });
    // Plain only affects later imports: the first record stays sealed.
    const { ids } = await store.importRecords([{ pixels: [4, 5], label: 6, 'Extra Column': 'later-column-marker' }]);
    const listed = await store.list();
    expect(listed[0]!.sensitive.sort()).toEqual(['label', 'pixels']);
    expect(listed.find((l) => l.id === ids[0])!.sensitive).toEqual(['Extra Column']);
    // Declared again as asked: no change, no new version.
    expect((await store.changeSchema({ plain: ['pixels'] })).changes).toEqual([]);
    expect(store.schema().version).toBe(2);
    expect(Array.from((await store.trainingExamples({ features: 'pixels', label: 'label' })).labels)).toEqual([3, 6]);
  });

  it('a refused plain declaration changes nothing: same schema version, same rows', async () => {
    store = await SqliteDataStore.open(dir, kek);
    await store.changeSchema({ plain: ['label'] });
    const before = store.schema();
    for (const bad of [['Address'], ['pixels', 'home_address'], ['Adresse postale'], ['GPS'], ['user_lat'], ['coordonnées']]) {
      expect(await codeOfAsync(store.changeSchema({ plain: bad }))).toBe('invalid-argument');
    }
    expect(store.schema()).toEqual(before);
    expect(store.schema().fields.has('pixels')).toBe(false);
  });

  it('declaring a field sealed again seals the values the store held in clear', async () => {
    store = await SqliteDataStore.open(dir, kek);
    await store.changeSchema({ plain: ['note', 'label'] });
    await store.importRecords([{ note: 'note-marker-5b1e77', label: 1 }]);
    const r = await store.changeSchema({ sealed: ['Note'] });
    expect(r).toMatchObject({ version: 3, resealed: 1, changes: [{ field: 'note', from: 'plain', to: 'sealed' }] });
    expect(await sealedOf(store)).toEqual(['note']);
    const out = [];
    for await (const rec of store.plainRecords()) out.push(rec);
    expect(out[0]!.fields.find((f) => f.name === 'note')).toEqual({ name: 'note', sensitive: true, value: 'note-marker-5b1e77' });
    store.close();
    store = undefined;
    const disk = Buffer.concat([await readFile(join(dir, 'store.db')), await readFile(join(dir, 'store.db-wal')).catch(() => Buffer.alloc(0))]);
    expect(disk.includes('note-marker-5b1e77')).toBe(false);
  });

  it('a plain value in a mandatory-class column is refused as tampering, whatever the schema row says', async () => {
    store = await SqliteDataStore.open(dir, kek);
    const { ids } = await store.importRecords([{ home_address: '1 rue de la Paix', x: [1], y: 1 }]);
    store.close();
    store = undefined;
    const db = new Database(join(dir, 'store.db'));
    db.prepare("INSERT INTO field_schema (name, class, since) VALUES ('home_address', 'plain', 1)").run();
    db.prepare("UPDATE fields SET sensitive = 0, value = ? WHERE record_id = ? AND name = 'home_address'").run(Buffer.from('"forged"'), ids[0]);
    db.close();
    store = await SqliteDataStore.open(dir, kek);
    const err = await store.plainRecords().next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isAegisError(err) && err.code).toBe('malformed');
    expect((err as Error).message).toContain('postal address');
    // The forged schema row does not make a later import store the class in clear either.
    expect(store.schema().fields.get('home_address')).toBe('plain');
    const later = await store.importRecords([{ home_address: '2 rue de la Paix', 'Home Address': '3 rue de la Paix' }]);
    const listed = (await store.list()).find((l) => l.id === later.ids[0])!;
    expect(listed.sensitive.sort()).toEqual(['Home Address', 'home_address']);
  });

  it('the record version: an update re-seals the record, and the v1 ciphertext copied back fails to open', async () => {
    store = await SqliteDataStore.open(dir, kek);
    const { ids } = await store.importRecords([{ address: 'version-one-address', transcript: 'kept transcript', y: 1 }]);
    const id = ids[0]!;
    const raw = (): Database.Database => new Database(join(dir, 'store.db'));
    const row = (name: string): Buffer => {
      const db = raw();
      try {
        return db.prepare<[string, string], { value: Buffer }>('SELECT value FROM fields WHERE record_id = ? AND name = ?').get(id, name)!.value;
      } finally {
        db.close();
      }
    };
    const v1Address = row('address');
    const v1Transcript = row('transcript');
    expect(parseSealedHeader(v1Address).formatVersion).toBe(2);
    expect(await store.updateFields(id, { address: 'version-two-address' })).toEqual({ id, version: 2, fields: ['address'] });
    const read = async (): Promise<Record<string, unknown>> => {
      for await (const r of store!.plainRecords()) return Object.fromEntries(r.fields.map((f) => [f.name, f.value]));
      return {};
    };
    expect(await read()).toEqual({ address: 'version-two-address', transcript: 'kept transcript', y: 1 });
    // The untouched sealed field was re-sealed for version 2 too.
    expect(row('transcript').equals(v1Transcript)).toBe(false);
    store.close();
    store = undefined;

    // Roll the address back to its v1 ciphertext (the version column stays 2): refused.
    const v2Address = row('address');
    const v2Transcript = row('transcript');
    const splice = (name: string, value: Buffer): void => {
      const db = raw();
      db.prepare('UPDATE fields SET value = ? WHERE record_id = ? AND name = ?').run(value, id, name);
      db.close();
    };
    splice('address', v1Address);
    store = await SqliteDataStore.open(dir, kek);
    expect(await codeOfAsync(read())).toBe('decryption-failed');
    // An update cannot carry a stale value forward either: it opens every sealed value first.
    expect(await codeOfAsync(store.updateFields(id, { y: 2 }))).toBe('decryption-failed');
    store.close();
    store = undefined;
    // The same for the field the update did not name.
    splice('address', v2Address);
    splice('transcript', v1Transcript);
    store = await SqliteDataStore.open(dir, kek);
    expect(await codeOfAsync(read())).toBe('decryption-failed');
    store.close();
    store = undefined;
    // The current ciphertexts back in place: everything opens.
    splice('transcript', v2Transcript);
    store = await SqliteDataStore.open(dir, kek);
    expect(await read()).toEqual({ address: 'version-two-address', transcript: 'kept transcript', y: 1 });
    expect(await codeOfAsync(store.updateFields('00000000-0000-4000-8000-00000000abcd', { y: 2 }))).toBe('not-found');
  });

  it('a layout-1 store (no record versions, no schema table) opens, is migrated, and keeps reading', async () => {
    // A layout-1 store as the previous release wrote it: format-1 values, a field of a mandatory
    // class ('Home Address') left in clear by the old exact-name rule, 'x' and 'y' in clear.
    const id = '3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d';
    const seal = async (name: string, v: unknown): Promise<Buffer> => Buffer.from(await sealField(kek, { assetUuid: id, fieldName: name, schemaVersion: 1 }, Buffer.from(JSON.stringify(v))));
    const check = Buffer.from(await sealField(kek, { assetUuid: '00000000-0000-4000-8000-000000000000', fieldName: 'aegis-store-kek-check', schemaVersion: 1 }, Buffer.from('aegis-store-v1')));
    const db = new Database(join(dir, 'store.db'));
    db.exec(`CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
      CREATE TABLE records (id TEXT PRIMARY KEY, created_at TEXT NOT NULL);
      CREATE TABLE fields (record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE, name TEXT NOT NULL, schema_version INTEGER NOT NULL,
        sensitive INTEGER NOT NULL CHECK (sensitive IN (0, 1)), value BLOB NOT NULL, kek_version INTEGER, PRIMARY KEY (record_id, name));`);
    db.prepare("INSERT INTO meta VALUES ('schema', ?), ('kek-check', ?)").run(Buffer.from('1'), check);
    db.prepare("INSERT INTO records VALUES (?, '2026-01-01T00:00:00.000Z')").run(id);
    const put = db.prepare('INSERT INTO fields VALUES (?, ?, 1, ?, ?, ?)');
    put.run(id, 'address', 1, await seal('address', 'old-sealed-address'), 1);
    put.run(id, 'Home Address', 0, Buffer.from(JSON.stringify('old-clear-home-address')), null);
    put.run(id, 'x', 0, Buffer.from('[1,2]'), null);
    put.run(id, 'y', 0, Buffer.from('3'), null);
    db.close();

    store = await SqliteDataStore.open(dir, kek);
    expect(store.schema()).toEqual({ version: 1, fields: new Map([['x', 'plain'], ['y', 'plain']]) });
    expect(await sealedOf(store)).toEqual(['Home Address', 'address']);
    const read = async (): Promise<Record<string, unknown>> => {
      for await (const r of store!.plainRecords()) return Object.fromEntries(r.fields.map((f) => [f.name, f.value]));
      return {};
    };
    expect(await read()).toEqual({ address: 'old-sealed-address', 'Home Address': 'old-clear-home-address', x: [1, 2], y: 3 });
    // Its first update moves the record to version 1: format-2 values from then on.
    expect((await store.updateFields(id, { y: 4 })).version).toBe(1);
    expect(await read()).toMatchObject({ address: 'old-sealed-address', y: 4 });
    store.close();
    store = undefined;
    const disk = await readFile(join(dir, 'store.db'));
    expect(disk.includes('old-clear-home-address')).toBe(false);
    const db2 = new Database(join(dir, 'store.db'), { readonly: true });
    const v = db2.prepare<[], { value: Buffer }>("SELECT value FROM fields WHERE name = 'address'").get()!.value;
    db2.close();
    expect(parseSealedHeader(v).formatVersion).toBe(2);
  });
});
