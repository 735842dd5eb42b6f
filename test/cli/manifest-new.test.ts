/**
 * `aegis manifest new` from the command line (dist/): a plain or a training manifest that parses,
 * with the cohort, rounds and validity asked for — never a pasted date — and usage errors that
 * name the flag (exit 2, nothing written).
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseManifest } from '../../shared/protocol/manifest.js';
import { dpEpsilonAfter } from '../../shared/protocol/dp-manifest.js';
import { CLI, cliJson, runCli } from '../support/cli.js';

const env = { ...process.env, AEGIS_LOG_LEVEL: 'warn' };
let root: string;

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-manifest-new-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const DAY = 86_400_000;

describe('aegis manifest new', () => {
  test('--kind plain: a plain job of the cohort, rounds, size and validity asked for; it parses', () => {
    const out = join(root, 'sum.json');
    const before = Date.now();
    const r = cliJson(runCli(['manifest', 'new', '--kind', 'plain', '--out', out, '--job', 'sums', '--clients', '7', '--rounds', '3', '--dim', '5', '--valid-for', '30d', '--json'], env));
    expect(r).toMatchObject({ manifest: out, kind: 'plain', job_id: 'sums', dim: 5, clients: 7, threshold: 4, rounds: 3 });
    const { manifest } = parseManifest(new Uint8Array(readFileSync(out)));
    expect(manifest).toMatchObject({ jobId: 'sums', rounds: 3, round: { dim: 5, cohort: 7 } });
    expect(manifest.model).toBeUndefined();
    expect(manifest.training).toBeUndefined();
    const expires = Date.parse(manifest.expiresAt);
    expect(expires).toBeGreaterThanOrEqual(before + 30 * DAY - 1000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 30 * DAY + 1000);
    expect(existsSync(join(root, 'sum.weights.bin'))).toBe(false);
  });

  test('the default (training): the digits model with its initial weights, 10 rounds, valid 7 days; the text says how many clients a round needs (the threshold the manifest carries) and how to sign', () => {
    const out = join(root, 'digits.json');
    const r = runCli(['manifest', 'new', '--out', out, '--clients', '4'], env, 120_000);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/training job digits, \d+ parameters, 10 rounds, cohort 4: rounds start with at least 2 clients connected; valid until \S+\) and .*digits\.weights\.bin; edit it, then: aegis manifest sign/);
    const { manifest } = parseManifest(new Uint8Array(readFileSync(out)));
    expect(manifest.round.threshold).toBe(2);
    expect(manifest.dp).toBeUndefined();
    expect(manifest.rounds).toBe(10);
    expect(manifest.model?.initialWeightsSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(statSync(join(root, 'digits.weights.bin')).size).toBe(4 * manifest.round.dim);
    const days = (Date.parse(manifest.expiresAt) - Date.parse(manifest.issuedAt)) / DAY;
    expect(days).toBe(7);
  });

  test('--dp: a dp section calibrated for the whole job (ε, δ, clip asked for; noise sized for the threshold, wrap bound for the cohort) that parses, and inspect shows the ε recomputed', () => {
    const out = join(root, 'dp.json');
    const r = cliJson(runCli(['manifest', 'new', '--out', out, '--clients', '10', '--rounds', '20', '--dp', '--epsilon', '4', '--delta', '1e-6', '--dp-clip', '2', '--json'], env, 120_000));
    const { manifest } = parseManifest(new Uint8Array(readFileSync(out)));
    const dp = manifest.dp!;
    expect(dp).toMatchObject({ mechanism: 'distributed-discrete-gaussian', delta: 1e-6, clip: 2, minClients: manifest.round.threshold, maxClients: 10 });
    expect(dp.epsilon).toBeLessThanOrEqual(4);
    expect(dpEpsilonAfter(manifest, 20)).toBeCloseTo(dp.epsilon, 9);
    expect(r.dp).toEqual({ epsilon: dp.epsilon, delta: 1e-6, noise_multiplier: dp.noiseMultiplier, clip: 2, min_clients: manifest.round.threshold, bits: dp.bits });
    const plain = cliJson(runCli(['manifest', 'new', '--kind', 'plain', '--out', join(root, 'nodp.json'), '--json'], env));
    expect(plain.dp).toBeNull();
  });

  test('--dp on a plain job, or --epsilon / --delta / --dp-clip without --dp, exit 2 naming the flag; nothing is written', () => {
    const cases: [string[], RegExp][] = [
      [['--kind', 'plain', '--dp'], /option '--dp' needs --kind training/],
      [['--epsilon', '3'], /option '--epsilon' needs --dp/],
      [['--delta', '1e-6'], /option '--delta' needs --dp/],
      [['--dp-clip', '2'], /option '--dp-clip' needs --dp/],
      [['--dp', '--epsilon', '0'], /--epsilon must be a number/],
    ];
    for (const [args, message] of cases) {
      const out = join(root, `bad-dp-${args.join('')}.json`);
      const r = runCli(['manifest', 'new', '--out', out, ...args], env);
      expect({ args, status: r.status }).toEqual({ args, status: 2 });
      expect(r.stderr).toMatch(message);
      expect(existsSync(out)).toBe(false);
    }
  });

  test('bad values name the flag and exit 2; nothing is written', () => {
    for (const [flag, value, message] of [
      ['--kind', 'sum', /--kind must be one of training, plain/],
      ['--valid-for', 'forever', /--valid-for must be a duration/],
      ['--rounds', '0', /--rounds must be an integer in 1\.\.10000/],
      ['--dim', 'x', /--dim must be an integer/],
    ] as const) {
      const out = join(root, `bad${flag}.json`);
      const r = runCli(['manifest', 'new', '--kind', 'plain', '--out', out, flag, value], env);
      expect({ flag, status: r.status }).toEqual({ flag, status: 2 });
      expect(r.stderr).toMatch(message);
      expect(existsSync(out)).toBe(false);
    }
  });
});
