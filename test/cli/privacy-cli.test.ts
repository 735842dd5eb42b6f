/**
 * `aegis client privacy status` from the command line (dist/): the spending recorded in a real
 * enrolled data dir's sealed ledger, in total, per publisher and per job with first and last
 * round, ε at the budget's δ (else --delta), and the budget from --privacy-budget or a client
 * run --config file; a ledger whose charge was lowered is refused (exit 2, the file named); and
 * the usage errors of --privacy-budget (status and client run) and --delta: exit 2 naming the flag.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadClient } from '../../client/agent/data-dir.js';
import { openLedger } from '../../client/admission/ledger-file.js';
import { epsilonOf, rdpOnGrid, totalRdp } from '../../client/admission/privacy-budget.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { gaussianRdp } from '../../shared/dp/accountant.js';
import type { RoundRef } from '../../shared/protocol/messages.js';
import { CLI, cliJson, runCli, runCliAsync, type CliRun } from '../support/cli.js';
import { startCoordinator } from '../support/cluster.js';

const PASS = 'privacy cli test passphrase';
const env = { ...process.env, AEGIS_PASSPHRASE: PASS, AEGIS_LOG_LEVEL: 'warn' };
const aegis = (args: string[]): CliRun => runCli(args, env, 60_000);
const H1 = '1'.repeat(64);
const H2 = '2'.repeat(64);
const COST = rdpOnGrid((a) => gaussianRdp(3, a));
const epsAfter = (n: number, delta: number): number => epsilonOf(totalRdp(Array.from({ length: n }, () => ({ rdp: COST }))), delta).epsilon;

let root: string;
let dir: string;
let c: Coordinator;

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-privacy-cli-'));
  dir = join(root, 'dev');
  c = await startCoordinator();
  writeFileSync(join(root, 'ca.pem'), c.ca.certificatePem);
  const { token } = await c.createInvite();
  const r = await runCliAsync(['client', 'enroll', '--coordinator', c.address, '--enroll-address', c.enrollAddress, '--token', token, '--ca', join(root, 'ca.pem'), '--data-dir', dir, '--id', 'dev-p', '--kek', 'passphrase', '--json'], env);
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  // Three DP rounds charged as client run charges them: joined, then contributed.
  const { ledger } = await openLedger(dir, (await loadClient(dir, PASS)).identity.seed, { missing: 'refuse' });
  const ref = (h: string, i: number): RoundRef => ({ manifestHash: new Uint8Array(Buffer.from(h, 'hex')), roundIndex: i });
  for (const [h, i, publisher, jobId] of [[H1, 0, 'pub-a', 'job-a'], [H1, 1, 'pub-a', 'job-a'], [H2, 0, 'pub-b', 'job-b']] as const) {
    await ledger.join({ manifestSha256: h, roundIndex: i, kind: 'training', jobId, rounds: 10, modelVersion: i, charge: { publisher, rdp: [...COST] } });
    await ledger.contribute(ref(h, i), { reuse: false });
  }
});

afterAll(async () => {
  await c?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('aegis client privacy status', () => {
  test('--json: the total, per publisher and per job, with times, ε at --delta and no budget', () => {
    const r = aegis(['client', 'privacy', 'status', '--data-dir', dir, '--delta', '1e-6', '--json']);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    const j = cliJson(r);
    expect(j).toMatchObject({ ok: true, data_dir: dir, delta: 1e-6, limit: null, remaining_epsilon: null });
    expect(j.total).toEqual({ rounds: 3, epsilon: epsAfter(3, 1e-6), order: expect.any(Number), first_at: expect.any(String), last_at: expect.any(String) });
    expect(j.total.first_at <= j.total.last_at).toBe(true);
    expect(j.publishers).toEqual([expect.objectContaining({ publisher: 'pub-a', rounds: 2, epsilon: epsAfter(2, 1e-6) }), expect.objectContaining({ publisher: 'pub-b', rounds: 1, epsilon: epsAfter(1, 1e-6) })]);
    expect(j.jobs).toEqual([
      expect.objectContaining({ publisher: 'pub-a', job_id: 'job-a', manifest_sha256: H1, round_indexes: [0, 1], rounds: 2 }),
      expect.objectContaining({ publisher: 'pub-b', job_id: 'job-b', manifest_sha256: H2, round_indexes: [0], rounds: 1 }),
    ]);
  });

  test('with a budget (the flag, or privacyBudget in a client run --config file): ε at its δ and what remains; as text too', () => {
    const j = cliJson(aegis(['client', 'privacy', 'status', '--data-dir', dir, '--privacy-budget', 'epsilon=20,delta=1e-5', '--json']));
    expect(j).toMatchObject({ delta: 1e-5, limit: { epsilon: 20, delta: 1e-5 } });
    expect(j.total.epsilon).toBe(epsAfter(3, 1e-5));
    expect(j.remaining_epsilon).toBeCloseTo(20 - epsAfter(3, 1e-5), 12);
    const config = join(root, 'run.json');
    writeFileSync(config, JSON.stringify({ privacyBudget: 'epsilon=30,delta=1e-4' }));
    expect(cliJson(aegis(['client', 'privacy', 'status', '--data-dir', dir, '--config', config, '--json'])).limit).toEqual({ epsilon: 30, delta: 1e-4 });
    const text = aegis(['client', 'privacy', 'status', '--data-dir', dir, '--privacy-budget', 'epsilon=20,delta=1e-5']);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/^spent: epsilon [0-9.]+ at delta 0\.00001 over 3 DP round\(s\)/);
    expect(text.stdout).toContain('budget: epsilon 20 at delta 0.00001; remaining epsilon');
    expect(text.stdout).toMatch(/per publisher:\n {2}pub-a {2}epsilon/);
    expect(text.stdout).toMatch(/per job:\n {2}job-a {2}manifest 111111111111…/);
  });

  test('bad --privacy-budget, --delta or config budget: exit 2 naming the flag; client run too', async () => {
    for (const [args, flag] of [
      [['--privacy-budget', 'epsilon=8'], '--privacy-budget'],
      [['--privacy-budget', 'epsilon=8,delta=2'], '--privacy-budget'],
      [['--privacy-budget', 'eps=8,delta=1e-5'], '--privacy-budget'],
      [['--delta', '0'], '--delta'],
      [['--delta', 'abc'], '--delta'],
    ] as const) {
      const r = aegis(['client', 'privacy', 'status', '--data-dir', dir, ...args]);
      expect({ args, status: r.status }).toEqual({ args, status: 2 });
      expect(r.stderr).toContain(flag);
      expect(r.stderr).toContain('[invalid-argument]');
    }
    const config = join(root, 'bad.json');
    writeFileSync(config, JSON.stringify({ privacyBudget: 'epsilon=-1,delta=1e-5' }));
    const rc = aegis(['client', 'privacy', 'status', '--data-dir', dir, '--config', config]);
    expect(rc.status).toBe(2);
    expect(rc.stderr).toContain('privacyBudget');
    const input = join(root, 'update.json');
    writeFileSync(input, JSON.stringify({ values: [1, 2], weight: 1 }));
    const run = await runCliAsync(['client', 'run', '--data-dir', dir, '--input', input, '--allow-unsigned', '--privacy-budget', 'epsilon=8,delta=1e-5,x=1'], env);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('--privacy-budget');
  });

  test('a charge lowered in the ledger is refused: exit 2, the file named', () => {
    const path = join(dir, 'ledger.json');
    const good = readFileSync(path, 'utf8');
    const file = JSON.parse(good) as { ledger: { privacy: { rdp: number[] }[] } };
    file.ledger.privacy[0]!.rdp = file.ledger.privacy[0]!.rdp.map((v) => v / 2);
    writeFileSync(path, JSON.stringify(file));
    const r = aegis(['client', 'privacy', 'status', '--data-dir', dir, '--json']);
    expect(r.status).toBe(2);
    expect(cliJson(r).error.code).toBe('bad-signature');
    expect(cliJson(r).error.message).toContain(path);
    writeFileSync(path, good);
    expect(aegis(['client', 'privacy', 'status', '--data-dir', dir]).status).toBe(0);
  });
});
