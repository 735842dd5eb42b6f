/**
 * Operator credentials: the certificates that open the Admin service (SAN
 * `urn:aegis:operator:<name>`, coordinator/auth/ca.ts), and the one owner of what the
 * coordinator knows about them.
 *
 * - Every operator certificate is short-lived: 7 days unless `coordinator start
 *   --operator-ttl-days` (config `operator.ttl_days`) says otherwise, at most 90 days. The data
 *   dir's built-in credential ("admin", sealed in its vault) is reissued by the coordinator
 *   itself before it expires (coordinator/service/data-dir.ts `reissueOperatorIfDue`).
 * - Operators issue credentials for others (`aegis operators issue NAME`): the caller makes the
 *   key and sends a CSR; only the certificate comes back. A reissue gives a name a new
 *   certificate and revokes every earlier one of it (reason superseded); a revocation puts the
 *   serials on the client registry's revocation list (`revokeSerials`), so the CRL lists them
 *   and the per-call check (coordinator/rpc/caller.ts) refuses them from their next Admin call on,
 *   also on a connection opened before. Expiry is checked on every call too.
 * - With an offline CA the coordinator holds no CA key: it lists and revokes operator
 *   certificates but cannot issue them (the CA host signs them, `aegis ca sign-csr`).
 *
 * The records (name, serial, issued, expires, revoked, reason, detail) are kept in
 * DATA_DIR/operators.json: public facts only, no key. Each change is a read-merge-write under
 * `operators.json.lock` (shared/fs-lock.ts), written atomically, so front ends sharing the data
 * dir never drop each other's records; records of certificates expired over 30 days ago are
 * dropped then. What refuses a certificate is the revocation list, not this file.
 */
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { readJsonFile, writeFileAtomic } from '../../shared/fs.js';
import { withFileLock } from '../../shared/fs-lock.js';
import { assertClientId, hasCaKey, issueFromCsr, operatorOf, type CaCertificate, type IssuedCertificate } from './ca.js';
import { REVOCATION_REASONS, type RevocationReason } from './enrollment.js';

const DAY_MS = 86_400_000;
export const OPERATORS_FILE = 'operators.json';
/** Default operator certificate lifetime: 7 days. */
export const DEFAULT_OPERATOR_TTL_MS = 7 * DAY_MS;
/** Shortest operator certificate lifetime: 1 minute. */
export const MIN_OPERATOR_TTL_MS = 60_000;
/** Longest operator certificate lifetime: 90 days. */
export const MAX_OPERATOR_TTL_MS = 90 * DAY_MS;
/** The data dir's own operator credential. */
export const BUILT_IN_OPERATOR = 'admin';
/** Records of certificates expired longer than this are dropped. */
const KEEP_EXPIRED_MS = 30 * DAY_MS;
const MAX_DETAIL = 200;

export interface OperatorRecord {
  name: string;
  /** Hex, lower case, no leading zeros (as the revocation list compares them). */
  serial: string;
  /** notBefore, ms since the epoch. */
  issuedAt: number;
  /** notAfter, ms since the epoch. */
  expiresAt: number;
  /** The data dir's built-in credential. */
  builtIn?: boolean;
  revokedAt?: number;
  reason?: RevocationReason;
  detail?: string;
}

export type OperatorStatus = 'active' | 'expired' | 'revoked';
export type OperatorView = OperatorRecord & { status: OperatorStatus };

const RecordSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._:@-]{1,128}$/),
    serial: z.string().regex(/^[0-9a-f]{1,40}$/),
    issuedAt: z.number().int(),
    expiresAt: z.number().int(),
    builtIn: z.boolean().optional(),
    revokedAt: z.number().int().optional(),
    reason: z.enum(REVOCATION_REASONS).optional(),
    detail: z.string().max(MAX_DETAIL).optional(),
  })
  .strict();
const FileSchema = z.object({ version: z.literal(1), operators: z.array(RecordSchema).max(100_000) }).strict();

const normSerial = (s: string): string => s.toLowerCase().replace(/^0+(?=.)/, '');

/** The record of an operator certificate (DER); undefined for any other certificate. */
export function operatorRecordOf(certificateDer: Uint8Array, builtIn = false): OperatorRecord | undefined {
  const name = operatorOf(certificateDer);
  if (name === undefined) return undefined;
  const cert = new X509Certificate(Buffer.from(certificateDer));
  return { name, serial: normSerial(cert.serialNumber), issuedAt: Date.parse(cert.validFrom), expiresAt: Date.parse(cert.validTo), ...(builtIn ? { builtIn } : {}) };
}

