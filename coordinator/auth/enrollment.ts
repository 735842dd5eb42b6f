/**
 * One-time enrollment tokens and the revocation list.
 *
 * An invite is 32 random bytes shown once (base64url) to the operator, who hands it to the
 * client out of band. Only its SHA-256 is kept: a leaked state file does not let anyone enroll.
 * `redeem` compares the presented token's hash against every stored hash in constant time
 * (no early exit, no hash-table lookup keyed by the secret), and works once.
 *
 * `Revocations` holds revoked client ids and certificate serials (each serial with its revocation
 * time and reason, for the CRL: coordinator/auth/crl.ts). A revoked client is refused
 * on its next call even with an unexpired certificate or token (the transport checks
 * `isRevoked` on every call; coordinator/auth/tokens.ts checks it on every token).
 *
 * Both are pure in-memory classes; the caller persists `toJSON()` (hashes, ids, serials and
 * times only — nothing that grants access). Several coordinator processes may hold copies of
 * them (coordinator/clients/merge.ts merges copies): both only grow by merging — an invite once
 * redeemed stays redeemed (`absorb` keeps the earliest use), a revoked id or serial stays revoked
 * (the earliest revocation's time and reason are kept).
 */
import { createHash, randomBytes } from 'node:crypto';
import { ctEqual } from '../../shared/bytes.js';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { assertClientId } from './ca.js';

/** Default invite lifetime: 15 minutes. */
export const INVITE_TTL_MS = 15 * 60 * 1000;
/** Longest invite lifetime: 7 days. */
export const MAX_INVITE_TTL_MS = 7 * 24 * 3600 * 1000;
/** Redeemed and expired invites are kept this long (so a reuse says "already used"), then dropped. */
const TOMBSTONE_MS = 7 * 24 * 3600 * 1000;
const TOKEN_BYTES = 32;

export type EnrollmentRefusal = 'unknown' | 'expired' | 'used' | 'malformed';

/** A refused enrollment token. */
export class EnrollmentError extends AegisError {
  readonly reason: EnrollmentRefusal;
  constructor(reason: EnrollmentRefusal) {
    super(ErrorCode.EnrollmentRefused, `enrollment token refused: ${reason}`);
    this.reason = reason;
  }
}

export interface InviteRecord {
  /** SHA-256 of the token, hex. */
  hash: string;
  expiresAt: number;
  /** The client id the invite is for, when the operator named one. */
  clientId?: string;
  usedAt?: number;
}

const sha256 = (b: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(b).digest());

export class Invites {
  private records: InviteRecord[] = [];
  private readonly clock: () => number;

  constructor(opts: { clock?: () => number } = {}) {
    this.clock = opts.clock ?? Date.now;
  }

  /**
   * A new one-time token (base64url, 43 characters) and the record to store for it (its hash
   * only), without storing it: `createInvite` stores it here, the client registry in its store.
   */
  static mint(opts: { ttlMs?: number; clientId?: string }, now: number): { token: string; expiresAt: number; record: InviteRecord } {
    const ttl = opts.ttlMs ?? INVITE_TTL_MS;
    if (!Number.isInteger(ttl) || ttl < 1000 || ttl > MAX_INVITE_TTL_MS) fail(ErrorCode.InvalidArgument, 'invite ttl must be 1 s..7 days');
    if (opts.clientId !== undefined) assertClientId(opts.clientId);
    const raw = randomBytes(TOKEN_BYTES);
    const expiresAt = now + ttl;
    const record: InviteRecord = { hash: Buffer.from(sha256(raw)).toString('hex'), expiresAt };
    if (opts.clientId !== undefined) record.clientId = opts.clientId;
    return { token: raw.toString('base64url'), expiresAt, record };
  }

  /** The stored hash (hex) of a token; `EnrollmentError('malformed')` for anything but 43 base64url characters. */
  static hashOf(token: string): string {
    if (typeof token !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(token)) throw new EnrollmentError('malformed');
    return Buffer.from(sha256(new Uint8Array(Buffer.from(token, 'base64url')))).toString('hex');
  }

