/**
 * A real Redis for the `*.redis.test.ts` suites: AEGIS_TEST_REDIS_URL or redis://127.0.0.1:6379
 * (.ci/run starts Debian's redis-server when none answers). Each suite works under its own key
 * prefix, so suites never see each other's queues, and removes it afterwards.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll } from '@jest/globals';
import type { Redis } from 'ioredis';
import { connectRedis } from '../../coordinator/queue/redis.js';

export const TEST_REDIS_URL = process.env.AEGIS_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export async function testRedis(): Promise<{ redis: Redis; prefix: string; cleanup: () => Promise<void> }> {
  let redis: Redis;
  try {
    redis = await connectRedis(TEST_REDIS_URL);
  } catch {
    throw new Error(`the *.redis.test.ts suites need a Redis at ${TEST_REDIS_URL} (.ci/run starts one: redis-server --daemonize yes)`);
  }
  const prefix = `aegis-test-${randomBytes(4).toString('hex')}`;
  return {
    redis,
    prefix,
    cleanup: async () => {
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      await redis.quit();
    },
  };
}

/**
 * For a suite: a Redis connection and prefix opened before its tests, and everything registered
 * with `closers` closed (last first) and the prefix removed after them.
 */
export function useTestRedis(): { readonly redis: Redis; readonly prefix: string; closers: (() => Promise<unknown> | void)[] } {
  let opened: Awaited<ReturnType<typeof testRedis>> | undefined;
  const closers: (() => Promise<unknown> | void)[] = [];
  beforeAll(async () => {
    opened = await testRedis();
  });
  afterAll(async () => {
    for (const c of closers.reverse()) await c();
    await opened?.cleanup();
  });
  return {
    get redis(): Redis {
      return opened!.redis;
    },
    get prefix(): string {
      return opened!.prefix;
    },
    closers,
  };
}
