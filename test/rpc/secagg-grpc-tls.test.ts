/**
 * End to end over real gRPC and TLS 1.3 on 127.0.0.1: a SecAgg stub served with the shared glue
 * (shared/rpc/), health and reflection on, typed errors arriving as statuses with their reason.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type * as M from '../../shared/protocol/messages.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { fromClientEnvelope, fromServerEnvelope, phaseFromProto, phaseToProto, toClientEnvelope, toServerEnvelope } from '../../shared/rpc/convert.js';
import { addHealthAndReflection } from '../../shared/rpc/server.js';
import { addService, callUnary, clientFor, serverStream, unary, type MethodsOf, type TypedClient } from '../../shared/rpc/service.js';
import { reasonOf } from '../../shared/rpc/status.js';
import { makeTlsFixture } from './tls-fixture.js';


const SESSION = new Uint8Array(32).fill(7);
const BROADCASTS: M.ServerMessage[] = [
  { type: 'consistency-request', sessionId: SESSION, u3: ['alice', 'bob', 'carol'] },
  { type: 'share-broadcast', sessionId: SESSION, u2: ['alice', 'bob'], shares: [{ peer: 'bob', ciphertext: new Uint8Array([1, 2, 3]) }] },
];

const previousMinVersion = tls.DEFAULT_MIN_VERSION;
let server: grpc.Server;
let address: string;
let port: number;
let caPem: string;
let credentials: grpc.ChannelCredentials;
let client: TypedClient<MethodsOf<typeof pb.SecAgg>>;
const received: M.ClientMessage[] = [];

beforeAll(async () => {
  tls.DEFAULT_MIN_VERSION = 'TLSv1.3';
  const fx = await makeTlsFixture();
  server = new grpc.Server();
  addService(server, pb.SecAgg, {
    subscribe: serverStream(function* (req) {
      for (const m of BROADCASTS) yield toServerEnvelope(m);
      if (req.jobId !== 'job-1') throw new AegisError(ErrorCode.SessionMismatch, `no job '${req.jobId}' runs here`);
    }),
    send: unary((env) => {
      const msg = fromClientEnvelope(env);
      // The stub takes a masked input (echoing the phase it is in) and refuses everything else.
      if (msg.type !== 'masked-input') throw new AegisError(ErrorCode.WrongPhase, `a ${msg.type} message is not taken in phase masked-input`);
      received.push(msg);
      return create(pb.SendReplySchema, { phase: phaseToProto(Phase.MaskedInput) });
    }),
    heartbeat: unary((req) => create(pb.HeartbeatReplySchema, { phase: req.round ? phaseToProto(Phase.MaskedInput) : 0 })),
    issueTokens: unary(() => create(pb.IssueTokensReplySchema, {})),
    acquireUpload: unary(() => create(pb.AcquireUploadReplySchema, {})),
    fetchModel: serverStream(function* () {
      yield create(pb.ModelChunkSchema, {});
    }),
  });
  addHealthAndReflection(server, [pb.SecAgg]);
  const creds = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(fx.serverKeyPem), cert_chain: Buffer.from(fx.serverCertPem) }], false);
  caPem = fx.caPem;
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  address = `127.0.0.1:${port}`;
  credentials = grpc.credentials.createSsl(Buffer.from(fx.caPem));
  client = new (clientFor(pb.SecAgg))(address, credentials);
});

afterAll(async () => {
  client?.close();
  await new Promise<void>((resolve) => (server ? server.tryShutdown(() => resolve()) : resolve()));
  tls.DEFAULT_MIN_VERSION = previousMinVersion;
});

/** Completes a TLS handshake with the server and reports the negotiated version. */
function handshake(options: tls.ConnectionOptions): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: caPem, ALPNProtocols: ['h2'], ...options }, () => {
      const version = socket.getProtocol();
      socket.destroy();
      resolve(version);
    });
    socket.once('error', reject);
  });
}

