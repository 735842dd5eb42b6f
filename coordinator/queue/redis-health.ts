/**
 * Whether the Redis under a front end (or an unmask worker) answers, and what the operator sees
 * when it does not (docs/scale-out.md, "When Redis fails").
 *
 * - State: Redis is *up* while the main connection is ready and answers a PING within
 *   `probeTimeoutMs` (a hung or overloaded Redis whose socket stays open counts as down too); it is
 *   *down* from the moment the connection closes, or a PING goes unanswered that long, until the
 *   connection is ready and answering again. ioredis keeps reconnecting meanwhile (connectRedis's
 *   backoff, capped at 2 s between attempts).
 * - Logs, rate limited: one `warn` "Redis connection lost" when it goes down; while it stays down at
 *   most one `warn` "Redis still unreachable" per `logEveryMs` (with the reconnect attempts and
 *   connection errors since the last line); one `info` "Redis connection back" when it is up again.
 *   Errors of every connection, queue and worker (`watch`) go to this counter, never to stderr raw;
 *   errors while Redis is up (a failing script, say) are logged the same rate-limited way. A
 *   connection error while up (a reset, a refusal: `CONNECTION_CODES`) is often the first sign
 *   that Redis is going away — another connection's reset can arrive before the main connection
 *   closes — so it is held until the main connection tells which: down (it is then counted in
 *   the "connection lost" accounting, no line of its own), or a PING sent after it answered (one
 *   connection's blip: logged as an error line then).
 * - Metrics through `sink`: `aegis_redis_up` (0/1) and `aegis_redis_disconnects_total`.
 * - `onChange` listeners (the coordinator's gRPC health status, the rounds' unreachable check).
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../../shared/log.js';

/** What takes the Redis state into metrics (CoordinatorMetrics). */
export interface RedisHealthSink {
  redisUp(up: boolean): void;
  redisDisconnected(): void;
}

export interface RedisHealthOptions {
  /** The Redis URL without credentials (redactRedisUrl), for the log lines. */
  url: string;
  log?: Logger;
  /** At most one "still unreachable" (or error) line per this many ms; default 10 s. */
  logEveryMs?: number;
  /** How often the main connection is PINGed, ms; default 1 s. */
  probeMs?: number;
  /** A PING unanswered this long marks Redis down, ms; default 5 s. */
  probeTimeoutMs?: number;
  sink?: RedisHealthSink;
}

/** Something that emits 'error' (an ioredis connection, a BullMQ Queue, Worker or QueueEvents). */
export interface ErrorEmitter {
  on(event: 'error', listener: (err: Error) => void): unknown;
}

export const DEFAULT_REDIS_LOG_EVERY_MS = 10_000;

/** Error codes that mean a connection broke or could not be made, not that a command failed. */
const CONNECTION_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ENOTCONN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'connection-closed']);

const codeOf = (err: unknown): string => {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof (err as { code: unknown }).code === 'string') return (err as { code: string }).code;
  if (err instanceof Error) return /timeout/i.test(err.message) ? 'ETIMEDOUT' : /closed/i.test(err.message) ? 'connection-closed' : err.name;
  return 'unknown';
};

export class RedisHealth {
  private readonly redis: Redis;
  private readonly opts: RedisHealthOptions;
  private readonly logEveryMs: number;
  private connected: boolean;
  private responsive = true;
  private isUp: boolean;
  private downSince = 0;
  private lastLine = 0;
  /** Since the last "still unreachable" line: reconnect attempts and connection errors. */
  private attempts = 0;
  private errors = 0;
  private lastCode = '';
  /** Errors while up, since the last such line. */
  private upErrors = 0;
  /**
   * Connection errors while up that no probe has told apart yet (see the header), the code of
   * the last, and the sequence number of the last (`errorSeq` counts them).
   */
  private pendingConnErrors = 0;
  private pendingCode = '';
  private pendingSeq = 0;
  private errorSeq = 0;
  private lastUpErrorLine = 0;
  private readonly listeners: ((up: boolean) => void)[] = [];
  private readonly connections = new Set<Redis>();
  private timers: NodeJS.Timeout[] = [];
  private probing = false;
  private stopped = false;
  /** Times the connection was lost since start. */
  disconnects = 0;

  constructor(redis: Redis, opts: RedisHealthOptions) {
    this.redis = redis;
    this.opts = opts;
    this.logEveryMs = opts.logEveryMs ?? DEFAULT_REDIS_LOG_EVERY_MS;
    this.connected = redis.status === 'ready';
    this.isUp = this.connected;
    this.connections.add(redis);
    redis.on('error', (err: Error) => this.error(err));
    redis.on('ready', () => {
      this.connected = true;
      this.responsive = true;
      this.update();
    });
    redis.on('close', () => {
      this.connected = false;
      this.lastCode ||= 'connection-closed';
      this.update();
    });
    redis.on('reconnecting', () => {
      this.attempts++;
    });
    opts.sink?.redisUp(this.isUp);
  }

  /** Whether Redis answers now. */
  get up(): boolean {
    return this.isUp;
  }

  /** Since when Redis has been down (ms since the epoch), or undefined while up. */
  get downSinceMs(): number | undefined {
    return this.isUp ? undefined : this.downSince;
  }

  /** Starts the PING probe and the rate-limited "still unreachable" lines. */
  start(): this {
    const probeMs = this.opts.probeMs ?? 1000;
    const probe = setInterval(() => void this.probe(), probeMs);
    const tick = setInterval(() => this.stillDown(), Math.min(this.logEveryMs, 1000));
    for (const t of [probe, tick]) t.unref();
    this.timers.push(probe, tick);
    return this;
  }

