/**
 * The client registry: the one owner of what the coordinator knows about enrolled clients —
 * their records and certificates, invites, revocations (with reasons, and the CRL built from
 * them), last seen times and the lost-device suspicion. Enrollment and renewal change it here;
 * the gRPC adapters only carry requests in and answers out.
 *
 * The persistent part is `registry` (registry.json in the data dir, written one save at a time);
 * last-seen times are kept exactly in memory and written to the registry rounded to the minute,
 * at most once a minute.
 */
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import type { Logger } from 'pino';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import { inspectCsr, issueClientCertificate, requireCaKey, serialOf, type CaCertificate } from '../auth/ca.js';
import { parseCrl, signCrl } from '../auth/crl.js';
import { EnrollmentError, parseRevocationReason, type RevocationReason } from '../auth/enrollment.js';
import { latestSignedCrl, writeRevocationsRequest, type OfflineEnrollment } from '../auth/offline-ca.js';
import { AuthError } from '../auth/tokens.js';
import type { CoordinatorMetrics } from '../service/metrics.js';
import { saveRegistry } from '../service/data-dir.js';
import type { ClientRecord, Registry } from './registry.js';
import { certificateSerialsOf, rememberSerial, revocationCodeOf } from './serials.js';

/** Default `clientsLostAfterMs`: 7 days. */
export const DEFAULT_CLIENTS_LOST_AFTER_MS = 7 * 86_400_000;
/** A CRL the coordinator signs is valid this long (its nextUpdate). */
const CRL_VALIDITY_MS = 7 * 86_400_000;

export type ClientStatus = 'active' | 'suspected-lost' | 'revoked';

export interface SignedCrl {
  pem: string;
  der: Uint8Array;
  thisUpdate: number;
  nextUpdate: number;
  crlNumber: number;
  entries: number;
}

export interface ClientRegistryOptions {
  ca: CaCertificate;
  registry: Registry;
  /** Where the registry is persisted; undefined keeps it in memory only (tests, simulate). */
  dataDir?: string;
  /** Offline CA: Enroll queues CSRs for the CA host; revocations go there for its CRL. */
  offlineCa?: OfflineEnrollment;
  /** Client certificate lifetime; default 24 h (ca.ts). */
  clientCertTtlMs?: number;
  /** A client silent longer than this is flagged `suspected-lost`; default 7 days. */
  clientsLostAfterMs?: number;
  clock: () => number;
  log?: Logger;
  metrics?: CoordinatorMetrics;
  /** Called once a client is revoked (its open stream is ended there). */
  onRevoked?: (clientId: string) => void;
}

export class ClientRegistry {
  readonly registry: Registry;
  private readonly opts: ClientRegistryOptions;
  private readonly clock: () => number;
  private readonly log: Logger | undefined;
  /** Per client: the time of its last authenticated call (exact; registry.json keeps it per minute). */
  private readonly lastSeen = new Map<string, number>();
  /** Clients with a Renew being certified (one at a time per client). */
  private readonly renewals = new Set<string>();
  /** Clients flagged suspected-lost by the sweep (and not seen since). */
  private readonly suspectedLost = new Set<string>();
  private lastSeenFlushedAt = Number.NEGATIVE_INFINITY;
  private crlNumber = 0;
  private persistChain: Promise<void> = Promise.resolve();

  constructor(opts: ClientRegistryOptions) {
    this.opts = opts;
    this.registry = opts.registry;
    this.clock = opts.clock;
    this.log = opts.log;
  }

  /** The record of an enrolled client, revoked or not. */
  get(clientId: string): ClientRecord | undefined {
    return this.registry.clients.get(clientId);
  }

  /** Every enrolled client's record, sorted by id. */
  records(): ClientRecord[] {
    return [...this.registry.clients.values()].sort((a, b) => (a.clientId < b.clientId ? -1 : 1));
  }

  /** Enrolled and not revoked. */
  isActive(clientId: string): boolean {
    return this.registry.clients.has(clientId) && !this.registry.revocations.isRevoked({ clientId });
  }

  isRevoked(who: { clientId?: string; serial?: string }): boolean {
    return this.registry.revocations.isRevoked(who);
  }

  /** Enrolled clients not revoked. */
  activeCount(): number {
    let n = 0;
    for (const id of this.registry.clients.keys()) if (!this.registry.revocations.isRevoked({ clientId: id })) n++;
    return n;
  }

  // -------------------------------------------------------------------------------------------
  // Enrollment.

  /** A one-time enrollment token. */
  async createInvite(opts: { ttlMs?: number; clientId?: string } = {}): Promise<{ token: string; expiresAt: number }> {
    const inv = this.registry.invites.createInvite(opts);
    await this.persist();
    return inv;
  }

