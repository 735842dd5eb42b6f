/**
 * The launch queue (DESIGN.md §6): with `--redis`, `aegis round launch` goes through a BullMQ
 * queue that every coordinator process on the same Redis works from, instead of starting the
 * round in the process the operator happened to call.
 *
 * - Idempotent ids: a training job is one BullMQ job named by its job id, a plain job one BullMQ
 *   job per round (`<job id>.r<n>`, n from a Redis counter). A second launch of a training job
 *   that is queued, running or done is refused with `already-exists`, so a double-click or a
 *   retried CLI call never runs a job twice; BullMQ itself drops a second add of the same id.
 * - Checked before queueing: the manifest's signature, expiry and parameters, and the initial
 *   weights' hash, so a launch that can never run fails at once with its own code.
 * - Retries that never apply anything twice: a worker that takes a job the coordinator already
 *   knows (a delivery repeated after a stall) does not start it again. Failures that cannot
 *   succeed on retry (bad signature, hash mismatch, malformed manifest) are marked unrecoverable;
 *   `too-few-clients` and `unavailable` are retried with backoff, which also lets another
 *   coordinator process with enough connected clients take the job.
 * - Durable: with Redis persistence on (AOF), a job queued while no coordinator runs is taken by
 *   the first one that starts.
 *
 * The job data holds the manifest, its signed envelope and the initial weights: public material.
 * No key, share or client update ever goes through this queue.
 */
