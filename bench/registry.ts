/**
 * `npm run bench -- registry`: how long a revocation takes to end the revoked client's open
 * stream (as the client sees it), over real gRPC and TLS 1.3 on loopback: from the return of the
 * revoke call (negative when the stream ended before the call returned: the front end that
 * revokes applies it before its write), and from the start of the call.
 *
 * Baseline (measured in the same run): one coordinator without Redis (registry.json), the client
 * streaming through it and revoked on it. Then two front ends on one Redis and one data dir
 * (coordinator/queue/redis-registry.ts), the client streaming through B and revoked on A: B
 * learns it from the announcement on pub/sub (its periodic re-reads are off here, so nothing else
 * can tell it). The goal is well under a second. Needs a Redis (AEGIS_REDIS_URL, default
 * redis://127.0.0.1:6379); its keys go under a random prefix, removed afterwards.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { enrollWithToken } from '../client/agent/connection.js';
import { createIdentity, identityKeyPem } from '../client/enroll/csr.js';
import { createCa, type CertificateAuthority } from '../coordinator/auth/ca.js';
import { TokenIssuer } from '../coordinator/auth/tokens.js';
import { Registry } from '../coordinator/clients/registry.js';
import { RedisRegistryStore } from '../coordinator/queue/redis-registry.js';
import { connectRedis } from '../coordinator/queue/redis.js';
import { Coordinator } from '../coordinator/service/coordinator.js';
import { loadRegistry } from '../coordinator/service/data-dir.js';
import * as pb from '../shared/gen/aegis/v1/secagg_pb.js';
import { callUnary, clientFor } from '../shared/rpc/service.js';
import { fmt, table } from './table.js';

interface Row {
  setup: string;
  revocations: number;
  /** From the revoke call's return to the stream's end. */
  p50Ms: number;
  p95Ms: number;
  maxMs: number;
  /** From the start of the revoke call to the stream's end. */
  p50FromCallMs: number;
  /** The revoke call itself. */
  p50CallMs: number;
  /** B's announcements taken in / re-reads during the run (Redis only). */
  pushes?: number;
  resyncs?: number;
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 20_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface Sample {
  fromReturn: number;
  fromCall: number;
  call: number;
}

/** Enrolls a client on `enrollOn`, streams it through `streamOn`, revokes it on `revokeOn`. */
async function once(ca: CertificateAuthority, enrollOn: Coordinator, streamOn: Coordinator, revokeOn: Coordinator, id: string): Promise<Sample> {
  const identity = await createIdentity();
  const { token } = await enrollOn.createInvite();
  const e = await enrollWithToken({ enrollAddress: enrollOn.enrollAddress, caPem: ca.certificatePem, token, identity, clientId: id });
  await until(() => streamOn.clients.get(id) !== undefined, 'the front end to know the client');
  const creds = grpc.credentials.createSsl(Buffer.from(ca.certificatePem), Buffer.from(identityKeyPem(identity)), Buffer.from(new X509Certificate(Buffer.from(e.certificateDer)).toString()));
  const client = new (clientFor(pb.SecAgg))(streamOn.address, creds, { 'grpc.use_local_subchannel_pool': 1 });
  try {
    const r = await callUnary(client.issueTokens.bind(client), create(pb.IssueTokensRequestSchema, { count: 1 }));
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${r.tokens[0]!}`);
    const stream = client.subscribe(create(pb.SubscribeRequestSchema, {}), md);
    stream.on('data', () => undefined);
    const ended = new Promise<number>((resolve) => stream.on('error', () => resolve(performance.now())));
    await until(() => streamOn.connectedClients().includes(id), 'the client to stream');
    const called = performance.now();
    await revokeOn.revoke(id, 'key-compromise');
    const returned = performance.now();
    const end = await ended;
    return { fromReturn: end - returned, fromCall: end - called, call: returned - called };
  } finally {
    client.close();
  }
}

function stats(xs: Sample[]): Pick<Row, 'p50Ms' | 'p95Ms' | 'maxMs' | 'p50FromCallMs' | 'p50CallMs'> {
  const ret = xs.map((x) => x.fromReturn);
  return { p50Ms: quantile(ret, 0.5), p95Ms: quantile(ret, 0.95), maxMs: Math.max(...ret), p50FromCallMs: quantile(xs.map((x) => x.fromCall), 0.5), p50CallMs: quantile(xs.map((x) => x.call), 0.5) };
}

export async function benchRegistry(opts: { json: boolean; quick: boolean; budgetSeconds: number }): Promise<void> {
  const count = opts.quick ? 10 : 50;
  const ca = await createCa({ name: 'Aegis bench CA' });
  const tokens = TokenIssuer.create();
  const rows: Row[] = [];
  const dirs: string[] = [];
  const dir = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'aegis-bench-registry-'));
    dirs.push(d);
    return d;
  };
  const url = process.env.AEGIS_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const redis = await connectRedis(url);
  const prefix = `aegis-bench-${randomBytes(4).toString('hex')}`;
  const started: Coordinator[] = [];
  try {
    // Baseline: one coordinator, registry.json.
    const solo = new Coordinator({ ca, tokens, registry: new Registry(), dataDir: dir() });
    started.push(solo);
    await solo.listen('127.0.0.1:0', '127.0.0.1:0');
    const local: Sample[] = [];
    for (let i = 0; i < count; i++) local.push(await once(ca, solo, solo, solo, `solo-${i}`));
    rows.push({ setup: 'one coordinator (registry.json)', revocations: count, ...stats(local) });
    process.stderr.write(`baseline done (${count} revocations)\n`);

    // Two front ends on Redis: revoke on A, the stream is on B.
    const d = dir();
    const frontEnd = async (): Promise<{ c: Coordinator; store: RedisRegistryStore }> => {
      const store = new RedisRegistryStore(redis, { prefix, dataDir: d, resyncMs: 1_000_000_000, checkMs: 1_000_000_000 });
      const c = new Coordinator({ ca, tokens, registry: await loadRegistry(d), dataDir: d, registryStore: store });
      started.push(c);
      await c.listen('127.0.0.1:0', '127.0.0.1:0');
      return { c, store };
    };
    const a = await frontEnd();
    const b = await frontEnd();
    const before = { ...b.store.stats };
    const across: Sample[] = [];
    for (let i = 0; i < count; i++) across.push(await once(ca, a.c, b.c, a.c, `fe-${i}`));
    rows.push({
      setup: 'two front ends on Redis: revoked on A, streaming on B',
      revocations: count,
      ...stats(across),
      pushes: b.store.stats.pushes - before.pushes,
      resyncs: b.store.stats.resyncs - before.resyncs,
    });
  } finally {
    for (const c of started) await c.close().catch(() => undefined);
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ topic: 'registry', rows })}\n`);
    return;
  }
  const base = rows[0]!.p50FromCallMs;
  process.stdout.write(
    `${table(
      ['setup', 'revocations', 'return->end p50 ms', 'p95 ms', 'max ms', 'call->end p50 ms', 'vs one coordinator', 'revoke call p50 ms', 'B: pushes / re-reads'],
      rows.map((r) => [r.setup, r.revocations, fmt(r.p50Ms), fmt(r.p95Ms), fmt(r.maxMs), fmt(r.p50FromCallMs), `${fmt(r.p50FromCallMs / base, 2)}x`, fmt(r.p50CallMs), r.pushes === undefined ? '-' : `${r.pushes} / ${r.resyncs}`]),
    )}\n`,
  );
}
