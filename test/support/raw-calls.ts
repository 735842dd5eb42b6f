/**
 * Raw calls against a real coordinator for the security and hostile-input suites: mTLS
 * channels with a chosen certificate, single-use tokens, a pass-through client that puts any
 * bytes on the wire, raw TLS handshakes, statuses read back as (code, reason, details), and a
 * hook on a ClientRunner's outgoing messages so a test can hold one back (keeping the round in a
 * known phase) while it attacks. Nothing is mocked: every call crosses loopback TLS 1.3.
 */
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import type { ClientRunner } from '../../client/agent/connection.js';
import { tlsKeyPemFor } from '../../client/enroll/csr.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ClientMessage } from '../../shared/protocol/messages.js';
import { callUnary, clientFor, type MethodsOf, type TypedClient } from '../../shared/rpc/service.js';
import { reasonOf } from '../../shared/rpc/status.js';
import type { Enrolled } from './cluster.js';

export type SecAggClient = TypedClient<MethodsOf<typeof pb.SecAgg>>;
export type EnrollmentClient = TypedClient<MethodsOf<typeof enroll.Enrollment>>;
export type AdminClient = TypedClient<MethodsOf<typeof admin.Admin>>;

/** What a refused call came back with; `reason` is the `aegis-reason` trailer, if any. */
export interface Refusal {
  code: grpc.status;
  codeName: string;
  reason: string | undefined;
  details: string;
}

/** The refusal `p` ends with; throws if it succeeds. */
export async function refusal(p: Promise<unknown>): Promise<Refusal> {
  try {
    await p;
  } catch (e) {
    const err = e as grpc.ServiceError;
    if (typeof err.code !== 'number') throw e;
    return { code: err.code, codeName: grpc.status[err.code], reason: reasonOf(err), details: err.details };
  }
  throw new Error('the call was expected to be refused but succeeded');
}

/** A certificate (DER) and its key as channel credentials trusting only `caPem`. */
export function mtls(caPem: string, keyPem: string, certificateDer: Uint8Array): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(Buffer.from(caPem), Buffer.from(keyPem), Buffer.from(new X509Certificate(Buffer.from(certificateDer)).toString()));
}

export function credentialsOf(caPem: string, who: Pick<Enrolled, 'identity' | 'certificateDer'>): grpc.ChannelCredentials {
  return mtls(caPem, tlsKeyPemFor(who.identity, who.certificateDer), who.certificateDer);
}

/** Every test channel gets its own connection, so one test's certificate never serves another. */
const OWN_CHANNEL: grpc.ChannelOptions = { 'grpc.use_local_subchannel_pool': 1, 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 };

export function secAgg(address: string, creds: grpc.ChannelCredentials): SecAggClient {
  return new (clientFor(pb.SecAgg))(address, creds, OWN_CHANNEL);
}

export function enrollment(address: string, creds: grpc.ChannelCredentials): EnrollmentClient {
  return new (clientFor(enroll.Enrollment))(address, creds, OWN_CHANNEL);
}

export function adminClient(address: string, creds: grpc.ChannelCredentials): AdminClient {
  return new (clientFor(admin.Admin))(address, creds, OWN_CHANNEL);
}

export function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

export async function issueTokens(client: SecAggClient, count: number): Promise<string[]> {
  const r = await callUnary(client.issueTokens.bind(client), create(pb.IssueTokensRequestSchema, { count }));
  return [...r.tokens];
}

/** A pool of a client's single-use tokens, refilled over mTLS as it runs out. */
export class TokenPool {
  private pool: string[] = [];
  constructor(private readonly client: SecAggClient) {}
  async next(): Promise<grpc.Metadata> {
    if (this.pool.length === 0) this.pool = await issueTokens(this.client, 64);
    return bearer(this.pool.shift()!);
  }
}

export async function send(client: SecAggClient, env: pb.ClientEnvelope, md: grpc.Metadata): Promise<pb.SendReply> {
  return callUnary(client.send.bind(client), env, md, { deadline: Date.now() + 10_000 });
}

export async function heartbeat(client: SecAggClient, md: grpc.Metadata): Promise<pb.HeartbeatReply> {
  return callUnary(client.heartbeat.bind(client), create(pb.HeartbeatRequestSchema, {}), md, { deadline: Date.now() + 10_000 });
}

/** The outcome of a raw call: the reply bytes (a stream's messages), or the status it was refused with. */
export type RawOutcome = { ok: true; replies: Buffer[] } | { ok: false; refusal: Refusal };

