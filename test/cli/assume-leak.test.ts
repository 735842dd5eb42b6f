/**
 * Assume leak: whatever lands on disk or in a log is treated as already in an attacker's hands,
 * so none of it may hold a secret in clear. A whole client and coordinator life run from the
 * command line with debug logging — init, import, a training round, backup, export, restore,
 * rotation, emergency rotation — with canary values unique to this run planted in the client's
 * data. Then every byte an attacker could take is scanned for every encoding of every canary and
 * of every key:
 *
 *   DB dump      store.db with its live -wal and -shm (copied while a writer holds them open), and
 *                every other file of the client and coordinator data dirs
 *   backup dump  the backup and the export files
 *   logs         everything every process printed (stdout and stderr, debug level), and audit.log
 *
 * A planted canary in the scanned set must be found (positive control), so the scans cannot pass
 * by finding nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { splitDigits } from '../../bench/demo/mnist.js';
import { SqliteDataStore } from '../../client/store/sqlite.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { parseSealedHeader } from '../../shared/keystore/envelope.js';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { readKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import { SealedVault } from '../../shared/keystore/vault.js';
import { DIGITS_TRAINING, digitsModel } from '../../shared/model/digits.js';
import { loadTf } from '../../shared/model/tfjs.js';
import { encodingsOf, filesUnder, makeCanaries, PLANTED_WHAT, plantedFile, scanFilesReport, type Needle } from '../support/canary.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';
import { manifest as jobManifest, waitFor } from '../support/cluster.js';

const c = makeCanaries();
/** dev-0's passphrase after its emergency rotation. */
const newPassphrase = `rekeyed ${c.runId} passphrase`;
const env = { ...process.env, AEGIS_PASSPHRASE: c.passphrase, AEGIS_BACKUP_PASSPHRASE: c.token, AEGIS_LOG_LEVEL: 'debug' };
const logs: string[] = [];
const children: ChildProcess[] = [];
let root: string;
let coordDir: string;

const aegis = (args: string[], extraEnv: NodeJS.ProcessEnv = {}): CliRun => {
  const r = runCli(args, { ...env, ...extraEnv }, 100_000);
  logs.push(r.stdout, r.stderr);
  return r;
};
const spawnLogged = (args: string[]): ChildProcess => {
  const p = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout!.on('data', (d: Buffer) => logs.push(d.toString('utf8')));
  p.stderr!.on('data', (d: Buffer) => logs.push(d.toString('utf8')));
  children.push(p);
  return p;
};

/** Key-material needles (raw, hex, base64, base64url at every alignment) for `key`. */
const keyNeedles = (key: Uint8Array, label: string): Needle[] =>
  encodingsOf({ ...c, key: Buffer.from(key) })
    .filter((n) => n.what.split(' | ').some((w) => w.startsWith('key')))
    .map((n) => ({ what: `${label}: ${n.what}`, bytes: n.bytes }));

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), `aegis-leak-${c.runId}-`));
  coordDir = join(root, 'coord');
  spawnLogged(['coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--allow-unsigned']);
  await waitFor(() => existsSync(join(coordDir, 'coordinator.json')), 30_000, 'the coordinator to listen');
});

