/**
 * Several coordinator front ends on one real Redis (coordinator/queue/redis-rounds.ts): a
 * round whose clients are split over two front ends, each keeping its own partial running sum;
 * duplicate close jobs; a phase deadline as a delayed BullMQ job; two launches of one round.
 * Real gRPC over TLS 1.3 on loopback, real Redis, real clients: nothing mocked.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, test } from '@jest/globals';
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { RedisRounds } from '../../coordinator/queue/redis-rounds.js';
import type { ClientRunner } from '../../client/agent/connection.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { enrollClients, expectedSum, manifest, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { useTestRedis } from '../support/redis.js';

const DIM = 16;
const ctx = useTestRedis();
const queueKey = randomBytes(32);

interface FrontEnd {
  c: Coordinator;
  shared: RedisRounds;
}

let fes: FrontEnd[] = [];
let runners: ClientRunner[] = [];

afterEach(async () => {
  for (const r of runners) await r.stop();
  runners = [];
  for (const f of fes) await f.c.close();
  fes = [];
});

/** `n` front ends sharing one CA, token key, registry and Redis prefix (as processes sharing a data dir do). */
async function frontEnds(n: number, prefix: string): Promise<FrontEnd[]> {
  const ca = await createCa({ name: 'Aegis test CA' });
  const tokens = TokenIssuer.create();
  const registry = new Registry();
  const out: FrontEnd[] = [];
  for (let i = 0; i < n; i++) {
    const redis = ctx.redis.duplicate({ maxRetriesPerRequest: null });
    ctx.closers.push(() => redis.quit());
    const shared = new RedisRounds(redis, queueKey, { prefix, frontEndId: `fe-${i}-${randomBytes(2).toString('hex')}`, pollMs: 200 });
    const c = new Coordinator({ ca, tokens, registry, redisRounds: shared, lostAfterMs: 500 });
    await c.listen('127.0.0.1:0', '127.0.0.1:0');
    out.push({ c, shared });
  }
  fes = out;
  return out;
}

/** Clients 0..n-1; client i connects to front end i % fes.length. */
function runOn(frontEndsList: FrontEnd[], clients: Enrolled[]): ClientRunner[] {
  const rs = clients.map((e, i) => startRunners(frontEndsList[i % frontEndsList.length]!.c, [e], DIM, undefined, () => ({ input: () => inputOf(i) }))[0]!);
  runners = rs;
  return rs;
}

