/**
 * A Redis that is slow or hangs under a front end — its socket open and silent, not closed —
 * placed behind the fault-injecting proxy (test/support/fault-proxy.ts): (1) 150 ms added each
 * way on every Redis command, a round still ends exact within its manifest's deadlines; (2) Redis
 * silent: the PING probe marks it down (`probeTimeoutMs`), the running round aborts with the
 * typed reason `state-unreachable`, the coordinator's close returns without waiting for the silent
 * Redis, and once the link heals the health is up again and the abort is recorded on Redis.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from '@jest/globals';
import type { Redis } from 'ioredis';
import type { ClientRunner } from '../../client/agent/connection.js';
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { connectRedis } from '../../coordinator/queue/redis.js';
import { RedisHealth } from '../../coordinator/queue/redis-health.js';
import { RedisRounds } from '../../coordinator/queue/redis-rounds.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { enrollClients, expectedSum, manifest, startRunners, waitFor } from '../support/cluster.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { freePort, spawnAofRedis } from '../support/redis.js';

const DIM = 4;

/** Waits for an asynchronous condition (a Redis read), bounded only to end a hung test. */
async function waitForAsync(cond: () => Promise<boolean>, what: string): Promise<void> {
  const until = Date.now() + 60_000;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
const HOUR = 3_600_000;
let cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

/** A redis-server of this test's own, and a fault proxy in front of it. */
async function redisBehindProxy(): Promise<{ server: ChildProcess; direct: Redis; proxy: FaultProxy }> {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-hung-'));
  const port = await freePort();
  const { server, redis: direct } = await spawnAofRedis(port, dir);
  const proxy = await FaultProxy.start(`127.0.0.1:${port}`);
  cleanup.push(() => {
    direct.disconnect();
    server.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  cleanup.push(() => proxy.close());
  return { server, direct, proxy };
}

/** One front end whose Redis connection goes through `proxy`, and `n` clients; `silent` clients never answer a round. */
async function frontEnd(proxy: FaultProxy, n: number, opts: { stateUnreachableAfterMs: number; silent?: number }): Promise<{ c: Coordinator; shared: RedisRounds; health: RedisHealth }> {
  const conn = await connectRedis(`redis://${proxy.address}`, { connectTimeoutMs: 30_000 });
  conn.options.maxRetriesPerRequest = null;
  const health = new RedisHealth(conn, { url: 'redis://test', logEveryMs: 1000, probeMs: 200, probeTimeoutMs: 1000 }).start();
  const shared = new RedisRounds(conn, randomBytes(32), { prefix: 'hung', pollMs: 200, health, stateUnreachableAfterMs: opts.stateUnreachableAfterMs, watch: (e) => health.watch(e) });
  const c = new Coordinator({ ca: await createCa({ name: 'Aegis test CA' }), tokens: TokenIssuer.create(), registry: new Registry(), redisRounds: shared, redisHealth: health, lostAfterMs: 500 });
  await c.listen('127.0.0.1:0', '127.0.0.1:0');
  const clients = await enrollClients(c, n);
  const silent = opts.silent ?? 0;
  const runners: ClientRunner[] = startRunners(c, clients, DIM, undefined, (i) => (i >= n - silent ? { beforeRound: () => new Promise<void>(() => undefined) } : {}));
  cleanup.push(async () => {
    for (const r of runners) await r.stop();
    await c.close();
    health.stop();
    health.disconnectAll();
  });
  await waitFor(() => c.connectedClients().length === n, 60_000, 'clients connected');
  return { c, shared, health };
}

describe('a slow or hung Redis under a front end', () => {
  test('150 ms added each way on every Redis command: the round still ends exact', async () => {
    const { proxy } = await redisBehindProxy();
    const { c } = await frontEnd(proxy, 3, { stateUnreachableAfterMs: HOUR });
    proxy.setLatency(150);
    await c.launch(manifest({ jobId: 'slow', round: { dim: DIM, cohort: 3, threshold: 2 }, deadlines: { advertiseMs: HOUR, shareMs: HOUR, maskedMs: HOUR, consistencyMs: HOUR, unmaskMs: HOUR } }), { gatherMs: 5_000 });
    const o = await c.outcomeOf('slow', 0);
    expect(o.ok ? Array.from(o.sum) : o).toEqual(Array.from(expectedSum([0, 1, 2], DIM)));
    // The latency was really on the path: bytes were held by it.
    expect(proxy.forwarded.up).toBeGreaterThan(0);
  });

  test('Redis silent (socket open): marked down by the probe, the round aborts with state-unreachable, and after healing the abort is on Redis', async () => {
    const { proxy, direct } = await redisBehindProxy();
    const { c, shared, health } = await frontEnd(proxy, 3, { stateUnreachableAfterMs: 1500, silent: 1 });
    await c.launch(manifest({ jobId: 'hung', round: { dim: DIM, cohort: 3, threshold: 2 }, deadlines: { advertiseMs: HOUR, shareMs: HOUR, maskedMs: HOUR, consistencyMs: HOUR, unmaskMs: HOUR } }), { gatherMs: 5_000 });
    const inbox = shared.store.inboxKey('hung.r0', Phase.AdvertiseKeys);
    await waitForAsync(async () => (await direct.hlen(inbox)) >= 2, 'two advertisements on Redis');
    const outcome = c.outcomeOf('hung', 0);
    proxy.blackhole();
    // Nothing closed the connection: only the unanswered PING tells.
    await waitFor(() => !health.up, 60_000, 'Redis marked down');
    expect(proxy.connections).toBeGreaterThan(0);
    expect(await outcome).toMatchObject({ ok: false, reason: AbortReason.StateUnreachable, at: Phase.AdvertiseKeys });
    // Back: the probe answers again and the abort is written for every front end to read.
    proxy.heal();
    await waitFor(() => health.up, 60_000, 'Redis marked up again');
    const rk = shared.store.roundKey('hung.r0');
    await waitForAsync(async () => (await direct.hget(rk, 'phase')) === Phase.Aborted, 'the abort recorded on Redis');
  });

  test('closing a front end while its Redis is silent returns (nothing waits for the silent Redis)', async () => {
    const { proxy } = await redisBehindProxy();
    const { c, health } = await frontEnd(proxy, 3, { stateUnreachableAfterMs: HOUR, silent: 1 });
    await c.launch(manifest({ jobId: 'closing', round: { dim: DIM, cohort: 3, threshold: 2 }, deadlines: { advertiseMs: HOUR, shareMs: HOUR, maskedMs: HOUR, consistencyMs: HOUR, unmaskMs: HOUR } }), { gatherMs: 5_000 });
    proxy.blackhole();
    await waitFor(() => !health.up, 60_000, 'Redis marked down');
    // As the coordinator's SIGTERM handler does with Redis down: drop the connections, then close.
    health.disconnectAll();
    await c.close();
    // It returned while Redis was still silent (had it waited for Redis, the test would hang here).
    expect(proxy.blackholed).toBe(true);
    expect(health.up).toBe(false);
  });
});