describe('SecAgg over gRPC with TLS 1.3', () => {
  test('the server negotiates TLS 1.3 and refuses TLS 1.2', async () => {
    await expect(handshake({})).resolves.toBe('TLSv1.3');
    await expect(handshake({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' })).rejects.toThrow(/protocol version|unsupported protocol/i);
  });

  test('a masked input sent by a client arrives intact and the reply names the phase', async () => {
    const msg: M.MaskedInput = { type: 'masked-input', sessionId: SESSION, clientId: 'alice', vector: Uint32Array.from([0, 1, 0xffffffff, 42]), bits: 32 };
    const reply = await callUnary(client.send.bind(client), toClientEnvelope(msg));
    expect(phaseFromProto(reply.phase)).toBe(Phase.MaskedInput);
    expect(received).toEqual([msg]);
  });

  test('a message in the wrong phase reaches the client as FAILED_PRECONDITION with reason wrong-phase', async () => {
    const msg: M.ConsistencySignature = { type: 'consistency-signature', sessionId: SESSION, clientId: 'bob', signature: new Uint8Array(64) };
    const err = await callUnary(client.send.bind(client), toClientEnvelope(msg)).then(
      () => undefined,
      (e: unknown) => e as grpc.ServiceError,
    );
    expect(err?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err?.details).toBe('a consistency-signature message is not taken in phase masked-input');
    expect(reasonOf(err)).toBe(ErrorCode.WrongPhase);
    expect(err?.metadata.get('aegis-reason-enum')).toEqual(['ERROR_REASON_WRONG_PHASE']);
  });

  test('a ragged vector reaches the client as INVALID_ARGUMENT with reason invalid-argument', async () => {
    const env = create(pb.ClientEnvelopeSchema, { message: { case: 'maskedInput', value: { sessionId: SESSION, clientId: 'carol', vector: new Uint8Array(5) } } });
    const err = await callUnary(client.send.bind(client), env).then(
      () => undefined,
      (e: unknown) => e as grpc.ServiceError,
    );
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(reasonOf(err)).toBe(ErrorCode.InvalidArgument);
  });

  test('Subscribe streams the two broadcasts in order, then ends', async () => {
    const stream = client.subscribe(create(pb.SubscribeRequestSchema, { jobId: 'job-1' }));
    const got: (M.ServerMessage | undefined)[] = [];
    for await (const env of stream as AsyncIterable<pb.ServerEnvelope>) got.push(fromServerEnvelope(env));
    expect(got).toEqual(BROADCASTS);
  });

  test('a Subscribe that fails after two broadcasts ends with the status and reason of the failure', async () => {
    const stream = client.subscribe(create(pb.SubscribeRequestSchema, { jobId: 'job-2' }));
    const got: pb.ServerEnvelope[] = [];
    const err = await (async () => {
      try {
        for await (const env of stream as AsyncIterable<pb.ServerEnvelope>) got.push(env);
      } catch (e) {
        return e as grpc.ServiceError;
      }
      return undefined;
    })();
    expect(got).toHaveLength(2);
    expect(err?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(reasonOf(err)).toBe(ErrorCode.SessionMismatch);
  });

  test('the health service answers SERVING for the server and for aegis.v1.SecAgg', async () => {
    const Health = grpc.makeGenericClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'Health');
    const health = new Health(address, credentials) as unknown as {
      check: (req: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void) => void;
      close: () => void;
    };
    try {
      for (const service of ['', 'aegis.v1.SecAgg']) {
        const res = await new Promise<{ status: string } | undefined>((resolve, reject) =>
          health.check({ service }, (err, r) => (err ? reject(err) : resolve(r))),
        );
        expect(res?.status).toBe('SERVING');
      }
    } finally {
      health.close();
    }
  });

  test('the health service keeps the error contract: bytes that are no HealthCheckRequest are INVALID_ARGUMENT invalid-argument, an unknown service NOT_FOUND not-found; it still answers', async () => {
    const raw = new grpc.Client(address, credentials);
    const call = (path: string, bytes: Uint8Array): Promise<{ code: grpc.status; reason: string | undefined; stream?: boolean }> =>
      new Promise((resolve) => {
        const id = (b: Buffer): Buffer => b;
        if (path.endsWith('/Watch')) {
          const s = raw.makeServerStreamRequest(path, id, id, Buffer.from(bytes));
          s.on('data', () => s.cancel());
          s.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, reason: reasonOf(e), stream: true }));
          return;
        }
        raw.makeUnaryRequest(path, id, id, Buffer.from(bytes), (e: grpc.ServiceError | null) => resolve({ code: e ? e.code : grpc.status.OK, reason: e ? reasonOf(e) : undefined }));
      });
    try {
      // A field tag whose varint never ends: no protobuf message.
      const garbage = Uint8Array.from([0xff]);
      for (const method of ['Check', 'Watch', 'List']) {
        expect(await call(`/grpc.health.v1.Health/${method}`, garbage)).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: ErrorCode.InvalidArgument });
      }
      const unknown = new BinaryWriter().tag(1, 2).string('no.such.Service').finish();
      expect(await call('/grpc.health.v1.Health/Check', unknown)).toEqual({ code: grpc.status.NOT_FOUND, reason: ErrorCode.NotFound });
      // A Watch of an unknown service is no refusal: it streams SERVICE_UNKNOWN (ended here by the test).
      expect(await call('/grpc.health.v1.Health/Watch', unknown)).toMatchObject({ code: grpc.status.CANCELLED, reason: undefined });
      expect(await call('/grpc.health.v1.Health/Check', new Uint8Array(0))).toEqual({ code: grpc.status.OK, reason: undefined });
    } finally {
      raw.close();
    }
  });

  test('reflection lists aegis.v1.SecAgg', async () => {
    // ServerReflectionRequest { list_services = 7: "*" }, hand-encoded: the test needs no reflection stubs.
    const request = new BinaryWriter().tag(7, 2).string('*').finish();
    const raw = new grpc.Client(address, credentials);
    try {
      const call = raw.makeBidiStreamRequest(
        '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
        (b: Uint8Array) => Buffer.from(b),
        (b: Buffer) => new Uint8Array(b),
      );
      const response = await new Promise<Uint8Array>((resolve, reject) => {
        call.once('data', (d: Uint8Array) => resolve(d));
        call.once('error', reject);
        call.write(request);
        call.end();
      });
      call.cancel();
      expect(listedServices(response)).toEqual(['aegis.v1.SecAgg']);
    } finally {
      raw.close();
    }
  });
});

/** ServerReflectionResponse.list_services_response (6) -> ListServiceResponse.service (1) -> name (1). */
function listedServices(response: Uint8Array): string[] {
  const names: string[] = [];
  const fields = (bytes: Uint8Array, fn: (no: number, r: BinaryReader) => boolean): void => {
    const r = new BinaryReader(bytes);
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if (!fn(no, r)) r.skip(wt);
    }
  };
  fields(response, (no, r) => {
    if (no !== 6) return false;
    fields(r.bytes(), (n2, r2) => {
      if (n2 !== 1) return false;
      fields(r2.bytes(), (n3, r3) => (n3 === 1 ? (names.push(r3.string()), true) : false));
      return true;
    });
    return true;
  });
  return names;
}
