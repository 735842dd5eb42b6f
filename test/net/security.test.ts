/**
 * The coordinator's transport security over real gRPC and TLS 1.3 on loopback, nothing mocked:
 * TLS 1.3 only on both listeners, client certificates required and checked against the CA,
 * revocation on the next call, single-use EdDSA round tokens (missing, replayed, expired,
 * not yet valid, wrong audience, alg none, foreign key, another client's), the certificate
 * identity bound to every message's client id, one key per id at enrollment, one-time
 * enrollment tokens, and Admin for operators only.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { randomBytes, X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { SignJWT } from 'jose';
import type { ClientRunner } from '../../client/agent/connection.js';
import { createCsr, createIdentity, tlsKeyPemFor, type ClientIdentity } from '../../client/enroll/csr.js';
import { createCa, issueClientCertificate, issueOperatorCertificate, KeyBindings } from '../../coordinator/auth/ca.js';
import { TOKEN_AUDIENCE, TokenIssuer } from '../../coordinator/auth/tokens.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { okpPrivateKeyObject } from '../../shared/crypto/okp.js';
import { ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { AdvertiseKeys } from '../../shared/protocol/messages.js';
import { toClientEnvelope } from '../../shared/rpc/convert.js';
import { callUnary } from '../../shared/rpc/service.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import {
  adminClient,
  bearer,
  credentialsOf,
  enrollment,
  handshake,
  heartbeat,
  holdBefore,
  issueTokens,
  mtls,
  refusal,
  releaseAll,
  secAgg,
  send,
  subscribe,
  TokenPool,
  type SecAggClient,
} from '../support/raw-calls.js';

const previousMinVersion = tls.DEFAULT_MIN_VERSION;
let c: Coordinator;
let tokenSeed: Uint8Array;
let members: Enrolled[];
let solo: Enrolled[];
let runners: ClientRunner[] = [];
const closers: { close: () => void }[] = [];

function client(who: Enrolled): SecAggClient {
  const cl = secAgg(c.address, credentialsOf(c.ca.certificatePem, who));
  closers.push(cl);
  return cl;
}

const noop = create(pb.ClientEnvelopeSchema, {});
const unauthenticated = (detail: RegExp) => ({ code: grpc.status.UNAUTHENTICATED, codeName: 'UNAUTHENTICATED', reason: ErrorCode.Unauthenticated, details: expect.stringMatching(detail) });

beforeAll(async () => {
  const tokens = TokenIssuer.create();
  tokenSeed = tokens.exportSeed();
  c = await startCoordinator({ tokens });
  members = await enrollClients(c, 4, 'member');
  solo = await enrollClients(c, 3, 'solo');
});

afterAll(async () => {
  releaseAll();
  await Promise.all(runners.map((r) => r.stop()));
  for (const x of closers) x.close();
  await c.close();
  tls.DEFAULT_MIN_VERSION = previousMinVersion;
});

describe('TLS 1.3 only, client certificates required on the main listener', () => {
  test('an enrolled client completes a TLS 1.3 handshake (ALPN h2) on the main listener; TLS 1.2 is refused there', async () => {
    const who = { key: tlsKeyPemFor(solo[0]!.identity, solo[0]!.certificateDer), cert: new X509Certificate(Buffer.from(solo[0]!.certificateDer)).toString() };
    await expect(handshake(c.address, c.ca.certificatePem, who)).resolves.toEqual({ ok: true, protocol: 'TLSv1.3', alpn: 'h2' });
    const v12 = await handshake(c.address, c.ca.certificatePem, { ...who, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    expect(v12.ok).toBe(false);
    // The server's alert, not a local refusal: the client offered TLS 1.2 and was answered "protocol version".
    expect(v12.ok ? '' : v12.error).toMatch(/alert protocol version/);
  });

  test('the enrollment listener authenticates only the server, over TLS 1.3; TLS 1.2 is refused there too', async () => {
    await expect(handshake(c.enrollAddress, c.ca.certificatePem)).resolves.toEqual({ ok: true, protocol: 'TLSv1.3', alpn: 'h2' });
    const v12 = await handshake(c.enrollAddress, c.ca.certificatePem, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    expect(v12.ok).toBe(false);
    expect(v12.ok ? '' : v12.error).toMatch(/alert protocol version/);
  });

  test('without a client certificate the main listener ends the handshake ("certificate required") and a call fails UNAVAILABLE', async () => {
    const h = await handshake(c.address, c.ca.certificatePem);
    expect(h.ok).toBe(false);
    expect(h.ok ? '' : h.error).toMatch(/alert certificate required/);
    const anon = secAgg(c.address, grpc.credentials.createSsl(Buffer.from(c.ca.certificatePem)));
    closers.push(anon);
    const r = await refusal(callUnary(anon.issueTokens.bind(anon), create(pb.IssueTokensRequestSchema, { count: 1 }), new grpc.Metadata(), { deadline: Date.now() + 5_000 }));
    expect(r.code).toBe(grpc.status.UNAVAILABLE);
    expect(r.reason).toBeUndefined();
  });

  test('a certificate from another CA (same client id, same key as an enrolled client) is refused: the connection is closed before any HTTP/2 byte', async () => {
    const other = await createCa({ name: 'other CA' });
    const forged = await issueClientCertificate(other, await createCsr(solo[0]!.identity, solo[0]!.clientId), solo[0]!.clientId, { bindings: new KeyBindings() });
    const h = await handshake(c.address, c.ca.certificatePem, { key: tlsKeyPemFor(solo[0]!.identity, forged.certificateDer), cert: forged.certificatePem });
    expect(h.ok).toBe(false);
    // grpc-js hands the chain check to Node, which destroys the socket without a TLS alert and
    // before the server's HTTP/2 preface: nothing of the gRPC server is reachable.
    expect(h).toEqual({ ok: false, error: 'closed by the server after 0 bytes' });
    const cl = secAgg(c.address, mtls(c.ca.certificatePem, tlsKeyPemFor(solo[0]!.identity, forged.certificateDer), forged.certificateDer));
    closers.push(cl);
    const r = await refusal(callUnary(cl.issueTokens.bind(cl), create(pb.IssueTokensRequestSchema, { count: 1 }), new grpc.Metadata(), { deadline: Date.now() + 5_000 }));
    expect(r.code).toBe(grpc.status.UNAVAILABLE);
    expect(r.reason).toBeUndefined();
  });
});

describe('the certificate identity is the client id of every round message', () => {
  test("a message naming another member is refused (PERMISSION_DENIED, unknown-sender) and the round completes with the exact sum", async () => {
    const dim = 64;
    runners = startRunners(c, members, dim);
    const held = holdBefore(runners[0]!, 'advertise-keys');
    await waitFor(() => members.every((m) => c.connectedClients().includes(m.clientId)), 20_000, 'four subscribers');
    await c.launch(manifest({ round: { dim, cohort: 4, neighbors: 3 } }));
    const mine = (await held.reached) as AdvertiseKeys;

    const m0 = client(members[0]!);
    const pool = new TokenPool(m0);
    // member-0's certificate, member-1's id.
    const asOther = await refusal(send(m0, toClientEnvelope({ ...mine, clientId: members[1]!.clientId }), await pool.next()));
    expect(asOther).toEqual({ code: grpc.status.PERMISSION_DENIED, codeName: 'PERMISSION_DENIED', reason: ErrorCode.UnknownSender, details: expect.stringMatching(/another client/) });
    // member-0's real message, but on member-2's connection (its certificate and its token).
    const m2 = client(members[2]!);
    const onOther = await refusal(send(m2, toClientEnvelope(mine), bearer((await issueTokens(m2, 1))[0]!)));
    expect(onOther.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(onOther.reason).toBe(ErrorCode.UnknownSender);
    // Whatever the phase: the identity check comes first.
    const masked = await refusal(send(m0, toClientEnvelope({ type: 'masked-input', sessionId: new Uint8Array(32), clientId: members[3]!.clientId, vector: new Uint32Array(dim + 1), bits: 32 }), await pool.next()));
    expect(masked.reason).toBe(ErrorCode.UnknownSender);

    held.release();
    const o = await c.outcomeOf('job-1', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual(members.map((m) => m.clientId).sort());
    expect(Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([0, 1, 2, 3], dim).buffer))).toBe(true);
    expect(c.statusOf('job-1', 0).refused).toBe(3);
    await Promise.all(runners.map((r) => r.stop()));
    runners = [];
  });
});

describe('single-use EdDSA round tokens', () => {
  const signingKey = () => okpPrivateKeyObject('Ed25519', tokenSeed);
  const claims = (sub: string, over: Record<string, unknown> = {}) => {
    const iat = Math.floor(Date.now() / 1000);
    return { sub, aud: TOKEN_AUDIENCE, jti: randomBytes(16).toString('base64url'), iat, exp: iat + 300, ...over };
  };

  test('Send and Subscribe without a token, or with a garbage one, are UNAUTHENTICATED (aegis-reason unauthenticated)', async () => {
    const a = client(solo[0]!);
    await expect(refusal(send(a, noop, new grpc.Metadata()))).resolves.toEqual(unauthenticated(/token refused: malformed/));
    await expect(refusal(send(a, noop, bearer('not.a.jwt')))).resolves.toEqual(unauthenticated(/token refused/));
    const md = new grpc.Metadata();
    md.set('authorization', 'Basic c29sby0wOnB3');
    await expect(refusal(heartbeat(a, md))).resolves.toEqual(unauthenticated(/token refused: malformed/));
    const s = subscribe(a, new grpc.Metadata());
    await expect(s.ended).resolves.toEqual(unauthenticated(/token refused: malformed/));
    expect(s.messages).toEqual([]);
    expect(c.connectedClients()).not.toContain(solo[0]!.clientId);
  });

  test('a token works once: the same token again is UNAUTHENTICATED (replayed)', async () => {
    const a = client(solo[0]!);
    const [t] = await issueTokens(a, 1);
    await expect(heartbeat(a, bearer(t!))).resolves.toBeDefined();
    await expect(refusal(heartbeat(a, bearer(t!)))).resolves.toEqual(unauthenticated(/replayed/));
    // A Send that the round refuses still used its token up.
    const [u] = await issueTokens(a, 1);
    const first = await refusal(send(a, toClientEnvelope({ type: 'consistency-signature', sessionId: new Uint8Array(32), clientId: solo[0]!.clientId, signature: new Uint8Array(64) }), bearer(u!)));
    expect(first).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, reason: ErrorCode.WrongPhase });
    await expect(refusal(send(a, noop, bearer(u!)))).resolves.toEqual(unauthenticated(/replayed/));
  });

  test("a token issued to client A is refused on client B's connection (wrong-subject), and A can still use it", async () => {
    const a = client(solo[0]!);
    const b = client(solo[1]!);
    const [t] = await issueTokens(a, 1);
    await expect(refusal(heartbeat(b, bearer(t!)))).resolves.toEqual(unauthenticated(/wrong-subject/));
    await expect(refusal(send(b, noop, bearer(t!)))).resolves.toEqual(unauthenticated(/wrong-subject/));
    await expect(heartbeat(a, bearer(t!))).resolves.toBeDefined();
  });

  test('expired and not-yet-valid tokens, signed with the coordinator key, are UNAUTHENTICATED', async () => {
    const a = client(solo[0]!);
    const past = TokenIssuer.fromSeed(tokenSeed, { clock: () => Date.now() - 10 * 60_000 });
    const expired = await past.issue(solo[0]!.clientId);
    await expect(refusal(heartbeat(a, bearer(expired.token)))).resolves.toEqual(unauthenticated(/expired/));
    const future = TokenIssuer.fromSeed(tokenSeed, { clock: () => Date.now() + 10 * 60_000 });
    const early = await future.issue(solo[0]!.clientId);
    await expect(refusal(heartbeat(a, bearer(early.token)))).resolves.toEqual(unauthenticated(/not-yet-valid/));
    // The coordinator's own short-lived token, once its lifetime is over.
    const short = await TokenIssuer.fromSeed(tokenSeed).issue(solo[0]!.clientId, { ttlMs: 1000 });
    await new Promise((r) => setTimeout(r, (short.claims.exp * 1000 - Date.now()) + 50));
    await expect(refusal(heartbeat(a, bearer(short.token)))).resolves.toEqual(unauthenticated(/expired/));
  });

  test('a wrong audience, alg none, another signing key, an HS256 token and a header-supplied key are UNAUTHENTICATED', async () => {
    const a = client(solo[0]!);
    const id = solo[0]!.clientId;
    const wrongAud = await new SignJWT(claims(id, { aud: 'some-other-service' })).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT' }).sign(signingKey());
    await expect(refusal(heartbeat(a, bearer(wrongAud)))).resolves.toEqual(unauthenticated(/bad-audience/));

    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims(id))}.`;
    await expect(refusal(heartbeat(a, bearer(none)))).resolves.toEqual(unauthenticated(/bad-algorithm/));
    const noneSigned = `${b64({ alg: 'none' })}.${b64(claims(id))}.${Buffer.from('x').toString('base64url')}`;
    await expect(refusal(heartbeat(a, bearer(noneSigned)))).resolves.toEqual(unauthenticated(/bad-algorithm/));

    const foreign = await TokenIssuer.create().issue(id);
    await expect(refusal(heartbeat(a, bearer(foreign.token)))).resolves.toEqual(unauthenticated(/bad-signature/));

    const hs = await new SignJWT(claims(id)).setProtectedHeader({ alg: 'HS256' }).sign(new Uint8Array(32));
    await expect(refusal(heartbeat(a, bearer(hs)))).resolves.toEqual(unauthenticated(/bad-algorithm/));

    // A valid EdDSA signature but a header that brings its own key: refused before any key is used.
    const jwk = await new SignJWT(claims(id)).setProtectedHeader({ alg: 'EdDSA', jwk: { kty: 'OKP', crv: 'Ed25519', x: 'AAAA' } }).sign(signingKey());
    await expect(refusal(heartbeat(a, bearer(jwk)))).resolves.toEqual(unauthenticated(/malformed/));

    // A good token with its payload swapped for another client's claims: the signature breaks.
    const good = await TokenIssuer.fromSeed(tokenSeed).issue(id);
    const [h, , s] = good.token.split('.');
    const swapped = `${h}.${b64(claims(solo[1]!.clientId))}.${s}`;
    const b = client(solo[1]!);
    await expect(refusal(heartbeat(b, bearer(swapped)))).resolves.toEqual(unauthenticated(/bad-signature/));
    // None of those refusals used the good token up.
    await expect(heartbeat(a, bearer(good.token))).resolves.toBeDefined();
  });
});

describe('revocation', () => {
  test('a revoked client is refused on its next IssueTokens, Send and Renew with an unexpired certificate, and its open stream ends', async () => {
    const victim = solo[2]!;
    const v = client(victim);
    const tokens = await issueTokens(v, 3);
    const s = subscribe(v, bearer(tokens[0]!));
    await waitFor(() => c.connectedClients().includes(victim.clientId), 10_000, 'the victim subscribed');
    await expect(heartbeat(v, bearer(tokens[1]!))).resolves.toBeDefined();

    await c.revoke(victim.clientId, 'lost device');
    await expect(s.ended).resolves.toEqual(unauthenticated(/revoked/));
    expect(c.connectedClients()).not.toContain(victim.clientId);
    // Same channel, same (unexpired) certificate, a token issued before the revocation.
    await expect(refusal(send(v, noop, bearer(tokens[2]!)))).resolves.toEqual(unauthenticated(/revoked/));
    await expect(refusal(issueTokens(v, 1))).resolves.toEqual(unauthenticated(/revoked/));
    const again = subscribe(v, bearer(tokens[2]!));
    await expect(again.ended).resolves.toEqual(unauthenticated(/revoked/));
    const renewer = enrollment(c.address, credentialsOf(c.ca.certificatePem, victim));
    closers.push(renewer);
    const csrDer = await createCsr(victim.identity, victim.clientId);
    await expect(refusal(callUnary(renewer.renew.bind(renewer), create(enroll.RenewRequestSchema, { csrDer })))).resolves.toEqual(unauthenticated(/revoked/));
    // A fresh connection with the same certificate is refused too (not just the open channel).
    const fresh = client(victim);
    await expect(refusal(issueTokens(fresh, 1))).resolves.toEqual(unauthenticated(/revoked/));
    // The revoked id cannot come back by enrolling again with its key.
    const { token } = await c.createInvite();
    const r = await enrollRaw(token, victim.identity, victim.clientId);
    expect(r).toMatchObject({ code: grpc.status.PERMISSION_DENIED, reason: ErrorCode.EnrollmentRefused });
    // Others are untouched.
    const a = client(solo[0]!);
    await expect(heartbeat(a, bearer((await issueTokens(a, 1))[0]!))).resolves.toBeDefined();
  });
});

/** Enroll over the enrollment listener; the reply, or the refusal. */
async function enrollRaw(token: string, identity: ClientIdentity, clientId: string, csrDer?: Uint8Array) {
  const e = enrollment(c.enrollAddress, grpc.credentials.createSsl(Buffer.from(c.ca.certificatePem)));
  try {
    const csr = csrDer ?? (await createCsr(identity, clientId));
    return await callUnary(e.enroll.bind(e), create(enroll.EnrollRequestSchema, { token, csrDer: csr }), new grpc.Metadata(), { deadline: Date.now() + 10_000 }).catch(
      (err: unknown) => refusal(Promise.reject(err)),
    );
  } finally {
    e.close();
  }
}

