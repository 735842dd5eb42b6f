/**
 * The coordinator process (`aegis coordinator start`): a composition root that wires the owners
 * of its state to the gRPC services of proto/aegis/v1 and starts its timers.
 *
 * Owners:
 * - the client registry (coordinator/clients/): enrolled clients, invites, revocations and the
 *   CRL, last seen and lost devices;
 * - the jobs (coordinator/jobs/): launches, rounds, the training loop, status, listing,
 *   cancellation and retention, here and across front ends;
 * - the mailboxes (mailbox.ts): what waits to be sent to each client;
 * - the operator credentials (coordinator/auth/operators.ts): their records, issue, reissue and
 *   revocation (on the client registry's revocation list);
 * - the round-token verifier and its ledger of seen and revoked tokens
 *   (coordinator/auth/seen-tokens.ts: memory, DATA_DIR/tokens.log, or Redis).
 *
 * Transport (coordinator/rpc/): two TLS 1.3 listeners — the main one with client certificates
 * (SecAgg, Enrollment.Renew, Admin, Trust), the enrollment one with server authentication only
 * (Enrollment.Enroll, Trust) — and one thin adapter per service. Every call on the main address
 * is authorized per call from the verified peer certificate (caller.ts): revoked clients and
 * serials are refused on their next call even with an unexpired certificate. Round calls also
 * need a single-use EdDSA JWT issued to the same identity, and the client id inside every round
 * message must equal the certificate's. Every refusal is a status with an `aegis-reason` code
 * (shared/rpc/status.ts); nothing a caller sends can stop the process.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import type * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { ClientMessage } from '../../shared/protocol/messages.js';
import type { Phase } from '../../shared/protocol/vocabulary.js';
import type { CaCertificate } from '../auth/ca.js';
import { DashboardTokens } from '../auth/dashboard-tokens.js';
import type { OfflineEnrollment } from '../auth/offline-ca.js';
import { Operators, type BuiltInOperatorCredential } from '../auth/operators.js';
import type { TokenLedger } from '../auth/seen-tokens.js';
import { AuthError, TokenVerifier, type TokenIssuer } from '../auth/tokens.js';
import { ClientRegistry, type ClientStatus, type SignedCrl } from '../clients/client-registry.js';
import { DashboardData } from '../dashboard/projections.js';
import { dpSpendingOf } from '../jobs/dp-status.js';
import { JobsAcrossFrontEnds } from '../jobs/front-ends.js';
import { Jobs } from '../jobs/jobs.js';
import type { ModelVersionRecord } from '../jobs/training.js';
import type { JobsOptions, LaunchResult } from '../jobs/types.js';
import { adminService } from '../rpc/admin-service.js';
import { CallerAuthorization } from '../rpc/caller.js';
import { enrollmentService } from '../rpc/enrollment-service.js';
import { Admission } from '../rpc/admission.js';
import { DEFAULT_MAX_MESSAGE_BYTES, listenTls, setStateReachable, shutdown } from '../rpc/listeners.js';
import type { RedisHealth } from '../queue/redis-health.js';
import { secAggService } from '../rpc/secagg-service.js';
import { trustService } from '../rpc/trust-service.js';
import { serveDashboard, type DashboardServer, type ServeDashboardOptions } from '../dashboard/server.js';
import { coordinatorDashboardCredential } from '../dashboard/certificate.js';
import type { Registry } from '../clients/registry.js';
import type { RegistryStore } from '../clients/registry-store.js';
import { Mailboxes } from './mailbox.js';
import type { RoundOutcome } from '../round/index.js';

export interface CoordinatorOptions extends JobsOptions {
  /** The CA: with its key (embedded default) or without (offline CA: issuing fails closed with CaKeyUnavailableError). */
  ca: CaCertificate;
  /** Offline CA: the TLS server key and certificate (signed on the CA host) instead of one issued at each start. */
  serverCredential?: { privateKeyPem: string; certificatePem: string };
  /** Offline CA: Enroll queues CSRs for the CA host and answers pending until the certificate is back. */
  offlineCa?: OfflineEnrollment;
  tokens: TokenIssuer;
  /** The client registry as loaded at start (the cache the per-call checks read). */
  registry: Registry;
  /**
   * Where the client registry is shared: default registry.json in `dataDir` (merged under a lock),
   * or memory only without a data dir; with Redis, a RedisRegistryStore shared by every front end.
   */
  registryStore?: RegistryStore;
  /** Client certificate lifetime; default 24 h. */
  clientCertTtlMs?: number;
  /** Round-call token lifetime; default 5 min. */
  tokenTtlMs?: number;
  /**
   * Where seen and revoked round tokens are kept (seen-tokens.ts); default this process's memory.
   * The coordinator closes it.
   */
  tokenLedger?: TokenLedger;
  /** Lifetime of operator certificates issued without one asked for; default 7 days. */
  operatorTtlMs?: number;
  /** The data dir's built-in operator credential (coordinator/service/data-dir.ts). */
  builtInOperator?: BuiltInOperatorCredential;
  /** Largest message the server takes, bytes; default 64 MiB (m = 10^7 fits). */
  maxMessageBytes?: number;
  clock?: () => number;
  /**
   * How long a client of a running round may stay disconnected before its phases stop waiting
   * for it (it may still come back until the phase closes). Default 2 s.
   */
  lostAfterMs?: number;
  /**
   * A client silent (no authenticated call of any kind) longer than this is flagged
   * `suspected-lost` (a warn log line and the `aegis_clients_suspected_lost` metric); default 7
   * days (`coordinator start --clients-lost-after`, config `clients.lost_after`). Swept at start
   * and every minute.
   */
  clientsLostAfterMs?: number;
  /**
   * Whether the Redis under this front end answers (with `--redis`): while it does not, the gRPC
   * health of every service that needs it (all but Trust, and each server as a whole) is
   * NOT_SERVING, and the job directory is not published.
   */
  redisHealth?: Pick<RedisHealth, 'up' | 'onChange'>;
}

