/**
 * HKDF-SHA256 (RFC 5869) on Node's crypto. Every key Aegis derives inside a round uses the
 * round's `session_id` as salt and a purpose label as info, so no derived key is reusable
 * across rounds, jobs or purposes (DESIGN.md §2).
 *
 * A key of at most one hash length (every key of a round) is the RFC's two HMACs written out:
 * PRK = HMAC(salt, IKM), OKM = first L bytes of HMAC(PRK, info || 0x01). `hkdfSync` computes the
 * same bytes but makes two KeyObjects per call, which cost more than the hashing — a client
 * derives 2k + 1 keys a round. Longer outputs go to `hkdfSync`. An empty salt needs no special
 * case: HMAC pads its key with zeros, so it is the RFC's default salt of 32 zero bytes.
 */
import { createHmac, hkdfSync } from 'node:crypto';
import { abytes, concatBytes, utf8 } from '../bytes.js';
import { ErrorCode, fail } from '../errors.js';

/** Purpose labels: one per use of a derived key. */
export const Purpose = {
  ShareEncryption: 'aegis/v1/share-encryption',
  PairwiseMask: 'aegis/v1/pairwise-mask',
  SelfMask: 'aegis/v1/self-mask',
  NeighbourGraph: 'aegis/v1/neighbour-graph',
} as const;
export type Purpose = (typeof Purpose)[keyof typeof Purpose];

/** Raw HKDF-SHA256; `length` at most 255 * 32 bytes (RFC 5869 §2.3). */
export function hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  abytes(ikm, undefined, 'HKDF input key material');
  abytes(salt, undefined, 'HKDF salt');
  abytes(info, undefined, 'HKDF info');
  if (!Number.isInteger(length) || length < 1 || length > 255 * 32) {
    fail(ErrorCode.InvalidArgument, 'HKDF output length must be 1..8160 bytes');
  }
  if (length > HASH_BYTES) return new Uint8Array(hkdfSync('sha256', ikm, salt, info, length));
  const prk = createHmac('sha256', salt).update(ikm).digest();
  const okm = createHmac('sha256', prk).update(info).update(COUNTER_ONE).digest();
  prk.fill(0);
  const out = new Uint8Array(okm.subarray(0, length));
  okm.fill(0);
  return out;
}

const HASH_BYTES = 32;
const COUNTER_ONE = new Uint8Array([1]);

/**
 * A 32-byte key for `purpose` within the session. `context` (e.g. the ordered pair of client
 * ids) is appended to the label so two uses of one secret never share a key.
 */
export function deriveKey(ikm: Uint8Array, sessionId: Uint8Array, purpose: Purpose, context?: Uint8Array): Uint8Array {
  abytes(sessionId, 32, 'session id');
  const info = context ? concatBytes(utf8(purpose), new Uint8Array([0]), context) : utf8(purpose);
  return hkdfSha256(ikm, sessionId, info, 32);
}