  /**
   * Refuses (`EnrollmentError`) an invite that is unknown (undefined), already used, or expired
   * at `now`; returns the client id it names, if any.
   */
  static checkRedeemable(rec: InviteRecord | undefined, now: number): { clientId?: string } {
    if (rec === undefined) throw new EnrollmentError('unknown');
    if (rec.usedAt !== undefined) throw new EnrollmentError('used');
    if (now >= rec.expiresAt) throw new EnrollmentError('expired');
    return rec.clientId === undefined ? {} : { clientId: rec.clientId };
  }

  /** A new one-time token (base64url, 43 characters); only its hash is stored. */
  createInvite(opts: { ttlMs?: number; clientId?: string } = {}): { token: string; expiresAt: number } {
    const { token, expiresAt, record } = Invites.mint(opts, this.clock());
    this.prune();
    this.records.push(record);
    return { token, expiresAt };
  }

  /**
   * The stored invite with hash `hash` (hex), compared against every record in constant time (no
   * early exit, no lookup keyed by the secret's hash); a copy.
   */
  byHash(hash: string): InviteRecord | undefined {
    if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) return undefined;
    const h = new Uint8Array(Buffer.from(hash, 'hex'));
    let found: InviteRecord | undefined;
    for (const rec of this.records) {
      if (ctEqual(h, new Uint8Array(Buffer.from(rec.hash, 'hex'))) && found === undefined) found = rec;
    }
    return found === undefined ? undefined : { ...found };
  }

  /**
   * Redeems `token` once. Refuses (`EnrollmentError`) a malformed, unknown, expired or already
   * used token; a refusal changes nothing. Returns the client id the invite names, if any.
   */
  redeem(token: string): { clientId?: string } {
    const hash = new Uint8Array(Buffer.from(Invites.hashOf(token), 'hex'));
    let found: InviteRecord | undefined;
    for (const rec of this.records) {
      // Every record is compared; no early exit.
      if (ctEqual(hash, new Uint8Array(Buffer.from(rec.hash, 'hex'))) && found === undefined) found = rec;
    }
    const now = this.clock();
    const out = Invites.checkRedeemable(found, now);
    found!.usedAt = now;
    return out;
  }

  /**
   * Undoes a `redeem` whose enrollment then failed (a bad CSR, an id already taken), so a
   * refused enrollment loses nothing: the token can be used again until it expires.
   */
  release(token: string): void {
    if (typeof token !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(token)) return;
    const hash = Buffer.from(sha256(new Uint8Array(Buffer.from(token, 'base64url')))).toString('hex');
    const rec = this.records.find((r) => r.hash === hash);
    if (rec) delete rec.usedAt;
  }

  /** Invites that can still be redeemed. */
  get pending(): number {
    const now = this.clock();
    return this.records.filter((r) => r.usedAt === undefined && now < r.expiresAt).length;
  }

  /** Drops invites expired (or used) more than 7 days ago. */
  prune(): void {
    const now = this.clock();
    this.records = this.records.filter((r) => Math.max(r.expiresAt, r.usedAt ?? 0) + TOMBSTONE_MS > now);
  }

  /** True when `rec` (expired or used long ago) would be dropped by `prune` at `now`. */
  static isStale(rec: InviteRecord, now: number): boolean {
    return Math.max(rec.expiresAt, rec.usedAt ?? 0) + TOMBSTONE_MS <= now;
  }

  /** Every stored invite (copies). */
  list(): InviteRecord[] {
    return this.records.map((r) => ({ ...r }));
  }

  /**
   * Merges invites another copy holds: unknown ones are added; for one known here the earliest
   * use (a redeemed invite stays redeemed, whichever copy is older) and the earliest expiry win.
   */
  absorb(records: readonly InviteRecord[]): void {
    for (const r of records) {
      const mine = this.records.find((x) => x.hash === r.hash);
      if (!mine) {
        this.records.push({ ...r });
        continue;
      }
      if (r.usedAt !== undefined && (mine.usedAt === undefined || r.usedAt < mine.usedAt)) mine.usedAt = r.usedAt;
      if (r.expiresAt < mine.expiresAt) mine.expiresAt = r.expiresAt;
      if (mine.clientId === undefined && r.clientId !== undefined) mine.clientId = r.clientId;
    }
  }

  toJSON(): { version: 1; invites: InviteRecord[] } {
    return { version: 1, invites: this.records.map((r) => ({ ...r })) };
  }

  static fromJSON(json: unknown, opts: { clock?: () => number } = {}): Invites {
    const j = json as { version?: unknown; invites?: unknown };
    if (j === null || typeof j !== 'object' || j.version !== 1 || !Array.isArray(j.invites)) fail(ErrorCode.InvalidArgument, 'malformed invites');
    const out = new Invites(opts);
    for (const r of j.invites as unknown[]) out.records.push(parseInviteRecord(r));
    return out;
  }
}

