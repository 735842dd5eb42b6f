/**
 * Operator credentials over real gRPC and TLS 1.3 on loopback, nothing mocked: an operator issues
 * a credential for another from a CSR (the key never leaves the caller), it is listed and works;
 * revoked, its next Admin call is refused even on the connection it already had open; a reissue
 * revokes the earlier certificate as superseded (and the CRL lists it) while the new one works;
 * a certificate that expires under an open connection is refused on its next call (the
 * coordinator's injected clock moves, nothing sleeps); refusals say why and change nothing. With
 * an offline CA the coordinator cannot issue, says so naming the CA host's flow, and still revokes.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { caCertificateFromPem, certificateSpki, createCa, csrForSeed, issueOperatorCertificate, issueServerCertificate, operatorKeyPem, serialOf } from '../../coordinator/auth/ca.js';
import { parseCrl } from '../../coordinator/auth/crl.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import { P256Purpose, p256Spki } from '../../shared/keystore/webcrypto-p256.js';
import { callUnary } from '../../shared/rpc/service.js';
import { enrollClients, startCoordinator } from '../support/cluster.js';
import { adminClient, credentialsOf, mtls, refusal, type AdminClient } from '../support/raw-calls.js';

const DAY = 86_400_000;
const previousMinVersion = tls.DEFAULT_MIN_VERSION;
let now = Date.now();
const clock = (): number => now;
let dir: string;
let c: Coordinator;
let ops: AdminClient;
const closers: { close: () => void }[] = [];

const listClients = (cl: AdminClient) => callUnary(cl.listClients.bind(cl), create(admin.ListClientsRequestSchema, {}));
const listOperators = async (): Promise<admin.OperatorInfo[]> => (await callUnary(ops.listOperators.bind(ops), create(admin.ListOperatorsRequestSchema, {}))).operators;
const unauthenticated = (re: RegExp) => ({ code: grpc.status.UNAUTHENTICATED, codeName: 'UNAUTHENTICATED', reason: ErrorCode.Unauthenticated, details: expect.stringMatching(re) });

/**
 * A new operator key made here, and its CSR (the only thing that goes to the coordinator): P-256
 * as `aegis operators issue` makes it, or Ed25519 as operator tools did before P-256.
 */
async function newKey(name: string, key: 'ed25519' | typeof P256Purpose.Operator = P256Purpose.Operator): Promise<{ seed: Uint8Array; csrDer: Uint8Array }> {
  const seed = new Uint8Array(randomBytes(32));
  return { seed, csrDer: await csrForSeed(seed, `operator:${name}`, key) };
}

/** An Admin channel with the operator key `seed` and its certificate; a first call opens the connection. */
async function connectAs(seed: Uint8Array, certificateDer: Uint8Array): Promise<AdminClient> {
  const cl = adminClient(c.address, mtls(c.ca.certificatePem, operatorKeyPem(seed, certificateDer), certificateDer));
  closers.push(cl);
  await listClients(cl);
  expect(cl.getChannel().getConnectivityState(false)).toBe(grpc.connectivityState.READY);
  return cl;
}

async function issue(name: string, ttlSeconds = 0, keyType: 'ed25519' | typeof P256Purpose.Operator = P256Purpose.Operator): Promise<{ seed: Uint8Array; reply: admin.IssueOperatorReply }> {
  const key = await newKey(name, keyType);
  const reply = await callUnary(ops.issueOperator.bind(ops), create(admin.IssueOperatorRequestSchema, { name, csrDer: key.csrDer, ttlSeconds }));
  return { seed: key.seed, reply };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'aegis-operators-net-'));
  c = await startCoordinator({ clock, tokens: TokenIssuer.create({ clock }), dataDir: dir });
  const op = await issueOperatorCertificate(c.ca, { name: 'ops' });
  ops = adminClient(c.address, mtls(c.ca.certificatePem, op.privateKeyPem, op.certificateDer));
  closers.push(ops);
});

