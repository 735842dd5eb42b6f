/**
 * Ed25519 (RFC 8032 §5.1) with strict verification: every Wycheproof case, the RFC's own
 * vectors, every single-bit change of a signature (libsignal style), small-order keys, and
 * malformed inputs that must give `false` rather than an exception.
 */
import { describe, expect, test } from '@jest/globals';
import { createPublicKey, randomBytes, verify as opensslVerify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ed25519, ED25519_TORSION_SUBGROUP } from '@noble/curves/ed25519.js';
import { ErrorCode, isAegisError } from '../../shared/errors.js';
import {
  ed25519AssertValid,
  ed25519KeyPair,
  ed25519KeyRefused,
  ed25519PrivateKeyObject,
  ed25519PublicFromSeed,
  ed25519Sign,
  ed25519Verify,
} from '../../shared/crypto/ed25519.js';

interface EddsaTest {
  tcId: number;
  comment: string;
  flags: string[];
  msg: string;
  sig: string;
  result: 'valid' | 'invalid' | 'acceptable';
}
interface EddsaFile {
  algorithm: string;
  numberOfTests: number;
  testGroups: { type: string; publicKey: { curve: string; pk: string }; tests: EddsaTest[] }[];
}

const file = JSON.parse(readFileSync(new URL('../vectors/ed25519_test.json', import.meta.url), 'utf8')) as EddsaFile;
const cases = file.testGroups.flatMap((g) => g.tests.map((t) => ({ ...t, pk: g.publicKey.pk })));
const hex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const utf8 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'utf8'));

describe('RFC 8032 Ed25519 — Wycheproof ed25519_test.json', () => {
  test('the vector file is the full Ed25519 verification set, with valid and invalid cases only', () => {
    expect(file.algorithm).toBe('EDDSA');
    expect(cases).toHaveLength(file.numberOfTests);
    for (const g of file.testGroups) expect(g.publicKey.curve).toBe('edwards25519');
    expect(new Set(cases.map((t) => t.result))).toEqual(new Set(['valid', 'invalid']));
  });

  test('every valid signature verifies', () => {
    const valid = cases.filter((t) => t.result === 'valid');
    expect(valid.length).toBeGreaterThan(80);
    const rejected = valid.filter((t) => ed25519Verify(hex(t.pk), hex(t.msg), hex(t.sig)) !== true);
    expect(rejected.map((t) => t.tcId)).toEqual([]);
  });

  test('every invalid signature is rejected — malleable S, bad encodings, truncation, trailing garbage', () => {
    const invalid = cases.filter((t) => t.result === 'invalid');
    expect(invalid.length).toBeGreaterThan(60);
    for (const flag of ['SignatureMalleability', 'InvalidEncoding', 'TruncatedSignature', 'SignatureWithGarbage', 'InvalidSignature']) {
      expect(invalid.some((t) => t.flags.includes(flag))).toBe(true);
    }
    const accepted = invalid.filter((t) => ed25519Verify(hex(t.pk), hex(t.msg), hex(t.sig)) !== false);
    expect(accepted.map((t) => t.tcId)).toEqual([]);
  });
});

describe('RFC 8032 Ed25519 — §7.1 test vectors', () => {
  const vectors = [
    {
      name: 'TEST 1 (empty message)',
      seed: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
      pk: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
      msg: '',
      sig: 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    },
    {
      name: 'TEST 2 (one-byte message)',
      seed: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
      pk: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
      msg: '72',
      sig: '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
    },
  ];
  test.each(vectors)('$name: the seed gives the published key and the published deterministic signature', (v) => {
    expect(toHex(ed25519PublicFromSeed(hex(v.seed)))).toBe(v.pk);
    expect(toHex(ed25519Sign(hex(v.seed), hex(v.msg)))).toBe(v.sig);
    expect(toHex(ed25519Sign(ed25519PrivateKeyObject(hex(v.seed)), hex(v.msg)))).toBe(v.sig);
    expect(ed25519Verify(hex(v.pk), hex(v.msg), hex(v.sig))).toBe(true);
  });
});

