/**
 * A real Redis for the `*.redis.test.ts` suites: AEGIS_TEST_REDIS_URL or redis://127.0.0.1:6379
 * (.ci/run starts Debian's redis-server when none answers). Each suite works under its own key
 * prefix, so suites never see each other's queues, and removes it afterwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
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

/** A free loopback TCP port (for a private redis-server). */
export const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

/**
 * Starts a private redis-server on `port` with AOF (fsync always) in `dir` — it loads the AOF
 * left there by an earlier one — and connects once it answers.
 */
export async function spawnAofRedis(port: number, dir: string): Promise<{ server: ChildProcess; redis: Redis }> {
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--dir', dir], { stdio: 'ignore' });
  const until = Date.now() + 10_000;
  for (;;) {
    try {
      return { server, redis: await connectRedis(`redis://127.0.0.1:${port}`, { connectTimeoutMs: 300 }) };
    } catch (e) {
      if (Date.now() > until) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
