/**
 * `npm run bench -- secagg`: whole simulated rounds (all clients in worker threads and the
 * coordinator), each in a child process of its own so peak RSS is the round's alone.
 *
 * Grid: n in {100, 500, 1000} x m in {10^5, 10^6} x {SecAgg+ with k = 2·ceil(log2 n) + 1,
 * classic SecAgg (k = n - 1) for n <= 500} x dropout {0, 10%}. A configuration whose estimated
 * time exceeds the budget (default 300 s) is skipped and listed as such.
 * Baselines measured in the same run: raw AES-256-CTR keystream, mask expansion, plain sums.
 */
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { measureBaselines, type Baselines } from './baseline.js';
import type { SimulateResult } from './sim/simulate.js';
import { bytesCells, BYTES_HEADERS, fmt, table } from './table.js';

export interface SecaggConfig {
  n: number;
  m: number;
  mode: 'secagg+' | 'secagg';
  k: number;
  dropout: number;
}

export interface SecaggRow extends SecaggConfig {
  skipped?: string;
  estimate_s: number;
  result?: SimulateResult;
  /** Keystream bytes per second of the whole round, as a fraction of one thread's raw AES-CTR. */
  prg_ratio?: number;
}

/** SecAgg+ degree k ≈ 2·log2(n): 2·ceil(log2 n) + 1 (15 for n = 100, 19 for 500, 21 for 1000). */
export const secaggPlusDegree = (n: number): number => Math.min(n - 1, 2 * Math.ceil(Math.log2(n)) + 1);

export function grid(quick: boolean): SecaggConfig[] {
  const out: SecaggConfig[] = [];
  const ns = quick ? [100, 500] : [100, 500, 1000];
  const ms = quick ? [100_000] : [100_000, 1_000_000];
  for (const n of ns)
    for (const m of ms)
      for (const mode of ['secagg+', 'secagg'] as const) {
        if (mode === 'secagg' && n > 500) continue;
        for (const dropout of [0, 0.1]) out.push({ n, m, mode, k: mode === 'secagg' ? n - 1 : secaggPlusDegree(n), dropout });
      }
  return out;
}

/**
 * Estimated seconds, calibrated on this 2-core VM: the keystream the round generates (each
 * client expands k + 1 masks; the coordinator one per survivor and k per dropped client) at
 * ~45% of one thread's raw AES-CTR speed for the whole machine, plus each client's public-key
 * and Shamir work — 2k agreements, k + t signature checks, 2·k·t field products — spread over
 * the cores at ~70% efficiency.
 */
export function estimateSeconds(c: SecaggConfig, b: Baselines, cores: number): number {
  const words = c.m + 1;
  const t = Math.floor(c.k / 2) + 1;
  const keystream = (c.n * (c.k + 2) + c.n * c.dropout * c.k) * words * 4;
  const perClientMs = 2 * c.k * 0.04 + (c.k + t) * 0.15 + 2 * c.k * t * 0.0002 + 5;
  return keystream / (0.45 * b.aesCtrGBps * 1e9) + (c.n * perClientMs) / 1000 / (0.7 * Math.max(1, cores)) + 1;
}

export function runConfig(c: SecaggConfig, seed = 1): SimulateResult {
  const cli = fileURLToPath(new URL('../bin/aegis.js', import.meta.url));
  const args = [cli, 'simulate', '--json', '--clients', String(c.n), '--dim', String(c.m), '--neighbors', String(c.k), '--dropout', String(c.dropout), '--seed', String(seed)];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 24 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as SimulateResult;
  } catch {
    throw new Error(`simulate failed (exit ${r.status}): ${r.stderr.slice(-500)}`);
  }
}

export async function benchSecagg(opts: { json: boolean; quick: boolean; budgetSeconds: number }): Promise<void> {
  const cores = cpus().length;
  process.stderr.write('measuring baselines (raw AES-256-CTR, mask expansion, plain sums)...\n');
  const base = measureBaselines();
  const rows: SecaggRow[] = [];
  for (const c of grid(opts.quick)) {
    const estimate_s = estimateSeconds(c, base, cores);
    const label = `n=${c.n} m=${c.m} ${c.mode} k=${c.k} dropout=${c.dropout}`;
    if (estimate_s > opts.budgetSeconds) {
      process.stderr.write(`skip ${label}: estimated ${estimate_s.toFixed(0)} s > ${opts.budgetSeconds} s budget\n`);
      rows.push({ ...c, estimate_s, skipped: `estimated ${estimate_s.toFixed(0)} s exceeds the ${opts.budgetSeconds} s budget` });
      continue;
    }
    process.stderr.write(`run  ${label} (estimated ${estimate_s.toFixed(0)} s)...\n`);
    const result = runConfig(c);
    const seconds = result.timings_ms.total / 1000;
    rows.push({ ...c, estimate_s, result, prg_ratio: result.prg_bytes / seconds / (base.aesCtrGBps * 1e9) });
  }
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ bench: 'secagg', cores, baselines: base, rows })}\n`);
    return;
  }
  process.stdout.write(
    `Baselines (one thread): raw AES-256-CTR ${fmt(base.aesCtrGBps, 2)} GB/s; mask expansion ${fmt(base.expansionGBps, 2)} GB/s ` +
      `= ${fmt(base.expansionRatio * 100, 0)}% of raw (${base.simd ? 'WebAssembly SIMD' : 'JS loop'}); plain uint32 summation ${fmt(base.plainSumGBps, 2)} GB/s. Cores: ${cores}.\n\n`,
  );
  const headers = ['n', 'm', 'mode', 'k', 't', 'drop', 'client mean ms', 'client max ms', 'unmask ms', 'total ms', 'keystream GB', 'PRG GB/s', 'vs raw AES', 'peak RSS MB', ...BYTES_HEADERS, 'exact'];
  const body = rows.map((r) => {
    const res = r.result;
    if (!res) return [r.n, r.m, r.mode, r.k, '-', `${r.dropout * 100}%`, 'skipped', `(${r.skipped})`, '', '', '', '', '', '', ...BYTES_HEADERS.map(() => ''), ''];
    const gbps = res.prg_bytes / 1e9 / (res.timings_ms.total / 1000);
    return [r.n, r.m, r.mode, r.k, res.threshold, `${r.dropout * 100}%`, fmt(res.timings_ms.client_mean), fmt(res.timings_ms.client_max), fmt(res.timings_ms.server_unmask, 0), fmt(res.timings_ms.total, 0), fmt(res.prg_bytes / 1e9, 2), fmt(gbps, 2), `${fmt((r.prg_ratio ?? 0) * 100, 0)}%`, fmt(res.peak_rss_mb, 0), ...bytesCells(res), res.ok ? String(res.exact) : `aborted: ${res.reason}`];
  });
  process.stdout.write(`${table(headers, body)}\n`);
  process.stdout.write('\n"vs raw AES": keystream bytes the whole round generated per second, against one thread of raw AES-256-CTR measured above (the round uses every core).\n');
}
