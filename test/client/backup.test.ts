/**
 * Client backups, exports and restores (client/store/backup.ts): all or nothing, only with the
 * right key, one error for every damaged file, audit-logged, and never a plaintext file.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditBook } from '../../client/audit/audit.js';
import { restoreBackup, writeBackup } from '../../client/store/backup.js';
import { SqliteDataStore } from '../../client/store/sqlite.js';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { createRecipientIdentity, openRecipientIdentity } from '../../shared/keystore/stream.js';
import { codeOfAsync } from '../support/codes.js';

const PASS = 'backup test data passphrase';
const BACKUP_PASS = 'the backup passphrase 77';
const FAST = { N: 2 ** 14, r: 8, p: 1 };
const secrets = { passphrase: async () => PASS, pin: async () => '' };
const records = Array.from({ length: 1200 }, (_, i) => ({ address: `${i} Elm Street`, lat: 40 + i / 1e4, lon: -70 - i / 1e4, transcript: `note ${i} — café`, x: [i, i / 2], y: i % 3 }));

let root: string;
let src: string;
let backup: string;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'aegis-backup-'));
  src = join(root, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'client.json'), '{"version":1}\n');
  const kek = await PassphraseKek.create(join(src, 'kek.keyfile.json'), PASS, { kdf: FAST });
  const store = await SqliteDataStore.open(src, kek);
  await store.importRecords(records, { sensitive: ['x'] });
  backup = join(root, 'b.aegis');
  const w = await writeBackup(src, store, backup, { passphrase: BACKUP_PASS, kdf: FAST }, 'backup');
  expect(w).toMatchObject({ records: 1200, files: 1 });
  store.close();
  kek.close();
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function readAll(dir: string): Promise<unknown[]> {
  const kek = await PassphraseKek.open(join(dir, 'kek.keyfile.json'), PASS);
  const store = await SqliteDataStore.open(dir, kek);
  const out: unknown[] = [];
  for await (const r of store.plainRecords()) out.push(r);
  store.close();
  kek.close();
  return out;
}

describe('backup and restore', () => {
  test('a restore into a fresh dir brings back every record (ids, values, sensitivity) under a new KEK, and is audit-logged on both sides', async () => {
    const r = await restoreBackup(backup, { passphrase: BACKUP_PASS }, join(root, 'r1'), { kind: 'passphrase' }, secrets);
    expect(r).toMatchObject({ kind: 'backup', records: 1200, files: ['client.json'] });
    expect(await readAll(join(root, 'r1'))).toEqual(await readAll(src));
    // The new dir has its own KEK: the old keyfile opens nothing there.
    expect(readFileSync(join(root, 'r1', 'kek.keyfile.json')).equals(readFileSync(join(src, 'kek.keyfile.json')))).toBe(false);
    expect((await (await AuditBook.open(src)).logLines()).map((l) => l.event)).toEqual(['backup']);
    expect((await (await AuditBook.open(join(root, 'r1'))).logLines()).map((l) => [l.event, l.records, l.protectedBy])).toEqual([['restore', 1200, 'passphrase']]);
  });

  test('only the right key restores; a wrong one leaves no dir behind', async () => {
    const wrong = await restoreBackup(backup, { passphrase: 'not the right passphrase' }, join(root, 'r2'), { kind: 'passphrase' }, secrets).catch((e: unknown) => e as Error & { code?: string });
    // One message for every cause, naming the file and what to check, never the passphrase.
    expect(wrong).toMatchObject({ code: 'decryption-failed', message: `decryption failed: ${backup} does not open: the backup passphrase (AEGIS_BACKUP_PASSPHRASE or the prompt) is wrong, or the file was altered` });
    expect(existsSync(join(root, 'r2'))).toBe(false);
    expect(readdirSync(root).filter((f) => f.includes('restoring'))).toEqual([]);
  });

  test('truncated, bit-flipped or extended files fail with one and the same error, and restore nothing', async () => {
    const bytes = readFileSync(backup);
    const cases: [string, Buffer][] = [
      ['truncated at a chunk end', bytes.subarray(0, bytes.length - 100)],
      ['truncated mid-way', bytes.subarray(0, Math.floor(bytes.length / 2))],
      ['bit flipped', Buffer.from(bytes).fill(bytes[bytes.length >> 1]! ^ 1, bytes.length >> 1, (bytes.length >> 1) + 1)],
      ['trailing data', Buffer.concat([bytes, Buffer.from([0])])],
    ];
    const messages = new Set<string>();
    for (const [name, b] of cases) {
      const f = join(root, `bad-${name.replaceAll(' ', '-')}.aegis`);
      writeFileSync(f, b, { mode: 0o600 });
      const target = join(root, `r-${name.replaceAll(' ', '-')}`);
      try {
        await restoreBackup(f, { passphrase: BACKUP_PASS }, target, { kind: 'passphrase' }, secrets);
        throw new Error(`${name}: restored`);
      } catch (e) {
        expect([name, (e as { code?: string }).code]).toEqual([name, 'decryption-failed']);
        messages.add((e as Error).message);
      }
      expect(existsSync(target)).toBe(false);
    }
    // The same message as a wrong passphrase's, but for the file's name.
    expect([...new Set([...messages].map((m) => m.replace(/\/\S+ does not open/, 'FILE does not open')))]).toEqual(['decryption failed: FILE does not open: the backup passphrase (AEGIS_BACKUP_PASSPHRASE or the prompt) is wrong, or the file was altered']);
  });

  test('a non-empty target dir is refused', async () => {
    expect(await codeOfAsync(restoreBackup(backup, { passphrase: BACKUP_PASS }, src, { kind: 'passphrase' }, secrets))).toBe('already-exists');
  });

  test('an export to a recipient key restores only with that identity', async () => {
    const idPath = join(root, 'id.json');
    const { recipient } = await createRecipientIdentity(idPath, PASS, FAST);
    const other = await createRecipientIdentity(join(root, 'other.json'), PASS, FAST);
    expect(other.recipient).not.toBe(recipient);
    const kek = await PassphraseKek.open(join(src, 'kek.keyfile.json'), PASS);
    const store = await SqliteDataStore.open(src, kek);
    const out = join(root, 'e.aegis');
    expect(await writeBackup(src, store, out, { x25519: recipient }, 'export')).toMatchObject({ records: 1200, files: 0 });
    expect(await codeOfAsync(writeBackup(src, store, join(src, 'inside.aegis'), { x25519: recipient }, 'export'))).toBe('invalid-argument');
    store.close();
    kek.close();
    const wrongId = await openRecipientIdentity(join(root, 'other.json'), PASS);
    expect(await restoreBackup(out, { identity: wrongId }, join(root, 'e1'), { kind: 'passphrase' }, secrets).catch((e: unknown) => e)).toMatchObject({
      code: 'decryption-failed',
      message: `decryption failed: ${out} does not open: the identity is not one the file was encrypted to, or the file was altered`,
    });
    wrongId.close();
    const id = await openRecipientIdentity(idPath, PASS);
    const r = await restoreBackup(out, { identity: id }, join(root, 'e2'), { kind: 'passphrase' }, secrets);
    id.close();
    expect(r).toMatchObject({ kind: 'export', records: 1200, files: [] });
    expect(await readAll(join(root, 'e2'))).toEqual(await readAll(src));
    const lines = await (await AuditBook.open(src)).logLines();
    expect(lines.at(-1)).toMatchObject({ event: 'export', records: 1200, protectedBy: expect.stringMatching(/^x25519:[0-9a-f]{16}$/) });
  });
});
