/**
 * The job history across coordinator restarts, each a real `aegis` process (dist/): a
 * coordinator killed with SIGKILL answers `round list | status | result | model` the same when it
 * starts again; a training job it was running resumes from its last model version — killed
 * between two rounds, or inside a round (the round is recorded `interrupted` and rerun under the
 * next round index, which the clients' contribution ledgers accept); and an ended job id is
 * launched again under a higher revision without a restart. Three `aegis client run` processes
 * train on real digits throughout and reconnect to each new coordinator process by themselves.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { splitDigits } from '../../bench/demo/mnist.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { DIGITS_TRAINING, digitsModel } from '../../shared/model/digits.js';
import { loadTf } from '../../shared/model/tfjs.js';
import type { ModelSpec } from '../../shared/protocol/manifest.js';
import { waitFor } from '../support/cluster.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'job history cli test passphrase', AEGIS_LOG_LEVEL: 'warn' };
const CLIENTS = 3;

let root: string;
let coordDir: string;
let listen = '127.0.0.1:0';
let enrollListen = '127.0.0.1:0';
let coordinator: ChildProcess | undefined;
const children: ChildProcess[] = [];
const clientProcesses: ChildProcess[] = [];
let spec: ModelSpec;
let dim: number;
let weightsPath: string;
let initialSha: string;

const aegis = (args: string[]): CliRun => runCli(args, env, 300_000);
const json = cliJson;
const admin = (...args: string[]): CliRun => aegis([...args, '--data-dir', coordDir, '--json']);

/** Starts `aegis coordinator start` on the data dir (the same addresses after the first start). */
async function startCoordinator(extraEnv: Record<string, string> = {}): Promise<ChildProcess> {
  const endpoint = join(coordDir, 'coordinator.json');
  if (existsSync(endpoint)) unlinkSync(endpoint);
  const c = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', listen, '--enroll-listen', enrollListen, '--data-dir', coordDir, '--allow-unsigned'], {
    env: { ...env, ...extraEnv },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  c.stderr!.resume();
  children.push(c);
  coordinator = c;
  await waitFor(() => existsSync(endpoint) || c.exitCode !== null || c.signalCode !== null, 60_000, 'the coordinator to listen');
  return c;
}

/** Resolves with the signal that ended a process. */
function exited(c: ChildProcess): Promise<NodeJS.Signals | null> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve(c.signalCode);
  return new Promise((res) => c.once('exit', (_code, signal) => res(signal)));
}

async function killCoordinator(): Promise<void> {
  const c = coordinator!;
  c.kill('SIGKILL');
  expect(await exited(c)).toBe('SIGKILL');
}

/** A training manifest for the digits model (written once per job id, rounds and revision: the same file is the same manifest). */
function manifestFile(jobId: string, rounds: number, revision = 1, advertiseMs = 20_000): string {
  const now = Date.now();
  const path = join(root, `${jobId}-n${rounds}-r${revision}.json`);
  if (existsSync(path)) return path;
  writeFileSync(
    path,
    JSON.stringify({
      version: 1,
      jobId,
      revision,
      rounds,
      round: { dim, cohort: CLIENTS, clip: 2048, bits: 24 },
      deadlines: { advertiseMs, shareMs: 20_000, maskedMs: 120_000, consistencyMs: 20_000, unmaskMs: 20_000 },
      model: spec,
      training: { ...DIGITS_TRAINING, epochs: 1 },
      issuedAt: new Date(now - 60_000).toISOString(),
      expiresAt: new Date(now + 3_600_000).toISOString(),
    }),
  );
  return path;
}

const launch = (manifest: string, wait: boolean): CliRun => admin('round', 'launch', '--manifest', manifest, '--weights', weightsPath, '--gather', '60s', ...(wait ? ['--wait'] : []));

/** Follows a job until it ends (after a restart: the resumed job) and returns its final status. */
function watchToEnd(jobId: string): Record<string, unknown> & { training: { state: string; rounds_completed: number; rounds_aborted: number; model_version: number } } {
  const r = admin('round', 'status', jobId, '--watch', '--interval', '500ms');
  return json(r);
}

