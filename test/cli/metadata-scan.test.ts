/**
 * Metadata minimisation (the coordinator keeps no more about its clients than running rounds
 * needs): after a real round run from the command line at debug log level, the coordinator's
 * logs, its Prometheus metrics and every file of its data dir are scanned for what they must not
 * hold — the clients' IP address, any client's input values, the clients' certificate serials
 * (logs and metrics) — while the round id and phase names are there.
 *
 * The coordinator listens on 127.0.0.2, so every address of its own is 127.0.0.2; the clients
 * connect from 127.0.0.1 (Linux picks 127.0.0.1 as the source towards any 127/8 address; the
 * first test checks that premise on this machine), so "127.0.0.1" anywhere in what the
 * coordinator wrote would be a client's IP.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from '../support/cli.js';
import { waitFor } from '../support/cluster.js';

const PASS = 'metadata scan passphrase';
const env = { ...process.env, AEGIS_PASSPHRASE: PASS, AEGIS_LOG_LEVEL: 'debug' };
const CLIENT_IP = '127.0.0.1';
const HOST = '127.0.0.2';
// Distinctive inputs: none of these digit strings may appear in anything the coordinator wrote.
const VALUES = [0.8123457, -0.4567891, 0.3141593, 0.2718282];

let root: string;
let coordDir: string;
let coordinator: ChildProcess | undefined;
let coordinatorOut = '';
const clients: ChildProcess[] = [];

function aegis(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 180_000, env: { ...env, AEGIS_LOG_LEVEL: 'warn' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed CLI JSON, checked field by field
const json = (r: { stdout: string; stderr: string; status: number | null }): any => {
  try {
    return JSON.parse(r.stdout.trim());
  } catch {
    throw new Error(`no JSON on stdout (exit ${r.status}); stderr: ${r.stderr.slice(-500)}`);
  }
};

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-metadata-'));
  coordDir = join(root, 'coord');
  coordinator = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', `${HOST}:0`, '--enroll-listen', `${HOST}:0`, '--metrics', `${HOST}:0`, '--data-dir', coordDir, '--allow-unsigned'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  coordinator.stdout!.on('data', (d: Buffer) => (coordinatorOut += d.toString('utf8')));
  coordinator.stderr!.on('data', (d: Buffer) => (coordinatorOut += d.toString('utf8')));
  await waitFor(() => existsSync(join(coordDir, 'coordinator.json')), 30_000, 'the coordinator to listen');
});

afterAll(() => {
  for (const c of [...clients, coordinator]) c?.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('what the coordinator keeps of a round: ids, phases, counts and reason codes only', () => {
  test('premise: a connection to 127.0.0.2 comes from 127.0.0.1 on this machine', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, HOST, r));
    const seen = new Promise<string | undefined>((r) => server.once('connection', (s) => (r(s.remoteAddress), s.destroy())));
    const sock = createConnection({ host: HOST, port: (server.address() as { port: number }).port });
    expect(await seen).toBe(CLIENT_IP);
    sock.destroy();
    server.close();
  });

  test('after a round: no client IP, no input value and no certificate serial in its logs, metrics or data dir', async () => {
    const { address, enrollAddress, metrics } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { address: string; enrollAddress: string; metrics: string };
    expect(address.startsWith(`${HOST}:`)).toBe(true);
    const serials: string[] = [];
    for (let i = 0; i < 3; i++) {
      const inv = json(aegis(['clients', 'invite', '--data-dir', coordDir, '--json']));
      const dir = join(root, `dev-${i}`);
      const e = aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', dir, '--id', `dev-${i}`, '--json']);
      expect(e.status).toBe(0);
      const certFile = readdirSync(dir).find((f) => f.endsWith('.pem') && f !== 'ca.pem');
      if (certFile) serials.push(new X509Certificate(readFileSync(join(dir, certFile))).serialNumber.toLowerCase());
      const input = join(root, `update-${i}.json`);
      writeFileSync(input, JSON.stringify({ values: VALUES, weight: 1 }));
      const child = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', dir, '--input', input, '--allow-unsigned'], { env: { ...env, AEGIS_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr!.resume();
      clients.push(child);
    }
    expect(serials).toHaveLength(3);
    const manifestPath = join(root, 'job.json');
    const now = Date.now();
    writeFileSync(
      manifestPath,
      JSON.stringify({
        version: 1,
        jobId: 'scan-job',
        rounds: 1,
        round: { dim: VALUES.length, cohort: 3, neighbors: 2, clip: 1, bits: 16 },
        deadlines: { advertiseMs: 8000, shareMs: 8000, maskedMs: 8000, consistencyMs: 8000, unmaskMs: 8000 },
        issuedAt: new Date(now - 60_000).toISOString(),
        expiresAt: new Date(now + 3_600_000).toISOString(),
      }),
    );
    const launched = aegis(['round', 'launch', '--manifest', manifestPath, '--data-dir', coordDir, '--gather', '30s', '--wait', '--json']);
    expect(launched.status).toBe(0);
    const result = json(aegis(['round', 'result', 'scan-job', '--data-dir', coordDir, '--json']));
    expect(result.survivor_count).toBe(3);
    const metricsText = await (await fetch(`http://${metrics}/metrics`)).text();
    await new Promise((r) => setTimeout(r, 500));

    const logs = coordinatorOut;
    // Positive controls: the scan reads real debug logs and real metrics of this round.
    expect(logs).toContain('scan-job');
    expect(logs).toMatch(/"phase":"(masked-input|unmasking)"/);
    expect(logs).toContain('"level":20'); // debug lines are there
    expect(metricsText).toMatch(/aegis_rounds_finished_total\{[^}]*outcome="completed"[^}]*\} 1/);
    const dataFiles = filesUnder(coordDir).map((f) => ({ f, text: readFileSync(f).toString('latin1') }));
    expect(dataFiles.map((x) => x.f)).toEqual(expect.arrayContaining([join(coordDir, 'registry.json')]));

    const everything = [{ f: 'coordinator logs', text: logs }, { f: 'metrics', text: metricsText }, ...dataFiles];
    const found = (needle: string, where: { f: string; text: string }[]): string[] => where.filter((x) => x.text.includes(needle)).map((x) => x.f);
    expect(found(CLIENT_IP, everything)).toEqual([]);
    expect(found('::1', everything)).toEqual([]);
    for (const v of VALUES) {
      // The digits of each value as a client would write them (and a shorter prefix).
      expect([v, found(String(v), everything)]).toEqual([v, []]);
      expect([v, found(String(Math.abs(v)).slice(0, 6), everything)]).toEqual([v, []]);
    }
    // Certificate details stay in the registry (which needs them), never in logs or metrics.
    for (const s of serials) expect(found(s, [everything[0]!, everything[1]!])).toEqual([]);
  });
});