/** Two views of one serial's record: a revocation is never lost, the earliest one stays. */
function merge(a: OperatorRecord, b: OperatorRecord): OperatorRecord {
  const first = a.revokedAt === undefined ? b : b.revokedAt === undefined || a.revokedAt <= b.revokedAt ? a : b;
  return { ...a, ...b, ...(a.builtIn || b.builtIn ? { builtIn: true } : {}), ...(first.revokedAt !== undefined ? { revokedAt: first.revokedAt, reason: first.reason ?? 'unspecified', ...(first.detail ? { detail: first.detail } : {}) } : {}) };
}

/** The records, in DATA_DIR/operators.json (or in memory without a data dir). */
export class OperatorBook {
  private records = new Map<string, OperatorRecord>();
  private readonly dataDir: string | undefined;
  private readonly clock: () => number;

  constructor(opts: { dataDir?: string; clock: () => number }) {
    this.dataDir = opts.dataDir;
    this.clock = opts.clock;
  }

  private get path(): string | undefined {
    return this.dataDir === undefined ? undefined : join(this.dataDir, OPERATORS_FILE);
  }

  private async readFile(): Promise<OperatorRecord[]> {
    const path = this.path;
    if (path === undefined) return [];
    return ((await readJsonFile(path, FileSchema, OPERATORS_FILE, 'not an operator records file')) ?? { operators: [] }).operators as OperatorRecord[];
  }

  private absorb(list: readonly OperatorRecord[]): void {
    for (const r of list) {
      const known = this.records.get(r.serial);
      this.records.set(r.serial, known ? merge(known, r) : { ...r });
    }
  }

  /** Every record (this process's, merged with what other processes wrote), by name then issue time. */
  async list(): Promise<OperatorRecord[]> {
    this.absorb(await this.readFile());
    return [...this.records.values()].sort((a, b) => (a.name === b.name ? a.issuedAt - b.issuedAt : a.name < b.name ? -1 : 1));
  }

  /** Applies `change` to the merged records and writes them (read-merge-write under the lock). */
  async update(change: (records: Map<string, OperatorRecord>) => void): Promise<void> {
    const write = async (): Promise<void> => {
      this.absorb(await this.readFile());
      change(this.records);
      const now = this.clock();
      for (const [serial, r] of this.records) if (r.expiresAt + KEEP_EXPIRED_MS < now) this.records.delete(serial);
      const path = this.path;
      if (path === undefined) return;
      const operators = [...this.records.values()].sort((a, b) => (a.serial < b.serial ? -1 : 1));
      await writeFileAtomic(path, `${JSON.stringify({ version: 1, operators }, null, 1)}\n`, 0o644);
    };
    const path = this.path;
    if (path === undefined) return write();
    return withFileLock(`${path}.lock`, 'another coordinator or operator command on this data dir', write);
  }
}

/** What operators need of the client registry: its revocation list (one list for every serial). */
export interface OperatorRevocationList {
  isRevoked(q: { serial: string }): boolean;
  revokeSerials(serials: readonly string[], opts: { reason: RevocationReason; detail?: string }): Promise<unknown>;
}

/** The data dir's built-in credential (coordinator/service/data-dir.ts), when there is a data dir. */
export interface BuiltInOperatorCredential {
  /** Its current certificate (DER), if there is one. */
  current(): Promise<Uint8Array | undefined>;
  /** Replaces it: a new key sealed in the data dir, a new certificate of `ttlMs`; returns that certificate. */
  reissue(ttlMs: number): Promise<IssuedCertificate>;
}

export interface OperatorsOptions {
  ca: CaCertificate;
  revocations: OperatorRevocationList;
  clock: () => number;
  /** Where operators.json lives; without it the records stay in memory. */
  dataDir?: string;
  /** Lifetime of the certificates issued without one asked for; default 7 days. */
  ttlMs?: number;
  builtIn?: BuiltInOperatorCredential;
  log?: Logger;
}

/** Checks an operator certificate lifetime (ms). */
export function checkOperatorTtl(ttlMs: number): number {
  if (!Number.isSafeInteger(ttlMs) || ttlMs < MIN_OPERATOR_TTL_MS || ttlMs > MAX_OPERATOR_TTL_MS) {
    throw new AegisError(ErrorCode.InvalidArgument, 'an operator certificate lifetime must be between 1 minute and 90 days');
  }
  return ttlMs;
}