import { Queue, UnrecoverableError, Worker, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import { dropErrors, type WatchErrors } from './redis.js';

export const LAUNCH_QUEUE = 'aegis-launch';
/** Codes a retry cannot fix. */
const UNRECOVERABLE: readonly string[] = [
  ErrorCode.BadSignature,
  ErrorCode.UnknownKey,
  ErrorCode.Expired,
  ErrorCode.Malformed,
  ErrorCode.HashMismatch,
  ErrorCode.InvalidArgument,
  ErrorCode.AlreadyExists,
  ErrorCode.WrongPhase,
  ErrorCode.NotFound,
  ErrorCode.FailedPrecondition,
];

export interface LaunchRequest {
  jobId: string;
  training: boolean;
  /** The job's rounds (plain jobs: one launch per round). */
  rounds: number;
  manifestJson: Uint8Array;
  signedManifest?: Uint8Array;
  initialWeights?: Uint8Array;
  gatherMs: number;
}

interface LaunchData {
  jobId: string;
  training: boolean;
  roundIndex: number;
  manifestJson: string;
  signedManifest?: string;
  initialWeights?: string;
  gatherMs: number;
  enqueuedAt: number;
}

export interface LaunchTask {
  jobId: string;
  roundIndex: number;
  manifestJson: Uint8Array;
  signedManifest?: Uint8Array;
  initialWeights?: Uint8Array;
  gatherMs: number;
  /** Which delivery this is (1 = first); > 1 means an earlier worker stalled or failed. */
  attempt: number;
}

export interface LaunchQueueOptions {
  /** Key prefix in Redis (default 'aegis'); tests use one per run. */
  prefix?: string;
  /** Deliveries per launch before it fails for good (default 5). */
  attempts?: number;
  /** First retry delay, ms, doubled each time (default 2000). */
  backoffMs?: number;
  /** Takes over the 'error' events of the queue, its worker and connection (RedisHealth.watch); default: dropped. */
  watch?: WatchErrors;
}

export interface QueuedLaunch {
  /** The BullMQ job id. */
  id: string;
  jobId: string;
  roundIndex: number;
}

const b64 = (b: Uint8Array | undefined): string | undefined => (b === undefined || b.length === 0 ? undefined : Buffer.from(b).toString('base64'));
const bytes = (s: string | undefined): Uint8Array | undefined => (s === undefined ? undefined : new Uint8Array(Buffer.from(s, 'base64')));

export class LaunchQueue {
  readonly prefix: string;
  private readonly queue: Queue<LaunchData>;
  private readonly redis: Redis;
  private readonly opts: Required<Pick<LaunchQueueOptions, 'attempts' | 'backoffMs'>>;
  private worker: Worker<LaunchData> | undefined;
  private workerConnection: Redis | undefined;
  private readonly watch: WatchErrors;

  constructor(redis: Redis, opts: LaunchQueueOptions = {}) {
    this.redis = redis;
    this.watch = opts.watch ?? dropErrors;
    this.prefix = opts.prefix ?? 'aegis';
    this.opts = { attempts: opts.attempts ?? 5, backoffMs: opts.backoffMs ?? 2000 };
    this.queue = this.watch(new Queue<LaunchData>(LAUNCH_QUEUE, { connection: redis, prefix: this.prefix }));
  }

  private counterKey(jobId: string): string {
    return `${this.prefix}:launch-count:${jobId}`;
  }

  /**
   * Queues a launch. A training job already queued, running or finished is `already-exists`; a
   * plain job gets its next round, or `wrong-phase` once all its rounds are queued.
   */
  async enqueue(req: LaunchRequest): Promise<QueuedLaunch> {
    let roundIndex = 0;
    let id: string;
    if (req.training) {
      id = req.jobId;
      // SET NX is the claim: one launch per training job, whatever BullMQ has kept or dropped.
      const claimed = await this.redis.set(this.counterKey(req.jobId), '1', 'NX');
      if (claimed !== 'OK') throw new AegisError(ErrorCode.AlreadyExists, `training job '${req.jobId}' was launched already (aegis round status ${req.jobId})`);
    } else {
      roundIndex = (await this.redis.incr(this.counterKey(req.jobId))) - 1;
      if (roundIndex >= req.rounds) {
        await this.redis.decr(this.counterKey(req.jobId));
        throw new AegisError(ErrorCode.WrongPhase, `job '${req.jobId}' has all its ${req.rounds} rounds launched already`);
      }
      id = `${req.jobId}.r${roundIndex}`;
    }
    const data: LaunchData = {
      jobId: req.jobId,
      training: req.training,
      roundIndex,
      manifestJson: Buffer.from(req.manifestJson).toString('base64'),
      gatherMs: req.gatherMs,
      enqueuedAt: Date.now(),
    };
    const signed = b64(req.signedManifest);
    const weights = b64(req.initialWeights);
    if (signed !== undefined) data.signedManifest = signed;
    if (weights !== undefined) data.initialWeights = weights;
    await this.queue.add('launch', data, {
      jobId: id,
      attempts: this.opts.attempts,
      backoff: { type: 'exponential', delay: this.opts.backoffMs },
      removeOnComplete: { age: 7 * 86_400 },
      removeOnFail: { age: 7 * 86_400 },
    });
    return { id, jobId: req.jobId, roundIndex };
  }

  /**
   * Takes launches one at a time and hands each to `run`, which resolves when the launched work
   * has ended (its outcome is the BullMQ job's return value). An AegisError with a code a retry
   * cannot fix fails the launch for good; any other error is retried with backoff.
   */
  work(run: (task: LaunchTask) => Promise<unknown>, opts: { concurrency?: number } = {}): void {
    if (this.worker) throw new AegisError(ErrorCode.FailedPrecondition, 'this launch queue is already being worked');
    this.worker = new Worker<LaunchData>(
      LAUNCH_QUEUE,
      async (job: BullJob<LaunchData>) => {
        const d = job.data;
        const task: LaunchTask = { jobId: d.jobId, roundIndex: d.roundIndex, manifestJson: bytes(d.manifestJson)!, gatherMs: d.gatherMs, attempt: job.attemptsMade + 1 };
        const signed = bytes(d.signedManifest);
        const weights = bytes(d.initialWeights);
        if (signed) task.signedManifest = signed;
        if (weights) task.initialWeights = weights;
        try {
          return await run(task);
        } catch (e) {
          if (isAegisError(e) && UNRECOVERABLE.includes(e.code)) throw new UnrecoverableError(`${e.code}: ${e.message}`);
          throw e instanceof Error ? e : new Error(String(e));
        }
      },
      { connection: (this.workerConnection = this.watch(this.redis.duplicate({ maxRetriesPerRequest: null }))), prefix: this.prefix, concurrency: opts.concurrency ?? 4, lockDuration: 30_000 },
    );
    this.watch(this.worker);
  }

  /** Every launch BullMQ still holds, newest first, with its state. */
  async list(): Promise<{ id: string; jobId: string; roundIndex: number; state: string; attempts: number; failedReason?: string }[]> {
    const jobs = await this.queue.getJobs(['waiting', 'delayed', 'active', 'completed', 'failed', 'prioritized', 'waiting-children'], 0, 1000);
    const out = await Promise.all(
      jobs.filter((j): j is BullJob<LaunchData> => j !== undefined && j !== null).map(async (j) => ({
        id: String(j.id),
        jobId: j.data.jobId,
        roundIndex: j.data.roundIndex,
        state: await j.getState(),
        attempts: j.attemptsMade,
        ...(j.failedReason ? { failedReason: j.failedReason } : {}),
      })),
    );
    return out.sort((a, b) => (a.id < b.id ? 1 : -1));
  }

  /** Waits until the launch `id` has finished (completed or failed for good); its return value or failure reason. */
  async waitFor(id: string, timeoutMs: number): Promise<{ state: 'completed' | 'failed'; result?: unknown; failedReason?: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const job = await this.queue.getJob(id);
      if (!job) throw new AegisError(ErrorCode.NotFound, `no launch '${id}' in the queue`);
      const state = await job.getState();
      if (state === 'completed' || state === 'failed') {
        // Read the job again: the copy above may predate the end (no return value yet).
        const done = (await this.queue.getJob(id)) ?? job;
        if (state === 'completed') return { state, result: done.returnvalue };
        return { state, ...(done.failedReason ? { failedReason: done.failedReason } : {}) };
      }
      if (Date.now() > deadline) throw new AegisError(ErrorCode.Unavailable, `launch '${id}' did not finish within ${Math.round(timeoutMs / 1000)} s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /**
   * Stops taking launches and closes the queue. `force`: do not wait for the launches this process
   * is running; their locks lapse and BullMQ hands them to another process (a stalled job).
   */
  async close(force = false): Promise<void> {
    await this.worker?.close(force);
    this.workerConnection?.disconnect();
    await this.queue.close();
  }

  /**
   * Stops at once without waiting for Redis (it is unreachable: BullMQ's graceful close would wait
   * for it forever). Running launches are not handed back here; their locks lapse and another
   * process takes them once Redis is back.
   */
  closeNow(): void {
    void this.worker?.close(true).catch(() => undefined);
    this.workerConnection?.disconnect();
    void this.queue.close().catch(() => undefined);
  }

  /** Removes everything this prefix holds (tests). */
  async obliterate(): Promise<void> {
    await this.queue.obliterate({ force: true });
    const keys = await this.redis.keys(`${this.prefix}:launch-count:*`);
    if (keys.length > 0) await this.redis.del(...keys);
  }
}
