/**
 * The client's side of the wire: enrollment (one-time token + CSR over server-authenticated TLS
 * 1.3) and `ClientRunner`, what `aegis client run` is once its data dir is open — an mTLS channel
 * to the coordinator, a pool of single-use round tokens, the Subscribe stream feeding a
 * ClientAgent, reconnection with exponential backoff and jitter, failover across several
 * coordinator front ends, per-round deadlines, and certificate renewal before expiry.
 *
 * Whether the client joins a round, and with what input, is not decided here: the runner hands
 * each new round start to admission (client/admission/admission.ts) with the I/O it needs — the
 * coordinator's registry and model downloads over this channel — and joins only if admitted.
 */
import type { PrivacyLimit } from '../admission/privacy-budget.js';
import { X509Certificate } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { ClientMessage, RoundRef, ServerEvent } from '../../shared/protocol/messages.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import { maskedSumBits } from '../../shared/protocol/dp-manifest.js';
import { fromEventEnvelope, toClientEnvelope } from '../../shared/rpc/convert.js';
import { callUnary, clientFor, type MethodsOf, type TypedClient } from '../../shared/rpc/service.js';
import { reasonOf } from '../../shared/rpc/status.js';
import { channelOptions } from '../../shared/rpc/channel.js';
import { createCsr, needsRenewal, tlsKeyPemFor, tlsKeyTypeOf, type ClientIdentity, type TlsKeyType } from '../enroll/csr.js';
import { ClientAgent, type AgentEvent } from './agent.js';
import { asAegisError, isTransient } from './grpc-errors.js';
import { fetchModel } from './model-fetch.js';
import { PeerDirectory } from './peer-directory.js';
import { sameRound } from '../../shared/protocol/session.js';
import * as trustPb from '../../shared/gen/aegis/v1/trust_pb.js';
import type { RegistrySnapshot } from '../../shared/trust/registry.js';
import type { AuditBook } from '../audit/audit.js';
import type { TrustBook } from '../../shared/trust/trust-book.js';
import { admitRound, newAdmissionMemory, recordRoundOutcome, type AdmissionContext, type AdmissionEvent } from '../admission/admission.js';
import type { Trainer } from '../admission/training-round.js';
import type { RoundInput } from '../round/types.js';
import type { LocalValidation } from '../admission/validation.js';
import { memoryLedger, quantizedInputId, type ContributionLedger, type InputId } from '../admission/ledger.js';
import { channelCredentials } from '../../shared/rpc/tls-credentials.js';

/**
 * Enrolls: sends the CSR with the one-time token to the coordinator's enrollment address,
 * trusting only `caPem` for the server. Returns the certificate, the CA and the assigned id.
 * The TLS key is P-256 unless `tlsKeyType` says otherwise (client/enroll/csr.ts).
 */
export async function enrollWithToken(opts: {
  enrollAddress: string;
  caPem: string;
  token: string;
  identity: ClientIdentity;
  clientId: string;
  timeoutMs?: number;
  tlsKeyType?: TlsKeyType;
}): Promise<{ certificateDer: Uint8Array; caDer: Uint8Array; clientId: string }> {
  const csrDer = await createCsr(opts.identity, opts.clientId, opts.tlsKeyType ? { tlsKeyType: opts.tlsKeyType } : {});
  const client = new (clientFor(enroll.Enrollment))(opts.enrollAddress, channelCredentials(opts.caPem), channelOptions(opts.enrollAddress));
  try {
    const reply = await callUnary(client.enroll.bind(client), create(enroll.EnrollRequestSchema, { token: opts.token, csrDer }), new grpc.Metadata(), {
      deadline: Date.now() + (opts.timeoutMs ?? 15_000),
    }).catch((e: unknown) => {
      throw asAegisError(e);
    });
    // The CA the coordinator answers with must be the one this client pinned.
    const pinned = new X509Certificate(opts.caPem);
    if (!Buffer.from(reply.caCertificateDer).equals(pinned.raw)) throw new AegisError(ErrorCode.Unauthenticated, 'the coordinator answered with another CA than the pinned one');
    return { certificateDer: reply.certificateDer, caDer: reply.caCertificateDer, clientId: reply.clientId };
  } finally {
    client.close();
  }
}

