/**
 * Two coordinator front ends on one Redis (coordinator/queue/redis-rounds.ts), and that Redis
 * restarted (graceful shutdown, AOF on) in the middle of a round: the recorded messages, the
 * phase and the delayed deadline job are still there after the restart, the front ends'
 * connections (commands, pub/sub, the BullMQ worker) come back by themselves, and the round
 * completes with the exact sum. The suite runs its own redis-server (Debian's) on a free port
 * with its data in a temp dir, as test/queue/redis-restart.redis.test.ts does.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from '@jest/globals';
import type { Redis } from 'ioredis';
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { RedisRounds } from '../../coordinator/queue/redis-rounds.js';
import type { ClientRunner } from '../../client/agent/connection.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { enrollClients, expectedSum, manifest, startRunners, waitFor } from '../support/cluster.js';
import { freePort, spawnAofRedis } from '../support/redis.js';

const DIM = 16;
const dir = mkdtempSync(join(tmpdir(), 'aegis-redis-fe-aof-'));
const queueKey = randomBytes(32);
let server: ChildProcess | undefined;
let runners: ClientRunner[] = [];
const coordinators: Coordinator[] = [];
const connections: Redis[] = [];

afterAll(async () => {
  for (const r of runners) await r.stop();
  for (const c of coordinators) await c.close();
  for (const r of connections) await r.quit().catch(() => r.disconnect());
  if (server && server.exitCode === null && server.signalCode === null) {
    const dead = new Promise((r) => server!.once('exit', r));
    server.kill('SIGKILL');
    await dead;
  }
  rmSync(dir, { recursive: true, force: true });
});


/** Starts redis-server on `port` with AOF in `dir` (it loads the AOF left there) and connects once it answers. */
async function startRedis(port: number): Promise<Redis> {
  const started = await spawnAofRedis(port, dir);
  server = started.server;
  return started.redis;
}

/** A graceful stop (SIGTERM: redis-server flushes the AOF and exits). */
async function stopRedis(): Promise<void> {
  const s = server!;
  const dead = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => s.once('exit', (code, signal) => r({ code, signal })));
  s.kill('SIGTERM');
  expect(await dead).toEqual({ code: 0, signal: null });
}

