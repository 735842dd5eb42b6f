/**
 * Refusing early and ending calls with their certificate, over real HTTP/2 on real TLS 1.3
 * against a real coordinator. The raw HTTP/2 client here sends a call's headers and the start of
 * a body that it never finishes: a refusal that arrives while the body is still on its way was
 * decided from the headers (or the 5-byte length prefix) alone — a coordinator that read the
 * body first would wait for bytes that never come.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import http2 from 'node:http2';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import type { ClientRunner } from '../../client/agent/connection.js';
import { createCsr, createIdentity, tlsKeyPemFor } from '../../client/enroll/csr.js';
import { issueClientCertificate, issueOperatorCertificate, KeyBindings } from '../../coordinator/auth/ca.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import type { MaskedInput } from '../../shared/protocol/messages.js';
import { toClientEnvelope } from '../../shared/rpc/convert.js';
import { callUnary } from '../../shared/rpc/service.js';
import { TLS_CLIENT_POLICY } from '../../shared/net/tls-policy.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { adminClient, bearer, credentialsOf, heartbeat, healthWatch, holdBefore, issueTokens, mtls, refusal, releaseAll, secAgg, send, subscribe, type SecAggClient } from '../support/raw-calls.js';

let c: Coordinator;
let members: Enrolled[];
let solo: Enrolled[];
let runners: ClientRunner[] = [];
const closers: { close: () => void }[] = [];

beforeAll(async () => {
  c = await startCoordinator();
  members = await enrollClients(c, 3, 'member');
  solo = await enrollClients(c, 4, 'solo');
});

afterAll(async () => {
  releaseAll();
  await Promise.all(runners.map((r) => r.stop()));
  for (const x of closers) x.close();
  await c.close();
});

interface Who {
  key: string;
  cert: string;
}
const whoOf = (e: Enrolled): Who => ({ key: tlsKeyPemFor(e.identity, e.certificateDer), cert: new X509Certificate(Buffer.from(e.certificateDer)).toString() });

/** An HTTP/2 session over mTLS to `address` as `who`. */
function h2(address: string, who?: Who): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`https://${address}`, {
    ca: c.ca.certificatePem,
    servername: 'localhost',
    ...TLS_CLIENT_POLICY,
    ...(who ? { key: who.key, cert: who.cert } : {}),
  });
  closers.push({ close: () => session.destroy() });
  return new Promise((resolve, reject) => {
    session.once('remoteSettings', () => resolve(session));
    session.once('error', reject);
  });
}

interface RawStatus {
  status: number;
  reason: string | undefined;
  message: string;
  /** Body bytes this side had handed to its socket when the status came. */
  written: number;
}

/**
 * Starts `path` with a gRPC length prefix declaring `declared` bytes, then keeps writing body
 * bytes (at most `sent`) and never ends the request. Resolves with the status the server
 * answers (and cancels the call then).
 */
function unfinishedCall(session: http2.ClientHttp2Session, path: string, declared: number, sent: number, headers: Record<string, string> = {}): Promise<RawStatus> {
  const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(declared, 1);
  let written = 0;
  let answered = false;
  req.write(prefix);
  const chunk = Buffer.alloc(Math.min(sent, 16 * 1024));
  const pump = (): void => {
    while (written < sent && !answered && !req.closed && req.write(chunk)) written += chunk.length;
    if (written < sent && !answered && !req.closed) req.once('drain', pump);
  };
  pump();
  return new Promise((resolve, reject) => {
    const take = (h: http2.IncomingHttpHeaders): void => {
      if (h['grpc-status'] === undefined || answered) return;
      answered = true;
      resolve({ status: Number(h['grpc-status']), reason: h['aegis-reason'] as string | undefined, message: decodeURIComponent(String(h['grpc-message'] ?? '')), written });
      req.close(http2.constants.NGHTTP2_CANCEL);
    };
    req.on('response', take);
    req.on('trailers', take);
    req.on('error', () => undefined);
    req.on('data', () => undefined);
    req.on('close', () => {
      if (!answered) reject(new Error(`stream closed without a status (rst ${req.rstCode})`));
    });
  });
}

const MiB = 1024 * 1024;

