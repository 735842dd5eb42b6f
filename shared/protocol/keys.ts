/**
 * The derived keys of a round, in one place so both sides derive them identically.
 */
import { utf8, concatBytes } from '../bytes.js';
import { deriveKey, Purpose } from '../crypto/hkdf.js';
import { x25519 } from '../crypto/x25519.js';
import { pairContext } from './session.js';
import type { KeyObject } from 'node:crypto';

/** AES-256-GCM key for share pairs between u and v (same both ways; AAD gives direction). */
export function shareEncryptionKey(sessionId: Uint8Array, cSkU: Uint8Array | KeyObject, cPkV: Uint8Array | KeyObject, u: string, v: string): Uint8Array {
  return deriveKey(x25519(cSkU, cPkV), sessionId, Purpose.ShareEncryption, pairContext(u, v));
}

/** s_uv: the PRG key of the pairwise mask between u and v. */
export function pairwiseMaskKey(sessionId: Uint8Array, sSkU: Uint8Array | KeyObject, sPkV: Uint8Array | KeyObject, u: string, v: string): Uint8Array {
  return deriveKey(x25519(sSkU, sPkV), sessionId, Purpose.PairwiseMask, pairContext(u, v));
}

/** The PRG key of u's self mask, from its seed b_u. */
export function selfMaskKey(sessionId: Uint8Array, b: Uint8Array, u: string): Uint8Array {
  return deriveKey(b, sessionId, Purpose.SelfMask, utf8(u));
}

/** Share pair plaintext: version byte, b share (33 bytes), s_sk share (33 bytes). */
export const SHARE_PAIR_VERSION = 1;
export const SHARE_PAIR_BYTES = 1 + 33 + 33;
export const encodeSharePair = (b: Uint8Array, s: Uint8Array): Uint8Array => concatBytes(new Uint8Array([SHARE_PAIR_VERSION]), b, s);