export class Coordinator {
  readonly ca: CaCertificate;
  readonly registry: Registry;
  /** Enrolled clients, invites, revocations, last seen. */
  readonly clients: ClientRegistry;
  /** Every job this process runs or follows, and their rounds. */
  readonly jobs: Jobs;
  /** Status, results, listings and cancellation, also of other front ends' jobs. */
  readonly reports: JobsAcrossFrontEnds;
  /** Operator credentials: records, issue, reissue, revocation. */
  readonly operators: Operators;
  /** Round-call tokens: verification, replay and revocation (`verifier.ledger`). */
  readonly verifier: TokenVerifier;
  /** When this coordinator was created (ms since epoch). */
  readonly startedAt: number;
  /** The two addresses once listening. */
  address = '';
  enrollAddress = '';
  private readonly opts: CoordinatorOptions;
  private readonly tokens: TokenIssuer;
  private readonly mailboxes = new Mailboxes<pb.ServerEnvelope>();
  private readonly auth: CallerAuthorization;
  private readonly log: Logger | undefined;
  private readonly clock: () => number;
  private servers: grpc.Server[] = [];
  /** The main listener's admission (refusal at the headers, size caps, calls ended with their certificate). */
  private admission: Admission | undefined;
  private timers: NodeJS.Timeout[] = [];
  /** The web dashboard (startDashboard): its server and login tokens. */
  private dashboard: { server: DashboardServer; auth: DashboardTokens } | undefined;

