/**
 * Merging copies of the client registry. Several processes hold one (each front end's cache,
 * registry.json, the keys on Redis) and each may know facts the others do not yet; a merge takes
 * the union, so that whichever copy is merged into which, in any order and any number of times,
 * the result is the same and no fact is lost. The rules:
 *
 * - revocations are add-only: a revoked client id or serial stays revoked; of two revocations of
 *   one serial the earlier one's time and reason stay;
 * - client records: for one client, the record with the newer certificate wins (the later
 *   `issuedAt` — each renewal records one later than the record it replaces — else the larger
 *   serial), and the other's serial joins `previousSerials` (so it still goes on the CRL if the
 *   client is revoked); the earliest enrollment and the earliest revocation (with its reason and
 *   detail) are kept, whichever record carried them; last seen is the later one;
 * - a revoked record revokes its client id and every serial of it still valid when it was revoked;
 * - key bindings: union (a key bound to two ids keeps the binding already held);
 * - invites: union; a redeemed invite stays redeemed (the earliest use wins).
 *
 * Pure functions over `Registry` values, no I/O.
 */
import { Invites, type InviteRecord, type RevocationReason, type SerialRevocationInfo } from '../auth/enrollment.js';
import type { ClientRecord, Registry } from './registry.js';
import { certificateSerialsOf, issuedAtOf, revocationCodeOf } from './serials.js';

/** Earlier serials kept per client record (the same bound as `rememberSerial`). */
const MAX_PREVIOUS_SERIALS = 64;

/** A revoked serial, with when and why when known. */
export interface RevokedSerialFact {
  serial: string;
  revokedAt?: number;
  reason?: RevocationReason;
  detail?: string;
}

/** Facts to merge into a registry (what a store wrote, or learned from another writer). */
export interface RegistryDelta {
  clients?: ClientRecord[];
  invites?: InviteRecord[];
  /** [public key (base64url), client id]. */
  bindings?: [string, string][];
  revokedClients?: string[];
  revokedSerials?: RevokedSerialFact[];
  /** [client id, last seen (ms)]: applied to records this registry holds. */
  lastSeen?: [string, number][];
}

/** What a merge newly revoked. */
export interface RevocationChange {
  clients: string[];
  serials: string[];
}

export function isEmptyDelta(d: RegistryDelta): boolean {
  return !d.clients?.length && !d.invites?.length && !d.bindings?.length && !d.revokedClients?.length && !d.revokedSerials?.length && !d.lastSeen?.length;
}

/** [newer, older] of two records of one client: a total order, so merges agree in any order. */
function byCertificate(a: ClientRecord, b: ClientRecord): [ClientRecord, ClientRecord] {
  const ta = issuedAtOf(a);
  const tb = issuedAtOf(b);
  if (ta !== tb) return ta > tb ? [a, b] : [b, a];
  return a.serial >= b.serial ? [a, b] : [b, a];
}

const revocationKey = (r: ClientRecord): string => `${r.revocationReason ?? ''}\u0000${r.revocationDetail ?? ''}`;

/** The same record with its fields in one order and its earlier serials sorted (newest first). */
export function canonicalRecord(r: ClientRecord): ClientRecord {
  const out: ClientRecord = {
    clientId: r.clientId,
    publicKey: r.publicKey,
    enrolledAt: r.enrolledAt,
    serial: r.serial,
    certificateExpiresAt: r.certificateExpiresAt,
    certificate: r.certificate,
  };
  if (r.issuedAt !== undefined) out.issuedAt = r.issuedAt;
  if (r.revokedAt !== undefined) {
    out.revokedAt = r.revokedAt;
    if (r.revocationReason !== undefined) out.revocationReason = r.revocationReason;
    if (r.revocationDetail !== undefined) out.revocationDetail = r.revocationDetail;
  }
  if (r.lastSeenAt !== undefined) out.lastSeenAt = r.lastSeenAt;
  const prev = (r.previousSerials ?? [])
    .filter((p) => p.serial !== r.serial)
    .map((p) => ({ serial: p.serial, expiresAt: p.expiresAt }))
    .sort((x, y) => y.expiresAt - x.expiresAt || (x.serial < y.serial ? -1 : x.serial > y.serial ? 1 : 0))
    .slice(0, MAX_PREVIOUS_SERIALS);
  if (prev.length > 0) out.previousSerials = prev;
  return out;
}

