/**
 * The client registry: the one owner of what the coordinator knows about enrolled clients —
 * their records and certificates, invites, revocations (with reasons, and the CRL built from
 * them), last seen times and the lost-device suspicion. Enrollment and renewal change it here;
 * the gRPC adapters only carry requests in and answers out.
 *
 * `registry` is this process's cache of the shared registry: every per-call check reads it
 * synchronously. Every change goes through the store (registry-store.ts: registry.json merged
 * under a lock, or Redis shared by every front end), which runs it atomically against the shared
 * facts and merges the result — and whatever other writers did — into the cache. Revocations
 * learned from anywhere (this process, another front end's push, a merge from disk) end the
 * client's open stream here (`onRevoked`) and are announced to `onRevocationsChanged` listeners.
 * Revocations made here take effect in the cache before the store is written, so a store that
 * fails never leaves a revoked client accepted here.
 *
 * Last-seen times are kept exactly in memory and written to the store rounded to the minute, at
 * most once a minute.
 */
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import type { Logger } from 'pino';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import { inspectCsr, issueClientCertificate, KeyAlreadyBoundError, KeyBindings, requireCaKey, serialOf, type CaCertificate } from '../auth/ca.js';
import { parseCrl, signCrl } from '../auth/crl.js';
import { Invites, normalizeSerial, parseRevocationReason, type RevocationReason } from '../auth/enrollment.js';
import { latestSignedCrl, writeRevocationsRequest, type OfflineEnrollment } from '../auth/offline-ca.js';
import { AuthError } from '../auth/tokens.js';
import type { CoordinatorMetrics } from '../service/metrics.js';
import { FileRegistryStore } from './file-store.js';
import { applyDelta, isEmptyDelta, type RegistryDelta, type RevocationChange } from './merge.js';
import { enrollOp, inviteOp, lastSeenOp, renewOp, revokeClientOp, revokeSerialsOp, type IssuedFacts } from './registry-ops.js';
import { MemoryRegistryStore, type RegistrySink, type RegistryStore } from './registry-store.js';
import type { ClientRecord, Registry } from './registry.js';
import { certificateSerialsOf, revocationCodeOf } from './serials.js';

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
  /** The cache: the registry as this process knows it at start (registry.json as loaded). */
  registry: Registry;
  /** The data dir (registry.json, the offline CA's files). */
  dataDir?: string;
  /**
   * Where the shared registry lives: default registry.json in `dataDir` (FileRegistryStore), or
   * memory only without a data dir (tests, simulate); with Redis a RedisRegistryStore
   * (coordinator/queue/redis-registry.ts).
   */
  store?: RegistryStore;
  /** Offline CA: Enroll queues CSRs for the CA host; revocations go there for its CRL. */
  offlineCa?: OfflineEnrollment;
  /** Client certificate lifetime; default 24 h (ca.ts). */
  clientCertTtlMs?: number;
  /** A client silent longer than this is flagged `suspected-lost`; default 7 days. */
  clientsLostAfterMs?: number;
  clock: () => number;
  log?: Logger;
  metrics?: CoordinatorMetrics;
  /**
   * Called once for each client this process learns is revoked — revoked here, on another front
   * end, or found revoked in registry.json — and for a client whose current certificate's serial
   * is revoked (its open stream is ended there).
   */
  onRevoked?: (clientId: string) => void;
}

/** What `onRevocationsChanged` listeners are told: the client ids and serials newly revoked. */
export type RevocationsChanged = RevocationChange & { source: 'local' | 'write' | 'push' | 'resync' };

export class ClientRegistry implements RegistrySink {
  readonly registry: Registry;
  readonly store: RegistryStore;
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
  /** Pending last-seen writes. */
  private flushChain: Promise<void> = Promise.resolve();
  private started: Promise<void> | undefined;
  private readonly revocationListeners = new Set<(change: RevocationsChanged) => void>();