  constructor(opts: CoordinatorOptions) {
    this.opts = opts;
    this.ca = opts.ca;
    this.tokens = opts.tokens;
    this.registry = opts.registry;
    this.log = opts.log;
    this.clock = opts.clock ?? Date.now;
    this.startedAt = this.clock();
    this.clients = new ClientRegistry({
      ca: opts.ca,
      registry: opts.registry,
      clock: this.clock,
      // Also for a revocation made on another front end, learned from the shared registry.
      onRevoked: (id) => this.mailboxes.close(id, new AuthError('revoked', 'peer certificate')),
      ...(opts.registryStore ? { store: opts.registryStore } : {}),
      ...pick(opts, ['dataDir', 'offlineCa', 'clientCertTtlMs', 'clientsLostAfterMs', 'log', 'metrics']),
    });
    this.jobs = new Jobs(opts, { clients: this.clients, mailboxes: this.mailboxes, connectedClients: () => this.connectedClients(), clock: this.clock });
    this.reports = new JobsAcrossFrontEnds(this.jobs, opts, this.clock);
    opts.metrics?.trackDp(() => dpSpendingOf(this.jobs.all(), (id) => this.jobs.isCancelled(id)));
    this.jobs.onRoundEnded = () => void this.reports.publishJobs();
    if (opts.redisRounds) opts.redisRounds.connectedClients = () => this.connectedClients();
    this.verifier = new TokenVerifier({
      publicKey: opts.tokens.publicKey,
      keyring: opts.tokens.keyring,
      revocations: this.registry.revocations,
      clock: this.clock,
      ...(opts.tokenLedger ? { ledger: opts.tokenLedger } : {}),
    });
    this.auth = new CallerAuthorization(this.clients, this.verifier, this.clock);
    this.operators = new Operators({
      ca: opts.ca,
      revocations: this.clients,
      clock: this.clock,
      ...pick(opts, ['dataDir', 'log']),
      ...(opts.operatorTtlMs !== undefined ? { ttlMs: opts.operatorTtlMs } : {}),
      ...(opts.builtInOperator ? { builtIn: opts.builtInOperator } : {}),
    });
  }

  /**
   * Listens on `listen` (mTLS) and `enrollListen` (server TLS; default: the next port). Port 0
   * picks free ports. Resolves with the bound addresses.
   */
  async listen(listen: string, enrollListen?: string): Promise<{ address: string; enrollAddress: string }> {
    const { opts, auth, clients, jobs, reports } = this;
    // The shared client registry is read (and followed) before the first call is taken.
    await clients.start();
    // The job history is read back before any call is taken; running training jobs resume once listening.
    const resume = jobs.restoreHistory();
    const services = {
      secAgg: secAggService({ auth, jobs, mailboxes: this.mailboxes, tokens: this.tokens, ...pick(opts, ['tokenTtlMs', 'lostAfterMs', 'redisRounds', 'log']) }),
      enrollment: enrollmentService({ auth, clients }),
      admin: adminService({
        auth,
        clients,
        jobs,
        reports,
        operators: this.operators,
        tokens: this.verifier,
        caCertificateDer: opts.ca.certificateDer,
        issueDashboardToken: (ttl) => this.issueDashboardToken(ttl),
        ...pick(opts, ['log']),
      }),
      trust: trustService(opts.registryDir),
    };
    // The built-in operator credential is on record (a data dir of an older release has none yet).
    const builtIn = await opts.builtInOperator?.current();
    if (builtIn) await this.operators.adopt(builtIn, { builtIn: true });
    this.admission = new Admission({
      clients,
      clock: this.clock,
      maxMessageBytes: opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
      sendLimit: (clientId) => jobs.sendLimitOf(clientId),
      ...pick(opts, ['log']),
    });
    const bound = await listenTls(opts, services, listen, enrollListen, this.admission.interceptor);
    this.servers = bound.servers;
    this.address = bound.address;
    this.enrollAddress = bound.enrollAddress;
    const redisHealth = opts.redisHealth;
    if (redisHealth) {
      if (!redisHealth.up) setStateReachable(bound.health, false);
      redisHealth.onChange((up) => {
        if (this.servers.length > 0) setStateReachable(bound.health, up);
      });
    }
    this.log?.info({ listen: this.address, enrollListen: this.enrollAddress }, 'coordinator listening');
    await opts.redisRounds?.start();
    opts.launchQueue?.work((task) => jobs.runQueuedLaunch(task));
    this.retireRounds();
    jobs.resumeTraining(resume);
    void this.sweepClientsEverywhere();
    this.every(3_600_000, () => this.retireRounds());
    this.every(60_000, () => void this.sweepClientsEverywhere());
    if (opts.jobDirectory) this.every(1000, () => void (opts.redisHealth?.up === false ? undefined : reports.publishJobs()));
    return { address: this.address, enrollAddress: this.enrollAddress };
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.push(t);
  }