/**
 * The coordinator front ends of `HOST:PORT[,HOST:PORT...]`, in order (trimmed, empties dropped);
 * throws `invalid-argument` when none is left.
 */
export function parseAddressList(list: string): string[] {
  const addresses = list
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a.length > 0);
  if (addresses.length === 0) throw new AegisError(ErrorCode.InvalidArgument, `the coordinator address list names no address: '${list}'`);
  return addresses;
}

export interface RunnerOptions {
  /**
   * The coordinator: `HOST:PORT`, or a comma-separated list of front ends that share one Redis
   * (`HOST:PORT,HOST:PORT`). The runner uses one at a time and moves to the next (round-robin)
   * when its stream ends or the front end becomes unreachable.
   */
  address: string;
  caPem: string;
  clientId: string;
  identity: ClientIdentity;
  certificateDer: Uint8Array;
  /**
   * This client's quantized, weighted input for a plain (non-training) round (length dim + 1).
   * Without it the client sits such rounds out.
   */
  input?: (round: RoundRef, params: RoundParams) => Uint32Array;
  /**
   * What identifies the plain input of a round for the reuse check (the ledger keeps only its
   * HMAC); default: the vector `input` returns (quantizedInputId). `aegis client run` gives the
   * values it read (rawInputId), as it quantizes them with fresh randomness at each round.
   */
  inputIdentity?: (round: RoundRef, params: RoundParams) => Promise<InputId>;
  /**
   * Contribute one plain input to several rounds (`client run --input-reuse`). Off by default: a
   * coordinator that sums one input in two cohorts learns it as the difference of the sums.
   */
  inputReuse?: boolean;
  /**
   * Which rounds this client joined and what it contributed (client/admission/ledger.ts): a
   * round is joined at most once, and the contribution is recorded before the masked input
   * leaves. Default: an in-memory ledger, for this runner's lifetime (`client run` keeps it in
   * its data dir).
   */
  ledger?: ContributionLedger;
  /**
   * The client's privacy budget (`client run --privacy-budget`; client/admission/privacy-budget.ts):
   * a round whose privacy cost would take the ledger's total past it, and every round that is not
   * differentially private, is declined `privacy-budget`. Absent: DP rounds are charged, none refused.
   */
  privacyBudget?: PrivacyLimit;
  /**
   * Local training for a training round: given the verified global model, returns the weighted
   * update; the runner clips, quantizes and masks it. Without it the client sits training
   * rounds out.
   */
  train?: Trainer;
  /** The model formats `train` takes (default tfjs-layers); see AdmissionContext.trainerFormats. */
  trainerFormats?: readonly string[];
  /** Train before answering phase 0, so a training failure declines the round (an external trainer); see AdmissionContext.trainFirst. */
  trainFirst?: boolean;
  /**
   * Trust (DESIGN.md §3): take only rounds whose manifest a publisher signed, verified against
   * the coordinator's registry and a backup registry that must agree; remember what was
   * accepted (no rollback); in audit mode, admit only approved jobs.
   */
  trust?: { backup: () => Promise<RegistrySnapshot>; book: TrustBook };
  /**
   * Audit mode: a registry mismatch enters it; while in it, each new job needs the operator's
   * approval bound to its manifest hash (a refused job is sat out with `approval-required`).
   */
  audit?: AuditBook;
  /**
   * The accuracy of a training round's global model on this client's local validation holdout
   * (undefined: none). When a new model version loses more accuracy than the manifest's gate,
   * the client enters audit mode and does not train on it.
   */
  validate?: LocalValidation;
  /** Runs when a round starts, before the client joins it (e.g. to read and quantize its update). */
  beforeRound?: (round: RoundRef, params: RoundParams) => Promise<void>;
  /** Persists a renewed certificate. */
  onCertificate?: (der: Uint8Array) => Promise<void>;
  onEvent?: (e: RunnerEvent) => void;
  /** How often to check whether the certificate needs renewal; default 60 s. */
  renewCheckMs?: number;
  /** Renew once this fraction of the certificate's lifetime has passed; default 2/3. */
  renewAfter?: number;
  /**
   * The TLS key type the client certificate should have. Default: the current certificate's
   * (a client enrolled with an Ed25519 certificate keeps renewing with Ed25519). When it differs
   * from the current certificate's, the certificate is renewed at once for a key of this type,
   * for the same round key (`aegis client run --tls-key p256`).
   */
  tlsKeyType?: TlsKeyType;
  /** Backoff bounds for reconnecting; default 250 ms .. 10 s. */
  backoffMs?: { min: number; max: number };
  /** Extra time given past a round's deadlines before giving up on it; default 10 s. */
  roundGraceMs?: number;
  /**
   * While subscribed, send a Heartbeat (over the same mTLS channel, with a round token) about
   * this often, with ±25 % jitter, so the coordinator knows the device is alive between rounds
   * (its lost-device sweep); default 60 s, 0 = off.
   */
  heartbeatMs?: number;
}

