/**
 * The contribution ledger from the command line (dist/): `client enroll` starts it, `client run`
 * records a round in it, `client ledger` shows it (no input value), and a ledger that is
 * altered, or missing in a dir that took part in rounds before, stops `client run` and `client
 * ledger` with exit 2 and the file named — until the operator restores it or asks for a new one
 * (`--new-ledger`).
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { CLI, cliJson, runCli, runCliAsync, type CliRun } from '../support/cli.js';
import { manifest, startCoordinator, waitFor } from '../support/cluster.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'ledger cli test passphrase', AEGIS_LOG_LEVEL: 'warn' };
const N = 3;
const aegis = (args: string[]): CliRun => runCli(args, env, 60_000);
const aegisAsync = (args: string[]): Promise<CliRun> => runCliAsync(args, env);

let root: string;
let c: Coordinator;
const children: ChildProcess[] = [];
const dirOf = (i: number): string => join(root, `dev-${i}`);

const stderrOf = new Map<ChildProcess, string[]>();
function run(i: number, extra: string[] = []): ChildProcess {
  const child = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', dirOf(i), '--input', join(root, `update-${i}.json`), '--allow-unsigned', ...extra], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const err: string[] = [];
  stderrOf.set(child, err);
  child.stderr!.setEncoding('utf8').on('data', (d: string) => err.push(d));
  children.push(child);
  return child;
}
const exited = (child: ChildProcess): Promise<number | null> => new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (code) => r(code))));

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-ledger-cli-'));
  c = await startCoordinator();
  writeFileSync(join(root, 'ca.pem'), c.ca.certificatePem);
  for (let i = 0; i < N; i++) {
    const { token } = await c.createInvite();
    const r = await aegisAsync(['client', 'enroll', '--coordinator', c.address, '--enroll-address', c.enrollAddress, '--token', token, '--ca', join(root, 'ca.pem'), '--data-dir', dirOf(i), '--id', `dev-${i}`, '--kek', 'passphrase', '--json']);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    writeFileSync(join(root, `update-${i}.json`), JSON.stringify({ values: [i + 0.25, -0.5, 0.125, 0], weight: 1 }));
  }
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await c?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('aegis client ledger, and client run with its ledger', () => {
  test('enroll starts an empty ledger; a round run by client run shows in client ledger, without any input value', async () => {
    for (let i = 0; i < N; i++) expect(existsSync(join(dirOf(i), 'ledger.json'))).toBe(true);
    expect(cliJson(aegis(['client', 'ledger', '--data-dir', dirOf(0), '--json']))).toEqual({ ok: true, data_dir: dirOf(0), jobs: [], inputs: 0 });

    const runners = Array.from({ length: N }, (_, i) => run(i));
    await waitFor(() => c.connectedClients().length === N || runners.some((r) => r.exitCode !== null), 100_000, 'three clients');
    expect(runners.map((r) => r.exitCode)).toEqual([null, null, null]);
    const job = manifest({ jobId: 'ledger-cli', rounds: 2, round: { dim: 4, cohort: N, clip: 2, bits: 16 } });
    const hash = (await c.launch(job)).manifestHash;
    expect((await c.outcomeOf('ledger-cli', 0)).ok).toBe(true);
    for (const child of runners) child.kill('SIGTERM');
    await Promise.all(runners.map(exited));

    const shown = aegis(['client', 'ledger', '--data-dir', dirOf(1), '--json']);
    expect(shown.status).toBe(0);
    const j = cliJson(shown);
    expect(j.inputs).toBe(1);
    expect(j.jobs).toEqual([
      expect.objectContaining({
        job_id: 'ledger-cli',
        manifest_sha256: Buffer.from(hash).toString('hex'),
        kind: 'plain',
        rounds: 2,
        joined_round_indexes: [[0, 0]],
        contributions: 1,
        recent: [expect.objectContaining({ round_index: 0, round_number: 1, model_version: null, joined_at: expect.any(String), contributed_at: expect.any(String), input_id: expect.stringMatching(/^[0-9a-f]{12}$/) })],
      }),
    ]);
    // The input's values appear nowhere: not in the output, not in the file.
    for (const text of [shown.stdout, aegis(['client', 'ledger', '--data-dir', dirOf(1)]).stdout, readFileSync(join(dirOf(1), 'ledger.json'), 'utf8')]) expect(text).not.toMatch(/1\.25|0\.125/);
    expect(aegis(['client', 'ledger', '--data-dir', dirOf(1)]).stdout).toMatch(/ledger-cli {2}plain {2}manifest [0-9a-f]{64}\n {2}rounds joined: 1 of 2; contributed to 1\n {4}round 1 {2}joined /);
  });

  test('an altered ledger stops client run and client ledger with exit 2, naming the file', async () => {
    const path = join(dirOf(2), 'ledger.json');
    const good = readFileSync(path);
    const bad = Buffer.from(good);
    bad[good.indexOf('"joined"') + 12]! ^= 0x01;
    writeFileSync(path, bad);
    for (const r of [aegis(['client', 'ledger', '--data-dir', dirOf(2)]), await aegisAsync(['client', 'run', '--data-dir', dirOf(2), '--input', join(root, 'update-2.json'), '--allow-unsigned'])]) {
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(path);
      expect(r.stderr).toMatch(/\[(bad-signature|malformed)\]/);
    }
    // Truncated: the same.
    writeFileSync(path, good.subarray(0, 30));
    expect(aegis(['client', 'ledger', '--data-dir', dirOf(2)]).status).toBe(2);
    writeFileSync(path, good);
    expect(aegis(['client', 'ledger', '--data-dir', dirOf(2)]).status).toBe(0);
  });

  test('a missing ledger in a dir that took part in rounds is refused (exit 2, --new-ledger named) until the operator asks for a new one', async () => {
    const path = join(dirOf(0), 'ledger.json');
    rmSync(path);
    const r = await aegisAsync(['client', 'run', '--data-dir', dirOf(0), '--input', join(root, 'update-0.json'), '--allow-unsigned']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(path);
    expect(r.stderr).toContain('--new-ledger');
    expect(r.stderr).toContain('audit.log');
    expect(existsSync(path)).toBe(false);
    const shown = aegis(['client', 'ledger', '--data-dir', dirOf(0), '--json']);
    expect(shown.status).toBe(2);
    expect(cliJson(shown).error.code).toBe('not-found');

    // The new ledger is written as the client starts; a client that stops first fails the test
    // with its stderr, a slow start only waits (the bound is the test's own).
    const fresh = run(0, ['--new-ledger']);
    await waitFor(() => existsSync(path) || fresh.exitCode !== null, 170_000, 'a new ledger');
    expect({ exited: fresh.exitCode, stderr: fresh.exitCode === null ? '' : stderrOf.get(fresh)!.join('') }).toEqual({ exited: null, stderr: '' });
    expect(existsSync(path)).toBe(true);
    fresh.kill('SIGTERM');
    await exited(fresh);
    expect(cliJson(aegis(['client', 'ledger', '--data-dir', dirOf(0), '--json'])).jobs).toEqual([]);
  });

  test('an identity key rotation in client run re-seals the ledger: it opens under the new identity, with its rounds', async () => {
    const before = cliJson(aegis(['client', 'ledger', '--data-dir', dirOf(1), '--json'])).jobs;
    expect(before).toHaveLength(1);
    const identityVersion = (): number | undefined => {
      try {
        return (JSON.parse(readFileSync(join(dirOf(1), 'keys.json'), 'utf8')) as { keys: { identity?: { version: number } } }).keys.identity?.version;
      } catch {
        return undefined;
      }
    };
    const child = run(1, ['--rotation-signing-days', '0.000001']);
    const seals = (): number => (JSON.parse(readFileSync(join(dirOf(1), 'ledger.json'), 'utf8')) as { seals: unknown[] }).seals.length;
    // Rotated, and the ledger sealed for the new identity alone (both seals only in between).
    await waitFor(() => (identityVersion() === 2 && seals() === 1) || child.exitCode !== null, 170_000, 'the identity key to rotate').catch((e: unknown) => {
      throw new Error(`${String(e)}; client stderr: ${stderrOf.get(child)!.join('').slice(-2000)}`);
    });
    expect({ exited: child.exitCode, stderr: child.exitCode === null ? '' : stderrOf.get(child)!.join('').slice(-2000) }).toEqual({ exited: null, stderr: '' });
    child.kill('SIGTERM');
    await exited(child);
    const shown = aegis(['client', 'ledger', '--data-dir', dirOf(1), '--json']);
    expect(shown.status).toBe(0);
    expect(cliJson(shown).jobs).toEqual(before);
  });
});