  /** Stops accepting calls, cancels running rounds, ends streams, and waits for the registry. */
  async close(): Promise<void> {
    this.jobs.stop();
    await this.dashboard?.server.close();
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    // Redis unreachable: nothing on it is waited for (its graceful closes would wait forever).
    const redisDown = this.opts.redisHealth?.up === false;
    // Launches this process was running go back to the queue for another process.
    if (redisDown) this.opts.launchQueue?.closeNow();
    else await this.opts.launchQueue?.close(true);
    this.mailboxes.closeAll(new AegisError(ErrorCode.Unavailable, 'the coordinator is shutting down'));
    await shutdown(this.servers);
    this.servers = [];
    this.admission?.close();
    if (redisDown) this.opts.redisRounds?.closeNow();
    else await this.opts.redisRounds?.close();
    await this.clients.close();
    await this.jobs.flush();
    await this.verifier.ledger.close();
  }

  /** Client ids with an attached stream and no revocation. */
  connectedClients(): string[] {
    return this.mailboxes.attached().filter((id) => !this.clients.isRevoked({ clientId: id }));
  }

  /**
   * The lost-device sweep; with rounds on Redis (several front ends), a client whose stream is open
   * on another front end counts as seen first (its calls go there, not here).
   */
  private async sweepClientsEverywhere(): Promise<void> {
    const shared = this.opts.redisRounds;
    if (shared && this.opts.redisHealth?.up !== false) {
      const present = await shared.presence().catch(() => [] as string[]);
      for (const id of present) if (this.clients.isActive(id)) this.clients.markSeen(id);
    }
    if (!this.jobs.stopped) this.clients.sweep();
  }

  // -------------------------------------------------------------------------------------------
  // The web dashboard (coordinator/dashboard/, docs/dashboard-api.md).

  /**
   * Starts the web dashboard at `listen` (loopback unless `allowRemote`); logins from
   * `issueDashboardToken`. HTTPS with `opts.tls`; with `allowRemote` and no `opts.tls`, HTTPS
   * with the coordinator's own TLS credential (coordinator/dashboard/certificate.ts), and
   * `invalid-argument` when it has none. Plain HTTP on loopback otherwise. Sessions end after
   * `idleTimeoutMs` without a request (default 15 min) or `sessionLifetimeMs` after the login
   * (default 8 h). Closed with the coordinator.
   */
  async startDashboard(listen: string, opts: Omit<ServeDashboardOptions, 'auth'> & { idleTimeoutMs?: number; sessionLifetimeMs?: number } = {}): Promise<DashboardServer> {
    if (this.dashboard) throw new AegisError(ErrorCode.AlreadyExists, 'the dashboard runs already');
    const { idleTimeoutMs, sessionLifetimeMs, ...serve } = opts;
    const auth = new DashboardTokens({
      clock: this.clock,
      ...(idleTimeoutMs === undefined ? {} : { idleMs: idleTimeoutMs }),
      ...(sessionLifetimeMs === undefined ? {} : { lifetimeMs: sessionLifetimeMs }),
    });
    const tls = serve.tls ?? (serve.allowRemote === true ? await coordinatorDashboardCredential(this.ca, listen, this.opts.serverCredential) : undefined);
    const data = new DashboardData({
      jobs: this.jobs,
      reports: this.reports,
      clients: this.clients,
      connectedClients: () => this.connectedClients(),
      startedAt: this.startedAt,
      clock: this.clock,
      ...pick(this.opts, ['registryDir']),
    });
    const server = await serveDashboard(data, listen, { ...serve, ...(tls ? { tls } : {}), auth });
    this.dashboard = { server, auth };
    return server;
  }

  /** The dashboard's address (`host:port`), when it runs. */
  get dashboardAddress(): string | undefined {
    return this.dashboard?.server.address;
  }

