/**
 * `aegis coordinator start --redis URL` end to end, real processes on a real Redis: `round launch`
 * queues the round, the coordinator takes it from the queue and runs it with its clients, an
 * `aegis coordinator unmask-worker` process expands the masks, and `--wait` follows it to the end.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manifest as jobManifest, waitFor } from '../support/cluster.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';
import { TEST_REDIS_URL, testRedis } from '../support/redis.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'redis cli test passphrase', AEGIS_LOG_LEVEL: 'warn' };
const prefix = `aegis-cli-${randomBytes(4).toString('hex')}`;
let root: string;
let coordDir: string;
const children: ChildProcess[] = [];
const aegis = (args: string[]): CliRun => runCli(args, env, 90_000);

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'aegis-redis-cli-'));
  coordDir = join(root, 'coord');
  const c = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--allow-unsigned', '--redis', TEST_REDIS_URL, '--redis-prefix', prefix, '--unmask-workers', '0', '--unmask-parts', '3'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  c.stderr!.resume();
  children.push(c);
  await waitFor(() => existsSync(join(coordDir, 'coordinator.json')), 30_000, 'the coordinator to listen');
  // The coordinator expands no masks itself (--unmask-workers 0): a separate worker process does.
  const w = spawn(process.execPath, [CLI, 'coordinator', 'unmask-worker', '--redis', TEST_REDIS_URL, '--redis-prefix', prefix, '--data-dir', coordDir, '--concurrency', '2'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  w.stderr!.resume();
  children.push(w);
  const { address, enrollAddress } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { address: string; enrollAddress: string };
  for (let i = 0; i < 3; i++) {
    const inv = cliJson(aegis(['clients', 'invite', '--data-dir', coordDir, '--json']));
    const dir = join(root, `dev-${i}`);
    expect(aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', dir, '--id', `dev-${i}`]).status).toBe(0);
    writeFileSync(join(root, `u${i}.json`), JSON.stringify({ values: [i, 1, 2, 3], weight: 1 }));
    const p = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', dir, '--input', join(root, `u${i}.json`), '--allow-unsigned'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr!.resume();
    children.push(p);
  }
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
  const { redis, cleanup } = await testRedis();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  await cleanup();
});

describe('coordinator start --redis', () => {
  test('round launch queues the round; the coordinator takes it from the queue, a separate unmask-worker process takes the masks out, and --wait follows it to completion', () => {
    const manifest = join(root, 'job.json');
    writeFileSync(manifest, jobManifest({ jobId: 'via-redis', round: { dim: 4, cohort: 3, clip: 4, bits: 16 } }));

    const r = aegis(['round', 'launch', '--data-dir', coordDir, '--manifest', manifest, '--gather', '20s', '--wait', '--json']);
    expect([r.status, r.status === 0 ? '' : `${r.stdout}\n${r.stderr.slice(-2000)}`]).toEqual([0, '']);
    const out = cliJson(r);
    expect(out).toMatchObject({ job_id: 'via-redis', round_index: 0, round_number: 1, queued_as: 'via-redis.r0', status: { finished: true, ok: true } });
    const result = cliJson(aegis(['round', 'result', 'via-redis', '--data-dir', coordDir, '--json']));
    expect(result.survivors).toEqual(['dev-0', 'dev-1', 'dev-2']);
    expect(result.mean[0]).toBeCloseTo(1, 3);
    // All its rounds are launched: a further launch is refused before anything is queued.
    expect(cliJson(aegis(['round', 'launch', '--data-dir', coordDir, '--manifest', manifest, '--json'])).error.code).toBe('wrong-phase');
  });
});
