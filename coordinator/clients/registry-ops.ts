/**
 * The changes the client registry makes, as pure operations a store runs atomically against the
 * shared facts (coordinator/clients/registry-store.ts): each names what it reads, checks the
 * facts it is given and returns what to write (merged by the rules of merge.ts), or throws to
 * refuse — then nothing is written. No I/O here: the file store runs an operation on
 * registry.json under its lock, the Redis store under WATCH/MULTI, the memory store on the cache.
 *
 * Checks that decide who may enroll or renew run here, against the store's facts at the moment of
 * the write, not against a process's cache: an invite redeemed on another front end, a client
 * revoked there, or a renewal that finished there is seen.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { KeyAlreadyBoundError } from '../auth/ca.js';
import { EnrollmentError, Invites, type InviteRecord, type RevocationReason } from '../auth/enrollment.js';
import { AuthError } from '../auth/tokens.js';
import type { RegistryDelta } from './merge.js';
import type { ClientRecord, Registry } from './registry.js';
import { certificateSerialsOf, nextIssuedAt, rememberSerial, revocationCodeOf } from './serials.js';

/** The facts an operation reads (the Redis store fetches and WATCHes these; the file store has them all). */
export interface RegistryReads {
  clients?: string[];
  /** Invite hashes (hex). */
  invites?: string[];
  /** Public keys (base64url). */
  bindings?: string[];
  revokedClients?: string[];
  serials?: string[];
}

export interface RegistryOp<T> {
  /** For messages and logs. */
  readonly name: string;
  readonly reads: RegistryReads;
  /** Checks only, writes nothing (its delta is empty). */
  readonly readOnly?: boolean;
  /** Checks `state` (at least the facts of `reads`; never changed here) and returns what to write, or throws. */
  apply(state: Registry): { delta: RegistryDelta; result: T };
}

/** A new certificate's facts. */
export interface IssuedFacts {
  serial: string;
  certificateExpiresAt: number;
  /** DER, base64. */
  certificate: string;
}

const keyBytes = (b64url: string): Uint8Array => new Uint8Array(Buffer.from(b64url, 'base64url'));

/** Stores a new invite (its hash only). */
export function inviteOp(record: InviteRecord): RegistryOp<void> {
  return { name: 'invite', reads: {}, apply: () => ({ delta: { invites: [record] }, result: undefined }) };
}

/**
 * Enrollment: redeems the invite (`hash`) and records the client with its new certificate and
 * key binding — or, without `cert`, only checks that it could (before anything is signed).
 * Refuses, in this order: an unknown, used or expired invite (`EnrollmentError`), an invite for
 * another id (`malformed`), an id enrolled under another key or a key bound to another id
 * (`key-already-bound`), a revoked id (`enrollment-refused`).
 */
export function enrollOp(e: { hash: string; clientId: string; publicKey: string; now: number; cert?: IssuedFacts }): RegistryOp<void> {
  return {
    name: 'enroll',
    reads: { clients: [e.clientId], invites: [e.hash], bindings: [e.publicKey], revokedClients: [e.clientId] },
    ...(e.cert === undefined ? { readOnly: true } : {}),
    apply(state) {
      const invite = state.invites.byHash(e.hash);
      const named = Invites.checkRedeemable(invite, e.now);
      if (named.clientId !== undefined && named.clientId !== e.clientId) throw new EnrollmentError('malformed');
      const existing = state.clients.get(e.clientId);
      if (existing && existing.publicKey !== e.publicKey) throw new AegisError(ErrorCode.KeyAlreadyBound, `client id '${e.clientId}' is already enrolled under another key`);
      if (state.revocations.isRevoked({ clientId: e.clientId })) throw new AegisError(ErrorCode.EnrollmentRefused, `client id '${e.clientId}' is revoked; enroll under a new id`);
      const owner = state.bindings.owner(keyBytes(e.publicKey));
      if (owner !== undefined && owner !== e.clientId) throw new KeyAlreadyBoundError();
      if (e.cert === undefined) return { delta: {}, result: undefined };
      const record: ClientRecord = {
        clientId: e.clientId,
        publicKey: e.publicKey,
        enrolledAt: existing?.enrolledAt ?? e.now,
        ...e.cert,
        issuedAt: nextIssuedAt(existing, e.now),
        ...(existing ? { previousSerials: rememberSerial({ ...existing }, e.now) } : {}),
      };
      return { delta: { clients: [record], invites: [{ ...invite!, usedAt: e.now }], bindings: [[e.publicKey, e.clientId]] }, result: undefined };
    },
  };
}

