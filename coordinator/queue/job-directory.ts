/**
 * The job directory on Redis (with `--redis`): each coordinator process publishes what it knows
 * of the jobs it runs — the `round list` entry and the latest `round status` — so that an operator
 * asking any coordinator on the same Redis sees every job, wherever it runs. Entries are the
 * public status protobufs (ids, phases, counts, reason codes, sums of finished rounds are NOT
 * included): nothing secret, and they expire a day after their last update.
 */
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import type { Redis } from 'ioredis';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';

const TTL_SECONDS = 86_400;

export class JobDirectory {
  private readonly redis: Redis;
  private readonly prefix: string;

  constructor(redis: Redis, opts: { prefix?: string } = {}) {
    this.redis = redis;
    this.prefix = opts.prefix ?? 'aegis';
  }

  private key(jobId: string): string {
    return `${this.prefix}:job-directory:${jobId}`;
  }

  /** Records a job's list entry and latest status (overwriting the previous ones). */
  async publish(info: admin.JobInfo, status: admin.RoundStatusReply): Promise<void> {
    const k = this.key(info.jobId);
    await this.redis
      .multi()
      .hset(k, 'info', Buffer.from(toBinary(admin.JobInfoSchema, info)), 'status', Buffer.from(toBinary(admin.RoundStatusReplySchema, status)))
      .expire(k, TTL_SECONDS)
      .exec();
  }

  async list(): Promise<admin.JobInfo[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}:job-directory:*`, 'COUNT', 200);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    const out: admin.JobInfo[] = [];
    for (const k of keys) {
      const b = await this.redis.hgetBuffer(k, 'info');
      if (b) out.push(fromBinary(admin.JobInfoSchema, new Uint8Array(b)));
    }
    return out;
  }

  /** Asks the coordinator that runs `jobId` to cancel it (it looks at each publish, every second). */
  async requestCancel(jobId: string, detail: string): Promise<void> {
    await this.redis.hset(this.key(jobId), 'cancel', detail.slice(0, 300));
  }

  /** A pending cancel request for `jobId`, taken (removed) by the caller that will act on it. */
  async takeCancel(jobId: string): Promise<string | undefined> {
    const [[, detail]] = ((await this.redis.multi().hget(this.key(jobId), 'cancel').hdel(this.key(jobId), 'cancel').exec()) ?? [[null, null]]) as [[unknown, string | null]];
    return detail ?? undefined;
  }

  async status(jobId: string): Promise<admin.RoundStatusReply | undefined> {
    const b = await this.redis.hgetBuffer(this.key(jobId), 'status');
    return b ? fromBinary(admin.RoundStatusReplySchema, new Uint8Array(b)) : undefined;
  }
}
