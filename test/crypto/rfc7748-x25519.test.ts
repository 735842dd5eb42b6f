/**
 * X25519 (RFC 7748) against every Wycheproof case, the RFC's own test vectors, and the
 * small-order refusals of RFC 7748 §6.1 that Aegis makes mandatory (DESIGN.md §2: clients abort
 * on keys of low order).
 */
import { describe, expect, test } from '@jest/globals';
import { createPrivateKey, createPublicKey, diffieHellman, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import {
  assertUsablePublicKey,
  isSmallOrder,
  x25519,
  x25519KeyPair,
  x25519PrivateKeyObject,
  x25519PublicFromPrivate,
  x25519PublicKeyObject,
} from '../../shared/crypto/x25519.js';
import { codeOf, SMALL_ORDER_X25519_HEX } from '../support/codes.js';

interface XdhTest {
  tcId: number;
  comment: string;
  flags: string[];
  public: string;
  private: string;
  shared: string;
  result: 'valid' | 'invalid' | 'acceptable';
}
interface XdhFile {
  algorithm: string;
  numberOfTests: number;
  testGroups: { curve: string; type: string; tests: XdhTest[] }[];
}

const file = JSON.parse(readFileSync(new URL('../vectors/x25519_test.json', import.meta.url), 'utf8')) as XdhFile;
const cases = file.testGroups.flatMap((g) => g.tests);
const hex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** What our x25519 does with a case: the shared secret it returns, or the error code it throws. */
function agree(t: XdhTest): { shared: string } | { error: string } {
  try {
    return { shared: toHex(x25519(hex(t.private), hex(t.public))) };
  } catch (e) {
    return { error: isAegisError(e) ? e.code : `unexpected: ${String(e)}` };
  }
}


// Flags that mean "the peer's key is (an encoding of) a point of small order, the agreement is
// all zero": Aegis must refuse these, whatever RFC 7748 allows.
const LOW_ORDER_FLAGS = ['ZeroSharedSecret', 'LowOrderPublic', 'SmallPublicKey'];
// Flags that are "acceptable" for reasons Aegis has no objection to: twist points (X25519 is
// defined on the twist; the result is still right), non-canonical u (RFC 7748 §5 says reduce it
// mod p), and arithmetic edge cases. Aegis computes these, and must get them right.
const COMPUTED_FLAGS = ['Twist', 'NonCanonicalPublic', 'EdgeCaseMultiplication', 'EdgeCaseShared', 'SpecialPublicKey', 'Ktv'];
const KNOWN_FLAGS = new Set([...LOW_ORDER_FLAGS, ...COMPUTED_FLAGS, 'Normal', 'EdgeCasePrivateKey']);

const isLowOrderCase = (t: XdhTest): boolean => t.flags.some((f) => LOW_ORDER_FLAGS.includes(f));

describe('RFC 7748 X25519 — Wycheproof x25519_test.json', () => {
  test('the vector file is the full X25519 set and every flag in it is one this test judges', () => {
    expect(file.algorithm).toBe('XDH');
    expect(cases).toHaveLength(file.numberOfTests);
    expect(cases.length).toBeGreaterThan(500);
    for (const g of file.testGroups) expect(g.curve).toBe('curve25519');
    const unknown = [...new Set(cases.flatMap((t) => t.flags))].filter((f) => !KNOWN_FLAGS.has(f));
    expect(unknown).toEqual([]);
    // No case is plain "invalid" in this file: each is valid, or acceptable with a reason.
    expect(cases.filter((t) => t.result === 'invalid')).toEqual([]);
  });

  test('every valid case agrees on exactly the expected shared secret', () => {
    const valid = cases.filter((t) => t.result === 'valid');
    expect(valid.length).toBeGreaterThan(250);
    const wrong = valid.filter((t) => JSON.stringify(agree(t)) !== JSON.stringify({ shared: t.shared })).map((t) => t.tcId);
    expect(wrong).toEqual([]);
  });

  test('every valid case has a public key that assertUsablePublicKey accepts', () => {
    const refused = cases.filter((t) => t.result === 'valid' && codeOf(() => assertUsablePublicKey(hex(t.public))) !== undefined);
    expect(refused.map((t) => t.tcId)).toEqual([]);
  });

  test('every case flagged ZeroSharedSecret, LowOrderPublic or SmallPublicKey is refused with low-order-point by x25519', () => {
    const low = cases.filter(isLowOrderCase);
    expect(low.length).toBeGreaterThanOrEqual(30);
    const accepted = low.filter((t) => JSON.stringify(agree(t)) !== JSON.stringify({ error: ErrorCode.LowOrderPoint }));
    expect(accepted.map((t) => t.tcId)).toEqual([]);
  });

  test('every low-order public key is refused up front by assertUsablePublicKey and recognised by isSmallOrder', () => {
    const low = cases.filter(isLowOrderCase);
    const missed = low.filter((t) => codeOf(() => assertUsablePublicKey(hex(t.public))) !== ErrorCode.LowOrderPoint || !isSmallOrder(hex(t.public)));
    expect(missed.map((t) => t.tcId)).toEqual([]);
  });

  test('the refused cases are exactly those whose expected shared secret is all zero', () => {
    const zero = (t: XdhTest): boolean => /^(00)+$/.test(t.shared);
    const mismatch = cases.filter((t) => isLowOrderCase(t) !== zero(t) || ('error' in agree(t)) !== zero(t));
    expect(mismatch.map((t) => t.tcId)).toEqual([]);
  });

  test.each(['Twist', 'NonCanonicalPublic', 'EdgeCaseMultiplication', 'EdgeCaseShared', 'Ktv'])(
    'acceptable %s cases without a low-order point are computed, and agree with the expected secret',
    (flag) => {
      const acceptable = cases.filter((t) => t.result === 'acceptable' && t.flags.includes(flag) && !isLowOrderCase(t));
      expect(acceptable.length).toBeGreaterThan(0);
      const wrong = acceptable.filter((t) => JSON.stringify(agree(t)) !== JSON.stringify({ shared: t.shared }));
      expect(wrong.map((t) => t.tcId)).toEqual([]);
      // Accepted consistently: the up-front key check lets them through too.
      const refused = acceptable.filter((t) => codeOf(() => assertUsablePublicKey(hex(t.public))) !== undefined);
      expect(refused.map((t) => t.tcId)).toEqual([]);
    },
  );

  test('a precomputed private KeyObject gives the same result as the raw private key for every computed case', () => {
    const wrong = cases
      .filter((t) => !isLowOrderCase(t))
      .filter((t) => toHex(x25519(x25519PrivateKeyObject(hex(t.private)), x25519PublicKeyObject(hex(t.public)))) !== t.shared);
    expect(wrong.map((t) => t.tcId)).toEqual([]);
  });
});

describe('RFC 7748 X25519 — the RFC test vectors', () => {
  test('§6.1: Alice and Bob derive the published shared secret and public keys', () => {
    const aliceSk = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
    const alicePk = '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a';
    const bobSk = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
    const bobPk = 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f';
    const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
    expect(toHex(x25519PublicFromPrivate(aliceSk))).toBe(alicePk);
    expect(toHex(x25519PublicFromPrivate(bobSk))).toBe(bobPk);
    expect(toHex(x25519(aliceSk, hex(bobPk)))).toBe(shared);
    expect(toHex(x25519(bobSk, hex(alicePk)))).toBe(shared);
  });

  test('§5.2: iterating k, u = X25519(k, u), k from u = 9 gives the published values after 1 and 1000 iterations', () => {
    let k = hex('0900000000000000000000000000000000000000000000000000000000000000');
    let u = k;
    for (let i = 1; i <= 1000; i++) {
      const next = x25519(k, u);
      u = k;
      k = next;
      if (i === 1) expect(toHex(k)).toBe('422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079');
    }
    expect(toHex(k)).toBe('684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51');
  });
});

describe('X25519 small-order list (isSmallOrder)', () => {
  // The libsodium blacklist, written out in test/support/codes.ts so the test does not read it
  // from the code under test:
  // 0, 1, the two points of order 8, and p - 1, p, p + 1 (p = 2^255 - 19).
  const SMALL_ORDER = [...SMALL_ORDER_X25519_HEX];
  // Every encoding: as listed, and with the unused top bit set (RFC 7748 §5 masks it off).
  const encodings = SMALL_ORDER.flatMap((h) => {
    const hi = Buffer.from(h, 'hex');
    hi[31]! |= 0x80;
    return [hex(h), new Uint8Array(hi)];
  });

  test('the list in x25519.ts is exactly this list (so the checks below cover every entry the code uses)', () => {
    // The list is private to the module: read its 64-hex-digit literals from the source text.
    const source = readFileSync(new URL('../../shared/crypto/x25519.ts', import.meta.url), 'utf8');
    const inSource = [...source.matchAll(/'([0-9a-f]{64})'/g)].map((m) => m[1]);
    expect([...inSource].sort()).toEqual([...SMALL_ORDER].sort());
  });

  test('every listed point really gives an all-zero or refused agreement in OpenSSL (node:crypto, without Aegis code)', () => {
    const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
    const usable: string[] = [];
    let tried = 0;
    for (const pk of encodings) {
      for (let i = 0; i < 4; i++) {
        const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, randomBytes(32)]), format: 'der', type: 'pkcs8' });
        const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(pk).toString('base64url') }, format: 'jwk' });
        tried++;
        try {
          const out = diffieHellman({ privateKey, publicKey });
          if (!out.every((b) => b === 0)) usable.push(toHex(pk));
        } catch {
          // OpenSSL refuses the all-zero result itself: just as good.
        }
      }
    }
    expect(tried).toBe(SMALL_ORDER.length * 2 * 4);
    expect(usable).toEqual([]);
  });

  test('every listed point, in every encoding, is recognised, refused by assertUsablePublicKey, and refused by x25519', () => {
    const { privateKey } = x25519KeyPair();
    for (const pk of encodings) {
      expect(isSmallOrder(pk)).toBe(true);
      expect(codeOf(() => assertUsablePublicKey(pk))).toBe(ErrorCode.LowOrderPoint);
      expect(codeOf(() => x25519(privateKey, pk))).toBe(ErrorCode.LowOrderPoint);
    }
  });

  test('ordinary public keys, and keys one bit away from a listed point, are not small order', () => {
    for (let i = 0; i < 64; i++) expect(isSmallOrder(x25519KeyPair().publicKey)).toBe(false);
    for (const h of SMALL_ORDER) {
      const near = hex(h);
      near[7]! ^= 0x10;
      expect(isSmallOrder(near)).toBe(false);
    }
  });
});