describe('enrollment', () => {
  const refused = (detail: RegExp) => ({ code: grpc.status.PERMISSION_DENIED, codeName: 'PERMISSION_DENIED', reason: ErrorCode.EnrollmentRefused, details: expect.stringMatching(detail) });

  test('a second id with an enrolled identity key is ALREADY_EXISTS (key-already-bound); the token stays usable', async () => {
    const { token } = await c.createInvite();
    const r = await enrollRaw(token, solo[0]!.identity, 'solo-0-twin');
    expect(r).toMatchObject({ code: grpc.status.ALREADY_EXISTS, reason: ErrorCode.KeyAlreadyBound });
    expect(c.registry.clients.has('solo-0-twin')).toBe(false);
    const ok = await enrollRaw(token, await createIdentity(), 'solo-0-twin');
    expect(ok).toMatchObject({ clientId: 'solo-0-twin' });
  });

  test('an id already enrolled under another key is ALREADY_EXISTS (key-already-bound) and keeps its key', async () => {
    const before = c.registry.clients.get(solo[1]!.clientId)!.publicKey;
    const { token } = await c.createInvite();
    const r = await enrollRaw(token, await createIdentity(), solo[1]!.clientId);
    expect(r).toMatchObject({ code: grpc.status.ALREADY_EXISTS, reason: ErrorCode.KeyAlreadyBound });
    expect(c.registry.clients.get(solo[1]!.clientId)!.publicKey).toBe(before);
  });

  test('used, unknown, malformed and expired enrollment tokens are PERMISSION_DENIED (enrollment-refused)', async () => {
    const { token } = await c.createInvite();
    expect(await enrollRaw(token, await createIdentity(), 'fresh-1')).toMatchObject({ clientId: 'fresh-1' });
    await expect(enrollRaw(token, await createIdentity(), 'fresh-2')).resolves.toEqual(refused(/used/));
    await expect(enrollRaw(randomBytes(32).toString('base64url'), await createIdentity(), 'fresh-2')).resolves.toEqual(refused(/unknown/));
    await expect(enrollRaw('not-a-token', await createIdentity(), 'fresh-2')).resolves.toEqual(refused(/malformed/));
    const short = await c.createInvite({ ttlMs: 1000 });
    await new Promise((r) => setTimeout(r, short.expiresAt - Date.now() + 50));
    await expect(enrollRaw(short.token, await createIdentity(), 'fresh-2')).resolves.toEqual(refused(/expired/));
    expect(c.registry.clients.has('fresh-2')).toBe(false);
  });

  test('a refused enrollment (garbage CSR, CSR with a bad signature, an invite for another id) leaves the token usable', async () => {
    const { token } = await c.createInvite();
    const id = await createIdentity();
    const garbage = await enrollRaw(token, id, 'fresh-3', new Uint8Array(randomBytes(100)));
    expect(garbage).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: ErrorCode.InvalidArgument });
    const csr = await createCsr(id, 'fresh-3');
    const bad = new Uint8Array(csr);
    bad[bad.length - 1]! ^= 0x01;
    expect(await enrollRaw(token, id, 'fresh-3', bad)).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: ErrorCode.BadSignature });
    expect(await enrollRaw(token, id, 'fresh-3')).toMatchObject({ clientId: 'fresh-3' });

    const named = await c.createInvite({ clientId: 'fresh-4' });
    await expect(enrollRaw(named.token, await createIdentity(), 'fresh-5')).resolves.toEqual(refused(/malformed/));
    expect(await enrollRaw(named.token, await createIdentity(), 'fresh-4')).toMatchObject({ clientId: 'fresh-4' });
  });
});

