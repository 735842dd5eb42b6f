/**
 * `aegis demo --dp` end to end: the built CLI (dist/) in a child process, the digits job as a DP
 * job — the coordinator on loopback TLS, clients in client processes encoding their updates
 * with the distributed discrete Gaussian mechanism. Checks that the result carries the job's ε
 * as the accountant computes it from the manifest's own `dp` section, beside the accuracy, and
 * that the DP options are refused without --dp.
 */
import { describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dpEpsilonAfter, type DpManifestView } from '../../shared/protocol/dp-manifest.js';

const cli = fileURLToPath(new URL('../../dist/bin/aegis.js', import.meta.url));

function aegis(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  if (!existsSync(cli)) throw new Error('dist/ is missing: run "npm run build" first');
  return new Promise((resolve) => {
    // The kill is a safety net for a hung child, not a limit the test asserts.
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 540_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

interface DemoJson {
  ok: boolean;
  rounds: number;
  final: { accuracy: number; loss: number };
  per_round: { accuracy: number }[];
  dp?: { mechanism: string; epsilon: number; delta: number; noise_multiplier: number; clip: number; min_clients: number; max_clients: number; bits: number; rounds: number };
}

describe('aegis demo --dp', () => {
  test('--json carries the job’s ε from the accountant for its manifest, beside the accuracy', async () => {
    const out = await mkdtemp(join(tmpdir(), 'aegis-demo-dp-'));
    const r = await aegis('demo', '--dp', '--epsilon', '6', '--clip', '0.5', '--clients', '4', '--rounds', '2', '--per-digit', '40', '--out', out, '--json');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const j = JSON.parse(lines[0]!) as DemoJson;
    expect(j.ok).toBe(true);
    expect(j.per_round).toHaveLength(2);
    expect(j.final.accuracy).toBeGreaterThanOrEqual(0);
    expect(j.final.accuracy).toBeLessThanOrEqual(1);
    expect(j.final.accuracy).toBe(j.per_round.at(-1)!.accuracy);

    // The manifest the job ran with has the calibrated dp section; ε is the accountant's for it.
    const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as DpManifestView & { dp: { epsilon: number; minClients: number; maxClients: number; clip: number; delta: number } };
    expect(manifest.dp).toBeDefined();
    const accounted = dpEpsilonAfter(manifest, manifest.rounds);
    expect(j.dp).toBeDefined();
    expect(j.dp!.epsilon).toBeCloseTo(accounted, 9);
    expect(j.dp!.epsilon).toBeLessThanOrEqual(6);
    expect(j.dp!.epsilon).toBeGreaterThan(5.9); // calibrated to the target, not far below it
    expect(j.dp!.delta).toBe(1e-5);
    expect(j.dp!.clip).toBe(0.5);
    expect(j.dp!.rounds).toBe(2);
    expect(j.dp!.noise_multiplier).toBeGreaterThan(0);
    // n_min is the round's threshold (the fewest survivors a round completes with), n_max the cohort.
    expect(j.dp!.min_clients).toBe(manifest.round.threshold);
    expect(j.dp!.max_clients).toBe(4);
    expect(manifest.dp.minClients).toBe(j.dp!.min_clients);
    // Progress names the privacy the job runs at.
    expect(r.stderr).toMatch(/differential privacy: \(ε = [56]\.\d{3}, δ = 0\.00001\) for the whole job/);
  });

  test('the DP options are refused without --dp (exit 2, the flag named), before anything runs', async () => {
    const r = await aegis('demo', '--epsilon', '8');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--epsilon <e>' needs --dp/);
  });
});
