/**
 * `aegis dp calibrate` on the built CLI (dist/, real processes): one JSON document with the
 * calibration, a table without --json, usage errors naming the flag with exit 2, and an
 * infeasible setting refused with its reason.
 */
import { beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync } from 'node:fs';
import { calibrate } from '../../shared/dp/calibrate.js';
import { CLI, cliJson, runCli } from '../support/cli.js';

const env = { ...process.env, AEGIS_LOG_LEVEL: 'warn' };
const common = ['--delta', '1e-5', '--rounds', '100', '--clients', '100', '--dim', '1000', '--clip', '1'];

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
});

describe('aegis dp calibrate', () => {
  test('--noise-multiplier --json prints the calibration the library computes', () => {
    const r = runCli(['dp', 'calibrate', '--noise-multiplier', '1', ...common, '--json'], env);
    expect(r.status).toBe(0);
    const j = cliJson(r);
    const expected = calibrate({ noiseMultiplier: 1, delta: 1e-5, rounds: 100, clients: 100, dim: 1000, clip: 1 });
    expect(j).toEqual({ ok: true, ...expected });
    for (const k of ['epsilon', 'delta', 'noise_multiplier', 'bits', 'gamma', 'sigma_per_client', 'beta']) expect(j).toHaveProperty(k);
  });

  test('--epsilon finds a noise multiplier meeting it; --bits and --max-clients are honoured', () => {
    const j = cliJson(runCli(['dp', 'calibrate', '--epsilon', '4', ...common, '--bits', '20', '--max-clients', '150', '--json'], env));
    expect(j.ok).toBe(true);
    expect(j.epsilon).toBeLessThanOrEqual(4);
    expect(j.bits).toBe(20);
    expect(j.max_clients).toBe(150);
  });

  test('without --json it prints a table for people', () => {
    const r = runCli(['dp', 'calibrate', '--noise-multiplier', '1', ...common], env);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^epsilon\s+96\.\d+ after 100 round\(s\)/m);
    expect(r.stdout).toMatch(/^bits\s+\d+$/m);
  });

  test('--assume-sampling-rate adds a labelled ε under honest sampling, which a target --epsilon then meets; the worst-case ε stays beside it', () => {
    const j = cliJson(runCli(['dp', 'calibrate', '--epsilon', '4', ...common, '--assume-sampling-rate', '0.1', '--json'], env));
    const expected = calibrate({ epsilon: 4, delta: 1e-5, rounds: 100, clients: 100, dim: 1000, clip: 1, assumeSamplingRate: 0.1 });
    expect(j).toEqual({ ok: true, ...expected });
    expect(j.assuming_sampling.rate).toBe(0.1);
    expect(j.assuming_sampling.epsilon).toBeLessThanOrEqual(4);
    expect(j.epsilon).toBeGreaterThan(4);
    const t = runCli(['dp', 'calibrate', '--epsilon', '4', ...common, '--assume-sampling-rate', '0.1'], env);
    expect(t.stdout).toMatch(/^epsilon IF sampled\s+[\d.]+ ASSUMING the coordinator samples each client with probability 0\.1 per round \(unverifiable: clients charge the epsilon above\)/m);
    const bad = runCli(['dp', 'calibrate', '--epsilon', '4', ...common, '--assume-sampling-rate', '0'], env);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--assume-sampling-rate');
  });

  test('a missing required flag exits 2 naming it', () => {
    const r = runCli(['dp', 'calibrate', '--noise-multiplier', '1', '--rounds', '100', '--clients', '100', '--dim', '1000', '--clip', '1'], env);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/required option '--delta <d>' not specified/);
  });

  test('neither or both of --noise-multiplier and --epsilon exits 2 naming both', () => {
    for (const args of [common, ['--noise-multiplier', '1', '--epsilon', '2', ...common]]) {
      const r = runCli(['dp', 'calibrate', ...args], env);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/--noise-multiplier <z>.*--epsilon <e>/);
    }
  });

  test('a value out of range exits 2 naming the flag, in JSON too', () => {
    const r = runCli(['dp', 'calibrate', '--noise-multiplier', '1', ...common.map((a) => (a === '1e-5' ? '1' : a))], env);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/option '--delta <d>' argument '1' is invalid/);
    const j = runCli(['dp', 'calibrate', '--noise-multiplier', '1', ...common, '--bits', '40', '--json'], env);
    expect(j.status).toBe(2);
    expect(cliJson(j).error).toMatchObject({ code: 'invalid-argument', message: expect.stringContaining("'--bits <b>'") });
  });

  test('an infeasible setting exits 2 with the reason', () => {
    const r = runCli(['dp', 'calibrate', '--noise-multiplier', '1', ...common.map((a) => (a === '100' ? '5000' : a)), '--bits', '12', '--json'], env);
    expect(r.status).toBe(2);
    expect(cliJson(r).error).toMatchObject({ code: 'invalid-argument', message: expect.stringMatching(/infeasible at 12 bits/) });
  });
});