describe('Admin is for operators', () => {
  test('a client certificate calling Admin is PERMISSION_DENIED; an operator certificate is served but takes no round tokens', async () => {
    const asClient = adminClient(c.address, credentialsOf(c.ca.certificatePem, solo[0]!));
    closers.push(asClient);
    const r = await refusal(callUnary(asClient.listClients.bind(asClient), create(admin.ListClientsRequestSchema, {})));
    expect(r).toMatchObject({ code: grpc.status.PERMISSION_DENIED, reason: ErrorCode.PermissionDenied });
    const inv = await refusal(callUnary(asClient.createInvite.bind(asClient), create(admin.CreateInviteRequestSchema, {})));
    expect(inv).toMatchObject({ code: grpc.status.PERMISSION_DENIED, reason: ErrorCode.PermissionDenied });
    const rev = await refusal(callUnary(asClient.revokeClient.bind(asClient), create(admin.RevokeClientRequestSchema, { clientId: solo[1]!.clientId })));
    expect(rev).toMatchObject({ code: grpc.status.PERMISSION_DENIED, reason: ErrorCode.PermissionDenied });
    expect(c.registry.revocations.isRevoked({ clientId: solo[1]!.clientId })).toBe(false);

    const op = await issueOperatorCertificate(c.ca, { name: 'ops' });
    const creds = mtls(c.ca.certificatePem, op.privateKeyPem, op.certificateDer);
    const asOperator = adminClient(c.address, creds);
    closers.push(asOperator);
    const list = await callUnary(asOperator.listClients.bind(asOperator), create(admin.ListClientsRequestSchema, {}));
    expect(list.clients.map((x) => x.clientId)).toContain(solo[0]!.clientId);
    const opSecAgg = secAgg(c.address, creds);
    closers.push(opSecAgg);
    await expect(refusal(issueTokens(opSecAgg, 1))).resolves.toEqual(unauthenticated(/no-identity/));
  });
});
