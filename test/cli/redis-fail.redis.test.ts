/**
 * Redis failing under a real `aegis coordinator start --redis` process (docs/scale-out.md, "When
 * Redis fails"). The suite runs its own redis-server (AOF on) on a free port so it can kill it:
 * while Redis is gone the front end writes only JSON log lines — one "lost" line, then at most
 * one "still unreachable" line per `--redis-log-every` — and reports the loss on /metrics and in
 * its gRPC health; when Redis is back on the same port it is SERVING again and a round runs to the
 * exact mean; killed again, SIGTERM still stops it, with exit code 0. An `aegis coordinator
 * unmask-worker` on the same Redis goes through the same and is checked the same way.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { manifest as jobManifest, waitFor } from '../support/cluster.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';
import { healthStatus } from '../support/raw-calls.js';
import { freePort, spawnAofRedis } from '../support/redis.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'redis fail test passphrase', AEGIS_LOG_LEVEL: 'info' };
/** The front end's `--redis-log-every`: the rate limit the log lines are checked against. */
const LOG_EVERY_MS = 1000;
let root: string;
let coordDir: string;
let redisDir: string;
let port: number;
let redisServer: ChildProcess | undefined;
let coordinator: ChildProcess | undefined;
let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
const children: ChildProcess[] = [];
/** Every line the coordinator wrote, stdout and stderr, in order. */
const lines: string[] = [];
let worker: ChildProcess | undefined;
let workerExited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
/** Every line the unmask worker wrote. */
const workerLines: string[] = [];

/** Collects `child`'s stdout and stderr lines into `into`; resolves with how it exited. */
function follow(child: ChildProcess, into: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  for (const stream of [child.stdout!, child.stderr!]) {
    let rest = '';
    stream.setEncoding('utf8').on('data', (d: string) => {
      const parts = (rest + d).split('\n');
      rest = parts.pop()!;
      into.push(...parts.filter((l) => l.length > 0));
    });
  }
  return new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
}
const aegis = (args: string[]): CliRun => runCli(args, env, 90_000);

async function startRedis(): Promise<void> {
  const started = await spawnAofRedis(port, redisDir);
  redisServer = started.server;
  started.redis.disconnect();
}

async function killRedis(): Promise<void> {
  const s = redisServer!;
  const dead = new Promise((r) => s.once('exit', r));
  s.kill('SIGKILL');
  await dead;
}

interface LogLine {
  level: number;
  time: number;
  msg: string;
  [k: string]: unknown;
}
const parsed = (from: number): LogLine[] => lines.slice(from).map((l) => JSON.parse(l) as LogLine);
const count = (from: number, msg: string): number => lines.slice(from).filter((l) => l.includes(`"msg":"${msg}"`)).length;

