/**
 * A training job through the operator's and client operators' commands, each a real `aegis`
 * process (dist/): `coordinator start`, `client enroll`, `client run --train-data` (tfjs on
 * real digits), `round launch --manifest --weights --wait` (the coordinator runs every FedAvg
 * round), `round status`, and `round model --out` (the global model in tfjs format).
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { splitDigits } from '../../bench/demo/mnist.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { DIGITS_TRAINING, digitsModel } from '../../shared/model/digits.js';
import { loadTf, loadTfjsModel, weightsSha256 } from '../../shared/model/tfjs.js';
import { waitFor } from '../support/cluster.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';

const cli = CLI;
const env = { ...process.env, AEGIS_PASSPHRASE: 'training cli test passphrase', AEGIS_LOG_LEVEL: 'warn' };
const CLIENTS = 3;

let root: string;
let coordDir: string;
const children: ChildProcess[] = [];

const aegis = (args: string[]): CliRun => runCli(args, env, 100_000);
const json = cliJson;

beforeAll(async () => {
  if (!existsSync(cli)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-train-cli-'));
  coordDir = join(root, 'coord');
  const c = spawn(process.execPath, [cli, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--allow-unsigned'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  c.stderr!.resume();
  children.push(c);
  await waitFor(() => existsSync(join(coordDir, 'coordinator.json')), 30_000, 'the coordinator to listen');
});

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('a training job from the command line', () => {
  test('clients train on their own JSONL data; launch --weights runs every round; round model writes the final model', async () => {
    const { address, enrollAddress } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { address: string; enrollAddress: string };
    const split = splitDigits({ clients: CLIENTS, perDigitLimit: 50, seed: 9 });
    for (let i = 0; i < CLIENTS; i++) {
      const inv = json(aegis(['clients', 'invite', '--data-dir', coordDir, '--json']));
      const dir = join(root, `dev-${i}`);
      expect(aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', dir, '--id', `dev-${i}`]).status).toBe(0);
      const data = join(root, `digits-${i}.jsonl`);
      writeFileSync(data, split.shards[i]!.map((r) => JSON.stringify({ pixels: Array.from(r.pixels as Float32Array), digit: r.digit })).join('\n'));
      // The last client keeps its examples in the data dir's encrypted store instead of a plain file.
      let source = ['--train-data', data];
      if (i === CLIENTS - 1) {
        // Enrollment made the data dir's KEK and store; `client init` has nothing left to do.
        expect(existsSync(join(dir, 'store.db')) && existsSync(join(dir, 'kek.json'))).toBe(true);
        expect(json(aegis(['client', 'init', '--data-dir', dir, '--json'])).error.code).toBe('already-exists');
        // The features and label are declared plain (every other field would be sealed): training reads them without decrypting.
        expect(cliJson(aegis(['client', 'data', 'schema', '--plain', 'pixels,digit', '--data-dir', dir, '--json'])).schema.version).toBe(2);
        expect(cliJson(aegis(['client', 'data', 'import', data, '--data-dir', dir, '--json'])).imported).toBe(split.shards[i]!.length);
        source = [];
      }
      if (i === 0) {
        // A client with neither an input nor training data is told so (before its run starts:
        // a second client run on a dir in use is refused as such).
        const none = aegis(['client', 'run', '--data-dir', dir, '--allow-unsigned']);
        expect(none.status).toBe(2);
        expect(none.stderr).toMatch(/--train-data/);
      }
      const child = spawn(process.execPath, [cli, 'client', 'run', '--data-dir', dir, ...source, '--allow-unsigned'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr!.resume();
      children.push(child);
    }

    const { tf } = await loadTf();
    const { spec, weights } = await digitsModel(tf, { hidden: 16, seed: 3 });
    const now = Date.now();
    const manifestPath = join(root, 'job.json');
    writeFileSync(
      manifestPath,
      JSON.stringify({
        version: 1,
        jobId: 'cli-train',
        rounds: 2,
        round: { dim: weights.length, cohort: CLIENTS, clip: 2048, bits: 24 },
        deadlines: { advertiseMs: 10_000, shareMs: 10_000, maskedMs: 60_000, consistencyMs: 10_000, unmaskMs: 10_000 },
        model: spec,
        training: { ...DIGITS_TRAINING, epochs: 3 },
        issuedAt: new Date(now - 60_000).toISOString(),
        expiresAt: new Date(now + 3_600_000).toISOString(),
      }),
    );
    const weightsPath = join(root, 'initial.bin');
    writeFileSync(weightsPath, weightBytes(weights));
    const wrongPath = join(root, 'wrong.bin');
    const wrong = new Float32Array(weights);
    wrong[5] = 1;
    writeFileSync(wrongPath, weightBytes(wrong));

    // Weights that are not the manifest's are refused before anything runs.
    const refused = aegis(['round', 'launch', '--data-dir', coordDir, '--manifest', manifestPath, '--weights', wrongPath, '--gather', '20s', '--json']);
    expect(refused.status).toBe(2);
    expect(json(refused).error.code).toBe('hash-mismatch');

    const launched = aegis(['round', 'launch', '--data-dir', coordDir, '--manifest', manifestPath, '--weights', weightsPath, '--gather', '30s', '--wait', '--json']);
    expect(launched.status).toBe(0);
    const l = json(launched);
    expect(l.status.training).toMatchObject({ state: 'completed', rounds_completed: 2, model_version: 2 });

    // Every client's update is in every round, the store-backed one included.
    for (const round of ['1', '2']) expect(json(aegis(['round', 'result', 'cli-train', '--round', round, '--data-dir', coordDir, '--json'])).survivors).toEqual(['dev-0', 'dev-1', 'dev-2']);
    const status = json(aegis(['round', 'status', 'cli-train', '--data-dir', coordDir, '--json']));
    expect(status.training.model_sha256).toBe(l.status.training.model_sha256);
    const text = aegis(['round', 'status', 'cli-train', '--data-dir', coordDir]);
    expect(text.stdout).toMatch(/training job completed: 2 of 2 rounds completed/);

    const outDir = join(root, 'model');
    const m = json(aegis(['round', 'model', 'cli-train', '--data-dir', coordDir, '--out', outDir, '--json']));
    expect(m).toMatchObject({ job_id: 'cli-train', version: 2, sha256: l.status.training.model_sha256 });
    const saved = await loadTfjsModel(outDir);
    expect(weightsSha256(saved.weights)).toBe(m.sha256);
    // Version 0 is the initial weights.
    const v0 = json(aegis(['round', 'model', 'cli-train', '--data-dir', coordDir, '--out', join(root, 'v0'), '--model-version', '0', '--json']));
    expect(v0.sha256).toBe(createHash('sha256').update(weightBytes(weights)).digest('hex'));
    // Served from the job history (an older version's weights are not kept in memory): the bytes themselves are exact.
    expect((await loadTfjsModel(join(root, 'v0'))).weights).toEqual(weights);
    // The coordinator kept every version in its data dir.
    expect(readFileSync(join(coordDir, 'models', 'cli-train', 'v2.bin')).equals(readFileSync(join(outDir, 'weights.bin')))).toBe(true);
    expect(aegis(['round', 'model', 'no-such-job', '--data-dir', coordDir, '--out', join(root, 'x'), '--json']).status).toBe(2);
  });
});