  /**
   * A single-use dashboard login token and its link, `…/login#token=T`: the token rides in the
   * fragment, which the browser keeps to itself (the sign-in page posts it); `failed-precondition`
   * without a dashboard.
   */
  issueDashboardToken(ttlMs?: number): { token: string; expiresAt: number; url: string } {
    const d = this.dashboard;
    if (!d) throw new AegisError(ErrorCode.FailedPrecondition, 'this coordinator runs no dashboard (coordinator start --dashboard HOST:PORT)');
    const t = d.auth.issue(ttlMs);
    return { ...t, url: `${d.server.url}/login#token=${t.token}` };
  }

  // -------------------------------------------------------------------------------------------
  // The owners' calls used in-process (CLI, simulator, demo, tests).

  createInvite(opts: { ttlMs?: number; clientId?: string } = {}): Promise<{ token: string; expiresAt: number }> {
    return this.clients.createInvite(opts);
  }
  revoke(clientId: string, reason?: string, detail?: string): Promise<number> {
    return this.clients.revoke(clientId, reason, detail);
  }
  revokeSerials(serials: string[], info: { reason: string; detail?: string }): Promise<number> {
    return this.clients.revokeSerials(serials, info);
  }
  sweepClients(): string[] {
    return this.clients.sweep();
  }
  lastSeenOf(clientId: string): number | undefined {
    return this.clients.lastSeenOf(clientId);
  }
  clientStatus(clientId: string): ClientStatus {
    return this.clients.statusOf(clientId);
  }
  signedCrl(): Promise<SignedCrl> {
    return this.clients.signedCrl();
  }
  launch(manifestJson: Uint8Array, opts?: Parameters<Jobs['launch']>[1]): Promise<LaunchResult> {
    return this.jobs.launch(manifestJson, opts);
  }
  requestLaunch(manifestJson: Uint8Array, opts?: Parameters<Jobs['requestLaunch']>[1]): Promise<LaunchResult & { queued?: string }> {
    return this.jobs.requestLaunch(manifestJson, opts);
  }
  submit(clientId: string, msg: ClientMessage): Promise<Phase> {
    return this.jobs.submit(clientId, msg);
  }
  outcomeOf(jobId: string, roundIndex: number): Promise<RoundOutcome> {
    return this.jobs.outcomeOf(jobId, roundIndex);
  }
  trainingFinished(jobId: string): Promise<'completed' | 'failed'> {
    return this.jobs.trainingFinished(jobId);
  }
  modelsOf(jobId: string): readonly ModelVersionRecord[] {
    return this.jobs.modelsOf(jobId);
  }
  uploadPeakOf(jobId: string, roundIndex: number): { peak: number; slots: number } {
    return this.jobs.uploadPeakOf(jobId, roundIndex);
  }
  timingOf(jobId: string, roundIndex: number): ReturnType<Jobs['timingOf']> {
    return this.jobs.timingOf(jobId, roundIndex);
  }
  retireRounds(): number {
    return this.jobs.retireRounds();
  }
  cancelJob(jobId: string, detail?: string): { roundIndex: number; phase: Phase; at: number } {
    return this.jobs.cancelJob(jobId, detail);
  }
  statusOf(jobId: string, roundIndex?: number): admin.RoundStatusReply {
    return this.reports.statusOf(jobId, roundIndex);
  }
  resultOf(jobId: string, roundIndex?: number): admin.RoundResultReply {
    return this.reports.resultOf(jobId, roundIndex);
  }
  listJobs(): admin.JobInfo[] {
    return this.reports.listJobs();
  }
  listJobsEverywhere(): Promise<admin.JobInfo[]> {
    return this.reports.listJobsEverywhere();
  }
  statusAnywhere(jobId: string, roundIndex?: number): Promise<admin.RoundStatusReply> {
    return this.reports.statusAnywhere(jobId, roundIndex);
  }
  resultAnywhere(jobId: string, roundIndex?: number): Promise<admin.RoundResultReply> {
    return this.reports.resultAnywhere(jobId, roundIndex);
  }
  cancelAnywhere(jobId: string, detail: string): Promise<{ roundIndex: number; phase: Phase; at: number }> {
    return this.reports.cancelAnywhere(jobId, detail);
  }
}

/** The options of `o` named in `keys` that are set (exactOptionalPropertyTypes: no explicit undefined). */
function pick<T extends object, K extends keyof T>(o: T, keys: readonly K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}
