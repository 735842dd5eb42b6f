/**
 * What the Redis health says when a connection error arrives while Redis is still up, against a
 * private redis-server: a connection reset reported by a watched connection is either the first
 * sign of Redis going away (another connection's reset can arrive before the main connection
 * closes — seen on a loaded machine), and then belongs to the "connection lost" accounting with
 * no line of its own; or one connection's blip, logged as an error line once a PING sent after it
 * is answered. The order of events is fixed by the test (SIGSTOP before the kill), not by timing.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from '@jest/globals';
import { pino } from 'pino';
import { RedisHealth } from '../../coordinator/queue/redis-health.js';
import { freePort, spawnAofRedis } from '../support/redis.js';

type Line = Record<string, unknown> & { msg: string };

let cleanup: (() => unknown)[] = [];
afterEach(() => {
  for (const c of cleanup.reverse()) c();
  cleanup = [];
});

async function healthOnPrivateRedis(): Promise<{ server: ChildProcess; health: RedisHealth; lines: Line[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-health-'));
  const { server, redis } = await spawnAofRedis(await freePort(), dir);
  const lines: Line[] = [];
  const log = pino({ level: 'debug', base: undefined }, { write: (l: string) => void lines.push(JSON.parse(l) as Line) });
  const health = new RedisHealth(redis, { url: 'redis://test', log, logEveryMs: 300, probeMs: 100, probeTimeoutMs: 60_000 }).start();
  cleanup.push(() => {
    health.stop();
    health.disconnectAll();
    server.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, health, lines };
}

const reset = (): Error => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });

async function until(cond: () => boolean, what: string): Promise<void> {
  // Bounded only so that a broken build ends; the conditions are events, not durations.
  const end = Date.now() + 120_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('Redis health: a connection error while Redis is up', () => {
  test('one connection\'s reset while Redis answers: one rate-limited "Redis error" line once a PING is answered, and Redis stays up', async () => {
    const { health, lines } = await healthOnPrivateRedis();
    expect(health.up).toBe(true);
    health.report(reset());
    await until(() => lines.some((l) => l.msg === 'Redis error'), 'the error line');
    expect(lines.filter((l) => l.msg === 'Redis error')).toEqual([expect.objectContaining({ code: 'ECONNRESET', errors: 1, level: 40 })]);
    expect(health.up).toBe(true);
    expect(lines.some((l) => l.msg === 'Redis connection lost')).toBe(false);
  });

  test('a reset that comes before Redis goes away: "connection lost" and its count, never a "Redis error" line', async () => {
    const { server, health, lines } = await healthOnPrivateRedis();
    // Redis stops answering (its sockets open): no PING can be answered from here on.
    server.kill('SIGSTOP');
    health.report(reset());
    health.report(reset());
    // Then it dies: the main connection closes.
    server.kill('SIGKILL');
    await until(() => !health.up, 'the connection lost');
    await until(() => lines.some((l) => l.msg === 'Redis still unreachable'), 'a still-unreachable line');
    expect(lines.filter((l) => l.msg === 'Redis error')).toEqual([]);
    expect(lines.filter((l) => l.msg === 'Redis connection lost')).toHaveLength(1);
    // The two resets are counted with the reconnect failures in the first still-unreachable line.
    const first = lines.find((l) => l.msg === 'Redis still unreachable')!;
    expect(first.errors as number).toBeGreaterThanOrEqual(2);
  });

  test('a failing command (not a connection error) while up is logged at once', async () => {
    const { health, lines } = await healthOnPrivateRedis();
    health.report(Object.assign(new Error('ERR unknown command'), { name: 'ReplyError' }));
    expect(lines.filter((l) => l.msg === 'Redis error')).toEqual([expect.objectContaining({ code: 'ReplyError', errors: 1 })]);
  });
});
