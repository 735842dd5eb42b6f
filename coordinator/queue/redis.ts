/**
 * The Redis connection behind `--redis URL` (DESIGN.md §6). BullMQ needs
 * `maxRetriesPerRequest: null` on connections its workers block on; a Redis that does not answer
 * at start is a clear `unavailable` error (with the URL's password left out), not a hang.
 */
import { Redis } from 'ioredis';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ErrorEmitter } from './redis-health.js';

/**
 * Takes over an emitter's 'error' events (RedisHealth.watch: counted and logged rate limited,
 * never printed raw) and returns it. Every Redis connection, BullMQ Queue, Worker and QueueEvents
 * goes through one.
 */
export type WatchErrors = <T extends ErrorEmitter>(emitter: T) => T;

/** The default: errors are dropped (reported through the calls that fail). */
export const dropErrors: WatchErrors = (emitter) => {
  emitter.on('error', () => undefined);
  return emitter;
};

/** Delay before reconnect attempt `n` (1, 2, …): 200 ms more each time, at most 2 s. */
export const reconnectDelayMs = (n: number): number => Math.min(n * 200, 2000);

/** The URL without credentials, for messages and logs. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return 'redis://(unparsable URL)';
  }
}

export interface RedisOptions {
  /** How long to wait for the first PING, ms (default 3000). */
  connectTimeoutMs?: number;
}

/** Connects and PINGs; throws `unavailable` when Redis does not answer, `invalid-argument` for a bad URL. */
export async function connectRedis(url: string, opts: RedisOptions = {}): Promise<Redis> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new AegisError(ErrorCode.InvalidArgument, '--redis takes a URL such as redis://127.0.0.1:6379');
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') throw new AegisError(ErrorCode.InvalidArgument, '--redis takes a redis:// or rediss:// URL');
  const timeout = opts.connectTimeoutMs ?? 3000;
  const redis = new Redis(url, { maxRetriesPerRequest: null, lazyConnect: true, connectTimeout: timeout, retryStrategy: reconnectDelayMs });
  redis.on('error', () => undefined); // reported through the calls that fail; never an unhandled event
  try {
    await Promise.race([
      redis.connect().then(() => redis.ping()),
      new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), timeout).unref()),
    ]);
  } catch {
    redis.disconnect();
    throw new AegisError(ErrorCode.Unavailable, `Redis at ${redactRedisUrl(url)} does not answer; start one (redis-server --appendonly yes) or leave out --redis for the embedded coordinator`);
  }
  return redis;
}
