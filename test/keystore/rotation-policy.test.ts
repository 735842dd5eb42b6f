/**
 * Time-based key rotation (shared/keystore/policy.ts) on real data dirs, real KEKs (passphrase
 * keyfile), the real store and vault: the clock is moved, never waited for.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteDataStore } from '../../client/store/sqlite.js';
import { AuthError, TokenIssuer, TokenVerifier } from '../../coordinator/auth/tokens.js';
import { openCoordinatorSecrets } from '../../coordinator/service/data-dir.js';
import { initKek } from '../../shared/keystore/kek-config.js';
import { VAULT_FILE } from '../../shared/keystore/keys-cli.js';
import { checkPolicy, DAY_MS, dueAt, isDue, keyAges, pruneTokenKeys, readKeysFile, rotateDueKeys, tokenKeyState, TOKEN_KEY_RETENTION_MS } from '../../shared/keystore/policy.js';
import { SealedVault } from '../../shared/keystore/vault.js';

const PASS = 'rotation policy passphrase 51c2';
const secrets = { passphrase: async () => PASS, pin: async () => '' };
const root = mkdtempSync(join(tmpdir(), 'aegis-policy-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string): string => {
  const d = join(root, `${name}-${++n}`);
  mkdirSync(d, { mode: 0o700 });
  return d;
};

describe('due dates', () => {
  test('a key is due exactly its period after it was made; defaults are 90 days', () => {
    const t0 = Date.parse('2024-01-01T00:00:00Z');
    expect(checkPolicy()).toEqual({ kekDays: 90, signingDays: 90 });
    expect(dueAt(t0, 90)).toBe(t0 + 90 * DAY_MS);
    expect(isDue(t0, 90, t0 + 90 * DAY_MS - 1)).toBe(false);
    expect(isDue(t0, 90, t0 + 90 * DAY_MS)).toBe(true);
    expect(isDue('2024-01-01T00:00:00.000Z', 30, t0 + 31 * DAY_MS)).toBe(true);
    expect(() => checkPolicy({ kekDays: 0 })).toThrow(/days/);
    expect(() => checkPolicy({ signingDays: Number.NaN })).toThrow(/days/);
  });
});

describe('rotating what is due in a data dir', () => {
  test('a coordinator dir whose KEK and token key are past due: both rotate, every vault secret still opens', async () => {
    const dir = fresh('coord');
    const s = await openCoordinatorSecrets(dir, secrets);
    try {
      const vault = await SealedVault.open(join(dir, VAULT_FILE));
      const before = new Map<string, Buffer>();
      for (const name of vault.names()) before.set(name, Buffer.from(await vault.get(s.kek, name)));
      const kekBefore = await s.kek.primaryVersion();
      const policy = checkPolicy({ kekDays: 30, signingDays: 30 });

      // Nothing is due on the day the dir was made.
      expect(await rotateDueKeys({ dir, kek: s.kek, holders: [vault], policy })).toEqual([]);

      // 31 days later (the clock moved, not waited for).
      const later = (): number => Date.now() + 31 * DAY_MS;
      const ages = await keyAges(dir, s.kek, policy, later);
      expect(ages.find((a) => a.key === 'kek')?.due).toBe(true);
      expect(ages.find((a) => a.key === 'token')?.due).toBe(true);
      expect(ages.find((a) => a.key === 'ca')?.dueAt).toBeUndefined();
      const oldTokenKey = s.tokens.publicKey;
      const rotated = await rotateDueKeys({ dir, kek: s.kek, holders: [await SealedVault.open(join(dir, VAULT_FILE))], policy, clock: later, onTokenKey: (seed, v) => s.tokens.rotate(seed, v) });
      expect(rotated).toEqual([
        { key: 'kek', previousVersion: kekBefore, version: kekBefore + 1, reason: 'due' },
        { key: 'token', previousVersion: 1, version: 2, reason: 'due' },
      ]);
      expect(s.tokens.version).toBe(2);
      expect(Buffer.from(s.tokens.publicKey).equals(Buffer.from(oldTokenKey))).toBe(false);

      // Every secret opens under the new primary; all but the token seed are unchanged.
      const after = await SealedVault.open(join(dir, VAULT_FILE));
      expect([...(await after.references()).keys()]).toEqual([kekBefore + 1]);
      for (const name of after.names()) {
        const v = Buffer.from(await after.get(s.kek, name));
        if (name === 'token-seed') expect(v.equals(before.get(name)!)).toBe(false);
        else expect(v.equals(before.get(name)!)).toBe(true);
      }
      // Not due again at the same moment: the new versions' dates are recorded.
      expect(await rotateDueKeys({ dir, kek: s.kek, holders: [after], policy, clock: later })).toEqual([]);
      expect((await readKeysFile(dir)).keys.token?.version).toBe(2);

      // The replaced token key is kept (public key only) until its tokens have expired, then dropped.
      expect((await tokenKeyState(dir, later)).previous.map((p) => p.version)).toEqual([1]);
      const afterExpiry = (): number => later() + TOKEN_KEY_RETENTION_MS + 1000;
      expect((await tokenKeyState(dir, afterExpiry)).previous).toEqual([]);
      expect(await pruneTokenKeys(dir, afterExpiry)).toBe(1);
      expect((await readKeysFile(dir)).keys.token?.previous).toEqual([]);
    } finally {
      await s.kek.close();
    }
    // A restart opens the rotated dir: the token key is version 2.
    const again = await openCoordinatorSecrets(dir, secrets);
    try {
      expect(again.tokens.version).toBe(2);
    } finally {
      await again.kek.close();
    }
  });

  test("a client dir whose KEK is past due: the store's KEK rotates and every value still opens", async () => {
    const dir = fresh('client');
    const kek = await initKek(dir, { kind: 'passphrase' }, secrets);
    try {
      const store = await SqliteDataStore.open(dir, kek);
      const records = Array.from({ length: 5 }, (_, i) => ({ address: `${i} Elm Street`, lat: 40 + i / 100, lon: -70, transcript: `call ${i}`, x: [i, i + 1], y: i % 2 }));
      await store.importRecords(records);
      const read = async (): Promise<unknown[]> => {
        const out: unknown[] = [];
        for await (const r of store.plainRecords()) out.push(r);
        return out;
      };
      const plain = await read();
      const v1 = await kek.primaryVersion();
      const policy = checkPolicy();
      expect(await rotateDueKeys({ dir, kek, holders: [store], policy, clock: () => Date.now() + 89 * DAY_MS })).toEqual([]);
      const rotated = await rotateDueKeys({ dir, kek, holders: [store], policy, clock: () => Date.now() + 91 * DAY_MS });
      expect(rotated).toEqual([{ key: 'kek', previousVersion: v1, version: v1 + 1, reason: 'due' }]);
      expect([...(await store.references(true)).entries()].filter(([, c]) => c > 0).map(([v]) => v)).toEqual([v1 + 1]);
      expect(await read()).toEqual(plain);
      store.close();
    } finally {
      await kek.close();
    }
  });
});

describe('token key versions', () => {
  test('a token issued before the rotation verifies until it expires; then the old key is dropped', async () => {
    const T0 = Date.parse('2024-05-01T12:00:00Z');
    const now = { t: T0 };
    const clock = (): number => now.t;
    const issuer = TokenIssuer.create({ clock });
    const verifier = new TokenVerifier({ publicKey: issuer.publicKey, keyring: issuer.keyring, clock });
    const old = await issuer.issue('clinic-1', { ttlMs: 5 * 60 * 1000 });
    const oldLong = await issuer.issue('clinic-1', { ttlMs: 15 * 60 * 1000 });
    const kid1 = issuer.kid;
    expect(JSON.parse(Buffer.from(old.token.split('.')[0]!, 'base64url').toString()).kid).toBe(kid1);

    now.t += 60_000;
    issuer.rotate(new Uint8Array(Array.from({ length: 32 }, (_, i) => i + 1)), 2);
    expect(issuer.kid).not.toBe(kid1);
    const fresh = await issuer.issue('clinic-1');
    expect(JSON.parse(Buffer.from(fresh.token.split('.')[0]!, 'base64url').toString()).kid).toBe(issuer.kid);
    await expect(verifier.verify(old.token, { clientId: 'clinic-1' })).resolves.toMatchObject({ sub: 'clinic-1' });
    await expect(verifier.verify(fresh.token, { clientId: 'clinic-1' })).resolves.toMatchObject({ sub: 'clinic-1' });
    expect(issuer.keyring.list().map((k) => k.version)).toEqual([2, 1]);

    // The 15-minute token of the old key still verifies 14 minutes in...
    now.t = T0 + 14 * 60_000;
    await expect(verifier.verify(oldLong.token, { clientId: 'clinic-1' })).resolves.toMatchObject({ sub: 'clinic-1' });
    // ...and once every token the old key signed has expired, the key is gone.
    now.t = T0 + 60_000 + 15 * 60_000;
    expect(issuer.keyring.list().map((k) => k.version)).toEqual([2]);
    const e = await verifier.verify(old.token, { clientId: 'clinic-1' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AuthError);
    expect((e as AuthError).reason).toBe('bad-signature');
  });
});
