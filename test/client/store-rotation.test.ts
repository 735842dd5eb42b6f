/**
 * Key rotation of the client's encrypted store (shared/keystore/rotation.ts, client/store/sqlite.ts,
 * `aegis keys …`): the lifecycle matrix on a real store, re-wrap vs emergency re-encryption at the
 * byte level, crash recovery of a rotation killed half-way (SIGKILL through the CLI's fault hook),
 * a sealed vault rotating with the store, a PKCS#11 (SoftHSM2) data dir end to end, and the CLI's
 * refusals.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteDataStore } from '../../client/store/sqlite.js';
import { isAegisError } from '../../shared/errors.js';
import { openField, parseSealedHeader, type FieldContext } from '../../shared/keystore/envelope.js';
import type { KekVersionState, ManagedKek } from '../../shared/keystore/kek.js';
import { openKek } from '../../shared/keystore/kek-config.js';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { destroyKeyVersion, disableKeyVersion, keyStatus, readJournal, rotateKeys, ROTATION_JOURNAL } from '../../shared/keystore/rotation.js';
import { SealedVault } from '../../shared/keystore/vault.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';
import { codeOfAsync } from '../support/codes.js';
import { softHsmAvailable, startSoftHsm, type SoftHsm, type SoftHsmToken } from '../support/softhsm.js';

const FAST = { N: 2 ** 14, r: 8, p: 1 };
const PASS = 'store rotation passphrase 7f3a';
/** The passphrase an emergency rotation (`--emergency` assumes the old one leaked) moves the dir to. */
const NEW = 'store rotation new passphrase 9c1e';
const KEYFILE = 'kek.keyfile.json';
const STORE_SCHEMA = 1;
const KEK_CHECK_CTX: FieldContext = { assetUuid: '00000000-0000-4000-8000-000000000000', fieldName: 'aegis-store-kek-check', schemaVersion: STORE_SCHEMA };

