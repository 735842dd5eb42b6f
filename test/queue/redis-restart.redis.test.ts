/**
 * A Redis restart (kill -9, AOF with fsync on every write): a launch queued before it is still
 * there after it, and a coordinator that starts afterwards takes and runs it. The suite runs its
 * own redis-server (Debian's, as .ci/run installs it) on a free port with its data in a temp dir.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { LaunchQueue } from '../../coordinator/queue/launch-queue.js';
import { enrollClients, manifest, startCoordinator, startRunners } from '../support/cluster.js';
import { freePort, spawnAofRedis } from '../support/redis.js';

const dir = mkdtempSync(join(tmpdir(), 'aegis-redis-aof-'));
const closers: (() => Promise<unknown> | void)[] = [];
let server: ChildProcess | undefined;
afterAll(async () => {
  for (const c of closers.reverse()) await c();
  server?.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});


async function startRedis(port: number): Promise<Redis> {
  const started = await spawnAofRedis(port, dir);
  server = started.server;
  return started.redis;
}

describe('Redis restarted (AOF on)', () => {
  test('a launch queued before kill -9 of Redis is run by a coordinator that starts after Redis is back', async () => {
    const port = await freePort();
    const first = await startRedis(port);
    const before = new LaunchQueue(first, { prefix: 'aof' });
    const q = await before.enqueue({ jobId: 'survives', training: false, rounds: 1, manifestJson: manifest({ jobId: 'survives', round: { dim: 4, cohort: 3 } }), gatherMs: 10_000 });
    await before.close();
    first.disconnect();
    const dead = new Promise((r) => server!.once('exit', r));
    server!.kill('SIGKILL');
    await dead;

    const redis = await startRedis(port);
    closers.push(() => redis.quit());
    const queue = new LaunchQueue(redis, { prefix: 'aof' });
    expect((await queue.list()).map((l) => [l.id, l.state])).toEqual([[q.id, 'waiting']]);
    const c = await startCoordinator({ launchQueue: queue });
    closers.push(() => c.close());
    const clients = await enrollClients(c, 3);
    const runners = startRunners(c, clients, 4);
    closers.push(() => runners.forEach((r) => r.stop()));
    expect(await queue.waitFor(q.id, 60_000)).toMatchObject({ state: 'completed', result: { ok: true, survivors: 3 } });
    // The launch counter survived too: the job's one round is taken, a second launch is refused.
    await expect(queue.enqueue({ jobId: 'survives', training: false, rounds: 1, manifestJson: new Uint8Array([1]), gatherMs: 0 })).rejects.toMatchObject({ code: 'wrong-phase' });
  });
});
