/**
 * Key objects for the OKP curves (X25519, Ed25519, RFC 8037) made from raw private keys.
 *
 * Every private key Aegis makes is 32 bytes from `crypto.randomBytes`; it is turned into a
 * KeyObject here, never through `generateKeyPairSync`. That is deliberate: on Node 20 a key
 * from `generateKeyPairSync` can deadlock the thread when a garbage collection runs inside an
 * export or use of that key (the key-generation job's destructor takes the key's lock, which
 * the export already holds). A simulated round makes thousands of keys and hit it about once in
 * a few hundred runs.
 *
 * Import goes through JWK: ~40 µs here against ~400 µs for the same key as PKCS#8 DER. Node
 * derives the public half from `d` and does not read `x` for a private key, so a placeholder
 * is given; should a Node version start to check `x`, the import falls back to DER.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { abytes } from '../bytes.js';

type Curve = 'X25519' | 'Ed25519';
const PKCS8_PREFIX: Record<Curve, Buffer> = {
  X25519: Buffer.from('302e020100300506032b656e04220420', 'hex'),
  Ed25519: Buffer.from('302e020100300506032b657004220420', 'hex'),
};
const PLACEHOLDER_X = Buffer.alloc(32).toString('base64url');
const b64u = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('base64url');

export function okpPrivateKeyObject(crv: Curve, d: Uint8Array): KeyObject {
  abytes(d, 32, `${crv} private key`);
  try {
    return createPrivateKey({ key: { kty: 'OKP', crv, d: b64u(d), x: PLACEHOLDER_X }, format: 'jwk' });
  } catch {
    return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX[crv], d]), format: 'der', type: 'pkcs8' });
  }
}

/** The raw 32-byte public key of a private KeyObject. */
export function okpPublicKey(privateKey: KeyObject): Uint8Array {
  const { x } = createPublicKey(privateKey).export({ format: 'jwk' });
  return new Uint8Array(Buffer.from(x!, 'base64url'));
}