/** The merge of two records of one client (see the rules above). */
export function mergeRecord(a: ClientRecord, b: ClientRecord): ClientRecord {
  const [newer, older] = byCertificate(a, b);
  const out: ClientRecord = {
    clientId: newer.clientId,
    publicKey: newer.publicKey,
    enrolledAt: Math.min(a.enrolledAt, b.enrolledAt),
    serial: newer.serial,
    certificateExpiresAt: newer.certificateExpiresAt,
    certificate: newer.certificate,
  };
  if (newer.issuedAt !== undefined) out.issuedAt = newer.issuedAt;
  // The earliest revocation, with its own reason and detail.
  const revoked = [a, b].filter((r) => r.revokedAt !== undefined).sort((x, y) => x.revokedAt! - y.revokedAt! || (revocationKey(x) < revocationKey(y) ? -1 : revocationKey(x) > revocationKey(y) ? 1 : 0))[0];
  if (revoked) {
    out.revokedAt = revoked.revokedAt!;
    if (revoked.revocationReason !== undefined) out.revocationReason = revoked.revocationReason;
    if (revoked.revocationDetail !== undefined) out.revocationDetail = revoked.revocationDetail;
  }
  const seen = Math.max(a.lastSeenAt ?? Number.NEGATIVE_INFINITY, b.lastSeenAt ?? Number.NEGATIVE_INFINITY);
  if (Number.isFinite(seen)) out.lastSeenAt = seen;
  const prev = new Map<string, number>();
  for (const p of [...(a.previousSerials ?? []), ...(b.previousSerials ?? [])]) prev.set(p.serial, Math.max(prev.get(p.serial) ?? Number.NEGATIVE_INFINITY, p.expiresAt));
  if (older.serial !== newer.serial) prev.set(older.serial, Math.max(prev.get(older.serial) ?? Number.NEGATIVE_INFINITY, older.certificateExpiresAt));
  prev.delete(newer.serial);
  out.previousSerials = [...prev].map(([serial, expiresAt]) => ({ serial, expiresAt }));
  return canonicalRecord(out);
}

/** Equal records (compared in canonical form). */
export function sameRecord(a: ClientRecord, b: ClientRecord): boolean {
  return JSON.stringify(canonicalRecord(a)) === JSON.stringify(canonicalRecord(b));
}

/**
 * Merges `delta` into `reg` in place (its `revocations`, `invites` and `bindings` objects stay
 * the same objects: the transport holds them). Returns what it newly revoked.
 */
