/**
 * Differentially private training jobs across coordinator front ends on one real Redis
 * (coordinator/queue/redis-rounds.ts): the DP round of test/net/dp-round.test.ts with its 6
 * clients split over two front ends, each keeping its own partial sum. Real gRPC over TLS 1.3 on
 * loopback, real Redis, real clients and trainers whose updates the test knows: nothing mocked.
 *   - The released sum, decoded with the session id the round recorded on Redis, has the noise
 *     variance the manifest promises (χ² interval), its weight word is the survivor count, and
 *     the model update is initial + sum / survivors — whichever front end the clients are on.
 *   - A round that loses clients until fewer than dp.minClients are left aborts: no sum is
 *     released (nothing with less noise than promised), the model stays as it was.
 *   - The queued launch path refuses a DP job whose cohort exceeds dp.maxClients or whose
 *     threshold is below dp.minClients, at the request and at the worker that takes it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, test } from '@jest/globals';
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { LaunchQueue } from '../../coordinator/queue/launch-queue.js';
import { RedisRounds } from '../../coordinator/queue/redis-rounds.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import type { ClientRunner } from '../../client/agent/connection.js';
import type { Trainer } from '../../client/admission/training-round.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { codeOfAsync } from '../support/codes.js';
import { dpSection, dpTrainer, dpUpdate, expectPromisedNoise } from '../support/dp.js';
import { enrollClients, manifest, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { useTestRedis } from '../support/redis.js';

const N = 6;
const DIM = 200;
const MIN_CLIENTS = 4;
const LABEL = 'dp-frontends-test';

const ctx = useTestRedis();
const queueKey = randomBytes(32);
const initial = new Float32Array(DIM).map((_, i) => Math.cos(i) / 4);
const model = {
  format: 'safetensors' as const,
  tensors: [{ name: 'w', shape: [DIM], dtype: 'F32' as const }],
  initialWeightsSha256: createHash('sha256').update(weightBytes(initial)).digest('hex'),
};
const dp = dpSection({ dim: DIM, minClients: MIN_CLIENTS, maxClients: N });

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
async function frontEnds(n: number, prefix: string, launchQueue?: () => LaunchQueue): Promise<FrontEnd[]> {
  const ca = await createCa({ name: 'Aegis test CA' });
  const tokens = TokenIssuer.create();
  const registry = new Registry();
  const out: FrontEnd[] = [];
  // The suite's own prefix is removed by useTestRedis; this one is removed here (closers run last first).
  ctx.closers.push(async () => {
    const keys = await ctx.redis.keys(`${prefix}:*`);
    if (keys.length > 0) await ctx.redis.del(...keys);
  });
  for (let i = 0; i < n; i++) {
    const redis = ctx.redis.duplicate({ maxRetriesPerRequest: null });
    ctx.closers.push(() => redis.quit());
    const shared = new RedisRounds(redis, queueKey, { prefix, frontEndId: `fe-${i}-${randomBytes(2).toString('hex')}`, pollMs: 200 });
    const c = new Coordinator({ ca, tokens, registry, redisRounds: shared, lostAfterMs: 500, ...(launchQueue ? { launchQueue: launchQueue() } : {}) });
    await c.listen('127.0.0.1:0', '127.0.0.1:0');
    out.push({ c, shared });
  }
  fes = out;
  return out;
}

/** Client i connects to front end i % fes.length and trains with `trainer(i)`. */
function runOn(list: FrontEnd[], clients: Enrolled[], trainer: (i: number) => Trainer = (i) => dpTrainer(LABEL, i, DIM)): ClientRunner[] {
  runners = clients.map((e, i) => startRunners(list[i % list.length]!.c, [e], DIM, undefined, () => ({ input: undefined, train: trainer(i), trainerFormats: ['safetensors'] }))[0]!);
  return runners;
}

const connectedTo = (list: FrontEnd[]): number => list.reduce((n, f) => n + f.c.connectedClients().length, 0);

const dpJob = (jobId: string, round: { cohort: number; threshold: number }, deadlines?: Parameters<typeof manifest>[0]['deadlines']): Uint8Array =>
  manifest({ jobId, round: { dim: DIM, clip: 4, bits: 16, ...round }, model, training: { maxAbortedRounds: 0 }, dp, ...(deadlines ? { deadlines } : {}) });