describe('refused at the headers, before any byte of the body is read', () => {
  test('a revoked client: its Send declaring 60 MiB is refused `revoked` while the body is still on its way; its Subscribe too', async () => {
    const victim = solo[0]!;
    const session = await h2(c.address, whoOf(victim));
    const [token] = await issueTokens(secAggOf(victim), 1);
    await c.clients.revoke(victim.clientId, 'key-compromise');
    const r = await unfinishedCall(session, '/aegis.v1.SecAgg/Send', 60 * MiB, 60 * MiB, { authorization: `Bearer ${token!}` });
    // Refused while the writer was still pumping a body that would have gone on to 60 MiB.
    expect(r).toMatchObject({ status: grpc.status.UNAUTHENTICATED, reason: ErrorCode.Unauthenticated, message: 'peer certificate refused: revoked' });
    expect(r.written).toBeLessThan(60 * MiB);
    const s = await unfinishedCall(session, '/aegis.v1.SecAgg/Subscribe', 2, 0);
    expect(s).toMatchObject({ status: grpc.status.UNAUTHENTICATED, message: 'peer certificate refused: revoked' });
    // The coordinator serves the others meanwhile.
    await expect(issueTokens(secAggOf(solo[1]!), 1)).resolves.toHaveLength(1);
    expect(c.clients.isRevoked({ clientId: victim.clientId })).toBe(true);
  });

  test('a certificate of the coordinator CA for a client id never enrolled is refused `no-identity` at the headers', async () => {
    const identity = await createIdentity();
    const ghost = await issueClientCertificate(c.ca, await createCsr(identity, 'ghost-1'), 'ghost-1', { bindings: new KeyBindings() });
    const session = await h2(c.address, { key: tlsKeyPemFor(identity, ghost.certificateDer), cert: ghost.certificatePem });
    const r = await unfinishedCall(session, '/aegis.v1.SecAgg/Send', 60 * MiB, 64 * 1024);
    expect(r).toMatchObject({ status: grpc.status.UNAUTHENTICATED, reason: ErrorCode.Unauthenticated, message: 'peer certificate refused: no-identity' });
    expect(c.clients.get('ghost-1')).toBeUndefined();
  });

  test('the wrong kind of certificate for a service is refused at the headers: a client on Admin, an operator on SecAgg', async () => {
    const asClient = await h2(c.address, whoOf(solo[1]!));
    const a = await unfinishedCall(asClient, '/aegis.v1.Admin/LaunchRound', 60 * MiB, 64 * 1024);
    expect(a).toMatchObject({ status: grpc.status.PERMISSION_DENIED, reason: ErrorCode.PermissionDenied, message: 'this call needs an operator certificate' });
    const op = await issueOperatorCertificate(c.ca, { name: 'ops' });
    const asOperator = await h2(c.address, { key: op.privateKeyPem, cert: op.certificatePem });
    const s = await unfinishedCall(asOperator, '/aegis.v1.SecAgg/Send', 60 * MiB, 64 * 1024);
    expect(s).toMatchObject({ status: grpc.status.UNAUTHENTICATED, reason: ErrorCode.Unauthenticated, message: 'peer certificate refused: no-identity' });
  });

  test('an operator certificate past its revocation is refused at the headers (`operator certificate refused: revoked`)', async () => {
    const op = await issueOperatorCertificate(c.ca, { name: 'leaked' });
    await c.clients.revokeSerials([new X509Certificate(op.certificatePem).serialNumber], { reason: 'key-compromise' });
    const session = await h2(c.address, { key: op.privateKeyPem, cert: op.certificatePem });
    const r = await unfinishedCall(session, '/aegis.v1.Admin/LaunchRound', 60 * MiB, 64 * 1024);
    expect(r).toMatchObject({ status: grpc.status.UNAUTHENTICATED, reason: ErrorCode.Unauthenticated, message: 'operator certificate refused: revoked' });
  });
});

