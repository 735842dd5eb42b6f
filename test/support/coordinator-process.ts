/**
 * A real `aegis coordinator start` process (dist/) on a data dir of its own, three enrolled
 * `aegis client run` processes training on real digits, and the commands the restart tests drive
 * it with. Each later coordinator process listens where the clients enrolled, so the clients
 * reconnect to it by themselves.
 */
import { expect } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { splitDigits } from '../../bench/demo/mnist.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { DIGITS_TRAINING, digitsModel } from '../../shared/model/digits.js';
import { loadTf } from '../../shared/model/tfjs.js';
import type { ModelSpec } from '../../shared/protocol/manifest.js';
import { CLI, cliJson, runCli, type CliRun } from './cli.js';
import { waitFor } from './cluster.js';

export interface TrainingStatus extends Record<string, unknown> {
  training: { state: string; rounds_completed: number; rounds_aborted: number; model_version: number; detail: string | null };
}

/** Resolves with the signal that ended a process. */
export function exited(c: ChildProcess): Promise<NodeJS.Signals | null> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve(c.signalCode);
  return new Promise((res) => c.once('exit', (_code, signal) => res(signal)));
}

export class CoordinatorProcess {
  readonly root: string;
  readonly coordDir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly clientProcesses: ChildProcess[] = [];
  coordinator: ChildProcess | undefined;
  spec!: ModelSpec;
  dim = 0;
  weightsPath = '';
  initialSha = '';
  private listen = '127.0.0.1:0';
  private enrollListen = '127.0.0.1:0';
  private readonly children: ChildProcess[] = [];

  constructor(
    name: string,
    readonly clients = 3,
  ) {
    this.root = mkdtempSync(join(tmpdir(), `aegis-${name}-`));
    this.coordDir = join(this.root, 'coord');
    this.env = { ...process.env, AEGIS_PASSPHRASE: `${name} test passphrase`, AEGIS_LOG_LEVEL: 'warn' };
  }

  aegis = (args: string[]): CliRun => runCli(args, this.env, 300_000);
  admin = (...args: string[]): CliRun => this.aegis([...args, '--data-dir', this.coordDir, '--json']);

  /** Starts `aegis coordinator start` on the data dir (the same addresses after the first start). */
  async start(extraEnv: Record<string, string> = {}): Promise<ChildProcess> {
    const endpoint = join(this.coordDir, 'coordinator.json');
    if (existsSync(endpoint)) unlinkSync(endpoint);
    const c = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', this.listen, '--enroll-listen', this.enrollListen, '--data-dir', this.coordDir, '--allow-unsigned'], {
      env: { ...this.env, ...extraEnv },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    c.stderr!.resume();
    this.children.push(c);
    this.coordinator = c;
    await waitFor(() => existsSync(endpoint) || c.exitCode !== null || c.signalCode !== null, 120_000, 'the coordinator to listen');
    return c;
  }

  async kill(): Promise<void> {
    const c = this.coordinator!;
    c.kill('SIGKILL');
    expect(await exited(c)).toBe('SIGKILL');
  }

  /** First start, the digits model, and the enrolled clients running (`client run --train-data`). */
  async setUp(): Promise<void> {
    if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
    await this.start();
    const { address, enrollAddress } = JSON.parse(readFileSync(join(this.coordDir, 'coordinator.json'), 'utf8')) as { address: string; enrollAddress: string };
    this.listen = address;
    this.enrollListen = enrollAddress;
    const { tf } = await loadTf();
    const model = await digitsModel(tf, { hidden: 8, seed: 4 });
    this.spec = model.spec;
    this.weightsPath = join(this.root, 'initial.bin');
    writeFileSync(this.weightsPath, weightBytes(model.weights));
    this.dim = model.weights.length;
    this.initialSha = createHash('sha256').update(weightBytes(model.weights)).digest('hex');
    const split = splitDigits({ clients: this.clients, perDigitLimit: 20, seed: 7 });
    for (let i = 0; i < this.clients; i++) {
      const inv = cliJson(this.aegis(['clients', 'invite', '--data-dir', this.coordDir, '--json']));
      const dir = join(this.root, `dev-${i}`);
      expect(this.aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(this.coordDir, 'ca.pem'), '--data-dir', dir, '--id', `dev-${i}`]).status).toBe(0);
      const data = join(this.root, `digits-${i}.jsonl`);
      writeFileSync(data, split.shards[i]!.map((r) => JSON.stringify({ pixels: Array.from(r.pixels as Float32Array), digit: r.digit })).join('\n'));
      const child = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', dir, '--train-data', data, '--allow-unsigned'], { env: this.env, stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr!.resume();
      this.children.push(child);
      this.clientProcesses.push(child);
    }
  }

  tearDown(): void {
    for (const c of this.children) c.kill('SIGKILL');
    rmSync(this.root, { recursive: true, force: true });
  }

  /** A training manifest for the digits model (written once per job id, rounds and revision: the same file is the same manifest). */
  manifestFile(jobId: string, rounds: number, revision = 1, advertiseMs = 20_000, initialWeightsSha256 = this.initialSha): string {
    const now = Date.now();
    const path = join(this.root, `${jobId}-n${rounds}-r${revision}.json`);
    if (existsSync(path)) return path;
    writeFileSync(
      path,
      JSON.stringify({
        version: 1,
        jobId,
        revision,
        rounds,
        round: { dim: this.dim, cohort: this.clients, clip: 2048, bits: 24 },
        deadlines: { advertiseMs, shareMs: 20_000, maskedMs: 120_000, consistencyMs: 20_000, unmaskMs: 20_000 },
        model: { ...this.spec, initialWeightsSha256 },
        training: { ...DIGITS_TRAINING, epochs: 1 },
        issuedAt: new Date(now - 60_000).toISOString(),
        expiresAt: new Date(now + 3_600_000).toISOString(),
      }),
    );
    return path;
  }

  launch = (manifest: string, wait: boolean, weights = this.weightsPath): CliRun =>
    this.admin('round', 'launch', '--manifest', manifest, '--weights', weights, '--gather', '60s', ...(wait ? ['--wait'] : []));

  /** Follows a job until it ends (after a restart: the resumed job) and returns its final status. */
  watchToEnd(jobId: string): TrainingStatus {
    return cliJson(this.admin('round', 'status', jobId, '--watch', '--interval', '500ms')) as TrainingStatus;
  }

  /** The model index the coordinator exports beside the job history. */
  exportedIndex(dir: string): { version: number; roundIndex?: number; sha256: string }[] {
    return (JSON.parse(readFileSync(join(this.coordDir, 'models', dir, 'index.json'), 'utf8')) as { versions: { version: number; roundIndex?: number; sha256: string }[] }).versions;
  }
}