/** One stored invite, checked field by field; `invalid-argument` for anything else. */
export function parseInviteRecord(json: unknown): InviteRecord {
  const r = json as Record<string, unknown>;
  if (r === null || typeof r !== 'object' || typeof r.hash !== 'string' || !/^[0-9a-f]{64}$/.test(r.hash) || !Number.isSafeInteger(r.expiresAt)) {
    fail(ErrorCode.InvalidArgument, 'malformed invites');
  }
  const rec: InviteRecord = { hash: r.hash, expiresAt: r.expiresAt as number };
  if (r.clientId !== undefined) rec.clientId = assertClientId(r.clientId);
  if (r.usedAt !== undefined) {
    if (!Number.isSafeInteger(r.usedAt)) fail(ErrorCode.InvalidArgument, 'malformed invites');
    rec.usedAt = r.usedAt as number;
  }
  return rec;
}

/**
 * Why a client was revoked: a code from this fixed set (`aegis clients revoke ID --reason CODE`),
 * written on the CRL as an RFC 5280 CRLReason (coordinator/auth/crl.ts has the mapping).
 */
export const REVOCATION_REASONS = ['unspecified', 'key-compromise', 'lost-device', 'superseded', 'retired'] as const;
export type RevocationReason = (typeof REVOCATION_REASONS)[number];

/** The reason `text` names (case, spaces and underscores aside: "Lost device" is `lost-device`), if any. */
export function revocationReasonOf(text: unknown): RevocationReason | undefined {
  if (typeof text !== 'string') return undefined;
  const norm = text.trim().toLowerCase().replace(/[\s_]+/g, '-');
  return (REVOCATION_REASONS as readonly string[]).includes(norm) ? (norm as RevocationReason) : undefined;
}

/** `revocationReasonOf`, or `invalid-argument` naming the valid reasons; empty is `unspecified`. */
export function parseRevocationReason(text: unknown): RevocationReason {
  if (text === undefined || text === '') return 'unspecified';
  const r = revocationReasonOf(text);
  if (r === undefined) fail(ErrorCode.InvalidArgument, `unknown revocation reason '${String(text).slice(0, 40)}'; valid reasons: ${REVOCATION_REASONS.join(', ')}`);
  return r;
}

const SERIAL_PATTERN = /^[0-9a-f]{1,40}$/;
/** A certificate serial as the registry keeps it: lower-case hex without leading zeros; `invalid-argument` otherwise. */
export function normalizeSerial(serial: string): string {
  const s = typeof serial === 'string' ? serial.toLowerCase().replace(/^0+(?=.)/, '') : '';
  if (!SERIAL_PATTERN.test(s)) fail(ErrorCode.InvalidArgument, 'certificate serial must be hex, at most 20 bytes');
  return s;
}

/** A revoked serial with when and why (what goes on the CRL), and the operator's free-text detail if any. */
export interface RevokedSerial {
  serial: string;
  revokedAt: number;
  reason: RevocationReason;
  detail?: string;
}

/** When and why a serial was revoked. */
export interface SerialRevocationInfo {
  revokedAt: number;
  reason: RevocationReason;
  /** Free text, at most 200 characters. */
  detail?: string;
}

function checkedInfo(info: SerialRevocationInfo): SerialRevocationInfo {
  if (!Number.isSafeInteger(info.revokedAt) || revocationReasonOf(info.reason) !== info.reason) fail(ErrorCode.InvalidArgument, 'malformed revocation');
  if (info.detail !== undefined && (typeof info.detail !== 'string' || info.detail.length > 200)) fail(ErrorCode.InvalidArgument, 'malformed revocation');
  return info.detail === undefined || info.detail === '' ? { revokedAt: info.revokedAt, reason: info.reason } : { revokedAt: info.revokedAt, reason: info.reason, detail: info.detail };
}

/**
 * Revoked client ids and certificate serials (hex, compared without leading zeros), each serial
 * with its revocation time and reason when known (serials revoked by an older release, or
 * without a reason, have none: the CRL takes them from the client record, else unspecified).
 * It only grows: nothing here un-revokes, and of two revocations of one serial the earlier one's
 * time and reason stay (so merging copies in any order gives the same list).
 */
