/**
 * One data dir, commands that must not overlap, from the command line (dist/): a key change
 * (`aegis keys rotate|passphrase|…`) refuses a dir whose `client run` or `coordinator start` is
 * running, naming it; a second `client run` on the same dir refuses too; coordinator processes
 * share their dir; a process killed with SIGKILL leaves an entry that the next claim drops.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { claimDataDir, IN_USE_DIR } from '../../shared/data-dir-lock.js';
import { CLI, cliJson, runCli, runCliAsync, type CliRun } from '../support/cli.js';
import { startCoordinator, waitFor } from '../support/cluster.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'data dir lock test passphrase', AEGIS_LOG_LEVEL: 'warn' };

const aegisAsync = (args: string[]): Promise<CliRun> => runCliAsync(args, env);

let root: string;
let c: Coordinator;
const children: ChildProcess[] = [];
const exited = (child: ChildProcess): Promise<number | null> => new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (code) => r(code))));
const entries = (dir: string): string[] => (existsSync(join(dir, IN_USE_DIR)) ? readdirSync(join(dir, IN_USE_DIR)) : []);

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-dir-lock-'));
  c = await startCoordinator();
  writeFileSync(join(root, 'ca.pem'), c.ca.certificatePem);
  const { token } = await c.createInvite();
  const r = await aegisAsync(['client', 'enroll', '--coordinator', c.address, '--enroll-address', c.enrollAddress, '--token', token, '--ca', join(root, 'ca.pem'), '--data-dir', join(root, 'dev'), '--id', 'dev', '--kek', 'passphrase', '--json']);
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  writeFileSync(join(root, 'update.json'), JSON.stringify({ values: [0.25, -0.5], weight: 1 }));
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await c?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('a data dir used by one command at a time where it matters', () => {
  test('keys rotate, keys passphrase and a second client run refuse a dir whose client run is running (exit 2, naming it); after a SIGKILL the dir is free again', async () => {
    const dir = join(root, 'dev');
    const run = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', dir, '--input', join(root, 'update.json'), '--allow-unsigned'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(run);
    await waitFor(() => c.connectedClients().includes('dev'), 30_000, 'the client to connect');
    expect(entries(dir)).toHaveLength(1);

    const rotate = await aegisAsync(['keys', 'rotate', '--data-dir', dir, '--json']);
    expect(rotate.status).toBe(2);
    expect(cliJson(rotate)).toMatchObject({ ok: false, error: { code: 'failed-precondition' } });
    expect(rotate.stdout).toContain(`is in use by aegis client run (pid ${run.pid}`);
    const pass = await aegisAsync(['keys', 'passphrase', '--data-dir', dir, '--json']);
    expect(pass.status).toBe(2);
    expect(pass.stdout).toContain('is in use by aegis client run');
    const second = await aegisAsync(['client', 'run', '--data-dir', dir, '--input', join(root, 'update.json'), '--allow-unsigned']);
    expect(second.status).toBe(2);
    expect(second.stderr).toContain(`is in use by aegis client run (pid ${run.pid}`);
    // Nothing changed: still one KEK version, and the first client still runs.
    expect(cliJson(runCli(['keys', 'status', '--data-dir', dir, '--json'], env)).versions).toHaveLength(1);
    expect(run.exitCode).toBeNull();

    run.kill('SIGKILL');
    await exited(run);
    const after = await aegisAsync(['keys', 'rotate', '--data-dir', dir, '--json']);
    expect(after.status).toBe(0);
    expect(cliJson(after)).toMatchObject({ ok: true, primary: 2 });
    // The dead run's entry was dropped, and the rotate's own is gone with it.
    expect(entries(dir)).toEqual([]);
  });

  test('coordinator processes share their dir; a key change refuses while one holds it, and a coordinator while a key change runs', async () => {
    const dir = join(root, 'shared-dir');
    // Two holders in shared mode (what two front ends take), then an exclusive one.
    mkdirSync(dir, { recursive: true });
    const a = await claimDataDir(dir, { command: 'aegis coordinator start', mode: 'shared' });
    const b = await claimDataDir(dir, { command: 'aegis coordinator start', mode: 'shared' });
    await expect(claimDataDir(dir, { command: 'aegis keys rotate', mode: 'exclusive' })).rejects.toThrow(/in use by aegis coordinator start \(pid \d+/);
    a();
    await expect(claimDataDir(dir, { command: 'aegis keys rotate', mode: 'exclusive' })).rejects.toThrow(/in use by aegis coordinator start/);
    b();
    const x = await claimDataDir(dir, { command: 'aegis keys rotate', mode: 'exclusive' });
    await expect(claimDataDir(dir, { command: 'aegis coordinator start', mode: 'shared' })).rejects.toThrow(/in use by aegis keys rotate/);
    x();
    expect(entries(dir)).toEqual([]);
  });

  test('a real coordinator start holds its dir: keys rotate on it refuses until it is killed', async () => {
    const dir = join(root, 'coord');
    const coord = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', dir, '--allow-unsigned'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(coord);
    await waitFor(() => existsSync(join(dir, 'coordinator.json')), 30_000, 'the coordinator to listen');
    const rotate = await aegisAsync(['keys', 'rotate', '--data-dir', dir, '--json']);
    expect(rotate.status).toBe(2);
    expect(rotate.stdout).toContain(`is in use by aegis coordinator start (pid ${coord.pid}`);
    coord.kill('SIGKILL');
    await exited(coord);
    const after = await aegisAsync(['keys', 'rotate', '--data-dir', dir, '--json']);
    expect(after.status).toBe(0);
  });
});