  /** Enroll: a one-time token and a CSR for a client certificate (or, offline CA, a pending answer). */
  async enroll(req: enroll.EnrollRequest): Promise<enroll.EnrollReply> {
    const { ca, offlineCa } = this.opts;
    if (offlineCa) return offlineCa.enroll(req, { registry: this.registry, persist: () => this.persist(), clock: this.clock });
    const { clientId, publicKey } = await inspectCsr(req.csrDer);
    const invite = this.registry.invites.redeem(req.token);
    try {
      if (invite.clientId !== undefined && invite.clientId !== clientId) {
        throw new EnrollmentError('malformed');
      }
      const existing = this.registry.clients.get(clientId);
      if (existing && existing.publicKey !== Buffer.from(publicKey).toString('base64url')) {
        throw new AegisError(ErrorCode.KeyAlreadyBound, `client id '${clientId}' is already enrolled under another key`);
      }
      if (this.registry.revocations.isRevoked({ clientId })) {
        throw new AegisError(ErrorCode.EnrollmentRefused, `client id '${clientId}' is revoked; enroll under a new id`);
      }
      const cert = await issueClientCertificate(ca, req.csrDer, clientId, { bindings: this.registry.bindings, ...this.certTtl() });
      const now = this.clock();
      this.registry.clients.set(clientId, {
        clientId,
        publicKey: Buffer.from(publicKey).toString('base64url'),
        enrolledAt: existing?.enrolledAt ?? now,
        serial: cert.serial,
        certificateExpiresAt: cert.notAfter.getTime(),
        certificate: Buffer.from(cert.certificateDer).toString('base64'),
        ...(existing ? { previousSerials: rememberSerial({ ...existing }, now) } : {}),
      });
      await this.persist();
      this.log?.info({ client: clientId }, 'client enrolled');
      return create(enroll.EnrollReplySchema, { certificateDer: cert.certificateDer, caCertificateDer: ca.certificateDer, clientId });
    } catch (err) {
      this.registry.invites.release(req.token);
      throw err;
    }
  }

  /**
   * Renew (same key) or rekey (a new key for the same id, authenticated by the caller's valid,
   * unrevoked certificate; the old key's serials are revoked as superseded).
   */
  async renew(req: enroll.RenewRequest, rec: ClientRecord, callerCertificate: Uint8Array): Promise<enroll.RenewReply> {
    const { ca } = this.opts;
    const { clientId, publicKey } = await inspectCsr(req.csrDer);
    if (clientId !== rec.clientId) throw new AegisError(ErrorCode.Unauthenticated, 'the CSR names another client than the certificate');
    const newKey = Buffer.from(publicKey).toString('base64url');
    const rekey = req.rekey && newKey !== rec.publicKey;
    if (!rekey && newKey !== rec.publicKey) {
      throw new AegisError(ErrorCode.KeyAlreadyBound, 'renewal must keep the enrolled identity key');
    }
    const callerSerial = serialOf(callerCertificate);
    // Checked again after the CSR's inspection (an await): a renewal or rekey of this client
    // that finished meanwhile may have revoked the caller. One renewal per client at a time,
    // so no two requests certify keys from the same state (two rekeys would both succeed).
    if (this.registry.revocations.isRevoked({ clientId, serial: callerSerial })) throw new AuthError('revoked', 'peer certificate');
    if (this.renewals.has(clientId)) throw new AegisError(ErrorCode.Unavailable, 'a renewal of this client is under way; retry later');
    this.renewals.add(clientId);
    let cert: Awaited<ReturnType<typeof issueClientCertificate>>;
    try {
      cert = await issueClientCertificate(ca, req.csrDer, clientId, { bindings: this.registry.bindings, ...this.certTtl() });
    } finally {
      this.renewals.delete(clientId);
    }
    if (this.registry.revocations.isRevoked({ clientId })) throw new AuthError('revoked', 'peer certificate');
    if (rekey) {
      // Every still-valid certificate of the old key ends: the caller's, the current one and
      // earlier renewals' (previousSerials), with reason superseded.
      const now = this.clock();
      for (const serial of new Set([callerSerial, ...certificateSerialsOf(rec, now)])) this.registry.revocations.revokeSerial(serial, { revokedAt: now, reason: 'superseded' });
      rec.publicKey = newKey;
      this.log?.info({ client: clientId }, 'client identity key rotated');
    }
    rememberSerial(rec, this.clock());
    rec.serial = cert.serial;
    rec.certificateExpiresAt = cert.notAfter.getTime();
    rec.certificate = Buffer.from(cert.certificateDer).toString('base64');
    await this.persist();
    this.log?.info({ client: clientId }, 'certificate renewed');
    return create(enroll.RenewReplySchema, { certificateDer: cert.certificateDer, caCertificateDer: ca.certificateDer });
  }

  private certTtl(): { ttlMs?: number } {
    return this.opts.clientCertTtlMs === undefined ? {} : { ttlMs: this.opts.clientCertTtlMs };
  }