export type RunnerEvent =
  | AgentEvent
  /** The client sat a round out, trained for one, or was told of a poisoning flag. */
  | AdmissionEvent
  /** `address`: the front end the stream is on. */
  | { kind: 'connected'; address?: string }
  /** `address`: the front end that was lost; `next`: the one tried next (when it changes). */
  | { kind: 'disconnected'; code: string; retryInMs: number; address?: string; next?: string }
  | { kind: 'renewed'; notAfter: string }
  /** A heartbeat went out (`ok`) or was refused / not delivered (`code`). */
  | { kind: 'heartbeat'; ok: boolean; code?: string }
  | { kind: 'fatal'; code: string; message: string };

type SecAggClient = TypedClient<MethodsOf<typeof pb.SecAgg>>;

const TOKEN_BATCH = 8;
/** Retries of a transport failure in `send` (more with several front ends: the stream may be moving). */
const SEND_RETRIES = 4;
const SEND_RETRIES_PER_FRONT_END = 3;
/** Times a masked input is sent again after asking anew for an upload slot it had lost. */
const SLOT_RETRIES = 3;
/** A token is not used in its last 30 s (the call must reach the coordinator before it expires). */
const TOKEN_MARGIN_MS = 30_000;

/** The coordinator refuses this client's certificate (revoked, unknown): retrying cannot help. */
const certificateRefused = (e: AegisError): boolean => e.code === ErrorCode.Unauthenticated && /peer certificate refused: (revoked|no-identity)/.test(e.message);

export class ClientRunner {
  readonly agent: ClientAgent;
  private readonly opts: RunnerOptions;
  /** The coordinator front ends; `current` indexes the one in use. */
  private readonly addresses: readonly string[];
  private current = 0;
  private client!: SecAggClient;
  private trustClient!: TypedClient<MethodsOf<typeof trustPb.Trust>>;
  private certificateDer: Uint8Array;
  private tokens: string[] = [];
  private tokensExpireAt = 0;
  private tokenFetch: Promise<void> | null = null;
  private stream: grpc.ClientReadableStream<pb.ServerEnvelope> | null = null;
  private stopped = false;
  private failures = 0;
  private events: Promise<void> = Promise.resolve();
  /** What admission needs for each round start: the options' checks, this channel's I/O, its memory. */
  private readonly admission: AdmissionContext;
  /** The input being made by local training for the current training round. */
  private training: { round: RoundRef; input: Promise<RoundInput> } | undefined;
  /** The round last admitted and the bits of its sum, from its signed manifest. */
  private admitted: { round: RoundRef; sumBits: number } | undefined;
  private roundTimer: NodeJS.Timeout | undefined;
  /** When the client gives up on the round it is in (all its phase deadlines and the grace passed). */
  private roundGiveUp: { round: RoundRef; at: number } | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** Peers' identity keys, from certificates checked against the pinned CA. */
  private readonly peers: PeerDirectory;
  private finish!: (err?: AegisError) => void;
  /** Resolves when the runner stops: undefined after `stop()`, an error when it cannot go on. */
  readonly done: Promise<AegisError | undefined>;