describe('X25519 key handling', () => {
  test('keys of 31 or 33 bytes are refused with bad-key-length, private and public alike', () => {
    const good = x25519KeyPair();
    for (const len of [0, 31, 33]) {
      const bad = new Uint8Array(len).fill(9);
      expect(codeOf(() => x25519(bad, good.publicKey))).toBe(ErrorCode.BadKeyLength);
      expect(codeOf(() => x25519(good.privateKey, bad))).toBe(ErrorCode.BadKeyLength);
      expect(codeOf(() => assertUsablePublicKey(bad))).toBe(ErrorCode.BadKeyLength);
      expect(codeOf(() => x25519PublicFromPrivate(bad))).toBe(ErrorCode.BadKeyLength);
    }
  });

  test('a public key that is not bytes is refused by assertUsablePublicKey', () => {
    for (const v of [undefined, null, 'ab'.repeat(16), Array.from({ length: 32 }, () => 1)]) {
      expect(() => assertUsablePublicKey(v)).toThrow(AegisError);
    }
  });

  test('x25519PublicFromPrivate matches the public key of a generated pair', () => {
    for (let i = 0; i < 32; i++) {
      const kp = x25519KeyPair();
      expect(kp.publicKey).toHaveLength(32);
      expect(kp.privateKey).toHaveLength(32);
      expect(toHex(x25519PublicFromPrivate(kp.privateKey))).toBe(toHex(kp.publicKey));
    }
  });

  test('two parties agree on the same 32-byte secret whichever key form they use, and a third party does not', () => {
    const a = x25519KeyPair();
    const b = x25519KeyPair();
    const c = x25519KeyPair();
    const ab = x25519(a.privateKey, b.publicKey);
    expect(ab).toHaveLength(32);
    expect(toHex(x25519(b.privateKey, a.publicKey))).toBe(toHex(ab));
    expect(toHex(x25519(a.privateKeyObject, assertUsablePublicKey(b.publicKey)))).toBe(toHex(ab));
    expect(toHex(x25519(c.privateKey, a.publicKey))).not.toBe(toHex(ab));
  });
});
