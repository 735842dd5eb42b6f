/**
 * Session binding: the session id and every transcript that is signed, used as AAD or fed to a
 * KDF inside a round. All tuples are length-prefixed (bytes.lengthPrefixed), so no two distinct
 * tuples encode alike.
 */
import { createHash } from 'node:crypto';
import { abytes, lengthPrefixed, u32be, utf8 } from '../bytes.js';
import { ErrorCode, fail } from '../errors.js';
import type { AdvertisedEntry, RoundRef } from './messages.js';

const LABEL_SESSION = 'aegis/v1/session-id';
const LABEL_ADVERTISE = 'aegis/v1/advertise-keys';
const LABEL_CONSISTENCY = 'aegis/v1/consistency-check';
const LABEL_SHARE_AAD = 'aegis/v1/share-pair';

/** Client ids: 1..128 characters of [A-Za-z0-9._:@-] (none special in X.500 names), compared by code unit (ASCII order). */
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9._:@-]{1,128}$/;
export const isValidClientId = (id: unknown): id is string => typeof id === 'string' && CLIENT_ID_PATTERN.test(id);
export const compareIds = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

export function assertRoundRef(r: RoundRef): void {
  abytes(r?.manifestHash, 32, 'manifest hash');
  if (!Number.isInteger(r.roundIndex) || r.roundIndex < 0 || r.roundIndex > 0xffffffff) fail(ErrorCode.InvalidArgument, 'round index out of range');
}

export const sameRound = (a: RoundRef, b: RoundRef): boolean =>
  a.roundIndex === b.roundIndex && Buffer.compare(a.manifestHash, b.manifestHash) === 0;

/** What a client signs in phase 0: its keys bound to the round, to its view of it (view.ts) and to its id. */
export function advertiseTranscript(round: RoundRef, view: Uint8Array, clientId: string, cPk: Uint8Array, sPk: Uint8Array): Uint8Array {
  return lengthPrefixed(LABEL_ADVERTISE, round.manifestHash, u32be(round.roundIndex), view, clientId, cPk, sPk);
}

/**
 * session_id = SHA-256(label || manifest hash || round index || U1 sorted by id with keys and
 * views). Everyone computes it from the broadcast; every KDF of the round uses it as salt. Each
 * entry is length-prefixed (id, c_pk, s_pk, view), written into one buffer: every client hashes
 * all of U1, so clients shown different views of the round end with different session ids.
 */
export function computeSessionId(round: RoundRef, u1: readonly AdvertisedEntry[]): Uint8Array {
  const h = createHash('sha256');
  h.update(lengthPrefixed(LABEL_SESSION, round.manifestHash, u32be(round.roundIndex), u32be(u1.length)));
  // Sorted by id; a list that already is (the roster's) is taken as it is, checked in one pass.
  let inOrder = true;
  for (let i = 1; i < u1.length && inOrder; i++) inOrder = compareIds(u1[i - 1]!.clientId, u1[i]!.clientId) <= 0;
  const sorted = inOrder ? u1 : [...u1].sort((a, b) => compareIds(a.clientId, b.clientId));
  let size = 0;
  for (const e of sorted) size += 16 + Buffer.byteLength(e.clientId) + e.cPk.length + e.sPk.length + e.view.length;
  const buf = Buffer.allocUnsafe(size);
  let o = 0;
  for (const e of sorted) {
    const idLen = Buffer.byteLength(e.clientId);
    o = buf.writeUInt32BE(idLen, o);
    o += buf.write(e.clientId, o, 'utf8');
    o = buf.writeUInt32BE(e.cPk.length, o);
    buf.set(e.cPk, o);
    o += e.cPk.length;
    o = buf.writeUInt32BE(e.sPk.length, o);
    buf.set(e.sPk, o);
    o += e.sPk.length;
    o = buf.writeUInt32BE(e.view.length, o);
    buf.set(e.view, o);
    o += e.view.length;
  }
  h.update(buf);
  return new Uint8Array(h.digest());
}

/** What a client signs in phase 3: the session and the survivor list U3 (sorted). */
export function consistencyTranscript(sessionId: Uint8Array, u3: readonly string[]): Uint8Array {
  return lengthPrefixed(LABEL_CONSISTENCY, sessionId, u32be(u3.length), ...u3);
}

/** AAD of the share pair that `from` encrypts to `to` within the session. */
export function shareAad(sessionId: Uint8Array, from: string, to: string): Uint8Array {
  return lengthPrefixed(LABEL_SHARE_AAD, sessionId, from, to);
}

/** Context of the pairwise mask key between a and b: the ordered pair, so it is symmetric. */
export function pairContext(a: string, b: string): Uint8Array {
  return a < b ? lengthPrefixed(a, b) : lengthPrefixed(b, a);
}

/** Sign of p_uv in y_u: + if u < v else - (so p_uv and p_vu cancel in the sum). */
export const maskSign = (u: string, v: string): 1 | -1 => (u < v ? 1 : -1);

export const sha256 = (b: Uint8Array | string): Uint8Array =>
  new Uint8Array(createHash('sha256').update(typeof b === 'string' ? utf8(b) : b).digest());
