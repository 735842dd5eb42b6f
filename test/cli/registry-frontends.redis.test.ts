/**
 * Two real `aegis coordinator start --redis` front ends on one data dir and one Redis (dist/): a
 * device enrolled through A runs (`client run`) against B; `clients revoke` on A stops it (its
 * stream on B ends, exit 2). Then both front ends are killed with SIGKILL and started again: the
 * client is still revoked on each (`clients list`), its next run is refused, and `clients crl` on
 * either still lists its serial with the reason.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCrl } from '../../coordinator/auth/crl.js';
import { loadRegistry } from '../../coordinator/service/data-dir.js';
import { CLI, cliJson, runCli } from '../support/cli.js';
import { waitFor } from '../support/cluster.js';
import { TEST_REDIS_URL, testRedis } from '../support/redis.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'registry front ends test passphrase', AEGIS_LOG_LEVEL: 'warn' };
const prefix = `aegis-cli-reg-${randomBytes(4).toString('hex')}`;
let root: string;
let coordDir: string;
const running: ChildProcess[] = [];
const aegis = (args: string[]) => runCli(args, env, 60_000);

interface FrontEnd {
  proc: ChildProcess;
  address: string;
  enrollAddress: string;
  exited: Promise<number | null>;
}

/** Starts a front end and waits until it has recorded its addresses in the data dir. */
async function startFrontEnd(): Promise<FrontEnd> {
  const proc = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--allow-unsigned', '--redis', TEST_REDIS_URL, '--redis-prefix', prefix], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.push(proc);
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const endpoint = (): { address: string; enrollAddress: string; pid: number } | undefined => {
    try {
      return JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { address: string; enrollAddress: string; pid: number };
    } catch {
      return undefined;
    }
  };
  await waitFor(() => endpoint()?.pid === proc.pid || proc.exitCode !== null, 60_000, 'the front end to listen');
  if (proc.exitCode !== null) throw new Error(`the front end did not start: ${stderr.slice(-800)}`);
  const e = endpoint()!;
  return { proc, address: e.address, enrollAddress: e.enrollAddress, exited };
}

async function kill9(fe: FrontEnd): Promise<void> {
  fe.proc.kill('SIGKILL');
  await fe.exited;
}

function runDevice(dir: string, coordinator: string): { proc: ChildProcess; exited: Promise<number | null>; stderr: () => string } {
  const proc = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', dir, '--coordinator', coordinator, '--input', join(root, 'update.json'), '--allow-unsigned', '--config', join(root, 'client.config.json')], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.push(proc);
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return { proc, exited: new Promise((resolve) => proc.on('exit', (code) => resolve(code))), stderr: () => stderr };
}

const rowOf = (coordinator: string, id: string): Record<string, unknown> | undefined =>
  (cliJson(aegis(['clients', 'list', '--data-dir', coordDir, '--coordinator', coordinator, '--json'])) as { clients: Record<string, unknown>[] }).clients.find((c) => c.client_id === id);

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-registry-fe-'));
  coordDir = join(root, 'coord');
  writeFileSync(join(root, 'update.json'), JSON.stringify({ values: [0.5, 0.25], weight: 1 }));
  writeFileSync(join(root, 'client.config.json'), JSON.stringify({ heartbeat: { interval: '1s' } }));
});

afterAll(async () => {
  for (const p of running) p.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
  const { redis, cleanup } = await testRedis();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  await cleanup();
});

describe('the client registry across two coordinator front ends on Redis, killed and restarted', () => {
  test('revoked on A while running against B: stopped at once; after kill -9 and restart of both, still revoked everywhere, refused, and on the CRL', async () => {
    const a = await startFrontEnd();
    const b = await startFrontEnd();
    expect(a.address).not.toBe(b.address);

    // Enrolled through A.
    const inv = cliJson(aegis(['clients', 'invite', '--data-dir', coordDir, '--coordinator', a.address, '--id', 'dev2', '--json']));
    const devDir = join(root, 'dev2');
    const e = aegis(['client', 'enroll', '--coordinator', a.address, '--enroll-address', a.enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', devDir, '--id', 'dev2', '--json']);
    expect(cliJson(e)).toMatchObject({ ok: true, client_id: 'dev2' });
    const serial = new X509Certificate(readFileSync(join(devDir, 'client.pem'))).serialNumber.toLowerCase().replace(/^0+/, '');
    // The same invite is used on B too.
    const reuse = aegis(['client', 'enroll', '--coordinator', b.address, '--enroll-address', b.enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', join(root, 'other'), '--id', 'dev2', '--json']);
    expect(reuse.status).not.toBe(0);
    expect(cliJson(reuse).error.code).toBe('enrollment-refused');

    // Running against B, heartbeating there.
    const device = runDevice(devDir, b.address);
    await waitFor(() => rowOf(b.address, 'dev2')?.last_seen_at !== null, 60_000, 'B to see dev2');

    // Revoked on A: the device's stream on B ends, and it stops with exit 2.
    const r = cliJson(aegis(['clients', 'revoke', 'dev2', '--reason', 'key-compromise', '--data-dir', coordDir, '--coordinator', a.address, '--json']));
    expect(r).toMatchObject({ client_id: 'dev2', reason: 'key-compromise', serials: [serial] });
    await expect(device.exited).resolves.toBe(2);
    expect(rowOf(b.address, 'dev2')).toMatchObject({ status: 'revoked', revocation_reason: 'key-compromise' });

    // Both killed with SIGKILL, both started again.
    await kill9(a);
    await kill9(b);
    const a2 = await startFrontEnd();
    const b2 = await startFrontEnd();
    for (const fe of [a2, b2]) expect(rowOf(fe.address, 'dev2')).toMatchObject({ status: 'revoked', revoked: true, revoked_at: r.revoked_at, revocation_reason: 'key-compromise' });

    // The device is refused on either.
    for (const fe of [b2, a2]) {
      const again = runDevice(devDir, fe.address);
      await expect(again.exited).resolves.toBe(2);
      expect(again.stderr()).toMatch(/unauthenticated|revoked/);
    }

    // The CRL, signed by either, lists the serial with keyCompromise.
    for (const fe of [a2, b2]) {
      const out = join(root, `crl-${fe.proc.pid}.pem`);
      expect(cliJson(aegis(['clients', 'crl', '--out', out, '--data-dir', coordDir, '--coordinator', fe.address, '--json']))).toMatchObject({ out, entries: 1 });
      const crl = await parseCrl(readFileSync(out, 'utf8'));
      expect(crl.entries).toEqual([{ serial, revokedAt: Math.floor(Date.parse(r.revoked_at) / 1000) * 1000, crlReason: 'keyCompromise' }]);
    }
    // registry.json, the export, holds it too.
    expect((await loadRegistry(coordDir)).revocations.isRevoked({ clientId: 'dev2', serial })).toBe(true);
  });
});