async function metrics(): Promise<string> {
  const { metrics: address } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { metrics: string };
  return (await fetch(`http://${address}/metrics`)).text();
}
const gauge = (text: string, name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
async function health(): Promise<string> {
  const { enrollAddress } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { enrollAddress: string };
  return healthStatus(enrollAddress, grpc.credentials.createSsl(readFileSync(join(coordDir, 'ca.pem'))));
}
async function eventually(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond().catch(() => false))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; last lines:\n${lines.slice(-5).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'aegis-redis-fail-'));
  coordDir = join(root, 'coord');
  redisDir = join(root, 'redis');
  mkdirSync(redisDir);
  port = await freePort();
  await startRedis();
  coordinator = spawn(
    process.execPath,
    [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--allow-unsigned', '--redis', `redis://127.0.0.1:${port}`, '--metrics', '127.0.0.1:0', '--redis-log-every', `${LOG_EVERY_MS}ms`],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  exited = follow(coordinator, lines);
  await waitFor(() => existsSync(join(coordDir, 'coordinator.json')), 30_000, 'the coordinator to listen');
  worker = spawn(process.execPath, [CLI, 'coordinator', 'unmask-worker', '--redis', `redis://127.0.0.1:${port}`, '--data-dir', coordDir, '--redis-log-every', `${LOG_EVERY_MS}ms`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  workerExited = follow(worker, workerLines);
  await waitFor(() => workerLines.some((l) => l.includes('"msg":"unmask worker running"')), 30_000, 'the unmask worker to run');
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

afterAll(() => {
  for (const c of [...children, coordinator, worker]) c?.kill('SIGKILL');
  redisServer?.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('coordinator start --redis, with Redis killed under it', () => {
  test('only JSON log lines, rate limited; /metrics and health report the loss', async () => {
    expect(await health()).toBe('SERVING');
    expect(gauge(await metrics(), 'aegis_redis_up')).toBe(1);
    const from = lines.length;
    const workerFrom = workerLines.length;
    await killRedis();
    await eventually(async () => count(from, 'Redis connection lost') === 1, 30_000, 'the lost-connection line');
    // Three periods of the configured rate limit while Redis stays down.
    await eventually(async () => count(from, 'Redis still unreachable') >= 3, 30_000, 'three still-unreachable lines');
    expect(gauge(await metrics(), 'aegis_redis_up')).toBe(0);
    expect(gauge(await metrics(), 'aegis_redis_disconnects_total')).toBe(1);
    expect(await health()).toBe('NOT_SERVING');

    // Nothing but JSON lines: no raw error dumps, no "[ioredis] Unhandled error event".
    const raw = lines.slice(from).filter((l) => !l.startsWith('{'));
    expect(raw).toEqual([]);
    const out = parsed(from);
    expect(out.filter((l) => l.msg === 'Redis connection lost')).toEqual([expect.objectContaining({ level: 40, redis: `redis://127.0.0.1:${port}` })]);
    // At most one line per period while down, each with its counts.
    const still = out.filter((l) => l.msg === 'Redis still unreachable');
    for (const l of still) expect(l).toMatchObject({ level: 40, downMs: expect.any(Number), attempts: expect.any(Number), errors: expect.any(Number) });
    const lost = out.find((l) => l.msg === 'Redis connection lost')!;
    const times = [lost.time, ...still.map((l) => l.time)];
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(LOG_EVERY_MS);
    // Nothing else said about Redis meanwhile (no line per failed reconnect or command).
    expect(out.filter((l) => /redis/i.test(l.msg) && l.msg !== 'Redis still unreachable' && l.msg !== 'Redis connection lost')).toEqual([]);

    // The unmask worker: the same lines, JSON only.
    const w = workerLines.slice(workerFrom);
    expect(w.filter((l) => !l.startsWith('{'))).toEqual([]);
    const wOut = w.map((l) => JSON.parse(l) as LogLine);
    expect(wOut.filter((l) => l.msg === 'Redis connection lost')).toHaveLength(1);
    const wTimes = wOut.filter((l) => /^Redis (connection lost|still unreachable)$/.test(l.msg)).map((l) => l.time);
    for (let i = 1; i < wTimes.length; i++) expect(wTimes[i]! - wTimes[i - 1]!).toBeGreaterThanOrEqual(LOG_EVERY_MS);
  });

  test('Redis back on the same port: one "back" line, health SERVING and aegis_redis_up 1 again, and a round runs to the exact mean', async () => {
    const from = lines.length;
    await startRedis();
    await eventually(async () => count(from, 'Redis connection back') === 1, 30_000, 'the connection-back line');
    expect(parsed(from).find((l) => l.msg === 'Redis connection back')).toMatchObject({ level: 30, downMs: expect.any(Number) });
    await eventually(async () => (await health()) === 'SERVING', 30_000, 'health SERVING');
    expect(gauge(await metrics(), 'aegis_redis_up')).toBe(1);
    expect(gauge(await metrics(), 'aegis_redis_disconnects_total')).toBe(1);

    const manifest = join(root, 'job.json');
    writeFileSync(manifest, jobManifest({ jobId: 'after-redis-back', round: { dim: 4, cohort: 3, clip: 4, bits: 16 } }));
    const r = aegis(['round', 'launch', '--data-dir', coordDir, '--manifest', manifest, '--gather', '20s', '--wait', '--json']);
    expect([r.status, r.status === 0 ? '' : `${r.stdout}\n${r.stderr.slice(-2000)}`]).toEqual([0, '']);
    expect(cliJson(r)).toMatchObject({ job_id: 'after-redis-back', status: { finished: true, ok: true } });
    const result = cliJson(aegis(['round', 'result', 'after-redis-back', '--data-dir', coordDir, '--json']));
    expect(result.survivors).toEqual(['dev-0', 'dev-1', 'dev-2']);
    expect(result.mean).toHaveLength(4);
    [1, 1, 2, 3].forEach((m, i) => expect(result.mean[i]).toBeCloseTo(m, 3));
    expect(lines.slice(from).filter((l) => !l.startsWith('{'))).toEqual([]);
  });

  test('Redis killed again, then SIGTERM: the front end and the unmask worker stop and exit 0', async () => {
    const from = lines.length;
    const workerFrom = workerLines.length;
    await killRedis();
    await eventually(async () => count(from, 'Redis connection lost') === 1, 30_000, 'the lost-connection line');
    await eventually(async () => workerLines.slice(workerFrom).some((l) => l.includes('"msg":"Redis connection lost"')), 30_000, "the worker's lost-connection line");
    worker!.kill('SIGTERM');
    coordinator!.kill('SIGTERM');
    // A generous bound: the point is that it exits at all while Redis is down.
    const timeout = new Promise<'still running'>((r) => setTimeout(() => r('still running'), 20_000).unref());
    expect(await Promise.race([exited, timeout])).toEqual({ code: 0, signal: null });
    const out = parsed(from);
    expect(out.map((l) => l.msg)).toEqual(expect.arrayContaining(['shutting down', 'stopped']));
    // Every step finished (nothing waited for the dead Redis until its bound ran out).
    expect(out.filter((l) => /^shutdown/.test(l.msg))).toEqual([]);
    expect(lines.slice(from).filter((l) => !l.startsWith('{'))).toEqual([]);
    expect(await Promise.race([workerExited, timeout])).toEqual({ code: 0, signal: null });
    const w = workerLines.slice(workerFrom);
    expect(w.filter((l) => !l.startsWith('{'))).toEqual([]);
    expect(w.map((l) => (JSON.parse(l) as LogLine).msg)).toEqual(expect.arrayContaining(['shutting down', 'stopped']));
  });
});
