/**
 * Time-based rotation of a client's Ed25519 identity key over real gRPC and TLS 1.3 on
 * loopback, nothing mocked: the data-dir path `aegis client run` takes (`rekeyIfDue` driving a
 * running `ClientRunner`), the coordinator's Renew with `rekey` (new key certified, every
 * certificate of the old key revoked), the old certificate refused on its next call although
 * it has not expired, refusals that leave the registry as it was, and the settlement at the
 * next load of a rotation a crash interrupted.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { ClientRunner, enrollWithToken, type RunnerEvent } from '../../client/agent/connection.js';
import {
  IDENTITY_KEYFILE,
  loadClient,
  NEXT_IDENTITY_KEYFILE,
  openOrCreateIdentity,
  rekeyIfDue,
  saveCertificate,
  saveEnrollment,
  type LoadedClient,
  type Rekeyer,
} from '../../client/agent/data-dir.js';
import { createCsr, createIdentity, type ClientIdentity } from '../../client/enroll/csr.js';
import { certificateKeys } from '../../shared/keystore/round-key.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { ErrorCode } from '../../shared/errors.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import { DAY_MS, DEFAULT_POLICY, readKeysFile } from '../../shared/keystore/policy.js';
import { callUnary } from '../../shared/rpc/service.js';
import { enrollClients, expectedSum, integerInput, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { bearer, credentialsOf, enrollment, heartbeat, issueTokens, refusal, secAgg, subscribe } from '../support/raw-calls.js';

const PASSPHRASE = 'rekey test passphrase, long enough';
/** `signing_days` is 90 by default: a clock 91 days ahead makes the identity key due. */
const later = (): number => Date.now() + 91 * DAY_MS;

const previousMinVersion = tls.DEFAULT_MIN_VERSION;
let c: Coordinator;
const runners: ClientRunner[] = [];
const closers: { close: () => void }[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  c = await startCoordinator();
});

afterAll(async () => {
  await Promise.all(runners.map((r) => r.stop()));
  for (const x of closers) x.close();
  await c.close();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
  tls.DEFAULT_MIN_VERSION = previousMinVersion;
});

const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');
const copyOf = (id: ClientIdentity): ClientIdentity => ({ seed: new Uint8Array(id.seed), publicKey: new Uint8Array(id.publicKey) });
const cert = (der: Uint8Array): X509Certificate => new X509Certificate(Buffer.from(der));
/** The Ed25519 round key a client certificate certifies (base64url). */
const certifiedKey = (der: Uint8Array): string => b64u(certificateKeys(der).roundKey);
const serialOf = (der: Uint8Array): string => cert(der).serialNumber.toLowerCase().replace(/^0+(?=.)/, '');
/** The registry as registry.json would hold it, without the (timer-driven) last-seen times. */
const registrySnapshot = (): string => JSON.stringify(c.registry.toJSON(), (k, v: unknown) => (k === 'lastSeenAt' ? undefined : v));
const unauthenticated = (detail: RegExp) => ({ code: grpc.status.UNAUTHENTICATED, codeName: 'UNAUTHENTICATED', reason: ErrorCode.Unauthenticated, details: expect.stringMatching(detail) });

/** `aegis client enroll --data-dir DIR`: a sealed identity, enrolled with a one-time token. */
async function enrollDataDir(clientId: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'aegis-rekey-'));
  dirs.push(dir);
  const { identity } = await openOrCreateIdentity(dir, PASSPHRASE);
  const { token } = await c.createInvite();
  const r = await enrollWithToken({ enrollAddress: c.enrollAddress, caPem: c.ca.certificatePem, token, identity, clientId });
  await saveEnrollment(dir, { config: { version: 1, clientId: r.clientId, coordinator: c.address, enrollAddress: c.enrollAddress }, certificateDer: r.certificateDer, caDer: r.caDer });
  return dir;
}

/** `aegis client run --data-dir DIR` as far as the rotation goes: the runner persists certificates to DIR. */
function runnerOf(dir: string, loaded: LoadedClient, inputIndex: number, dim: number, events?: RunnerEvent[]): ClientRunner {
  const r = new ClientRunner({
    address: loaded.config.coordinator,
    caPem: loaded.caPem,
    clientId: loaded.config.clientId,
    identity: loaded.identity,
    certificateDer: loaded.certificateDer,
    input: () => integerInput(inputIndex, dim),
    onCertificate: (der) => saveCertificate(dir, der),
    backoffMs: { min: 50, max: 500 },
    ...(events ? { onEvent: (e: RunnerEvent) => void events.push(e) } : {}),
  });
  runners.push(r);
  r.start();
  return r;
}