const runId = async (r: Redis): Promise<string> => /run_id:(\w+)/.exec(await r.info('server'))![1]!;
const inputOf = (i: number): Uint32Array => expectedSum([i], DIM);
const sumEquals = (a: Uint32Array, b: Uint32Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('Redis restarted with AOF on', () => {
  test('round state survives: the recorded advertisements, the phase and the deadline job are kept, and the round completes with the exact sum', async () => {
    const port = await freePort();
    const redis = await startRedis(port);
    connections.push(redis);
    const prefix = 'aof-fe';

    // Two front ends sharing one CA, token key and registry, each on its own connection.
    const ca = await createCa({ name: 'Aegis test CA' });
    const tokens = TokenIssuer.create();
    const registry = new Registry();
    const fes: { c: Coordinator; shared: RedisRounds }[] = [];
    for (let i = 0; i < 2; i++) {
      const conn = redis.duplicate({ maxRetriesPerRequest: null });
      connections.push(conn);
      const shared = new RedisRounds(conn, queueKey, { prefix, frontEndId: `fe-${i}-${randomBytes(2).toString('hex')}`, pollMs: 200 });
      const c = new Coordinator({ ca, tokens, registry, redisRounds: shared, lostAfterMs: 500 });
      coordinators.push(c);
      await c.listen('127.0.0.1:0', '127.0.0.1:0');
      fes.push({ c, shared });
    }
    const [a, b] = fes as [(typeof fes)[0], (typeof fes)[0]];

    // Six clients, client i on front end i % 2. Client 5 is connected and in the cohort but held
    // before it joins the round: it neither advertises keys nor declines, so the advertise phase
    // waits for its deadline, which holds the round in that phase while Redis restarts.
    const clients = await enrollClients(a.c, 6);
    runners = clients.map((e, i) => startRunners(fes[i % 2]!.c, [e], DIM, undefined, () => ({ input: () => inputOf(i), ...(i === 5 ? { beforeRound: () => new Promise<void>(() => undefined) } : {}) }))[0]!);
    await waitFor(() => a.c.connectedClients().length === 3 && b.c.connectedClients().length === 3, 20_000, 'clients on both front ends');

    const advertiseMs = 8_000;
    const started = Date.now();
    const launched = await a.c.launch(
      manifest({ jobId: 'restart', round: { dim: DIM, cohort: 6, threshold: 4 }, deadlines: { advertiseMs, shareMs: 20_000, maskedMs: 20_000, consistencyMs: 20_000, unmaskMs: 20_000 } }),
      { gatherMs: 5_000 },
    );
    expect(launched.cohort).toHaveLength(6);
    const k = 'restart.r0';
    const st = a.shared.store;
    const rk = st.roundKey(k);
    const inbox = st.inboxKey(k, Phase.AdvertiseKeys);

    // The five clients with input advertise (on both front ends); the round waits for the sixth.
    const until = Date.now() + 20_000;
    while ((await redis.hlen(inbox)) < 5) {
      if (Date.now() > until) throw new Error('timed out waiting for five advertisements');
      await new Promise((r) => setTimeout(r, 20));
    }
    const before = { run: await runId(redis), phase: await redis.hget(rk, 'phase'), inbox: await redis.hgetallBuffer(inbox), meta: await redis.hget(rk, 'meta') };
    expect(before.phase).toBe(Phase.AdvertiseKeys);
    expect(Object.keys(before.inbox).sort()).toEqual(clients.slice(0, 5).map((x) => x.clientId).sort());
    expect(await a.shared.phaseQueue.getJob(`${k}.0.deadline`)).toBeDefined();

    // Restart Redis: a graceful stop, then a new redis-server on the same port and dir, which
    // loads the AOF. The front ends' connections stay open and reconnect on their own.
    await stopRedis();
    const fresh = await startRedis(port);
    connections.push(fresh);
    expect(await runId(fresh)).not.toBe(before.run);
    expect(await fresh.config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);

    // Right after the restart: the phase, the five records (byte for byte) and the round's meta are there.
    expect(await fresh.hget(rk, 'phase')).toBe(Phase.AdvertiseKeys);
    expect(await fresh.hget(rk, 'transitions')).toBe('0');
    expect(await fresh.hget(rk, 'meta')).toBe(before.meta);
    const after = await fresh.hgetallBuffer(inbox);
    expect(Object.keys(after).sort()).toEqual(Object.keys(before.inbox).sort());
    for (const [id, v] of Object.entries(before.inbox)) expect(after[id]!.equals(v)).toBe(true);
    // The deadline is still a delayed BullMQ job (read through a front end's own, reconnected queue).
    const deadline = await a.shared.phaseQueue.getJob(`${k}.0.deadline`);
    expect(deadline?.id).toBe(`${k}.0.deadline`);
    expect(deadline?.opts.delay).toBe(advertiseMs);
    expect(await deadline!.getState()).toBe('delayed');
    // Nothing closed the advertise phase early.
    expect((await a.shared.phaseQueue.getJob(`${k}.0.early`)) ?? null).toBeNull();
    expect(Date.now() - started).toBeLessThan(advertiseMs);

    // The round completes after the deadline with the five clients that had input, on both front
    // ends (b follows the round a started: its outcome is on b's host of the round).
    const [oa, ob] = await Promise.all([a.c.outcomeOf('restart', 0), b.shared.host(k).then((h) => h.outcome)]);
    expect(oa.ok && ob.ok).toBe(true);
    if (!oa.ok || !ob.ok) return;
    const five = clients.slice(0, 5).map((x) => x.clientId).sort();
    expect([...oa.survivors].sort()).toEqual(five);
    expect([...ob.survivors].sort()).toEqual(five);
    expect(sumEquals(oa.sum, expectedSum([0, 1, 2, 3, 4], DIM))).toBe(true);
    expect(sumEquals(ob.sum, oa.sum)).toBe(true);
    // Five transitions (four phase changes and the completion), each applied exactly once.
    expect(await fresh.hget(rk, 'transitions')).toBe('5');
    expect(a.shared.applied + b.shared.applied).toBe(5);
    const timeline = JSON.parse((await fresh.hget(rk, 'timeline'))!) as { phase: string; at: number }[];
    expect(timeline.map((e) => e.phase)).toEqual([Phase.AdvertiseKeys, Phase.ShareKeys, Phase.MaskedInput, Phase.ConsistencyCheck, Phase.Unmasking, Phase.Completed]);
    // The advertise phase closed on its deadline, which survived the restart.
    expect(timeline[1]!.at - started).toBeGreaterThanOrEqual(advertiseMs);
    // Both front ends took masked inputs and wrote their partial sums after the restart.
    const partials = await fresh.hkeys(st.partialKey(k));
    expect(partials.filter((f) => !f.endsWith(':ids')).sort()).toEqual([a.shared.frontEndId, b.shared.frontEndId].sort());
  });
});
