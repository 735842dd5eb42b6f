/**
 * AES-256-GCM (NIST SP 800-38D) for share pairs in transit: the Wycheproof cases Aegis's
 * parameters cover (256-bit key, 96-bit IV, 128-bit tag), input checks for the rest, and
 * `seal`/`open` failing in one indistinguishable way whatever was tampered with.
 */
import { describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import { AEAD_OVERHEAD, gcmDecrypt, gcmEncrypt, open, seal } from '../../shared/crypto/aead.js';

interface AeadTest {
  tcId: number;
  comment: string;
  flags: string[];
  key: string;
  iv: string;
  aad: string;
  msg: string;
  ct: string;
  tag: string;
  result: 'valid' | 'invalid' | 'acceptable';
}
interface AeadGroup {
  keySize: number;
  ivSize: number;
  tagSize: number;
  tests: AeadTest[];
}
interface AeadFile {
  algorithm: string;
  numberOfTests: number;
  testGroups: AeadGroup[];
}

const file = JSON.parse(readFileSync(new URL('../vectors/aes_gcm_test.json', import.meta.url), 'utf8')) as AeadFile;
const ours = (g: AeadGroup): boolean => g.keySize === 256 && g.ivSize === 96 && g.tagSize === 128;
const inScope = file.testGroups.filter(ours).flatMap((g) => g.tests);
const outOfScope = file.testGroups.filter((g) => !ours(g)).flatMap((g) => g.tests.map((t) => ({ ...t, keySize: g.keySize, ivSize: g.ivSize })));
const hex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** The error `fn` throws (or undefined). */
function errorOf(fn: () => unknown): unknown {
  try {
    fn();
    return undefined;
  } catch (e) {
    return e;
  }
}

/** True when `e` is the one decryption error: code `decryption-failed`, message exactly 'decryption failed'. */
const isTheDecryptionError = (e: unknown): boolean => isAegisError(e, ErrorCode.DecryptionFailed) && e.message === 'decryption failed';

describe('SP 800-38D AES-256-GCM — Wycheproof aes_gcm_test.json', () => {
  test('the vector file is the AES-GCM set and has both valid and invalid cases for 256-bit keys, 96-bit IVs and 128-bit tags', () => {
    expect(file.algorithm).toBe('AES-GCM');
    expect(file.testGroups.flatMap((g) => g.tests)).toHaveLength(file.numberOfTests);
    expect(inScope.filter((t) => t.result === 'valid').length).toBeGreaterThan(30);
    expect(inScope.filter((t) => t.result === 'invalid').length).toBeGreaterThan(20);
    expect(inScope.filter((t) => t.result === 'acceptable')).toEqual([]);
  });

  test('every valid case encrypts to exactly the expected ciphertext and tag', () => {
    const valid = inScope.filter((t) => t.result === 'valid');
    const wrong = valid.filter((t) => {
      const { ciphertext, tag } = gcmEncrypt(hex(t.key), hex(t.iv), hex(t.msg), hex(t.aad));
      return toHex(ciphertext) !== t.ct || toHex(tag) !== t.tag;
    });
    expect(wrong.map((t) => t.tcId)).toEqual([]);
  });

  test('every valid case decrypts back to exactly the expected plaintext', () => {
    const valid = inScope.filter((t) => t.result === 'valid');
    const wrong = valid.filter((t) => toHex(gcmDecrypt(hex(t.key), hex(t.iv), hex(t.ct), hex(t.tag), hex(t.aad))) !== t.msg);
    expect(wrong.map((t) => t.tcId)).toEqual([]);
  });

  test('every invalid case fails to decrypt with the single decryption-failed error', () => {
    const invalid = inScope.filter((t) => t.result === 'invalid');
    const wrong = invalid.filter((t) => !isTheDecryptionError(errorOf(() => gcmDecrypt(hex(t.key), hex(t.iv), hex(t.ct), hex(t.tag), hex(t.aad)))));
    expect(wrong.map((t) => t.tcId)).toEqual([]);
  });

  test('every case with another key or IV size is refused by the input checks, before any AES is computed', () => {
    expect(outOfScope.length).toBeGreaterThan(100);
    const notRefused = outOfScope.filter((t) => {
      const enc = errorOf(() => gcmEncrypt(hex(t.key), hex(t.iv), hex(t.msg), hex(t.aad)));
      const dec = errorOf(() => gcmDecrypt(hex(t.key), hex(t.iv), hex(t.ct), hex(t.tag), hex(t.aad)));
      // A key of the wrong size is a caller's mistake (bad-key-length) on both sides; a nonce of
      // the wrong size on the decrypting side is attacker-controlled input, so it is the one
      // decryption error.
      const encOk = isAegisError(enc, ErrorCode.BadKeyLength);
      const decOk = t.keySize !== 256 ? isAegisError(dec, ErrorCode.BadKeyLength) : isTheDecryptionError(dec);
      return !(encOk && decOk);
    });
    expect(notRefused.map((t) => t.tcId)).toEqual([]);
  });

  test('a tag shorter than 16 bytes is refused even when it is a prefix of the right tag', () => {
    const t = inScope.find((c) => c.result === 'valid' && c.msg.length > 0)!;
    for (const len of [0, 4, 8, 12, 15]) {
      const e = errorOf(() => gcmDecrypt(hex(t.key), hex(t.iv), hex(t.ct), hex(t.tag).subarray(0, len), hex(t.aad)));
      expect(isTheDecryptionError(e)).toBe(true);
    }
  });
});

describe('seal / open (nonce || ciphertext || tag)', () => {
  const key = randomBytes(32);
  const aad = new Uint8Array(Buffer.from('session|client-1|client-2'));

  test('round-trips messages of every interesting length, with a fresh nonce each time', () => {
    for (const len of [0, 1, 15, 16, 17, 66, 1000]) {
      const msg = randomBytes(len);
      const a = seal(key, msg, aad);
      const b = seal(key, msg, aad);
      expect(a).toHaveLength(len + AEAD_OVERHEAD);
      expect(toHex(a)).not.toBe(toHex(b));
      expect(toHex(a.subarray(0, 12))).not.toBe(toHex(b.subarray(0, 12)));
      expect(toHex(open(key, a, aad))).toBe(msg.toString('hex'));
      expect(toHex(open(key, b, aad))).toBe(msg.toString('hex'));
    }
  });

  test('nonces never repeat across many seals (several refills of the nonce buffer) and each sealed output is its own memory', () => {
    const nonces = new Set<string>();
    const sealed: Uint8Array[] = [];
    for (let i = 0; i < 2000; i++) {
      const s = seal(key, new Uint8Array([i & 0xff]), aad);
      nonces.add(toHex(s.subarray(0, 12)));
      sealed.push(s);
    }
    expect(nonces.size).toBe(2000);
    // A later seal must not have changed an earlier output (no shared buffer behind them).
    expect(sealed.every((s, i) => open(key, s, aad)[0] === (i & 0xff))).toBe(true);
    expect(new Set(sealed.map((s) => s.buffer)).size).toBe(2000);
  });

  test('every tampering fails with the same error code and the same message', () => {
    const msg = new Uint8Array(randomBytes(66)); // a share pair: two 33-byte values
    const sealed = seal(key, msg, aad);
    const failures: unknown[] = [];
    const attempt = (k: Uint8Array, s: Uint8Array, a: Uint8Array): void => {
      failures.push(errorOf(() => open(k, s, a)));
    };

    // Wrong AAD: another receiver, one more byte, one byte less, empty.
    attempt(key, sealed, new Uint8Array(Buffer.from('session|client-1|client-3')));
    attempt(key, sealed, new Uint8Array([...aad, 0]));
    attempt(key, sealed, aad.subarray(0, aad.length - 1));
    attempt(key, sealed, new Uint8Array(0));
    // Wrong key.
    attempt(new Uint8Array(randomBytes(32)), sealed, aad);
    // Truncated at every length, from the end and from the front.
    for (let len = 0; len < sealed.length; len++) {
      attempt(key, sealed.subarray(0, len), aad);
      attempt(key, sealed.subarray(sealed.length - len), aad);
    }
    // Extended by one byte.
    attempt(key, new Uint8Array([...sealed, 0]), aad);
    // One bit flipped, at every bit of every byte position (nonce, ciphertext and tag).
    for (let bit = 0; bit < sealed.length * 8; bit++) {
      const bad = sealed.slice();
      bad[bit >> 3]! ^= 1 << (bit & 7);
      attempt(key, bad, aad);
    }
    // Empty input, and input that is not bytes at all.
    attempt(key, new Uint8Array(0), aad);
    attempt(key, 'not bytes' as unknown as Uint8Array, aad);
    attempt(key, undefined as unknown as Uint8Array, aad);

    expect(failures.length).toBe(4 + 1 + 2 * sealed.length + 1 + sealed.length * 8 + 3);
    const notTheError = failures.filter((e) => !isTheDecryptionError(e));
    expect(notTheError).toEqual([]);
    for (const e of failures) expect(e).toBeInstanceOf(AegisError);
    // The genuine article still opens: nothing above changed it.
    expect(toHex(open(key, sealed, aad))).toBe(toHex(msg));
  });

  test('the minimum sealed length is the overhead alone, which opens to the empty message', () => {
    const sealed = seal(key, new Uint8Array(0), aad);
    expect(sealed).toHaveLength(AEAD_OVERHEAD);
    expect(open(key, sealed, aad)).toHaveLength(0);
    expect(isTheDecryptionError(errorOf(() => open(key, sealed.subarray(1), aad)))).toBe(true);
  });

  test('a key that is not 32 bytes is refused with bad-key-length when sealing', () => {
    for (const len of [16, 24, 31, 33]) {
      expect(isAegisError(errorOf(() => seal(new Uint8Array(len), new Uint8Array(1), aad)), ErrorCode.BadKeyLength)).toBe(true);
    }
  });
});