export function applyDelta(reg: Registry, delta: RegistryDelta): RevocationChange {
  const change: RevocationChange = { clients: [], serials: [] };
  const revokeSerial = (serial: string, info?: SerialRevocationInfo): void => {
    if (reg.revocations.addSerial(serial, info)) change.serials.push(serial.toLowerCase().replace(/^0+(?=.)/, ''));
  };
  for (const rec of delta.clients ?? []) {
    const mine = reg.clients.get(rec.clientId);
    const merged = mine ? mergeRecord(mine, rec) : canonicalRecord(rec);
    reg.clients.set(rec.clientId, merged);
    if (merged.revokedAt !== undefined) {
      if (reg.revocations.addClient(merged.clientId)) change.clients.push(merged.clientId);
      const info = { revokedAt: merged.revokedAt, reason: revocationCodeOf(merged) };
      // Every certificate of the client still valid when it was revoked: also one a racing
      // renewal issued, which the merge made current or earlier.
      for (const serial of certificateSerialsOf(merged, merged.revokedAt)) revokeSerial(serial, info);
    }
  }
  if (delta.invites?.length) reg.invites.absorb(delta.invites);
  for (const [key, clientId] of delta.bindings ?? []) {
    const raw = new Uint8Array(Buffer.from(key, 'base64url'));
    if (reg.bindings.owner(raw) === undefined) reg.bindings.bind(raw, clientId);
  }
  for (const id of delta.revokedClients ?? []) if (reg.revocations.addClient(id)) change.clients.push(id);
  for (const s of delta.revokedSerials ?? []) {
    revokeSerial(s.serial, s.revokedAt !== undefined && s.reason !== undefined ? { revokedAt: s.revokedAt, reason: s.reason, ...(s.detail !== undefined ? { detail: s.detail } : {}) } : undefined);
  }
  for (const [id, at] of delta.lastSeen ?? []) {
    const rec = reg.clients.get(id);
    if (rec && Number.isSafeInteger(at) && (rec.lastSeenAt ?? Number.NEGATIVE_INFINITY) < at) reg.clients.set(id, { ...rec, lastSeenAt: at });
  }
  return change;
}

/** Every fact of `reg` as a delta (to merge a whole copy into another). */
export function deltaOf(reg: Registry): RegistryDelta {
  return {
    clients: [...reg.clients.values()].map((r) => ({ ...r })),
    invites: reg.invites.list(),
    bindings: reg.bindings.toJSON().bindings,
    revokedClients: reg.revocations.clientIds(),
    revokedSerials: reg.revocations.entries(),
  };
}

/** Merges every fact of `from` into `into` (in place); returns what it newly revoked there. */
export function mergeRegistry(into: Registry, from: Registry): RevocationChange {
  return applyDelta(into, deltaOf(from));
}

function withoutLastSeen(r: ClientRecord): ClientRecord {
  const { lastSeenAt: _, ...rest } = r;
  return rest;
}

/**
 * The facts of `mine` that `theirs` lacks (or holds older: an earlier revocation time, a later
 * last seen, a newer record, an invite used), as a delta to merge into `theirs`. Invites that
 * `prune` would drop at `now` are left out.
 */
export function factsMissing(mine: Registry, theirs: Registry, now: number): Required<RegistryDelta> {
  const missing: Required<RegistryDelta> = { clients: [], invites: [], bindings: [], revokedClients: [], revokedSerials: [], lastSeen: [] };
  for (const rec of mine.clients.values()) {
    const stored = theirs.clients.get(rec.clientId);
    const plain = withoutLastSeen(rec);
    if (!stored || !sameRecord(withoutLastSeen(mergeRecord(stored, plain)), withoutLastSeen(stored))) missing.clients.push(plain);
    if (rec.lastSeenAt !== undefined && (stored?.lastSeenAt ?? Number.NEGATIVE_INFINITY) < rec.lastSeenAt) missing.lastSeen.push([rec.clientId, rec.lastSeenAt]);
  }
  for (const id of mine.revocations.clientIds()) if (!theirs.revocations.isRevoked({ clientId: id })) missing.revokedClients.push(id);
  for (const e of mine.revocations.entries()) {
    const known = theirs.revocations.infoOf(e.serial);
    if (!theirs.revocations.isRevoked({ serial: e.serial }) || (e.revokedAt !== undefined && (known === undefined || e.revokedAt < known.revokedAt))) missing.revokedSerials.push(e);
  }
  for (const [key, id] of mine.bindings.toJSON().bindings) if (theirs.bindings.owner(new Uint8Array(Buffer.from(key, 'base64url'))) === undefined) missing.bindings.push([key, id]);
  for (const inv of mine.invites.list()) {
    if (Invites.isStale(inv, now)) continue;
    const known = theirs.invites.byHash(inv.hash);
    if (!known || (inv.usedAt !== undefined && (known.usedAt === undefined || inv.usedAt < known.usedAt))) missing.invites.push(inv);
  }
  return missing;
}
