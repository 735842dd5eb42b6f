/**
 * The client registry shared by coordinator front ends on one real Redis and one data dir
 * (coordinator/queue/redis-registry.ts): a revocation on front end A ends the client's open
 * stream on front end B and B refuses its next call — learned by push (B's re-reads are set to
 * never run here, so only the announcement can explain it); concurrent revocations on both front
 * ends are all kept; an invite redeems once across front ends; a missed announcement is caught by
 * the write counter; what Redis loses while a front end runs is written back; registry.json is
 * imported at the first start and written as an export. Real gRPC over TLS 1.3, real Redis.
 */
import { afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { enrollWithToken } from '../../client/agent/connection.js';
import { createCsr, createIdentity, type ClientIdentity } from '../../client/enroll/csr.js';
import { createCa, csrForSeed, serialOf, type CertificateAuthority } from '../../coordinator/auth/ca.js';
import { EnrollmentError, Invites } from '../../coordinator/auth/enrollment.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { ClientRegistry, type RevocationsChanged } from '../../coordinator/clients/client-registry.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { RedisRegistryStore } from '../../coordinator/queue/redis-registry.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { loadRegistry } from '../../coordinator/service/data-dir.js';
import { ErrorCode } from '../../shared/errors.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import { waitFor } from '../support/cluster.js';
import { adminClient, bearer, credentialsOf, healthWatch, heartbeat, issueTokens, mtls, refusal, secAgg, subscribe } from '../support/raw-calls.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import { callUnary } from '../../shared/rpc/service.js';
import { ed25519PrivateKeyPem } from '../../shared/keystore/webcrypto-ed25519.js';
import { randomBytes } from 'node:crypto';
import { useTestRedis } from '../support/redis.js';

const ctx = useTestRedis();
const NEVER = 1_000_000_000; // ms: B's periodic re-reads never run during a test
let ca: CertificateAuthority;
let tokens: TokenIssuer;
let cleanup: (() => Promise<unknown> | void)[] = [];
let n = 0;

beforeAll(async () => {
  ca = await createCa({ name: 'Aegis registry test CA' });
  tokens = TokenIssuer.create();
});

afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

/** A fresh deployment: its own key prefix and data dir. */
function deployment(): { prefix: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-registry-redis-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return { prefix: `${ctx.prefix}:d${n++}`, dir };
}

interface FrontEnd {
  c: Coordinator;
  store: RedisRegistryStore;
}

/** A coordinator front end on the deployment (its registry cache loaded from the data dir, as `coordinator start` does). */
async function frontEnd(d: { prefix: string; dir: string }, opts: { checkMs?: number } = {}): Promise<FrontEnd> {
  const store = new RedisRegistryStore(ctx.redis, { prefix: d.prefix, dataDir: d.dir, resyncMs: NEVER, checkMs: opts.checkMs ?? NEVER });
  const c = new Coordinator({ ca, tokens, registry: await loadRegistry(d.dir), dataDir: d.dir, registryStore: store });
  await c.listen('127.0.0.1:0', '127.0.0.1:0');
  cleanup.push(() => c.close());
  return { c, store };
}

/** A client registry on the deployment's Redis alone (what a fresh front end would read). */
async function reader(prefix: string): Promise<ClientRegistry> {
  const r = new ClientRegistry({ ca, registry: new Registry(), store: new RedisRegistryStore(ctx.redis, { prefix, resyncMs: NEVER, checkMs: NEVER }), clock: Date.now });
  await r.start();
  cleanup.push(() => r.close());
  return r;
}

async function enrollVia(c: ClientRegistry, clientId: string, token?: string): Promise<{ identity: ClientIdentity; certificateDer: Uint8Array }> {
  const identity = await createIdentity();
  const t = token ?? (await c.createInvite()).token;
  const r = await c.enroll(create(enroll.EnrollRequestSchema, { token: t, csrDer: await createCsr(identity, clientId) }));
  return { identity, certificateDer: r.certificateDer };
}

const unauthenticated = (detail: RegExp) => ({ code: grpc.status.UNAUTHENTICATED, codeName: 'UNAUTHENTICATED', reason: ErrorCode.Unauthenticated, details: expect.stringMatching(detail) });

describe('the client registry shared by front ends on Redis', () => {
  test('revoked on A: the client streaming through B has its stream ended and its next call on B refused, learned by push', async () => {
    const d = deployment();
    const a = await frontEnd(d);
    const b = await frontEnd(d);
    // Enrolled through A's enrollment listener; B learns of it by push and takes its calls at once.
    const identity = await createIdentity();
    const { token } = await a.c.createInvite();
    const e = await enrollWithToken({ enrollAddress: a.c.enrollAddress, caPem: ca.certificatePem, token, identity, clientId: 'dev-2' });
    await waitFor(() => b.c.clients.get('dev-2') !== undefined, 10_000, 'B to learn of the enrollment');
    const client = secAgg(b.c.address, credentialsOf(ca.certificatePem, { identity, certificateDer: e.certificateDer }));
    cleanup.push(() => client.close());
    const t = await issueTokens(client, 3);
    const s = subscribe(client, bearer(t[0]!));
    await waitFor(() => b.c.connectedClients().includes('dev-2'), 10_000, 'dev-2 to stream through B');
    await expect(heartbeat(client, bearer(t[1]!))).resolves.toBeDefined();

    const before = { ...b.store.stats };
    const heard = new Promise<RevocationsChanged>((resolve) => b.c.clients.onRevocationsChanged(resolve));
    await a.c.revoke('dev-2', 'key-compromise');
    const revokedAt = performance.now();
    await expect(s.ended).resolves.toEqual(unauthenticated(/revoked/));
    const latencyMs = performance.now() - revokedAt;
    // B learned it from the announcement: no re-read of the registry ran on B.
    await expect(heard).resolves.toMatchObject({ clients: ['dev-2'], serials: [serialOf(e.certificateDer).replace(/^0+/, '')], source: 'push' });
    expect(b.store.stats.resyncs).toBe(before.resyncs);
    expect(b.store.stats.pushes).toBeGreaterThan(before.pushes);
    expect(b.c.connectedClients()).not.toContain('dev-2');
    // Its next calls on B: refused, with a token B issued before the revocation, and on a new connection.
    await expect(refusal(heartbeat(client, bearer(t[2]!)))).resolves.toEqual(unauthenticated(/revoked/));
    await expect(refusal(issueTokens(client, 1))).resolves.toEqual(unauthenticated(/revoked/));
    const fresh = secAgg(b.c.address, credentialsOf(ca.certificatePem, { identity, certificateDer: e.certificateDer }));
    cleanup.push(() => fresh.close());
    await expect(refusal(issueTokens(fresh, 1))).resolves.toEqual(unauthenticated(/revoked/));
    expect(b.c.clientStatus('dev-2')).toBe('revoked');
    // The latency is measured by `npm run bench -- registry`; here it is only reported.
    process.stderr.write(`revoke on A -> stream ended on B: ${latencyMs.toFixed(1)} ms\n`);
  });

  test('an operator credential revoked on A is refused on B at its next Admin call, on the connection it already had open, and its open stream on B ends (learned by push)', async () => {
    const d = deployment();
    const a = await frontEnd(d);
    const b = await frontEnd(d);
    const seed = new Uint8Array(randomBytes(32));
    const { certificateDer } = await a.c.operators.issue('night-shift', await csrForSeed(seed, 'operator:night-shift'));
    const onB = adminClient(b.c.address, mtls(ca.certificatePem, ed25519PrivateKeyPem(seed), certificateDer));
    cleanup.push(() => onB.close());
    const list = () => callUnary(onB.listClients.bind(onB), create(admin.ListClientsRequestSchema, {}));
    await expect(list()).resolves.toBeDefined();
    // A stream it holds open on B, too.
    const watch = healthWatch(b.c.address, mtls(ca.certificatePem, ed25519PrivateKeyPem(seed), certificateDer));
    cleanup.push(() => watch.close());
    await watch.first;
    const resyncs = b.store.stats.resyncs;
    await a.c.operators.revoke({ name: 'night-shift' }, 'key-compromise');
    await waitFor(() => b.c.clients.isRevoked({ serial: serialOf(certificateDer) }), 10_000, 'B to learn the revocation');
    expect(b.store.stats.resyncs).toBe(resyncs);
    expect(await refusal(list())).toMatchObject({ code: grpc.status.UNAUTHENTICATED, reason: ErrorCode.Unauthenticated });
    await expect(watch.ended).resolves.toMatchObject({ code: grpc.status.UNAUTHENTICATED, reason: ErrorCode.Unauthenticated, details: 'operator certificate refused: revoked' });
  });

  test('two revocations of two clients on two front ends at the same instant, many times over: both kept, on Redis and in every cache', async () => {
    const d = deployment();
    const a = await frontEnd(d);
    const b = await frontEnd(d);
    const pairs: [string, string][] = [];
    for (let i = 0; i < 10; i++) {
      const pair: [string, string] = [`a-${i}`, `b-${i}`];
      await Promise.all([enrollVia(a.c.clients, pair[0]), enrollVia(b.c.clients, pair[1])]);
      pairs.push(pair);
    }
    for (const [x, y] of pairs) {
      // Last-seen writes race too.
      a.c.clients.markSeen(x);
      b.c.clients.markSeen(y);
      await Promise.all([a.c.revoke(x, 'lost-device'), b.c.revoke(y, 'retired'), a.c.clients.flushLastSeen(true), b.c.clients.flushLastSeen(true)]);
    }
    const fresh = await reader(d.prefix);
    for (const [x, y] of pairs) {
      for (const reg of [fresh.registry, a.c.registry, b.c.registry]) {
        if (reg !== fresh.registry) await waitFor(() => reg.revocations.isRevoked({ clientId: x }) && reg.revocations.isRevoked({ clientId: y }), 10_000, 'both revocations pushed');
        for (const id of [x, y]) {
          expect(reg.revocations.isRevoked({ clientId: id })).toBe(true);
          expect(reg.revocations.isRevoked({ serial: fresh.get(id)!.serial })).toBe(true);
        }
      }
      expect(fresh.get(x)).toMatchObject({ revocationReason: 'lost-device' });
      expect(fresh.get(y)).toMatchObject({ revocationReason: 'retired' });
    }
    expect((await fresh.signedCrl()).entries).toBe(20);
  });

  test('an invite redeems once across front ends: the same token on A and B at once enrolls one client; later it is used on either', async () => {
    const d = deployment();
    const a = await frontEnd(d);
    const b = await frontEnd(d);
    for (let i = 0; i < 5; i++) {
      const { token } = await (i % 2 === 0 ? a : b).c.createInvite();
      // The other front end's copy learns of the invite by push too.
      await waitFor(() => (i % 2 === 0 ? b : a).c.registry.invites.byHash(Invites.hashOf(token)) !== undefined, 10_000, 'the invite to be announced');
      const results = await Promise.allSettled([enrollVia(a.c.clients, `x-${i}`, token), enrollVia(b.c.clients, `y-${i}`, token)]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(refused.reason).toBeInstanceOf(EnrollmentError);
      expect((refused.reason as EnrollmentError).reason).toBe('used');
      await expect(enrollVia(a.c.clients, `z-${i}`, token)).rejects.toMatchObject({ reason: 'used' });
      await expect(enrollVia(b.c.clients, `z-${i}`, token)).rejects.toMatchObject({ reason: 'used' });
    }
    expect((await reader(d.prefix)).records()).toHaveLength(5);
  });

  test('a rekey on A: the superseded certificate is refused on B (pushed), the new key is the one B knows', async () => {
    const d = deployment();
    const a = await frontEnd(d);
    const b = await frontEnd(d);
    const dev = await enrollVia(a.c.clients, 'dev-r');
    await waitFor(() => b.c.clients.get('dev-r') !== undefined, 10_000, 'B to learn of the enrollment');
    const next = await createIdentity();
    await a.c.clients.renew(create(enroll.RenewRequestSchema, { csrDer: await createCsr(next, 'dev-r'), rekey: true }), a.c.clients.get('dev-r')!, dev.certificateDer);
    const oldSerial = serialOf(dev.certificateDer);
    await waitFor(() => b.c.clients.isRevoked({ serial: oldSerial }), 10_000, 'B to learn of the superseded serial');
    expect(b.c.clients.get('dev-r')!.publicKey).toBe(Buffer.from(next.publicKey).toString('base64url'));
    expect(b.c.clients.isRevoked({ clientId: 'dev-r' })).toBe(false);
    // A second rekey from the old (now superseded) certificate, on B: refused.
    await expect(b.c.clients.renew(create(enroll.RenewRequestSchema, { csrDer: await createCsr(await createIdentity(), 'dev-r'), rekey: true }), b.c.clients.get('dev-r')!, dev.certificateDer)).rejects.toMatchObject({ code: ErrorCode.Unauthenticated });
  });

  test('an announcement that never came (a writer killed between its write and its publish) is caught by the write counter check', async () => {
    const d = deployment();
    const a = await frontEnd(d);
    const watcher = await frontEnd(d, { checkMs: 100 });
    await enrollVia(a.c.clients, 'dev-m');
    await waitFor(() => watcher.c.clients.get('dev-m') !== undefined, 10_000, 'the watcher to learn of the enrollment');
    const pushes = watcher.store.stats.pushes;
    const resyncs = watcher.store.stats.resyncs;
    const heard = new Promise<RevocationsChanged>((resolve) => watcher.c.clients.onRevocationsChanged(resolve));
    // The write a front end makes for a revocation, without its announcement.
    const p = `${d.prefix}:registry`;
    await ctx.redis.multi().sadd(`${p}:revoked-clients`, 'dev-m').incr(`${p}:seq`).exec();
    await expect(heard).resolves.toMatchObject({ clients: ['dev-m'], source: 'resync' });
    expect(watcher.store.stats.resyncs).toBeGreaterThan(resyncs);
    expect(watcher.store.stats.pushes).toBe(pushes);
    expect(watcher.c.clientStatus('dev-m')).toBe('revoked');
  });

  test('a subscription that drops and reconnects re-reads the registry: a change made while it was down is taken in', async () => {
    const d = deployment();
    const a = await frontEnd(d);
    await enrollVia(a.c.clients, 'dev-s');
    const resyncs = a.store.stats.resyncs;
    const heard = new Promise<RevocationsChanged>((resolve) => a.c.clients.onRevocationsChanged(resolve));
    // Its subscriber connection is cut by the server; meanwhile a revocation is written (not announced).
    const list = String(await ctx.redis.call('CLIENT', 'LIST'));
    const id = /id=(\d+) [^\n]*name=aegis-registry-(\S+)/g;
    let m: RegExpExecArray | null;
    let killed = 0;
    while ((m = id.exec(list)) !== null) {
      if (m[2] !== a.store.id) continue;
      const p = `${d.prefix}:registry`;
      await ctx.redis.multi().sadd(`${p}:revoked-clients`, 'dev-s').incr(`${p}:seq`).exec();
      await ctx.redis.call('CLIENT', 'KILL', 'ID', m[1]!);
      killed++;
    }
    expect(killed).toBe(1);
    await expect(heard).resolves.toMatchObject({ clients: ['dev-s'], source: 'resync' });
    expect(a.store.stats.resyncs).toBeGreaterThan(resyncs);
  });

  test('Redis loses the registry (restarted without its data) while a front end runs: its next resync writes back every revocation it holds', async () => {
    const d = deployment();
    const a = await frontEnd(d);
    await enrollVia(a.c.clients, 'dev-l');
    await a.c.revoke('dev-l', 'lost-device');
    const serial = a.c.clients.get('dev-l')!.serial;
    const keys = await ctx.redis.keys(`${d.prefix}:registry:*`);
    await ctx.redis.del(...keys);
    expect((await reader(d.prefix)).isRevoked({ clientId: 'dev-l' })).toBe(false);
    await a.store.resync('test');
    const fresh = await reader(d.prefix);
    expect(fresh.isRevoked({ clientId: 'dev-l' })).toBe(true);
    expect(fresh.isRevoked({ serial })).toBe(true);
    expect(fresh.get('dev-l')).toMatchObject({ revocationReason: 'lost-device' });
    expect(a.store.stats.healed).toBeGreaterThan(0);
  });

  test('first start on Redis imports registry.json (clients, revocations, unused invites); registry.json is then written as an export', async () => {
    const d = deployment();
    // A coordinator without Redis on the data dir first.
    const solo = new Coordinator({ ca, tokens, registry: await loadRegistry(d.dir), dataDir: d.dir });
    await solo.listen('127.0.0.1:0', '127.0.0.1:0');
    await enrollVia(solo.clients, 'old-1');
    await enrollVia(solo.clients, 'old-2');
    await solo.revoke('old-2', 'key-compromise');
    const { token } = await solo.createInvite();
    const serial2 = solo.clients.get('old-2')!.serial;
    await solo.close();

    const a = await frontEnd(d);
    expect(a.store.stats.healed).toBeGreaterThan(0);
    const fresh = await reader(d.prefix);
    expect(fresh.get('old-1')).toBeDefined();
    expect(fresh.isRevoked({ clientId: 'old-2', serial: serial2 })).toBe(true);
    // The imported invite redeems (once) on a front end that never read registry.json.
    await enrollVia(fresh, 'new-1', token);
    await expect(enrollVia(a.c.clients, 'new-2', token)).rejects.toMatchObject({ reason: 'used' });
    // Changes made through Redis reach registry.json (the export).
    await a.c.revoke('old-1', 'retired');
    let disk = await loadRegistry(d.dir);
    for (let i = 0; i < 200 && !disk.revocations.isRevoked({ clientId: 'old-1' }); i++) {
      await new Promise((r) => setTimeout(r, 25));
      disk = await loadRegistry(d.dir);
    }
    expect(disk.revocations.isRevoked({ clientId: 'old-1' })).toBe(true);
    expect(disk.revocations.isRevoked({ clientId: 'old-2' })).toBe(true);
  });
});
