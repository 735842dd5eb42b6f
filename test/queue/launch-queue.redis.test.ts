/**
 * The launch queue on a real Redis (coordinator/queue/launch-queue.ts): launches queued through
 * one coordinator run on the coordinator that works the queue; the same job is never launched or
 * run twice; failures a retry cannot fix fail at once, others are retried; a launch queued while no
 * coordinator works the queue is taken by the first that starts.
 */
import { describe, expect, test } from '@jest/globals';
import { LaunchQueue, type LaunchTask } from '../../coordinator/queue/launch-queue.js';
import { connectRedis } from '../../coordinator/queue/redis.js';
import { JobDirectory } from '../../coordinator/queue/job-directory.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { codeOfAsync } from '../support/codes.js';
import { enrollClients, eventually, expectedSum, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';
import { useTestRedis } from '../support/redis.js';

const suite = useTestRedis();
const closers = suite.closers;

const queueFor = (sub: string, opts: { attempts?: number; backoffMs?: number } = {}): LaunchQueue => {
  const q = new LaunchQueue(suite.redis, { prefix: `${suite.prefix}-${sub}`, ...opts });
  closers.push(async () => {
    await q.obliterate().catch(() => undefined);
    await q.close(true);
  });
  return q;
};

describe('launches through the queue', () => {
  test('a queued plain job runs its rounds on the coordinator that works the queue; a launch past its rounds is refused', async () => {
    const queue = queueFor('plain');
    const c = await startCoordinator({ launchQueue: queue });
    closers.push(() => c.close());
    const clients = await enrollClients(c, 4);
    const runners = startRunners(c, clients, 8);
    closers.push(() => runners.forEach((r) => r.stop()));
    const m = manifest({ jobId: 'queued-job', rounds: 2, round: { dim: 8, cohort: 4, neighbors: 3 } });
    const first = await c.requestLaunch(m, { gatherMs: 10_000 });
    expect(first).toMatchObject({ jobId: 'queued-job', roundIndex: 0, cohort: [], queued: 'queued-job.r0' });
    expect(await queue.waitFor('queued-job.r0', 60_000)).toMatchObject({ state: 'completed', result: { ok: true, state: 'completed', survivors: 4 } });
    const o = await c.outcomeOf('queued-job', 0);
    expect(o.ok && Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([0, 1, 2, 3], 8).buffer))).toBe(true);
    const second = await c.requestLaunch(m, { gatherMs: 10_000 });
    expect(second.queued).toBe('queued-job.r1');
    expect((await queue.waitFor('queued-job.r1', 60_000)).state).toBe('completed');
    expect(c.statusOf('queued-job', 1).jobId).toBe('queued-job');
    expect(await codeOfAsync(c.requestLaunch(m))).toBe('wrong-phase');
    // A manifest that does not parse never reaches the queue.
    expect(await codeOfAsync(c.requestLaunch(new TextEncoder().encode('{"version":1}')))).toBe('invalid-argument');
    expect((await queue.list()).map((l) => [l.id, l.state])).toEqual([
      ['queued-job.r1', 'completed'],
      ['queued-job.r0', 'completed'],
    ]);
  });

  test('the same delivery twice starts the round once — while the first is still gathering its cohort, or once its round runs: all wait for the one run', async () => {
    const c = await startCoordinator();
    closers.push(() => c.close());
    const clients = await enrollClients(c, 3);
    // Gathering waits for the whole cohort (up to gatherMs, far more than the clients need).
    const task: LaunchTask = { jobId: 'twice', roundIndex: 0, manifestJson: manifest({ jobId: 'twice', round: { dim: 4, cohort: 3 } }), gatherMs: 300_000, attempt: 1 };
    const run = (t: LaunchTask) => c.jobs.runQueuedLaunch(t);
    // Two deliveries while no client is connected yet: both find the launch gathering its cohort.
    const a = run(task);
    const b = run({ ...task, attempt: 2 });
    const runners = startRunners(c, clients, 4);
    closers.push(() => runners.forEach((r) => r.stop()));
    expect(c.jobs.get('twice')?.rounds ?? []).toHaveLength(0);
    // A third comes once the round runs.
    await waitFor(() => (c.jobs.get('twice')?.rounds.length ?? 0) > 0, 60_000, 'the round to start');
    const [ra, rb, rc] = await Promise.all([a, b, run({ ...task, attempt: 3 })]);
    expect(ra).toEqual({ ok: true, state: 'completed', survivors: 3 });
    expect(rb).toEqual(ra);
    expect(rc).toEqual(ra);
    expect(c.listJobs().find((j) => j.jobId === 'twice')?.roundsDone).toBe(1);
    expect(c.jobs.get('twice')!.rounds).toHaveLength(1);
  });

  test('a training job is launched once: a second launch of its id is already-exists', async () => {
    const queue = queueFor('training');
    const req = { jobId: 'train-once', training: true, rounds: 3, manifestJson: new Uint8Array([1]), gatherMs: 0 };
    expect((await queue.enqueue(req)).id).toBe('train-once');
    expect(await codeOfAsync(queue.enqueue(req))).toBe('already-exists');
    expect((await queue.list()).map((l) => l.id)).toEqual(['train-once']);
  });

  test('a launch queued while no coordinator works the queue is taken by the first one that starts; every coordinator lists it', async () => {
    const queue = queueFor('later');
    const directory = new JobDirectory(suite.redis, { prefix: `${suite.prefix}-later` });
    // Queued through a coordinator that never listens (so never works the queue).
    const front = await startCoordinatorNotListening(queue, directory);
    closers.push(() => front.close());
    const q = await front.requestLaunch(manifest({ jobId: 'later', round: { dim: 4, cohort: 3 } }), { gatherMs: 10_000 });
    await new Promise((r) => setTimeout(r, 500));
    expect((await queue.list()).find((l) => l.id === q.queued)?.state).toBe('waiting');
    const worker = await startCoordinator({ launchQueue: new LaunchQueue(suite.redis, { prefix: `${suite.prefix}-later` }), jobDirectory: directory });
    closers.push(() => worker.close());
    const clients = await enrollClients(worker, 3);
    const runners = startRunners(worker, clients, 4);
    closers.push(() => runners.forEach((r) => r.stop()));
    expect(await queue.waitFor(q.queued!, 60_000)).toMatchObject({ state: 'completed', result: { ok: true } });
    // The coordinator the launch went through lists the job and answers its status from the directory.
    const listed = await eventually(async () => (await front.listJobsEverywhere()).find((j) => j.jobId === 'later' && j.roundsDone === 1));
    expect(listed).toMatchObject({ jobId: 'later', roundsDone: 1 });
    expect(front.listJobs()).toEqual([]);
    expect((await front.statusAnywhere('later')).roundIndex).toBe(0);
    expect(await codeOfAsync(front.statusAnywhere('never-launched'))).toBe('not-found');
  });
});

