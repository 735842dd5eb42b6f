/**
 * A running round whose state on Redis becomes unreachable ends with the typed abort reason
 * `state-unreachable` (coordinator/queue/redis-rounds.ts), never hangs: (1) Redis killed and down
 * longer than `stateUnreachableAfterMs` — the round aborts on the front end, and once Redis is back
 * (AOF on) the abort is recorded there too; (2) Redis restarted without its data — the round's
 * records are gone, and it aborts as soon as Redis answers. Each test runs its own redis-server on
 * a free port (as test/queue/redis-restart.redis.test.ts does) so it can kill it.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from '@jest/globals';
import type { Redis } from 'ioredis';
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { RedisHealth } from '../../coordinator/queue/redis-health.js';
import { RedisRounds } from '../../coordinator/queue/redis-rounds.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import type { ClientRunner } from '../../client/agent/connection.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { enrollClients, manifest, startRunners } from '../support/cluster.js';
import { freePort, spawnAofRedis } from '../support/redis.js';

const DIM = 4;
let cleanup: (() => Promise<unknown> | void)[] = [];
/** The Redis servers go after everything else: the coordinator closes while its Redis still answers. */
let servers: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of [...cleanup.reverse(), ...servers.reverse()]) await c();
  cleanup = [];
  servers = [];
});

async function redisServer(port: number, dir: string): Promise<{ server: ChildProcess; redis: Redis }> {
  const started = await spawnAofRedis(port, dir);
  servers.push(() => {
    started.redis.disconnect();
    started.server.kill('SIGKILL');
  });
  return started;
}

async function kill(server: ChildProcess): Promise<void> {
  const dead = new Promise((r) => server.once('exit', r));
  server.kill('SIGKILL');
  await dead;
}

/**
 * One front end on `redis` with Redis health, three clients of which the third never answers the
 * round, so the round waits in advertise-keys for its (long) deadline; resolves once the two
 * others' keys are recorded.
 */
async function stuckRound(redis: Redis, stateUnreachableAfterMs: number): Promise<{ c: Coordinator; shared: RedisRounds; health: RedisHealth; k: string }> {
  const conn = redis.duplicate({ maxRetriesPerRequest: null });
  const health = new RedisHealth(conn, { url: 'redis://test', logEveryMs: 1000 }).start();
  const shared = new RedisRounds(conn, randomBytes(32), { prefix: 'unreachable', pollMs: 200, health, stateUnreachableAfterMs, watch: (e) => health.watch(e) });
  const c = new Coordinator({ ca: await createCa({ name: 'Aegis test CA' }), tokens: TokenIssuer.create(), registry: new Registry(), redisRounds: shared, redisHealth: health, lostAfterMs: 500 });
  await c.listen('127.0.0.1:0', '127.0.0.1:0');
  const clients = await enrollClients(c, 3);
  const runners: ClientRunner[] = startRunners(c, clients, DIM, undefined, (i) => (i === 2 ? { beforeRound: () => new Promise<void>(() => undefined) } : {}));
  cleanup.push(async () => {
    for (const r of runners) await r.stop();
    // As the coordinator's shutdown does: the connections are dropped first only while Redis is
    // down (so nothing waits for it); with Redis up, the coordinator closes first.
    if (!health.up) health.disconnectAll();
    await c.close();
    health.stop();
    health.disconnectAll();
  });
  const hour = 3_600_000;
  await c.launch(manifest({ jobId: 'stuck', round: { dim: DIM, cohort: 3, threshold: 2 }, deadlines: { advertiseMs: hour, shareMs: hour, maskedMs: hour, consistencyMs: hour, unmaskMs: hour } }), { gatherMs: 5_000 });
  const k = 'stuck.r0';
  const inbox = shared.store.inboxKey(k, Phase.AdvertiseKeys);
  const until = Date.now() + 30_000;
  while ((await redis.hlen(inbox)) < 2) {
    if (Date.now() > until) throw new Error('timed out waiting for two advertisements');
    await new Promise((r) => setTimeout(r, 20));
  }
  return { c, shared, health, k };
}

describe('a round whose state on Redis becomes unreachable', () => {
  test('Redis down longer than stateUnreachableAfterMs: the round aborts with state-unreachable, and the abort is on Redis once it is back', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'aegis-unreachable-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const first = await redisServer(port, dir);
    const { c, shared, health, k } = await stuckRound(first.redis, 1500);
    let settled = false;
    const outcome = c.outcomeOf('stuck', 0).finally(() => (settled = true));
    await kill(first.server);
    const o = await outcome;
    expect(o).toMatchObject({ ok: false, reason: AbortReason.StateUnreachable, at: Phase.AdvertiseKeys });
    expect(settled).toBe(true);
    expect(health.up).toBe(false);
    // Back (the AOF holds the round as it was): the abort is written there, for every front end.
    const again = await redisServer(port, dir);
    const rk = shared.store.roundKey(k);
    const until = Date.now() + 30_000;
    while ((await again.redis.hget(rk, 'phase')) !== Phase.Aborted) {
      if (Date.now() > until) throw new Error(`the abort was not recorded on Redis (phase ${await again.redis.hget(rk, 'phase')})`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const ended = await shared.host(k);
    expect(await ended.outcome).toMatchObject({ ok: false, reason: AbortReason.StateUnreachable });
  });

  test('Redis restarted without its data: the round aborts with state-unreachable as soon as Redis answers', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'aegis-unreachable-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(join(dir, 'a'));
    const first = await redisServer(port, join(dir, 'a'));
    // Never aborted for being down: only the missing records end it.
    const { c } = await stuckRound(first.redis, 86_400_000);
    const outcome = c.outcomeOf('stuck', 0);
    await kill(first.server);
    mkdirSync(join(dir, 'b'));
    await redisServer(port, join(dir, 'b'));
    expect(await outcome).toMatchObject({ ok: false, reason: AbortReason.StateUnreachable, at: Phase.AdvertiseKeys, detail: expect.stringMatching(/no record of the round/) });
  });
});