  constructor(opts: ClientRegistryOptions) {
    this.opts = opts;
    this.registry = opts.registry;
    this.clock = opts.clock;
    this.log = opts.log;
    this.store = opts.store ?? (opts.dataDir !== undefined ? new FileRegistryStore(opts.dataDir, opts.log ? { log: opts.log } : {}) : new MemoryRegistryStore());
  }

  /** The cache (RegistrySink). */
  get cache(): Registry {
    return this.registry;
  }

  /** Reads the shared registry into the cache and starts following it (once; every change waits for it). */
  start(): Promise<void> {
    this.started ??= this.store.start(this).catch((err: unknown) => {
      this.started = undefined;
      throw err;
    });
    return this.started;
  }

  /** Writes the last-seen times, waits for every pending write and stops following the store. */
  async close(): Promise<void> {
    await this.flush();
    if (this.started) await this.store.close();
  }

  /**
   * Calls `listener` whenever the set of revoked client ids or serials grows, for any reason: a
   * revocation here, one pushed by another front end, one merged from registry.json. Returns a
   * function that removes it.
   */
  onRevocationsChanged(listener: (change: RevocationsChanged) => void): () => void {
    this.revocationListeners.add(listener);
    return () => void this.revocationListeners.delete(listener);
  }

  /** Merges facts into the cache (RegistrySink: the store calls it); acts on new revocations. */
  absorb(delta: RegistryDelta, source: 'local' | 'write' | 'push' | 'resync'): void {
    if (isEmptyDelta(delta)) return;
    const change = applyDelta(this.registry, delta);
    if (change.clients.length === 0 && change.serials.length === 0) return;
    // Clients revoked, and clients whose current certificate was revoked by serial.
    const ended = new Set(change.clients);
    if (change.serials.length > 0) {
      const serials = new Set(change.serials);
      for (const rec of this.registry.clients.values()) if (serials.has(normalizeSerial(rec.serial))) ended.add(rec.clientId);
    }
    for (const id of ended) {
      if (this.suspectedLost.delete(id)) this.opts.metrics?.clientsSuspectedLost(this.suspectedLost.size);
      if (source !== 'local' && change.clients.includes(id)) this.log?.info({ client: id, source }, 'client revoked (learned from the shared registry)');
      try {
        this.opts.onRevoked?.(id);
      } catch (err) {
        this.log?.error({ code: isAegisError(err) ? err.code : 'internal' }, 'a revocation callback failed');
      }
    }
    for (const listener of this.revocationListeners) {
      try {
        listener({ ...change, source });
      } catch (err) {
        this.log?.error({ code: isAegisError(err) ? err.code : 'internal' }, 'a revocation listener failed');
      }
    }
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

  /** A one-time enrollment token (only its hash is stored; redeemable on any front end). */
  async createInvite(opts: { ttlMs?: number; clientId?: string } = {}): Promise<{ token: string; expiresAt: number }> {
    const { token, expiresAt, record } = Invites.mint(opts, this.clock());
    await this.start();
    await this.store.run(inviteOp(record));
    return { token, expiresAt };
  }

  /**
   * Enroll: a one-time token and a CSR for a client certificate (or, offline CA, a pending answer).
   * The token is checked before anything is signed, and redeemed in the same atomic write that
   * records the client: of two enrollments with one token (on any front ends) one succeeds, the
   * other is refused as used. A refused enrollment leaves the token usable.
   */
  async enroll(req: enroll.EnrollRequest): Promise<enroll.EnrollReply> {
    const { ca, offlineCa } = this.opts;
    await this.start();
    if (offlineCa) return offlineCa.enroll(req, { registry: this.registry, persist: () => this.store.sync(), clock: this.clock });
    const { clientId, publicKey } = await inspectCsr(req.csrDer);
    const hash = Invites.hashOf(req.token);
    const key = Buffer.from(publicKey).toString('base64url');
    await this.store.run(enrollOp({ hash, clientId, publicKey: key, now: this.clock() }));
    // The key binding is checked (and written) by the store; the CA checks the CSR and signs.
    const cert = await issueClientCertificate(ca, req.csrDer, clientId, { bindings: new KeyBindings(), ...this.certTtl() });
    await this.store.run(enrollOp({ hash, clientId, publicKey: key, now: this.clock(), cert: issuedFacts(cert) }));
    this.log?.info({ client: clientId }, 'client enrolled');
    return create(enroll.EnrollReplySchema, { certificateDer: cert.certificateDer, caCertificateDer: ca.certificateDer, clientId });
  }

  /**
   * Renew (same key) or rekey (a new key for the same id, authenticated by the caller's valid,
   * unrevoked certificate; the old key's serials are revoked as superseded). The store checks
   * again, atomically with the write, that the caller is not revoked and that no rekey of the
   * client finished meanwhile (on any front end).
   */
  async renew(req: enroll.RenewRequest, rec: ClientRecord, callerCertificate: Uint8Array): Promise<enroll.RenewReply> {
    const { ca } = this.opts;
    await this.start();
    const { clientId, publicKey } = await inspectCsr(req.csrDer);
    if (clientId !== rec.clientId) throw new AegisError(ErrorCode.Unauthenticated, 'the CSR names another client than the certificate');
    const newKey = Buffer.from(publicKey).toString('base64url');
    const rekey = req.rekey && newKey !== rec.publicKey;
    if (!rekey && newKey !== rec.publicKey) {
      throw new AegisError(ErrorCode.KeyAlreadyBound, 'renewal must keep the enrolled identity key');
    }
    const callerSerial = serialOf(callerCertificate);
    // Checked again after the CSR's inspection (an await): a renewal or rekey of this client
    // that finished meanwhile may have revoked the caller. One renewal per client at a time in
    // this process, so no two requests certify keys from the same state (the store refuses a
    // second rekey from another front end).
    if (this.registry.revocations.isRevoked({ clientId, serial: callerSerial })) throw new AuthError('revoked', 'peer certificate');
    if (this.renewals.has(clientId)) throw new AegisError(ErrorCode.Unavailable, 'a renewal of this client is under way; retry later');
    if (rekey) {
      const owner = this.registry.bindings.owner(publicKey);
      if (owner !== undefined && owner !== clientId) throw new KeyAlreadyBoundError();
    }
    this.renewals.add(clientId);
    try {
      const cert = await issueClientCertificate(ca, req.csrDer, clientId, { bindings: new KeyBindings(), ...this.certTtl() });
      await this.store.run(renewOp({ clientId, baseKey: rec.publicKey, newKey, callerSerial, now: this.clock(), cert: issuedFacts(cert) }));
      if (rekey) this.log?.info({ client: clientId }, 'client identity key rotated');
      this.log?.info({ client: clientId }, 'certificate renewed');
      return create(enroll.RenewReplySchema, { certificateDer: cert.certificateDer, caCertificateDer: ca.certificateDer });
    } finally {
      this.renewals.delete(clientId);
    }
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
   * `invalid-argument`) and `detail` (free text). Its open stream ends — on every front end.
   * Revoking again changes nothing (the first time and reason stay). Returns the revocation time.
   */
  async revoke(clientId: string, reason: string = 'unspecified', detail = ''): Promise<number> {
    const code = parseRevocationReason(reason);
    const now = this.clock();
    const op = revokeClientOp({ clientId, reason: code, detail, now });
    // This process refuses the client at once, whatever happens to the write.
    if (this.registry.clients.has(clientId)) this.absorb(op.apply(this.registry).delta, 'local');
    await this.start();
    const { revokedAt, record } = await this.store.run(op);
    // With an offline CA, the revocations go to the CA host for its next CRL (ca-requests/revocations.json).
    if (this.opts.offlineCa && this.opts.dataDir !== undefined) await writeRevocationsRequest(this.opts.dataDir, this.crlEntries(now), now);
    this.log?.warn({ client: clientId, reason: revocationCodeOf(record) }, 'client revoked');
    return revokedAt;
  }

  /**
   * Revokes bare certificate serials (hex; an operator's certificate, say) with `reason` (a code
   * of `REVOCATION_REASONS`) and `detail`: refused on their next call on every front end and
   * listed on the CRL. A client whose current certificate is among them has its stream ended.
   * Returns the revocation time (an earlier revocation of a serial keeps its own).
   */
  async revokeSerials(serials: string[], info: { reason: string; detail?: string }): Promise<number> {
    const reason = parseRevocationReason(info.reason);
    const normalized = [...new Set(serials.map((s) => normalizeSerial(s)))];
    if (normalized.length === 0) throw new AegisError(ErrorCode.InvalidArgument, 'no certificate serial to revoke');
    const detail = (info.detail ?? '').trim().slice(0, 200);
    const now = this.clock();
    const op = revokeSerialsOp({ serials: normalized, reason, ...(detail ? { detail } : {}), now });
    this.absorb(op.apply(this.registry).delta, 'local');
    await this.start();
    await this.store.run(op);
    if (this.opts.offlineCa && this.opts.dataDir !== undefined) await writeRevocationsRequest(this.opts.dataDir, this.crlEntries(now), now);
    this.log?.warn({ serials: normalized.length, reason }, 'certificate serials revoked');
    return now;
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
   * once a minute, and otherwise lets the store re-read the shared registry (registry.json:
   * another process's revocations are learned here within a minute even by a process that never
   * writes). Returns the clients flagged by this sweep.
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
    this.registry.invites.prune();
    void this.sweepTick().catch(() => undefined);
    return flagged;
  }

  private async sweepTick(): Promise<void> {
    await this.start();
    if (!(await this.flushLastSeen(false))) await this.store.tick();
  }

  /**
   * Writes the last-seen times, rounded down to the minute, to the store where they are later than
   * what the cache holds (at most once a minute unless `force`). A store shared with other
   * writers keeps the later of theirs and these. Resolves true when it wrote.
   */
  flushLastSeen(force: boolean): Promise<boolean> {
    const now = this.clock();
    if (!force && now - this.lastSeenFlushedAt < 60_000) return Promise.resolve(false);
    const times: [string, number][] = [];
    for (const [id, t] of this.lastSeen) {
      const rec = this.registry.clients.get(id);
      const coarse = Math.floor(t / 60_000) * 60_000;
      if (rec && (rec.lastSeenAt ?? Number.NEGATIVE_INFINITY) < coarse) times.push([id, coarse]);
    }
    if (times.length === 0) return Promise.resolve(false);
    this.lastSeenFlushedAt = now;
    const next = this.flushChain.then(() => this.start()).then(() => this.store.run(lastSeenOp(times)));
    this.flushChain = next.catch((err: unknown) => {
      this.log?.error({ code: isAegisError(err) ? err.code : 'io' }, 'could not write the last-seen times to the registry');
    });
    return next.then(() => true);
  }

  // -------------------------------------------------------------------------------------------

  /** Writes every fact of the cache the store lacks (the offline CA's enrollment changes the cache itself). */
  async persist(): Promise<void> {
    await this.start();
    await this.store.sync();
  }

  /** Writes the last-seen times and waits for every pending write. */
  async flush(): Promise<void> {
    if (this.started) await this.flushLastSeen(true).catch(() => false);
    await this.flushChain;
  }
}

/** The registry's facts of a certificate just issued. */
function issuedFacts(cert: { serial: string; notAfter: Date; certificateDer: Uint8Array }): IssuedFacts {
  return { serial: cert.serial, certificateExpiresAt: cert.notAfter.getTime(), certificate: Buffer.from(cert.certificateDer).toString('base64') };
}