/**
 * A client that puts the given bytes on the wire as they are, on any method path: `unary` for
 * unary methods, `stream` for server-streaming ones (it collects the messages until the status;
 * `untilHeaders` cancels the call once the server sent its headers, for a stream that stays open).
 */
export function rawClient(
  address: string,
  creds: grpc.ChannelCredentials,
): {
  unary: (path: string, bytes: Uint8Array, md: grpc.Metadata) => Promise<Buffer>;
  stream: (path: string, bytes: Uint8Array, md: grpc.Metadata, opts?: { untilHeaders?: boolean }) => Promise<RawOutcome>;
  close: () => void;
} {
  const identity = (b: Buffer): Buffer => b;
  const client = new grpc.Client(address, creds, OWN_CHANNEL);
  return {
    unary: (path, bytes, md) =>
      new Promise((resolve, reject) =>
        client.makeUnaryRequest(path, identity, identity, Buffer.from(bytes), md, { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res ?? Buffer.alloc(0)))),
      ),
    stream: (path, bytes, md, opts = {}) =>
      new Promise((resolve) => {
        const call = client.makeServerStreamRequest(path, identity, identity, Buffer.from(bytes), md, { deadline: Date.now() + 10_000 });
        const replies: Buffer[] = [];
        let headers = false;
        call.on('metadata', () => {
          headers = true;
          if (opts.untilHeaders) call.cancel();
        });
        call.on('data', (b: Buffer) => replies.push(b));
        call.on('error', (e: grpc.ServiceError) => {
          if (e.code === grpc.status.CANCELLED && headers && opts.untilHeaders) resolve({ ok: true, replies });
          else resolve({ ok: false, refusal: { code: e.code, codeName: grpc.status[e.code], reason: reasonOf(e), details: e.details } });
        });
        call.on('status', (s: grpc.StatusObject) => {
          if (s.code === grpc.status.OK) resolve({ ok: true, replies });
        });
      }),
    close: () => client.close(),
  };
}

/** A client for `/aegis.v1.SecAgg/Send` that puts the given bytes on the wire as they are. */
export function rawSendClient(address: string, creds: grpc.ChannelCredentials): { send: (bytes: Uint8Array, md: grpc.Metadata) => Promise<Buffer>; close: () => void } {
  const raw = rawClient(address, creds);
  return { send: (bytes, md) => raw.unary('/aegis.v1.SecAgg/Send', bytes, md), close: raw.close };
}

/** Opens a Subscribe stream; `ended` resolves with the status it ends with. */
export function subscribe(client: SecAggClient, md: grpc.Metadata): { stream: grpc.ClientReadableStream<pb.ServerEnvelope>; messages: pb.ServerEnvelope[]; ended: Promise<Refusal | 'ok'> } {
  const stream = client.subscribe(create(pb.SubscribeRequestSchema, {}), md);
  const messages: pb.ServerEnvelope[] = [];
  stream.on('data', (m: pb.ServerEnvelope) => messages.push(m));
  const ended = new Promise<Refusal | 'ok'>((resolve) => {
    stream.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, codeName: grpc.status[e.code], reason: reasonOf(e), details: e.details }));
    stream.on('status', (s: grpc.StatusObject) => {
      if (s.code === grpc.status.OK) resolve('ok');
    });
  });
  return { stream, messages, ended };
}

/** `grpc.health.v1.Health/Check` for `service` ('' = the server). */
export async function healthStatus(address: string, creds: grpc.ChannelCredentials, service = ''): Promise<string> {
  const Health = grpc.makeGenericClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'Health');
  const health = new Health(address, creds, OWN_CHANNEL) as unknown as grpc.Client & {
    check: (req: { service: string }, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void) => void;
  };
  try {
    return await new Promise<string>((resolve, reject) =>
      health.check({ service }, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err, res) => (err ? reject(err) : resolve(String(res?.status)))),
    );
  } finally {
    health.close();
  }
}

/**
 * An open `grpc.health.v1.Health/Watch` stream (a stream with no round logic behind it):
 * `first` resolves with its first status message, `ended` with the status it ends with.
 */
export function healthWatch(address: string, creds: grpc.ChannelCredentials): { first: Promise<unknown>; ended: Promise<Refusal>; close: () => void } {
  const Health = grpc.makeGenericClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'Health');
  const health = new Health(address, creds, OWN_CHANNEL) as unknown as grpc.Client & { watch: (req: { service: string }) => grpc.ClientReadableStream<{ status: string }> };
  const stream = health.watch({ service: '' });
  const first = new Promise((resolve) => stream.once('data', resolve));
  const ended = new Promise<Refusal>((resolve) => stream.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, codeName: grpc.status[e.code], reason: reasonOf(e), details: e.details })));
  return { first, ended, close: () => health.close() };
}

