/**
 * `aegis dashboard token` end to end, real `aegis` processes (dist/): a coordinator started with
 * `--dashboard` records its address in coordinator.json, the token command prints a login URL
 * that logs in once (303 + session cookie), and a coordinator without `--dashboard` answers
 * failed-precondition.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, cliJson, runCli } from '../support/cli.js';
import { waitFor } from '../support/cluster.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'operator passphrase for tests', AEGIS_LOG_LEVEL: 'warn' };
let root: string;
const children: ChildProcess[] = [];

function start(dir: string, extra: string[]): ChildProcess {
  const child = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', dir, '--allow-unsigned', ...extra], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.resume();
  children.push(child);
  return child;
}

function get(url: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-dash-cli-'));
});

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('aegis dashboard token', () => {
  test('against `coordinator start --dashboard` (from --config): the printed URL logs in once; coordinator.json records the address', async () => {
    const dir = join(root, 'with');
    const config = join(root, 'config.json');
    writeFileSync(config, JSON.stringify({ dashboard: '127.0.0.1:0' }));
    start(dir, ['--config', config]);
    await waitFor(() => existsSync(join(dir, 'coordinator.json')), 60_000, 'the coordinator to listen');
    const endpoint = JSON.parse(readFileSync(join(dir, 'coordinator.json'), 'utf8')) as { dashboard?: string };
    expect(endpoint.dashboard).toMatch(/^127\.0\.0\.1:\d+$/);

    const r = runCli(['dashboard', 'token', '--ttl', '5m', '--json', '--data-dir', dir], env);
    const out = cliJson(r);
    expect(out).toEqual({ token: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), url: `http://${endpoint.dashboard}/login?token=${out.token}`, expires_at: expect.any(String) });
    expect(Date.parse(out.expires_at)).toBeGreaterThan(Date.now());

    const anonymous = await get(`http://${endpoint.dashboard}/api/jobs`);
    expect(anonymous.status).toBe(401);
    const login = await get(out.url);
    expect(login.status).toBe(303);
    expect(login.headers.location).toBe('/');
    expect(String(login.headers['set-cookie'])).toMatch(/^aegis_dashboard=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=\/; Max-Age=43200$/);
    expect((await get(out.url)).status).toBe(401);

    // Text mode: the URL on stdout, the expiry on stderr.
    const text = runCli(['dashboard', 'token', '--data-dir', dir], env);
    expect(text.status).toBe(0);
    expect(text.stdout.trim()).toMatch(new RegExp(`^http://${endpoint.dashboard!.replace(/\./g, '\\.')}/login\\?token=[A-Za-z0-9_-]{43}$`));
    expect(text.stderr).toMatch(/valid until \d{4}-/);
  }, 120_000);

  test('a coordinator without --dashboard answers failed-precondition', async () => {
    const dir = join(root, 'without');
    start(dir, []);
    await waitFor(() => existsSync(join(dir, 'coordinator.json')), 60_000, 'the coordinator to listen');
    const r = runCli(['dashboard', 'token', '--json', '--data-dir', dir], env);
    expect(r.status).toBe(2);
    expect(cliJson(r).error.code).toBe('failed-precondition');
  }, 120_000);
});
