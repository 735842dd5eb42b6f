/**
 * `aegis demo` end to end: the built CLI (dist/) in a child process — a coordinator on loopback
 * TLS, clients in client processes training with tfjs on real digits, FedAvg over secure
 * aggregation — on small shards so it runs in seconds. Checks the JSON figures and the files it
 * writes (chart, tfjs model, manifest).
 */
import { describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTfjsModel, weightsSha256 } from '../../shared/model/tfjs.js';

const cli = fileURLToPath(new URL('../../dist/bin/aegis.js', import.meta.url));

function aegis(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  if (!existsSync(cli)) throw new Error('dist/ is missing: run "npm run build" first');
  return new Promise((resolve) => {
    // Only a guard against a hung process, below jest's 10-minute limit so the run's output is
    // still reported: a busy machine can take minutes over the demo, and that is not a failure.
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 540_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

describe('aegis demo', () => {
  test('--json: 3 rounds on small shards learn well above chance; chart, model and manifest are written', async () => {
    const out = await mkdtemp(join(tmpdir(), 'aegis-demo-'));
    const r = await aegis('demo', '--clients', '4', '--rounds', '3', '--per-digit', '60', '--out', out, '--json');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const j = JSON.parse(lines[0]!) as {
      ok: boolean;
      per_round: { model_version: number; round_number: number; clients: number; accuracy: number; loss: number }[];
      initial: { accuracy: number; loss: number };
      final: { accuracy: number; loss: number };
      chart: string;
      model_dir: string;
      model_sha256: string;
      test_examples: number;
    };
    expect(j.ok).toBe(true);
    // A job without --dp reports no privacy figures.
    expect(j).not.toHaveProperty('dp');
    expect(j.per_round.map((x) => x.model_version)).toEqual([1, 2, 3]);
    // Rounds are numbered from 1; an aborted round also takes a number, so a number is never below its version.
    expect(j.per_round.every((x) => x.round_number >= x.model_version)).toBe(true);
    expect(j.final.accuracy).toBeGreaterThan(0.5); // chance is 0.1
    expect(j.final.accuracy).toBeGreaterThan(j.initial.accuracy + 0.3);
    expect(j.final.loss).toBeLessThan(j.initial.loss);
    // Progress went to stderr: rounds and phases.
    expect(r.stderr).toMatch(/round 1 · 0\/3 completed · [a-z-]+ · \d+\/4 clients done/);
    expect(r.stderr).toMatch(/round \d+ completed \(model version 3 of 3\): test accuracy/);
    // The chart has one point per round plus the initial model.
    const svg = await readFile(j.chart, 'utf8');
    expect(svg.startsWith('<?xml')).toBe(true);
    expect(svg.match(/class="accuracy-point"/g)).toHaveLength(4);
    // The saved tfjs model is the final global model.
    const saved = await loadTfjsModel(j.model_dir);
    expect(weightsSha256(saved.weights)).toBe(j.model_sha256);
    const manifest = await readFile(join(out, 'manifest.json'));
    expect(JSON.parse(manifest.toString()).model.initialWeightsSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(createHash('sha256').update(await readFile(join(j.model_dir, 'weights.bin'))).digest('hex')).toBe(j.model_sha256);
  });

  test('bad flags are refused with a clear error and nothing runs', async () => {
    const r = await aegis('demo', '--clients', '2');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/clients/);
  });
});