export class Operators {
  readonly book: OperatorBook;
  /** Lifetime of new certificates unless one is asked for. */
  readonly ttlMs: number;
  private readonly opts: OperatorsOptions;

  constructor(opts: OperatorsOptions) {
    this.opts = opts;
    this.ttlMs = checkOperatorTtl(opts.ttlMs ?? DEFAULT_OPERATOR_TTL_MS);
    this.book = new OperatorBook({ clock: opts.clock, ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}) });
  }

  private statusOf(r: OperatorRecord, now: number): OperatorStatus {
    if (r.revokedAt !== undefined || this.opts.revocations.isRevoked({ serial: r.serial })) return 'revoked';
    return r.expiresAt <= now ? 'expired' : 'active';
  }

  /** Every record with its status (revoked when the revocation list says so, whatever the file says). */
  async list(): Promise<OperatorView[]> {
    const now = this.opts.clock();
    return (await this.book.list()).map((r) => ({ ...r, status: this.statusOf(r, now) }));
  }

  private async active(name: string): Promise<OperatorRecord[]> {
    const now = this.opts.clock();
    return (await this.book.list()).filter((r) => r.name === name && this.statusOf(r, now) === 'active');
  }

  /** Records an operator certificate this coordinator did not issue itself (the built-in one of an older data dir, an offline CA's). */
  async adopt(certificateDer: Uint8Array, opts: { builtIn?: boolean } = {}): Promise<OperatorRecord | undefined> {
    const rec = operatorRecordOf(certificateDer, opts.builtIn === true);
    if (!rec) return undefined;
    if ((await this.book.list()).some((r) => r.serial === rec.serial && (r.builtIn === true) === (rec.builtIn === true))) return rec;
    await this.book.update((m) => m.set(rec.serial, m.has(rec.serial) ? merge(m.get(rec.serial)!, rec) : rec));
    return rec;
  }

  private requireCa(what: string): void {
    if (!hasCaKey(this.opts.ca)) {
      throw new AegisError(
        ErrorCode.FailedPrecondition,
        `this coordinator runs with an offline CA (coordinator start --offline-ca) and holds no CA key, so it cannot ${what}: operator certificates are signed on the CA host with aegis ca sign-csr; this coordinator can list and revoke them`,
      );
    }
  }

  private async signCsr(name: string, csrDer: Uint8Array, ttlMs: number | undefined): Promise<IssuedCertificate> {
    const ttl = checkOperatorTtl(ttlMs ?? this.ttlMs);
    return issueFromCsr(this.opts.ca, { kind: 'operator', subject: name, csrDer }, { ttlMs: ttl, now: this.opts.clock() });
  }

  private recordOf(cert: IssuedCertificate, name: string, builtIn: boolean): OperatorRecord {
    return { name, serial: normSerial(cert.serial), issuedAt: cert.notBefore.getTime(), expiresAt: cert.notAfter.getTime(), ...(builtIn ? { builtIn } : {}) };
  }

  /**
   * A certificate for a new operator from its CSR (subject CN=operator:<name>, checked with its
   * self-signature before anything is signed). Refused: the built-in name, a name with an active
   * credential (`already-exists`), an offline CA (`failed-precondition`).
   */
  async issue(name: string, csrDer: Uint8Array, ttlMs?: number): Promise<{ record: OperatorRecord; certificateDer: Uint8Array }> {
    assertClientId(name);
    this.requireCa('issue operator certificates');
    if (name === BUILT_IN_OPERATOR) throw new AegisError(ErrorCode.AlreadyExists, `'${BUILT_IN_OPERATOR}' is the data dir's built-in credential; reissue it with aegis operators reissue ${BUILT_IN_OPERATOR}`);
    const active = await this.active(name);
    if (active.length > 0) throw new AegisError(ErrorCode.AlreadyExists, `operator '${name}' has an active credential (serial ${active[0]!.serial}); reissue it (aegis operators reissue ${name}) or revoke it first`);
    const cert = await this.signCsr(name, csrDer, ttlMs);
    const record = this.recordOf(cert, name, false);
    await this.book.update((m) => m.set(record.serial, record));
    return { record, certificateDer: cert.certificateDer };
  }

  /**
   * A new certificate for `name` (from `csrDer`; for the built-in name without a CSR, the data
   * dir's credential is replaced), then every earlier unrevoked certificate of the name is
   * revoked as superseded. The new one is on record before the old ones are revoked: a crash in
   * between leaves the old ones valid until they expire, never the name without a credential.
   */
  async reissue(name: string, csrDer: Uint8Array | undefined, ttlMs?: number): Promise<{ record: OperatorRecord; certificateDer?: Uint8Array; superseded: string[] }> {
    assertClientId(name);
    this.requireCa('reissue operator certificates');
    const builtIn = name === BUILT_IN_OPERATOR;
    if (builtIn && csrDer !== undefined) throw new AegisError(ErrorCode.InvalidArgument, `the built-in '${BUILT_IN_OPERATOR}' credential lives in the data dir: reissue it without a new key file (or issue a credential under another name)`);
    if (!builtIn && csrDer === undefined) throw new AegisError(ErrorCode.InvalidArgument, `reissuing '${name}' needs a CSR for the new key`);
    const known = (await this.book.list()).filter((r) => r.name === name);
    if (!builtIn && known.length === 0) throw new AegisError(ErrorCode.NotFound, `no operator '${name}' on record; issue one with aegis operators issue ${name}`);
    let cert: IssuedCertificate;
    if (builtIn) {
      const b = this.opts.builtIn;
      if (!b) throw new AegisError(ErrorCode.FailedPrecondition, 'this coordinator has no data dir holding a built-in operator credential');
      cert = await b.reissue(checkOperatorTtl(ttlMs ?? this.ttlMs));
    } else {
      cert = await this.signCsr(name, csrDer!, ttlMs);
    }
    const record = this.recordOf(cert, name, builtIn);
    await this.book.update((m) => m.set(record.serial, record));
    const superseded = await this.supersede(name, record.serial);
    return { record, ...(builtIn ? {} : { certificateDer: cert.certificateDer }), superseded };
  }

  /**
   * After the built-in credential was replaced outside a call (the coordinator's key check):
   * records the new certificate and revokes the earlier ones as superseded.
   */
  async builtInReplaced(certificateDer: Uint8Array): Promise<string[]> {
    const rec = await this.adopt(certificateDer, { builtIn: true });
    if (!rec) return [];
    const superseded = await this.supersede(rec.name, rec.serial);
    this.opts.log?.info({ operatorName: rec.name, superseded: superseded.length }, 'built-in operator credential reissued');
    return superseded;
  }

  /** Revokes every unexpired, unrevoked certificate of `name` but `keep`, as superseded. */
  private async supersede(name: string, keep: string): Promise<string[]> {
    const old = (await this.active(name)).filter((r) => r.serial !== keep).map((r) => r.serial);
    if (old.length > 0) await this.revokeSerials(old, 'superseded', `reissued as ${keep}`);
    return old;
  }

  private async revokeSerials(serials: string[], reason: RevocationReason, detail: string): Promise<number> {
    const at = this.opts.clock();
    const text = detail.trim().slice(0, MAX_DETAIL);
    await this.opts.revocations.revokeSerials(serials, { reason, ...(text ? { detail: text } : {}) });
    await this.book.update((m) => {
      for (const s of serials) {
        const r = m.get(s);
        if (r && r.revokedAt === undefined) m.set(s, { ...r, revokedAt: at, reason, ...(text ? { detail: text } : {}) });
      }
    });
    return at;
  }

  /**
   * Revokes operator certificates: every unexpired, unrevoked one of `name`, or the one `serial`
   * (also a serial not on record: `known` false). Returns what was revoked.
   */
  async revoke(target: { name?: string; serial?: string }, reason: RevocationReason, detail = ''): Promise<{ serials: string[]; revokedAt: number; known: boolean }> {
    if ((target.name === undefined) === (target.serial === undefined)) throw new AegisError(ErrorCode.InvalidArgument, 'name an operator or one certificate serial, not both');
    const records = await this.book.list();
    let serials: string[];
    let known = true;
    if (target.serial !== undefined) {
      const serial = normSerial(target.serial);
      if (!/^[0-9a-f]{1,40}$/.test(serial)) throw new AegisError(ErrorCode.InvalidArgument, 'a certificate serial is hex, at most 20 bytes');
      known = records.some((r) => r.serial === serial);
      serials = [serial];
    } else {
      const name = assertClientId(target.name);
      if (!records.some((r) => r.name === name)) throw new AegisError(ErrorCode.NotFound, `no operator '${name}' on record`);
      serials = (await this.active(name)).map((r) => r.serial);
      if (serials.length === 0) throw new AegisError(ErrorCode.FailedPrecondition, `operator '${name}' has no active credential (every one is revoked or expired)`);
    }
    const revokedAt = await this.revokeSerials(serials, reason, detail);
    return { serials, revokedAt, known };
  }
}