const inputOf = (i: number): Uint32Array => expectedSum([i], DIM);
/** A client held before it joins a round: connected and invited, it never answers phase 0. */
const held = (): Promise<void> => new Promise<void>(() => undefined);
const sumEquals = (a: Uint32Array, b: Uint32Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('a round across two front ends', () => {
  test('clients split over two front ends: the round completes with the exact sum; each front end keeps its own partial; every phase changes once', async () => {
    const prefix = `${ctx.prefix}-a`;
    const [a, b] = await frontEnds(2, prefix);
    const clients = await enrollClients(a!.c, 6);
    runOn([a!, b!], clients);
    await waitFor(() => a!.c.connectedClients().length === 3 && b!.c.connectedClients().length === 3, 20_000, 'clients on both front ends');
    const launched = await a!.c.launch(manifest({ jobId: 'two-fe', round: { dim: DIM, cohort: 6, threshold: 4 } }), { gatherMs: 5_000 });
    expect(launched.cohort).toHaveLength(6);
    const o = await a!.c.outcomeOf('two-fe', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual(clients.map((x) => x.clientId).sort());
    expect(sumEquals(o.sum, expectedSum([0, 1, 2, 3, 4, 5], DIM))).toBe(true);
    const rk = a!.shared.store.roundKey('two-fe.r0');
    // Five transitions (four phase changes and the completion), each applied exactly once.
    expect(await ctx.redis.hget(rk, 'transitions')).toBe('5');
    // Both front ends wrote a partial sum of their own clients; no client's vector is in Redis.
    const partials = await ctx.redis.hkeys(a!.shared.store.partialKey('two-fe.r0'));
    expect(partials.filter((f) => !f.endsWith(':ids')).sort()).toEqual([a!.shared.frontEndId, b!.shared.frontEndId].sort());
    const masked = await ctx.redis.hgetall(a!.shared.store.inboxKey('two-fe.r0', Phase.MaskedInput));
    expect(Object.keys(masked)).toHaveLength(6);
    for (const v of Object.values(masked)) expect(v).toMatch(/^fe-\d-[0-9a-f]{4}\|[0-9a-f]{64}$/);
  });

  test('a close job delivered twice (and a late deadline job) applies its transition once', async () => {
    const prefix = `${ctx.prefix}-b`;
    const [a, b] = await frontEnds(2, prefix);
    const clients = await enrollClients(a!.c, 4);
    runOn([a!, b!], clients);
    await waitFor(() => a!.c.connectedClients().length + b!.c.connectedClients().length === 4, 20_000, 'clients connected');
    await a!.c.launch(manifest({ jobId: 'dupes', round: { dim: DIM, cohort: 4, threshold: 3 } }), { gatherMs: 5_000 });
    const o = await a!.c.outcomeOf('dupes', 0);
    expect(o.ok).toBe(true);
    const rk = a!.shared.store.roundKey('dupes.r0');
    const before = await ctx.redis.hget(rk, 'transitions');
    // Every phase's close, delivered again to both front ends at once: nothing changes.
    for (const p of [Phase.AdvertiseKeys, Phase.ShareKeys, Phase.MaskedInput, Phase.ConsistencyCheck, Phase.Unmasking]) {
      const applied = await Promise.all([a!.shared.closePhase('dupes.r0', p), b!.shared.closePhase('dupes.r0', p)]);
      expect(applied).toEqual([false, false]);
    }
    expect(await ctx.redis.hget(rk, 'transitions')).toBe(before);
    // Adding a job under an id that exists is a no-op (idempotent ids).
    const q = a!.shared.phaseQueue;
    const early = await q.getJob('dupes.r0.0.early');
    expect(early?.id).toBe('dupes.r0.0.early');
    await q.add('close', { k: 'dupes.r0', phase: Phase.AdvertiseKeys }, { jobId: 'dupes.r0.0.early' });
    expect((await q.getJobs(['waiting', 'active', 'delayed', 'completed'])).filter((j) => j.id === 'dupes.r0.0.early')).toHaveLength(1);
  });

  test('a deadline is a delayed job: with one client missing, the phase closes when it expires, not before', async () => {
    const prefix = `${ctx.prefix}-c`;
    const [a, b] = await frontEnds(2, prefix);
    const clients = await enrollClients(a!.c, 5);
    // Client 4 is connected and in the cohort but held before it joins the round: it neither
    // advertises keys nor declines, and the advertise phase waits for it until its deadline.
    runners = clients.map((e, i) => startRunners(i % 2 === 0 ? a!.c : b!.c, [e], DIM, undefined, () => ({ input: () => inputOf(i), ...(i === 4 ? { beforeRound: held } : {}) }))[0]!);
    await waitFor(() => a!.c.connectedClients().length + b!.c.connectedClients().length === 5, 20_000, 'clients connected');
    const advertiseMs = 3_000;
    const started = Date.now();
    await a!.c.launch(manifest({ jobId: 'deadline', round: { dim: DIM, cohort: 5, threshold: 3 }, deadlines: { advertiseMs, shareMs: 10_000, maskedMs: 10_000, consistencyMs: 10_000, unmaskMs: 10_000 } }), { gatherMs: 2_000 });
    const q = a!.shared.phaseQueue;
    const deadline = await q.getJob('deadline.r0.0.deadline');
    expect(deadline?.opts.delay).toBe(advertiseMs);
    const o = await a!.c.outcomeOf('deadline', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect(o.survivors).toHaveLength(4);
    expect(sumEquals(o.sum, expectedSum([0, 1, 2, 3], DIM))).toBe(true);
    const timeline = JSON.parse((await ctx.redis.hget(a!.shared.store.roundKey('deadline.r0'), 'timeline'))!) as { phase: string; at: number }[];
    // The advertise phase closed on its deadline (the fifth client never came).
    expect(timeline[1]!.phase).toBe(Phase.ShareKeys);
    expect(timeline[1]!.at - started).toBeGreaterThanOrEqual(advertiseMs);
    expect((await q.getJob('deadline.r0.0.early')) ?? null).toBeNull();
  });

  test('the same round launched twice (a launch delivered again) is followed, not started twice', async () => {
    const prefix = `${ctx.prefix}-d`;
    const [a, b] = await frontEnds(2, prefix);
    const clients = await enrollClients(a!.c, 4);
    runOn([a!, b!], clients);
    await waitFor(() => a!.c.connectedClients().length + b!.c.connectedClients().length === 4, 20_000, 'clients connected');
    const m = manifest({ jobId: 'twice', round: { dim: DIM, cohort: 4, threshold: 3 } });
    const [r1, r2] = await Promise.all([a!.c.launch(m, { gatherMs: 2_000, roundIndex: 0 }), b!.c.launch(m, { gatherMs: 2_000, roundIndex: 0 })]);
    expect(r1.roundIndex).toBe(0);
    expect(r2.roundIndex).toBe(0);
    const [o1, o2] = await Promise.all([a!.c.outcomeOf('twice', 0), b!.c.outcomeOf('twice', 0)]);
    expect(o1.ok && o2.ok).toBe(true);
    if (!o1.ok || !o2.ok) return;
    expect(sumEquals(o1.sum, o2.sum)).toBe(true);
    expect(sumEquals(o1.sum, expectedSum([0, 1, 2, 3], DIM))).toBe(true);
    expect(await ctx.redis.hget(a!.shared.store.roundKey('twice.r0'), 'transitions')).toBe('5');
  });

  test('round cancel on the launching front end ends the shared round everywhere as cancelled', async () => {
    const prefix = `${ctx.prefix}-e`;
    const [a, b] = await frontEnds(2, prefix);
    const clients = await enrollClients(a!.c, 4);
    // Client 3 is held before it joins (neither keys nor a decline): the round waits in its first
    // phase (long deadline) until cancelled.
    runners = clients.map((e, i) => startRunners(i % 2 === 0 ? a!.c : b!.c, [e], DIM, undefined, () => ({ input: () => inputOf(i), ...(i === 3 ? { beforeRound: held } : {}) }))[0]!);
    await waitFor(() => a!.c.connectedClients().length + b!.c.connectedClients().length === 4, 20_000, 'clients connected');
    const long = { advertiseMs: 60_000, shareMs: 60_000, maskedMs: 60_000, consistencyMs: 60_000, unmaskMs: 60_000 };
    await a!.c.launch(manifest({ jobId: 'cancel-shared', round: { dim: DIM, cohort: 4, threshold: 3 }, deadlines: long }), { gatherMs: 2_000 });
    const rk = a!.shared.store.roundKey('cancel-shared.r0');
    expect(await ctx.redis.hget(rk, 'phase')).toBe(Phase.AdvertiseKeys);
    expect(a!.c.cancelJob('cancel-shared', 'stop it').roundIndex).toBe(0);
    const followed = await b!.shared.host('cancel-shared.r0');
    const [oa, ob] = await Promise.all([a!.c.outcomeOf('cancel-shared', 0), followed.outcome]);
    expect(oa).toMatchObject({ ok: false, reason: 'cancelled' });
    expect(ob).toMatchObject({ ok: false, reason: 'cancelled', detail: 'stop it' });
    expect(await ctx.redis.hget(rk, 'phase')).toBe(Phase.Aborted);
  });
});