const root = mkdtempSync(join(tmpdir(), 'aegis-store-rot-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
function freshDir(name: string): string {
  const dir = join(root, `${name}-${++dirCount}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Helpers

interface Rec extends Record<string, string | number | number[]> {
  address: string;
  lat: number;
  lon: number;
  transcript: string;
  x: number[];
  y: number;
}

function makeRecords(n: number, tag: string): Rec[] {
  return Array.from({ length: n }, (_, i) => ({
    address: `${i} ${tag} Street, Springfield`,
    lat: 40 + i / 1000,
    lon: -70 - i / 997,
    transcript: `${tag} transcript number ${i}: call the dentist`,
    x: [i, i / 2, -(i + 1) / 3],
    y: i % 3,
  }));
}

/** A store whose schema declares the features and label (x, y) plain, as the CLI tests' data dirs. */
async function openStore(dir: string, kek: ManagedKek | PassphraseKek): Promise<SqliteDataStore> {
  const store = await SqliteDataStore.open(dir, kek);
  await store.changeSchema({ plain: ['x', 'y'] });
  return store;
}

/** Every record of the store, opened, in import order, as plain objects (throws on the first failure). */
async function readAll(store: SqliteDataStore): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  for await (const r of store.plainRecords(64)) out.push(Object.fromEntries(r.fields.map((f) => [f.name, f.value])));
  return out;
}

interface RawValue {
  /** record id + '/' + field name, or 'meta/kek-check'. */
  key: string;
  ctx: FieldContext;
  value: Buffer;
}

/** Every sealed value of `dir/store.db` as it is on disk (fields and the KEK check value). */
function rawValues(dir: string): Map<string, RawValue> {
  const db = new Database(join(dir, 'store.db'), { readonly: true });
  try {
    const out = new Map<string, RawValue>();
    const rows = db
      .prepare<[], { record_id: string; name: string; schema_version: number; value: Buffer; version: number }>(
        'SELECT f.record_id, f.name, f.schema_version, f.value, r.version FROM fields f JOIN records r ON r.id = f.record_id WHERE f.sensitive = 1',
      )
      .all();
    for (const r of rows) {
      out.set(`${r.record_id}/${r.name}`, { key: `${r.record_id}/${r.name}`, ctx: { assetUuid: r.record_id, fieldName: r.name, schemaVersion: r.schema_version, recordVersion: r.version }, value: r.value });
    }
    const check = db.prepare<[], { value: Buffer }>("SELECT value FROM meta WHERE key = 'kek-check'").get();
    if (check !== undefined) out.set('meta/kek-check', { key: 'meta/kek-check', ctx: KEK_CHECK_CTX, value: check.value });
    return out;
  } finally {
    db.close();
  }
}

/** The AEF1 header's length (envelope.ts layout): magic 4, format 1, L_id 2, id, version 4, L_w 2, wrapped. */
function headerLength(value: Uint8Array): number {
  const h = parseSealedHeader(value);
  return 4 + 1 + 2 + Buffer.byteLength(h.kekId, 'utf8') + 4 + 2 + h.wrappedDek.length;
}
const bodyOf = (value: Buffer): Buffer => value.subarray(headerLength(value));
const versionOf = (value: Uint8Array): number => parseSealedHeader(value).kekVersion;

function versionCounts(values: Map<string, RawValue>): Record<number, number> {
  const out: Record<number, number> = {};
  for (const v of values.values()) out[versionOf(v.value)] = (out[versionOf(v.value)] ?? 0) + 1;
  return out;
}

async function statesOf(kek: ManagedKek): Promise<Record<number, KekVersionState>> {
  const out: Record<number, KekVersionState> = {};
  for (const i of await kek.versions()) out[i.version] = i.state;
  return out;
}

/** The CLI with the passphrase in the environment; no output may ever carry it (or `secret`). */
function aegis(args: string[], extraEnv: NodeJS.ProcessEnv = {}, secret?: string): CliRun {
  const r = runCli(args, { ...process.env, AEGIS_PASSPHRASE: PASS, AEGIS_LOG_LEVEL: 'warn', ...extraEnv });
  expect(r.stdout + r.stderr).not.toContain(PASS);
  if (secret !== undefined) expect(r.stdout + r.stderr).not.toContain(secret);
  return r;
}

/** A `--json` command that must succeed; returns its document. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed CLI JSON, checked by the callers
function ok(args: string[], extraEnv: NodeJS.ProcessEnv = {}, secret?: string): any {
  const r = aegis([...args, '--json'], extraEnv, secret);
  const doc = cliJson(r);
  if (r.status !== 0 || doc.ok !== true) throw new Error(`aegis ${args.join(' ')} failed (exit ${r.status}): ${r.stdout} ${r.stderr.slice(-500)}`);
  return doc;
}

/** A `--json` command that must fail with exit 2; returns the error code. */
function failCode(args: string[], extraEnv: NodeJS.ProcessEnv = {}, secret?: string): { code: string; message: string } {
  const r = aegis([...args, '--json'], extraEnv, secret);
  expect(r.status).toBe(2);
  const doc = cliJson(r);
  expect(doc.ok).toBe(false);
  return { code: doc.error.code, message: doc.error.message };
}

/** `aegis keys rotate` with the SIGKILL fault hook, run directly so the signal is visible. */
function rotateKilled(dir: string, afterBatches: number, extra: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): ReturnType<typeof spawnSync> {
  const r = spawnSync(process.execPath, [CLI, 'keys', 'rotate', '--data-dir', dir, '--batch-size', '100', ...extra], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, AEGIS_PASSPHRASE: PASS, AEGIS_LOG_LEVEL: 'warn', AEGIS_TEST_KILL_AFTER_BATCHES: String(afterBatches), ...extraEnv },
  });
  expect(`${String(r.stdout)}${String(r.stderr)}`).not.toContain(PASS);
  return r;
}

/** A client data dir made through the CLI, holding `records` (imported from a JSONL file). */
function cliDataDir(name: string, records: readonly Rec[]): string {
  const dir = freshDir(name);
  // The features and label are declared plain: addresses, coordinates and transcripts stay sealed.
  ok(['client', 'init', '--data-dir', dir, '--plain', 'x,y']);
  const file = join(root, `${name}-${dirCount}.jsonl`);
  writeFileSync(file, `${records.map((r) => JSON.stringify(r)).join('\n')}\n`);
  const imp = ok(['client', 'data', 'import', file, '--data-dir', dir]);
  expect(imp.imported).toBe(records.length);
  return dir;
}

/** Opens a CLI-made data dir in process (its own KEK provider, per kek.json) and reads every record. */
async function readDir(dir: string, pin = '', passphrase = PASS): Promise<Record<string, unknown>[]> {
  const kek = await openKek(dir, { passphrase: async () => passphrase, pin: async () => pin });
  try {
    const store = await openStore(dir, kek);
    try {
      return await readAll(store);
    } finally {
      store.close();
    }
  } finally {
    await kek.close();
  }
}

/** `keys status --json` references of the store, per version, and the states. */
function statusOf(dir: string, extraEnv: NodeJS.ProcessEnv = {}): { refs: Record<number, number>; states: Record<number, string>; pending: unknown; kind: string } {
  const s = ok(['keys', 'status', '--data-dir', dir], extraEnv);
  const refs: Record<number, number> = {};
  const states: Record<number, string> = {};
  for (const v of s.versions as { version: number; state: string; references: { store?: number } }[]) {
    refs[v.version] = v.references.store ?? 0;
    states[v.version] = v.state;
  }
  return { refs, states, pending: s.pendingRotation, kind: s.kek.kind };
}

// ---------------------------------------------------------------------------------------------

describe('store-level rotation matrix (in process)', () => {
  test('every imported record reads back exactly while an active KEK version protects all its values', async () => {
    const dir = freshDir('matrix');
    const kek = await PassphraseKek.create(join(dir, KEYFILE), PASS, { kdf: FAST });
    const store = await openStore(dir, kek);
    const batches: { stage: string; ids: string[]; records: Rec[] }[] = [];
    const rows: { stage: string; states: Record<number, KekVersionState>; readable: Record<string, boolean> }[] = [];

    const stage = async (name: string, sealVersion: number): Promise<void> => {
      const records = makeRecords(3, name.replace(/ /g, '-'));
      const { ids } = await store.importRecords(records);
      batches.push({ stage: name, ids, records });
      const states = await statesOf(kek);
      const usable = (v: number): boolean => states[v] === 'primary' || states[v] === 'enabled';
      const raw = rawValues(dir);
      // New values are sealed under the primary of the moment.
      for (const id of ids) for (const f of ['address', 'lat', 'lon', 'transcript']) expect([name, versionOf(raw.get(`${id}/${f}`)!.value)]).toEqual([name, sealVersion]);
      // Each value opens exactly when the version its header names is usable.
      const readable: Record<string, boolean> = {};
      for (const b of batches) {
        let all = true;
        for (const [i, id] of b.ids.entries()) {
          for (const f of ['address', 'lat', 'lon', 'transcript'] as const) {
            const rv = raw.get(`${id}/${f}`)!;
            const v = versionOf(rv.value);
            if (usable(v)) {
              expect(JSON.parse(Buffer.from(await openField(kek, rv.ctx, rv.value)).toString('utf8'))).toEqual(b.records[i]![f]);
            } else {
              expect([name, b.stage, f, await codeOfAsync(openField(kek, rv.ctx, rv.value))]).toEqual([name, b.stage, f, 'decryption-failed']);
              all = false;
            }
          }
        }
        readable[b.stage] = all;
      }
      // Through the store: everything reads (and matches what was imported) iff every batch is readable.
      const everything = batches.flatMap((b) => b.records);
      if (Object.values(readable).every(Boolean)) {
        expect(await readAll(store)).toEqual(everything);
        const ex = await store.trainingExamples({ features: 'x', label: 'lat' });
        expect(ex.count).toBe(everything.length);
        expect(Array.from(ex.labels)).toEqual(everything.map((r) => Math.fround(r.lat)));
      } else {
        expect(await codeOfAsync(readAll(store))).toBe('decryption-failed');
        expect(await codeOfAsync(store.trainingExamples({ features: 'x', label: 'transcript' }))).toBe('decryption-failed');
      }
      rows.push({ stage: name, states, readable });
    };

    await stage('old primary', 1);

    expect(await kek.addVersion()).toBe(2);
    await stage('new added', 1);
    // The store still holds values under v1 (the primary): destroying it is refused by the store check.
    const early = await destroyKeyVersion(dir, kek, [store], 1).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isAegisError(early) && early.code).toBe('failed-precondition');
    expect((early as Error).message).toMatch(/still protects \d+ values in store/);

    // New primary: rotateKeys takes the spare enabled v2, makes it primary and starts re-wrapping;
    // it is interrupted after the first batch (as by a crash), so v1 and v2 both hold values.
    const interrupted = await rotateKeys(dir, kek, [store], {
      batchSize: 5,
      onProgress: () => {
        throw new Error('interrupted after one batch');
      },
    }).then(
      () => 'finished',
      (e: unknown) => (e as Error).message,
    );
    expect(interrupted).toBe('interrupted after one batch');
    expect((await readJournal(dir))?.target).toBe(2);
    expect(versionCounts(rawValues(dir))).toEqual({ 1: 2 * 3 * 4 + 1 - 5, 2: 5 });
    await stage('new primary', 2);
    expect(await codeOfAsync(destroyKeyVersion(dir, kek, [store], 1))).toBe('failed-precondition'); // a rotation is pending
    expect(await codeOfAsync(disableKeyVersion(dir, kek, [store], 1))).toBe('failed-precondition'); // values still name v1
    expect((await statesOf(kek))[1]).toBe('enabled');

    // Disabling v1 before the re-wrap finished (forced): the values still under it stop opening...
    await disableKeyVersion(dir, kek, [store], 1, true);
    await stage('old disabled early', 2);
    // ...and come back once it is enabled again.
    await kek.enable(1);
    await stage('old re-enabled', 2);

    // The re-wrap resumes and finishes: every value is under v2.
    const report = await rotateKeys(dir, kek, [store], { batchSize: 7 });
    expect(report).toEqual({ primary: 2, emergency: false, resumed: true, moved: { store: 2 * 3 * 4 + 1 - 5 }, disabled: [] });
    expect(existsSync(join(dir, ROTATION_JOURNAL))).toBe(false);
    expect(versionCounts(rawValues(dir))).toEqual({ 2: 5 * 3 * 4 + 1 }); // five batches of 3 records × 4 sealed fields, and the KEK check value
    await stage('re-wrapped', 2);

    await disableKeyVersion(dir, kek, [store], 1); // nothing names v1 any more: no force needed
    await stage('old disabled', 2);
    await destroyKeyVersion(dir, kek, [store], 1);
    await stage('old destroyed', 2);
    expect(await codeOfAsync(kek.enable(1))).toBe('failed-precondition');
    expect(await codeOfAsync(destroyKeyVersion(dir, kek, [store], 2))).toBe('failed-precondition'); // the primary, still referenced

    // The table, written out: a batch reads iff all its values are under a usable version.
    const T = true;
    const F = false;
    expect(rows.map((r) => [r.stage, r.readable])).toEqual([
      ['old primary', { 'old primary': T }],
      ['new added', { 'old primary': T, 'new added': T }],
      ['new primary', { 'old primary': T, 'new added': T, 'new primary': T }],
      ['old disabled early', { 'old primary': F, 'new added': F, 'new primary': T, 'old disabled early': T }],
      ['old re-enabled', { 'old primary': T, 'new added': T, 'new primary': T, 'old disabled early': T, 'old re-enabled': T }],
      ['re-wrapped', { 'old primary': T, 'new added': T, 'new primary': T, 'old disabled early': T, 'old re-enabled': T, 're-wrapped': T }],
      ['old disabled', { 'old primary': T, 'new added': T, 'new primary': T, 'old disabled early': T, 'old re-enabled': T, 're-wrapped': T, 'old disabled': T }],
      ['old destroyed', { 'old primary': T, 'new added': T, 'new primary': T, 'old disabled early': T, 'old re-enabled': T, 're-wrapped': T, 'old disabled': T, 'old destroyed': T }],
    ]);
    expect(rows.map((r) => r.states)).toEqual([
      { 1: 'primary' },
      { 1: 'primary', 2: 'enabled' },
      { 1: 'enabled', 2: 'primary' },
      { 1: 'disabled', 2: 'primary' },
      { 1: 'enabled', 2: 'primary' },
      { 1: 'enabled', 2: 'primary' },
      { 1: 'disabled', 2: 'primary' },
      { 1: 'destroyed', 2: 'primary' },
    ]);
    store.close();
    kek.close();
  });

  test('destroy is refused while the store references a non-primary version, and allowed after the rotation', async () => {
    const dir = freshDir('destroy');
    const kek = await PassphraseKek.create(join(dir, KEYFILE), PASS, { kdf: FAST });
    const store = await openStore(dir, kek);
    const records = makeRecords(4, 'destroy');
    await store.importRecords(records);
    // A new primary made by the provider alone (no journal, no re-wrap): v1 still protects 17 values.
    expect(await kek.rotate()).toBe(2);
    const e = await destroyKeyVersion(dir, kek, [store], 1).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(isAegisError(e) && e.code).toBe('failed-precondition');
    expect((e as Error).message).toContain('still protects 17 values in store');
    expect((await statesOf(kek))[1]).toBe('enabled');
    expect(await readAll(store)).toEqual(records);

    const r = await rotateKeys(dir, kek, [store]);
    expect(r.primary).toBe(3);
    expect(r.moved).toEqual({ store: 17 });
    await destroyKeyVersion(dir, kek, [store], 1);
    await destroyKeyVersion(dir, kek, [store], 2);
    expect(await statesOf(kek)).toEqual({ 1: 'destroyed', 2: 'destroyed', 3: 'primary' });
    expect(await readAll(store)).toEqual(records);
    store.close();
    kek.close();
    // The destroyed keys are gone from the file: a re-opened store still reads everything.
    const again = await PassphraseKek.open(join(dir, KEYFILE), PASS);
    const s2 = await SqliteDataStore.open(dir, again);
    expect(await readAll(s2)).toEqual(records);
    s2.close();
    again.close();
  });
});

describe('what a rotation changes on disk', () => {
  test('a re-wrap changes only the header; an emergency rotation re-encrypts every value and disables the old versions', async () => {
    const dir = freshDir('bytes');
    const kek = await PassphraseKek.create(join(dir, KEYFILE), PASS, { kdf: FAST });
    const store = await openStore(dir, kek);
    const records = makeRecords(10, 'bytes');
    await store.importRecords(records);
    const before = rawValues(dir);
    expect(before.size).toBe(41);

    const r = await rotateKeys(dir, kek, [store], { batchSize: 8 });
    expect(r).toEqual({ primary: 2, emergency: false, resumed: false, moved: { store: 41 }, disabled: [] });
    const after = rawValues(dir);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [k, b] of before) {
      const a = after.get(k)!;
      const hb = parseSealedHeader(b.value);
      const ha = parseSealedHeader(a.value);
      expect([k, hb.kekVersion, ha.kekVersion]).toEqual([k, 1, 2]);
      expect(ha.kekId).toBe(hb.kekId);
      expect(Buffer.from(ha.wrappedDek).equals(Buffer.from(hb.wrappedDek))).toBe(false);
      // nonce | commitment | ciphertext+tag: byte-identical.
      expect(bodyOf(a.value).equals(bodyOf(b.value))).toBe(true);
      expect(a.value.equals(b.value)).toBe(false);
    }
    expect(await readAll(store)).toEqual(records);
    const plain = new Map<string, Buffer>();
    for (const [k, a] of after) plain.set(k, Buffer.from(await openField(kek, a.ctx, a.value)));

    const e = await rotateKeys(dir, kek, [store], { emergency: true, batchSize: 8 });
    expect(e).toEqual({ primary: 3, emergency: true, resumed: false, moved: { store: 41 }, disabled: [1, 2] });
    expect(await statesOf(kek)).toEqual({ 1: 'disabled', 2: 'disabled', 3: 'primary' });
    const fresh = rawValues(dir);
    for (const [k, a] of after) {
      const f = fresh.get(k)!;
      expect([k, versionOf(f.value)]).toEqual([k, 3]);
      const oldBody = bodyOf(a.value);
      const newBody = bodyOf(f.value);
      expect(newBody.equals(oldBody)).toBe(false);
      expect(newBody.subarray(0, 12).equals(oldBody.subarray(0, 12))).toBe(false); // fresh nonce
      expect(newBody.subarray(12, 44).equals(oldBody.subarray(12, 44))).toBe(false); // fresh DEK → new commitment
      // The same plaintext under the fresh DEK; the value as it was before no longer opens (v2 is disabled).
      expect([k, Buffer.from(await openField(kek, f.ctx, f.value)).equals(plain.get(k)!)]).toEqual([k, true]);
      expect([k, await codeOfAsync(openField(kek, a.ctx, a.value))]).toEqual([k, 'decryption-failed']);
    }
    expect(await readAll(store)).toEqual(records);
    store.close();
    kek.close();
  });
});

describe('a rotation killed half-way (CLI, SIGKILL)', () => {
  const RECORDS = makeRecords(600, 'kill');
  const TOTAL = 600 * 4 + 1; // four sealed fields per record, and the store's KEK check value

  test('keys rotate killed after 3 batches: the journal stays, values are split, and the next run finishes it', async () => {
    const dir = cliDataDir('kill', RECORDS);
    expect(statusOf(dir).refs).toEqual({ 1: TOTAL });

    const k = rotateKilled(dir, 3);
    expect(k.status).toBeNull();
    expect(k.signal).toBe('SIGKILL');
    expect(existsSync(join(dir, ROTATION_JOURNAL))).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, ROTATION_JOURNAL), 'utf8'))).toMatchObject({ version: 1, emergency: false, target: 2 });

    const s = statusOf(dir);
    expect(s.pending).toMatchObject({ emergency: false, target: 2 });
    expect(s.states).toEqual({ 1: 'enabled', 2: 'primary' });
    // Three batches of 100 moved; the rest is still under v1. Each value is either old or new.
    expect(s.refs).toEqual({ 1: TOTAL - 300, 2: 300 });
    expect(versionCounts(rawValues(dir))).toEqual({ 1: TOTAL - 300, 2: 300 });
    expect(await readDir(dir)).toEqual(RECORDS); // nothing half-written: everything still opens

    const r = ok(['keys', 'rotate', '--data-dir', dir, '--batch-size', '100']);
    expect(r).toMatchObject({ primary: 2, emergency: false, resumed: true, moved: { store: TOTAL - 300 }, disabled: [] });
    expect(existsSync(join(dir, ROTATION_JOURNAL))).toBe(false);
    const after = statusOf(dir);
    expect(after.pending).toBeUndefined();
    expect(after.refs).toEqual({ 1: 0, 2: TOTAL });
    expect(versionCounts(rawValues(dir))).toEqual({ 2: TOTAL });
    expect(await readDir(dir)).toEqual(RECORDS);
  });

  test('keys rotate --emergency killed half-way resumes as an emergency under the new passphrase: fresh ciphertexts, old version destroyed', async () => {
    const dir = cliDataDir('kill-emergency', RECORDS);
    const before = rawValues(dir);

    const k = rotateKilled(dir, 4, ['--emergency'], { AEGIS_NEW_PASSPHRASE: NEW });
    expect([k.status, k.signal]).toEqual([null, 'SIGKILL']);
    // The new passphrase was in place before the first value moved: the old one opens nothing.
    expect(failCode(['keys', 'status', '--data-dir', dir]).code).toBe('decryption-failed');
    const s = statusOf(dir, { AEGIS_PASSPHRASE: NEW });
    expect(s.pending).toMatchObject({ emergency: true, leak: true, target: 2 });
    expect(s.refs).toEqual({ 1: TOTAL - 400, 2: 400 });
    expect(s.states).toEqual({ 1: 'enabled', 2: 'primary' });

    // Resumed without --emergency: the journal says it is a leak rotation, so it finishes as one.
    const r = ok(['keys', 'rotate', '--data-dir', dir], { AEGIS_PASSPHRASE: NEW });
    expect(r).toMatchObject({ primary: 2, emergency: true, resumed: true, moved: { store: TOTAL - 400 }, disabled: [], destroyed: [1] });
    expect(existsSync(join(dir, ROTATION_JOURNAL))).toBe(false);
    const after = statusOf(dir, { AEGIS_PASSPHRASE: NEW });
    expect(after.states).toEqual({ 1: 'destroyed', 2: 'primary' });
    expect(after.refs).toEqual({ 1: 0, 2: TOTAL });
    const fresh = rawValues(dir);
    expect(fresh.size).toBe(TOTAL);
    let sameBodies = 0;
    for (const [key, b] of before) {
      const f = fresh.get(key)!;
      expect(versionOf(f.value)).toBe(2);
      if (bodyOf(f.value).equals(bodyOf(b.value)) || bodyOf(f.value).subarray(0, 12).equals(bodyOf(b.value).subarray(0, 12))) sameBodies++;
    }
    expect(sameBodies).toBe(0);
    expect(await readDir(dir, '', NEW)).toEqual(RECORDS);
  });

  test('an emergency asked for while a killed normal rotation is pending re-seals every value under a fresh version', async () => {
    const dir = cliDataDir('kill-upgrade', RECORDS);
    const before = rawValues(dir);
    const k = rotateKilled(dir, 1);
    expect([k.status, k.signal]).toEqual([null, 'SIGKILL']);
    expect(statusOf(dir).refs).toEqual({ 1: TOTAL - 100, 2: 100 });
    const half = rawValues(dir);

    const r = ok(['keys', 'rotate', '--emergency', '--data-dir', dir], { AEGIS_NEW_PASSPHRASE: NEW });
    // Not v2: the values the normal run re-wrapped still carried their old DEKs.
    expect(r).toMatchObject({ primary: 3, emergency: true, resumed: true, moved: { store: TOTAL }, disabled: [], destroyed: [1, 2] });
    expect(statusOf(dir, { AEGIS_PASSPHRASE: NEW }).states).toEqual({ 1: 'destroyed', 2: 'destroyed', 3: 'primary' });
    const fresh = rawValues(dir);
    for (const [key, f] of fresh) {
      expect(versionOf(f.value)).toBe(3);
      for (const old of [before.get(key)!, half.get(key)!]) expect([key, bodyOf(f.value).subarray(0, 12).equals(bodyOf(old.value).subarray(0, 12))]).toEqual([key, false]);
    }
    expect(await readDir(dir, '', NEW)).toEqual(RECORDS);
  });

  test('any command that opens the store (client data list) finishes a killed rotation', async () => {
    const dir = cliDataDir('kill-list', RECORDS);
    const k = rotateKilled(dir, 2);
    expect([k.status, k.signal]).toEqual([null, 'SIGKILL']);
    expect(existsSync(join(dir, ROTATION_JOURNAL))).toBe(true);

    const r = aegis(['client', 'data', 'list', '--data-dir', dir, '--json']);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('resuming the key rotation');
    const listed = cliJson(r);
    expect(listed.count).toBe(600);
    expect(JSON.stringify(listed)).not.toContain('kill Street'); // ids and names only
    expect(existsSync(join(dir, ROTATION_JOURNAL))).toBe(false);
    const s = statusOf(dir);
    expect(s.pending).toBeUndefined();
    expect(s.refs).toEqual({ 1: 0, 2: TOTAL });
    expect(await readDir(dir)).toEqual(RECORDS);
  });
});

describe('a sealed vault rotates with the store', () => {
  test('one rotateKeys call moves both holders; keyStatus and keys status count references per holder', async () => {
    const dir = freshDir('vault');
    const kek = await PassphraseKek.create(join(dir, KEYFILE), PASS, { kdf: FAST });
    const store = await openStore(dir, kek);
    const records = makeRecords(5, 'vault');
    await store.importRecords(records);
    const secrets: Record<string, Uint8Array> = { 'ca-key': Buffer.from('ca key bytes 01'), 'token-key': Buffer.from('token key bytes 02'), operator: Buffer.from('operator credential 03') };
    const vault = await SealedVault.create(join(dir, 'secrets.vault.json'), kek, 'test-vault', secrets);

    const s0 = await keyStatus(dir, kek, [store, vault]);
    expect(s0.versions.map((v) => [v.version, v.state, v.references])).toEqual([[1, 'primary', { store: 21, secrets: 3 }]]);
    // The CLI finds the vault file next to the store by itself.
    const cli0 = ok(['keys', 'status', '--data-dir', dir]);
    expect(cli0.versions.map((v: { version: number; references: unknown }) => [v.version, v.references])).toEqual([[1, { store: 21, secrets: 3 }]]);

    const r = await rotateKeys(dir, kek, [store, vault], { batchSize: 4 });
    expect(r).toEqual({ primary: 2, emergency: false, resumed: false, moved: { store: 21, secrets: 3 }, disabled: [] });
    const s1 = await keyStatus(dir, kek, [store, vault]);
    expect(s1.versions.map((v) => [v.version, v.state, v.references])).toEqual([
      [1, 'enabled', { store: 0, secrets: 0 }],
      [2, 'primary', { store: 21, secrets: 3 }],
    ]);
    // Re-read from the file: every entry is under v2 and opens, even with v1 disabled.
    await disableKeyVersion(dir, kek, [store, vault], 1);
    const reopened = await SealedVault.open(join(dir, 'secrets.vault.json'));
    expect(await reopened.references()).toEqual(new Map([[2, 3]]));
    for (const [name, value] of Object.entries(secrets)) expect(Buffer.from(await reopened.get(kek, name)).equals(Buffer.from(value))).toBe(true);
    expect(await readAll(store)).toEqual(records);
    store.close();
    kek.close();

    const cli1 = ok(['keys', 'status', '--data-dir', dir]);
    expect(cli1.versions.map((v: { version: number; state: string; references: unknown }) => [v.version, v.state, v.references])).toEqual([
      [1, 'disabled', { store: 0, secrets: 0 }],
      [2, 'primary', { store: 21, secrets: 3 }],
    ]);
  });
});

if (!softHsmAvailable()) throw new Error('SoftHSM2 is needed for the PKCS#11 tests: apt-get install -y softhsm2');

describe('a PKCS#11 (SoftHSM2) data dir through the CLI', () => {
  let hsm: SoftHsm;
  let tok: SoftHsmToken;
  beforeAll(async () => {
    hsm = await startSoftHsm();
    tok = hsm.addToken();
  });
  afterAll(async () => {
    await hsm?.cleanup();
  });

  test('init, import, rotate, status, disable and destroy v1, emergency (v2 destroyed); the data still lists and reads; a wrong PIN is unauthenticated', async () => {
    const env = { SOFTHSM2_CONF: hsm.conf, AEGIS_PKCS11_PIN: tok.pin };
    const dir = freshDir('pkcs11');
    const init = ok(['client', 'init', '--kek', 'pkcs11', '--pkcs11-module', hsm.module, '--pkcs11-token', tok.label, '--data-dir', dir, '--plain', 'x,y'], env, tok.pin);
    expect(init.kek.kind).toBe('pkcs11');
    expect(JSON.parse(readFileSync(join(dir, 'kek.json'), 'utf8'))).toMatchObject({ kind: 'pkcs11', module: hsm.module, token: tok.label });
    const records = makeRecords(8, 'hsm');
    const file = join(root, 'hsm.jsonl');
    writeFileSync(file, records.map((r) => JSON.stringify(r)).join('\n'));
    expect(ok(['client', 'data', 'import', file, '--data-dir', dir], env, tok.pin).imported).toBe(8);

    const r = ok(['keys', 'rotate', '--data-dir', dir], env, tok.pin);
    expect(r).toMatchObject({ primary: 2, emergency: false, resumed: false, moved: { store: 33 } });
    const s = statusOf(dir, env);
    expect(s.kind).toBe('pkcs11');
    expect(s.states).toEqual({ 1: 'enabled', 2: 'primary' });
    expect(s.refs).toEqual({ 1: 0, 2: 33 });

    expect(ok(['keys', 'disable', '--version', '1', '--data-dir', dir], env, tok.pin).state).toBe('disabled');
    expect(ok(['keys', 'destroy', '--version', '1', '--data-dir', dir], env, tok.pin).state).toBe('destroyed');
    expect(statusOf(dir, env).states).toEqual({ 1: 'destroyed', 2: 'primary' });

    const listed = ok(['client', 'data', 'list', '--data-dir', dir], env, tok.pin);
    expect(listed.count).toBe(8);
    expect(listed.records[0].sensitive.sort()).toEqual(['address', 'lat', 'lon', 'transcript']);
    expect(versionCounts(rawValues(dir))).toEqual({ 2: 33 });
    // Read in process through the token (SOFTHSM2_CONF is in the real environment): every value opens.
    expect(await readDir(dir, tok.pin)).toEqual(records);

    // An emergency on a PKCS#11 dir: a new key object in the token, every value re-sealed, the old
    // object destroyed; no passphrase keyfile, so no new passphrase is asked for.
    const e = ok(['keys', 'rotate', '--emergency', '--data-dir', dir], env, tok.pin);
    expect(e).toMatchObject({ primary: 3, emergency: true, moved: { store: 33 }, disabled: [], destroyed: [2], resealed: [] });
    expect(statusOf(dir, env).states).toEqual({ 1: 'destroyed', 2: 'destroyed', 3: 'primary' });
    expect(failCode(['keys', 'enable', '--version', '2', '--data-dir', dir], env, tok.pin).code).toBe('failed-precondition');
    expect(versionCounts(rawValues(dir))).toEqual({ 3: 33 });
    expect(await readDir(dir, tok.pin)).toEqual(records);

    const bad = failCode(['keys', 'status', '--data-dir', dir], { ...env, AEGIS_PKCS11_PIN: 'not-the-pin-0' }, tok.pin);
    expect(bad.code).toBe('unauthenticated');
    const badList = failCode(['client', 'data', 'list', '--data-dir', dir], { ...env, AEGIS_PKCS11_PIN: 'not-the-pin-0' }, tok.pin);
    expect(badList.code).toBe('unauthenticated');
  });
});

describe('aegis keys: refusals', () => {
  test('destroy of the primary or an unknown version, disable of a referenced version, status without a KEK', async () => {
    const records = makeRecords(30, 'errors');
    const dir = cliDataDir('errors', records);

    expect(failCode(['keys', 'destroy', '--version', '1', '--data-dir', dir]).code).toBe('failed-precondition'); // the primary
    expect(failCode(['keys', 'destroy', '--version', '99', '--data-dir', dir]).code).toBe('not-found');
    expect(failCode(['keys', 'disable', '--version', '1', '--data-dir', dir]).code).toBe('failed-precondition'); // the primary

    // v1 no longer primary but still referenced: a rotation killed after one batch of 100.
    const k = rotateKilled(dir, 1);
    expect(k.signal).toBe('SIGKILL');
    expect(statusOf(dir).refs).toEqual({ 1: 121 - 100, 2: 100 });
    const dis = failCode(['keys', 'disable', '--version', '1', '--data-dir', dir]);
    expect(dis.code).toBe('failed-precondition');
    expect(dis.message).toContain('still protects 21 values in store');
    const des = failCode(['keys', 'destroy', '--version', '1', '--data-dir', dir]);
    expect(des.code).toBe('failed-precondition');
    expect(des.message).toMatch(/rotation is pending/);
    expect(statusOf(dir).states).toEqual({ 1: 'enabled', 2: 'primary' });

    // --force disables it anyway: the 21 values left under v1 no longer open, so finishing the
    // rotation (here, from data list) fails without losing anything…
    expect(ok(['keys', 'disable', '--version', '1', '--force', '--data-dir', dir]).state).toBe('disabled');
    expect(statusOf(dir).states).toEqual({ 1: 'disabled', 2: 'primary' });
    expect(failCode(['client', 'data', 'list', '--data-dir', dir]).code).toBe('decryption-failed');
    expect(existsSync(join(dir, ROTATION_JOURNAL))).toBe(true);
    // …and once enabled again, the rotation finishes and everything reads.
    expect(ok(['keys', 'enable', '--version', '1', '--data-dir', dir]).state).toBe('enabled');
    expect(ok(['keys', 'rotate', '--data-dir', dir])).toMatchObject({ primary: 2, resumed: true, moved: { store: 21 } });
    expect(await readDir(dir)).toEqual(records);

    // The new primary is refused too (it protects every value), an unknown version is not-found.
    expect(failCode(['keys', 'destroy', '--version', '2', '--data-dir', dir]).code).toBe('failed-precondition');
    expect(failCode(['keys', 'disable', '--version', '2', '--data-dir', dir, '--force']).code).toBe('failed-precondition');
    expect(failCode(['keys', 'enable', '--version', '99', '--data-dir', dir]).code).toBe('not-found');

    const empty = freshDir('no-kek');
    expect(failCode(['keys', 'status', '--data-dir', empty]).code).toBe('not-found');
    expect(failCode(['keys', 'rotate', '--data-dir', empty]).code).toBe('not-found');
    // Human-readable output also never carries the passphrase (checked in aegis()), and names versions.
    const human = aegis(['keys', 'status', '--data-dir', dir]);
    expect(human.status).toBe(0);
    expect(human.stdout).toMatch(/v1\s+enabled/);
    expect(human.stdout).toMatch(/v2\s+primary .*store 121/);
  });
});
