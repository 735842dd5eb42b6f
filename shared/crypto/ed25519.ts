/**
 * Ed25519 signatures (RFC 8032 §5.1) on Node's crypto, with strict verification.
 *
 * OpenSSL already rejects non-canonical S (S >= L, the malleability of RFC 8032 §5.1.7). On top
 * of that we refuse public keys of small order (they make "signatures" that verify for many
 * messages) and keys whose y coordinate is not encoded below p — checked once per key, on its
 * bytes: y (the encoding without its sign bit) against the y of the eight small-order points
 * (@noble/curves' ED25519_TORSION_SUBGROUP), as libsodium does, instead of decoding the point in
 * JavaScript, which cost more than the signature check itself. A key that is no point at all
 * fails OpenSSL's own decoding. Verification returns a boolean; callers turn `false` into their
 * own typed error or abort reason.
 */
import { createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { ED25519_TORSION_SUBGROUP } from '@noble/curves/ed25519.js';
import { abytes, bytesKey } from '../bytes.js';
import { ErrorCode, fail } from '../errors.js';
import { okpPrivateKeyObject, okpPublicKey } from './okp.js';

export const ED25519_PUBLIC_KEY_BYTES = 32;
export const ED25519_SEED_BYTES = 32;
export const ED25519_SIGNATURE_BYTES = 64;

export interface Ed25519KeyPair {
  publicKey: Uint8Array;
  /** The 32-byte RFC 8032 seed. */
  privateKey: Uint8Array;
}

/** A fresh identity key pair; the seed is 32 bytes from `crypto.randomBytes` (see okp.ts). */
export function ed25519KeyPair(): Ed25519KeyPair {
  const privateKey = new Uint8Array(randomBytes(32));
  return { publicKey: okpPublicKey(okpPrivateKeyObject('Ed25519', privateKey)), privateKey };
}

export function ed25519PublicFromSeed(seed: Uint8Array): Uint8Array {
  return okpPublicKey(ed25519PrivateKeyObject(seed));
}

export function ed25519PrivateKeyObject(seed: Uint8Array): KeyObject {
  abytes(seed, ED25519_SEED_BYTES, 'Ed25519 private key');
  return okpPrivateKeyObject('Ed25519', seed);
}

/** A point encoding's y coordinate: the 32 bytes with the sign bit of x cleared, as hex. */
function yOf(encoding: Uint8Array): string {
  const y = Buffer.from(encoding);
  y[31]! &= 0x7f;
  return y.toString('hex');
}

/** The y of the eight points of small order (of both signs of x: y alone decides). */
const SMALL_ORDER_Y = new Set(ED25519_TORSION_SUBGROUP.map((h) => yOf(Buffer.from(h, 'hex'))));

/** True when the encoded y (little-endian, sign bit aside) is below p = 2^255 - 19: ed ff … ff 7f. */
function canonicalY(pk: Uint8Array): boolean {
  if ((pk[31]! & 0x7f) !== 0x7f) return true;
  for (let i = 30; i >= 1; i--) if (pk[i] !== 0xff) return true;
  return pk[0]! < 0xed;
}

/** A key that can verify nothing for anyone: y not below p, or a point of small order. */
export const ed25519KeyRefused = (pk: Uint8Array): boolean => !canonicalY(pk) || SMALL_ORDER_Y.has(yOf(pk));

// Verified public keys are cached as KeyObjects: a round verifies many signatures per key.
const pubCache = new Map<string, KeyObject | null>();
const PUB_CACHE_MAX = 65536;

function publicKeyObject(pk: Uint8Array): KeyObject | null {
  const id = bytesKey(pk);
  const hit = pubCache.get(id);
  if (hit !== undefined) return hit;
  let obj: KeyObject | null = null;
  try {
    // JWK import is an order of magnitude faster than DER here.
    if (!ed25519KeyRefused(pk)) obj = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(pk).toString('base64url') }, format: 'jwk' });
  } catch {
    obj = null;
  }
  if (pubCache.size >= PUB_CACHE_MAX) pubCache.clear();
  pubCache.set(id, obj);
  return obj;
}

export function ed25519Sign(seed: Uint8Array | KeyObject, msg: Uint8Array): Uint8Array {
  const key = seed instanceof Uint8Array ? ed25519PrivateKeyObject(seed) : seed;
  return new Uint8Array(sign(null, msg, key));
}

/** Strict verification: false for any malformed key, signature or mismatch; never throws on input. */
export function ed25519Verify(pk: Uint8Array, msg: Uint8Array, sig: Uint8Array): boolean {
  if (!(pk instanceof Uint8Array) || pk.length !== ED25519_PUBLIC_KEY_BYTES) return false;
  if (!(sig instanceof Uint8Array) || sig.length !== ED25519_SIGNATURE_BYTES) return false;
  if (!(msg instanceof Uint8Array)) return false;
  const key = publicKeyObject(pk);
  if (key === null) return false;
  try {
    return verify(null, msg, key, sig);
  } catch {
    return false;
  }
}

/** Throws `bad-signature` unless `ed25519Verify` holds. */
export function ed25519AssertValid(pk: Uint8Array, msg: Uint8Array, sig: Uint8Array, what: string): void {
  if (!ed25519Verify(pk, msg, sig)) fail(ErrorCode.BadSignature, `${what}: signature does not verify`);
}
