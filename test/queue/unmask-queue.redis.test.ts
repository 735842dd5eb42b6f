/**
 * Unmasking split into worker jobs on a real Redis (coordinator/queue/unmask-queue.ts): the
 * partial sums of the parts add up to the masks expanded in one place; what sits in Redis is
 * sealed (no mask key in any encoding); a worker with another queue key cannot open a part, and
 * the round then aborts with `unmask-failed`; a whole round over gRPC unmasks through workers.
 */
import { describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { UNMASK_QUEUE, UnmaskQueue } from '../../coordinator/queue/unmask-queue.js';
import { applyMaskJobs, type MaskJob } from '../../coordinator/round/index.js';
import { VectorAccumulator } from '../../shared/crypto/vecops.js';
import { enrollClients, eventually, expectedSum, manifest, startCoordinator, startRunners } from '../support/cluster.js';
import { useTestRedis } from '../support/redis.js';

const suite = useTestRedis();
const closers = suite.closers;

const maskJobs = (n: number): MaskJob[] => Array.from({ length: n }, (_, i) => ({ key: new Uint8Array(randomBytes(32)), sign: i % 3 === 0 ? -1 : 1 }));
const local = (jobs: readonly MaskJob[], words: number): Uint32Array => {
  const acc = new VectorAccumulator(words);
  applyMaskJobs(acc, jobs);
  return acc.vector.slice();
};
const add = (parts: Uint32Array[], words: number): Uint32Array => {
  const s = new Uint32Array(words);
  for (const p of parts) for (let i = 0; i < words; i++) s[i] = (s[i]! + p[i]!) >>> 0;
  return s;
};

describe('unmask parts on workers', () => {
  test('the parts add up to the masks expanded in one place; Redis holds no mask key while a part waits', async () => {
    const key = new Uint8Array(randomBytes(32));
    const p = `${suite.prefix}-parts`;
    const front = new UnmaskQueue(suite.redis, key, { prefix: p });
    closers.push(() => front.close());
    const jobs = maskJobs(7);
    const words = 1001;
    const pending = front.dispatch('round-x', jobs, words, 3);
    // No worker yet: look at what Redis holds for the waiting parts.
    const q = new Queue(UNMASK_QUEUE, { connection: suite.redis, prefix: p });
    closers.push(() => q.close());
    // The dispatch queues its parts asynchronously: wait until all three are there (not for a
    // fixed time, which a busy machine can outlast).
    const waiting = await eventually(async () => {
      const w = await q.getJobs(['waiting']);
      return w.length >= 3 ? w : undefined;
    });
    expect(waiting?.length).toBe(3);
    const stored = JSON.stringify(waiting!.map((j) => j.data));
    for (const j of jobs) {
      for (const enc of ['hex', 'base64', 'base64url'] as const) expect(stored).not.toContain(Buffer.from(j.key).toString(enc).slice(0, 20));
    }
    const worker = new UnmaskQueue(suite.redis, key, { prefix: p });
    closers.push(() => worker.close());
    worker.work({ concurrency: 2 });
    const partials = await pending;
    expect(partials).toHaveLength(3);
    expect(Buffer.from(add(partials, words).buffer).equals(Buffer.from(local(jobs, words).buffer))).toBe(true);
  });

  test('parts that a running worker finishes at once are all read (no race between finishing and waiting)', async () => {
    const key = new Uint8Array(randomBytes(32));
    const p = `${suite.prefix}-fast`;
    const worker = new UnmaskQueue(suite.redis, key, { prefix: p });
    worker.work({ concurrency: 8 });
    const front = new UnmaskQueue(suite.redis, key, { prefix: p, timeoutMs: 20_000 });
    closers.push(() => worker.close(), () => front.close());
    for (let round = 0; round < 5; round++) {
      const jobs = maskJobs(40);
      const partials = await front.dispatch(`fast-${round}`, jobs, 3, 40);
      expect(partials).toHaveLength(40);
      expect(Buffer.from(add(partials, 3).buffer).equals(Buffer.from(local(jobs, 3).buffer))).toBe(true);
    }
  });

  test('a worker with another queue key cannot open a part: the dispatch fails', async () => {
    const p = `${suite.prefix}-wrongkey`;
    const front = new UnmaskQueue(suite.redis, new Uint8Array(randomBytes(32)), { prefix: p, timeoutMs: 10_000 });
    const worker = new UnmaskQueue(suite.redis, new Uint8Array(randomBytes(32)), { prefix: p });
    closers.push(() => front.close(), () => worker.close());
    worker.work();
    await expect(front.dispatch('round-y', maskJobs(2), 16, 2)).rejects.toMatchObject({ code: 'unavailable' });
  });
});

describe('a round that unmasks through workers', () => {
  test('over gRPC: the masks are expanded by a worker process-alike on Redis and the sum is exact', async () => {
    const key = new Uint8Array(randomBytes(32));
    const p = `${suite.prefix}-round`;
    const worker = new UnmaskQueue(suite.redis, key, { prefix: p });
    worker.work({ concurrency: 2 });
    const front = new UnmaskQueue(suite.redis, key, { prefix: p });
    const c = await startCoordinator({ unmaskQueue: front, unmaskParts: 2 });
    closers.push(() => worker.close(), () => front.close(), () => c.close());
    const clients = await enrollClients(c, 5);
    const runners = startRunners(c, clients, 32);
    closers.push(() => runners.forEach((r) => r.stop()));
    await c.launch(manifest({ jobId: 'worker-unmask', round: { dim: 32, cohort: 5, neighbors: 4 } }), { gatherMs: 10_000 });
    const o = await c.outcomeOf('worker-unmask', 0);
    expect(o.ok).toBe(true);
    if (o.ok) expect(Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([0, 1, 2, 3, 4], 32).buffer))).toBe(true);
  });

  test('when the workers cannot take the masks out, the round aborts with unmask-failed (never a wrong sum)', async () => {
    const p = `${suite.prefix}-badround`;
    const worker = new UnmaskQueue(suite.redis, new Uint8Array(randomBytes(32)), { prefix: p });
    worker.work();
    const front = new UnmaskQueue(suite.redis, new Uint8Array(randomBytes(32)), { prefix: p, timeoutMs: 10_000 });
    const c = await startCoordinator({ unmaskQueue: front });
    closers.push(() => worker.close(), () => front.close(), () => c.close());
    const clients = await enrollClients(c, 4);
    const runners = startRunners(c, clients, 8);
    closers.push(() => runners.forEach((r) => r.stop()));
    await c.launch(manifest({ jobId: 'bad-unmask', round: { dim: 8, cohort: 4, neighbors: 3 } }), { gatherMs: 10_000 });
    const o = await c.outcomeOf('bad-unmask', 0);
    expect(o).toMatchObject({ ok: false, reason: 'unmask-failed', at: 'unmasking' });
  });
});