  constructor(opts: RunnerOptions) {
    this.addresses = parseAddressList(opts.address);
    this.opts = opts;
    this.certificateDer = opts.certificateDer;
    this.peers = new PeerDirectory(opts.caPem);
    this.done = new Promise((resolve) => (this.finish = resolve));
    const ledger = opts.ledger ?? memoryLedger();
    this.agent = new ClientAgent({
      clientId: opts.clientId,
      // Read at each round: an identity rotation (rekey) takes effect from the next round.
      get identityKey() {
        return opts.identity.seed;
      },
      identityOf: (id) => this.peers.keyOf(id),
      input: (round, params) => {
        if (!opts.input) throw new AegisError(ErrorCode.InvalidArgument, 'this client has no input for the round');
        return opts.input(round, params);
      },
      pendingInput: (round) => (this.training && sameRound(this.training.round, round) ? this.training.input : undefined),
      sumBits: (round) => (this.admitted && sameRound(this.admitted.round, round) ? this.admitted.sumBits : undefined),
      send: (m) => this.send(m),
      // The contribution is on record before the masked input leaves; a refusal keeps it here.
      beforeSend: async (m, round) => {
        if (m.type === 'masked-input') await ledger.contribute(round, { reuse: opts.inputReuse === true });
      },
      onEvent: (e) => opts.onEvent?.(e),
    });
    const { trust, input } = opts;
    this.admission = {
      clientId: opts.clientId,
      ...(trust ? { trust: { coordinatorRegistry: () => this.coordinatorRegistry(), backup: () => trust.backup(), book: trust.book } } : {}),
      audit: opts.audit,
      hasPlainInput: opts.input !== undefined,
      ...(input ? { plainInput: async (round: RoundRef, params: RoundParams) => (opts.inputIdentity ? opts.inputIdentity(round, params) : quantizedInputId(input(round, params))) } : {}),
      ...(opts.inputReuse ? { inputReuse: true } : {}),
      ledger,
      ...(opts.privacyBudget ? { privacyBudget: opts.privacyBudget } : {}),
      train: opts.train,
      ...(opts.trainerFormats ? { trainerFormats: opts.trainerFormats } : {}),
      ...(opts.trainFirst ? { trainFirst: true } : {}),
      validate: opts.validate,
      fetchModel: (manifestHash, version, expectedBytes) => fetchModel(this.client, manifestHash, version, expectedBytes),
      memory: newAdmissionMemory(),
      asError: asAegisError,
      onEvent: (e) => opts.onEvent?.(e),
    };
  }

  /** Peers' certificates parsed and checked against the CA so far (a remembered one is not checked again). */
  get peerCertificateChecks(): number {
    return this.peers.verifications;
  }

  /** The front end in use. */
  get address(): string {
    return this.addresses[this.current]!;
  }