describe('Ed25519 signing and strict verification', () => {
  test('a signature from a fresh key pair verifies, and not under another key or for another message', () => {
    const kp = ed25519KeyPair();
    const other = ed25519KeyPair();
    expect(kp.publicKey).toHaveLength(32);
    expect(kp.privateKey).toHaveLength(32);
    expect(toHex(ed25519PublicFromSeed(kp.privateKey))).toBe(toHex(kp.publicKey));
    const msg = utf8('round 7: c_pk || s_pk');
    const sig = ed25519Sign(kp.privateKey, msg);
    expect(sig).toHaveLength(64);
    expect(ed25519Verify(kp.publicKey, msg, sig)).toBe(true);
    expect(ed25519Verify(other.publicKey, msg, sig)).toBe(false);
    expect(ed25519Verify(kp.publicKey, utf8('round 8: c_pk || s_pk'), sig)).toBe(false);
    expect(() => ed25519AssertValid(kp.publicKey, msg, sig, 'advertise')).not.toThrow();
  });

  test('flipping any one of the 512 bits of a valid signature makes it fail', () => {
    const kp = ed25519KeyPair();
    const msg = utf8('session id || U3');
    const sig = ed25519Sign(kp.privateKey, msg);
    const accepted: number[] = [];
    for (let bit = 0; bit < 512; bit++) {
      const bad = sig.slice();
      bad[bit >> 3]! ^= 1 << (bit & 7);
      if (ed25519Verify(kp.publicKey, msg, bad)) accepted.push(bit);
    }
    expect(accepted).toEqual([]);
    // The original still verifies: the flips were made on copies.
    expect(ed25519Verify(kp.publicKey, msg, sig)).toBe(true);
  });

  test('flipping any one bit of the public key or the message makes the signature fail', () => {
    const kp = ed25519KeyPair();
    const msg = utf8('abc');
    const sig = ed25519Sign(kp.privateKey, msg);
    for (let bit = 0; bit < 256; bit++) {
      const pk = kp.publicKey.slice();
      pk[bit >> 3]! ^= 1 << (bit & 7);
      expect(ed25519Verify(pk, msg, sig)).toBe(false);
    }
    for (let bit = 0; bit < msg.length * 8; bit++) {
      const m = msg.slice();
      m[bit >> 3]! ^= 1 << (bit & 7);
      expect(ed25519Verify(kp.publicKey, m, sig)).toBe(false);
    }
  });

  // With A of small order, R = identity and S = 0 satisfy [S]B = R + [k]A whenever ord(A)
  // divides k = H(R || A || M): OpenSSL accepts that for roughly 1 message in ord(A).
  const forged = new Uint8Array([...hex('01' + '00'.repeat(31)), ...new Uint8Array(32)]);
  /** A message for which OpenSSL itself takes `forged` under `pk`, if one of 256 is. */
  function forgeryFor(pk: Uint8Array): Uint8Array | undefined {
    const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(pk).toString('base64url') }, format: 'jwk' });
    for (let i = 0; i < 256; i++) {
      const m = utf8(`message ${i}`);
      if (opensslVerify(null, m, key, forged)) return m;
    }
    return undefined;
  }

  test('every small-order public key is rejected, even with a "signature" that OpenSSL itself accepts', () => {
    expect(ED25519_TORSION_SUBGROUP).toHaveLength(8);
    for (const a of ED25519_TORSION_SUBGROUP) {
      const pk = hex(a);
      const forgedFor = forgeryFor(pk);
      expect(forgedFor).toBeDefined(); // the forgery is real…
      expect(ed25519Verify(pk, forgedFor!, forged)).toBe(false); // …and Aegis refuses it
    }
  });

  test('non-canonical encodings of small-order points (y >= p, a negative zero) are rejected, though OpenSSL takes a forgery for them', () => {
    const p1 = 'ee' + 'ff'.repeat(30); // y = p + 1, which is 1: the identity
    const p0 = 'ed' + 'ff'.repeat(30); // y = p, which is 0: order 4
    for (const a of [p1 + '7f', p1 + 'ff', p0 + '7f', p0 + 'ff', '01' + '00'.repeat(30) + '80']) {
      const pk = hex(a);
      const forgedFor = forgeryFor(pk);
      expect([a, forgedFor !== undefined]).toEqual([a, true]);
      expect([a, ed25519Verify(pk, forgedFor!, forged)]).toEqual([a, false]);
      expect(ed25519KeyRefused(pk)).toBe(true);
    }
  });

  test('the check on the key bytes refuses what decoding the point (noble) refuses or finds of small order, and lets OpenSSL refuse the rest', () => {
    const pMinus = (d: number): Uint8Array => hex((0xed - d).toString(16).padStart(2, '0') + 'ff'.repeat(30) + '7f');
    const encodings: Uint8Array[] = [
      ...ED25519_TORSION_SUBGROUP.flatMap((h) => [hex(h), hex(h.slice(0, 62) + ((parseInt(h.slice(62), 16) ^ 0x80).toString(16).padStart(2, '0')))]),
      // every y from p - 3 up to 2^255 - 1, both signs
      ...Array.from({ length: 22 }, (_, i) => pMinus(3 - i)).flatMap((e) => [e, new Uint8Array([...e.subarray(0, 31), e[31]! | 0x80])]),
      ...Array.from({ length: 200 }, () => ed25519KeyPair().publicKey),
      ...Array.from({ length: 2000 }, () => new Uint8Array(randomBytes(32))),
    ];
    let decoded = 0;
    let undecodable = 0;
    for (const pk of encodings) {
      let smallOrder: boolean | undefined;
      try {
        smallOrder = ed25519.Point.fromBytes(pk).isSmallOrder();
      } catch {
        smallOrder = undefined;
      }
      if (smallOrder !== undefined) {
        decoded++;
        expect([toHex(pk), ed25519KeyRefused(pk)]).toEqual([toHex(pk), smallOrder]);
      } else {
        undecodable++;
        // Not a point (or y >= p): either refused on its bytes, or no signature verifies under it.
        if (!ed25519KeyRefused(pk)) for (let i = 0; i < 8; i++) expect(ed25519Verify(pk, utf8(`m${i}`), forged)).toBe(false);
      }
    }
    expect(decoded).toBeGreaterThan(1000);
    expect(undecodable).toBeGreaterThan(500);
  });

  test('inputs of the wrong length or type return false without throwing', () => {
    const kp = ed25519KeyPair();
    const msg = utf8('m');
    const sig = ed25519Sign(kp.privateKey, msg);
    const calls: [unknown, unknown, unknown][] = [
      [kp.publicKey.subarray(0, 31), msg, sig],
      [new Uint8Array([...kp.publicKey, 0]), msg, sig],
      [new Uint8Array(0), msg, sig],
      [kp.publicKey, msg, sig.subarray(0, 63)],
      [kp.publicKey, msg, new Uint8Array([...sig, 0])],
      [kp.publicKey, msg, new Uint8Array(0)],
      [toHex(kp.publicKey), msg, sig],
      [kp.publicKey, 'm', sig],
      [kp.publicKey, msg, toHex(sig)],
      [undefined, msg, sig],
      [kp.publicKey, null, sig],
      [kp.publicKey, msg, Array.from(sig)],
    ];
    for (const [pk, m, s] of calls) {
      expect(() => ed25519Verify(pk as Uint8Array, m as Uint8Array, s as Uint8Array)).not.toThrow();
      expect(ed25519Verify(pk as Uint8Array, m as Uint8Array, s as Uint8Array)).toBe(false);
    }
  });

  test('ed25519AssertValid throws bad-signature naming what failed, and a signing seed of 31 bytes is refused', () => {
    const kp = ed25519KeyPair();
    let err: unknown;
    try {
      ed25519AssertValid(kp.publicKey, utf8('a'), new Uint8Array(64), 'consistency signature');
    } catch (e) {
      err = e;
    }
    expect(isAegisError(err, ErrorCode.BadSignature)).toBe(true);
    expect((err as Error).message).toContain('consistency signature');
    expect(() => ed25519Sign(new Uint8Array(31), utf8('a'))).toThrow(expect.objectContaining({ code: ErrorCode.BadKeyLength }));
  });
});
