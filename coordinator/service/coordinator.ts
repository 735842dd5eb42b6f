/**
 * The coordinator process (`aegis coordinator start`): the gRPC services of proto/aegis/v1 around
 * the registry (enrolled clients, invites, revocations) and one RoundHost per running round.
 *
 * Two listeners, both TLS 1.3 only:
 * - the main address requires a client certificate issued by the coordinator CA
 *   (`checkClientCertificate`): SecAgg (clients), Enrollment.Renew (clients), Admin (operators);
 * - the enrollment address authenticates only the server: Enrollment.Enroll, where a device that
 *   has no certificate yet trades a one-time token and a CSR for one.
 *
 * Every call on the main address is authorized per call from the verified peer certificate:
 * revoked clients and serials are refused on their next call even with an unexpired certificate.
 * Round calls (Subscribe, Send, Heartbeat) also need a single-use EdDSA JWT in `authorization:
 * Bearer`, issued by IssueTokens to the same certificate identity. The client id inside every
 * round message must equal the certificate's (RoundHost.submit). Every refusal is a status with
 * an `aegis-reason` code (shared/rpc/status.ts); nothing a caller sends can stop the process.
 */
import { randomInt, X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { join } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import type { CoordinatorMetrics } from './metrics.js';
import type { LaunchQueue, LaunchTask } from '../queue/launch-queue.js';
import type { UnmaskQueue } from '../queue/unmask-queue.js';
import type { JobDirectory } from '../queue/job-directory.js';
import type { RedisRoundInfo, RedisRoundMeta } from '../queue/round-store.js';
import type { RedisRounds } from '../queue/redis-rounds.js';
import type { Logger } from 'pino';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import * as trust from '../../shared/gen/aegis/v1/trust_pb.js';
import { verifyRootHistory, verifyPublishers, publisherKey, snapshotBytes, parsePublishersPayload } from '../../shared/trust/registry.js';
import { readSnapshot } from '../../shared/trust/registry-dir.js';
import { verifySignedManifest } from '../../shared/trust/manifest.js';
import { evaluateModel } from '../../shared/model/evaluate.js';
import type { LocalDataStore } from '../../shared/store/types.js';
import { isTrainingManifest, parseManifest, type JobManifest } from '../../shared/protocol/manifest.js';
import type { ClientMessage, RoundRef, ServerEvent, ServerMessage } from '../../shared/protocol/messages.js';
import { sameRound } from '../../shared/protocol/session.js';
import { Phase, type AbortReason } from '../../shared/protocol/vocabulary.js';
import { abortReasonFromProto, abortReasonToProto, fromClientEnvelope, fromEventEnvelope, phaseFromProto, phaseToProto, toEventEnvelope, vectorToBytes } from '../../shared/rpc/convert.js';
import { addHealthAndReflection } from '../../shared/rpc/server.js';
import { addService, serverStream, unary } from '../../shared/rpc/service.js';
import { clientIdOf, inspectCsr, issueClientCertificate, issueServerCertificate, operatorOf, serialOf, type CaCertificate } from '../auth/ca.js';
import { latestSignedCrl, writeRevocationsRequest, type OfflineEnrollment } from '../auth/offline-ca.js';
import { EnrollmentError, parseRevocationReason, revocationReasonOf, type RevocationReason } from '../auth/enrollment.js';
import { parseCrl, signCrl } from '../auth/crl.js';
import { requireCaKey } from '../auth/ca.js';
import { AuthError, TokenVerifier, type TokenIssuer } from '../auth/tokens.js';
import { saveRegistry, type ClientRecord, type Registry } from './data-dir.js';
import { Mailbox } from './mailbox.js';
import { UploadGate } from './upload-gate.js';
import { RoundHost } from '../hosts/round-host.js';
import type { RoundOutcome } from '../round/index.js';
import { expectedClients } from '../round/phases.js';
import { GroupedRoundHost } from '../hosts/grouped-host.js';
import type { RoundHostLike } from '../hosts/types.js';
import { DEFAULT_ROUND_RETENTION_MS, RetiredHost, withoutClients } from '../hosts/retired-host.js';
import { planGroups } from '../round/groups.js';
import { groupRoundParams, type RoundParams } from '../../shared/protocol/params.js';
import { DashboardTokens } from '../auth/dashboard-tokens.js';
import { serveDashboard, type DashboardJobDetail, type DashboardJobState, type DashboardJobSummary, type DashboardOverview, type DashboardRound, type DashboardServer, type ServeDashboardOptions } from './dashboard.js';
import { applyWeightedMean, ModelStore, newTrainingProgress, sha256, weightBytes, weightsOf, type ModelVersionRecord, type TrainingProgress } from './training.js';

export interface CoordinatorOptions {
  /** The CA: with its key (embedded default) or without (offline CA: issuing fails closed with CaKeyUnavailableError). */
  ca: CaCertificate;
  /** Offline CA: the TLS server key and certificate (signed on the CA host) instead of one issued at each start. */
  serverCredential?: { privateKeyPem: string; certificatePem: string };
  /** Offline CA: Enroll queues CSRs for the CA host and answers pending until the certificate is back. */
  offlineCa?: OfflineEnrollment;
  tokens: TokenIssuer;
  registry: Registry;
  /** Where the registry is persisted; undefined keeps it in memory only (tests, simulate). */
  dataDir?: string;
  log?: Logger;
  /** Prometheus metrics (coordinator/service/metrics.ts): phase durations, clients, dropouts, outcomes. */
  metrics?: CoordinatorMetrics;
  /**
   * With Redis (`--redis`): launches are queued here and taken by any coordinator process on the
   * same Redis (coordinator/queue/launch-queue.ts); this process works the queue too.
   */
  launchQueue?: LaunchQueue;
  /**
   * With Redis: the unmasking phase's mask expansion goes out as worker jobs
   * (coordinator/queue/unmask-queue.ts) in `unmaskParts` parts (default 2), expanded by any unmask
   * worker on the same Redis; without it the masks are expanded in this process.
   */
  unmaskQueue?: UnmaskQueue;
  unmaskParts?: number;
  /**
   * With Redis: round state lives on Redis (coordinator/queue/redis-rounds.ts), so several
   * coordinator processes (front ends) run each round together and a client may reach any of them.
   */
  redisRounds?: RedisRounds;
  /** With Redis: where this process publishes its jobs, so every coordinator on the Redis lists them. */
  jobDirectory?: JobDirectory;
  /** Client certificate lifetime; default 24 h. */
  clientCertTtlMs?: number;
  /** Round-call token lifetime; default 5 min. */
  tokenTtlMs?: number;
  /** Largest message the server takes, bytes; default 64 MiB (m = 10^7 fits). */
  maxMessageBytes?: number;
  /**
   * Memory for masked inputs being received at once, bytes; default 96 MiB. Sets how many
   * clients may upload together (upload-gate.ts): peak memory stays O(m), not O(n·m).
   */
  uploadBudgetBytes?: number;
  clock?: () => number;
  /**
   * How long a finished round keeps which clients took part (retention.ts); default 30 days.
   * Checked at start and every hour.
   */
  roundRetentionMs?: number;
  /**
   * Called with each event just before it is queued for a client (tracing, metrics, and the
   * end-to-end tests' crash injection). Must not throw.
   */
  tap?: (clientId: string, event: ServerEvent['type']) => void;
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
   * A publisher registry directory (aegis registry init): the coordinator then takes only
   * manifests signed by a publisher it lists, and serves its signed metadata (Trust service).
   */
  registryDir?: string;
  /**
   * Validation sets by name, for the poisoning check of training jobs whose manifest names one
   * (`validation.dataset`): a round's new model that loses more accuracy on it than the gate is
   * held back, the round flagged, and the clients told.
   */
  validationSets?: Record<string, LocalDataStore>;
}

interface RoundRecord {
  /** Masked-input upload slots. */
  gate: UploadGate;
  /** The RoundStart sent to the cohort (the first group's, in a grouped round). */
  startEnvelope: pb.ServerEnvelope;
  /** Each member's RoundStart (its group's parameters in a grouped round). */
  startOf: Map<string, pb.ServerEnvelope>;
  index: number;
  ref: RoundRef;
  host: RoundHostLike;
  cohort: string[];
  startedAt: number;
  /** When the outcome arrived. */
  endedAt?: number;
  outcome?: RoundOutcome;
  /** Past its retention (retention.ts): who took part is forgotten; `cohort` is empty, the counts stay. */
  retired?: { invited: number; survivors: number };
}

interface Job {
  jobId: string;
  manifest: JobManifest;
  manifestJson: Uint8Array;
  manifestHash: Uint8Array;
  /** The publisher-signed envelope the job was launched with (sent in every round start). */
  signedManifest?: Uint8Array;
  /** Who signed it: the key id of the signature that verified, and the publisher's name in the registry. */
  signer?: ManifestSigner;
  rounds: RoundRecord[];
  /** A training job: its model versions and progress (the coordinator drives its rounds). */
  training?: TrainingProgress;
}

/** The publisher whose signature on a job's manifest verified. */
interface ManifestSigner {
  keyId: string;
  publisher: string | null;
}

/** Model weights go to clients in pieces of this size. */
const MODEL_CHUNK_BYTES = 1024 * 1024;

const MAX_TOKENS_PER_CALL = 64;

/** What grpc-js (>= 1.12) exposes of a call's TLS session. */
interface AuthContextLike {
  sslPeerCertificate?: { raw?: Buffer };
}

/** The raw DER of the caller's verified certificate, if any. */
function peerCertificate(call: { getAuthContext?: () => AuthContextLike | null }): Uint8Array | undefined {
  const raw = call.getAuthContext?.()?.sslPeerCertificate?.raw;
  return raw && raw.length > 0 ? new Uint8Array(raw) : undefined;
}

function bearer(metadata: grpc.Metadata): string | undefined {
  const [v] = metadata.get('authorization');
  if (typeof v !== 'string' || !v.startsWith('Bearer ')) return undefined;
  return v.slice(7);
}

export class Coordinator {
  readonly ca: CaCertificate;
  private readonly tokens: TokenIssuer;
  private readonly verifier: TokenVerifier;
  readonly registry: Registry;
  private readonly opts: CoordinatorOptions;
  private readonly mailboxes = new Map<string, Mailbox<pb.ServerEnvelope>>();
  private readonly jobs = new Map<string, Job>();
  private readonly log: Logger | undefined;
  private readonly clock: () => number;
  private servers: grpc.Server[] = [];
  private closing = false;
  private directoryTimer: NodeJS.Timeout | undefined;
  private retentionTimer: NodeJS.Timeout | undefined;
  private clientSweepTimer: NodeJS.Timeout | undefined;
  /** Per client: the time of its last authenticated call (exact; registry.json keeps it per minute). */
  private readonly lastSeen = new Map<string, number>();
  /** Clients with a Renew being certified (one at a time per client). */
  private readonly renewals = new Set<string>();
  /** Clients flagged suspected-lost by the sweep (and not seen since). */
  private readonly suspectedLost = new Set<string>();
  private lastSeenFlushedAt = Number.NEGATIVE_INFINITY;
  private crlNumber = 0;
  private persistChain: Promise<void> = Promise.resolve();
  /** Training jobs an operator cancelled (CancelRound), with when. */
  private readonly cancelledJobs = new Map<string, number>();
  /** The web dashboard (startDashboard): its server and login tokens. */
  private dashboard: { server: DashboardServer; auth: DashboardTokens } | undefined;
  /** The registry's version and publisher count, read at most every few seconds. */
  private registryInfo: { at: number; value: { version: number; publishers: number } | null } | undefined;
  /** When this coordinator was created (ms since epoch). */
  readonly startedAt: number;
  /** The two addresses once listening. */
  address = '';
  enrollAddress = '';

  constructor(opts: CoordinatorOptions) {
    this.opts = opts;
    this.ca = opts.ca;
    this.tokens = opts.tokens;
    this.registry = opts.registry;
    this.log = opts.log;
    this.clock = opts.clock ?? Date.now;
    this.startedAt = this.clock();
    this.verifier = new TokenVerifier({ publicKey: opts.tokens.publicKey, keyring: opts.tokens.keyring, revocations: this.registry.revocations, clock: this.clock });
    const shared = opts.redisRounds;
    if (shared) {
      shared.connectedClients = () => this.connectedClients();
      shared.onNewRound = (info) =>
        void this.attachRemoteRound(info).catch((err: unknown) => this.log?.warn({ job: info.jobId, round: info.index, code: isAegisError(err) ? err.code : 'internal' }, 'could not follow a shared round'));
    }
  }

  // -------------------------------------------------------------------------------------------
  // Listening.

  /**
   * Listens on `listen` (mTLS) and `enrollListen` (server TLS; default: the next port). Port 0
   * picks free ports. Resolves with the bound addresses.
   */
  async listen(listen: string, enrollListen?: string): Promise<{ address: string; enrollAddress: string }> {
    tls.DEFAULT_MIN_VERSION = 'TLSv1.3';
    const [host, portText] = splitHostPort(listen);
    const hosts = [...new Set([reachable(host), '127.0.0.1', 'localhost'])];
    const server = this.opts.serverCredential ?? (await issueServerCertificate(this.ca, { hosts }));
    const keyCert = [{ private_key: Buffer.from(server.privateKeyPem), cert_chain: Buffer.from(server.certificatePem) }];
    const maxBytes = this.opts.maxMessageBytes ?? 64 * 1024 * 1024;
    const options: grpc.ServerOptions = {
      'grpc.max_receive_message_length': maxBytes,
      'grpc.max_send_message_length': maxBytes,
      'grpc.keepalive_time_ms': 20_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.http2.min_ping_interval_without_data_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
    };

    const main = new grpc.Server(options);
    addService(main, pb.SecAgg, this.secAggImpl());
    addService(main, enroll.Enrollment, this.enrollmentImpl());
    addService(main, admin.Admin, this.adminImpl());
    addService(main, trust.Trust, this.trustImpl());
    addHealthAndReflection(main, [pb.SecAgg, enroll.Enrollment, admin.Admin, trust.Trust]);
    const mainCreds = grpc.ServerCredentials.createSsl(Buffer.from(this.ca.certificatePem), keyCert, true);
    const mainPort = await bind(main, `${host}:${portText}`, mainCreds);

    const enrollServer = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 });
    addService(enrollServer, enroll.Enrollment, this.enrollmentImpl());
    addService(enrollServer, trust.Trust, this.trustImpl());
    addHealthAndReflection(enrollServer, [enroll.Enrollment, trust.Trust]);
    const enrollCreds = grpc.ServerCredentials.createSsl(null, keyCert, false);
    const enrollTarget = enrollListen ?? `${host}:${portText === '0' ? 0 : Number(portText) + 1}`;
    const [enrollHost] = splitHostPort(enrollTarget);
    const enrollPort = await bind(enrollServer, enrollTarget, enrollCreds);
    this.servers = [main, enrollServer];
    this.address = `${reachable(host)}:${mainPort}`;
    this.enrollAddress = `${reachable(enrollHost)}:${enrollPort}`;
    this.log?.info({ listen: this.address, enrollListen: this.enrollAddress }, 'coordinator listening');
    await this.opts.redisRounds?.start();
    this.opts.launchQueue?.work((task) => this.runQueuedLaunch(task));
    this.retireRounds();
    this.retentionTimer = setInterval(() => this.retireRounds(), 3_600_000);
    this.retentionTimer.unref();
    void this.sweepClientsEverywhere();
    this.clientSweepTimer = setInterval(() => void this.sweepClientsEverywhere(), 60_000);
    this.clientSweepTimer.unref();
    if (this.opts.jobDirectory) {
      this.directoryTimer = setInterval(() => void this.publishJobs(), 1000);
      this.directoryTimer.unref();
    }
    return { address: this.address, enrollAddress: this.enrollAddress };
  }

  /** Stops accepting calls, cancels running rounds, ends streams, and waits for the registry. */
  async close(): Promise<void> {
    this.closing = true;
    await this.dashboard?.server.close();
    clearInterval(this.directoryTimer);
    clearInterval(this.retentionTimer);
    clearInterval(this.clientSweepTimer);
    // A shared round goes on with the other front ends; a round of this process alone ends here.
    if (!this.opts.redisRounds) for (const job of this.jobs.values()) for (const r of job.rounds) r.host.cancel('the coordinator is shutting down');
    // Launches this process was running go back to the queue for another process.
    await this.opts.launchQueue?.close(true);
    for (const mb of this.mailboxes.values()) mb.close(new AegisError(ErrorCode.Unavailable, 'the coordinator is shutting down'));
    await Promise.all(
      this.servers.map(
        (s) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => {
              s.forceShutdown();
              resolve();
            }, 2000);
            s.tryShutdown(() => {
              clearTimeout(t);
              resolve();
            });
          }),
      ),
    );
    this.servers = [];
    await this.opts.redisRounds?.close();
    void this.flushLastSeen(true).catch(() => undefined);
    await this.persistChain;
    for (const job of this.jobs.values()) await job.training?.models.flushed().catch(() => undefined);
  }

  // -------------------------------------------------------------------------------------------
  // Authorization.

  /** The calling client (verified certificate, not revoked); throws `unauthenticated`. */
  private clientOf(call: { getAuthContext?: () => AuthContextLike | null }): ClientRecord {
    const der = peerCertificate(call);
    if (!der) throw new AuthError('no-identity', 'peer certificate');
    let clientId: string;
    let serial: string;
    try {
      clientId = clientIdOf(der);
      serial = serialOf(der);
    } catch {
      throw new AuthError('no-identity', 'peer certificate');
    }
    if (this.registry.revocations.isRevoked({ clientId, serial })) throw new AuthError('revoked', 'peer certificate');
    // The handshake checked the validity period; a long-lived connection must not outlive it.
    if (certificateExpiry(der) <= this.clock()) throw new AuthError('expired', 'peer certificate');
    const rec = this.registry.clients.get(clientId);
    if (!rec) throw new AuthError('no-identity', 'peer certificate');
    this.markSeen(clientId);
    return rec;
  }

  /** The client of a round call: certificate, then its single-use token. */
  private async roundCaller(call: { metadata: grpc.Metadata; getAuthContext?: () => AuthContextLike | null }): Promise<ClientRecord> {
    const rec = this.clientOf(call);
    const token = bearer(call.metadata);
    if (token === undefined) throw new AuthError('malformed', 'token');
    await this.verifier.verify(token, { clientId: rec.clientId });
    return rec;
  }

  private operatorOf(call: { getAuthContext?: () => AuthContextLike | null }): string {
    const der = peerCertificate(call);
    if (!der) throw new AuthError('no-identity', 'peer certificate');
    const name = operatorOf(der);
    if (name === undefined) throw new AegisError(ErrorCode.PermissionDenied, 'this call needs an operator certificate');
    if (this.registry.revocations.isRevoked({ serial: serialOf(der) })) throw new AuthError('revoked', 'peer certificate');
    return name;
  }

  // -------------------------------------------------------------------------------------------
  // SecAgg (clients).

  private mailbox(clientId: string): Mailbox<pb.ServerEnvelope> {
    let mb = this.mailboxes.get(clientId);
    if (!mb) this.mailboxes.set(clientId, (mb = new Mailbox()));
    return mb;
  }

  /** Client ids with an attached stream and no revocation. */
  connectedClients(): string[] {
    return [...this.mailboxes.entries()].filter(([id, mb]) => mb.attached && !this.registry.revocations.isRevoked({ clientId: id })).map(([id]) => id);
  }

  private secAggImpl() {
    return {
      subscribe: serverStream<pb.SubscribeRequest, pb.ServerEnvelope>((_req, call) => this.stream(call)),
      send: unary<pb.ClientEnvelope, pb.SendReply>(async (env, call) => {
        const rec = await this.roundCaller(call);
        const msg = fromClientEnvelope(env);
        const phase = await this.submit(rec.clientId, msg);
        return create(pb.SendReplySchema, { phase: phaseToProto(phase) });
      }),
      heartbeat: unary<pb.HeartbeatRequest, pb.HeartbeatReply>(async (req, call) => {
        const rec = await this.roundCaller(call);
        const r = this.activeRoundsOf(rec.clientId).find((x) => !req.round || sameRound(x.ref, { manifestHash: req.round.manifestHash, roundIndex: req.round.roundIndex }));
        return create(pb.HeartbeatReplySchema, { phase: r ? phaseToProto(r.host.phase) : 0 });
      }),
      acquireUpload: unary<pb.AcquireUploadRequest, pb.AcquireUploadReply>(async (_req, call) => {
        const rec = await this.roundCaller(call);
        const r = this.activeRoundsOf(rec.clientId).find((x) => x.host.phase === Phase.MaskedInput);
        if (!r) throw new AegisError(ErrorCode.WrongPhase, 'no round of this client takes masked inputs now');
        await r.gate.acquire(rec.clientId, (cb) => call.on('cancelled', cb));
        return create(pb.AcquireUploadReplySchema, { slots: r.gate.slots });
      }),
      fetchModel: serverStream<pb.FetchModelRequest, pb.ModelChunk>((req, call) => {
        this.clientOf(call);
        const job = [...this.jobs.values()].find((j) => Buffer.from(j.manifestHash).equals(Buffer.from(req.manifestHash)));
        if (!job?.training) throw new AegisError(ErrorCode.NotFound, 'no training job with this manifest hash runs here');
        return modelChunks(job.training.models.get(req.version));
      }),
      issueTokens: unary<pb.IssueTokensRequest, pb.IssueTokensReply>(async (req, call) => {
        const rec = this.clientOf(call);
        const count = req.count === 0 ? 1 : req.count;
        if (count > MAX_TOKENS_PER_CALL) throw new AegisError(ErrorCode.InvalidArgument, `at most ${MAX_TOKENS_PER_CALL} tokens per call`);
        const ttlMs = this.opts.tokenTtlMs;
        const issued = await Promise.all(Array.from({ length: count }, () => this.tokens.issue(rec.clientId, ttlMs === undefined ? {} : { ttlMs })));
        return create(pb.IssueTokensReplySchema, { tokens: issued.map((t) => t.token), expiresAtMs: BigInt(issued[0]!.claims.exp * 1000) });
      }),
    };
  }

  private async *stream(call: grpc.ServerWritableStream<pb.SubscribeRequest, pb.ServerEnvelope>): AsyncGenerator<pb.ServerEnvelope> {
    const rec = await this.roundCaller(call);
    const mailbox = this.mailbox(rec.clientId);
    const { messages, detach: detachMailbox } = mailbox.attach();
    for (const r of this.activeRoundsOf(rec.clientId)) r.host.back(rec.clientId);
    let detached = false;
    const detach = (): void => {
      if (detached) return;
      detached = true;
      detachMailbox();
      // A client that stays away past the grace period is gone: the round's phases stop waiting for it.
      const t = setTimeout(() => {
        if (mailbox.attached) return;
        for (const r of this.activeRoundsOf(rec.clientId)) r.host.lost(rec.clientId);
      }, this.opts.lostAfterMs ?? 2_000);
      t.unref();
    };
    // Headers now, so the client knows at once that it is subscribed (not at the first message).
    call.sendMetadata(new grpc.Metadata());
    // A round start can be lost with a stream that broke: re-send it while the round still waits
    // for this client's keys (a client ignores a start of the round it is already in).
    for (const r of this.activeRoundsOf(rec.clientId)) {
      if (r.host.awaitsAdvertisement(rec.clientId)) mailbox.push(r.startOf.get(rec.clientId) ?? r.startEnvelope);
    }
    call.on('cancelled', detach);
    call.on('close', detach);
    this.log?.debug({ client: rec.clientId }, 'client subscribed');
    try {
      yield* messages;
    } finally {
      detach();
      this.log?.debug({ client: rec.clientId }, 'client stream ended');
    }
  }

  private activeRoundsOf(clientId: string): RoundRecord[] {
    const out: RoundRecord[] = [];
    for (const job of this.jobs.values()) {
      const r = job.rounds[job.rounds.length - 1];
      if (r && !r.outcome && r.cohort.includes(clientId)) out.push(r);
    }
    for (const r of this.remoteRounds.values()) if (!r.outcome && r.cohort.includes(clientId)) out.push(r);
    return out;
  }

  /** Rounds on Redis another front end started, that this one serves too (with `redisRounds`). */
  private readonly remoteRounds = new Map<string, RoundRecord & { jobId: string }>();

  /** Follows a shared round another front end started: its cohort members connected here take part through this process. */
  private async attachRemoteRound(info: RedisRoundInfo): Promise<void> {
    const shared = this.opts.redisRounds!;
    const id = `${info.jobId}.r${info.index}`;
    if (this.remoteRounds.has(id) || this.jobs.get(info.jobId)?.rounds.some((r) => r.index === info.index)) return;
    const hosts = await Promise.all(info.groups.map((k) => shared.host(k)));
    const startEnvelopes = info.starts.map((b) => fromBinary(pb.ServerEnvelopeSchema, new Uint8Array(Buffer.from(b, 'base64'))));
    const startOf = new Map<string, pb.ServerEnvelope>();
    hosts.forEach((h, i) => h.meta.cohort.forEach((cid) => startOf.set(cid, startEnvelopes[i]!)));
    const cohort = hosts.flatMap((h) => h.meta.cohort).sort();
    const host: RoundHostLike = hosts.length === 1 ? hosts[0]! : new GroupedRoundHost(hosts.map((h) => ({ members: h.meta.cohort, host: h })));
    const start = fromEventEnvelope(startEnvelopes[0]!);
    const dim = start.type === 'round-start' ? start.params.dim : 0;
    const record: RoundRecord & { jobId: string } = {
      jobId: info.jobId,
      gate: UploadGate.forDim(dim, this.opts.uploadBudgetBytes ?? 96 * 1024 * 1024),
      startEnvelope: startEnvelopes[0]!,
      startOf,
      index: info.index,
      ref: { manifestHash: new Uint8Array(Buffer.from(info.manifestHash, 'hex')), roundIndex: info.index },
      host,
      cohort,
      startedAt: info.createdAt,
    };
    this.remoteRounds.set(id, record);
    this.wireRound(record, hosts[0]!.phase === Phase.AdvertiseKeys ? 'connected' : 'none');
    this.log?.info({ job: info.jobId, round: info.index, groups: hosts.length, frontEnd: shared.frontEndId }, 'following a round another front end started');
    void host.outcome.then((o) => {
      record.outcome = o;
      record.endedAt = this.clock();
      record.gate.open();
      this.announceOutcome(record, o.ok ? { type: 'round-outcome', round: record.ref, ok: true } : { type: 'round-outcome', round: record.ref, ok: false, reason: o.reason });
      for (const k of info.groups) shared.release(k);
    });
  }

  /**
   * Delivers a round's messages to its members' mailboxes (the advertise broadcast with each
   * member's certificate), and the round start: to every member (`all`), or — a front end
   * following another's round — only to members connected here (`connected`; the others get it
   * from theirs, or when they connect: see stream()), or to nobody (`none`).
   */
  private wireRound(record: RoundRecord, sendStart: 'all' | 'connected' | 'none'): void {
    const { host, cohort, startOf } = record;
    // The advertise broadcast carries each member's certificate: clients take identity keys from
    // certificates they check against their pinned CA, not from the coordinator's word.
    const certificates = new Map(cohort.map((id) => [id, new Uint8Array(Buffer.from(this.registry.clients.get(id)?.certificate ?? '', 'base64'))]));
    const withCertificates = (m: ServerMessage): ServerMessage =>
      m.type === 'advertise-broadcast' ? { ...m, entries: m.entries.map((e) => ({ ...e, certificate: certificates.get(e.clientId) ?? new Uint8Array(0) })) } : m;
    const envelopes = new WeakMap<object, pb.ServerEnvelope>();
    for (const id of cohort) {
      host.subscribe(id, (m) => {
        // One broadcast object goes to every member: encode it once.
        let env = envelopes.get(m);
        if (!env) envelopes.set(m, (env = toEventEnvelope(withCertificates(m))));
        this.opts.tap?.(id, m.type);
        this.mailbox(id).push(env);
      });
    }
    if (sendStart === 'none') return;
    for (const id of cohort) {
      if (sendStart === 'connected' && !this.mailbox(id).attached) continue;
      this.opts.tap?.(id, 'round-start');
      this.mailbox(id).push(startOf.get(id)!);
    }
  }

  /**
   * Routes one authenticated message to the round it belongs to and returns that round's phase.
   * With several rounds running for this client, the first that does not answer
   * session-mismatch takes it.
   */
  async submit(clientId: string, msg: ClientMessage): Promise<Phase> {
    const rounds = this.activeRoundsOf(clientId);
    if (rounds.length === 0) throw new AegisError(ErrorCode.WrongPhase, 'no round is running for this client');
    let last: unknown;
    for (const r of rounds) {
      if (msg.type === 'advertise-keys' && !sameRound(msg.round, r.ref)) {
        last = new AegisError(ErrorCode.SessionMismatch, 'the message names another round');
        continue;
      }
      try {
        await r.host.submit(clientId, msg);
        if (msg.type === 'masked-input') r.gate.release(clientId);
        return r.host.phase;
      } catch (err) {
        if (msg.type === 'masked-input') r.gate.release(clientId);
        if (isAegisError(err, ErrorCode.SessionMismatch) && rounds.length > 1) {
          last = err;
          continue;
        }
        this.log?.info({ client: clientId, type: msg.type, code: isAegisError(err) ? err.code : 'internal' }, 'message refused');
        throw err;
      }
    }
    throw last;
  }

  // -------------------------------------------------------------------------------------------
  // Enrollment.

  private enrollmentImpl() {
    return {
      enroll: unary<enroll.EnrollRequest, enroll.EnrollReply>(async (req) => {
        if (this.opts.offlineCa) return this.opts.offlineCa.enroll(req, { registry: this.registry, persist: () => this.persist(), clock: this.clock });
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
          const cert = await issueClientCertificate(this.ca, req.csrDer, clientId, { bindings: this.registry.bindings, ...this.certTtl() });
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
          return create(enroll.EnrollReplySchema, { certificateDer: cert.certificateDer, caCertificateDer: this.ca.certificateDer, clientId });
        } catch (err) {
          this.registry.invites.release(req.token);
          throw err;
        }
      }),
      renew: unary<enroll.RenewRequest, enroll.RenewReply>(async (req, call) => {
        const rec = this.clientOf(call);
        const { clientId, publicKey } = await inspectCsr(req.csrDer);
        if (clientId !== rec.clientId) throw new AegisError(ErrorCode.Unauthenticated, 'the CSR names another client than the certificate');
        const newKey = Buffer.from(publicKey).toString('base64url');
        // Rekey (time-based identity rotation): a new key for the same id, authenticated by the
        // caller's valid, unrevoked certificate (clientOf checked it); the old serial is revoked.
        const rekey = req.rekey && newKey !== rec.publicKey;
        if (!rekey && newKey !== rec.publicKey) {
          throw new AegisError(ErrorCode.KeyAlreadyBound, 'renewal must keep the enrolled identity key');
        }
        const callerSerial = serialOf(peerCertificate(call)!);
        // Checked again after the CSR's inspection (an await): a renewal or rekey of this client
        // that finished meanwhile may have revoked the caller. One renewal per client at a time,
        // so no two requests certify keys from the same state (two rekeys would both succeed).
        if (this.registry.revocations.isRevoked({ clientId, serial: callerSerial })) throw new AuthError('revoked', 'peer certificate');
        if (this.renewals.has(clientId)) throw new AegisError(ErrorCode.Unavailable, 'a renewal of this client is under way; retry later');
        this.renewals.add(clientId);
        let cert: Awaited<ReturnType<typeof issueClientCertificate>>;
        try {
          cert = await issueClientCertificate(this.ca, req.csrDer, clientId, { bindings: this.registry.bindings, ...this.certTtl() });
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
        return create(enroll.RenewReplySchema, { certificateDer: cert.certificateDer, caCertificateDer: this.ca.certificateDer });
      }),
    };
  }

  private certTtl(): { ttlMs?: number } {
    return this.opts.clientCertTtlMs === undefined ? {} : { ttlMs: this.opts.clientCertTtlMs };
  }

  // -------------------------------------------------------------------------------------------
  // Admin (operators).

  /** A one-time enrollment token (also used in-process by tests and `simulate`). */
  async createInvite(opts: { ttlMs?: number; clientId?: string } = {}): Promise<{ token: string; expiresAt: number }> {
    const inv = this.registry.invites.createInvite(opts);
    await this.persist();
    return inv;
  }

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
    this.mailboxes.get(clientId)?.close(new AuthError('revoked', 'peer certificate'));
    this.log?.warn({ client: clientId, reason: info.reason }, 'client revoked');
    return rec.revokedAt;
  }

  /** Notes an authenticated call of `clientId`: its last-seen time, and the end of a suspicion. */
  private markSeen(clientId: string): void {
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
  clientStatus(clientId: string): 'active' | 'suspected-lost' | 'revoked' {
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
  sweepClients(): string[] {
    const now = this.clock();
    const lostAfter = this.opts.clientsLostAfterMs ?? DEFAULT_CLIENTS_LOST_AFTER_MS;
    const flagged: string[] = [];
    for (const rec of this.registry.clients.values()) {
      const id = rec.clientId;
      if (this.clientStatus(id) === 'revoked') {
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

  /**
   * The sweep; with shared rounds (several front ends), a client whose stream is open on another
   * front end counts as seen first (its calls go there, not here).
   */
  private async sweepClientsEverywhere(): Promise<void> {
    const shared = this.opts.redisRounds;
    if (shared) {
      const present = await shared.presence().catch(() => [] as string[]);
      for (const id of present) if (this.registry.clients.has(id) && !this.registry.revocations.isRevoked({ clientId: id })) this.markSeen(id);
    }
    if (!this.closing) this.sweepClients();
  }

  /** Copies the last-seen times, rounded down to the minute, into the registry and persists it (at most once a minute unless `force`). */
  private flushLastSeen(force: boolean): Promise<void> {
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

  /**
   * A CRL of every revoked serial, signed now by the coordinator CA, valid 7 days
   * (coordinator/auth/crl.ts); `failed-precondition` without the CA key (offline CA).
   */
  async signedCrl(): Promise<{ pem: string; der: Uint8Array; thisUpdate: number; nextUpdate: number; crlNumber: number; entries: number }> {
    if (this.opts.offlineCa) return this.offlineCrl();
    const thisUpdate = this.clock();
    const nextUpdate = thisUpdate + CRL_VALIDITY_MS;
    const entries = this.crlEntries(thisUpdate);
    // Increasing across restarts too (it is at least the time in seconds).
    this.crlNumber = Math.max(this.crlNumber + 1, Math.floor(thisUpdate / 1000));
    const crl = await signCrl(requireCaKey(this.ca), entries, { thisUpdate, nextUpdate, crlNumber: this.crlNumber });
    return { pem: crl.pem, der: crl.der, thisUpdate, nextUpdate, crlNumber: this.crlNumber, entries: entries.length };
  }

  /**
   * With an offline CA the coordinator cannot sign: it serves the latest CRL the CA signed (from
   * DATA_DIR/ca-signed, checked against ca.pem); `failed-precondition` until there is one.
   */
  private async offlineCrl(): Promise<{ pem: string; der: Uint8Array; thisUpdate: number; nextUpdate: number; crlNumber: number; entries: number }> {
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

  private adminImpl() {
    return {
      createInvite: unary<admin.CreateInviteRequest, admin.CreateInviteReply>(async (req, call) => {
        const operator = this.operatorOf(call);
        const inv = await this.createInvite({
          ...(req.ttlSeconds > 0 ? { ttlMs: req.ttlSeconds * 1000 } : {}),
          ...(req.clientId ? { clientId: req.clientId } : {}),
        });
        this.log?.info({ operator, forClient: req.clientId || undefined }, 'invite created');
        return create(admin.CreateInviteReplySchema, { token: inv.token, expiresAtMs: BigInt(inv.expiresAt) });
      }),
      listClients: unary<admin.ListClientsRequest, admin.ListClientsReply>((_req, call) => {
        this.operatorOf(call);
        this.sweepClients();
        const clients = [...this.registry.clients.values()]
          .sort((a, b) => (a.clientId < b.clientId ? -1 : 1))
          .map((c) => {
            const status = this.clientStatus(c.clientId);
            const seen = this.lastSeenOf(c.clientId);
            return create(admin.ClientInfoSchema, {
              clientId: c.clientId,
              enrolledAtMs: BigInt(c.enrolledAt),
              certificateExpiresAtMs: BigInt(c.certificateExpiresAt),
              revoked: status === 'revoked',
              revocationReason: status === 'revoked' ? revocationCodeOf(c) : '',
              revocationDetail: revocationDetailOf(c),
              revokedAtMs: BigInt(c.revokedAt ?? 0),
              ...(seen === undefined ? {} : { lastSeenAtMs: BigInt(seen) }),
              status: status === 'revoked' ? admin.ClientStatus.REVOKED : status === 'suspected-lost' ? admin.ClientStatus.SUSPECTED_LOST : admin.ClientStatus.ACTIVE,
            });
          });
        return create(admin.ListClientsReplySchema, { clients });
      }),
      revokeClient: unary<admin.RevokeClientRequest, admin.RevokeClientReply>(async (req, call) => {
        const operator = this.operatorOf(call);
        const at = await this.revoke(req.clientId, parseRevocationReason(req.reason), req.detail);
        const rec = this.registry.clients.get(req.clientId)!;
        const serials = certificateSerialsOf(rec, Number.NEGATIVE_INFINITY).filter((s) => this.registry.revocations.isRevoked({ serial: s }));
        this.log?.warn({ operator, client: req.clientId }, 'revocation by operator');
        return create(admin.RevokeClientReplySchema, { revokedAtMs: BigInt(at), reason: revocationCodeOf(rec), serials });
      }),
      getCrl: unary<admin.GetCrlRequest, admin.GetCrlReply>(async (_req, call) => {
        this.operatorOf(call);
        const crl = await this.signedCrl();
        return create(admin.GetCrlReplySchema, { pem: crl.pem, thisUpdateMs: BigInt(crl.thisUpdate), nextUpdateMs: BigInt(crl.nextUpdate), crlNumber: BigInt(crl.crlNumber), entries: crl.entries });
      }),
      launchRound: unary<admin.LaunchRoundRequest, admin.LaunchRoundReply>(async (req, call) => {
        const operator = this.operatorOf(call);
        const r = await this.requestLaunch(req.manifestJson, {
          gatherMs: req.gatherMs,
          ...(req.initialWeights.length > 0 ? { initialWeights: req.initialWeights } : {}),
          ...(req.signedManifest.length > 0 ? { signedManifest: req.signedManifest } : {}),
        });
        this.log?.info({ operator, job: r.jobId, round: r.roundIndex, cohort: r.cohort.length }, 'round launched');
        return create(admin.LaunchRoundReplySchema, { jobId: r.jobId, manifestHash: r.manifestHash, roundIndex: r.roundIndex, cohort: r.cohort, queuedAs: r.queued ?? '' });
      }),
      roundStatus: unary<admin.RoundStatusRequest, admin.RoundStatusReply>(async (req, call) => {
        this.operatorOf(call);
        return this.statusAnywhere(req.jobId, req.roundIndex);
      }),
      roundResult: unary<admin.RoundResultRequest, admin.RoundResultReply>(async (req, call) => {
        this.operatorOf(call);
        return this.resultAnywhere(req.jobId, req.roundIndex);
      }),
      listRounds: unary<admin.ListRoundsRequest, admin.ListRoundsReply>(async (_req, call) => {
        this.operatorOf(call);
        return create(admin.ListRoundsReplySchema, { jobs: await this.listJobsEverywhere() });
      }),
      cancelRound: unary<admin.CancelRoundRequest, admin.CancelRoundReply>(async (req, call) => {
        const operator = this.operatorOf(call);
        const reason = req.reason.trim().slice(0, 200);
        const c = await this.cancelAnywhere(req.jobId, reason ? `cancelled by operator ${operator}: ${reason}` : `cancelled by operator ${operator}`);
        this.log?.warn({ operator, job: req.jobId, round: c.roundIndex }, 'cancellation by operator');
        return create(admin.CancelRoundReplySchema, { jobId: req.jobId, roundIndex: c.roundIndex, phase: phaseToProto(c.phase), cancelledAtMs: BigInt(c.at) });
      }),
      issueDashboardToken: unary<admin.IssueDashboardTokenRequest, admin.IssueDashboardTokenReply>((req, call) => {
        const operator = this.operatorOf(call);
        const t = this.issueDashboardToken(req.ttlSeconds > 0 ? req.ttlSeconds * 1000 : undefined);
        this.log?.info({ operator, expiresAt: new Date(t.expiresAt).toISOString() }, 'dashboard login token issued');
        return create(admin.IssueDashboardTokenReplySchema, { token: t.token, expiresAtMs: BigInt(t.expiresAt), url: t.url });
      }),
      fetchModel: serverStream<admin.FetchJobModelRequest, pb.ModelChunk>((req, call) => {
        this.operatorOf(call);
        const job = this.jobs.get(req.jobId);
        if (!job) throw new AegisError(ErrorCode.NotFound, `no job '${req.jobId}' has run here`);
        if (!job.training) throw new AegisError(ErrorCode.NotFound, `job '${req.jobId}' is not a training job`);
        const { models } = job.training;
        return modelChunks(req.version === undefined ? models.latest : models.get(req.version), job.manifestJson);
      }),
    };
  }

  // -------------------------------------------------------------------------------------------
  // Rounds.

  /**
   * Launches a job. A plain job runs one round per launch (its next one). A training job
   * (manifest with `model` and `training`) is launched once with its initial weights, whose
   * SHA-256 must match the manifest; the coordinator then runs its rounds one after another,
   * applying each round's weighted mean update to the global model (FedAvg).
   *
   * A round waits up to `gatherMs` for a full cohort of connected clients, invites
   * min(cohort, connected) of them (at least t + 1 and 3), and starts its phase clock.
   */
  async launch(
    manifestJsonIn: Uint8Array,
    opts: { gatherMs?: number; initialWeights?: Uint8Array; signedManifest?: Uint8Array; roundIndex?: number } = {},
  ): Promise<{ jobId: string; manifestHash: Uint8Array; roundIndex: number; cohort: string[] }> {
    const signer: { signer?: ManifestSigner } = {};
    const manifestJson = await this.verifiedManifestBytes(manifestJsonIn, opts.signedManifest, signer);
    const { manifest, hash } = parseManifest(manifestJson, new Date(this.clock()));
    const existing = this.jobs.get(manifest.jobId);
    if (existing && Buffer.compare(Buffer.from(existing.manifestHash), Buffer.from(hash)) !== 0) {
      throw new AegisError(ErrorCode.AlreadyExists, `job '${manifest.jobId}' already runs another manifest`);
    }
    const gatherMs = Math.min(opts.gatherMs ?? 0, 3_600_000);
    if (isTrainingManifest(manifest)) {
      if (existing) throw new AegisError(ErrorCode.AlreadyExists, `training job '${manifest.jobId}' was launched already; the coordinator runs its rounds (aegis round status ${manifest.jobId})`);
      if (!opts.initialWeights || opts.initialWeights.length === 0) throw new AegisError(ErrorCode.InvalidArgument, 'a training job needs its initial weights (aegis round launch --weights FILE)');
      const weights = weightsOf(opts.initialWeights, manifest.round.dim);
      const dataset = manifest.validation?.dataset;
      if (dataset !== undefined && !this.opts.validationSets?.[dataset]) {
        throw new AegisError(ErrorCode.NotFound, `this coordinator has no validation set '${dataset}' (coordinator start --validation-data ${dataset}=FILE.jsonl)`);
      }
      if (Buffer.from(sha256(opts.initialWeights)).toString('hex') !== manifest.model.initialWeightsSha256) {
        throw new AegisError(ErrorCode.HashMismatch, "the initial weights do not match the manifest's model.initialWeightsSha256");
      }
      const models = new ModelStore(manifest.jobId, this.clock);
      models.add(weights, { clients: 0, totalWeight: 0 });
      const job: Job = { ...newJob(manifest, manifestJson, hash, opts.signedManifest), ...signer, training: newTrainingProgress(models, gatherMs) };
      const started = await this.startRound(job, gatherMs);
      // With a validation set, version 0 is measured too (the dashboard's chart starts at round 0).
      if (dataset !== undefined) void this.measureModel(job, models.latest).catch(() => undefined);
      // Only a job that started is written out: a refused launch leaves nothing behind.
      if (this.opts.dataDir !== undefined) models.persistTo(this.opts.dataDir);
      return started;
    }
    const last = existing?.rounds[existing.rounds.length - 1];
    if (last && !last.outcome) throw new AegisError(ErrorCode.WrongPhase, `round ${last.index} of job '${manifest.jobId}' is still running`);
    // A queued launch names its round (the launch queue numbers a job's rounds across processes).
    const index = opts.roundIndex ?? existing?.rounds.length ?? 0;
    if (index >= manifest.rounds) throw new AegisError(ErrorCode.WrongPhase, `job '${manifest.jobId}' has run all its ${manifest.rounds} rounds`);
    if (existing?.rounds.some((r) => r.index === index)) throw new AegisError(ErrorCode.AlreadyExists, `round ${index} of job '${manifest.jobId}' has run here already`);
    const job: Job = existing ?? { ...newJob(manifest, manifestJson, hash, opts.signedManifest), ...signer };
    return this.startRound(job, gatherMs, 0, index);
  }

  /**
   * With a launch queue (`--redis`): checks everything a launch can be refused for — signature,
   * expiry, parameters, initial weights — then queues it for whichever coordinator process takes
   * it. Without one, launches here (`launch`).
   */
  async requestLaunch(
    manifestJsonIn: Uint8Array,
    opts: { gatherMs?: number; initialWeights?: Uint8Array; signedManifest?: Uint8Array } = {},
  ): Promise<{ jobId: string; manifestHash: Uint8Array; roundIndex: number; cohort: string[]; queued?: string }> {
    const queue = this.opts.launchQueue;
    if (!queue) return this.launch(manifestJsonIn, opts);
    const manifestJson = await this.verifiedManifestBytes(manifestJsonIn, opts.signedManifest);
    const { manifest, hash } = parseManifest(manifestJson, new Date(this.clock()));
    const training = isTrainingManifest(manifest);
    if (training) {
      if (!opts.initialWeights || opts.initialWeights.length === 0) throw new AegisError(ErrorCode.InvalidArgument, 'a training job needs its initial weights (aegis round launch --weights FILE)');
      weightsOf(opts.initialWeights, manifest.round.dim);
      if (Buffer.from(sha256(opts.initialWeights)).toString('hex') !== manifest.model.initialWeightsSha256) {
        throw new AegisError(ErrorCode.HashMismatch, "the initial weights do not match the manifest's model.initialWeightsSha256");
      }
    }
    const q = await queue.enqueue({
      jobId: manifest.jobId,
      training,
      rounds: manifest.rounds,
      manifestJson: manifestJsonIn,
      gatherMs: Math.min(opts.gatherMs ?? 0, 3_600_000),
      ...(opts.signedManifest ? { signedManifest: opts.signedManifest } : {}),
      ...(training && opts.initialWeights ? { initialWeights: opts.initialWeights } : {}),
    });
    this.log?.info({ job: manifest.jobId, round: q.roundIndex, queued: q.id }, 'launch queued');
    return { jobId: manifest.jobId, manifestHash: hash, roundIndex: q.roundIndex, cohort: [], queued: q.id };
  }

  /**
   * Runs one launch taken from the queue and resolves when it has ended. A delivery of a launch
   * this process already ran (or runs) is not started again: it waits for and reports that run.
   */
  private async runQueuedLaunch(task: LaunchTask): Promise<{ ok: boolean; state: string; survivors?: number }> {
    const known = this.jobs.get(task.jobId);
    const existing = known?.training ? known.rounds[0] : known?.rounds.find((r) => r.index === task.roundIndex);
    if (!existing) {
      await this.launch(task.manifestJson, {
        gatherMs: task.gatherMs,
        ...(task.initialWeights ? { initialWeights: task.initialWeights } : {}),
        ...(task.signedManifest ? { signedManifest: task.signedManifest } : {}),
        ...(known?.training || task.initialWeights ? {} : { roundIndex: task.roundIndex }),
      });
    } else {
      this.log?.warn({ job: task.jobId, round: task.roundIndex, attempt: task.attempt }, 'launch delivered again: not started twice');
    }
    const job = this.jobs.get(task.jobId)!;
    if (job.training) {
      const state = await this.trainingFinished(task.jobId);
      return { ok: state === 'completed', state };
    }
    const r = job.rounds.find((x) => x.index === task.roundIndex)!;
    const o = await r.host.outcome;
    if (!o.ok && this.closing) throw new AegisError(ErrorCode.Unavailable, 'this coordinator shut down during the round');
    return o.ok ? { ok: true, state: 'completed', survivors: o.survivors.length } : { ok: false, state: o.reason };
  }

  /**
   * The manifest bytes to run. With a registry, only a manifest signed by a publisher it lists
   * (and not revoked), unexpired, is taken; its signed payload is the manifest. Without one (the
   * embedded default), a signed manifest cannot be checked and is refused.
   */
  private async verifiedManifestBytes(manifestJson: Uint8Array, signed: Uint8Array | undefined, out?: { signer?: ManifestSigner }): Promise<Uint8Array> {
    const dir = this.opts.registryDir;
    if (dir === undefined) {
      if (signed) throw new AegisError(ErrorCode.UnknownKey, 'this coordinator has no publisher registry to check a signed manifest against (coordinator start --registry DIR)');
      return manifestJson;
    }
    if (!signed) throw new AegisError(ErrorCode.UnknownKey, 'this coordinator takes only signed manifests (aegis manifest sign; aegis round launch job.dsse.json)');
    const now = new Date(this.clock());
    const snapshot = await readSnapshot(dir);
    const chain = verifyRootHistory(undefined, snapshot.roots, now);
    const root = chain[chain.length - 1]!.doc;
    const publishers = verifyPublishers(root, snapshot.publishers, now);
    const verified = verifySignedManifest(signed, (id) => publisherKey(publishers, id), { now });
    const keyId = verified.signers[0];
    if (out && keyId !== undefined) out.signer = { keyId, publisher: Object.hasOwn(publishers.publishers, keyId) ? (publishers.publishers[keyId]?.name ?? null) : null };
    return verified.manifestJson;
  }

  private trustImpl() {
    return {
      getRegistry: unary<trust.GetRegistryRequest, trust.RegistryReply>(async () => {
        const dir = this.opts.registryDir;
        if (dir === undefined) throw new AegisError(ErrorCode.NotFound, 'this coordinator serves no publisher registry');
        return create(trust.RegistryReplySchema, { snapshot: snapshotBytes(await readSnapshot(dir)) });
      }),
    };
  }

  /**
   * Gathers a cohort and starts the job's next round. The job is registered once its first
   * round starts (a launch refused for too few clients leaves nothing behind).
   */
  private async startRound(job: Job, gatherMs: number, minimumWaitMs = 0, roundIndex?: number): Promise<{ jobId: string; manifestHash: Uint8Array; roundIndex: number; cohort: string[] }> {
    const { manifest, manifestHash: hash } = job;
    const { cohort: n, threshold: t } = manifest.round;
    // Phase 0 needs more than t and at least 3 clients (with 2, each would learn the other's input).
    const needed = Math.max(t + 1, 3);
    const full = this.clock() + gatherMs;
    const enough = this.clock() + Math.max(gatherMs, minimumWaitMs);
    // With shared rounds, clients connected to any front end on the Redis count.
    const available = async (): Promise<string[]> => {
      if (!this.opts.redisRounds) return this.connectedClients();
      const ids = await this.opts.redisRounds.presence().catch(() => this.connectedClients());
      return ids.filter((id) => this.registry.clients.has(id) && !this.registry.revocations.isRevoked({ clientId: id }));
    };
    for (;;) {
      const count = (await available()).length;
      const now = this.clock();
      if (count >= n || (now >= full && count >= needed) || now >= enough || this.closing) break;
      await new Promise((r) => setTimeout(r, this.opts.redisRounds ? 200 : 50));
    }
    if (this.closing) throw new AegisError(ErrorCode.Unavailable, 'the coordinator is shutting down');
    const connected = await available();
    if (connected.length < needed) {
      throw new AegisError(ErrorCode.TooFewClients, `${connected.length} clients connected, the round needs at least ${needed} (t + 1, and 3 or more)`);
    }
    // A uniformly random cohort among the connected clients.
    for (let i = connected.length - 1; i > 0; i--) {
      const j = randomInt(i + 1);
      [connected[i], connected[j]] = [connected[j]!, connected[i]!];
    }
    const cohort = connected.slice(0, n).sort();
    const members = new Map(cohort.map((id) => [id, new Uint8Array(Buffer.from(this.registry.clients.get(id)!.publicKey, 'base64url'))]));
    if (!this.jobs.has(job.jobId)) this.jobs.set(job.jobId, job);
    const index = roundIndex ?? job.rounds.length;
    const ref: RoundRef = { manifestHash: hash, roundIndex: index };
    const gate = UploadGate.forDim(manifest.round.dim, this.opts.uploadBudgetBytes ?? 96 * 1024 * 1024);
    // Aggregation groups (round.groupSize): a larger cohort runs as several SecAgg(+) instances,
    // split by a permutation fixed by the manifest hash and round index.
    const groupSize = manifest.round.groupSize;
    const split = groupSize !== undefined && cohort.length > groupSize ? planGroups(cohort, groupSize, `${Buffer.from(hash).toString('hex')}:${index}`) : [cohort];
    const groupParams = split.map((g) => (split.length > 1 ? groupRoundParams(manifest.round, g.length) : manifest.round));
    const hostFor = (groupMembers: string[], params: RoundParams): RoundHost =>
      new RoundHost({
        params,
        round: ref,
        identityOf: (id) => members.get(id),
        deadlines: manifest.deadlines,
        invited: groupMembers.length,
        cohort: groupMembers,
        ...(this.opts.unmaskQueue
          ? { unmask: (jobs, words) => this.opts.unmaskQueue!.dispatch(`${job.jobId}.r${index}.g${split.indexOf(groupMembers)}`, jobs, words, this.opts.unmaskParts ?? 2) }
          : {}),
        // Once the masked-input phase is over, nobody waits for a slot any more.
        onPhase: (p) => p !== Phase.MaskedInput && gate.open(),
        onPhaseClosed: (e) => {
          this.opts.metrics?.phaseClosed(e);
          if (e.phase === Phase.Unmasking) this.opts.metrics?.unmaskTime(e.seconds);
          this.log?.debug({ job: job.jobId, round: index, ...(split.length > 1 ? { group: split.indexOf(groupMembers) } : {}), phase: e.phase, next: e.next, clients: e.clients, expected: e.expected, ms: Math.round(e.seconds * 1000) }, 'phase closed');
        },
      });
    let host: RoundHostLike;
    const startEnvelopes = this.startEnvelopes(job, ref, groupParams);
    const shared = this.opts.redisRounds;
    if (shared) {
      const roundId = `${job.jobId}.r${index}`;
      const keys = split.map((_, i) => (split.length === 1 ? roundId : `${roundId}.g${i}`));
      const hashHex = Buffer.from(hash).toString('hex');
      const createdAt = this.clock();
      const info: RedisRoundInfo = { v: 1, jobId: job.jobId, index, manifestHash: hashHex, groups: keys, starts: startEnvelopes.map((e) => Buffer.from(toBinary(pb.ServerEnvelopeSchema, e)).toString('base64')), owner: shared.frontEndId, createdAt };
      const metas: RedisRoundMeta[] = split.map((g, i) => ({
        v: 1,
        key: keys[i]!,
        jobId: job.jobId,
        index,
        group: i,
        groups: split.length,
        params: groupParams[i]!,
        manifestHash: hashHex,
        deadlines: manifest.deadlines,
        cohort: g,
        identities: Object.fromEntries(g.map((id) => [id, this.registry.clients.get(id)!.publicKey])),
        owner: shared.frontEndId,
        createdAt,
      }));
      const { hosts, created } = await shared.create(info, metas);
      if (!created) this.log?.warn({ job: job.jobId, round: index }, 'the round exists on the Redis already: following it instead of starting it again');
      host = hosts.length === 1 ? hosts[0]! : new GroupedRoundHost(hosts.map((h) => ({ members: h.meta.cohort, host: h })));
      if (!created) cohort.splice(0, cohort.length, ...hosts.flatMap((h) => h.meta.cohort).sort());
    } else {
      host = split.length === 1 ? hostFor(cohort, manifest.round) : new GroupedRoundHost(split.map((g, i) => ({ members: g, host: hostFor(g, groupParams[i]!) })));
    }
    if (split.length > 1) this.log?.info({ job: job.jobId, round: index, groups: split.length, sizes: split.map((g) => g.length) }, 'round split into aggregation groups');
    this.opts.metrics?.roundStarted();
    const startOf = new Map<string, pb.ServerEnvelope>();
    split.forEach((g, i) => g.forEach((id) => startOf.set(id, startEnvelopes[i]!)));
    const record: RoundRecord = { gate, startEnvelope: startEnvelopes[0]!, startOf, index, ref, host, cohort, startedAt: this.clock() };
    if (shared) void host.outcome.then(() => gate.open());
    job.rounds.push(record);
    this.wireRound(record, 'all');
    void host.outcome.then((o) => this.finishRound(job, record, o));
    return { jobId: job.jobId, manifestHash: hash, roundIndex: index, cohort };
  }

  /** Each group's RoundStart: its members are sent their group's parameters (clients derive and check them). */
  private startEnvelopes(job: Job, ref: RoundRef, groupParams: readonly RoundParams[]): pb.ServerEnvelope[] {
    return groupParams.map((params) => {
      const start: ServerEvent = { type: 'round-start', round: ref, params, deadlines: job.manifest.deadlines, manifestJson: job.manifestJson };
      if (job.signedManifest) start.signedManifest = job.signedManifest;
      if (job.training) {
        const { version, sha256: digest } = job.training.models.latest;
        start.model = { version, sha256: digest };
      }
      return toEventEnvelope(start);
    });
  }

  private finishRound(job: Job, r: RoundRecord, o: RoundOutcome): void {
    r.outcome = o;
    r.endedAt = this.clock();
    setImmediate(() => void this.publishJobs());
    const seconds = (r.endedAt - r.startedAt) / 1000;
    if (o.ok) this.opts.metrics?.roundFinished({ outcome: 'completed', seconds });
    else this.opts.metrics?.roundFinished({ outcome: o.reason === 'cancelled' ? 'cancelled' : 'aborted', ...(o.reason === 'cancelled' ? {} : { reason: o.reason }), phase: o.at, seconds });
    // A training round checked on a validation set is announced once the check has run.
    const deferred = o.ok && job.training !== undefined && job.manifest.validation?.dataset !== undefined;
    if (!deferred) this.announceOutcome(r, o.ok ? { type: 'round-outcome', round: r.ref, ok: true } : { type: 'round-outcome', round: r.ref, ok: false, reason: o.reason });
    if (o.ok) this.log?.info({ job: job.jobId, round: r.index, survivors: o.survivors.length, ms: this.clock() - r.startedAt }, 'round completed');
    else this.log?.warn({ job: job.jobId, round: r.index, reason: o.reason, at: o.at }, 'round aborted');
    if (job.training) void this.advanceTraining(job, job.training, r, o);
  }

  private announceOutcome(r: RoundRecord, ev: ServerEvent): void {
    const env = toEventEnvelope(ev);
    for (const id of r.cohort) {
      this.opts.tap?.(id, 'round-outcome');
      this.mailbox(id).push(env);
    }
  }

  /**
   * The poisoning check: accuracy on the manifest's validation set of the latest published
   * model and of the candidate. Returns undefined when the job names no validation set.
   */
  private async validationCheck(job: Job, t: TrainingProgress, candidate: Float32Array): Promise<{ previous: number; accuracy: number; loss: number; examples: number } | undefined> {
    const { manifest } = job;
    const dataset = manifest.validation?.dataset;
    if (dataset === undefined || !manifest.model || !manifest.training) return undefined;
    const set = this.opts.validationSets?.[dataset];
    if (!set) throw new AegisError(ErrorCode.NotFound, `validation set '${dataset}' is gone`);
    const examples = await set.trainingExamples({ features: manifest.training.features, label: manifest.training.label });
    const spec = manifest.model;
    const lossFn = manifest.training.loss;
    const latest = t.models.latest;
    if (latest.validationAccuracy === undefined || latest.validationLoss === undefined) {
      const e = await evaluateModel({ spec, loss: lossFn, weights: latest.weights, examples });
      latest.validationAccuracy ??= e.accuracy;
      latest.validationLoss ??= e.loss;
    }
    const { accuracy, loss } = await evaluateModel({ spec, loss: lossFn, weights: candidate, examples });
    return { previous: latest.validationAccuracy, accuracy, loss, examples: examples.count };
  }

  /** Measures a model version on the job's validation set (accuracy and loss), if not yet done. */
  private async measureModel(job: Job, v: ModelVersionRecord): Promise<void> {
    const { manifest } = job;
    const dataset = manifest.validation?.dataset;
    if (dataset === undefined || !manifest.model || !manifest.training || (v.validationAccuracy !== undefined && v.validationLoss !== undefined)) return;
    const set = this.opts.validationSets?.[dataset];
    if (!set) return;
    const examples = await set.trainingExamples({ features: manifest.training.features, label: manifest.training.label });
    const e = await evaluateModel({ spec: manifest.model, loss: manifest.training.loss, weights: v.weights, examples });
    v.validationAccuracy ??= e.accuracy;
    v.validationLoss ??= e.loss;
  }

  /**
   * After a training round: a completed round's weighted mean update makes the next model
   * version; an aborted one changes nothing. Then the next round starts, until the manifest's
   * rounds are done or too many rounds in a row aborted.
   */
  private async advanceTraining(job: Job, t: TrainingProgress, r: RoundRecord, o: RoundOutcome): Promise<void> {
    if (t.state !== 'running') {
      if (o.ok && job.manifest.validation?.dataset !== undefined) this.announceOutcome(r, { type: 'round-outcome', round: r.ref, ok: true });
      return;
    }
    const { manifest } = job;
    const maxAborted = manifest.training?.maxAbortedRounds ?? 3;
    const fail = (detail: string): void => {
      t.state = 'failed';
      t.detail = detail;
      this.log?.warn({ job: job.jobId, completed: t.completed, aborted: t.aborted }, `training job failed: ${detail}`);
      t.settle('failed');
    };
    if (o.ok) {
      let flagged = false;
      try {
        const { result } = o;
        const next = applyWeightedMean(t.models.latest.weights, result);
        const check = await this.validationCheck(job, t, next);
        const gate = manifest.validation?.gate ?? 1;
        // Beyond the gate plus the validation set's sampling noise (two standard errors).
        if (check && check.previous - check.accuracy > gate + 2 * Math.sqrt(0.25 / check.examples)) {
          // Held back: not published; the next round starts from the same version.
          flagged = true;
          t.flagged.push(r.index);
          t.aborted++;
          t.abortedInARow++;
          this.log?.warn({ job: job.jobId, round: r.index, previous: check.previous, accuracy: check.accuracy, gate }, 'model held back: validation accuracy dropped beyond the gate (suspected poisoning)');
        } else {
          const v = t.models.add(next, { roundIndex: r.index, clients: o.survivors.length, totalWeight: result.totalWeight });
          if (check) {
            v.validationAccuracy = check.accuracy;
            v.validationLoss = check.loss;
          }
          t.completed++;
          t.abortedInARow = 0;
          this.log?.info({ job: job.jobId, round: r.index, version: v.version, clients: v.clients }, 'model updated');
        }
      } catch (err) {
        if (manifest.validation?.dataset !== undefined) this.announceOutcome(r, { type: 'round-outcome', round: r.ref, ok: true });
        return fail(`round ${r.index}'s sum could not be applied (${isAegisError(err) ? err.code : 'internal'})`);
      }
      if (manifest.validation?.dataset !== undefined) this.announceOutcome(r, { type: 'round-outcome', round: r.ref, ok: true, ...(flagged ? { poisoningFlagged: true } : {}) });
      if (flagged && t.abortedInARow > maxAborted) return fail(`round ${r.index}'s model failed the validation gate (suspected poisoning); ${t.abortedInARow} rounds in a row without a published model`);
    } else {
      t.aborted++;
      t.abortedInARow++;
      if (t.abortedInARow > maxAborted) return fail(`${t.abortedInARow} rounds in a row aborted (last: ${o.reason})`);
    }
    if (t.completed >= manifest.rounds) {
      t.state = 'completed';
      this.log?.info({ job: job.jobId, rounds: t.completed, aborted: t.aborted, version: t.models.latest.version }, 'training job completed');
      t.settle('completed');
      return;
    }
    if (this.closing) return fail('the coordinator shut down');
    try {
      // Clients that dropped out may be reconnecting: wait for the threshold up to the advertise deadline.
      await this.startRound(job, t.gatherMs, manifest.deadlines.advertiseMs);
    } catch (err) {
      fail(`the next round could not start: ${isAegisError(err) ? err.message : 'internal error'}`);
    }
  }

  /** Waits until a training job completes or fails (tests, demo). */
  async trainingFinished(jobId: string): Promise<'completed' | 'failed'> {
    const job = this.jobs.get(jobId);
    if (!job?.training) throw new AegisError(ErrorCode.NotFound, `no training job '${jobId}' runs here`);
    return job.training.finished.then((s) => (s === 'failed' ? 'failed' : 'completed'));
  }

  /** A training job's model versions (oldest first). */
  modelsOf(jobId: string): readonly ModelVersionRecord[] {
    const job = this.jobs.get(jobId);
    if (!job?.training) throw new AegisError(ErrorCode.NotFound, `no training job '${jobId}' runs here`);
    return job.training.models.all;
  }

  /** Most masked inputs a round admitted at once (its upload gate's peak). */
  uploadPeakOf(jobId: string, roundIndex: number): { peak: number; slots: number } {
    const r = this.roundOf(jobId, roundIndex);
    return { peak: r.gate.peak, slots: r.gate.slots };
  }

  /** When each phase of a round began, and the coordinator's compute time closing each (ms). */
  timingOf(jobId: string, roundIndex: number): { timeline: readonly { phase: Phase; at: number }[]; closeMs: Partial<Record<Phase, number>>; startedAt: number; endedAt?: number } {
    const r = this.roundOf(jobId, roundIndex);
    return { timeline: r.host.timeline, closeMs: r.host.closeMs, startedAt: r.startedAt, ...(r.endedAt === undefined ? {} : { endedAt: r.endedAt }) };
  }

  /**
   * Retention: rounds that ended more than `roundRetentionMs` ago forget which clients took part
   * (their cohort, per-phase members, survivors and protocol state); counts, timeline, outcome
   * and sum stay. Runs at start and every hour. Returns how many rounds it retired.
   */
  retireRounds(): number {
    const before = this.clock() - (this.opts.roundRetentionMs ?? DEFAULT_ROUND_RETENTION_MS);
    let n = 0;
    for (const r of [...[...this.jobs.values()].flatMap((j) => j.rounds), ...this.remoteRounds.values()]) {
      if (r.retired || !r.outcome || r.endedAt === undefined || r.endedAt > before) continue;
      r.retired = { invited: r.cohort.length, survivors: r.outcome.ok ? r.outcome.survivors.length : 0 };
      r.host = new RetiredHost(r.host, r.outcome);
      r.outcome = withoutClients(r.outcome);
      r.cohort = [];
      r.startOf.clear();
      n++;
    }
    if (n > 0) this.log?.info({ rounds: n }, 'retention: rounds forgot who took part');
    return n;
  }

  /** Waits for a round's outcome (tests, simulate). */
  async outcomeOf(jobId: string, roundIndex: number): Promise<RoundOutcome> {
    const remote = this.remoteRounds.get(`${jobId}.r${roundIndex}`);
    if (remote && !this.jobs.get(jobId)?.rounds.some((r) => r.index === roundIndex)) return remote.host.outcome;
    const r = this.roundOf(jobId, roundIndex);
    return r.host.outcome;
  }

  /**
   * A round's result from this process, or — with shared rounds — from Redis, whichever front
   * end ran it (also one that is gone).
   */
  async resultAnywhere(jobId: string, roundIndex?: number): Promise<admin.RoundResultReply> {
    try {
      return this.resultOf(jobId, roundIndex);
    } catch (e) {
      const shared = this.opts.redisRounds;
      if (!isAegisError(e, ErrorCode.NotFound) || !shared) throw e;
      const infos = (await shared.roundsOf(jobId)).filter((i) => roundIndex === undefined || i.index === roundIndex).sort((a, b) => b.index - a.index);
      for (const info of infos) {
        const hosts = await Promise.all(info.groups.map((k) => shared.host(k)));
        if (!hosts.every((h) => h.settled)) continue;
        const host: RoundHostLike = hosts.length === 1 ? hosts[0]! : new GroupedRoundHost(hosts.map((h) => ({ members: h.meta.cohort, host: h })));
        const o = await host.outcome;
        if (!o.ok) continue;
        const params = hosts[0]!.meta.params;
        return create(admin.RoundResultReplySchema, {
          jobId,
          roundIndex: info.index,
          manifestHash: new Uint8Array(Buffer.from(info.manifestHash, 'hex')),
          survivors: [...o.survivors],
          survivorCount: o.survivors.length,
          sum: new Uint8Array(vectorToBytes(o.sum)),
          clip: params.clip,
          bits: params.bits,
        });
      }
      throw e;
    }
  }

  private roundOf(jobId: string, roundIndex?: number): RoundRecord {
    const job = this.jobs.get(jobId);
    if (!job || job.rounds.length === 0) throw new AegisError(ErrorCode.NotFound, `no job '${jobId}' has run here`);
    const r = roundIndex === undefined ? job.rounds[job.rounds.length - 1] : job.rounds.find((x) => x.index === roundIndex);
    if (!r) throw new AegisError(ErrorCode.NotFound, `job '${jobId}' has no round ${roundIndex}`);
    return r;
  }

  statusOf(jobId: string, roundIndex?: number): admin.RoundStatusReply {
    const r = this.roundOf(jobId, roundIndex);
    const job = this.jobs.get(jobId)!;
    const s = r.host.status();
    // Each phase with the clients it heard from and the clients it waited for (the previous set).
    const phases: [Phase, number | undefined, number | undefined][] = [
      [Phase.AdvertiseKeys, s.sets.u1, invitedOf(r)],
      [Phase.ShareKeys, s.sets.u2, s.sets.u1],
      [Phase.MaskedInput, s.sets.u3, s.sets.u2],
      [Phase.ConsistencyCheck, s.sets.u4, s.sets.u3],
    ];
    const counts = phases
      .filter(([, n]) => n !== undefined)
      .map(([phase, n, expected]) => create(admin.PhaseCountSchema, { phase: phaseToProto(phase), clients: n!, expected: expected ?? 0 }));
    if (!r.outcome && s.phase !== Phase.Completed && s.phase !== Phase.Aborted) {
      counts.push(create(admin.PhaseCountSchema, { phase: phaseToProto(s.phase), clients: s.received, expected: expectedClients(s.phase, s.sets, r.cohort.length) }));
    }
    const latest = [s.sets.u4, s.sets.u3, s.sets.u2, s.sets.u1].find((x) => x !== undefined);
    const o = r.outcome;
    const training = job.training ? trainingStatus(job.training) : undefined;
    if (training && this.cancelledJobs.has(jobId)) training.state = 'cancelled';
    return create(admin.RoundStatusReplySchema, {
      jobId,
      roundIndex: r.index,
      phase: phaseToProto(o ? (o.ok ? Phase.Completed : Phase.Aborted) : s.phase),
      clientsPerPhase: counts,
      dropouts: latest === undefined ? 0 : invitedOf(r) - latest,
      // A finished round reports its duration (launch to outcome), not time since launch.
      elapsedMs: BigInt((r.endedAt ?? this.clock()) - r.startedAt),
      ok: o?.ok ?? false,
      abortReason: o && !o.ok ? abortReasonToProto(o.reason as AbortReason) : 0,
      invited: invitedOf(r),
      refused: s.refused,
      finished: o !== undefined,
      detail: o && !o.ok ? o.detail : '',
      rounds: job.manifest.rounds,
      ...(training ? { training } : {}),
      jobState: this.jobStateOf(job),
      kind: job.training ? admin.JobKind.TRAINING : admin.JobKind.PLAIN,
      startedAtMs: BigInt(r.startedAt),
      roundsDone: roundsDone(job),
    });
  }

  resultOf(jobId: string, roundIndex?: number): admin.RoundResultReply {
    const job = this.jobs.get(jobId);
    if (!job) throw new AegisError(ErrorCode.NotFound, `no job '${jobId}' has run here`);
    const r =
      roundIndex === undefined ? [...job.rounds].reverse().find((x) => x.outcome?.ok) : job.rounds.find((x) => x.index === roundIndex);
    if (!r || !r.outcome || !r.outcome.ok) throw new AegisError(ErrorCode.NotFound, `job '${jobId}' has no completed round${roundIndex === undefined ? '' : ` ${roundIndex}`}`);
    return create(admin.RoundResultReplySchema, {
      jobId,
      roundIndex: r.index,
      manifestHash: job.manifestHash,
      survivors: [...r.outcome.survivors],
      survivorCount: r.retired?.survivors ?? r.outcome.survivors.length,
      sum: new Uint8Array(vectorToBytes(r.outcome.sum)),
      clip: job.manifest.round.clip,
      bits: job.manifest.round.bits,
    });
  }

  /**
   * Where a job stands. A plain job takes its last round's state; a training job its own (an
   * operator's cancellation wins over the failure it is recorded as).
   */
  private jobStateOf(job: Job): admin.JobState {
    const t = job.training;
    if (t) {
      if (this.cancelledJobs.has(job.jobId)) return admin.JobState.CANCELLED;
      return t.state === 'running' ? admin.JobState.RUNNING : t.state === 'completed' ? admin.JobState.COMPLETED : admin.JobState.FAILED;
    }
    const o = job.rounds[job.rounds.length - 1]?.outcome;
    if (!o) return admin.JobState.RUNNING;
    if (o.ok) return admin.JobState.COMPLETED;
    return o.reason === 'cancelled' ? admin.JobState.CANCELLED : admin.JobState.ABORTED;
  }

  /** Every job this coordinator knows (since it started), oldest first. */
  listJobs(): admin.JobInfo[] {
    return [...this.jobs.values()]
      .filter((job) => job.rounds.length > 0)
      .map((job) => {
        const first = job.rounds[0]!;
        const last = job.rounds[job.rounds.length - 1]!;
        const state = this.jobStateOf(job);
        const o = last.outcome;
        const end = state === admin.JobState.RUNNING ? this.clock() : (last.endedAt ?? this.clock());
        return create(admin.JobInfoSchema, {
          jobId: job.jobId,
          kind: job.training ? admin.JobKind.TRAINING : admin.JobKind.PLAIN,
          state,
          roundsDone: roundsDone(job),
          roundsTotal: job.manifest.rounds,
          roundIndex: last.index,
          phase: phaseToProto(o ? (o.ok ? Phase.Completed : Phase.Aborted) : last.host.phase),
          startedAtMs: BigInt(first.startedAt),
          elapsedMs: BigInt(Math.max(0, end - first.startedAt)),
          roundsAborted: job.rounds.filter((r) => r.outcome && !r.outcome.ok).length,
          invited: last.cohort.length,
        });
      });
  }

  /** This process's jobs and, with a job directory, those other coordinators on the Redis run. */
  async listJobsEverywhere(): Promise<admin.JobInfo[]> {
    const local = this.listJobs();
    if (!this.opts.jobDirectory) return local;
    const here = new Set(local.map((j) => j.jobId));
    const elsewhere = (await this.opts.jobDirectory.list()).filter((j) => !here.has(j.jobId));
    return [...local, ...elsewhere].sort((a, b) => Number(a.startedAtMs - b.startedAtMs));
  }

  /** A job's status from this process, or else from the job directory (its latest round only). */
  async statusAnywhere(jobId: string, roundIndex?: number): Promise<admin.RoundStatusReply> {
    try {
      return this.statusOf(jobId, roundIndex);
    } catch (e) {
      if (!isAegisError(e, ErrorCode.NotFound) || !this.opts.jobDirectory) throw e;
      const s = await this.opts.jobDirectory.status(jobId);
      if (!s || (roundIndex !== undefined && s.roundIndex !== roundIndex)) throw e;
      return s;
    }
  }

  /**
   * Cancels a job here, or — with a job directory — a running job another coordinator runs: the
   * request goes to the directory and that coordinator acts on it within a second.
   */
  async cancelAnywhere(jobId: string, detail: string): Promise<{ roundIndex: number; phase: Phase; at: number }> {
    const dir = this.opts.jobDirectory;
    if (this.jobs.has(jobId) || !dir) return this.cancelJob(jobId, detail);
    const s = await dir.status(jobId);
    if (!s) throw new AegisError(ErrorCode.NotFound, `no job '${jobId}' is known here or on the Redis`);
    if (s.jobState !== admin.JobState.RUNNING) throw new AegisError(ErrorCode.FailedPrecondition, `job '${jobId}' is not running; nothing to cancel`);
    await dir.requestCancel(jobId, detail);
    return { roundIndex: s.roundIndex, phase: phaseFromProto(s.phase), at: this.clock() };
  }

  /**
   * Publishes this process's jobs to the job directory (every second, and at each round's end),
   * after acting on any cancel request another coordinator left for them.
   */
  private async publishJobs(): Promise<void> {
    const dir = this.opts.jobDirectory;
    if (!dir) return;
    for (const info of this.listJobs()) {
      if (info.state === admin.JobState.RUNNING) {
        const detail = await dir.takeCancel(info.jobId).catch(() => undefined);
        if (detail !== undefined) {
          try {
            this.cancelJob(info.jobId, detail);
          } catch {
            // It ended meanwhile: nothing to cancel.
          }
        }
      }
      await dir.publish(this.listJobs().find((j) => j.jobId === info.jobId) ?? info, this.statusOf(info.jobId)).catch(() => undefined);
    }
  }

  /**
   * Cancels a job's running round: it aborts with reason `cancelled` (nothing is published, the
   * cohort is told), and a training job starts no further round. Throws `not-found` for an
   * unknown job and `failed-precondition` for one that no longer runs.
   */
  cancelJob(jobId: string, detail = 'cancelled by an operator'): { roundIndex: number; phase: Phase; at: number } {
    const job = this.jobs.get(jobId);
    if (!job || job.rounds.length === 0) throw new AegisError(ErrorCode.NotFound, `no job '${jobId}' has run here`);
    const state = this.jobStateOf(job);
    if (state !== admin.JobState.RUNNING) {
      throw new AegisError(ErrorCode.FailedPrecondition, `job '${jobId}' is not running (${JOB_STATE_NAMES[state] ?? 'ended'}); nothing to cancel`);
    }
    const at = this.clock();
    const r = job.rounds[job.rounds.length - 1]!;
    const phase = r.outcome ? (r.outcome.ok ? Phase.Completed : Phase.Aborted) : r.host.phase;
    const t = job.training;
    if (t) {
      // A training job that no longer runs starts no round after this one's outcome.
      this.cancelledJobs.set(jobId, at);
      t.state = 'failed';
      t.detail = detail;
      t.settle('failed');
      if (r.outcome) this.cancelNextRound(job, job.rounds.length, at + t.gatherMs + job.manifest.deadlines.advertiseMs + 60_000);
    }
    r.host.cancel(detail);
    this.log?.warn({ job: jobId, round: r.index, phase }, 'round cancelled');
    return { roundIndex: r.index, phase, at };
  }

  /**
   * A training job cancelled between two rounds may be gathering its next one already: that
   * round is cancelled as soon as it starts.
   */
  private cancelNextRound(job: Job, index: number, until: number): void {
    const tick = (): void => {
      const next = job.rounds[index];
      if (next) return next.host.cancel(job.training?.detail || 'cancelled by an operator');
      if (this.closing || this.clock() > until) return;
      setTimeout(tick, 50).unref();
    };
    tick();
  }

  // -------------------------------------------------------------------------------------------

  // Web dashboard (coordinator/service/dashboard.ts, docs/dashboard-api.md).

  /**
   * Starts the web dashboard at `listen` (loopback unless `allowRemote`). Its data comes from
   * `dashboardOverview` / `dashboardJobs` / `dashboardJob`; logins from `issueDashboardToken`.
   * Closed with the coordinator.
   */
  async startDashboard(listen: string, opts: Omit<ServeDashboardOptions, 'auth'> = {}): Promise<DashboardServer> {
    if (this.dashboard) throw new AegisError(ErrorCode.AlreadyExists, 'the dashboard runs already');
    const auth = new DashboardTokens({ clock: this.clock });
    const server = await serveDashboard(
      { overview: () => this.dashboardOverview(), jobs: () => this.dashboardJobs(), job: (id, summary) => this.dashboardJob(id, summary) },
      listen,
      { ...opts, auth },
    );
    this.dashboard = { server, auth };
    return server;
  }

  /** The dashboard's address (`host:port`), when it runs. */
  get dashboardAddress(): string | undefined {
    return this.dashboard?.server.address;
  }

  /** A single-use dashboard login token and its URL; `failed-precondition` without a dashboard. */
  issueDashboardToken(ttlMs?: number): { token: string; expiresAt: number; url: string } {
    const d = this.dashboard;
    if (!d) throw new AegisError(ErrorCode.FailedPrecondition, 'this coordinator runs no dashboard (coordinator start --dashboard HOST:PORT)');
    const t = d.auth.issue(ttlMs);
    return { ...t, url: `${d.server.url}/login?token=${t.token}` };
  }

  /** Counts only: when this coordinator started, clients connected and enrolled, the registry version, flagged rounds. */
  async dashboardOverview(): Promise<DashboardOverview> {
    let enrolled = 0;
    for (const c of this.registry.clients.values()) if (!this.registry.revocations.isRevoked({ clientId: c.clientId })) enrolled++;
    let flagged = 0;
    for (const job of this.jobs.values()) flagged += job.training?.flagged.length ?? 0;
    return {
      coordinator: { startedAt: this.startedAt, connectedClients: this.connectedClients().length, enrolledClients: enrolled },
      registry: await this.registryVersion(),
      flags: { poisoningFlaggedRounds: flagged },
    };
  }

  /** The publisher registry's version and publisher count (null without a registry); cached 5 s. */
  private async registryVersion(): Promise<{ version: number; publishers: number } | null> {
    const dir = this.opts.registryDir;
    if (dir === undefined) return null;
    const now = this.clock();
    if (this.registryInfo && now - this.registryInfo.at < 5000) return this.registryInfo.value;
    let value: { version: number; publishers: number } | null;
    try {
      const doc = parsePublishersPayload((await readSnapshot(dir)).publishers);
      value = { version: doc.version, publishers: Object.values(doc.publishers).filter((p) => p.revoked !== true).length };
    } catch {
      value = this.registryInfo?.value ?? null;
    }
    this.registryInfo = { at: now, value };
    return value;
  }

  /** Every job (this process's and, with a job directory, the others'), as the dashboard lists them. */
  async dashboardJobs(): Promise<DashboardJobSummary[]> {
    const infos = await this.listJobsEverywhere();
    return infos.map((j) => {
      const job = this.jobs.get(j.jobId);
      return {
        jobId: j.jobId,
        kind: j.kind === admin.JobKind.TRAINING ? 'training' : 'plain',
        state: (JOB_STATE_NAMES[j.state] ?? 'running') as DashboardJobState,
        signer: job?.signer ? { ...job.signer } : null,
        roundsDone: j.roundsDone,
        rounds: j.roundsTotal,
        roundIndex: j.roundIndex,
        phase: phaseFromProto(j.phase),
        startedAt: Number(j.startedAtMs),
        elapsedMs: Number(j.elapsedMs),
      };
    });
  }

  /** One job with its rounds (phase, counts, timeline) and, for training, its model history; undefined if unknown. */
  async dashboardJob(jobId: string, known?: DashboardJobSummary): Promise<DashboardJobDetail | undefined> {
    const summary = known ?? (await this.dashboardJobs()).find((j) => j.jobId === jobId);
    if (!summary) return undefined;
    const job = this.jobs.get(jobId);
    const t = job?.training;
    const flagged = new Set(t?.flagged ?? []);
    const roundOf = (s: admin.RoundStatusReply, timing?: ReturnType<Coordinator['timingOf']>): DashboardRound => {
      const startedAt = Number(s.startedAtMs);
      const endedAt = timing?.endedAt ?? (s.finished ? startedAt + Number(s.elapsedMs) : null);
      return {
        index: s.roundIndex,
        phase: phaseFromProto(s.phase),
        ok: s.ok,
        finished: s.finished,
        startedAt,
        endedAt,
        elapsedMs: Number(s.elapsedMs),
        timeline: (timing?.timeline ?? []).map((x) => ({ phase: x.phase, at: x.at })),
        clientsPerPhase: s.clientsPerPhase.map((c) => ({ phase: phaseFromProto(c.phase), clients: c.clients, expected: c.expected })),
        invited: s.invited,
        dropouts: s.dropouts,
        refused: s.refused,
        abortReason: s.finished && !s.ok && s.abortReason !== 0 ? abortReasonFromProto(s.abortReason) : null,
        detail: s.detail,
        poisoningFlagged: flagged.has(s.roundIndex),
      };
    };
    if (!job) {
      // Another coordinator's job (job directory): its latest round only.
      const s = await this.statusAnywhere(jobId).catch(() => undefined);
      return { job: summary, rounds: s ? [roundOf(s)] : [], training: null };
    }
    const rounds = job.rounds.map((r) => roundOf(this.statusOf(jobId, r.index), this.timingOf(jobId, r.index)));
    return {
      job: summary,
      rounds,
      training: t
        ? {
            state: this.cancelledJobs.has(jobId) ? 'cancelled' : t.state,
            roundsCompleted: t.completed,
            roundsAborted: t.aborted,
            flaggedRounds: [...t.flagged],
            models: t.models.all.map((v) => ({
              version: v.version,
              roundIndex: v.roundIndex ?? null,
              clients: v.clients,
              accuracy: v.validationAccuracy ?? null,
              loss: v.validationLoss ?? null,
              sha256: Buffer.from(v.sha256).toString('hex'),
            })),
          }
        : null,
    };
  }

  // -------------------------------------------------------------------------------------------

  /** Persists the registry (serialized: one write at a time, the latest state wins). */
  private persist(): Promise<void> {
    const dir = this.opts.dataDir;
    if (dir === undefined) return Promise.resolve();
    const next = this.persistChain.then(() => saveRegistry(dir, this.registry));
    this.persistChain = next.catch((err: unknown) => {
      this.log?.error({ code: isAegisError(err) ? err.code : 'io' }, 'could not persist the registry');
    });
    return next;
  }
}

/** Default `clientsLostAfterMs`: 7 days. */
export const DEFAULT_CLIENTS_LOST_AFTER_MS = 7 * 86_400_000;
/** A CRL the coordinator signs is valid this long (its nextUpdate). */
const CRL_VALIDITY_MS = 7 * 86_400_000;
/** Earlier serials kept per client (for the CRL), newest first. */
const MAX_PREVIOUS_SERIALS = 64;

/** The revocation reason code of a revoked record (free text of an older registry reads as `unspecified`). */
function revocationCodeOf(rec: ClientRecord): RevocationReason {
  return revocationReasonOf(rec.revocationReason) ?? 'unspecified';
}

/** The free-text detail of a revocation (an older registry's free-text reason is its detail). */
function revocationDetailOf(rec: ClientRecord): string {
  if (rec.revocationDetail !== undefined) return rec.revocationDetail;
  return rec.revocationReason !== undefined && revocationReasonOf(rec.revocationReason) === undefined ? rec.revocationReason : '';
}

/** The client's current serial and its earlier ones whose certificates are still valid at `now`. */
function certificateSerialsOf(rec: ClientRecord, now: number): string[] {
  return [rec.serial, ...(rec.previousSerials ?? []).filter((p) => p.expiresAt > now).map((p) => p.serial)];
}

/**
 * Before `rec`'s certificate is replaced (renewal, re-enrollment): keeps its serial while that
 * certificate is still valid, so a later revocation puts it on the CRL too. Returns the list.
 */
function rememberSerial(rec: ClientRecord, now: number): { serial: string; expiresAt: number }[] {
  const kept = (rec.previousSerials ?? []).filter((p) => p.expiresAt > now && p.serial !== rec.serial);
  if (rec.certificateExpiresAt > now) kept.unshift({ serial: rec.serial, expiresAt: rec.certificateExpiresAt });
  rec.previousSerials = kept.slice(0, MAX_PREVIOUS_SERIALS);
  if (rec.previousSerials.length === 0) delete rec.previousSerials;
  return rec.previousSerials ?? [];
}

/** A job record before its first round (copies of the caller's bytes). */
function newJob(manifest: JobManifest, manifestJson: Uint8Array, hash: Uint8Array, signed: Uint8Array | undefined): Job {
  return {
    jobId: manifest.jobId,
    manifest,
    manifestJson: new Uint8Array(manifestJson),
    manifestHash: hash,
    ...(signed ? { signedManifest: new Uint8Array(signed) } : {}),
    rounds: [],
  };
}

/** Rounds of a job that completed (a training job: those that made a model version). */
function roundsDone(job: Job): number {
  return job.training ? job.training.completed : job.rounds.filter((r) => r.outcome?.ok).length;
}


const JOB_STATE_NAMES: Partial<Record<admin.JobState, string>> = {
  [admin.JobState.RUNNING]: 'running',
  [admin.JobState.COMPLETED]: 'completed',
  [admin.JobState.FAILED]: 'failed',
  [admin.JobState.CANCELLED]: 'cancelled',
  [admin.JobState.ABORTED]: 'aborted',
};

function trainingStatus(t: TrainingProgress): admin.TrainingStatus {
  const version = (v: ModelVersionRecord) => create(pb.ModelVersionSchema, { version: v.version, sha256: v.sha256 });
  return create(admin.TrainingStatusSchema, {
    state: t.state,
    roundsCompleted: t.completed,
    roundsAborted: t.aborted,
    model: version(t.models.latest),
    detail: t.detail,
    flaggedRounds: t.flagged,
    history: t.models.all.map((v) =>
      create(admin.ModelHistoryEntrySchema, {
        model: version(v),
        ...(v.roundIndex === undefined ? {} : { roundIndex: v.roundIndex }),
        clients: v.clients,
        totalWeight: BigInt(v.totalWeight),
        ...(v.validationAccuracy === undefined ? {} : { validationAccuracy: v.validationAccuracy }),
      }),
    ),
  });
}

/** A model version's weights in chunks (the manifest rides on the first when given). */
function* modelChunks(v: ModelVersionRecord, manifestJson?: Uint8Array): Generator<pb.ModelChunk> {
  const bytes = weightBytes(v.weights);
  const model = create(pb.ModelVersionSchema, { version: v.version, sha256: v.sha256 });
  let offset = 0;
  do {
    const chunk = create(pb.ModelChunkSchema, { data: bytes.subarray(offset, offset + MODEL_CHUNK_BYTES), offset: BigInt(offset), totalBytes: BigInt(bytes.length), model });
    if (offset === 0 && manifestJson) chunk.manifestJson = manifestJson;
    yield chunk;
    offset += MODEL_CHUNK_BYTES;
  } while (offset < bytes.length);
}

const expiryCache = new Map<string, number>();
function certificateExpiry(der: Uint8Array): number {
  const key = Buffer.from(der.subarray(der.length - 64)).toString('base64');
  let t = expiryCache.get(key);
  if (t === undefined) {
    t = Date.parse(new X509Certificate(Buffer.from(der)).validTo);
    if (expiryCache.size > 10_000) expiryCache.clear();
    expiryCache.set(key, t);
  }
  return t;
}

/** The address to dial for a listen host: a wildcard listener is reached on loopback. */
/** The cohort size of a round, also once retention emptied its cohort. */
const invitedOf = (r: RoundRecord): number => r.retired?.invited ?? r.cohort.length;

const reachable = (host: string): string => (host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host);

function splitHostPort(hp: string): [string, string] {
  const m = /^(\[[^\]]+\]|[^:]+|[0-9a-fA-F:]+):(\d{1,5})$/.exec(hp);
  if (!m) throw new AegisError(ErrorCode.InvalidArgument, `address must be HOST:PORT, got '${hp}'`);
  const port = Number(m[2]);
  if (port > 65535) throw new AegisError(ErrorCode.InvalidArgument, `port out of range in '${hp}'`);
  return [m[1]!.replace(/^\[|\]$/g, ''), m[2]!];
}

function bind(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, creds, (err, port) => (err ? reject(new AegisError(ErrorCode.Unavailable, `cannot listen on ${address}: ${err.message}`)) : resolve(port))),
  );
}
