/**
 * The operator records (DATA_DIR/operators.json): two front ends sharing a data dir write them
 * concurrently and neither drops the other's records; a revocation is never lost in the merge
 * (the earliest one stays); records of certificates long expired are dropped; a malformed file is
 * refused by name, never half read.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OperatorBook, type OperatorRecord } from '../../coordinator/auth/operators.js';

const root = mkdtempSync(join(tmpdir(), 'aegis-operators-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => {
  const d = join(root, `d${n++}`);
  mkdirSync(d);
  return d;
};

const NOW = Date.UTC(2030, 0, 1);
const rec = (name: string, serial: string, extra: Partial<OperatorRecord> = {}): OperatorRecord => ({ name, serial, issuedAt: NOW, expiresAt: NOW + 7 * 86_400_000, ...extra });

describe('operators.json', () => {
  test('two front ends writing at once keep every record of both', async () => {
    const dir = freshDir();
    const a = new OperatorBook({ dataDir: dir, clock: () => NOW });
    const b = new OperatorBook({ dataDir: dir, clock: () => NOW });
    await Promise.all(
      Array.from({ length: 16 }, (_, i) => {
        const book = i % 2 ? a : b;
        const serial = (0x100 + i).toString(16);
        return book.update((m) => m.set(serial, rec(`op-${i}`, serial)));
      }),
    );
    const onDisk = JSON.parse(readFileSync(join(dir, 'operators.json'), 'utf8')) as { operators: OperatorRecord[] };
    expect(onDisk.operators.map((r) => r.name).sort()).toEqual(Array.from({ length: 16 }, (_, i) => `op-${i}`).sort());
    // A third process reading the file sees them all.
    expect(await new OperatorBook({ dataDir: dir, clock: () => NOW }).list()).toHaveLength(16);
  });

  test('a revocation is never lost when records merge', async () => {
    const dir = freshDir();
    const a = new OperatorBook({ dataDir: dir, clock: () => NOW });
    const b = new OperatorBook({ dataDir: dir, clock: () => NOW });
    await a.update((m) => m.set('abc', rec('bob', 'abc')));
    await b.list(); // b knows bob, unrevoked
    await a.update((m) => m.set('abc', { ...m.get('abc')!, revokedAt: NOW + 10, reason: 'key-compromise', detail: 'laptop stolen' }));
    // b, still holding the unrevoked record in memory, writes something else: the revocation stays.
    await b.update((m) => m.set('def', rec('carol', 'def')));
    const bob = (await new OperatorBook({ dataDir: dir, clock: () => NOW }).list()).find((r) => r.serial === 'abc');
    expect(bob).toMatchObject({ revokedAt: NOW + 10, reason: 'key-compromise', detail: 'laptop stolen' });
  });

  test('records of certificates expired over 30 days ago are dropped at the next write', async () => {
    const dir = freshDir();
    const now = { t: NOW };
    const book = new OperatorBook({ dataDir: dir, clock: () => now.t });
    await book.update((m) => m.set('a1', rec('old', 'a1')));
    now.t = NOW + 7 * 86_400_000 + 31 * 86_400_000;
    await book.update((m) => m.set('b2', rec('new', 'b2', { issuedAt: now.t, expiresAt: now.t + 86_400_000 })));
    expect((await new OperatorBook({ dataDir: dir, clock: () => now.t }).list()).map((r) => r.name)).toEqual(['new']);
  });

  test('a malformed file is refused by name and left as it is', async () => {
    const dir = freshDir();
    writeFileSync(join(dir, 'operators.json'), '{"version": 1, "operators": [{"name": "x"}]}');
    const book = new OperatorBook({ dataDir: dir, clock: () => NOW });
    await expect(book.list()).rejects.toMatchObject({ code: 'malformed', message: 'operators.json is not an operator records file' });
    await expect(book.update((m) => m.set('aa', rec('y', 'aa')))).rejects.toMatchObject({ code: 'malformed' });
    expect(readFileSync(join(dir, 'operators.json'), 'utf8')).toBe('{"version": 1, "operators": [{"name": "x"}]}');
  });
});