describe('a DP training job across two front ends', () => {
  test('6 clients split over two front ends: the released sum carries the promised noise, its weight word is the survivor count, and the model moves by sum / survivors', async () => {
    const list = await frontEnds(2, `${ctx.prefix}-dp`);
    const [a, b] = list;
    const clients = await enrollClients(a!.c, N, 'dpfe');
    runOn(list, clients);
    await waitFor(() => a!.c.connectedClients().length === 3 && b!.c.connectedClients().length === 3, 20_000, 'clients on both front ends');

    const launched = await a!.c.launch(dpJob('dp-fe', { cohort: N, threshold: MIN_CLIENTS }), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    const o = await a!.c.outcomeOf('dp-fe', 0);
    if (!o.ok) throw new Error(`the round aborted: ${o.reason} ${o.detail ?? ''}`);
    expect(await a!.c.trainingFinished('dp-fe')).toBe('completed');
    expect([...o.survivors].sort()).toEqual(clients.map((x) => x.clientId).sort());
    // The clients of both front ends are in the sum: each front end wrote a partial of its own.
    const partials = await ctx.redis.hkeys(a!.shared.store.partialKey('dp-fe.r0'));
    expect(partials.filter((f) => !f.endsWith(':ids')).sort()).toEqual([a!.shared.frontEndId, b!.shared.frontEndId].sort());
    // Front end b's clients fetched the round's model from the Redis, where it is sealed.
    const recorded = await ctx.redis.hgetBuffer(a!.shared.store.modelKey(Buffer.from(launched.manifestHash).toString('hex')), 'v0');
    expect(recorded).not.toBeNull();
    expect(recorded!.includes(Buffer.from(weightBytes(initial)).subarray(0, 64))).toBe(false);
    expect(Buffer.from((await b!.shared.store.model(Buffer.from(launched.manifestHash).toString('hex'), 0))!).equals(Buffer.from(weightBytes(initial)))).toBe(true);

    // The session id came back from the round's sealed outcome on Redis; every client's weight
    // word is 1 (the sum's weight is the survivor count), and the sum carries the promised noise.
    expect(o.state.sessionId).toBeDefined();
    const released = expectPromisedNoise(o.sum, dp, DIM, o.state.sessionId!, N, (i) => dpUpdate(LABEL, i, DIM));

    // FedAvg over the survivor count: new model = initial + released / N (in float32).
    const models = a!.c.modelsOf('dp-fe');
    expect(models).toHaveLength(2);
    const next = models[1]!.weights;
    for (let j = 0; j < DIM; j++) expect(next[j]).toBeCloseTo(Math.fround(initial[j]! + released[j]! / N), 5);
  });

  test('clients on both front ends stop before their masked input: with fewer than dp.minClients left the round aborts and releases nothing', async () => {
    const list = await frontEnds(2, `${ctx.prefix}-drop`);
    const [a] = list;
    const clients = await enrollClients(a!.c, N, 'dpdrop');
    // Clients 1, 3 (front end b) and 4 (front end a) join, share their keys, then never finish
    // training: their masked inputs never come, 3 < minClients are left at the phase's deadline.
    const stuck = new Set([1, 3, 4]);
    runOn(list, clients, (i) => (stuck.has(i) ? () => new Promise<never>(() => undefined) : dpTrainer(LABEL, i, DIM)));
    await waitFor(() => connectedTo(list) === N, 20_000, 'clients connected');
    const deadlines = { advertiseMs: 10_000, shareMs: 10_000, maskedMs: 3_000, consistencyMs: 10_000, unmaskMs: 10_000 };
    await a!.c.launch(dpJob('dp-drop', { cohort: N, threshold: MIN_CLIENTS }, deadlines), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    const o = await a!.c.outcomeOf('dp-drop', 0);
    expect(o).toMatchObject({ ok: false, reason: AbortReason.TooFewClients, at: Phase.MaskedInput });
    expect(await a!.c.trainingFinished('dp-drop')).toBe('failed');
    // The model did not move, and no sum — masked or unmasked — was kept on Redis.
    expect(a!.c.modelsOf('dp-drop')).toHaveLength(1);
    const [phase, sum] = await ctx.redis.hmget(a!.shared.store.roundKey('dp-drop.r0'), 'phase', 'sum');
    expect(phase).toBe(Phase.Aborted);
    expect(sum).toBeNull();
  });
});

describe('the queued launch path refuses a DP job outside its calibrated cohort', () => {
  test('a cohort above dp.maxClients or a threshold below dp.minClients is refused when asked for and by the worker that takes it', async () => {
    const prefix = `${ctx.prefix}-queue`;
    let queue: LaunchQueue | undefined;
    const [a] = await frontEnds(1, prefix, () => {
      queue = new LaunchQueue(ctx.redis, { prefix });
      ctx.closers.push(async () => {
        await queue!.obliterate().catch(() => undefined);
        await queue!.close(true);
      });
      return queue;
    });
    const weights = weightBytes(initial);
    const tooMany = dpJob('dp-wide', { cohort: N + 2, threshold: MIN_CLIENTS });
    const tooLow = dpJob('dp-low', { cohort: N, threshold: MIN_CLIENTS - 1 });
    expect(await codeOfAsync(a!.c.requestLaunch(tooMany, { initialWeights: weights }))).toBe('invalid-argument');
    expect(await codeOfAsync(a!.c.requestLaunch(tooLow, { initialWeights: weights }))).toBe('invalid-argument');
    expect(await queue!.list()).toEqual([]);
    // Queued past the check (by a process that did not check it): the worker refuses it for
    // good, and no round of it exists on the Redis.
    for (const [jobId, m] of [['dp-wide', tooMany], ['dp-low', tooLow]] as const) {
      const q = await queue!.enqueue({ jobId, training: true, rounds: 1, manifestJson: m, initialWeights: weights, gatherMs: 0 });
      const r = await queue!.waitFor(q.id, 60_000);
      expect(r.state).toBe('failed');
      expect(r.failedReason).toMatch(/^invalid-argument: .*dp/);
      expect(await a!.shared.roundsOf(jobId)).toEqual([]);
    }
  });
});
