/**
 * ECDSA P-256 keys (FIPS 186-5 §6, curve P-256 of SP 800-186; RFC 5480 in X.509, signatures
 * ecdsa-with-SHA256 per RFC 5758) made from a 32-byte seed: as WebCrypto CryptoKeys for
 * @peculiar/x509, as KeyObjects, and as PKCS#8 PEM for Node's `tls`.
 *
 * Why P-256: it is the one certificate key every TLS 1.3 stack signs and verifies by default
 * (`ecdsa_secp256r1_sha256`, RFC 8446 §4.2.3). BoringSSL-based stacks (the PyPI grpcio wheel,
 * Chrome) and Go's and Java's defaults leave Ed25519 out of the signature algorithms they
 * offer, so an Ed25519 certificate ends their handshake with an alert.
 *
 * Why from a seed: a key is stored as the 32 random bytes it comes from (the vault slots and
 * keyfiles that held Ed25519 seeds hold these as they are), and a client's TLS key is derived
 * from its identity seed, so a client data dir holds one secret for both keys. The private
 * scalar is HKDF-SHA-256 (RFC 5869) of the seed under a label naming the key's use, 48 bytes
 * reduced as FIPS 186-5 §A.2.1 ("extra random bits"): d = (c mod (n − 1)) + 1, so d is in
 * [1, n − 1] with a bias below 2^-64 and without a retry loop. No key generation job runs (see
 * shared/crypto/okp.ts for why Aegis never calls `generateKeyPair`).
 */
import { createECDH, createPrivateKey, createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import type * as X509 from '@peculiar/x509';
import { abytes, utf8 } from '../bytes.js';
import { hkdfSha256 } from '../crypto/hkdf.js';

/** The order n of the P-256 base point (SP 800-186 §3.2.1.3). */
const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

/** The WebCrypto algorithm of a P-256 key. */
export const P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
/** The signing algorithm for @peculiar/x509: ECDSA with SHA-256 (ecdsa-with-SHA256, 1.2.840.10045.4.3.2). */
export const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** One label per use of a P-256 key, so one seed never yields the same key for two uses. */
export const P256Purpose = {
  /** A CA key (the embedded CA and `aegis ca init`). */
  Ca: 'aegis/v1/p256/ca',
  /** The coordinator's TLS server key. */
  Server: 'aegis/v1/p256/tls-server',
  /** A client's TLS key, derived from its Ed25519 identity seed. */
  ClientTls: 'aegis/v1/p256/client-tls',
  /** An operator's key (`operator-seed`: the built-in credential and `aegis operators issue` files). */
  Operator: 'aegis/v1/p256/operator',
} as const;
export type P256Purpose = (typeof P256Purpose)[keyof typeof P256Purpose];

const SALT = utf8('aegis/v1/p256-key-from-seed');

type SubtleKeyPair = Parameters<typeof X509.X509CertificateGenerator.createSelfSigned>[0]['keys'];
type SubtleKey = SubtleKeyPair['privateKey'];

const b64u = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('base64url');

/** The private scalar d (32 bytes, big-endian) for `seed` and `purpose`. */
export function p256Scalar(seed: Uint8Array, purpose: P256Purpose): Uint8Array {
  abytes(seed, 32, 'P-256 key seed');
  const c = BigInt(`0x${Buffer.from(hkdfSha256(seed, SALT, utf8(purpose), 48)).toString('hex')}`);
  const d = (c % (P256_N - 1n)) + 1n;
  return new Uint8Array(Buffer.from(d.toString(16).padStart(64, '0'), 'hex'));
}

/** The private key as a JWK (both halves; the public point computed by OpenSSL from d). */
function p256Jwk(seed: Uint8Array, purpose: P256Purpose): { kty: 'EC'; crv: 'P-256'; x: string; y: string; d: string } {
  const d = p256Scalar(seed, purpose);
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(d);
  const point = new Uint8Array(ecdh.getPublicKey()); // 0x04 || x || y
  const jwk = { kty: 'EC' as const, crv: 'P-256' as const, x: b64u(point.subarray(1, 33)), y: b64u(point.subarray(33, 65)), d: b64u(d) };
  d.fill(0);
  return jwk;
}

/** The key pair of `seed` for `purpose` as Node KeyObjects. */
export function p256KeyObjects(seed: Uint8Array, purpose: P256Purpose): { privateKey: KeyObject; publicKey: KeyObject } {
  const privateKey = createPrivateKey({ key: p256Jwk(seed, purpose), format: 'jwk' });
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

/** The DER SubjectPublicKeyInfo of the key of `seed` for `purpose` (uncompressed point). */
export function p256Spki(seed: Uint8Array, purpose: P256Purpose): Uint8Array {
  return new Uint8Array(p256KeyObjects(seed, purpose).publicKey.export({ format: 'der', type: 'spki' }));
}

/** PKCS#8 PEM of the key of `seed` for `purpose`, for Node's `tls` options (`key`). */
export function p256PrivateKeyPem(seed: Uint8Array, purpose: P256Purpose): string {
  return p256KeyObjects(seed, purpose).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

/** A WebCrypto P-256 key pair for `seed` and `purpose`; the private key is not extractable. */
export async function p256CryptoKeys(seed: Uint8Array, purpose: P256Purpose): Promise<{ keys: SubtleKeyPair; spki: Uint8Array }> {
  const jwk = p256Jwk(seed, purpose);
  const { d: _d, ...pub } = jwk;
  const privateKey = (await webcrypto.subtle.importKey('jwk', jwk, P256, false, ['sign'])) as unknown as SubtleKey;
  const publicKey = (await webcrypto.subtle.importKey('jwk', pub, P256, true, ['verify'])) as unknown as SubtleKey;
  const spki = new Uint8Array(createPublicKey({ key: pub, format: 'jwk' }).export({ format: 'der', type: 'spki' }));
  return { keys: { privateKey, publicKey }, spki };
}
