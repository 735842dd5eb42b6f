/**
 * `aegis demo --trainer`: the built CLI (dist/) with an external trainer process in every client
 * (examples/numpy-logreg or examples/pytorch-digits on /usr/bin/python3) and the coordinator checking each model with the
 * same script (--evaluator-cmd): one round on small shards prints one valid JSON object whose
 * accuracy is the coordinator evaluator's. A trainer that is not one of the three, or a --python
 * that is not there, is a usage error naming the flag (exit 2) before anything starts.
 */
import { describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../../dist/bin/aegis.js', import.meta.url));

function aegis(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  if (!existsSync(cli)) throw new Error('dist/ is missing: run "npm run build" first');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

interface DemoJson {
  ok: boolean;
  trainer: string;
  parameters: number;
  initial: { accuracy: number; loss: number };
  final: { accuracy: number; loss: number };
  per_round: { model_version: number; accuracy: number }[];
  model_dir: string;
}

describe('aegis demo --trainer', () => {
  test('numpy --rounds 1 --json: one round with the NumPy trainer process; the final accuracy is the coordinator evaluator’s', async () => {
    const out = await mkdtemp(join(tmpdir(), 'aegis-demo-numpy-'));
    const r = await aegis('demo', '--trainer', 'numpy', '--clients', '3', '--rounds', '1', '--per-digit', '60', '--out', out, '--json');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const j = JSON.parse(lines[0]!) as DemoJson;
    expect(j).toMatchObject({ ok: true, trainer: 'numpy', parameters: 7850 });
    expect(j.per_round.map((x) => x.model_version)).toEqual([1]);
    expect(j.final.accuracy).toBe(j.per_round[0]!.accuracy);
    expect(j.final.accuracy).toBeGreaterThan(0.3); // chance is 0.1
    expect(j.final.accuracy).toBeGreaterThan(j.initial.accuracy);
    expect(existsSync(join(j.model_dir, 'model.safetensors'))).toBe(true);
    expect(r.stderr).toMatch(/trainer: \/usr\/bin\/python3 \S+numpy-logreg\/trainer\.py/);
  });

  test('pytorch --rounds 1 --json: one round with the PyTorch CNN in every client, checked by the same script as evaluator', async () => {
    const out = await mkdtemp(join(tmpdir(), 'aegis-demo-pytorch-'));
    const r = await aegis('demo', '--trainer', 'pytorch', '--clients', '3', '--rounds', '1', '--per-digit', '60', '--out', out, '--json');
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout.trim()) as DemoJson;
    expect(j).toMatchObject({ ok: true, trainer: 'pytorch', parameters: 9098 });
    expect(j.per_round.map((x) => x.model_version)).toEqual([1]);
    expect(j.final.accuracy).toBe(j.per_round[0]!.accuracy);
    expect(j.final.accuracy).toBeGreaterThan(j.initial.accuracy);
    expect(existsSync(join(j.model_dir, 'model.safetensors'))).toBe(true);
    expect(r.stderr).toMatch(/trainer: \/usr\/bin\/python3 \S+pytorch-digits\/train\.py/);
  });

  test('--trainer nonsense exits 2 naming the flag and the trainers (with --json, as a JSON error on stdout)', async () => {
    const plain = await aegis('demo', '--trainer', 'nonsense');
    expect(plain.status).toBe(2);
    expect(plain.stderr).toMatch(/--trainer must be one of tfjs, pytorch, numpy/);
    const json = await aegis('demo', '--trainer', 'nonsense', '--json');
    expect(json.status).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, error: { code: 'invalid-argument', message: expect.stringMatching(/--trainer must be one of tfjs, pytorch, numpy/) } });
  });

  test('--python that is not an executable file exits 2 naming it, before any coordinator starts', async () => {
    const r = await aegis('demo', '--trainer', 'pytorch', '--python', '/nonexistent/python3');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--python \/nonexistent\/python3 is not an executable file/);
    expect(r.stderr).not.toMatch(/coordinator on/);
  });
});
