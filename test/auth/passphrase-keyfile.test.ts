/**
 * The passphrase keyfile (scrypt RFC 7914 + AES-256-GCM SP 800-38D): round trips, the one
 * `decryption failed` error for every wrong passphrase and every change to a sealed file, and
 * refusal of everything that is not a sealed keyfile. Low scrypt N (2^14) keeps it fast.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, isAegisError } from '../../shared/errors.js';
import { okpPrivateKeyObject } from '../../shared/crypto/okp.js';
import {
  KeyfileError,
  openSecrets,
  parseKeyfile,
  passphraseFromEnv,
  readKeyfile,
  sealSecrets,
  writeKeyfile,
  type SealedKeyfile,
} from '../../shared/keystore/passphrase-keyfile.js';

const FAST = { N: 2 ** 14, r: 8, p: 1 };
const PASS = 'correct horse battery staple';

async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string; reason?: string }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof KeyfileError) return { code: e.code, message: e.message, reason: e.reason };
    if (isAegisError(e)) return { code: e.code, message: e.message };
    return { message: `unexpected: ${String(e)}` };
  }
  return { message: 'no error' };
}

const DECRYPTION_FAILED = { code: ErrorCode.DecryptionFailed, message: 'decryption failed' };

function flipB64(field: string, i: number): string {
  const b = Buffer.from(field, 'base64');
  b[i]! ^= 0x01;
  return b.toString('base64');
}

describe('passphrase keyfile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-keyfile-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const secrets = { 'ca.seed': new Uint8Array(randomBytes(32)), 'token.seed': new Uint8Array(randomBytes(32)) };

  test('sealed secrets open again under the same passphrase and label', async () => {
    const sealed = await sealSecrets(PASS, 'coordinator/ca', secrets, FAST);
    expect(sealed).toMatchObject({ format: 'aegis-keyfile', version: 1, kdf: { name: 'scrypt', ...FAST }, label: 'coordinator/ca' });
    const opened = await openSecrets(PASS, sealed, { expectedLabel: 'coordinator/ca' });
    expect(Object.keys(opened).sort()).toEqual(['ca.seed', 'token.seed']);
    expect(Buffer.from(opened['ca.seed']!)).toEqual(Buffer.from(secrets['ca.seed']));
    expect(Buffer.from(opened['token.seed']!)).toEqual(Buffer.from(secrets['token.seed']));
  });

  test('the default scrypt cost is N = 2^15, r = 8, p = 1', async () => {
    const sealed = await sealSecrets(PASS, 'x', { a: new Uint8Array(1) });
    expect(sealed.kdf).toMatchObject({ N: 2 ** 15, r: 8, p: 1 });
  });

  test('a keyfile is written with mode 0600 and read back', async () => {
    const path = join(dir, 'keys.json');
    await writeKeyfile(path, PASS, 'coordinator/ca', secrets, FAST);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    const opened = await readKeyfile(path, PASS);
    expect(Buffer.from(opened['ca.seed']!)).toEqual(Buffer.from(secrets['ca.seed']));
  });

  test('the passphrase and the secrets never appear in the file or in any error message', async () => {
    const path = join(dir, 'secret-check.json');
    await writeKeyfile(path, PASS, 'label', secrets, FAST);
    const text = readFileSync(path, 'utf8');
    expect(text).not.toContain(PASS);
    for (const v of Object.values(secrets)) {
      for (const enc of ['base64', 'base64url', 'hex'] as const) expect(text).not.toContain(Buffer.from(v).toString(enc));
    }
    const messages = [
      (await failure(readKeyfile(path, 'wrong passphrase!!'))).message,
      (await failure(openSecrets(PASS, { ...(JSON.parse(text) as SealedKeyfile), label: 'other' }))).message,
    ];
    chmodSync(path, 0o644);
    messages.push((await failure(readKeyfile(path, PASS))).message);
    for (const m of messages) {
      expect(m).not.toContain(PASS);
      expect(m).not.toContain('wrong passphrase!!');
    }
  });

  test('a wrong passphrase gives the one decryption failed error', async () => {
    const sealed = await sealSecrets(PASS, 'l', secrets, FAST);
    await expect(failure(openSecrets('Correct horse battery staple', sealed))).resolves.toEqual(DECRYPTION_FAILED);
  });

  test('every single-bit change to the nonce, ciphertext, tag or salt gives the one decryption failed error', async () => {
    const sealed = await sealSecrets(PASS, 'l', { s: new Uint8Array(randomBytes(16)) }, FAST);
    const variants: SealedKeyfile[] = [];
    for (let i = 0; i < Buffer.from(sealed.nonce, 'base64').length; i++) variants.push({ ...sealed, nonce: flipB64(sealed.nonce, i) });
    for (let i = 0; i < Buffer.from(sealed.ciphertext, 'base64').length; i++) variants.push({ ...sealed, ciphertext: flipB64(sealed.ciphertext, i) });
    for (let i = 0; i < Buffer.from(sealed.kdf.salt, 'base64').length; i++) variants.push({ ...sealed, kdf: { ...sealed.kdf, salt: flipB64(sealed.kdf.salt, i) } });
    for (const v of variants) await expect(failure(openSecrets(PASS, v))).resolves.toEqual(DECRYPTION_FAILED);
  });

  test('a truncated ciphertext, a swapped label and a changed scrypt cost give the one decryption failed error', async () => {
    const sealed = await sealSecrets(PASS, 'coordinator/ca', secrets, FAST);
    const ct = Buffer.from(sealed.ciphertext, 'base64');
    const cases: SealedKeyfile[] = [
      { ...sealed, ciphertext: ct.subarray(0, ct.length - 1).toString('base64') },
      { ...sealed, ciphertext: ct.subarray(0, 16).toString('base64') },
      { ...sealed, ciphertext: ct.subarray(0, 3).toString('base64') },
      { ...sealed, nonce: Buffer.from(sealed.nonce, 'base64').subarray(0, 11).toString('base64') },
      { ...sealed, label: 'coordinator/tokens' },
      { ...sealed, kdf: { ...sealed.kdf, N: 2 ** 15 } },
      { ...sealed, kdf: { ...sealed.kdf, r: 9 } },
    ];
    for (const c of cases) await expect(failure(openSecrets(PASS, c))).resolves.toEqual(DECRYPTION_FAILED);
    await expect(failure(openSecrets(PASS, sealed, { expectedLabel: 'coordinator/tokens' }))).resolves.toEqual(DECRYPTION_FAILED);
  });

  test('a truncated keyfile on disk is refused', async () => {
    const path = join(dir, 'truncated.json');
    await writeKeyfile(path, PASS, 'l', secrets, FAST);
    const text = readFileSync(path, 'utf8');
    writeFileSync(path, text.slice(0, text.length - 20), { mode: 0o600 });
    const f = await failure(readKeyfile(path, PASS));
    expect(f.code).toBe(ErrorCode.InsecureKeyfile);
    expect(f.reason).toBe('not-sealed');
  });

  test('a keyfile readable by group or others is refused before anything is derived', async () => {
    const path = join(dir, 'loose.json');
    await writeKeyfile(path, PASS, 'l', secrets, FAST);
    for (const mode of [0o644, 0o640, 0o604, 0o660, 0o602]) {
      chmodSync(path, mode);
      const f = await failure(readKeyfile(path, PASS));
      expect(f.reason).toBe('loose-permissions');
      expect(f.message).toContain('chmod 600');
    }
    chmodSync(path, 0o400);
    await expect(readKeyfile(path, PASS)).resolves.toHaveProperty(['ca.seed']);
  });

  test('a plain PEM private key is refused as a keyfile', async () => {
    const path = join(dir, 'plain.pem');
    const pem = okpPrivateKeyObject('Ed25519', new Uint8Array(randomBytes(32))).export({ format: 'pem', type: 'pkcs8' }).toString();
    writeFileSync(path, pem, { mode: 0o600 });
    const f = await failure(readKeyfile(path, PASS));
    expect(f.reason).toBe('plain-key');
    expect(f.message).toMatch(/plain \(unencrypted\) private key/);
  });

  test('a plain DER private key is refused as a keyfile', async () => {
    const path = join(dir, 'plain.der');
    const der = okpPrivateKeyObject('Ed25519', new Uint8Array(randomBytes(32))).export({ format: 'der', type: 'pkcs8' });
    writeFileSync(path, der, { mode: 0o600 });
    await expect(failure(readKeyfile(path, PASS))).resolves.toMatchObject({ reason: 'plain-key' });
  });

  test('a JSON with cleartext key fields is refused, alone or beside sealed fields', async () => {
    const path = join(dir, 'cleartext.json');
    const sealed = await sealSecrets(PASS, 'l', secrets, FAST);
    const jwk = okpPrivateKeyObject('Ed25519', new Uint8Array(randomBytes(32))).export({ format: 'jwk' });
    const candidates: unknown[] = [
      jwk,
      { privateKey: Buffer.from(randomBytes(32)).toString('base64') },
      { format: 'aegis-keyfile', version: 1, seed: 'AAAA' },
      { ...sealed, seed: Buffer.from(randomBytes(32)).toString('base64') },
      { keys: { ca: { pem: '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----' } } },
    ];
    for (const c of candidates) {
      writeFileSync(path, JSON.stringify(c), { mode: 0o600 });
      const f = await failure(readKeyfile(path, PASS));
      expect(f.reason).toBe('cleartext-key-fields');
      expect(f.message).toMatch(/cleartext key fields/);
    }
  });

  test('other JSON, unknown versions and non-scrypt KDFs are refused as not sealed', async () => {
    const sealed = await sealSecrets(PASS, 'l', secrets, FAST);
    for (const c of [[], 'x', { hello: 1 }, { ...sealed, version: 2 }, { ...sealed, kdf: { ...sealed.kdf, name: 'pbkdf2' } }, { ...sealed, extra: 1 }]) {
      expect(() => parseKeyfile(JSON.stringify(c))).toThrow(KeyfileError);
    }
  });

  test('scrypt parameters outside their bounds are refused both ways, on sealing and on reading', async () => {
    const sealed = await sealSecrets(PASS, 'l', secrets, FAST);
    const bad = [
      { N: 2 ** 13, r: 8, p: 1 },
      { N: 2 ** 21, r: 8, p: 1 },
      { N: 3 * 2 ** 14, r: 8, p: 1 },
      { N: 2 ** 14, r: 7, p: 1 },
      { N: 2 ** 14, r: 33, p: 1 },
      { N: 2 ** 14, r: 8, p: 0 },
      { N: 2 ** 14, r: 8, p: 17 },
      { N: 2 ** 20, r: 32, p: 1 },
      { N: 2 ** 20, r: 8, p: 16 },
      { N: 1.5, r: 8, p: 1 },
    ];
    for (const kdf of bad) {
      await expect(failure(sealSecrets(PASS, 'l', secrets, kdf))).resolves.toMatchObject({ reason: 'kdf-out-of-bounds' });
      await expect(failure(openSecrets(PASS, { ...sealed, kdf: { ...sealed.kdf, ...kdf } }))).resolves.toMatchObject({ reason: 'kdf-out-of-bounds' });
    }
  });

  test('AEGIS_PASSPHRASE is read, and an unset, empty or short one is refused without echoing it', () => {
    expect(passphraseFromEnv({ AEGIS_PASSPHRASE: PASS })).toBe(PASS);
    for (const env of [{}, { AEGIS_PASSPHRASE: '' }, { AEGIS_PASSPHRASE: 'short-pass1' }]) {
      let err: unknown;
      try {
        passphraseFromEnv(env);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KeyfileError);
      expect((err as KeyfileError).reason).toBe('weak-passphrase');
      expect((err as KeyfileError).message).toContain('AEGIS_PASSPHRASE');
      expect((err as KeyfileError).message).not.toContain('short-pass1');
    }
  });

});