describe('one view of every job', () => {
  test('a cancel asked of another coordinator reaches the one that runs the job, through the job directory', async () => {
    const queue = queueFor('cancel');
    const directory = new JobDirectory(suite.redis, { prefix: `${suite.prefix}-cancel` });
    const front = await startCoordinatorNotListening(queue, directory);
    closers.push(() => front.close());
    const host = await startCoordinator({ launchQueue: new LaunchQueue(suite.redis, { prefix: `${suite.prefix}-cancel` }), jobDirectory: directory, lostAfterMs: 60_000 });
    closers.push(() => host.close());
    const clients = await enrollClients(host, 3);
    // Client 0 is held before it joins the round: with long deadlines the round waits for it and
    // so is surely still running when the cancel comes (stopping a runner raced the round's end).
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const runners = startRunners(host, clients, 4, undefined, (i) => (i === 0 ? { beforeRound: () => held } : {}));
    closers.push(() => runners.forEach((r) => r.stop()));
    closers.push(() => release());
    const long = { advertiseMs: 30_000, shareMs: 30_000, maskedMs: 30_000, consistencyMs: 30_000, unmaskMs: 30_000 };
    await front.requestLaunch(manifest({ jobId: 'cancel-me', round: { dim: 4, cohort: 3 }, deadlines: long }), { gatherMs: 10_000 });
    const until = Date.now() + 20_000;
    while (!host.listJobs().some((j) => j.jobId === 'cancel-me')) {
      if (Date.now() > until) throw new Error('the job did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 1500));
    expect(front.listJobs()).toEqual([]);
    expect((await front.cancelAnywhere('cancel-me', 'cancelled from another coordinator')).roundIndex).toBe(0);
    const o = await host.outcomeOf('cancel-me', 0);
    expect(o).toMatchObject({ ok: false, reason: 'cancelled' });
    const state = host.listJobs()[0]!.state;
    expect(await eventually(async () => (await front.listJobsEverywhere()).find((j) => j.jobId === 'cancel-me' && j.state === state))).toMatchObject({ state });
    expect(await codeOfAsync(front.cancelAnywhere('cancel-me', 'again'))).toBe('failed-precondition');
    expect(await codeOfAsync(front.cancelAnywhere('no-such-job', 'x'))).toBe('not-found');
  });
});

describe('retries', () => {
  test('a failure a retry cannot fix fails at once; a transient one is retried until it succeeds', async () => {
    const queue = queueFor('retry', { attempts: 3, backoffMs: 50 });
    const seen: Record<string, number> = {};
    queue.work(async (t) => {
      seen[t.jobId] = (seen[t.jobId] ?? 0) + 1;
      if (t.jobId === 'bad') throw new AegisError(ErrorCode.HashMismatch, 'the initial weights do not match');
      if (t.attempt < 2) throw new AegisError(ErrorCode.TooFewClients, 'only 1 client connected');
      return { ok: true, attempt: t.attempt };
    });
    const bad = await queue.enqueue({ jobId: 'bad', training: false, rounds: 1, manifestJson: new Uint8Array([1]), gatherMs: 0 });
    const flaky = await queue.enqueue({ jobId: 'flaky', training: false, rounds: 1, manifestJson: new Uint8Array([1]), gatherMs: 0 });
    expect(await queue.waitFor(bad.id, 20_000)).toMatchObject({ state: 'failed', failedReason: expect.stringContaining('hash-mismatch') });
    expect(await queue.waitFor(flaky.id, 20_000)).toEqual({ state: 'completed', result: { ok: true, attempt: 2 } });
    expect(seen).toEqual({ bad: 1, flaky: 2 });
  });
});

describe('Redis itself', () => {
  test('a Redis that does not answer is unavailable, and the message carries no password', async () => {
    try {
      await connectRedis('redis://user:s3cret-pass@127.0.0.1:1', { connectTimeoutMs: 500 });
      throw new Error('connected');
    } catch (e) {
      expect((e as AegisError).code).toBe('unavailable');
      expect((e as Error).message).not.toContain('s3cret-pass');
    }
    expect(await codeOfAsync(connectRedis('http://127.0.0.1:6379'))).toBe('invalid-argument');
  });
});

async function startCoordinatorNotListening(queue: LaunchQueue, jobDirectory?: JobDirectory): Promise<Coordinator> {
  const { Coordinator: C } = await import('../../coordinator/service/coordinator.js');
  const { createCa } = await import('../../coordinator/auth/ca.js');
  const { TokenIssuer } = await import('../../coordinator/auth/tokens.js');
  const { Registry } = await import('../../coordinator/clients/registry.js');
  return new C({ ca: await createCa({ name: 'front' }), tokens: TokenIssuer.create(), registry: new Registry(), launchQueue: queue, ...(jobDirectory ? { jobDirectory } : {}) });
}