afterAll(async () => {
  for (const x of closers) x.close();
  await c.close();
  rmSync(dir, { recursive: true, force: true });
  tls.DEFAULT_MIN_VERSION = previousMinVersion;
});

describe('operator credentials', () => {
  test('issued from a CSR, listed, usable; revoked, its next call on the same open connection is refused', async () => {
    const { seed, reply } = await issue('bob');
    const serial = serialOf(reply.certificateDer).replace(/^0+/, '');
    expect(Buffer.from(reply.caCertificateDer).equals(Buffer.from(c.ca.certificateDer))).toBe(true);
    // For the caller's P-256 key (derived from its seed for the operator label).
    expect(Buffer.from(certificateSpki(reply.certificateDer)).equals(Buffer.from(p256Spki(seed, P256Purpose.Operator)))).toBe(true);
    expect(reply.operator).toMatchObject({ name: 'bob', serial, status: admin.OperatorStatus.ACTIVE, builtIn: false });
    // The default lifetime: 7 days.
    expect(Number(reply.operator!.expiresAtMs) - now).toBeGreaterThan(7 * DAY - 60_000);
    expect(Number(reply.operator!.expiresAtMs) - now).toBeLessThanOrEqual(7 * DAY);
    expect((await listOperators()).find((o) => o.name === 'bob')).toMatchObject({ serial, status: admin.OperatorStatus.ACTIVE, revokedAtMs: 0n });
    // On record in the data dir (public facts only).
    expect(JSON.parse(readFileSync(join(dir, 'operators.json'), 'utf8')).operators).toEqual([expect.objectContaining({ name: 'bob', serial })]);

    const bob = await connectAs(seed, reply.certificateDer);
    const revoked = await callUnary(ops.revokeOperator.bind(ops), create(admin.RevokeOperatorRequestSchema, { name: 'bob', reason: 'key-compromise', detail: 'laptop stolen' }));
    expect(revoked).toMatchObject({ serials: [serial], reason: 'key-compromise', known: true });
    // The connection stays open; the next call on it is refused.
    expect(bob.getChannel().getConnectivityState(false)).toBe(grpc.connectivityState.READY);
    await expect(refusal(listClients(bob))).resolves.toEqual(unauthenticated(/operator certificate refused: revoked/));
    expect(c.clients.isRevoked({ serial })).toBe(true);
    expect((await listOperators()).find((o) => o.name === 'bob')).toMatchObject({
      status: admin.OperatorStatus.REVOKED,
      revocationReason: 'key-compromise',
      revocationDetail: 'laptop stolen',
      revokedAtMs: revoked.revokedAtMs,
    });
    // Nothing left to revoke under that name.
    await expect(refusal(callUnary(ops.revokeOperator.bind(ops), create(admin.RevokeOperatorRequestSchema, { name: 'bob' })))).resolves.toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
  });

  test('an Ed25519 operator CSR (an operator tool from before P-256) is still issued as such and opens the Admin service; its reissue from a P-256 CSR is P-256', async () => {
    const { seed, reply } = await issue('old-tool', 0, 'ed25519');
    expect(new X509Certificate(Buffer.from(reply.certificateDer)).publicKey.asymmetricKeyType).toBe('ed25519');
    const old = await connectAs(seed, reply.certificateDer);
    await expect(listClients(old)).resolves.toBeDefined();
    const key = await newKey('old-tool');
    const r = await callUnary(ops.reissueOperator.bind(ops), create(admin.ReissueOperatorRequestSchema, { name: 'old-tool', csrDer: key.csrDer }));
    expect(r.superseded).toEqual([reply.operator!.serial]);
    expect(new X509Certificate(Buffer.from(r.certificateDer)).publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    await expect(listClients(await connectAs(key.seed, r.certificateDer))).resolves.toBeDefined();
    await expect(refusal(listClients(old))).resolves.toEqual(unauthenticated(/operator certificate refused: revoked/));
  });

  test('a reissue revokes the earlier certificate as superseded (listed on the CRL); the new one works', async () => {
    const first = await issue('carol');
    const oldSerial = first.reply.operator!.serial;
    const carolOld = await connectAs(first.seed, first.reply.certificateDer);
    const key = await newKey('carol');
    const r = await callUnary(ops.reissueOperator.bind(ops), create(admin.ReissueOperatorRequestSchema, { name: 'carol', csrDer: key.csrDer, ttlSeconds: 3 * 86_400 }));
    expect(r.superseded).toEqual([oldSerial]);
    expect(r.operator).toMatchObject({ name: 'carol', status: admin.OperatorStatus.ACTIVE });
    expect(Number(r.operator!.expiresAtMs) - now).toBeLessThanOrEqual(3 * DAY);
    await expect(refusal(listClients(carolOld))).resolves.toEqual(unauthenticated(/operator certificate refused: revoked/));
    const carolNew = await connectAs(key.seed, r.certificateDer);
    await expect(listClients(carolNew)).resolves.toBeDefined();
    const crl = await parseCrl((await callUnary(ops.getCrl.bind(ops), create(admin.GetCrlRequestSchema, {}))).pem);
    expect(crl.entries).toContainEqual(expect.objectContaining({ serial: oldSerial, crlReason: 'superseded' }));
    expect(crl.entries.map((e) => e.serial)).not.toContain(r.operator!.serial);
    const listed = (await listOperators()).filter((o) => o.name === 'carol');
    expect(listed.map((o) => [o.serial, o.status, o.revocationReason])).toEqual([
      [oldSerial, admin.OperatorStatus.REVOKED, 'superseded'],
      [r.operator!.serial, admin.OperatorStatus.ACTIVE, ''],
    ]);
  });

  test('refused issues change nothing: the built-in name, an active name, a CSR for another name or tampered, a lifetime past 90 days, a client certificate', async () => {
    const before = await listOperators();
    const ask = async (name: string, csrDer: Uint8Array, ttlSeconds = 0, cl: AdminClient = ops) =>
      refusal(callUnary(cl.issueOperator.bind(cl), create(admin.IssueOperatorRequestSchema, { name, csrDer, ttlSeconds })));
    await expect(ask('admin', (await newKey('admin')).csrDer)).resolves.toMatchObject({ code: grpc.status.ALREADY_EXISTS, details: expect.stringMatching(/built-in/) });
    await expect(ask('carol', (await newKey('carol')).csrDer)).resolves.toMatchObject({ code: grpc.status.ALREADY_EXISTS, details: expect.stringMatching(/active credential/) });
    await expect(ask('dave', (await newKey('erin')).csrDer)).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/CN=operator:dave/) });
    const tampered = (await newKey('dave')).csrDer;
    tampered[tampered.length - 1]! ^= 1;
    await expect(ask('dave', tampered)).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: ErrorCode.BadSignature });
    await expect(ask('dave', (await newKey('dave')).csrDer, 91 * 86_400)).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/90 days/) });
    await expect(ask('bad name!', (await newKey('dave')).csrDer)).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    const [client] = await enrollClients(c, 1, 'device');
    const asClient = adminClient(c.address, credentialsOf(c.ca.certificatePem, client!));
    closers.push(asClient);
    await expect(ask('dave', (await newKey('dave')).csrDer, 0, asClient)).resolves.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect(await listOperators()).toEqual(before);
  });

  test('revoking one serial, also one not on record; an unknown name is not found', async () => {
    const { seed, reply } = await issue('frank');
    const frank = await connectAs(seed, reply.certificateDer);
    const r = await callUnary(ops.revokeOperator.bind(ops), create(admin.RevokeOperatorRequestSchema, { serial: reply.operator!.serial.toUpperCase() }));
    expect(r).toMatchObject({ serials: [reply.operator!.serial], reason: 'unspecified', known: true });
    await expect(refusal(listClients(frank))).resolves.toEqual(unauthenticated(/revoked/));
    // An operator certificate the coordinator has no record of (signed elsewhere): revoked anyway, and refused.
    const stray = await issueOperatorCertificate(c.ca, { name: 'stray' });
    const strayClient = adminClient(c.address, mtls(c.ca.certificatePem, stray.privateKeyPem, stray.certificateDer));
    closers.push(strayClient);
    await listClients(strayClient);
    const s = await callUnary(ops.revokeOperator.bind(ops), create(admin.RevokeOperatorRequestSchema, { serial: stray.serial, reason: 'retired' }));
    expect(s).toMatchObject({ known: false, reason: 'retired' });
    await expect(refusal(listClients(strayClient))).resolves.toEqual(unauthenticated(/revoked/));
    await expect(refusal(callUnary(ops.revokeOperator.bind(ops), create(admin.RevokeOperatorRequestSchema, { name: 'nobody' })))).resolves.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(refusal(callUnary(ops.revokeOperator.bind(ops), create(admin.RevokeOperatorRequestSchema, { name: 'frank', serial: 'ab' })))).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(refusal(callUnary(ops.revokeOperator.bind(ops), create(admin.RevokeOperatorRequestSchema, { serial: 'xyz' })))).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(refusal(callUnary(ops.revokeOperator.bind(ops), create(admin.RevokeOperatorRequestSchema, { serial: 'ab', reason: 'dropped' })))).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/valid reasons/) });
  });

  test('a certificate that expires while its connection stays open is refused on its next call', async () => {
    const { seed, reply } = await issue('grace', 86_400);
    const grace = await connectAs(seed, reply.certificateDer);
    now += 86_400_000 + 1000;
    expect(grace.getChannel().getConnectivityState(false)).toBe(grpc.connectivityState.READY);
    await expect(refusal(listClients(grace))).resolves.toEqual(unauthenticated(/operator certificate refused: expired/));
    expect((await listOperators()).find((o) => o.name === 'grace')).toMatchObject({ status: admin.OperatorStatus.EXPIRED });
    // Expired is not revoked: a new credential can be issued under the name.
    await expect(issue('grace')).resolves.toBeDefined();
  });
});

