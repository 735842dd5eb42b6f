/**
 * The ML engineer's round commands end to end, each a real `aegis` process (dist/) against a real
 * coordinator and real client processes over TLS: `round list`, `round status --watch`,
 * `round cancel` and `round result --out DIR`; a device's decline in status, list and /metrics.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../support/cluster.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'round cli test passphrase', AEGIS_LOG_LEVEL: 'warn' };
const DIM = 4;
const VALUES = [0.5, -0.25, 0.125, 1];

let root: string;
let coordDir: string;
let dev3: ChildProcess | undefined;
const children: ChildProcess[] = [];

const aegis = (args: string[]): CliRun => runCli(args, env, 60_000);
const json = cliJson;
const admin = (...args: string[]): CliRun => aegis([...args, '--data-dir', coordDir, '--json']);

function runClient(i: number): ChildProcess {
  // Each client keeps one input file for several jobs: it opts in to contribute it again.
  const child = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', join(root, `dev-${i}`), '--input', join(root, `update-${i}.json`), '--input-reuse', '--allow-unsigned'], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.resume();
  children.push(child);
  return child;
}

function writeManifest(jobId: string, over: { cohort: number; rounds: number; advertiseMs: number }): string {
  const path = join(root, `${jobId}.json`);
  const now = Date.now();
  const ms = over.advertiseMs;
  writeFileSync(
    path,
    JSON.stringify({
      version: 1,
      jobId,
      rounds: over.rounds,
      round: { dim: DIM, cohort: over.cohort, neighbors: over.cohort - 1, threshold: 2, clip: 4, bits: 16 },
      deadlines: { advertiseMs: ms, shareMs: 10_000, maskedMs: 10_000, consistencyMs: 10_000, unmaskMs: 10_000 },
      issuedAt: new Date(now - 60_000).toISOString(),
      expiresAt: new Date(now + 3_600_000).toISOString(),
    }),
  );
  return path;
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-round-cli-'));
  coordDir = join(root, 'coord');
  const c = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--allow-unsigned', '--metrics', '127.0.0.1:0'], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  c.stderr!.resume();
  children.push(c);
  await waitFor(() => existsSync(join(coordDir, 'coordinator.json')), 30_000, 'the coordinator to listen');
  const { address, enrollAddress } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { address: string; enrollAddress: string };
  // Four devices: dev-0..2 take part in everything; dev-3 (in audit mode: it declines jobs nobody
  // approved on it) joins later, declines a round, then falls silent to hold a round in its first phase.
  for (let i = 0; i < 4; i++) {
    const inv = json(admin('clients', 'invite'));
    const dir = join(root, `dev-${i}`);
    const e = aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', dir, '--id', `dev-${i}`, '--json']);
    expect(e.status).toBe(0);
    writeFileSync(join(root, `update-${i}.json`), JSON.stringify({ values: VALUES.map((v) => v * (i + 1)), weight: i + 1 }));
  }
  expect(aegis(['client', 'audit', 'enter', '--data-dir', join(root, 'dev-3'), '--reason', 'holds the cancel test round', '--json']).status).toBe(0);
  for (let i = 0; i < 3; i++) runClient(i);
});

/** dev-3 as a silent device (test/support/silent-device.mjs), once its stream is attached. */
async function silentDevice(dir: string): Promise<ChildProcess> {
  const { address } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { address: string };
  const child = spawn(process.execPath, [fileURLToPath(new URL('../support/silent-device.mjs', import.meta.url)), dir, address], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await waitFor(() => out.includes('attached') || child.exitCode !== null, 60_000, 'the silent device to attach');
  if (!out.includes('attached')) throw new Error(`the silent device did not attach: ${err}`);
  return child;
}

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('aegis round list, status --watch, cancel, result --out', () => {
  test('list shows a launched job, status --watch follows it to the end and prints one final JSON document, then list shows it completed', () => {
    const empty = admin('round', 'list');
    expect(empty.status).toBe(0);
    expect(json(empty)).toEqual({ jobs: [] });

    const manifest = writeManifest('watch-job', { cohort: 3, rounds: 2, advertiseMs: 10_000 });
    const launched = admin('round', 'launch', '--manifest', manifest, '--gather', '20s');
    expect(launched.status).toBe(0);
    expect(json(launched)).toMatchObject({ job_id: 'watch-job', round_index: 0, round_number: 1, cohort: ['dev-0', 'dev-1', 'dev-2'] });

    const listed = admin('round', 'list');
    expect(listed.status).toBe(0);
    const jobs = json(listed).jobs;
    expect(jobs).toHaveLength(1);
    expect(jobs[0]).toMatchObject({ job_id: 'watch-job', kind: 'plain', rounds_total: 2, round_index: 0, round_number: 1, invited: 3 });
    expect(['running', 'completed']).toContain(jobs[0].state);
    expect(Date.parse(jobs[0].started_at)).toBeGreaterThan(Date.now() - 60_000);

    const watched = admin('round', 'status', 'watch-job', '--watch', '--interval', '100ms');
    expect(watched.status).toBe(0);
    // One JSON document on stdout, the final status; progress went to stderr (not a TTY: lines).
    expect(watched.stdout.trim().split('\n')).toHaveLength(1);
    const s = json(watched);
    expect(s).toMatchObject({
      job_id: 'watch-job',
      kind: 'plain',
      state: 'completed',
      round_index: 0,
      round_number: 1,
      rounds: 2,
      rounds_done: 1,
      phase: 'completed',
      finished: true,
      ok: true,
      invited: 3,
      dropouts: 0,
      current_phase: null,
      clients_per_phase: { 'advertise-keys': 3, 'share-keys': 3, 'masked-input': 3, 'consistency-check': 3 },
    });
    expect(s.phases).toEqual([
      { phase: 'advertise-keys', clients: 3, expected: 3 },
      { phase: 'share-keys', clients: 3, expected: 3 },
      { phase: 'masked-input', clients: 3, expected: 3 },
      { phase: 'consistency-check', clients: 3, expected: 3 },
    ]);
    expect(s.elapsed_ms).toBeGreaterThan(0);
    expect(watched.stderr).toMatch(/job watch-job round 1: completed/);

    const after = json(admin('round', 'list')).jobs;
    expect(after[0]).toMatchObject({ job_id: 'watch-job', state: 'completed', rounds_done: 1, rounds_total: 2, phase: 'completed', rounds_aborted: 0 });
    const text = aegis(['round', 'list', '--data-dir', coordDir]);
    expect(text.stdout).toMatch(/^JOB\tREVISION\tKIND\tSTATE/);
    expect(text.stdout).toMatch(/watch-job\t1\tplain\tcompleted\t1\/2\t1\tcompleted/);
  });

  test('result --out DIR writes result.json with the mean; a non-empty DIR is refused; --json prints the same fields, and without either a short summary', () => {
    const out = join(root, 'result-out');
    const r = admin('round', 'result', 'watch-job', '--out', out);
    expect(r.status).toBe(0);
    expect(json(r)).toMatchObject({ ok: true, job_id: 'watch-job', round_index: 0, round_number: 1, dir: out, dim: DIM, total_weight: 6, model: null, files: [join(out, 'result.json')] });
    expect(readdirSync(out)).toEqual(['result.json']);
    const doc = JSON.parse(readFileSync(join(out, 'result.json'), 'utf8'));
    expect(doc).toMatchObject({ job_id: 'watch-job', round_index: 0, round_number: 1, survivors: ['dev-0', 'dev-1', 'dev-2'], dim: DIM, total_weight: 6, clip: 4, bits: 16 });
    // Each client sends weight x VALUES: the mean is VALUES within quantization.
    const step = (2 * 4) / (2 ** 16 - 1);
    expect(doc.mean).toHaveLength(DIM);
    doc.mean.forEach((m: number, j: number) => expect(Math.abs(m - VALUES[j]!)).toBeLessThanOrEqual((3 * step) / 6 + 1e-12));

    const stdoutResult = json(admin('round', 'result', 'watch-job'));
    expect(stdoutResult.mean).toEqual(doc.mean);
    expect(stdoutResult.survivors).toEqual(doc.survivors);
    // Without --json or --out: a short summary for a terminal, which says where the rest is.
    const human = aegis(['round', 'result', 'watch-job', '--data-dir', coordDir]);
    expect(human.status).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`^job watch-job round ${doc.round_number}: ${doc.survivors.length} survivors, total weight \\d+, ${DIM} values\nmean: \\[`));
    expect(human.stdout).toContain('--out DIR');
    expect(human.stdout.split('\n').length).toBeLessThanOrEqual(4);
    // --round takes the number people see: round 1 is the first; there is no round 0.
    expect(json(admin('round', 'result', 'watch-job', '--round', '1')).mean).toEqual(doc.mean);
    const zero = admin('round', 'result', 'watch-job', '--round', '0');
    expect(zero.status).toBe(2);
    expect(json(zero).error).toMatchObject({ code: 'invalid-argument', message: expect.stringContaining('--round') });

    // The folder now holds result.json: nothing is overwritten.
    const again = admin('round', 'result', 'watch-job', '--out', out);
    expect(again.status).toBe(2);
    expect(json(again).error.code).toBe('already-exists');
    const other = join(root, 'other-out');
    mkdirSync(other);
    writeFileSync(join(other, 'notes.txt'), 'keep me');
    expect(json(admin('round', 'result', 'watch-job', '--out', other)).error.code).toBe('already-exists');
    expect(readdirSync(other)).toEqual(['notes.txt']);
    expect(json(admin('round', 'result', 'no-such-job', '--out', join(root, 'x'))).error.code).toBe('not-found');
  });

  test('a device in audit mode declines: phase 0 closes once the others advertised, and status and list show the decline by reason', async () => {
    // dev-3 connects; in audit mode it declines (approval-required) instead of advertising keys.
    dev3 = runClient(3);
    const advertiseMs = 60_000;
    const manifest = writeManifest('decline-job', { cohort: 4, rounds: 1, advertiseMs });
    const launched = admin('round', 'launch', '--manifest', manifest, '--gather', '20s', '--wait');
    expect(launched.status).toBe(0);
    const s = json(launched).status;
    expect(s).toMatchObject({ job_id: 'decline-job', state: 'completed', ok: true, invited: 4, dropouts: 0, declines: { 'approval-required': 1 } });
    expect(s.phases[0]).toEqual({ phase: 'advertise-keys', clients: 3, expected: 4 });
    // The round ended (so phase 0 closed) long before phase 0's one-minute deadline.
    expect(s.elapsed_ms).toBeLessThan(advertiseMs);
    const text = aegis(['round', 'status', 'decline-job', '--data-dir', coordDir]);
    expect(text.stdout).toMatch(/invited 4; declined 1 \(approval-required 1\); advertise-keys 3\/4/);
    expect(json(admin('round', 'list')).jobs.find((j: { job_id: string }) => j.job_id === 'decline-job')).toMatchObject({ state: 'completed', declines: { 'approval-required': 1 } });
    const list = aegis(['round', 'list', '--data-dir', coordDir]).stdout;
    expect(list).toMatch(/^JOB\tREVISION\tKIND\tSTATE\tROUNDS\tROUND\tPHASE\tSTARTED\tELAPSED\tDECLINED$/m);
    expect(list).toMatch(/^decline-job\t1\tplain\tcompleted\t1\/1\t1\tcompleted\t.*\tapproval-required 1$/m);
    expect(list).toMatch(/^watch-job\t.*\t-$/m);
  });

  test('cancel ends a running round (status cancelled); a second cancel is failed-precondition, an unknown job not-found', async () => {
    // dev-3 becomes a silent device: its client process is stopped and a process holding a stream
    // with its identity takes its place, answering the transport's keepalive pings but never the
    // round. So phase 0 waits for it until the advertise deadline, whatever the machine's speed (a
    // frozen process would be dropped by keepalive after ~30 s, and a busy machine can take that
    // long between the launch and the cancel).
    dev3!.kill('SIGKILL');
    await silentDevice(join(root, 'dev-3'));
    // The advertise deadline is far past anything the test waits for: the round must still be in
    // its first phase when the cancel arrives, however slowly the CLI calls before it run.
    const manifest = writeManifest('cancel-job', { cohort: 4, rounds: 1, advertiseMs: 1_800_000 });
    const launched = admin('round', 'launch', '--manifest', manifest, '--gather', '20s');
    expect(launched.status).toBe(0);
    expect(json(launched).cohort).toEqual(['dev-0', 'dev-1', 'dev-2', 'dev-3']);

    let running = json(admin('round', 'status', 'cancel-job'));
    expect(running).toMatchObject({ state: 'running', phase: 'advertise-keys', finished: false, invited: 4, current_phase: { phase: 'advertise-keys', expected: 4 } });
    // The three others advertise; the phase still waits for dev-3.
    await waitFor(() => (running = json(admin('round', 'status', 'cancel-job'))).current_phase.received === 3, 15_000, 'three advertisements');
    expect(running).toMatchObject({ state: 'running', phase: 'advertise-keys', phases: [{ phase: 'advertise-keys', clients: 3, expected: 4 }] });
    expect(json(admin('round', 'list')).jobs.find((j: { job_id: string }) => j.job_id === 'cancel-job')).toMatchObject({ state: 'running', phase: 'advertise-keys', invited: 4 });

    const cancelled = admin('round', 'cancel', 'cancel-job', '--reason', 'wrong cohort');
    expect(cancelled.status).toBe(0);
    expect(json(cancelled)).toMatchObject({ ok: true, job_id: 'cancel-job', round_index: 0, round_number: 1, phase: 'advertise-keys' });

    const s = json(admin('round', 'status', 'cancel-job'));
    expect(s).toMatchObject({ job_id: 'cancel-job', state: 'cancelled', phase: 'aborted', finished: true, ok: false, abort_reason: 'cancelled', current_phase: null });
    expect(s.detail).toMatch(/cancelled by operator .*: wrong cohort/);
    // --watch on an ended round returns at once with its final status; it did not complete: exit 1.
    const watched = admin('round', 'status', 'cancel-job', '--watch');
    expect(watched.status).toBe(1);
    expect(json(watched)).toMatchObject({ state: 'cancelled', finished: true });
    expect(json(admin('round', 'list')).jobs.find((j: { job_id: string }) => j.job_id === 'cancel-job')).toMatchObject({ state: 'cancelled', phase: 'aborted', rounds_done: 0, rounds_aborted: 1 });
    // Nothing was published.
    expect(json(admin('round', 'result', 'cancel-job')).error.code).toBe('not-found');

    const again = admin('round', 'cancel', 'cancel-job');
    expect(again.status).toBe(2);
    expect(json(again).error.code).toBe('failed-precondition');
    const done = admin('round', 'cancel', 'watch-job');
    expect(done.status).toBe(2);
    expect(json(done).error.code).toBe('failed-precondition');
    const unknown = admin('round', 'cancel', 'no-such-job');
    expect(unknown.status).toBe(2);
    expect(json(unknown).error.code).toBe('not-found');
  });

  test('/metrics counts the rounds by outcome, phase durations, clients per phase and abort reasons — and names no client', async () => {
    const { metrics } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { metrics: string };
    expect(metrics).toMatch(/^127\.0\.0\.1:\d+$/);
    const res = await fetch(`http://${metrics}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
    // The tests above ran two completed rounds (3 clients each; dev-3 declined the second) and one
    // cancelled in its first phase.
    expect(value(/^aegis_rounds_started_total (\d+)$/m)).toBe(3);
    expect(value(/^aegis_rounds_finished_total\{outcome="completed"\} (\d+)$/m)).toBe(2);
    expect(value(/^aegis_round_declines_total\{reason="approval-required"\} (\d+)$/m)).toBe(1);
    expect(value(/^aegis_dropouts_total\{phase="advertise-keys"\} (\d+)$/m)).toBe(0);
    expect(value(/^aegis_rounds_finished_total\{outcome="cancelled"\} (\d+)$/m)).toBe(1);
    expect(value(/^aegis_round_aborts_total\{reason="cancelled",phase="advertise-keys"\} (\d+)$/m)).toBe(1);
    expect(value(/^aegis_rounds_running (\d+)$/m)).toBe(0);
    expect(value(/^aegis_phase_duration_seconds_count\{phase="unmasking"\} (\d+)$/m)).toBe(2);
    expect(value(/^aegis_phase_clients\{phase="masked-input"\} (\d+)$/m)).toBe(3);
    expect(value(/^aegis_unmask_seconds_count (\d+)$/m)).toBe(2);
    for (const id of ['dev-0', 'dev-1', 'dev-2', 'dev-3', '127.0.0.1']) expect(text).not.toContain(id);
    expect((await fetch(`http://${metrics}/other`)).status).toBe(404);
  });
});