  start(): void {
    this.connect();
    this.subscribe();
    this.renewTimer = setInterval(() => void this.maybeRenew(), this.opts.renewCheckMs ?? 60_000);
    this.renewTimer.unref();
    void this.maybeRenew();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.roundTimer);
    clearInterval(this.renewTimer);
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.heartbeatTimer);
    this.stream?.cancel();
    // Not awaiting the event chain: stop() may be called from inside an event handler. Whatever
    // is still queued fails fast on the closed channel.
    this.client?.close();
    this.trustClient?.close();
    this.finish(undefined);
    await Promise.resolve();
  }

  private fatal(err: AegisError): void {
    if (this.stopped) return;
    this.opts.onEvent?.({ kind: 'fatal', code: err.code, message: err.message });
    this.finish(err); // first: `done` settles once, with the reason
    void this.stop();
  }

  /** (Re)opens the channels to the current front end; its tokens start from an empty pool. */
  private connect(): void {
    this.reconnectPending = false;
    const address = this.address;
    this.client?.close();
    this.client = new (clientFor(pb.SecAgg))(address, this.credentials(), channelOptions(address));
    this.trustClient?.close();
    this.trustClient = new (clientFor(trustPb.Trust))(address, this.credentials(), channelOptions(address));
    // Tokens are single-use per front end: none from the previous channel (a fetch still under
    // way there does not fill the pool: see token()).
    this.tokens = [];
    this.tokensExpireAt = 0;
    this.tokenFetch = null;
  }

  /** mTLS credentials: the pinned CA, the current certificate and its TLS key (P-256, or Ed25519 for an older certificate). */
  private credentials(): grpc.ChannelCredentials {
    return channelCredentials(this.opts.caPem, {
      keyPem: tlsKeyPemFor(this.opts.identity, this.certificateDer),
      certificatePem: new X509Certificate(Buffer.from(this.certificateDer)).toString(),
    });
  }

  /** One single-use round token (fetched in batches over mTLS). */
  private async token(): Promise<string> {
    if (this.tokens.length === 0 || Date.now() > this.tokensExpireAt - TOKEN_MARGIN_MS) {
      if (!this.tokenFetch) {
        const client = this.client;
        const fetch: Promise<void> = callUnary(client.issueTokens.bind(client), create(pb.IssueTokensRequestSchema, { count: TOKEN_BATCH }), new grpc.Metadata(), {
          deadline: Date.now() + 15_000,
        })
          .then((r) => {
            // Tokens of a front end this runner has since left are of no use.
            if (this.client !== client) return;
            this.tokens = [...r.tokens];
            this.tokensExpireAt = Number(r.expiresAtMs);
          })
          .finally(() => {
            if (this.tokenFetch === fetch) this.tokenFetch = null;
          });
        this.tokenFetch = fetch;
      }
      await this.tokenFetch;
    }
    const t = this.tokens.shift();
    if (t === undefined) return this.token();
    return t;
  }

  /**
   * An operator revoked this client's tokens (`aegis tokens revoke`), not the client: the pool is
   * dropped and the next call fetches fresh tokens. True when `e` was such a refusal.
   */
  private dropRevokedTokens(e: AegisError): boolean {
    if (e.code !== ErrorCode.Unauthenticated || !/token refused: revoked/.test(e.message)) return false;
    this.tokens = [];
    this.tokensExpireAt = 0;
    return true;
  }

  private async metadata(): Promise<grpc.Metadata> {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${await this.token()}`);
    return md;
  }

  /**
   * The wait before the next attempt, with jitter. With one front end it doubles with each
   * failure in a row; with several it doubles with each full pass over the list, so moving on
   * from a front end that just failed is quick and only a list that keeps failing backs off.
   */
  private backoff(): number {
    const { min, max } = this.opts.backoffMs ?? { min: 250, max: 10_000 };
    const n = this.addresses.length;
    const exponent = n > 1 ? Math.floor(Math.max(0, this.failures - 1) / n) : this.failures;
    const base = Math.min(max, min * 2 ** Math.min(exponent, 16));
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  private subscribe(): void {
    if (this.stopped) return;
    // A channel replaced meanwhile (failover, certificate swap) subscribes on its own.
    const client = this.client;
    const address = this.address;
    void this.metadata().then(
      (md) => {
        if (this.stopped || this.client !== client) return;
        const stream = client.subscribe(create(pb.SubscribeRequestSchema, {}), md);
        const certificate = this.certificateDer;
        this.stream = stream;
        let announced = false;
        stream.on('metadata', () => {
          if (this.stream !== stream) return;
          this.failures = 0;
          announced = true;
          this.opts.onEvent?.({ kind: 'connected', address });
          this.armHeartbeat(stream);
        });
        stream.on('data', (env: pb.ServerEnvelope) => {
          if (!announced) {
            announced = true;
            this.failures = 0;
          }
          this.enqueue(env);
        });
        stream.on('error', (err: unknown) => this.streamEnded(stream, err, certificate));
        stream.on('end', () => this.streamEnded(stream, undefined, certificate));
      },
      (err: unknown) => {
        if (this.client === client) this.streamEnded(null, err);
      },
    );
  }

  private streamEnded(stream: grpc.ClientReadableStream<pb.ServerEnvelope> | null, err: unknown, certificate?: Uint8Array): void {
    if (stream !== null && this.stream !== stream) return;
    this.stream = null;
    clearTimeout(this.heartbeatTimer);
    if (this.stopped) return;
    const e = err === undefined ? new AegisError(ErrorCode.Unavailable, 'the coordinator ended the stream') : asAegisError(err);
    // A revoked or unknown client cannot fix that by retrying: stop with the reason. Not so a
    // stream whose certificate this client's own renewal or rekey superseded (the coordinator
    // ends it as revoked): the channel moves to the new certificate.
    const superseded = this.renewing || (certificate !== undefined && certificate !== this.certificateDer);
    if (certificateRefused(e) && !superseded) return this.fatal(e);
    this.dropRevokedTokens(e);
    this.failures++;
    const wait = this.backoff();
    const lost = this.address;
    // A front end that ended the stream or cannot be reached: try the next one (its channel
    // opens now, so sends being retried already go there). Other refusals retry the same one.
    const failover = this.addresses.length > 1 && (err === undefined || e.code === ErrorCode.Unavailable);
    if (failover) {
      this.current = (this.current + 1) % this.addresses.length;
      this.connect();
    }
    this.opts.onEvent?.({ kind: 'disconnected', code: e.code, retryInMs: wait, address: lost, ...(failover ? { next: this.address } : {}) });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.subscribe(), wait);
  }

  /** Schedules the next heartbeat while `stream` is the open stream (jittered ±25 %). */
  private armHeartbeat(stream: grpc.ClientReadableStream<pb.ServerEnvelope>): void {
    clearTimeout(this.heartbeatTimer);
    const every = this.opts.heartbeatMs ?? 60_000;
    if (!(every > 0) || this.stopped) return;
    const wait = Math.round(every * (0.75 + Math.random() * 0.5));
    this.heartbeatTimer = setTimeout(() => {
      if (this.stopped || this.stream !== stream) return;
      void this.heartbeat().finally(() => {
        if (this.stream === stream) this.armHeartbeat(stream);
      });
    }, wait);
    this.heartbeatTimer.unref();
  }

  /** One Heartbeat (naming the round this client is in, if any); a revoked client stops. */
  private async heartbeat(): Promise<void> {
    const client = this.client;
    const current = this.agent.currentRound;
    const req = create(pb.HeartbeatRequestSchema, current ? { round: { manifestHash: current.manifestHash, roundIndex: current.roundIndex } } : {});
    try {
      await callUnary(client.heartbeat.bind(client), req, await this.metadata(), { deadline: Date.now() + 15_000 });
      this.opts.onEvent?.({ kind: 'heartbeat', ok: true });
    } catch (err) {
      const e = asAegisError(err);
      this.opts.onEvent?.({ kind: 'heartbeat', ok: false, code: e.code });
      if (certificateRefused(e)) this.fatal(e);
      this.dropRevokedTokens(e);
    }
  }

  /** Events are handled one at a time, in order. */
  private enqueue(env: pb.ServerEnvelope): void {
    let ev: ServerEvent;
    try {
      ev = fromEventEnvelope(env);
    } catch {
      this.opts.onEvent?.({ kind: 'ignored', type: 'malformed', code: ErrorCode.InvalidArgument });
      return;
    }
    this.events = this.events.then(() => this.handle(ev)).catch((err: unknown) => {
      this.opts.onEvent?.({ kind: 'ignored', type: ev.type, code: isAegisError(err) ? err.code : 'internal' });
    });
  }

  private async handle(ev: ServerEvent): Promise<void> {
    if (ev.type === 'advertise-broadcast') this.peers.learn(ev.entries);
    if (ev.type === 'round-start') {
      // A repeated start of the round this client is in changes nothing (the agent says so).
      const current = this.agent.currentRound;
      if (!current || !sameRound(current, ev.round)) {
        this.peers.clear();
        this.training = undefined;
        // A declined round is sat out: the agent never joins it, so no keys are advertised; the
        // coordinator is told why (a reason code only) and stops waiting for this client.
        const admission = await admitRound(this.admission, ev);
        if (!admission.admitted) return this.agent.decline(ev.round, admission.code);
        this.admitted = { round: ev.round, sumBits: maskedSumBits(admission.manifest, ev.params) };
        if (admission.kind === 'training') this.training = { round: ev.round, input: admission.input };
        this.armRoundDeadline(ev.round, ev.deadlines);
        await this.opts.beforeRound?.(ev.round, ev.params);
      }
    }
    if (ev.type === 'round-outcome') await recordRoundOutcome(this.admission, ev);
    await this.agent.onEvent(ev);
    if (ev.type === 'round-outcome' && this.agent.currentRound === null) {
      clearTimeout(this.roundTimer);
      this.swapChannel();
    }
  }

  /** The snapshot the coordinator's registry serves (Trust.GetRegistry on the front end in use). */
  private async coordinatorRegistry(): Promise<Uint8Array> {
    const reply = await callUnary(this.trustClient.getRegistry.bind(this.trustClient), create(trustPb.GetRegistryRequestSchema, {}), new grpc.Metadata(), { deadline: Date.now() + 15_000 });
    return reply.snapshot;
  }

  /** Gives up on a round that outlives all its phase deadlines (plus a grace period). */
  private armRoundDeadline(round: RoundRef, d: { advertiseMs: number; shareMs: number; maskedMs: number; consistencyMs: number; unmaskMs: number } | undefined): void {
    clearTimeout(this.roundTimer);
    this.roundGiveUp = undefined;
    if (!d) return;
    const total = d.advertiseMs + d.shareMs + d.maskedMs + d.consistencyMs + d.unmaskMs + (this.opts.roundGraceMs ?? 10_000);
    this.roundGiveUp = { round, at: Date.now() + total };
    this.roundTimer = setTimeout(() => {
      this.events = this.events.then(() => this.agent.abandon(round));
    }, total);
    this.roundTimer.unref();
  }

  /**
   * Until when a call for the current round is worth making: past the round's give-up time a
   * call (and its retries) would only hold up the client's events — behind a silent network
   * each attempt would wait its whole deadline — and the round is abandoned anyway.
   */
  private roundCallsUntil(): number {
    const g = this.roundGiveUp;
    const current = this.agent.currentRound;
    return g && current && sameRound(g.round, current) ? g.at : Infinity;
  }

  /** Sends one message; retries transport failures (an identical resend is harmless), not past the round's give-up time. */
  private async send(m: ClientMessage): Promise<void> {
    if (m.type === 'masked-input') await this.acquireUploadSlot(m.sessionId);
    const env = toClientEnvelope(m);
    // With several front ends a send may fail while the stream moves to another one: give it
    // enough (bounded) retries to reach the next front end.
    const retries = this.addresses.length > 1 ? SEND_RETRIES + SEND_RETRIES_PER_FRONT_END * (this.addresses.length - 1) : SEND_RETRIES;
    let slotRetries = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        await callUnary(this.client.send.bind(this.client), env, await this.metadata(), { deadline: Math.min(Date.now() + 60_000, this.roundCallsUntil()) });
        return;
      } catch (err) {
        if (attempt > 0 && reasonOf(err) === ErrorCode.AlreadyExists) return; // the first try did arrive
        // The slot's lease ran out, or a resend came after the slot was given back: the coordinator
        // takes a masked input (and a message that large) only under a slot. Ask again.
        const reason = reasonOf(err);
        if (m.type === 'masked-input' && (reason === ErrorCode.UploadSlotRequired || reason === ErrorCode.TooLarge) && slotRetries < SLOT_RETRIES && !this.stopped) {
          slotRetries++;
          await this.acquireUploadSlot(m.sessionId);
          continue;
        }
        const revokedToken = this.dropRevokedTokens(asAegisError(err));
        if ((!isTransient(err) && !revokedToken) || attempt >= retries || this.stopped || Date.now() >= this.roundCallsUntil()) throw asAegisError(err);
        this.failures++;
        await new Promise((r) => setTimeout(r, this.backoff()));
      }
    }
  }

  /**
   * Waits for one of the coordinator's upload slots before a masked input (back-pressure that
   * keeps its memory O(m)). A coordinator without the method, or a refusal, lets the send go
   * ahead: the Send itself then gets the authoritative answer.
   */
  private async acquireUploadSlot(sessionId: Uint8Array): Promise<void> {
    try {
      await callUnary(this.client.acquireUpload.bind(this.client), create(pb.AcquireUploadRequestSchema, { sessionId }), await this.metadata(), {
        deadline: Math.min(Date.now() + 15 * 60_000, this.roundCallsUntil()),
      });
    } catch {
      // fall through to the send
    }
  }

  private renewing = false;
  private reconnectPending = false;

  /** Reopens the channel with the current certificate; the stream reconnects on its own. */
  private swapChannel(): void {
    if (!this.reconnectPending || this.stopped) return;
    this.reconnectPending = false;
    const old = this.stream;
    this.stream = null; // its end is not a failure: subscribe again at once, on the new channel
    clearTimeout(this.reconnectTimer); // a reconnect already due would open a second stream
    this.connect();
    old?.cancel();
    this.subscribe();
  }

  /**
   * Identity key rotation: has the coordinator certify `identity` for this client id (Renew with
   * `rekey`, authenticated by the current certificate, which the coordinator then revokes) and
   * moves to it — certificate, channel and the key rounds are signed with. Refused while a round
   * is running (the caller retries at its next check).
   */
  async rekey(identity: ClientIdentity): Promise<Uint8Array> {
    if (this.stopped) throw new AegisError(ErrorCode.Unavailable, 'the client is stopped');
    if (this.agent.currentRound !== null || this.renewing) throw new AegisError(ErrorCode.Unavailable, 'a round or renewal is under way; the identity key rotates at the next check');
    this.renewing = true;
    try {
      const csrDer = await createCsr(identity, this.opts.clientId, { tlsKeyType: this.wantedTlsKeyType() });
      const address = this.address;
      const renewer = new (clientFor(enroll.Enrollment))(address, this.credentials(), channelOptions(address));
      let reply: enroll.RenewReply;
      try {
        reply = await callUnary(renewer.renew.bind(renewer), create(enroll.RenewRequestSchema, { csrDer, rekey: true }), new grpc.Metadata(), { deadline: Date.now() + 15_000 }).catch(
          (e: unknown) => {
            throw asAegisError(e); // the coordinator's reason (key-already-bound, revoked, ...) for the caller's log
          },
        );
      } finally {
        renewer.close();
      }
      this.opts.identity = identity;
      this.certificateDer = reply.certificateDer;
      await this.opts.onCertificate?.(this.certificateDer);
      this.opts.onEvent?.({ kind: 'renewed', notAfter: new X509Certificate(Buffer.from(this.certificateDer)).validTo });
      // The old certificate is revoked now: move the channel at once.
      this.reconnectPending = true;
      this.swapChannel();
      return this.certificateDer;
    } finally {
      this.renewing = false;
    }
  }

  /** The TLS key type of the next certificate: the option's, else the current certificate's. */
  private wantedTlsKeyType(): TlsKeyType {
    return this.opts.tlsKeyType ?? tlsKeyTypeOf(this.certificateDer);
  }

  private async maybeRenew(): Promise<void> {
    if (this.stopped || this.renewing) return;
    const wanted = this.wantedTlsKeyType();
    if (!needsRenewal(this.certificateDer, Date.now(), this.opts.renewAfter) && wanted === tlsKeyTypeOf(this.certificateDer)) return;
    this.renewing = true;
    try {
      const csrDer = await createCsr(this.opts.identity, this.opts.clientId, { tlsKeyType: wanted });
      const address = this.address;
      const renewer = new (clientFor(enroll.Enrollment))(address, this.credentials(), channelOptions(address));
      try {
        const reply = await callUnary(renewer.renew.bind(renewer), create(enroll.RenewRequestSchema, { csrDer }), new grpc.Metadata(), { deadline: Date.now() + 15_000 });
        this.certificateDer = reply.certificateDer;
      } finally {
        renewer.close();
      }
      await this.opts.onCertificate?.(this.certificateDer);
      this.opts.onEvent?.({ kind: 'renewed', notAfter: new X509Certificate(Buffer.from(this.certificateDer)).validTo });
      // The channel moves to the new certificate between rounds (now, if none is running).
      this.reconnectPending = true;
      if (this.agent.currentRound === null) this.swapChannel();
    } catch (err) {
      const e = asAegisError(err);
      if (e.code === ErrorCode.Unauthenticated) this.fatal(e);
      else this.opts.onEvent?.({ kind: 'disconnected', code: e.code, retryInMs: this.opts.renewCheckMs ?? 60_000, address: this.address });
    } finally {
      this.renewing = false;
    }
  }
}
