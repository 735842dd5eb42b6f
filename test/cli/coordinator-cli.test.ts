/**
 * The operator and client-operator commands end to end, each a real `aegis` process (dist/):
 * `coordinator start` (sealed keys in its data dir), `clients invite|list|revoke`, `client
 * enroll|run`, `round launch --wait|status|result`, SIGTERM, and a restart from the same dir.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSealedHeader } from '../../shared/keystore/envelope.js';
import { parseKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import { waitFor } from '../support/cluster.js';

const cli = fileURLToPath(new URL('../../dist/bin/aegis.js', import.meta.url));
const PASS = 'operator passphrase for tests';
const env = { ...process.env, AEGIS_PASSPHRASE: PASS, AEGIS_LOG_LEVEL: 'warn' };

let root: string;
let coordDir: string;
let coordinator: ChildProcess | undefined;
const clients: ChildProcess[] = [];

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function aegis(args: string[], extraEnv: Record<string, string> = {}): Run {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 180_000, env: { ...env, ...extraEnv } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed CLI JSON, checked field by field
function json(r: Run): any {
  try {
    return JSON.parse(r.stdout.trim());
  } catch {
    throw new Error(`no JSON on stdout (exit ${r.status}); stderr: ${r.stderr.slice(-500)}`);
  }
}

function startCoordinator(): ChildProcess {
  const child = spawn(process.execPath, [cli, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--allow-unsigned'], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.on('data', (d: Buffer) => (coordinatorOutput += d.toString('utf8')));
  return child;
}
let coordinatorOutput = '';

const endpoint = (): { address: string; enrollAddress: string } => JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8'));

beforeAll(async () => {
  if (!existsSync(cli)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-cli-'));
  coordDir = join(root, 'coord');
  coordinator = startCoordinator();
  await waitFor(() => existsSync(join(coordDir, 'coordinator.json')), 30_000, 'the coordinator to listen');
});

afterAll(async () => {
  for (const c of [...clients, coordinator]) c?.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

const DIM = 4;
const VALUES = [0.5, -0.25, 0.125, 1];

describe('aegis coordinator, clients, client and round commands', () => {
  test('first start seals the CA, token and operator keys in a KEK-wrapped vault: no plain key anywhere in the data dir', () => {
    const files = readdirSync(coordDir);
    expect(files).toEqual(expect.arrayContaining(['ca.pem', 'kek.json', 'kek.keyfile.json', 'secrets.vault.json', 'coordinator.json']));
    expect(files).not.toContain('coordinator.keyfile.json');
    // Every file, in subfolders too (in-use/ names the running coordinator).
    for (const f of (readdirSync(coordDir, { recursive: true }) as string[]).filter((p) => statSync(join(coordDir, p)).isFile())) {
      const text = readFileSync(join(coordDir, f), 'utf8');
      expect(text).not.toMatch(/PRIVATE KEY/);
    }
    for (const f of ['kek.keyfile.json', 'secrets.vault.json']) expect(statSync(join(coordDir, f)).mode & 0o077).toBe(0);
    expect(() => parseKeyfile(readFileSync(join(coordDir, 'kek.keyfile.json')))).not.toThrow();
    // Every vault entry is an envelope-sealed value (AEF1) naming the dir's KEK, version 1.
    const vault = JSON.parse(readFileSync(join(coordDir, 'secrets.vault.json'), 'utf8')) as { entries: Record<string, string> };
    expect(Object.keys(vault.entries).sort()).toEqual(['ca-certificate', 'ca-seed', 'operator-certificate', 'operator-seed', 'queue-key', 'token-seed']);
    for (const b64 of Object.values(vault.entries)) {
      const h = parseSealedHeader(new Uint8Array(Buffer.from(b64, 'base64')));
      expect([h.kekId, h.kekVersion]).toEqual(['passphrase:kek.keyfile.json', 1]);
    }
  });

  test('a coordinator holding its CA key says once at start that it could mint clients (Sybils) and that an offline CA closes it', async () => {
    await waitFor(() => /embedded CA/.test(coordinatorOutput), 30_000, 'the start warning');
    const lines = coordinatorOutput.split('\n').filter((l) => /embedded CA/.test(l));
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]!) as { level: number; ca: string; msg: string };
    expect(line).toMatchObject({ level: 40, ca: 'embedded' });
    expect(line.msg).toMatch(/Sybil attack on secure aggregation/);
    expect(line.msg).toMatch(/--offline-ca/);
  });

  test('three devices enroll with one-time tokens, run, and a launched round completes with the right mean', async () => {
    const { address, enrollAddress } = endpoint();
    for (let i = 0; i < 3; i++) {
      const inv = json(aegis(['clients', 'invite', '--data-dir', coordDir, '--ttl', '10m', '--json']));
      expect(inv.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
      const dir = join(root, `dev-${i}`);
      const e = aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', dir, '--id', `dev-${i}`, '--json']);
      expect(json(e)).toEqual({ ok: true, client_id: `dev-${i}`, data_dir: dir });
      if (i === 0) {
        // The token was one-time: a second enrollment with it is refused with its reason.
        const again = aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', join(root, 'thief'), '--id', 'thief', '--json']);
        expect(again.status).toBe(2);
        expect(json(again).error.code).toBe('enrollment-refused');
      }
      expect(readFileSync(join(dir, 'identity.keyfile.json'), 'utf8')).not.toMatch(/PRIVATE KEY/);
      const input = join(root, `update-${i}.json`);
      writeFileSync(input, JSON.stringify({ values: VALUES.map((v) => v * (i + 1)), weight: i + 1 }));
      const child = spawn(process.execPath, [cli, 'client', 'run', '--data-dir', dir, '--input', input, '--allow-unsigned'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr!.resume();
      clients.push(child);
    }
    const list = json(aegis(['clients', 'list', '--data-dir', coordDir, '--json']));
    expect(list.clients.map((c: { client_id: string }) => c.client_id)).toEqual(['dev-0', 'dev-1', 'dev-2']);

    const manifestPath = join(root, 'job.json');
    const now = Date.now();
    writeFileSync(
      manifestPath,
      JSON.stringify({
        version: 1,
        jobId: 'cli-job',
        rounds: 3,
        round: { dim: DIM, cohort: 3, neighbors: 2, clip: 4, bits: 16 },
        deadlines: { advertiseMs: 5000, shareMs: 5000, maskedMs: 5000, consistencyMs: 5000, unmaskMs: 5000 },
        issuedAt: new Date(now - 60_000).toISOString(),
        expiresAt: new Date(now + 3_600_000).toISOString(),
      }),
    );
    const launched = aegis(['round', 'launch', '--manifest', manifestPath, '--data-dir', coordDir, '--gather', '20s', '--wait', '--json']);
    const l = json(launched);
    expect(launched.status).toBe(0);
    expect(l.cohort).toEqual(['dev-0', 'dev-1', 'dev-2']);
    expect(l.status).toMatchObject({ finished: true, ok: true, phase: 'completed', invited: 3, dropouts: 0 });

    const status = json(aegis(['round', 'status', 'cli-job', '--data-dir', coordDir, '--json']));
    expect(status).toMatchObject({ job_id: 'cli-job', round_index: 0, round_number: 1, rounds: 3, ok: true, clients_per_phase: { 'advertise-keys': 3, 'masked-input': 3 } });

    const result = json(aegis(['round', 'result', 'cli-job', '--data-dir', coordDir, '--json']));
    expect(result.survivors).toEqual(['dev-0', 'dev-1', 'dev-2']);
    expect(result.total_weight).toBe(6);
    // Each client sends weight x update (update = VALUES); the mean is VALUES, within quantization.
    const step = (2 * 4) / (2 ** 16 - 1);
    result.mean.forEach((m: number, j: number) => expect(Math.abs(m - VALUES[j]!)).toBeLessThanOrEqual((3 * step) / 6 + 1e-12));
  });

  test('a revoked client is listed as revoked and left out of the next round', async () => {
    const r = aegis(['clients', 'revoke', 'dev-2', '--reason', 'lost device', '--data-dir', coordDir, '--json']);
    expect(json(r).client_id).toBe('dev-2');
    await waitFor(() => clients[2]!.exitCode !== null, 20_000, 'the revoked client to stop');
    expect(clients[2]!.exitCode).toBe(2);
    const list = json(aegis(['clients', 'list', '--data-dir', coordDir, '--json']));
    expect(list.clients.find((c: { client_id: string }) => c.client_id === 'dev-2')).toMatchObject({ revoked: true, status: 'revoked', revocation_reason: 'lost-device' });
    // Two clients left: fewer than the 3 a round needs, so the launch is refused with its reason.
    const launch = aegis(['round', 'launch', '--manifest', join(root, 'job.json'), '--data-dir', coordDir, '--gather', '0', '--json']);
    expect(launch.status).toBe(2);
    expect(json(launch).error.code).toBe('too-few-clients');
  });

  test('operator commands with the wrong passphrase fail with one decryption error and change nothing', () => {
    const r = aegis(['clients', 'invite', '--data-dir', coordDir, '--json'], { AEGIS_PASSPHRASE: 'not the right passphrase' });
    expect(r.status).toBe(2);
    expect(json(r).error.code).toBe('decryption-failed');
    expect(r.stdout + r.stderr).not.toMatch(/correct|operator passphrase/);
  });

  test('SIGTERM shuts down cleanly, and a restart from the same data dir keeps the CA and the registry', async () => {
    const caBefore = readFileSync(join(coordDir, 'ca.pem'), 'utf8');
    const exited = new Promise<number | null>((res) => coordinator!.once('exit', (code) => res(code)));
    coordinator!.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(existsSync(join(coordDir, 'coordinator.json'))).toBe(false);
    // Its keys rotate and retire like a client's: the vault moves to v2, v1 is destroyed.
    const vaultBefore = readFileSync(join(coordDir, 'secrets.vault.json'), 'utf8');
    expect(json(aegis(['keys', 'rotate', '--data-dir', coordDir, '--json']))).toMatchObject({ ok: true, primary: 2, moved: { secrets: 6 } });
    expect(json(aegis(['keys', 'destroy', '--data-dir', coordDir, '--version', '2', '--json'])).error.code).toBe('failed-precondition');
    expect(json(aegis(['keys', 'disable', '--data-dir', coordDir, '--version', '1', '--json'])).ok).toBe(true);
    expect(json(aegis(['keys', 'destroy', '--data-dir', coordDir, '--version', '1', '--json'])).ok).toBe(true);
    const st = json(aegis(['keys', 'status', '--data-dir', coordDir, '--json']));
    expect(st.versions.map((v: { version: number; state: string; references: { secrets: number } }) => [v.version, v.state, v.references.secrets])).toEqual([
      [1, 'destroyed', 0],
      [2, 'primary', 6],
    ]);
    expect(readFileSync(join(coordDir, 'secrets.vault.json'), 'utf8')).not.toBe(vaultBefore);
    coordinator = startCoordinator();
    await waitFor(() => existsSync(join(coordDir, 'coordinator.json')), 30_000, 'the restarted coordinator');
    expect(readFileSync(join(coordDir, 'ca.pem'), 'utf8')).toBe(caBefore);
    const list = json(aegis(['clients', 'list', '--data-dir', coordDir, '--json']));
    expect(list.clients.map((c: { client_id: string; revoked: boolean }) => [c.client_id, c.revoked])).toEqual([
      ['dev-0', false],
      ['dev-1', false],
      ['dev-2', true],
    ]);
  });
});
