/**
 * Heartbeats and lost devices over real gRPC and TLS 1.3 on loopback, nothing mocked: a
 * ClientRunner heartbeats on its mTLS channel and its last-seen time moves; once it is silent
 * and the coordinator's clock passes clients.lost_after, the sweep flags it
 * suspected-lost (gauge, counter, one warn line naming only the client id); a flagged client
 * that calls again is no longer suspected; revoking with reason lost-device puts its serial on a
 * CRL signed by the CA (checked with @peculiar/x509 and, when present, openssl) with the reason
 * cessationOfOperation; then every call with its still-valid certificate is UNAUTHENTICATED and
 * its open stream ends. The registry keeps last seen per minute, reason code and detail.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import { createCsr } from '../../client/enroll/csr.js';
import { createCa, issueOperatorCertificate, serialOf } from '../../coordinator/auth/ca.js';
import { parseCrl, verifyCrl } from '../../coordinator/auth/crl.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { CoordinatorMetrics } from '../../coordinator/service/metrics.js';
import { ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import { callUnary } from '../../shared/rpc/service.js';
import { enrollClients, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { adminClient, bearer, credentialsOf, enrollment, heartbeat, issueTokens, mtls, refusal, secAgg, subscribe, type AdminClient, type SecAggClient } from '../support/raw-calls.js';

const HOUR = 3_600_000;
const LOST_AFTER = 6 * HOUR;
const previousMinVersion = tls.DEFAULT_MIN_VERSION;

let now = Date.now();
const clock = (): number => now;
const logs: Record<string, unknown>[] = [];
const log = pino({ level: 'debug', base: undefined }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
const metrics = new CoordinatorMetrics({ defaultMetrics: false });
const tokens = TokenIssuer.create({ clock });
let dir: string;
let c: Coordinator;
let closed = false;
let lost: Enrolled;
let steady: Enrolled;
let back: Enrolled;
let runner: ClientRunner | undefined;
let operator: AdminClient;
const closers: { close: () => void }[] = [];
const events: RunnerEvent[] = [];

function client(who: Enrolled): SecAggClient {
  const cl = secAgg(c.address, credentialsOf(c.ca.certificatePem, who));
  closers.push(cl);
  return cl;
}

const gauge = async (name: string): Promise<number> => (await metrics.registry.getSingleMetric(name)!.get()).values[0]?.value ?? Number.NaN;
const warnLines = (msg: string) => logs.filter((l) => l.msg === msg);
const unauthenticatedRevoked = { code: grpc.status.UNAUTHENTICATED, codeName: 'UNAUTHENTICATED', reason: ErrorCode.Unauthenticated, details: expect.stringMatching(/revoked/) };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'aegis-lost-'));
  c = await startCoordinator({ clock, tokens, log, metrics, dataDir: dir, clientsLostAfterMs: LOST_AFTER});
  [lost, steady, back] = [...(await enrollClients(c, 1, 'lost')), ...(await enrollClients(c, 1, 'steady')), ...(await enrollClients(c, 1, 'back'))] as [Enrolled, Enrolled, Enrolled];
  const op = await issueOperatorCertificate(c.ca, { name: 'ops' });
  operator = adminClient(c.address, mtls(c.ca.certificatePem, op.privateKeyPem, op.certificateDer));
  closers.push(operator);
});

afterAll(async () => {
  await runner?.stop();
  for (const x of closers) x.close();
  if (!closed) await c.close();
  rmSync(dir, { recursive: true, force: true });
  tls.DEFAULT_MIN_VERSION = previousMinVersion;
});

const listed = async (id: string): Promise<admin.ClientInfo> => {
  const r = await callUnary(operator.listClients.bind(operator), create(admin.ListClientsRequestSchema, {}));
  return r.clients.find((x) => x.clientId === id)!;
};

describe('heartbeats, the lost-device sweep, revocation with a reason, the CRL', () => {
  let openStream: ReturnType<typeof subscribe>;

  test('a running client heartbeats on its mTLS channel and its last seen moves with each heartbeat', async () => {
    expect(await listed(lost.clientId)).toMatchObject({ status: admin.ClientStatus.ACTIVE, revoked: false });

    [runner] = startRunners(c, [lost], 4, (_id, e) => events.push(e), () => ({ heartbeatMs: 150 }));
    await waitFor(() => events.some((e) => e.kind === 'heartbeat' && e.ok), 10_000, 'a first heartbeat');
    // Only heartbeats call now (the stream is open, no round runs): move the clock and see the next one land.
    for (const step of [90_000, 45_000]) {
      now += step;
      const before = events.filter((e) => e.kind === 'heartbeat' && e.ok).length;
      await waitFor(() => events.filter((e) => e.kind === 'heartbeat' && e.ok).length > before, 10_000, 'the next heartbeat');
      expect(c.lastSeenOf(lost.clientId)).toBe(now);
    }
    const info = await listed(lost.clientId);
    expect(Number(info.lastSeenAtMs)).toBe(now);
    expect(Number(info.certificateExpiresAtMs)).toBeGreaterThan(now);
    expect(info.status).toBe(admin.ClientStatus.ACTIVE);
  });

  test('silent past clients.lost_after: flagged suspected-lost once (gauge, counter, one warn line with the id only); a client that keeps calling is not', async () => {
    await runner!.stop();
    await waitFor(() => !c.connectedClients().includes(lost.clientId), 10_000, 'the runner stream to close');
    // Its last call: a stream it leaves open as it falls silent (it must end at revocation).
    openStream = subscribe(client(lost), bearer((await tokens.issue(lost.clientId)).token));
    await waitFor(() => c.connectedClients().includes(lost.clientId), 10_000, 'the raw stream');
    const silentSince = c.lastSeenOf(lost.clientId)!;
    expect(silentSince).toBe(now);
    const steadyClient = client(steady);
    const backClient = client(back);
    await issueTokens(backClient, 1); // `back` calls once at the same time, then keeps silent too
    // Just inside the window: nobody is flagged yet.
    now = silentSince + LOST_AFTER;
    await issueTokens(steadyClient, 1);
    expect(c.sweepClients()).toEqual([]);
    expect(await gauge('aegis_clients_suspected_lost')).toBe(0);

    now = silentSince + LOST_AFTER + 60_000;
    await issueTokens(steadyClient, 1); // the steady client calls: seen now
    const flagged = c.sweepClients();
    // `back` never called since enrolling (its enrollment is its baseline): flagged as well.
    expect(flagged.sort()).toEqual([back.clientId, lost.clientId]);
    expect(await gauge('aegis_clients_suspected_lost')).toBe(2);
    expect(await gauge('aegis_clients_flagged_lost_total')).toBe(2);
    const line = warnLines('client suspected lost').find((l) => l.client === lost.clientId)!;
    expect(line).toBeDefined();
    expect(line.level).toBe(40);
    // The client id and nothing else of it: no address, no certificate detail.
    expect(Object.keys(line).sort()).toEqual(['client', 'level', 'msg', 'time']);
    const lineText = JSON.stringify(line);
    expect(lineText).not.toMatch(/127\.0\.0\.1|serial|BEGIN|certificate/i);
    expect(lineText).not.toContain(serialOf(lost.certificateDer));

    // A second sweep flags nobody again: one line per client becoming suspected.
    now += 60_000;
    expect(c.sweepClients()).toEqual([]);
    expect(warnLines('client suspected lost')).toHaveLength(2);
    expect(await gauge('aegis_clients_flagged_lost_total')).toBe(2);
    expect(await listed(lost.clientId)).toMatchObject({ status: admin.ClientStatus.SUSPECTED_LOST, revoked: false });
    expect((await listed(steady.clientId)).status).toBe(admin.ClientStatus.ACTIVE);

    // A suspected client that calls again is no longer suspected (and that is logged).
    await issueTokens(backClient, 1);
    expect(await gauge('aegis_clients_suspected_lost')).toBe(1);
    expect(warnLines('client suspected lost is back').map((l) => l.client)).toEqual([back.clientId]);
    expect((await listed(back.clientId)).status).toBe(admin.ClientStatus.ACTIVE);
  });

  test('revoke with an unknown reason is INVALID_ARGUMENT naming the valid ones, and revokes nothing', async () => {
    const r = await refusal(callUnary(operator.revokeClient.bind(operator), create(admin.RevokeClientRequestSchema, { clientId: lost.clientId, reason: 'stolen-by-aliens' })));
    expect(r).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: ErrorCode.InvalidArgument });
    expect(r.details).toMatch(/unspecified, key-compromise, lost-device, superseded, retired/);
    expect(c.registry.revocations.isRevoked({ clientId: lost.clientId })).toBe(false);
    expect((await listed(lost.clientId)).status).toBe(admin.ClientStatus.SUSPECTED_LOST);
  });

  test('revoke --reason lost-device: the stream ends, the CRL (signed by the CA) lists its serial with cessationOfOperation', async () => {
    const serial = serialOf(lost.certificateDer).toLowerCase().replace(/^0+/, '');
    const revokedAt = now;
    const r = await callUnary(operator.revokeClient.bind(operator), create(admin.RevokeClientRequestSchema, { clientId: lost.clientId, reason: 'lost-device', detail: 'left on a train' }));
    expect(Number(r.revokedAtMs)).toBe(revokedAt);
    expect(r.reason).toBe('lost-device');
    expect(r.serials).toEqual([serial]);
    await expect(openStream.ended).resolves.toEqual(unauthenticatedRevoked);
    expect(await gauge('aegis_clients_suspected_lost')).toBe(0);
    expect(await listed(lost.clientId)).toMatchObject({ status: admin.ClientStatus.REVOKED, revoked: true, revocationReason: 'lost-device', revocationDetail: 'left on a train', revokedAtMs: BigInt(revokedAt) });

    const crl = await callUnary(operator.getCrl.bind(operator), create(admin.GetCrlRequestSchema, {}));
    expect(crl.entries).toBe(1);
    expect(Number(crl.thisUpdateMs)).toBe(now);
    expect(Number(crl.nextUpdateMs)).toBe(now + 7 * 86_400_000);
    const parsed = await parseCrl(crl.pem);
    expect(parsed.entries).toEqual([{ serial, revokedAt: Math.floor(revokedAt / 1000) * 1000, crlReason: 'cessationOfOperation' }]);
    expect(parsed.crlNumber).toBe(Number(crl.crlNumber));
    expect(parsed.nextUpdate).toBe(Math.floor((now + 7 * 86_400_000) / 1000) * 1000);
    await expect(verifyCrl(crl.pem, c.ca)).resolves.toBe(true);
    // Under another CA it does not verify; a CRL changed by one byte does not either.
    await expect(verifyCrl(crl.pem, await createCa({ name: 'other CA' }))).resolves.toBe(false);
    const der = Buffer.from(crl.pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 10] = der[der.length - 10]! ^ 1;
    await expect(verifyCrl(new Uint8Array(der), c.ca)).resolves.toBe(false);
    // A later CRL has a larger number.
    const again = await callUnary(operator.getCrl.bind(operator), create(admin.GetCrlRequestSchema, {}));
    expect(again.crlNumber).toBeGreaterThan(crl.crlNumber);

    const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
    if (openssl.status === 0) {
      const crlPath = join(dir, 'crl.pem');
      const caPath = join(dir, 'test-ca.pem');
      writeFileSync(crlPath, crl.pem);
      writeFileSync(caPath, c.ca.certificatePem);
      const text = spawnSync('openssl', ['crl', '-in', crlPath, '-noout', '-text'], { encoding: 'utf8' });
      expect(text.status).toBe(0);
      expect(text.stdout).toContain(`Serial Number: ${serial.toUpperCase()}`);
      expect(text.stdout).toMatch(/Cessation Of Operation/);
      expect(text.stdout).toMatch(/X509v3 CRL Number/);
      const verified = spawnSync('openssl', ['crl', '-in', crlPath, '-CAfile', caPath, '-noout'], { encoding: 'utf8' });
      expect(`${verified.stdout}${verified.stderr}`).toMatch(/verify OK/);
    }
  });

  test('then every call with its still-valid certificate is UNAUTHENTICATED: Heartbeat, Subscribe, IssueTokens, Renew', async () => {
    // Still valid, by its own dates, at the coordinator's (moved) time.
    expect(Date.parse(new X509Certificate(Buffer.from(lost.certificateDer)).validTo)).toBeGreaterThan(now);
    const v = client(lost);
    // Tokens minted for it now (they would otherwise be valid): the certificate is refused first.
    const t = await Promise.all([0, 1].map(async () => (await tokens.issue(lost.clientId)).token));
    await expect(refusal(heartbeat(v, bearer(t[0]!)))).resolves.toEqual(unauthenticatedRevoked);
    const s = subscribe(v, bearer(t[1]!));
    await expect(s.ended).resolves.toEqual(unauthenticatedRevoked);
    await expect(refusal(issueTokens(v, 1))).resolves.toEqual(unauthenticatedRevoked);
    const renewer = enrollment(c.address, credentialsOf(c.ca.certificatePem, lost));
    closers.push(renewer);
    const csrDer = await createCsr(lost.identity, lost.clientId);
    await expect(refusal(callUnary(renewer.renew.bind(renewer), create(enroll.RenewRequestSchema, { csrDer })))).resolves.toEqual(unauthenticatedRevoked);
    expect(c.connectedClients()).not.toContain(lost.clientId);
    // A revoked client is never flagged again; the others are unaffected.
    now += 2 * LOST_AFTER;
    await issueTokens(client(steady), 1);
    expect(c.sweepClients()).toEqual([back.clientId]);
    expect(warnLines('client suspected lost').filter((l) => l.client === lost.clientId)).toHaveLength(1);
    await expect(heartbeat(client(steady), bearer((await tokens.issue(steady.clientId)).token))).resolves.toBeDefined();
  });

  test('registry.json keeps last seen rounded to the minute, the reason code and detail; it loads strictly', async () => {
    const seen = c.lastSeenOf(steady.clientId)!;
    await c.close();
    closed = true;
    const json = JSON.parse(readFileSync(join(dir, 'registry.json'), 'utf8')) as { clients: Record<string, unknown>[]; revocations: { details?: unknown[] } };
    const rec = (id: string) => json.clients.find((x) => x.clientId === id)!;
    expect(rec(steady.clientId).lastSeenAt).toBe(Math.floor(seen / 60_000) * 60_000);
    expect((rec(lost.clientId).lastSeenAt as number) % 60_000).toBe(0);
    expect(rec(lost.clientId)).toMatchObject({ revocationReason: 'lost-device', revocationDetail: 'left on a train' });
    expect(json.revocations.details).toEqual([{ serial: serialOf(lost.certificateDer).toLowerCase().replace(/^0+/, ''), revokedAt: expect.any(Number), reason: 'lost-device' }]);
    const reloaded = Registry.fromJSON(json);
    expect(reloaded.revocations.isRevoked({ clientId: lost.clientId })).toBe(true);
    expect(reloaded.clients.get(steady.clientId)!.lastSeenAt).toBe(Math.floor(seen / 60_000) * 60_000);
  });
});