describe('with an offline CA', () => {
  let offline: Coordinator;
  let asOps: AdminClient;

  beforeAll(async () => {
    // The CA key stays "on the CA host" (this test's memory); the coordinator gets only the certificate.
    const caHost = await createCa({ name: 'Offline test CA' });
    const server = await issueServerCertificate(caHost, { hosts: ['127.0.0.1', 'localhost'] });
    offline = await startCoordinator({ ca: await caCertificateFromPem(caHost.certificatePem), serverCredential: { privateKeyPem: server.privateKeyPem, certificatePem: server.certificatePem } });
    const op = await issueOperatorCertificate(caHost, { name: 'ops' });
    asOps = adminClient(offline.address, mtls(offline.ca.certificatePem, op.privateKeyPem, op.certificateDer));
    closers.push(asOps);
  });

  afterAll(async () => {
    await offline.close();
  });

  test('issuing and reissuing are refused, naming the offline CA flow; revoking works', async () => {
    const key = await newKey('bob');
    const issued = await refusal(callUnary(asOps.issueOperator.bind(asOps), create(admin.IssueOperatorRequestSchema, { name: 'bob', csrDer: key.csrDer })));
    expect(issued).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, reason: ErrorCode.FailedPrecondition, details: expect.stringMatching(/offline CA.*aegis ca sign-csr/) });
    const reissued = await refusal(callUnary(asOps.reissueOperator.bind(asOps), create(admin.ReissueOperatorRequestSchema, { name: 'bob', csrDer: key.csrDer })));
    expect(reissued).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, details: expect.stringMatching(/offline CA/) });
    const r = await callUnary(asOps.revokeOperator.bind(asOps), create(admin.RevokeOperatorRequestSchema, { serial: 'abcdef' }));
    expect(r).toMatchObject({ serials: ['abcdef'], known: false });
    expect(offline.clients.isRevoked({ serial: 'abcdef' })).toBe(true);
  });
});
