/**
 * Unmasking split into worker jobs (DESIGN.md §6): once the coordinator has reconstructed the
 * secrets of a round's unmasking phase, the masks to take out — one AES-CTR keystream of m + 1
 * words per survivor's self mask and per (dropped, surviving) neighbour pair — are cut into parts,
 * each a BullMQ job that any worker process on the same Redis expands into a partial sum. The
 * coordinator adds the partials to the masked sum.
 *
 * What crosses Redis: a part carries mask keys (reconstructed secrets) and its result a partial
 * mask sum, so both are sealed with AES-256-GCM under the deployment's queue key (kept in every
 * coordinator's KEK-wrapped vault, never in Redis), with AAD = (queue, job id): Redis holds only
 * ciphertext. A part sealed for one job cannot be replayed as another.
 *
 * Idempotent ids: `<round key>.u<part>`; a part delivered twice is expanded twice with the same
 * result (the expansion is a pure function of its keys), and its result is read once.
 * Failures: a part that cannot be opened (wrong queue key, tampering) is unrecoverable.
 */
import { randomBytes } from 'node:crypto';
import { Queue, QueueEvents, UnrecoverableError, Worker, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import { bytesOf, concatBytes, lengthPrefixed } from '../../shared/bytes.js';
import { open as aeadOpen, seal as aeadSeal } from '../../shared/crypto/aead.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { VectorAccumulator } from '../../shared/crypto/vecops.js';
import { applyMaskJobs, type MaskJob } from '../round/index.js';
import { dropErrors, type WatchErrors } from './redis.js';

export const UNMASK_QUEUE = 'aegis-unmask';
const KEY_BYTES = 32;
const JOB_ENTRY = KEY_BYTES + 1;

interface PartData {
  /** Words in each expanded vector (m + 1). */
  words: number;
  /** base64 of seal(queueKey, n × (key 32 | sign byte)). */
  sealed: string;
}

const aad = (id: string): Uint8Array => lengthPrefixed(UNMASK_QUEUE, id);

function encodeJobs(jobs: readonly MaskJob[]): Uint8Array {
  const out = new Uint8Array(jobs.length * JOB_ENTRY);
  jobs.forEach((j, i) => {
    out.set(j.key, i * JOB_ENTRY);
    out[i * JOB_ENTRY + KEY_BYTES] = j.sign === 1 ? 1 : 0xff;
  });
  return out;
}

function decodeJobs(b: Uint8Array): MaskJob[] {
  if (b.length % JOB_ENTRY !== 0) throw new AegisError(ErrorCode.Malformed, 'an unmask part is malformed');
  const jobs: MaskJob[] = [];
  for (let o = 0; o < b.length; o += JOB_ENTRY) jobs.push({ key: b.slice(o, o + KEY_BYTES), sign: b[o + KEY_BYTES] === 1 ? 1 : -1 });
  return jobs;
}

export interface UnmaskQueueOptions {
  prefix?: string;
  /** How long a dispatch waits for its parts, ms (default 10 minutes). */
  timeoutMs?: number;
  /** Takes over the 'error' events of the queue, its events, worker and connections (RedisHealth.watch); default: dropped. */
  watch?: WatchErrors;
}

export class UnmaskQueue {
  private readonly queue: Queue<PartData, string>;
  private readonly events: QueueEvents;
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly timeoutMs: number;
  readonly #key: Uint8Array;
  private worker: Worker<PartData, string> | undefined;
  private workerConnection: Redis | undefined;
  private readonly eventsConnection: Redis;
  private readonly watch: WatchErrors;

  /** `queueKey`: 32 bytes shared by every process of the deployment (from the coordinator vault). */
  constructor(redis: Redis, queueKey: Uint8Array, opts: UnmaskQueueOptions = {}) {
    if (!(queueKey instanceof Uint8Array) || queueKey.length !== KEY_BYTES) throw new AegisError(ErrorCode.BadKeyLength, 'the queue key must be 32 bytes');
    this.redis = redis;
    this.#key = new Uint8Array(queueKey);
    this.prefix = opts.prefix ?? 'aegis';
    this.timeoutMs = opts.timeoutMs ?? 600_000;
    this.watch = opts.watch ?? dropErrors;
    this.queue = this.watch(new Queue<PartData, string>(UNMASK_QUEUE, { connection: redis, prefix: this.prefix }));
    this.eventsConnection = this.watch(redis.duplicate({ maxRetriesPerRequest: null }));
    this.events = this.watch(new QueueEvents(UNMASK_QUEUE, { connection: this.eventsConnection, prefix: this.prefix }));
  }

  /**
   * Expands `jobs` (vectors of `words` words) in `parts` worker jobs and returns their partial
   * sums. Rejects with `unavailable` when a part fails or the parts do not finish in time.
   */
  async dispatch(roundKey: string, jobs: readonly MaskJob[], words: number, parts: number): Promise<Uint32Array[]> {
    const n = Math.max(1, Math.min(parts, jobs.length));
    const per = Math.ceil(jobs.length / n);
    const nonce = randomBytes(6).toString('hex');
    const added: BullJob<PartData, string>[] = [];
    for (let i = 0; i < n; i++) {
      const slice = jobs.slice(i * per, (i + 1) * per);
      if (slice.length === 0) continue;
      const id = `${roundKey}.${nonce}.u${i}`;
      const sealed = Buffer.from(aeadSeal(this.#key, encodeJobs(slice), aad(id))).toString('base64');
      // Kept until read (removing a finished part at once races waitUntilFinished, which then
      // finds no job); `dispatch` removes each part after reading its partial.
      added.push(await this.queue.add('unmask', { words, sealed }, { jobId: id, attempts: 3, backoff: { type: 'fixed', delay: 200 }, removeOnComplete: { age: 3600 }, removeOnFail: { age: 86_400 } }));
    }
    const results = await Promise.all(
      added.map(async (job) => {
        const sealed = await job.waitUntilFinished(this.events, this.timeoutMs).catch(() => {
          throw new AegisError(ErrorCode.Unavailable, 'an unmask part failed or did not finish in time');
        });
        await job.remove().catch(() => undefined);
        const bytes = aeadOpen(this.#key, new Uint8Array(Buffer.from(String(sealed), 'base64')), aad(`${job.id}:result`));
        if (bytes.length !== words * 4) throw new AegisError(ErrorCode.Malformed, 'an unmask partial has the wrong length');
        return new Uint32Array(bytes.buffer, bytes.byteOffset, words);
      }),
    );
    return results;
  }

  /** Works parts: expands each into a partial sum and returns it sealed. */
  work(opts: { concurrency?: number } = {}): void {
    if (this.worker) throw new AegisError(ErrorCode.FailedPrecondition, 'this unmask queue is already being worked');
    this.workerConnection = this.watch(this.redis.duplicate({ maxRetriesPerRequest: null }));
    this.worker = new Worker<PartData, string>(
      UNMASK_QUEUE,
      async (job) => {
        let jobs: MaskJob[];
        try {
          jobs = decodeJobs(aeadOpen(this.#key, new Uint8Array(Buffer.from(job.data.sealed, 'base64')), aad(String(job.id))));
        } catch {
          throw new UnrecoverableError('decryption-failed: the unmask part does not open under this queue key');
        }
        const words = job.data.words;
        if (!Number.isInteger(words) || words < 1 || words > 2 ** 28) throw new UnrecoverableError('malformed: bad vector length');
        const acc = new VectorAccumulator(words);
        applyMaskJobs(acc, jobs);
        for (const j of jobs) j.key.fill(0);
        const v = acc.vector;
        return Buffer.from(aeadSeal(this.#key, concatBytes(bytesOf(v)), aad(`${job.id}:result`))).toString('base64');
      },
      { connection: this.workerConnection, prefix: this.prefix, concurrency: opts.concurrency ?? 1 },
    );
    this.watch(this.worker);
  }

  async close(): Promise<void> {
    await this.worker?.close();
    this.workerConnection?.disconnect();
    await this.events.close();
    this.eventsConnection.disconnect();
    await this.queue.close();
    this.#key.fill(0);
  }

  /** Stops at once without waiting for Redis (it is unreachable: BullMQ's graceful close would wait for it forever). */
  closeNow(): void {
    void this.worker?.close(true).catch(() => undefined);
    this.workerConnection?.disconnect();
    this.eventsConnection.disconnect();
    void this.events.close().catch(() => undefined);
    void this.queue.close().catch(() => undefined);
    this.#key.fill(0);
  }

  async obliterate(): Promise<void> {
    await this.queue.obliterate({ force: true });
  }
}