  // -------------------------------------------------------------------------------------------
  // Revocation and the CRL.

  /**
   * Revokes a client: its id and every certificate serial of it still valid (the current one and
   * earlier ones not yet expired) go on the revocation list and the CRL with `reason` (a code of
   * `REVOCATION_REASONS`; case, spaces and underscores are forgiven; anything else is
   * `invalid-argument`) and `detail` (free text). Its open stream ends. Revoking again changes
   * nothing (the first time and reason stay). Returns the revocation time.
   */
  async revoke(clientId: string, reason: string = 'unspecified', detail = ''): Promise<number> {
    const code = parseRevocationReason(reason);
    const rec = this.registry.clients.get(clientId);
    if (!rec) throw new AegisError(ErrorCode.NotFound, `no enrolled client '${clientId}'`);
    const now = this.clock();
    if (rec.revokedAt === undefined) {
      rec.revokedAt = now;
      rec.revocationReason = code;
      const text = detail.trim().slice(0, 200);
      if (text) rec.revocationDetail = text;
    }
    const info = { revokedAt: rec.revokedAt, reason: revocationCodeOf(rec) };
    this.registry.revocations.revokeClient(clientId);
    for (const serial of certificateSerialsOf(rec, now)) this.registry.revocations.revokeSerial(serial, info);
    this.suspectedLost.delete(clientId);
    this.opts.metrics?.clientsSuspectedLost(this.suspectedLost.size);
    await this.persist();
    // With an offline CA, the revocations go to the CA host for its next CRL (ca-requests/revocations.json).
    if (this.opts.offlineCa && this.opts.dataDir !== undefined) await writeRevocationsRequest(this.opts.dataDir, this.crlEntries(now), now);
    this.opts.onRevoked?.(clientId);
    this.log?.warn({ client: clientId, reason: info.reason }, 'client revoked');
    return rec.revokedAt;
  }

  /**
   * Revokes certificate serials that belong to no client record (operator credentials): each goes
   * on the revocation list, and so on the CRL and into the per-call check, with the time of this
   * call and `reason` (a serial revoked before keeps its first time and reason); persisted, then
   * (offline CA) handed to the CA host for its next CRL. `detail` stays with the caller's records.
   */
  async revokeSerials(serials: readonly string[], opts: { reason: RevocationReason; detail?: string }): Promise<void> {
    const now = this.clock();
    for (const serial of serials) this.registry.revocations.revokeSerial(serial, { revokedAt: now, reason: opts.reason });
    await this.persist();
    if (this.opts.offlineCa && this.opts.dataDir !== undefined) await writeRevocationsRequest(this.opts.dataDir, this.crlEntries(now), now);
    this.log?.warn({ serials: serials.length, reason: opts.reason }, 'certificate serials revoked');
  }

  /**
   * A CRL of every revoked serial, signed now by the coordinator CA, valid 7 days
   * (coordinator/auth/crl.ts); `failed-precondition` without the CA key (offline CA).
   */
  async signedCrl(): Promise<SignedCrl> {
    if (this.opts.offlineCa) return this.offlineCrl();
    const thisUpdate = this.clock();
    const nextUpdate = thisUpdate + CRL_VALIDITY_MS;
    const entries = this.crlEntries(thisUpdate);
    // Increasing across restarts too (it is at least the time in seconds).
    this.crlNumber = Math.max(this.crlNumber + 1, Math.floor(thisUpdate / 1000));
    const crl = await signCrl(requireCaKey(this.opts.ca), entries, { thisUpdate, nextUpdate, crlNumber: this.crlNumber });
    return { pem: crl.pem, der: crl.der, thisUpdate, nextUpdate, crlNumber: this.crlNumber, entries: entries.length };
  }

  /**
   * With an offline CA the coordinator cannot sign: it serves the latest CRL the CA signed (from
   * DATA_DIR/ca-signed, checked against ca.pem); `failed-precondition` until there is one.
   */
  private async offlineCrl(): Promise<SignedCrl> {
    const dir = this.opts.dataDir;
    const latest = dir === undefined ? undefined : await latestSignedCrl(dir);
    if (!latest) {
      throw new AegisError(ErrorCode.FailedPrecondition, `the offline CA has signed no CRL yet: run aegis ca sign-csr --dir CADIR ${join(dir ?? 'DATA_DIR', 'ca-requests')} --out ${join(dir ?? 'DATA_DIR', 'ca-signed')} on the CA host`);
    }
    const parsed = await parseCrl(latest.der);
    return { pem: latest.pem, der: latest.der, thisUpdate: parsed.thisUpdate, nextUpdate: parsed.nextUpdate ?? 0, crlNumber: latest.crlNumber, entries: parsed.entries.length };
  }