/**
 * Renewal (same key) or rekey (`newKey` differs from `baseKey`): the client's new certificate.
 * Refuses a caller whose client or certificate (`callerSerial`) is revoked by now, a client whose
 * key changed since the renewal began (another rekey won: `unavailable`, retry), and a new key
 * bound to another id. A rekey revokes, as superseded, the caller's certificate and every
 * certificate of the old key still valid (the ones the store knows at this moment).
 */
export function renewOp(e: { clientId: string; baseKey: string; newKey: string; callerSerial: string; now: number; cert: IssuedFacts }): RegistryOp<ClientRecord> {
  const rekey = e.newKey !== e.baseKey;
  return {
    name: rekey ? 'rekey' : 'renew',
    reads: { clients: [e.clientId], revokedClients: [e.clientId], serials: [e.callerSerial], ...(rekey ? { bindings: [e.newKey] } : {}) },
    apply(state) {
      const cur = state.clients.get(e.clientId);
      if (!cur) throw new AuthError('no-identity', 'peer certificate');
      if (state.revocations.isRevoked({ clientId: e.clientId, serial: e.callerSerial })) throw new AuthError('revoked', 'peer certificate');
      if (cur.publicKey !== e.baseKey) throw new AegisError(ErrorCode.Unavailable, "this client's identity key changed meanwhile; retry");
      if (rekey) {
        const owner = state.bindings.owner(keyBytes(e.newKey));
        if (owner !== undefined && owner !== e.clientId) throw new KeyAlreadyBoundError();
      }
      const base: ClientRecord = { ...cur };
      rememberSerial(base, e.now);
      const record: ClientRecord = { ...base, publicKey: e.newKey, ...e.cert, issuedAt: nextIssuedAt(cur, e.now) };
      const delta: RegistryDelta = { clients: [record] };
      if (rekey) {
        const superseded = new Set([e.callerSerial, ...certificateSerialsOf(cur, e.now)]);
        delta.revokedSerials = [...superseded].map((serial) => ({ serial, revokedAt: e.now, reason: 'superseded' as const }));
        delta.bindings = [[e.newKey, e.clientId]];
      }
      return { delta, result: record };
    },
  };
}

/**
 * Revokes a client: its id, and every serial of it still valid at `now` (the ones the store knows
 * at this moment), with the revocation's time and reason — the first revocation's, if it was
 * revoked already. `not-found` for a client never enrolled.
 */
export function revokeClientOp(e: { clientId: string; reason: RevocationReason; detail: string; now: number }): RegistryOp<{ revokedAt: number; record: ClientRecord }> {
  return {
    name: 'revoke',
    reads: { clients: [e.clientId] },
    apply(state) {
      const rec = state.clients.get(e.clientId);
      if (!rec) throw new AegisError(ErrorCode.NotFound, `no enrolled client '${e.clientId}'`);
      const revoked: ClientRecord = { ...rec };
      if (revoked.revokedAt === undefined) {
        revoked.revokedAt = e.now;
        revoked.revocationReason = e.reason;
        delete revoked.revocationDetail;
        const text = e.detail.trim().slice(0, 200);
        if (text) revoked.revocationDetail = text;
      }
      const info = { revokedAt: revoked.revokedAt, reason: revocationCodeOf(revoked) };
      return {
        delta: { clients: [revoked], revokedClients: [e.clientId], revokedSerials: certificateSerialsOf(revoked, e.now).map((serial) => ({ serial, ...info })) },
        result: { revokedAt: revoked.revokedAt, record: revoked },
      };
    },
  };
}

/** Revokes bare certificate serials (normalized by the caller). */
export function revokeSerialsOp(e: { serials: string[]; reason: RevocationReason; detail?: string; now: number }): RegistryOp<number> {
  return {
    name: 'revoke-serials',
    reads: {},
    apply: () => ({ delta: { revokedSerials: e.serials.map((serial) => ({ serial, revokedAt: e.now, reason: e.reason, ...(e.detail ? { detail: e.detail } : {}) })) }, result: e.now }),
  };
}

/** Last-seen times (ms, per minute), kept as the later of what the store has and these. */
export function lastSeenOp(times: [string, number][]): RegistryOp<void> {
  return { name: 'last-seen', reads: {}, apply: () => ({ delta: { lastSeen: times }, result: undefined }) };
}

/** Writes nothing itself: the file store merges the cache's facts into the file on every run. */
export function syncOp(): RegistryOp<void> {
  return { name: 'sync', reads: {}, apply: () => ({ delta: {}, result: undefined }) };
}