export type Handshake = { ok: true; protocol: string | null; alpn: string | false | null } | { ok: false; error: string };

/**
 * A raw TLS handshake to `address` (ALPN h2, as gRPC offers). In TLS 1.3 the server checks the
 * client certificate after the client considers the handshake done, so this waits briefly after
 * 'secureConnect' for the server's alert before calling the connection accepted. A refusal is
 * the alert's message, or "closed by the server after N bytes" when the server just closes
 * (Node checks a presented certificate's chain itself after the handshake and destroys the
 * socket without an alert; OpenSSL sends "certificate required" when none is presented).
 */
export function handshake(address: string, caPem: string, extra: tls.ConnectionOptions = {}): Promise<Handshake> {
  const [host, port] = address.split(':') as [string, string];
  return new Promise((resolve) => {
    let settled = false;
    const done = (h: Handshake): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(h);
    };
    const socket = tls.connect({ host, port: Number(port), ca: [caPem], servername: 'localhost', ALPNProtocols: ['h2'], ...extra }, () => {
      // Read whatever the server sends (its HTTP/2 SETTINGS, or an alert) before deciding.
      setTimeout(() => done({ ok: true, protocol: socket.getProtocol(), alpn: socket.alpnProtocol }), 300);
    });
    let received = 0;
    socket.on('data', (d: Buffer) => (received += d.length));
    socket.on('error', (e: Error) => done({ ok: false, error: e.message }));
    socket.on('close', () => done({ ok: false, error: `closed by the server after ${received} bytes` }));
  });
}

/**
 * Hooks a runner's outgoing protocol messages: `hook` runs before each is sent (and may wait).
 * The runner's agent calls `this.send` at call time, so replacing it on the instance is enough.
 */
export function onSend(runner: ClientRunner, hook: (m: ClientMessage) => Promise<void> | void, after?: (m: ClientMessage, err?: unknown) => void): void {
  const r = runner as unknown as { send: (m: ClientMessage) => Promise<void> };
  const original = r.send.bind(runner);
  r.send = async (m: ClientMessage) => {
    await hook(m);
    try {
      await original(m);
    } catch (err) {
      after?.(m, err);
      throw err;
    }
    after?.(m);
  };
}

export interface Held {
  /** Resolves with the message when the runner is about to send it (held back). */
  reached: Promise<ClientMessage>;
  /** Lets it go. */
  release: () => void;
  /** Resolves once the released message was taken by the coordinator (rejects if refused). */
  sent: Promise<void>;
}

const holds = new Set<() => void>();

/** Lets every held message go (for `afterAll`: a runner stuck at a gate cannot stop). */
export function releaseAll(): void {
  for (const go of holds) go();
  holds.clear();
}

/**
 * Holds back the runner's first message of `type` until `release()`. `reached` gives the very
 * message object (no copy: a structured clone would come from another realm under Jest's VM
 * modules and fail `instanceof Uint32Array`); treat it as read-only.
 */
export function holdBefore(runner: ClientRunner, type: ClientMessage['type']): Held {
  let reach!: (m: ClientMessage) => void;
  let go!: () => void;
  const reached = new Promise<ClientMessage>((r) => (reach = r));
  const gate = new Promise<void>((r) => (go = r));
  holds.add(go);
  let settle!: (err?: unknown) => void;
  const sent = new Promise<void>((resolve, reject) => (settle = (err?: unknown) => (err === undefined ? resolve() : reject(err instanceof Error ? err : new Error(String(err))))));
  let seen = false;
  let mine: ClientMessage | undefined;
  onSend(
    runner,
    async (m) => {
      if (m.type !== type || seen) return;
      seen = true;
      mine = m;
      reach(m);
      await gate;
    },
    (m, err) => {
      if (m === mine) settle(err);
    },
  );
  return { reached, release: go, sent };
}

/**
 * Makes the runner drop out before its first message of `type`: that message is never sent
 * (the runner sees a transport failure). Resolves with the message it would have sent.
 */
export function dropBefore(runner: ClientRunner, type: ClientMessage['type']): Promise<ClientMessage> {
  let seen = false;
  return new Promise((resolve) =>
    onSend(runner, (m) => {
      if (m.type !== type || seen) return;
      seen = true;
      resolve(m);
      throw new AegisError(ErrorCode.Unavailable, 'dropped by the test');
    }),
  );
}