describe('message sizes capped per call kind, from the length prefix', () => {
  test('an enrolled client: a Heartbeat, IssueTokens or Subscribe declaring 1 MiB is RESOURCE_EXHAUSTED `too-large` before its body; 64 KiB bodies are the cap', async () => {
    const session = await h2(c.address, whoOf(solo[2]!));
    for (const method of ['Heartbeat', 'IssueTokens', 'Subscribe', 'AcquireUpload']) {
      const r = await unfinishedCall(session, `/aegis.v1.SecAgg/${method}`, MiB, 4 * 1024);
      expect(r).toMatchObject({ status: grpc.status.RESOURCE_EXHAUSTED, reason: ErrorCode.TooLarge, message: `the message is larger than aegis.v1.SecAgg.${method} takes (65536 bytes)` });
    }
    const renew = await unfinishedCall(session, '/aegis.v1.Enrollment/Renew', MiB, 4 * 1024);
    expect(renew).toMatchObject({ status: grpc.status.RESOURCE_EXHAUSTED, reason: ErrorCode.TooLarge });
    // The client is not punished for it: its next ordinary call works.
    await expect(issueTokens(secAggOf(solo[2]!), 2)).resolves.toHaveLength(2);
  });

  test('a Send outside any round is capped at 64 KiB: a 60 MiB one is refused from its prefix', async () => {
    const session = await h2(c.address, whoOf(solo[2]!));
    const [token] = await issueTokens(secAggOf(solo[2]!), 1);
    const r = await unfinishedCall(session, '/aegis.v1.SecAgg/Send', 60 * MiB, 128 * 1024, { authorization: `Bearer ${token!}` });
    expect(r).toMatchObject({ status: grpc.status.RESOURCE_EXHAUSTED, reason: ErrorCode.TooLarge, message: 'the message is larger than aegis.v1.SecAgg.Send takes (65536 bytes)' });
  });

  test('Admin calls take 64 KiB except LaunchRound (a model): an operator declaring 1 MiB on ListClients is refused, on LaunchRound it is not', async () => {
    const op = await issueOperatorCertificate(c.ca, { name: 'sizes' });
    const session = await h2(c.address, { key: op.privateKeyPem, cert: op.certificatePem });
    const list = await unfinishedCall(session, '/aegis.v1.Admin/ListClients', MiB, 4 * 1024);
    expect(list).toMatchObject({ status: grpc.status.RESOURCE_EXHAUSTED, reason: ErrorCode.TooLarge });
    // LaunchRound takes the server's limit: a complete 1 MiB request is read and refused for what
    // it says (not a manifest), not for its size.
    const launch = await refusal(callUnaryAdminLaunch(op, 1024 * 1024));
    expect(launch.reason).not.toBe(ErrorCode.TooLarge);
  });

  test('both listeners announce at most 32 concurrent streams per connection', async () => {
    const main = await h2(c.address, whoOf(solo[2]!));
    expect(main.remoteSettings.maxConcurrentStreams).toBe(32);
    const enrollment = await h2(c.enrollAddress);
    expect(enrollment.remoteSettings.maxConcurrentStreams).toBe(32);
  });

  test('a 33rd stream on one connection waits until one of the 32 ends', async () => {
    const session = await h2(c.address, whoOf(solo[3]!));
    const health = healthClientOn(solo[3]!);
    // 32 Health.Watch streams hold every slot of the connection.
    const watches = Array.from({ length: 32 }, () => session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Watch', 'content-type': 'application/grpc', te: 'trailers' }));
    for (const w of watches) {
      w.end(Buffer.from([0, 0, 0, 0, 0]));
      w.on('data', () => undefined);
      w.on('error', () => undefined);
    }
    await Promise.all(watches.map((w) => new Promise((resolve) => w.once('response', resolve))));
    let answered = false;
    const late = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' });
    late.end(Buffer.from([0, 0, 0, 0, 0]));
    late.on('data', () => undefined);
    const lateDone = new Promise((resolve) => late.once('response', () => resolve((answered = true))));
    // Another connection is not held up meanwhile.
    await expect(health()).resolves.toBe('SERVING');
    expect(answered).toBe(false);
    watches[0]!.close(http2.constants.NGHTTP2_CANCEL);
    await lateDone;
    expect(answered).toBe(true);
    for (const w of watches) w.close(http2.constants.NGHTTP2_CANCEL);
  });
});

describe('a masked input needs an upload slot', () => {
  test('sent without a slot it is refused `upload-slot-required` and leaves no trace; the runner, taking a slot, completes the round with the exact sum', async () => {
    const dim = 32;
    runners = startRunners(c, members, dim);
    const held = holdBefore(runners[0]!, 'masked-input');
    await waitFor(() => members.every((m) => c.connectedClients().includes(m.clientId)), 20_000, 'three subscribers');
    await c.launch(manifest({ jobId: 'slots', round: { dim, cohort: 3, neighbors: 2 } }));
    const mine = (await held.reached) as MaskedInput;
    const m0 = secAggOf(members[0]!);
    const [token] = await issueTokens(m0, 1);
    const r = await refusal(send(m0, toClientEnvelope(mine), bearer(token!)));
    expect(r).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, reason: ErrorCode.UploadSlotRequired });
    held.release();
    const o = await c.outcomeOf('slots', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect(Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([0, 1, 2], dim).buffer))).toBe(true);
    await Promise.all(runners.map((x) => x.stop()));
    runners = [];
  });

  test('a client whose slot lapsed before its Send asks again and its input is taken', async () => {
    const dim = 16;
    runners = startRunners(c, members, dim);
    // The first slot member-0 obtains is given back at once on the coordinator's side, as when
    // its lease runs out between AcquireUpload and Send.
    const r0 = runners[0] as unknown as { acquireUploadSlot: (s: Uint8Array) => Promise<void> };
    const acquire = r0.acquireUploadSlot.bind(runners[0]);
    let acquired = 0;
    r0.acquireUploadSlot = async (sessionId) => {
      await acquire(sessionId);
      if (acquired++ === 0) c.jobs.get('lapse')!.rounds[0]!.gate.release(members[0]!.clientId);
    };
    await waitFor(() => members.every((m) => c.connectedClients().includes(m.clientId)), 20_000, 'three subscribers');
    await c.launch(manifest({ jobId: 'lapse', round: { dim, cohort: 3, neighbors: 2 } }));
    const o = await c.outcomeOf('lapse', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual(members.map((m) => m.clientId).sort());
    expect(Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([0, 1, 2], dim).buffer))).toBe(true);
    expect(acquired).toBe(2);
    await Promise.all(runners.map((x) => x.stop()));
    runners = [];
  });
});

