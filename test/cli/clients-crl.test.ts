/**
 * `aegis clients list|revoke|crl` against a real `aegis coordinator start` (dist/), with devices
 * enrolled by `aegis client enroll` and one running `aegis client run` that heartbeats (interval
 * from its --config file, `{"heartbeat": {"interval": "1s"}}`; the coordinator's
 * `{"clients": {"lost_after": "2h"}}` from its own): list --json shows status, last seen,
 * certificate expiry and revocation; revoke takes a reason code from a fixed set (an unknown one
 * is invalid-argument naming the valid ones) and stops the running device; crl --out writes a
 * CRL the CA signed, listing the revoked serial with its reason, and never overwrites a file.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { caCertificateFromPem } from '../../coordinator/auth/ca.js';
import { parseCrl, verifyCrl } from '../../coordinator/auth/crl.js';
import { CLI, cliJson, runCli } from '../support/cli.js';
import { waitFor } from '../support/cluster.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'operator passphrase for tests', AEGIS_LOG_LEVEL: 'warn' };
let root: string;
let coordDir: string;
let coordinator: ChildProcess | undefined;
let device: ChildProcess | undefined;
let deviceExit: Promise<number | null>;
let deviceErr = '';

const aegis = (args: string[]) => runCli(args, env);
const list = () => cliJson(aegis(['clients', 'list', '--data-dir', coordDir, '--json'])) as { clients: Record<string, unknown>[] };
const row = (id: string) => list().clients.find((c) => c.client_id === id)!;

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-clients-crl-'));
  coordDir = join(root, 'coord');
  writeFileSync(join(root, 'coordinator.config.json'), JSON.stringify({ clients: { lost_after: '2h' } }));
  coordinator = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--allow-unsigned', '--config', join(root, 'coordinator.config.json')], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  coordinator.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  await waitFor(() => existsSync(join(coordDir, 'coordinator.json')) || coordinator!.exitCode !== null, 30_000, 'the coordinator to listen');
  if (!existsSync(join(coordDir, 'coordinator.json'))) throw new Error(`the coordinator did not start: ${stderr.slice(-500)}`);
  const { address, enrollAddress } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { address: string; enrollAddress: string };
  for (const id of ['phone-1', 'phone-2']) {
    const inv = cliJson(aegis(['clients', 'invite', '--data-dir', coordDir, '--id', id, '--json']));
    const e = aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', join(root, id), '--id', id, '--json']);
    expect(cliJson(e)).toMatchObject({ ok: true, client_id: id });
  }
  writeFileSync(join(root, 'update.json'), JSON.stringify({ values: [0.5, 0.25], weight: 1 }));
  writeFileSync(join(root, 'client.config.json'), JSON.stringify({ heartbeat: { interval: '1s' }, metrics: '127.0.0.1:0' }));
  device = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', join(root, 'phone-1'), '--input', join(root, 'update.json'), '--allow-unsigned', '--config', join(root, 'client.config.json')], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  device.stderr!.on('data', (d: Buffer) => (deviceErr += d.toString('utf8')));
  deviceExit = new Promise((resolve) => device!.on('exit', (code) => resolve(code)));
});

afterAll(() => {
  for (const p of [device, coordinator]) p?.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('aegis clients list | revoke --reason | crl --out', () => {
  test('list --json: status, last seen (moving with heartbeats), certificate expiry, not revoked', async () => {
    await waitFor(() => row('phone-1').last_seen_at !== null, 30_000, 'phone-1 to be seen');
    const first = Date.parse(row('phone-1').last_seen_at as string);
    // Heartbeats every ~1 s (no round runs, nothing else calls): last seen moves.
    await waitFor(() => Date.parse(row('phone-1').last_seen_at as string) > first, 30_000, 'a later heartbeat');
    const r = row('phone-1');
    expect(r).toMatchObject({ client_id: 'phone-1', status: 'active', revoked: false, revoked_at: null, revocation_reason: null, revocation_detail: null });
    expect(Date.parse(r.certificate_expires_at as string)).toBeGreaterThan(Date.now());
    expect(Date.parse(r.enrolled_at as string)).toBeLessThanOrEqual(Date.parse(r.last_seen_at as string));
    // Enrolled, never connected since: never seen (and not lost: well within 2h).
    expect(row('phone-2')).toMatchObject({ status: 'active', last_seen_at: null, revoked: false });
    expect(Object.keys(r).sort()).toEqual(['certificate_expires_at', 'client_id', 'enrolled_at', 'last_seen_at', 'revocation_detail', 'revocation_reason', 'revoked', 'revoked_at', 'status']);
    // The device's own metrics (client run --metrics, here from its config file): heartbeats that went through.
    await waitFor(() => /metrics on http:\/\/\S+\/metrics/.test(deviceErr), 30_000, 'the device to serve its metrics');
    const at = /metrics on http:\/\/(\S+)\/metrics/.exec(deviceErr)![1];
    const text = await (await fetch(`http://${at}/metrics`)).text();
    expect(Number(/^aegis_heartbeats_total\{outcome="ok"\} (\d+)$/m.exec(text)?.[1])).toBeGreaterThanOrEqual(1);
    expect(text).toMatch(/^aegis_key_age_seconds\{key="identity"\} /m);
    expect(text).not.toContain('phone-1');
  });

  test('revoke with an unknown reason: invalid-argument listing the valid reasons, nothing revoked', () => {
    const bad = aegis(['clients', 'revoke', 'phone-1', '--reason', 'dropped-in-lake', '--data-dir', coordDir, '--json']);
    expect(bad.status).toBe(2);
    const err = cliJson(bad).error;
    expect(err.code).toBe('invalid-argument');
    expect(err.message).toMatch(/unspecified, key-compromise, lost-device, superseded, retired/);
    expect(row('phone-1')).toMatchObject({ status: 'active', revoked: false });
    // Without --json: `error [invalid-argument]` on stderr, exit 2.
    const text = aegis(['clients', 'revoke', 'phone-1', '--reason', 'dropped-in-lake', '--data-dir', coordDir]);
    expect(text.status).toBe(2);
    expect(text.stderr).toMatch(/error \[invalid-argument\]/);
  });

  test('revoke --reason lost-device: recorded with its detail, its serial named, the running device stops with exit 2', async () => {
    const serial = new X509Certificate(readFileSync(join(root, 'phone-1', 'client.pem'))).serialNumber.toLowerCase().replace(/^0+/, '');
    const r = cliJson(aegis(['clients', 'revoke', 'phone-1', '--reason', 'lost-device', '--detail', 'left on a train', '--data-dir', coordDir, '--json']));
    expect(r).toMatchObject({ client_id: 'phone-1', reason: 'lost-device', serials: [serial] });
    expect(Number.isNaN(Date.parse(r.revoked_at))).toBe(false);
    expect(row('phone-1')).toMatchObject({ status: 'revoked', revoked: true, revoked_at: r.revoked_at, revocation_reason: 'lost-device', revocation_detail: 'left on a train' });
    await expect(deviceExit).resolves.toBe(2);
  });

  test('crl --out: a CRL signed by the CA listing the serial with cessationOfOperation; an existing file is not overwritten', async () => {
    const serial = new X509Certificate(readFileSync(join(root, 'phone-1', 'client.pem'))).serialNumber.toLowerCase().replace(/^0+/, '');
    const out = join(root, 'crl.pem');
    const r = cliJson(aegis(['clients', 'crl', '--out', out, '--data-dir', coordDir, '--json']));
    expect(r).toMatchObject({ out, entries: 1 });
    expect(Date.parse(r.next_update) - Date.parse(r.this_update)).toBe(7 * 86_400_000);
    const pem = readFileSync(out, 'utf8');
    expect(pem).toMatch(/^-----BEGIN X509 CRL-----\n/);
    const parsed = await parseCrl(pem);
    expect(parsed.entries).toEqual([{ serial, revokedAt: Math.floor(Date.parse(row('phone-1').revoked_at as string) / 1000) * 1000, crlReason: 'cessationOfOperation' }]);
    expect(parsed.crlNumber).toBe(r.crl_number);
    const ca = await caCertificateFromPem(readFileSync(join(coordDir, 'ca.pem'), 'utf8'));
    await expect(verifyCrl(pem, ca)).resolves.toBe(true);
    if (spawnSync('openssl', ['version']).status === 0) {
      const v = spawnSync('openssl', ['crl', '-in', out, '-CAfile', join(coordDir, 'ca.pem'), '-noout', '-text'], { encoding: 'utf8' });
      expect(`${v.stdout}${v.stderr}`).toMatch(/verify OK/);
      expect(v.stdout).toContain(`Serial Number: ${serial.toUpperCase()}`);
      expect(v.stdout).toMatch(/Cessation Of Operation/);
    }
    // Nothing is overwritten.
    const again = aegis(['clients', 'crl', '--out', out, '--data-dir', coordDir, '--json']);
    expect(again.status).toBe(2);
    expect(cliJson(again).error.code).toBe('already-exists');
    expect(readFileSync(out, 'utf8')).toBe(pem);
    // Without --out: the PEM on stdout.
    const printed = aegis(['clients', 'crl', '--data-dir', coordDir]);
    expect(printed.status).toBe(0);
    expect(printed.stdout).toMatch(/^-----BEGIN X509 CRL-----/);
  });
});