/** Renew over mTLS as `who` (its key and certificate), for a CSR of `csrIdentity` naming `clientId`. */
async function renewAs(who: Pick<Enrolled, 'identity' | 'certificateDer'>, csrIdentity: ClientIdentity, clientId: string, rekey: boolean): Promise<enroll.RenewReply> {
  const e = enrollment(c.address, credentialsOf(c.ca.certificatePem, who));
  closers.push(e);
  const csrDer = await createCsr(csrIdentity, clientId);
  return callUnary(e.renew.bind(e), create(enroll.RenewRequestSchema, { csrDer, rekey }), new grpc.Metadata(), { deadline: Date.now() + 10_000 });
}

/** A fresh mTLS channel as `who`; resolves when IssueTokens is accepted. */
async function tokensWork(who: Pick<Enrolled, 'identity' | 'certificateDer'>): Promise<boolean> {
  const s = secAgg(c.address, credentialsOf(c.ca.certificatePem, who));
  closers.push(s);
  return (await issueTokens(s, 1)).length === 1;
}

describe('identity key rotation through the data dir (the path of aegis client run)', () => {
  const dim = 32;
  const rotatingId = 'rotating-0';
  let dir: string;
  let old: Enrolled;
  let fresh: Enrolled;
  /** The old certificate's channel, opened before the rotation, and tokens it got then. */
  let oldChannel: ReturnType<typeof secAgg>;
  let oldTokens: string[];
  let steady: Enrolled[];

  test('a due identity key is replaced: new key sealed, certified and recorded; the client then takes part in a round with the exact sum', async () => {
    dir = await enrollDataDir(rotatingId);
    const loaded = await loadClient(dir, PASSPHRASE);
    old = { clientId: rotatingId, identity: copyOf(loaded.identity), certificateDer: loaded.certificateDer };
    steady = await enrollClients(c, 3, 'steady');
    runners.push(...startRunners(c, steady, dim));
    const events: RunnerEvent[] = [];
    const runner = runnerOf(dir, loaded, 3, dim, events);
    await waitFor(() => c.connectedClients().length === 4, 20_000, 'four subscribers');

    oldChannel = secAgg(c.address, credentialsOf(c.ca.certificatePem, old));
    closers.push(oldChannel);
    oldTokens = await issueTokens(oldChannel, 4);

    // Not due with today's clock: nothing changes.
    await expect(rekeyIfDue(dir, PASSPHRASE, DEFAULT_POLICY, runner)).resolves.toBeUndefined();
    expect(c.registry.clients.get(rotatingId)!.publicKey).toBe(b64u(old.identity.publicKey));
    expect((await readKeysFile(dir)).keys.identity?.version).toBe(1);

    const connectedBefore = events.filter((e) => e.kind === 'connected').length;
    await expect(rekeyIfDue(dir, PASSPHRASE, DEFAULT_POLICY, runner, later)).resolves.toEqual({ key: 'identity', previousVersion: 1, version: 2, reason: 'due' });

    // The data dir: the new keyfile replaced the old one, client.pem certifies it, the version moved on.
    expect(existsSync(join(dir, NEXT_IDENTITY_KEYFILE))).toBe(false);
    const reopened = await openOrCreateIdentity(dir, PASSPHRASE);
    expect(reopened.created).toBe(false);
    const newKey = b64u(reopened.identity.publicKey);
    expect(newKey).not.toBe(b64u(old.identity.publicKey));
    const pemDer = new Uint8Array(new X509Certificate(await readFile(join(dir, 'client.pem'), 'utf8')).raw);
    expect(certifiedKey(pemDer)).toBe(newKey);
    expect(cert(pemDer).subject).toBe(`CN=${rotatingId}`);
    expect(cert(pemDer).checkIssued(new X509Certificate(c.ca.certificatePem))).toBe(true);
    expect((await readKeysFile(dir)).keys.identity).toMatchObject({ version: 2, dateSource: 'recorded' });
    fresh = { clientId: rotatingId, identity: reopened.identity, certificateDer: pemDer };

    // The coordinator: the record holds the new key and certificate; the old serial is revoked, the id is not.
    const rec = c.registry.clients.get(rotatingId)!;
    expect(rec.publicKey).toBe(newKey);
    expect(rec.serial).toBe(serialOf(pemDer));
    expect(Buffer.from(rec.certificate, 'base64').equals(Buffer.from(pemDer))).toBe(true);
    expect(c.registry.revocations.isRevoked({ serial: serialOf(old.certificateDer) })).toBe(true);
    expect(c.registry.revocations.isRevoked({ clientId: rotatingId, serial: rec.serial })).toBe(false);
    expect(c.registry.bindings.owner(reopened.identity.publicKey)).toBe(rotatingId);

    // The runner moved to the new certificate at once (a new stream), and the round signs with the new key.
    expect(events.some((e) => e.kind === 'renewed')).toBe(true);
    await waitFor(() => events.filter((e) => e.kind === 'connected').length > connectedBefore, 20_000, 'the runner to subscribe again under the new certificate');
    await waitFor(() => c.connectedClients().length === 4, 20_000, 'four subscribers');
    await c.launch(manifest({ round: { dim, cohort: 4, neighbors: 3 } }));
    const o = await c.outcomeOf('job-1', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual([rotatingId, ...steady.map((s) => s.clientId)].sort());
    expect(Array.from(o.sum)).toEqual(Array.from(expectedSum([0, 1, 2, 3], dim)));
    await waitFor(() => runner.agent.history.length > 0, 10_000, 'the rotated client to see the outcome');
    expect(runner.agent.history).toEqual([{ roundIndex: 0, ok: true }]);
  });

  test('the old certificate (old key, not expired) is refused on its next call of every kind; the new one works', async () => {
    expect(fresh).toBeDefined();
    const oldCert = cert(old.certificateDer);
    expect(Date.parse(oldCert.validTo)).toBeGreaterThan(Date.now());
    // The channel opened before the rotation, tokens issued before it.
    await expect(refusal(issueTokens(oldChannel, 1))).resolves.toEqual(unauthenticated(/revoked/));
    await expect(refusal(heartbeat(oldChannel, bearer(oldTokens[0]!)))).resolves.toEqual(unauthenticated(/revoked/));
    const s = subscribe(oldChannel, bearer(oldTokens[1]!));
    await expect(s.ended).resolves.toEqual(unauthenticated(/revoked/));
    expect(s.messages).toEqual([]);
    // Renew with the old certificate: neither for the old key nor for yet another new key.
    await expect(refusal(renewAs(old, old.identity, rotatingId, false))).resolves.toEqual(unauthenticated(/revoked/));
    await expect(refusal(renewAs(old, await createIdentity(), rotatingId, true))).resolves.toEqual(unauthenticated(/revoked/));
    // A new connection with the old certificate, too.
    const again = secAgg(c.address, credentialsOf(c.ca.certificatePem, old));
    closers.push(again);
    await expect(refusal(issueTokens(again, 1))).resolves.toEqual(unauthenticated(/revoked/));

    // The refused Subscribe did not take the rotated client's place: its runner is still subscribed.
    expect(c.connectedClients()).toContain(rotatingId);
    await expect(tokensWork(fresh)).resolves.toBe(true);
    // The rounds of this file are over: the runners go (the next tests launch none).
    await Promise.all(runners.map((r) => r.stop()));
  });
});

describe('the coordinator refuses a rekey it must not do, and changes nothing', () => {
  let clients: Enrolled[];
  beforeAll(async () => {
    clients = await enrollClients(c, 4, 'refused');
  });

  test('a new key without the rekey flag is key-already-bound (ALREADY_EXISTS); the registry is unchanged', async () => {
    const [a] = clients;
    const newer = await createIdentity();
    const before = registrySnapshot();
    const r = await refusal(renewAs(a!, newer, a!.clientId, false));
    expect(r).toMatchObject({ code: grpc.status.ALREADY_EXISTS, reason: ErrorCode.KeyAlreadyBound, details: expect.stringMatching(/keep the enrolled identity key/) });
    expect(registrySnapshot()).toBe(before);
    expect(c.registry.bindings.owner(newer.publicKey)).toBeUndefined();
    // The certificate still works, for the old key.
    await expect(tokensWork(a!)).resolves.toBe(true);
  });

  test("a rekey to a key bound to another client is key-already-bound; a CSR for another id is unauthenticated; nothing changes", async () => {
    const [, b, other] = clients;
    const before = registrySnapshot();
    const bound = await refusal(renewAs(b!, other!.identity, b!.clientId, true));
    expect(bound).toMatchObject({ code: grpc.status.ALREADY_EXISTS, reason: ErrorCode.KeyAlreadyBound });
    const asOther = await refusal(renewAs(b!, await createIdentity(), other!.clientId, true));
    expect(asOther).toEqual(unauthenticated(/another client/));
    expect(registrySnapshot()).toBe(before);
    await expect(tokensWork(b!)).resolves.toBe(true);
  });

  test('a revoked client cannot rekey (unauthenticated, revoked); nothing changes', async () => {
    const victim = clients[3]!;
    await c.revoke(victim.clientId, 'key-compromise');
    const before = registrySnapshot();
    const newer = await createIdentity();
    await expect(refusal(renewAs(victim, newer, victim.clientId, true))).resolves.toEqual(unauthenticated(/revoked/));
    expect(registrySnapshot()).toBe(before);
    expect(c.registry.bindings.owner(newer.publicKey)).toBeUndefined();
    expect(c.registry.clients.get(victim.clientId)!.publicKey).toBe(b64u(victim.identity.publicKey));
  });

  test('a refused rotation leaves the runner and the data dir as they were', async () => {
    const dir = await enrollDataDir('refused-dir-0');
    const loaded = await loadClient(dir, PASSPHRASE);
    const old: Enrolled = { clientId: 'refused-dir-0', identity: copyOf(loaded.identity), certificateDer: loaded.certificateDer };
    const pemBefore = await readFile(join(dir, 'client.pem'), 'utf8');
    const runner = runnerOf(dir, loaded, 0, 8);
    await waitFor(() => c.connectedClients().includes('refused-dir-0'), 20_000, 'the client to subscribe');
    const before = registrySnapshot();
    // The runner asks for another client's key: the coordinator's reason comes back as a typed error.
    await expect(runner.rekey(clients[0]!.identity)).rejects.toMatchObject({ code: ErrorCode.KeyAlreadyBound });
    expect(registrySnapshot()).toBe(before);
    await expect(tokensWork(old)).resolves.toBe(true);
    expect(c.connectedClients()).toContain('refused-dir-0');
    // The data-dir path with a runner that cannot rekey (stopped): the pending key is dropped, nothing else moves.
    await runner.stop();
    await expect(rekeyIfDue(dir, PASSPHRASE, DEFAULT_POLICY, runner, later)).rejects.toMatchObject({ code: ErrorCode.Unavailable });
    expect(existsSync(join(dir, NEXT_IDENTITY_KEYFILE))).toBe(false);
    expect(b64u((await openOrCreateIdentity(dir, PASSPHRASE)).identity.publicKey)).toBe(b64u(old.identity.publicKey));
    expect(await readFile(join(dir, 'client.pem'), 'utf8')).toBe(pemBefore);
    expect((await readKeysFile(dir)).keys.identity?.version).toBe(1);
    expect(registrySnapshot()).toBe(before);
  });
});

describe('every certificate of the old key ends with the rotation', () => {
  test('a certificate renewed earlier for the old key (still valid) is refused after a rekey, as is the one that asked', async () => {
    const [a] = await enrollClients(c, 1, 'renewed-then-rotated');
    // A plain renewal: a second certificate for the same key; the first stays valid (not revoked).
    const renewed = await renewAs(a!, a!.identity, a!.clientId, false);
    const second: Enrolled = { ...a!, certificateDer: renewed.certificateDer };
    await expect(tokensWork(a!)).resolves.toBe(true);
    await expect(tokensWork(second)).resolves.toBe(true);
    // Rekey, authenticated by the second certificate.
    const newer = await createIdentity();
    const rotated = await renewAs(second, newer, a!.clientId, true);
    expect(certifiedKey(rotated.certificateDer)).toBe(b64u(newer.publicKey));
    for (const stale of [a!, second]) {
      expect(Date.parse(cert(stale.certificateDer).validTo)).toBeGreaterThan(Date.now());
      await expect(refusal(tokensWork(stale))).resolves.toEqual(unauthenticated(/revoked/));
    }
    await expect(tokensWork({ identity: newer, certificateDer: rotated.certificateDer })).resolves.toBe(true);
  });

  test('two concurrent rekeys with the same certificate: one new key is certified, the other request is refused and binds nothing', async () => {
    const [a] = await enrollClients(c, 1, 'concurrent');
    const keys = await Promise.all([createIdentity(), createIdentity(), createIdentity()]);
    const e = enrollment(c.address, credentialsOf(c.ca.certificatePem, a!));
    closers.push(e);
    const csrs = await Promise.all(keys.map((k) => createCsr(k, a!.clientId)));
    const settled = await Promise.allSettled(
      csrs.map((csrDer) => callUnary(e.renew.bind(e), create(enroll.RenewRequestSchema, { csrDer, rekey: true }), new grpc.Metadata(), { deadline: Date.now() + 10_000 })),
    );
    const won = settled.flatMap((s, i) => (s.status === 'fulfilled' ? [{ i, reply: s.value }] : []));
    expect(won).toHaveLength(1);
    const winner = won[0]!;
    const rec = c.registry.clients.get(a!.clientId)!;
    expect(rec.publicKey).toBe(b64u(keys[winner.i]!.publicKey));
    expect(rec.serial).toBe(serialOf(winner.reply.certificateDer));
    for (const [i, s] of settled.entries()) {
      if (i === winner.i) continue;
      expect(s.status).toBe('rejected');
      const r = await refusal(Promise.reject((s as PromiseRejectedResult).reason));
      expect([grpc.status.UNAVAILABLE, grpc.status.UNAUTHENTICATED]).toContain(r.code);
      expect(c.registry.bindings.owner(keys[i]!.publicKey)).toBeUndefined();
    }
    await expect(tokensWork({ identity: keys[winner.i]!, certificateDer: winner.reply.certificateDer })).resolves.toBe(true);
    await expect(refusal(tokensWork(a!))).resolves.toEqual(unauthenticated(/revoked/));
  });
});

describe('a rotation a crash interrupted is settled at the next load', () => {
  test('the pending key is kept when client.pem certifies it and dropped when it does not', async () => {
    const dir = await enrollDataDir('crashing-0');
    const loaded = await loadClient(dir, PASSPHRASE);
    const oldKey = b64u(loaded.identity.publicKey);
    const oldCertDer = loaded.certificateDer;
    const runner = runnerOf(dir, loaded, 0, 8);
    await waitFor(() => c.connectedClients().includes('crashing-0'), 20_000, 'the client to subscribe');
    // The data dir as a crash would leave it: before the coordinator answered, and after the
    // certificate was saved but before the keyfile was moved into place.
    const beforeAnswer = `${dir}.before-answer`;
    const afterCertificate = `${dir}.after-certificate`;
    dirs.push(beforeAnswer, afterCertificate);
    const snapshotting: Rekeyer = {
      async rekey(identity) {
        await cp(dir, beforeAnswer, { recursive: true });
        const der = await runner.rekey(identity);
        await cp(dir, afterCertificate, { recursive: true });
        return der;
      },
    };
    await expect(rekeyIfDue(dir, PASSPHRASE, DEFAULT_POLICY, snapshotting, later)).resolves.toMatchObject({ key: 'identity', version: 2 });
    const newCertDer = c.registry.clients.get('crashing-0')!.certificate;
    const newKey = certifiedKey(new Uint8Array(Buffer.from(newCertDer, 'base64')));
    expect(newKey).not.toBe(oldKey);

    // Crash before the answer: a pending key, the old certificate. Dropped; the old key stays.
    expect(existsSync(join(beforeAnswer, NEXT_IDENTITY_KEYFILE))).toBe(true);
    expect(certifiedKey(new Uint8Array(new X509Certificate(await readFile(join(beforeAnswer, 'client.pem'), 'utf8')).raw))).toBe(oldKey);
    const dropped = await loadClient(beforeAnswer, PASSPHRASE);
    expect(existsSync(join(beforeAnswer, NEXT_IDENTITY_KEYFILE))).toBe(false);
    expect(existsSync(join(beforeAnswer, IDENTITY_KEYFILE))).toBe(true);
    expect(b64u(dropped.identity.publicKey)).toBe(oldKey);
    expect(Buffer.from(dropped.certificateDer).equals(Buffer.from(oldCertDer))).toBe(true);
    expect((await readKeysFile(beforeAnswer)).keys.identity?.version).toBe(1);

    // Crash after the certificate was saved: the pending key is the certified one. Kept, and it works.
    expect(existsSync(join(afterCertificate, NEXT_IDENTITY_KEYFILE))).toBe(true);
    const kept = await loadClient(afterCertificate, PASSPHRASE);
    expect(existsSync(join(afterCertificate, NEXT_IDENTITY_KEYFILE))).toBe(false);
    expect(b64u(kept.identity.publicKey)).toBe(newKey);
    expect(certifiedKey(kept.certificateDer)).toBe(newKey);
    expect((await readKeysFile(afterCertificate)).keys.identity?.version).toBe(2);
    await expect(tokensWork({ identity: kept.identity, certificateDer: kept.certificateDer })).resolves.toBe(true);
    // Loading again changes nothing more.
    const again = await loadClient(afterCertificate, PASSPHRASE);
    expect(b64u(again.identity.publicKey)).toBe(newKey);
    expect((await readKeysFile(afterCertificate)).keys.identity?.version).toBe(2);

    // The data dir the rotation finished in loads the new key.
    const done = await loadClient(dir, PASSPHRASE);
    expect(b64u(done.identity.publicKey)).toBe(newKey);
    await runner.stop();
  });
});