  /** Every revoked serial with when and why, for a CRL. */
  private crlEntries(now: number): { serial: string; revokedAt: number; reason: RevocationReason }[] {
    // Serials revoked before reasons were kept: the client record they belong to says when and why.
    const byClient = new Map<string, { revokedAt: number; reason: RevocationReason }>();
    for (const rec of this.registry.clients.values()) {
      if (rec.revokedAt === undefined) continue;
      for (const serial of certificateSerialsOf(rec, Number.NEGATIVE_INFINITY)) byClient.set(serial.replace(/^0+(?=.)/, ''), { revokedAt: rec.revokedAt, reason: revocationCodeOf(rec) });
    }
    return this.registry.revocations.entries().map((e) => {
      const known = byClient.get(e.serial);
      return { serial: e.serial, revokedAt: e.revokedAt ?? known?.revokedAt ?? now, reason: e.reason ?? known?.reason ?? 'unspecified' };
    });
  }

  // -------------------------------------------------------------------------------------------
  // Last seen and lost devices.

  /** Notes an authenticated call of `clientId`: its last-seen time, and the end of a suspicion. */
  markSeen(clientId: string): void {
    this.lastSeen.set(clientId, this.clock());
    if (this.suspectedLost.delete(clientId)) {
      this.opts.metrics?.clientsSuspectedLost(this.suspectedLost.size);
      this.log?.info({ client: clientId }, 'client suspected lost is back');
    }
  }

  /** When the client last made an authenticated call (this process's memory, else the registry's per-minute copy). */
  lastSeenOf(clientId: string): number | undefined {
    return this.lastSeen.get(clientId) ?? this.registry.clients.get(clientId)?.lastSeenAt;
  }

  /** `active`, `suspected-lost` or `revoked`. */
  statusOf(clientId: string): ClientStatus {
    const rec = this.registry.clients.get(clientId);
    if (rec?.revokedAt !== undefined || this.registry.revocations.isRevoked({ clientId })) return 'revoked';
    return this.suspectedLost.has(clientId) ? 'suspected-lost' : 'active';
  }

  /**
   * The lost-device sweep (at start, every minute, and before ListClients): every client not
   * revoked and silent longer than `clientsLostAfterMs` (since its last call, or its enrollment
   * if it never called) is flagged `suspected-lost` — one warn line with its id when it becomes
   * so, the flag counter and the gauge. Also writes the last-seen times to the registry, at most
   * once a minute. Returns the clients flagged by this sweep.
   */
  sweep(): string[] {
    const now = this.clock();
    const lostAfter = this.opts.clientsLostAfterMs ?? DEFAULT_CLIENTS_LOST_AFTER_MS;
    const flagged: string[] = [];
    for (const rec of this.registry.clients.values()) {
      const id = rec.clientId;
      if (this.statusOf(id) === 'revoked') {
        this.suspectedLost.delete(id);
        continue;
      }
      if (this.suspectedLost.has(id) || now - (this.lastSeenOf(id) ?? rec.enrolledAt) <= lostAfter) continue;
      this.suspectedLost.add(id);
      flagged.push(id);
      this.opts.metrics?.clientFlaggedLost();
      this.log?.warn({ client: id }, 'client suspected lost');
    }
    this.opts.metrics?.clientsSuspectedLost(this.suspectedLost.size);
    void this.flushLastSeen(false).catch(() => undefined);
    return flagged;
  }

  /** Copies the last-seen times, rounded down to the minute, into the registry and persists it (at most once a minute unless `force`). */
  flushLastSeen(force: boolean): Promise<void> {
    const now = this.clock();
    if (!force && now - this.lastSeenFlushedAt < 60_000) return Promise.resolve();
    let changed = false;
    for (const [id, t] of this.lastSeen) {
      const rec = this.registry.clients.get(id);
      const coarse = Math.floor(t / 60_000) * 60_000;
      if (rec && (rec.lastSeenAt ?? Number.NEGATIVE_INFINITY) < coarse) {
        rec.lastSeenAt = coarse;
        changed = true;
      }
    }
    if (!changed) return Promise.resolve();
    this.lastSeenFlushedAt = now;
    return this.persist();
  }

  // -------------------------------------------------------------------------------------------

  /** Persists the registry (serialized: one write at a time, the latest state wins). */
  persist(): Promise<void> {
    const dir = this.opts.dataDir;
    if (dir === undefined) return Promise.resolve();
    const next = this.persistChain.then(() => saveRegistry(dir, this.registry));
    this.persistChain = next.catch((err: unknown) => {
      this.log?.error({ code: isAegisError(err) ? err.code : 'io' }, 'could not persist the registry');
    });
    return next;
  }

  /** Writes the last-seen times and waits for every pending save. */
  async flush(): Promise<void> {
    void this.flushLastSeen(true).catch(() => undefined);
    await this.persistChain;
  }
}