afterAll(() => {
  for (const p of children) p.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('assume leak: no canary and no key in any DB, backup, export or log', () => {
  test('a full client life with debug logs leaves nothing readable behind', async () => {
    const { address, enrollAddress } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { address: string; enrollAddress: string };
    const split = splitDigits({ clients: 3, perDigitLimit: 15, seed: 4 });
    const dirs = [0, 1, 2].map((i) => join(root, `dev-${i}`));
    for (const [i, dir] of dirs.entries()) {
      const inv = cliJson(aegis(['clients', 'invite', '--data-dir', coordDir, '--json']));
      expect(aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', dir, '--id', `dev-${i}`]).status).toBe(0);
      expect(existsSync(join(dir, 'store.db'))).toBe(true); // enrollment made the KEK and the store
      // Every record carries the canaries next to the model's features and label.
      const data = join(root, `data-${i}.jsonl`);
      writeFileSync(data, split.shards[i]!.map((r) => JSON.stringify({ address: c.address, lat: c.lat, lon: c.lon, transcript: c.transcript, pixels: Array.from(r.pixels as Float32Array), digit: r.digit })).join('\n'));
      expect(cliJson(aegis(['client', 'data', 'import', data, '--data-dir', dir, '--json'])).imported).toBe(split.shards[i]!.length);
      rmSync(data);
    }
    // A file with only the four mandated columns imports too (CSV).
    const csv = join(root, 'only-sensitive.csv');
    writeFileSync(csv, `address,lat,lon,transcript\n"${c.address}",${c.lat},${c.lon},"${c.transcript.replaceAll('"', '""')}"\n`);
    expect(aegis(['client', 'init', '--data-dir', join(root, 'dev-csv')]).status).toBe(0);
    expect(cliJson(aegis(['client', 'data', 'import', csv, '--data-dir', join(root, 'dev-csv'), '--json'])).imported).toBe(1);
    rmSync(csv);

    // Training: every client reads their examples from the encrypted store.
    const runners = dirs.map((dir) => spawnLogged(['client', 'run', '--data-dir', dir, '--allow-unsigned']));
    const { tf } = await loadTf();
    const { spec, weights } = await digitsModel(tf, { hidden: 8, seed: 2 });
    const manifest = join(root, 'job.json');
    writeFileSync(
      manifest,
      jobManifest({
        jobId: 'leak-check',
        round: { dim: weights.length, cohort: 3, clip: 2048, bits: 24 },
        deadlines: { advertiseMs: 10_000, shareMs: 10_000, maskedMs: 60_000, consistencyMs: 10_000, unmaskMs: 10_000 },
        model: spec,
        training: { ...DIGITS_TRAINING, epochs: 1 },
      }),
    );

    const weightsPath = join(root, 'w0.bin');
    writeFileSync(weightsPath, weightBytes(weights));
    const launched = aegis(['round', 'launch', '--data-dir', coordDir, '--manifest', manifest, '--weights', weightsPath, '--gather', '30s', '--wait', '--json']);
    expect(launched.stdout + launched.stderr.slice(-800)).toMatch(/"state":"completed"/);
    expect(cliJson(launched).status.training).toMatchObject({ state: 'completed', rounds_completed: 1 });
    for (const p of runners) p.kill('SIGTERM');
    await Promise.all(runners.map((p) => new Promise((r) => (p.exitCode !== null ? r(null) : p.once('exit', r)))));

    // A live writer: the store open with uncommitted-to-main-file pages in its WAL, copied as is.
    const dev0 = dirs[0]!;
    const snap = join(root, 'snapshot');
    mkdirSync(snap);
    {
      const kek = await PassphraseKek.open(join(dev0, 'kek.keyfile.json'), c.passphrase);
      const store = await SqliteDataStore.open(dev0, kek);
      await store.importRecords([{ address: c.address, lat: c.lat, lon: c.lon, transcript: c.transcript, pixels: [0.5, 0.25], digit: 3 }]);
      for (const s of ['', '-wal', '-shm']) if (existsSync(join(dev0, `store.db${s}`))) copyFileSync(join(dev0, `store.db${s}`), join(snap, `store.db${s}`));
      store.close();
      kek.close();
    }

    // Backup, export, restores (one with the wrong key), rotation and emergency rotation.
    const backup = join(root, 'out', 'dev-0.backup');
    mkdirSync(join(root, 'out'));
    expect(cliJson(aegis(['client', 'backup', '--data-dir', dev0, '--out', backup, '--json']))).toMatchObject({ ok: true, records: split.shards[0]!.length + 1 });
    const id = cliJson(aegis(['keys', 'recipient', '--out', join(root, 'recipient.id'), '--json']));
    const exported = join(root, 'out', 'dev-0.export');
    expect(cliJson(aegis(['client', 'export', '--data-dir', dev0, '--out', exported, '--recipient', id.recipient, '--json'])).ok).toBe(true);
    const wrong = aegis(['client', 'restore', backup, '--data-dir', join(root, 'restored-wrong'), '--json'], { AEGIS_BACKUP_PASSPHRASE: 'not the backup passphrase' });
    expect(cliJson(wrong).error).toMatchObject({ code: 'decryption-failed', message: expect.stringContaining(`${backup} does not open: the backup passphrase`) });
    expect(wrong.stdout).not.toContain('not the backup passphrase');
    expect(existsSync(join(root, 'restored-wrong'))).toBe(false);
    expect(cliJson(aegis(['client', 'restore', backup, '--data-dir', join(root, 'restored'), '--json']))).toMatchObject({ ok: true, records: split.shards[0]!.length + 1 });
    expect(cliJson(aegis(['client', 'restore', exported, '--data-dir', join(root, 'restored-export'), '--identity', join(root, 'recipient.id'), '--json'])).records).toBe(split.shards[0]!.length + 1);
    expect(cliJson(aegis(['keys', 'rotate', '--data-dir', dev0, '--json'])).primary).toBe(2);
    // The emergency assumes the passphrase leaked too: dev-0 moves to a new one, and its old KEK
    // versions (captured here, before they are destroyed) are scanned for like the live ones.
    const oldKeks = await readKeyfile(join(dev0, 'kek.keyfile.json'), c.passphrase, { expectedLabel: 'aegis-kek' });
    expect(cliJson(aegis(['keys', 'rotate', '--emergency', '--data-dir', dev0, '--json'], { AEGIS_NEW_PASSPHRASE: newPassphrase }))).toMatchObject({ primary: 3, disabled: [], destroyed: [1, 2] });
    // A key change refuses the dir of a running coordinator; stopped, the dir rotates.
    expect(cliJson(aegis(['keys', 'rotate', '--data-dir', coordDir, '--json'])).error.code).toBe('failed-precondition');
    const coordinator = children[0]!;
    const stopped = new Promise((resolve) => (coordinator.exitCode !== null ? resolve(null) : coordinator.once('exit', resolve)));
    coordinator.kill('SIGTERM');
    await stopped;
    expect(cliJson(aegis(['keys', 'rotate', '--data-dir', coordDir, '--json'])).primary).toBe(2);
    // Every backup and export is in the audit log.
    const audit = readFileSync(join(dev0, 'audit.log'), 'utf8');
    expect(audit).toMatch(/"event":"backup"/);
    expect(audit).toMatch(/"event":"export"/);

    // The keys an attacker would need: every KEK version of every dir, DEKs of live values, and the coordinator's secrets.
    const needles = encodingsOf(c);
    for (const [name, v] of Object.entries(oldKeks)) if (/^v\d+$/.test(name)) needles.push(...keyNeedles(v, `destroyed KEK ${name} of ${dev0}`));
    for (const dir of [...dirs, join(root, 'dev-csv'), join(root, 'restored'), join(root, 'restored-export'), coordDir]) {
      const secrets = await readKeyfile(join(dir, 'kek.keyfile.json'), dir === dev0 ? newPassphrase : c.passphrase, { expectedLabel: 'aegis-kek' });
      for (const [name, v] of Object.entries(secrets)) if (/^v\d+$/.test(name)) needles.push(...keyNeedles(v, `KEK ${name} of ${dir}`));
    }
    const kek0 = await PassphraseKek.open(join(dev0, 'kek.keyfile.json'), newPassphrase);
    const db = new Database(join(dev0, 'store.db'), { readonly: true });
    const sealed = db.prepare<[], { value: Buffer }>('SELECT value FROM fields WHERE sensitive = 1 LIMIT 8').all();
    db.close();
    expect(sealed.length).toBe(8);
    for (const [i, s] of sealed.entries()) {
      const h = parseSealedHeader(new Uint8Array(s.value));
      needles.push(...keyNeedles(await kek0.unwrap(h.wrappedDek, h.kekVersion), `DEK ${i}`));
    }
    kek0.close();
    const coordKek = await PassphraseKek.open(join(coordDir, 'kek.keyfile.json'), c.passphrase);
    const vault = await SealedVault.open(join(coordDir, 'secrets.vault.json'));
    for (const name of ['ca-seed', 'token-seed', 'operator-seed']) needles.push(...keyNeedles(await vault.get(coordKek, name), `coordinator ${name}`));
    coordKek.close();

    // Everything printed by every process, and the positive control.
    const logFile = join(root, 'all-output.log');
    writeFileSync(logFile, logs.join('\n'));
    expect(logs.join('').length).toBeGreaterThan(1000);
    const planted = plantedFile(snap, c);

    const files = [...filesUnder(root).filter((f) => f !== planted), planted];
    const report = scanFilesReport(files, needles);
    // The scan covered what it must: the live WAL, the backup, the export, the logs.
    const scanned = new Map(report.scanned.map((s) => [s.file, s.bytes]));
    for (const f of [join(snap, 'store.db'), join(snap, 'store.db-wal'), backup, exported, logFile, join(dev0, 'audit.log')]) expect(scanned.get(f) ?? 0).toBeGreaterThan(0);
    // The positive control is found, and nothing else anywhere.
    const plantedHits = report.hits.filter((h) => h.file === planted).flatMap((h) => h.what.split(' | '));
    for (const w of PLANTED_WHAT) expect(plantedHits).toContain(w);
    expect(report.hits.filter((h) => h.file !== planted)).toEqual([]);
  });
});

describe('assume leak, default deny: columns named in any case, by synonym or in French are sealed', () => {
  test('CSV and JSONL with Address, GPS, latitude, longitude, Transcript, home_address, Adresse, coordonnées, Rue: no canary in store.db, -wal, journal, backup or export', async () => {
    const dir = join(root, 'dev-names');
    const q = (s: string): string => `"${s.replaceAll('"', '""')}"`;
    // A mandatory class cannot be declared plain at init: refused, exit 2, nothing created.
    const refused = aegis(['client', 'init', '--data-dir', dir, '--plain', 'label,Home-Address', '--json']);
    expect(refused.status).toBe(2);
    expect(cliJson(refused).error).toMatchObject({ code: 'invalid-argument' });
    expect(cliJson(refused).error.message).toMatch(/'Home-Address'.*postal address/);
    expect(existsSync(dir)).toBe(false);
    expect(cliJson(aegis(['client', 'init', '--data-dir', dir, '--plain', 'Label', '--json']))).toMatchObject({ ok: true, schema: { version: 2, plain: ['label'] } });

    const columns = ['Address', 'GPS', 'latitude', 'longitude', 'Transcript', 'home_address', 'Adresse', 'coordonnées', 'Rue', 'label'];
    const csv = join(root, 'names.csv');
    writeFileSync(
      csv,
      `${columns.join(',')}\n${[q(c.address), q(`${c.lat},${c.lon}`), String(c.lat), String(c.lon), q(c.transcript), q(c.address), q(c.address), q(`${c.lat} ${c.lon}`), q(c.address), '7'].join(',')}\n`,
    );
    expect(cliJson(aegis(['client', 'data', 'import', csv, '--data-dir', dir, '--json'])).imported).toBe(1);
    // JSONL: numbers as numbers and as strings, other spellings of the same columns.
    const jsonl = join(root, 'names.jsonl');
    const rec = { ADDRESS: c.address, gps: [c.lat, c.lon], Latitude: String(c.lat), LONGITUDE: c.lon, 'voice transcript': c.transcript, HomeAddress: c.address, 'Adresse postale': c.address, coordonnees: `${c.lat};${c.lon}`, rue: c.address, label: 8 };
    writeFileSync(jsonl, `${JSON.stringify(rec)}\n${JSON.stringify({ user_lat: c.lat, user_lon: String(c.lon), label: 9 })}\n`);
    expect(cliJson(aegis(['client', 'data', 'import', jsonl, '--data-dir', dir, '--json'])).imported).toBe(2);
    rmSync(csv);
    rmSync(jsonl);

    // Asking for a mandatory column to be plain later is refused and changes nothing.
    const before = cliJson(aegis(['client', 'data', 'schema', '--data-dir', dir, '--json'])).schema;
    for (const col of ['Address', 'home_address', 'coordonnées', 'GPS']) {
      const r = aegis(['client', 'data', 'schema', '--plain', col, '--data-dir', dir, '--json']);
      expect([col, r.status, cliJson(r).error.code]).toEqual([col, 2, 'invalid-argument']);
    }
    expect(cliJson(aegis(['client', 'data', 'schema', '--data-dir', dir, '--json'])).schema).toEqual(before);
    // A schema change is in the audit log (names and classes only); a new column of a later import is sealed.
    expect(cliJson(aegis(['client', 'data', 'schema', '--plain', 'note', '--data-dir', dir, '--json']))).toMatchObject({ ok: true, changes: [{ field: 'note', from: 'default', to: 'plain' }], schema: { version: 3 } });
    const audit = readFileSync(join(dir, 'audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.event === 'schema');
    expect(audit.map((l) => [l.schemaVersion, l.changes])).toEqual([
      [2, [{ field: 'label', from: 'default', to: 'plain' }]],
      [3, [{ field: 'note', from: 'default', to: 'plain' }]],
    ]);
    const later = join(root, 'later.jsonl');
    writeFileSync(later, `${JSON.stringify({ label: 1, note: 'n', brand_new_column: c.transcript })}\n`);
    expect(cliJson(aegis(['client', 'data', 'import', later, '--data-dir', dir, '--json'])).imported).toBe(1);
    rmSync(later);

    // `data list` shows the schema and every canary column sealed; label and note plain.
    const listed = cliJson(aegis(['client', 'data', 'list', '--data-dir', dir, '--json']));
    const cls = Object.fromEntries((listed.schema.fields as { field: string; class: string }[]).map((f) => [f.field, f.class]));
    expect(listed.schema.version).toBe(3);
    for (const f of ['address', 'gps', 'latitude', 'longitude', 'transcript', 'home_address', 'adresse', 'coordonnées', 'coordonnees', 'rue', 'voice_transcript', 'adresse_postale', 'user_lat', 'user_lon', 'brand_new_column']) {
      expect([f, cls[f]]).toEqual([f, 'sealed']);
    }
    expect([cls.label, cls.note]).toEqual(['plain', 'plain']);
    for (const r of listed.records as { fields: string[]; sensitive: string[] }[]) expect(r.fields.filter((f) => !r.sensitive.includes(f)).sort()).toEqual(r.fields.includes('note') ? ['label', 'note'] : ['label']);
    const text = aegis(['client', 'data', 'list', '--data-dir', dir]).stdout;
    expect(text).toMatch(/field schema version 3/);
    expect(text).toMatch(/home_address {2}sealed {2}\(always \(postal address\)\)/);
    expect(text).toMatch(/label {2}plain {2}\(declared\)/);

    // An update through the CLI: a new record version.
    const id = (listed.records as { id: string }[])[0]!.id;
    expect(cliJson(aegis(['client', 'data', 'update', id, '--set', `Transcript=${c.transcript}`, '--set', 'label=5', '--data-dir', dir, '--json']))).toMatchObject({ ok: true, id, version: 2 });

    // The plain field is stored in clear (the check that the scan below could see a value).
    {
      const db = new Database(join(dir, 'store.db'), { readonly: true });
      const rows = db.prepare<[], { name: string; sensitive: number; value: Buffer }>('SELECT name, sensitive, value FROM fields').all();
      db.close();
      expect(rows.filter((r) => r.sensitive === 0).map((r) => r.name).sort()).toEqual(['label', 'label', 'label', 'label', 'note']);
      expect(rows.filter((r) => r.name === 'label').map((r) => r.value.toString()).sort()).toEqual(['1', '5', '8', '9']);
    }

    // A live writer: the store open with a fresh import in its WAL (and a rollback journal's name checked too), copied as is.
    const snap = join(root, 'snapshot-names');
    mkdirSync(snap);
    {
      const kek = await PassphraseKek.open(join(dir, 'kek.keyfile.json'), c.passphrase);
      const store = await SqliteDataStore.open(dir, kek);
      await store.importRecords([{ Adresse: c.address, 'Coordonnées GPS': `${c.lat}, ${c.lon}`, Lat: c.lat, LON: c.lon, Transcription: c.transcript, label: 2 }]);
      for (const s of ['', '-wal', '-shm', '-journal']) if (existsSync(join(dir, `store.db${s}`))) copyFileSync(join(dir, `store.db${s}`), join(snap, `store.db${s}`));
      store.close();
      kek.close();
    }
    const backup = join(root, 'out-names', 'names.backup');
    mkdirSync(join(root, 'out-names'));
    expect(cliJson(aegis(['client', 'backup', '--data-dir', dir, '--out', backup, '--json']))).toMatchObject({ ok: true, records: 5 });
    const rid = cliJson(aegis(['keys', 'recipient', '--out', join(root, 'names-recipient.id'), '--json']));
    const exported = join(root, 'out-names', 'names.export');
    expect(cliJson(aegis(['client', 'export', '--data-dir', dir, '--out', exported, '--recipient', rid.recipient, '--json'])).ok).toBe(true);
    // The backup restores with the same classes: label plain, the rest sealed.
    const restored = join(root, 'restored-names');
    expect(cliJson(aegis(['client', 'restore', backup, '--data-dir', restored, '--json']))).toMatchObject({ ok: true, records: 5 });
    const rl = cliJson(aegis(['client', 'data', 'list', '--data-dir', restored, '--json']));
    expect((rl.schema.fields as { field: string; class: string }[]).filter((f) => f.class === 'plain').map((f) => f.field)).toEqual(['label', 'note']);

    const planted = plantedFile(join(root, 'planted-names'), c);
    // Everything the commands printed at debug level (the refused ones included).
    const logFile = join(root, 'names-output.log');
    writeFileSync(logFile, logs.join('\n'));
    const files = [...filesUnder(dir), ...filesUnder(snap), ...filesUnder(restored), backup, exported, logFile, planted];
    const report = scanFilesReport(files, encodingsOf(c));
    const scanned = new Map(report.scanned.map((s) => [s.file, s.bytes]));
    for (const f of [join(dir, 'store.db'), join(snap, 'store.db'), join(snap, 'store.db-wal'), join(restored, 'store.db'), backup, exported, logFile]) expect([f, (scanned.get(f) ?? 0) > 0]).toEqual([f, true]);
    const plantedHits = report.hits.filter((h) => h.file === planted).flatMap((h) => h.what.split(' | '));
    for (const w of PLANTED_WHAT) expect(plantedHits).toContain(w);
    expect(report.hits.filter((h) => h.file !== planted)).toEqual([]);
  });
});