/** The model index the coordinator exports beside the job history. */
const exportedIndex = (dir: string): { version: number; roundIndex?: number; sha256: string }[] =>
  (JSON.parse(readFileSync(join(coordDir, 'models', dir, 'index.json'), 'utf8')) as { versions: { version: number; roundIndex?: number; sha256: string }[] }).versions;

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-job-history-'));
  coordDir = join(root, 'coord');
  await startCoordinator();
  const { address, enrollAddress } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { address: string; enrollAddress: string };
  // Every later coordinator process listens where the clients enrolled.
  listen = address;
  enrollListen = enrollAddress;
  const { tf } = await loadTf();
  const model = await digitsModel(tf, { hidden: 8, seed: 4 });
  spec = model.spec;
  weightsPath = join(root, 'initial.bin');
  writeFileSync(weightsPath, weightBytes(model.weights));
  dim = model.weights.length;
  initialSha = createHash('sha256').update(weightBytes(model.weights)).digest('hex');
  const split = splitDigits({ clients: CLIENTS, perDigitLimit: 20, seed: 7 });
  for (let i = 0; i < CLIENTS; i++) {
    const inv = json(aegis(['clients', 'invite', '--data-dir', coordDir, '--json']));
    const dir = join(root, `dev-${i}`);
    expect(aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', dir, '--id', `dev-${i}`]).status).toBe(0);
    const data = join(root, `digits-${i}.jsonl`);
    writeFileSync(data, split.shards[i]!.map((r) => JSON.stringify({ pixels: Array.from(r.pixels as Float32Array), digit: r.digit })).join('\n'));
    const child = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', dir, '--train-data', data, '--allow-unsigned'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.resume();
    children.push(child);
    clientProcesses.push(child);
  }
}, 120_000);

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('the job history across coordinator restarts', () => {
  test('a coordinator killed with SIGKILL answers round list, status, result and model identically when it starts again', async () => {
    const l = json(launch(manifestFile('hist-a', 2), true));
    expect(l.status.training).toMatchObject({ state: 'completed', rounds_completed: 2, model_version: 2 });
    let outs = 0;
    const answers = (): Record<string, unknown> => {
      const out = join(root, `model-out-${outs++}`);
      const model = json(admin('round', 'model', 'hist-a', '--out', out));
      return {
        list: json(admin('round', 'list')),
        status: json(admin('round', 'status', 'hist-a')),
        status0: json(admin('round', 'status', 'hist-a', '--round', '1')),
        result: json(admin('round', 'result', 'hist-a')),
        result0: json(admin('round', 'result', 'hist-a', '--round', '1')),
        model: { version: model.version, sha256: model.sha256, weights: readFileSync(join(out, 'weights.bin')).toString('base64') },
        model0: json(admin('round', 'model', 'hist-a', '--model-version', '0', '--out', join(root, `model-out-${outs++}`))).sha256,
      };
    };
    const before = answers();
    expect((before.result as { survivors: string[] }).survivors).toEqual(['dev-0', 'dev-1', 'dev-2']);
    expect(before.model0).toBe(initialSha);
    await killCoordinator();
    // The history is private to the coordinator's account.
    expect(statSync(join(coordDir, 'jobs.db')).mode & 0o777).toBe(0o600);
    await startCoordinator();
    expect(answers()).toEqual(before);
  }, 600_000);

  test('a training job whose coordinator was killed between two rounds resumes from its last model version and completes', async () => {
    await killCoordinator();
    // This process kills itself once round 1's model version is in the history, before round 2 starts.
    const dying = await startCoordinator({ AEGIS_TEST_KILL_AT: 'between-rounds:1' });
    expect(launch(manifestFile('hist-b', 3), false).status).toBe(0);
    expect(await exited(dying)).toBe('SIGKILL');
    await startCoordinator();
    const s = watchToEnd('hist-b');
    expect(s.training).toMatchObject({ state: 'completed', rounds_completed: 3, rounds_aborted: 0, model_version: 3 });
    // Model versions go on from version 1 (made by round 1 before the kill): one per round.
    expect(exportedIndex('hist-b').map((v) => [v.version, v.roundIndex ?? null])).toEqual([[0, null], [1, 0], [2, 1], [3, 2]]);
    for (const round of ['1', '2', '3']) expect(json(admin('round', 'result', 'hist-b', '--round', round)).survivors).toEqual(['dev-0', 'dev-1', 'dev-2']);
  }, 600_000);

  test('a training job whose coordinator was killed inside a round reruns it as the next round index from the same model version', async () => {
    await killCoordinator();
    // Round 2's advertise broadcast: every client joined round 2 (advertised keys), none sent an input.
    const dying = await startCoordinator({ AEGIS_TEST_KILL_AT: 'advertise-broadcast:4' });
    expect(launch(manifestFile('hist-c', 3), false).status).toBe(0);
    expect(await exited(dying)).toBe('SIGKILL');
    await startCoordinator();
    const s = watchToEnd('hist-c');
    // Three rounds, the manifest's 3: round 2 (index 1) was interrupted, round 3 (index 2) reran it.
    expect(s).toMatchObject({ round_index: 2, round_number: 3, finished: true, ok: true, state: 'completed' });
    expect(s.training).toMatchObject({ state: 'completed', rounds_completed: 2, rounds_aborted: 1, model_version: 2 });
    const interrupted = json(admin('round', 'status', 'hist-c', '--round', '2'));
    expect(interrupted).toMatchObject({ finished: true, ok: false, abort_reason: 'interrupted', phase: 'aborted' });
    expect(json(admin('round', 'result', 'hist-c', '--round', '2')).error.code).toBe('not-found');
    // The rerun started from version 1 and made version 2; every client's ledger accepted it.
    expect(exportedIndex('hist-c').map((v) => [v.version, v.roundIndex ?? null])).toEqual([[0, null], [1, 0], [2, 2]]);
    expect(json(admin('round', 'result', 'hist-c', '--round', '3')).survivors).toEqual(['dev-0', 'dev-1', 'dev-2']);
  }, 600_000);

  test('an ended job id is launched again under a higher revision, with no restart', async () => {
    // A completed job: the same manifest is refused, so is another of the same revision.
    expect(json(launch(manifestFile('hist-a', 2), false)).error.code).toBe('already-exists');
    const same = json(launch(manifestFile('hist-a', 1), false));
    expect(same.error.code).toBe('already-exists');
    expect(same.error.message).toMatch(/higher revision/);
    const again = json(launch(manifestFile('hist-a', 1, 2), true));
    expect(again.status).toMatchObject({ job_id: 'hist-a', revision: 2, state: 'completed' });
    expect(again.status.training).toMatchObject({ state: 'completed', rounds_completed: 1, model_version: 1 });
    expect(json(admin('round', 'list')).jobs.find((j: { job_id: string }) => j.job_id === 'hist-a')).toMatchObject({ revision: 2, state: 'completed', rounds_done: 1, rounds_total: 1 });
    expect(aegis(['round', 'status', 'hist-a', '--data-dir', coordDir]).stdout).toMatch(/^job hist-a revision 2 round 1: completed\n(.*\n)* {2}training job completed: 1 of 1 rounds completed/);
    // Revision 2's model versions are exported apart from revision 1's.
    expect(exportedIndex('hist-a@r2').map((v) => v.version)).toEqual([0, 1]);
    expect(exportedIndex('hist-a').map((v) => v.version)).toEqual([0, 1, 2]);

    // A cancelled job too: its round waits for the keys of clients held stopped until it is cancelled.
    for (const c of clientProcesses) c.kill('SIGSTOP');
    try {
      expect(launch(manifestFile('hist-d', 2, 1, 600_000), false).status).toBe(0);
      expect(json(admin('round', 'cancel', 'hist-d'))).toMatchObject({ ok: true, job_id: 'hist-d', round_index: 0, round_number: 1 });
    } finally {
      for (const c of clientProcesses) c.kill('SIGCONT');
    }
    expect(json(admin('round', 'status', 'hist-d'))).toMatchObject({ revision: 1, state: 'cancelled' });
    expect(json(launch(manifestFile('hist-d', 2, 1, 600_000), false)).error.code).toBe('already-exists');
    const d2 = json(launch(manifestFile('hist-d', 1, 2), true));
    expect(d2.status).toMatchObject({ job_id: 'hist-d', revision: 2, state: 'completed' });

    // After a restart the latest revision answers.
    await killCoordinator();
    await startCoordinator();
    const list = json(admin('round', 'list')).jobs as { job_id: string; revision: number; state: string }[];
    // Oldest launch first: a job launched again under a new revision moves to its new launch.
    expect(list.map((j) => [j.job_id, j.revision, j.state])).toEqual([
      ['hist-b', 1, 'completed'],
      ['hist-c', 1, 'completed'],
      ['hist-a', 2, 'completed'],
      ['hist-d', 2, 'completed'],
    ]);
  }, 600_000);
});