describe('calls end with their certificate', () => {
  test('an open Health.Watch (no round logic behind it) ends `revoked` when its client certificate serial is revoked', async () => {
    const who = solo[3]!;
    const watch = watchOn(credentialsOf(c.ca.certificatePem, who));
    await watch.first;
    await c.clients.revokeSerials([new X509Certificate(Buffer.from(who.certificateDer)).serialNumber], { reason: 'key-compromise' });
    await expect(watch.ended).resolves.toMatchObject({ code: grpc.status.UNAUTHENTICATED, reason: ErrorCode.Unauthenticated, details: 'peer certificate refused: revoked' });
  });

  test("an operator's open stream ends `expired` at its certificate's notAfter, not before", async () => {
    const op = await issueOperatorCertificate(c.ca, { name: 'brief', ttlMs: 3_000 });
    const notAfter = Date.parse(new X509Certificate(op.certificatePem).validTo);
    const watch = watchOn(mtls(c.ca.certificatePem, op.privateKeyPem, op.certificateDer));
    await watch.first;
    const ended = await watch.ended;
    expect(ended).toMatchObject({ code: grpc.status.UNAUTHENTICATED, reason: ErrorCode.Unauthenticated, details: 'operator certificate refused: expired' });
    expect(Date.now()).toBeGreaterThanOrEqual(notAfter);
  });

  test("a client's Subscribe ends `expired` at its certificate's notAfter", async () => {
    // A certificate of the coordinator CA for an enrolled client, one minute long (the shortest
    // the CA issues), made to expire on the coordinator's clock 3 s from now.
    const e = solo[1]!;
    const brief = await issueClientCertificate(c.ca, await createCsr(e.identity, e.clientId), e.clientId, { bindings: new KeyBindings(), ttlMs: 60_000, now: Date.now() - 57_000 });
    const notAfter = Date.parse(new X509Certificate(brief.certificatePem).validTo);
    const cl = secAgg(c.address, credentialsOf(c.ca.certificatePem, { identity: e.identity, certificateDer: brief.certificateDer }));
    closers.push(cl);
    const [t] = await issueTokens(cl, 1);
    const s = subscribe(cl, bearer(t!));
    await waitFor(() => c.connectedClients().includes(e.clientId), 10_000, 'subscribed');
    await expect(s.ended).resolves.toMatchObject({ code: grpc.status.UNAUTHENTICATED, reason: ErrorCode.Unauthenticated, details: 'peer certificate refused: expired' });
    expect(Date.now()).toBeGreaterThanOrEqual(notAfter);
    await waitFor(() => !c.connectedClients().includes(e.clientId), 10_000, 'stream detached');
  });
});

