/**
 * The KEK lifecycle (shared/keystore/kek.ts) on the passphrase provider: the rotation matrix,
 * persistence of every state across a re-open, and the keyfile keeping no destroyed key.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { readKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import { codeOfAsync } from '../support/codes.js';
import { runRotationMatrix } from '../support/kek-matrix.js';

const FAST = { N: 2 ** 14, r: 8, p: 1 };
const PASS = 'lifecycle passphrase 42';
const dir = mkdtempSync(join(tmpdir(), 'aegis-kek-life-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('passphrase KEK lifecycle', () => {
  test('rotation matrix: every value opens exactly while its KEK version is usable', async () => {
    const kek = await PassphraseKek.create(join(dir, 'matrix.json'), PASS, { kdf: FAST });
    const rows = await runRotationMatrix(kek);
    expect(rows.map((r) => r.stage)).toEqual(['old primary', 'new added', 'new primary', 'old disabled', 'old re-enabled', 'old destroyed']);
    expect(rows.at(-1)!.states).toEqual({ 1: 'destroyed', 2: 'primary' });
    kek.close();
  });

  test('states persist across a re-open; a destroyed key is gone from the sealed file', async () => {
    const path = join(dir, 'persist.json');
    const kek = await PassphraseKek.create(path, PASS, { kdf: FAST });
    await kek.rotate(); // v2 primary
    await kek.addVersion(); // v3 enabled
    await kek.disable(1);
    kek.close();
    const again = await PassphraseKek.open(path, PASS);
    expect((await again.versions()).map((v) => [v.version, v.state])).toEqual([
      [1, 'disabled'],
      [2, 'primary'],
      [3, 'enabled'],
    ]);
    for (const v of await again.versions()) expect(Number.isNaN(Date.parse(v.createdAt))).toBe(false);
    await again.destroy(1);
    again.close();
    const secrets = await readKeyfile(path, PASS, { expectedLabel: 'aegis-kek' });
    expect(Object.keys(secrets).sort()).toEqual(['kek-id', 'primary', 'states', 'v2', 'v3']);
    const third = await PassphraseKek.open(path, PASS);
    expect((await third.versions()).map((v) => v.state)).toEqual(['destroyed', 'primary', 'enabled']);
    // A destroyed version is never re-used: the next one is 4.
    expect(await third.addVersion()).toBe(4);
    // Wrapping under a version that is not usable is refused with a clear code.
    expect(await codeOfAsync(third.wrap(new Uint8Array(32), 1))).toBe('failed-precondition');
    expect(await codeOfAsync(third.wrap(new Uint8Array(32), 9))).toBe('not-found');
    expect(await codeOfAsync(third.setPrimary(1))).toBe('failed-precondition');
    third.close();
  });
});
