/**
 * HKDF-SHA256 (RFC 5869) against every Wycheproof case, and `deriveKey`'s domain separation:
 * session id as salt, purpose label and context as info (DESIGN.md §2).
 */
import { describe, expect, test } from '@jest/globals';
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ErrorCode } from '../../shared/errors.js';
import { deriveKey, hkdfSha256, Purpose } from '../../shared/crypto/hkdf.js';
import { codeOf } from '../support/codes.js';

interface HkdfTest {
  tcId: number;
  comment: string;
  flags: string[];
  ikm: string;
  salt: string;
  info: string;
  size: number;
  okm: string;
  result: 'valid' | 'invalid' | 'acceptable';
}
interface HkdfFile {
  algorithm: string;
  numberOfTests: number;
  testGroups: { keySize: number; tests: HkdfTest[] }[];
}

const file = JSON.parse(readFileSync(new URL('../vectors/hkdf_sha256_test.json', import.meta.url), 'utf8')) as HkdfFile;
const cases = file.testGroups.flatMap((g) => g.tests);
const hex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const utf8 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'utf8'));


describe('RFC 5869 HKDF-SHA256 — Wycheproof hkdf_sha256_test.json', () => {
  test('the vector file is the full HKDF-SHA-256 set', () => {
    expect(file.algorithm).toBe('HKDF-SHA-256');
    expect(cases).toHaveLength(file.numberOfTests);
    expect(cases.some((t) => t.flags.includes('EmptySalt'))).toBe(true);
    expect(cases.some((t) => t.flags.includes('MaximalOutputSize'))).toBe(true);
  });

  test('every valid case derives exactly the expected output (empty salt and the maximal 8160 bytes included)', () => {
    const valid = cases.filter((t) => t.result === 'valid');
    expect(valid.length).toBeGreaterThan(80);
    const wrong = valid.filter((t) => toHex(hkdfSha256(hex(t.ikm), hex(t.salt), hex(t.info), t.size)) !== t.okm);
    expect(wrong.map((t) => t.tcId)).toEqual([]);
  });

  test('every invalid case (output longer than 255 * 32 bytes) throws invalid-argument', () => {
    const invalid = cases.filter((t) => t.result === 'invalid');
    expect(invalid.length).toBeGreaterThan(0);
    for (const t of invalid) expect(t.flags).toContain('SizeTooLarge');
    const notRefused = invalid.filter((t) => codeOf(() => hkdfSha256(hex(t.ikm), hex(t.salt), hex(t.info), t.size)) !== ErrorCode.InvalidArgument);
    expect(notRefused.map((t) => t.tcId)).toEqual([]);
  });

  test('outputs of one hash length or less (two HMACs written out) agree with node:crypto hkdfSync, and the vectors cover both paths', () => {
    const valid = cases.filter((t) => t.result === 'valid');
    expect(valid.some((t) => t.size <= 32)).toBe(true);
    expect(valid.some((t) => t.size > 32)).toBe(true);
    for (let i = 0; i < 200; i++) {
      const length = 1 + (i % 32);
      const ikm = randomBytes(i % 80);
      const salt = i % 5 === 0 ? new Uint8Array(0) : randomBytes(i % 70);
      const info = randomBytes(i % 50);
      expect(toHex(hkdfSha256(ikm, salt, info, length))).toBe(toHex(new Uint8Array(hkdfSync('sha256', ikm, salt, info, length))));
    }
  });

  test('output lengths 8160 and 1 are accepted, 8161, 0, negative and fractional lengths are refused', () => {
    const ikm = randomBytes(32);
    expect(hkdfSha256(ikm, new Uint8Array(0), new Uint8Array(0), 8160)).toHaveLength(8160);
    expect(hkdfSha256(ikm, new Uint8Array(0), new Uint8Array(0), 1)).toHaveLength(1);
    for (const len of [8161, 0, -1, 1.5, Number.NaN]) {
      expect(codeOf(() => hkdfSha256(ikm, new Uint8Array(0), new Uint8Array(0), len))).toBe(ErrorCode.InvalidArgument);
    }
  });

  test('inputs that are not bytes are refused', () => {
    const b = new Uint8Array(4);
    expect(codeOf(() => hkdfSha256('ikm' as unknown as Uint8Array, b, b, 32))).toBe(ErrorCode.InvalidArgument);
    expect(codeOf(() => hkdfSha256(b, null as unknown as Uint8Array, b, 32))).toBe(ErrorCode.InvalidArgument);
    expect(codeOf(() => hkdfSha256(b, b, [1, 2] as unknown as Uint8Array, 32))).toBe(ErrorCode.InvalidArgument);
  });
});

describe('deriveKey (session id as salt, purpose and context as info)', () => {
  const ikm = randomBytes(32);
  const session = randomBytes(32);

  test('is HKDF-SHA256(ikm, salt = session id, info = purpose label || 0x00 || context, 32), computed independently with HMAC', () => {
    const ctx = utf8('client-3|client-9');
    const prk = createHmac('sha256', session).update(ikm).digest();
    const info = Buffer.concat([Buffer.from(Purpose.PairwiseMask, 'utf8'), Buffer.from([0]), ctx]);
    const okm = createHmac('sha256', prk).update(Buffer.concat([info, Buffer.from([1])])).digest();
    expect(toHex(deriveKey(ikm, session, Purpose.PairwiseMask, ctx))).toBe(okm.toString('hex'));
    // Without a context, the info is the label alone.
    const okmNoCtx = createHmac('sha256', prk).update(Buffer.concat([Buffer.from(Purpose.PairwiseMask, 'utf8'), Buffer.from([1])])).digest();
    expect(toHex(deriveKey(ikm, session, Purpose.PairwiseMask))).toBe(okmNoCtx.toString('hex'));
  });

  test('gives a different 32-byte key for every purpose', () => {
    const keys = Object.values(Purpose).map((p) => toHex(deriveKey(ikm, session, p)));
    expect(keys).toHaveLength(4);
    for (const k of keys) expect(k).toHaveLength(64);
    expect(new Set(keys).size).toBe(keys.length);
  });

  test('gives a different key in another session, and the same key for the same inputs', () => {
    const other = new Uint8Array(session);
    other[31]! ^= 1;
    const k = toHex(deriveKey(ikm, session, Purpose.SelfMask));
    expect(toHex(deriveKey(ikm, session, Purpose.SelfMask))).toBe(k);
    expect(toHex(deriveKey(ikm, other, Purpose.SelfMask))).not.toBe(k);
  });

  test('gives a different key for every context, and for no context', () => {
    const contexts = [undefined, new Uint8Array(0), utf8('a|b'), utf8('b|a'), utf8('a|bc'), utf8('ab|c'), new Uint8Array([0])];
    const keys = contexts.map((c) => toHex(deriveKey(ikm, session, Purpose.ShareEncryption, c)));
    expect(new Set(keys).size).toBe(contexts.length);
  });

  test('refuses a session id that is not 32 bytes with bad-key-length', () => {
    for (const len of [0, 16, 31, 33, 64]) {
      expect(codeOf(() => deriveKey(ikm, new Uint8Array(len), Purpose.PairwiseMask))).toBe(ErrorCode.BadKeyLength);
    }
    expect(codeOf(() => deriveKey(ikm, 'x'.repeat(32) as unknown as Uint8Array, Purpose.PairwiseMask))).toBe(ErrorCode.InvalidArgument);
  });
});