export class Revocations {
  private readonly clients = new Set<string>();
  private readonly serials = new Set<string>();
  private readonly details = new Map<string, SerialRevocationInfo>();

  revokeClient(clientId: string): void {
    this.addClient(clientId);
  }

  /** Revokes a client id; true when it was not revoked before. */
  addClient(clientId: string): boolean {
    const id = assertClientId(clientId);
    if (this.clients.has(id)) return false;
    this.clients.add(id);
    return true;
  }

  /** Revokes a serial; the earliest revocation's time and reason stay. */
  revokeSerial(serial: string, info?: SerialRevocationInfo): void {
    this.addSerial(serial, info);
  }

  /**
   * Revokes a serial (with when and why, if known); of two revocations of one serial the earlier
   * one's time, reason and detail stay. True when the serial was not revoked before.
   */
  addSerial(serial: string, info?: SerialRevocationInfo): boolean {
    const s = normalizeSerial(serial);
    const added = !this.serials.has(s);
    this.serials.add(s);
    if (info) {
      const d = checkedInfo(info);
      const known = this.details.get(s);
      if (known === undefined || d.revokedAt < known.revokedAt) this.details.set(s, d);
    }
    return added;
  }

  /** True when the client id or the certificate serial (either may be omitted) is revoked. */
  isRevoked(q: { clientId?: string; serial?: string }): boolean {
    if (q.clientId !== undefined && this.clients.has(q.clientId)) return true;
    if (q.serial !== undefined) {
      const s = typeof q.serial === 'string' ? q.serial.toLowerCase().replace(/^0+(?=.)/, '') : '';
      if (this.serials.has(s)) return true;
    }
    return false;
  }

  /** Every revoked client id, sorted. */
  clientIds(): string[] {
    return [...this.clients].sort();
  }

  /** How many client ids and serials are revoked. */
  get size(): { clients: number; serials: number } {
    return { clients: this.clients.size, serials: this.serials.size };
  }

  /** When and why `serial` was revoked, if it is and that is known. */
  infoOf(serial: string): SerialRevocationInfo | undefined {
    const d = this.details.get(typeof serial === 'string' ? serial.toLowerCase().replace(/^0+(?=.)/, '') : '');
    return d === undefined ? undefined : { ...d };
  }

  /** Every revoked serial, sorted, with its time and reason when known (the CRL's entries). */
  entries(): (Pick<RevokedSerial, 'serial'> & Partial<RevokedSerial>)[] {
    return [...this.serials].sort().map((serial) => {
      const d = this.details.get(serial);
      return d ? { serial, ...d } : { serial };
    });
  }

  toJSON(): { version: 1; clients: string[]; serials: string[]; details?: RevokedSerial[] } {
    const details = [...this.details.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([serial, d]) => ({ serial, ...d }));
    return { version: 1, clients: [...this.clients].sort(), serials: [...this.serials].sort(), ...(details.length > 0 ? { details } : {}) };
  }

  static fromJSON(json: unknown): Revocations {
    const j = json as { version?: unknown; clients?: unknown; serials?: unknown; details?: unknown };
    if (j === null || typeof j !== 'object' || j.version !== 1 || !Array.isArray(j.clients) || !Array.isArray(j.serials) || (j.details !== undefined && !Array.isArray(j.details))) {
      fail(ErrorCode.InvalidArgument, 'malformed revocations');
    }
    const out = new Revocations();
    for (const c of j.clients as unknown[]) out.revokeClient(c as string);
    for (const s of j.serials as unknown[]) out.revokeSerial(s as string);
    for (const d of (j.details ?? []) as { serial?: unknown; revokedAt?: unknown; reason?: unknown; detail?: unknown }[]) {
      if (d === null || typeof d !== 'object' || typeof d.serial !== 'string') fail(ErrorCode.InvalidArgument, 'malformed revocations');
      const s = normalizeSerial(d.serial);
      if (!out.serials.has(s)) fail(ErrorCode.InvalidArgument, 'malformed revocations');
      out.revokeSerial(s, { revokedAt: d.revokedAt as number, reason: d.reason as RevocationReason, ...(d.detail !== undefined ? { detail: d.detail as string } : {}) });
    }
    return out;
  }
}