  /** `f` is called with the new state each time Redis goes down or comes back. */
  onChange(f: (up: boolean) => void): void {
    this.listeners.push(f);
  }

  /**
   * Takes over the 'error' events of `emitter` (so none reaches stderr raw); an ioredis
   * connection is also remembered for `disconnectAll`.
   */
  watch<T extends ErrorEmitter>(emitter: T): T {
    emitter.on('error', (err) => this.error(err));
    if (isRedis(emitter)) {
      this.connections.add(emitter);
      emitter.once('end', () => this.connections.delete(emitter));
    }
    return emitter;
  }

  /** The 'error' handler `watch` attaches, for code that attaches its own. */
  readonly report = (err: unknown): void => this.error(err);

  /** Drops every watched connection at once (shutdown while Redis is down: nothing waits for it). */
  disconnectAll(): void {
    for (const c of this.connections) {
      // No reconnect after this one: the connection ends, and commands waiting for it fail.
      c.options.retryStrategy = () => null;
      // ioredis leaves a connection that waits to reconnect in 'reconnecting' on disconnect(),
      // its queued commands pending for ever; one last attempt ends it (refused, or closed once made).
      const waiting = c.status === 'reconnecting';
      c.disconnect();
      if (waiting) void c.connect().then(() => c.disconnect(), () => undefined);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  private error(err: unknown): void {
    if (this.stopped) return;
    this.lastCode = codeOf(err);
    if (!this.isUp) {
      this.errors++;
      return;
    }
    if (CONNECTION_CODES.has(this.lastCode)) {
      // Redis going away, or one connection's blip: the main connection tells (`probe`, `update`).
      this.pendingConnErrors++;
      this.pendingCode = this.lastCode;
      this.pendingSeq = ++this.errorSeq;
      void this.probe();
      return;
    }
    this.logUpErrors(1, this.lastCode);
  }

  /** `count` errors while the connection is up: logged, at most one line per logEveryMs. */
  private logUpErrors(count: number, code: string): void {
    this.upErrors += count;
    const now = Date.now();
    if (now - this.lastUpErrorLine < this.logEveryMs) return;
    this.opts.log?.warn({ redis: this.opts.url, code, errors: this.upErrors }, 'Redis error');
    // Taken after the line is written: its timestamp is then no later than this, so the next
    // line's is a whole period after it (as read in the log), not a millisecond short.
    this.lastUpErrorLine = Date.now();
    this.upErrors = 0;
  }

  private async probe(): Promise<void> {
    if (this.probing || this.stopped || this.redis.status !== 'ready') return;
    this.probing = true;
    // Connection errors up to here are told apart by this PING's answer (see the header).
    const seen = this.errorSeq;
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = this.opts.probeTimeoutMs ?? 5000;
    const ping = this.redis.ping().then(
      () => true,
      () => false,
    );
    const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), timeoutMs)));
    try {
      const r = await Promise.race([ping, late]);
      if (r === 'late') {
        this.responsive = false;
        this.lastCode = 'ETIMEDOUT';
        this.update();
        // Up again once the PING is answered after all.
        if (await ping) {
          this.responsive = true;
          this.update();
        }
      } else if (r && !this.responsive) {
        this.responsive = true;
        this.update();
      }
      // Answered, and Redis still up: the connection errors before this PING were one
      // connection's, not Redis going away. They are logged now.
      if (r === true && this.isUp && this.pendingConnErrors > 0 && this.pendingSeq <= seen) {
        const [count, code] = [this.pendingConnErrors, this.pendingCode];
        this.pendingConnErrors = 0;
        this.logUpErrors(count, code);
      }
    } finally {
      clearTimeout(timer);
      this.probing = false;
    }
  }

  private update(): void {
    if (this.stopped) return;
    const up = this.connected && this.responsive;
    if (up === this.isUp) return;
    this.isUp = up;
    const now = Date.now();
    const log = this.opts.log;
    if (!up) {
      this.downSince = now;
      this.disconnects++;
      this.opts.sink?.redisDisconnected();
      log?.warn({ redis: this.opts.url, code: this.lastCode || 'connection-closed' }, 'Redis connection lost');
      // After the line is written (see `error`).
      this.lastLine = Date.now();
      this.attempts = 0;
      // The connection errors held while it was still up were the start of this: counted here.
      this.errors = this.pendingConnErrors;
      this.pendingConnErrors = 0;
    } else {
      log?.info({ redis: this.opts.url, downMs: now - this.downSince, attempts: this.attempts }, 'Redis connection back');
      this.attempts = 0;
      this.errors = 0;
      this.pendingConnErrors = 0;
      this.lastCode = '';
    }
    this.opts.sink?.redisUp(up);
    for (const f of this.listeners) f(up);
  }

  /** At most one line per logEveryMs while down. */
  private stillDown(): void {
    if (this.isUp || this.stopped) return;
    const now = Date.now();
    if (now - this.lastLine < this.logEveryMs) return;
    this.opts.log?.warn({ redis: this.opts.url, downMs: now - this.downSince, attempts: this.attempts, errors: this.errors, code: this.lastCode || 'connection-closed' }, 'Redis still unreachable');
    // After the line is written (see `error`).
    this.lastLine = Date.now();
    this.attempts = 0;
    this.errors = 0;
  }
}

function isRedis(x: unknown): x is Redis {
  return typeof x === 'object' && x !== null && typeof (x as Redis).duplicate === 'function' && typeof (x as Redis).disconnect === 'function' && 'status' in x;
}
