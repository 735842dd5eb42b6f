/**
 * AES-256-GCM (NIST SP 800-38D) for Shamir share pairs in transit between clients.
 *
 * Wire format: nonce (12 bytes, random) || ciphertext || tag (16 bytes). Random nonces because
 * the pairwise key HKDF(X25519(c_sk_u, c_pk_v)) is the same in both directions; the AAD
 * (session id, sender, receiver) still binds each ciphertext to its place.
 * Every failure — short input, wrong key, flipped bit, wrong AAD — raises the same error with
 * the same message, so a caller (or an attacker) learns nothing from which check failed.
 */
import { createCipheriv, createDecipheriv, randomFillSync } from 'node:crypto';
import { abytes, concatBytes } from '../bytes.js';
import { AegisError, ErrorCode } from '../errors.js';

export const AEAD_KEY_BYTES = 32;
export const AEAD_NONCE_BYTES = 12;
export const AEAD_TAG_BYTES = 16;
export const AEAD_OVERHEAD = AEAD_NONCE_BYTES + AEAD_TAG_BYTES;

export const decryptionFailed = (): AegisError => new AegisError(ErrorCode.DecryptionFailed, 'decryption failed');

/** Low-level seal with an explicit nonce (tests and vectors); prefer `seal`. */
export function gcmEncrypt(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): { ciphertext: Uint8Array; tag: Uint8Array } {
  abytes(key, AEAD_KEY_BYTES, 'AES-256-GCM key');
  abytes(nonce, AEAD_NONCE_BYTES, 'AES-256-GCM nonce');
  abytes(plaintext, undefined, 'plaintext');
  abytes(aad, undefined, 'AAD');
  const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: AEAD_TAG_BYTES });
  c.setAAD(aad);
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  return { ciphertext: new Uint8Array(ct), tag: new Uint8Array(c.getAuthTag()) };
}

/** Low-level open with an explicit nonce and tag; throws the one `decryption failed` error. */
export function gcmDecrypt(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array, aad: Uint8Array): Uint8Array {
  abytes(key, AEAD_KEY_BYTES, 'AES-256-GCM key');
  if (!(nonce instanceof Uint8Array) || nonce.length !== AEAD_NONCE_BYTES) throw decryptionFailed();
  if (!(tag instanceof Uint8Array) || tag.length !== AEAD_TAG_BYTES) throw decryptionFailed();
  try {
    const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: AEAD_TAG_BYTES });
    d.setAAD(aad);
    d.setAuthTag(tag);
    return new Uint8Array(Buffer.concat([d.update(ciphertext), d.final()]));
  } catch {
    throw decryptionFailed();
  }
}

// Nonces come from the OS CSPRNG a few hundred at a time: one `randomFillSync` call costs about as
// much as sealing a share pair, and a client seals one per neighbour each round. A nonce is public
// (it travels in front of its ciphertext), so holding the next ones in memory reveals nothing; each
// is handed out once and never again.
const NONCES_PER_FILL = 256;
const noncePool = Buffer.alloc(AEAD_NONCE_BYTES * NONCES_PER_FILL);
let nonceAt = noncePool.length;

/** Writes a fresh random nonce into `out` (12 bytes). */
function fillNonce(out: Uint8Array): void {
  if (nonceAt === noncePool.length) {
    randomFillSync(noncePool);
    nonceAt = 0;
  }
  out.set(noncePool.subarray(nonceAt, nonceAt + AEAD_NONCE_BYTES));
  nonceAt += AEAD_NONCE_BYTES;
}

/** Encrypts with a fresh random nonce; returns nonce || ciphertext || tag. */
export function seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  const nonce = new Uint8Array(AEAD_NONCE_BYTES);
  fillNonce(nonce);
  const { ciphertext, tag } = gcmEncrypt(key, nonce, plaintext, aad);
  return concatBytes(nonce, ciphertext, tag);
}

/** Opens nonce || ciphertext || tag; any failure is the one `decryption failed` error. */
export function open(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array {
  if (!(sealed instanceof Uint8Array) || sealed.length < AEAD_OVERHEAD) throw decryptionFailed();
  const nonce = sealed.subarray(0, AEAD_NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - AEAD_TAG_BYTES);
  return gcmDecrypt(key, nonce, sealed.subarray(AEAD_NONCE_BYTES, sealed.length - AEAD_TAG_BYTES), tag, aad);
}