describe('one read of the peer certificate per TLS connection', () => {
  test("admission reads a connection's peer certificate from the server's TLS socket once and hands it to every call's handler; a revocation still refuses the next call on that connection", async () => {
    const [who] = await enrollClients(c, 1, 'one-read');
    const admission = Reflect.get(c, 'admission') as { certificateReads: number };
    const asked: number[] = [];
    const original = tls.TLSSocket.prototype.getPeerCertificate;
    tls.TLSSocket.prototype.getPeerCertificate = function (this: tls.TLSSocket & { _tlsOptions?: { isServer?: boolean } }, ...args: [boolean?]) {
      if (this._tlsOptions?.isServer) asked.push(1);
      return original.apply(this, args as [true]);
    } as typeof original;
    try {
      const reads = admission.certificateReads;
      const client = secAggOf(who!);
      const tokens = await issueTokens(client, 3);
      expect(asked).toHaveLength(1);
      await issueTokens(client, 1);
      await heartbeat(client, bearer(tokens[0]!));
      await heartbeat(client, bearer(tokens[1]!));
      expect(asked).toHaveLength(1);
      expect(admission.certificateReads - reads).toBe(1);
      // Another channel is another connection: its certificate is read again, once.
      const second = secAggOf(who!);
      await issueTokens(second, 1);
      await heartbeat(second, bearer(tokens[2]!));
      expect(asked).toHaveLength(2);
      expect(admission.certificateReads - reads).toBe(2);
    } finally {
      tls.TLSSocket.prototype.getPeerCertificate = original;
    }
    // What is kept is the certificate, not the verdict: once its client is revoked, the next call on
    // the same connection is refused.
    const client = secAggOf(who!);
    await issueTokens(client, 1);
    await c.clients.revoke(who!.clientId, 'key-compromise');
    await expect(refusal(issueTokens(client, 1))).resolves.toMatchObject({ reason: ErrorCode.Unauthenticated });
  });
});

function secAggOf(e: Enrolled): SecAggClient {
  const cl = secAgg(c.address, credentialsOf(c.ca.certificatePem, e));
  closers.push(cl);
  return cl;
}

const Health = grpc.makeGenericClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'Health');
type HealthClient = grpc.Client & {
  check: (req: { service: string }, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void) => void;
};
const OWN: grpc.ChannelOptions = { 'grpc.use_local_subchannel_pool': 1 };

function healthClientOn(e: Enrolled): () => Promise<string> {
  const h = new Health(c.address, credentialsOf(c.ca.certificatePem, e), OWN) as unknown as HealthClient;
  closers.push(h);
  return () => new Promise((resolve, reject) => h.check({ service: '' }, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(String(res?.status)))));
}

function watchOn(creds: grpc.ChannelCredentials): ReturnType<typeof healthWatch> {
  const w = healthWatch(c.address, creds);
  closers.push(w);
  return w;
}

async function callUnaryAdminLaunch(op: { privateKeyPem: string; certificateDer: Uint8Array }, bytes: number): Promise<unknown> {
  const cl = adminClient(c.address, mtls(c.ca.certificatePem, op.privateKeyPem, op.certificateDer));
  closers.push(cl);
  return callUnary(cl.launchRound.bind(cl), create(admin.LaunchRoundRequestSchema, { manifestJson: new Uint8Array(bytes) }), new grpc.Metadata(), { deadline: Date.now() + 20_000 });
}
