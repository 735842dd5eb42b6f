/**
 * Ed25519 keys (RFC 8032, RFC 8410 in X.509) as WebCrypto CryptoKeys for @peculiar/x509.
 *
 * Certificates and CSRs are built with @peculiar/x509 on Node's `crypto.webcrypto`. The keys
 * still come from 32 random bytes (see shared/crypto/okp.ts: never `generateKeyPair`, which can
 * deadlock under GC on Node 20, and `subtle.generateKey` runs the same key-generation job); they
 * are imported as JWK with both halves, the public half derived by Node from the seed.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import type * as X509 from '@peculiar/x509';
import { abytes } from '../bytes.js';
import { okpPrivateKeyObject, okpPublicKey } from '../crypto/okp.js';

export type { X509 };
let loaded: Promise<typeof X509> | undefined;

/**
 * @peculiar/x509, loaded on first use with Node 20's WebCrypto as its provider. Loaded
 * dynamically: its dependency tsyringe needs the `Reflect` metadata polyfill (reflect-metadata)
 * at load time, and
 * Jest links CommonJS dependencies before any ES module body (the polyfill) runs.
 */
export function loadX509(): Promise<typeof X509> {
  loaded ??= import('@peculiar/x509').then((x509) => {
    x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
    return x509;
  });
  return loaded;
}

/** The algorithm of every key in Aegis's PKI: pure Ed25519 (no pre-hash), OID 1.3.101.112. */
export const ED25519 = { name: 'Ed25519' } as const;

type SubtleKeyPair = Parameters<typeof X509.X509CertificateGenerator.createSelfSigned>[0]['keys'];
type SubtleKey = SubtleKeyPair['privateKey'];

const b64u = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('base64url');

/** A WebCrypto Ed25519 key pair from a 32-byte seed; the private key is not extractable. */
export async function ed25519CryptoKeys(seed: Uint8Array): Promise<{ keys: SubtleKeyPair; publicKey: Uint8Array }> {
  abytes(seed, 32, 'Ed25519 seed');
  const publicKey = okpPublicKey(okpPrivateKeyObject('Ed25519', seed));
  const jwk = { kty: 'OKP', crv: 'Ed25519', x: b64u(publicKey) };
  const privateKey = (await webcrypto.subtle.importKey('jwk', { ...jwk, d: b64u(seed) }, ED25519, false, ['sign'])) as unknown as SubtleKey;
  const pub = (await webcrypto.subtle.importKey('jwk', jwk, ED25519, true, ['verify'])) as unknown as SubtleKey;
  return { keys: { privateKey, publicKey: pub }, publicKey };
}

/** PKCS#8 PEM of an Ed25519 seed, for Node's `tls` options (`key`). */
export function ed25519PrivateKeyPem(seed: Uint8Array): string {
  return okpPrivateKeyObject('Ed25519', seed).export({ format: 'pem', type: 'pkcs8' }).toString();
}
