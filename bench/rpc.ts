/**
 * `npm run bench -- rpc`: one round over gRPC against the same round in process.
 *
 * For each size, in child processes of their own: `aegis simulate --transport local` (the
 * baseline, measured in the same run: coordinator and clients in one process and its worker
 * threads) and `aegis simulate --transport grpc` (a real coordinator on loopback gRPC, TLS 1.3
 * and mTLS, in the simulate process; the clients enrolled over the enrollment listener and run
 * as ClientRunners in client processes of their own). The grpc process hosts only the
 * coordinator, so its peak RSS is the coordinator's. Clients upload unpaced (every client sends
 * its masked vector as soon as it has it): the coordinator's upload gate (back-pressure, at most
 * a 96 MiB budget of vectors in flight) is what keeps its memory O(m). At the largest size the
 * grpc round also runs with client-side pacing (one upload in flight per client process). Each
 * size also measures the clients' second round over gRPC (`simulate --warm-up`): a job's later
 * rounds find channels open, tokens fetched and the certificates of earlier neighbours checked.
 *
 * Sizes: n = 100, m in {10^5, 10^6}, SecAgg+ with k = 2·ceil(log2 n) + 1 = 15 (as in the secagg
 * benchmark), no dropout (a dropout costs a phase deadline over gRPC, which would measure the
 * deadline, not the transport). `--quick`: n = 20, m in {10^4, 10^5}.
 */
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { secaggPlusDegree } from './secagg.js';
import type { SimulateResult } from './sim/simulate.js';
import { bytesCells, BYTES_HEADERS, fmt, table } from './table.js';

export interface RpcRun {
  n: number;
  m: number;
  k: number;
  transport: 'local' | 'grpc';
  /** grpc: masked-input uploads in flight per client process (0: unpaced). */
  uploads?: number;
  /** grpc: measure the clients' second round (`simulate --warm-up`). */
  warmUp?: boolean;
  result?: SimulateResult;
  error?: string;
  /** grpc round time / in-process round time, same n, m, k. */
  ratio?: number;
}

function run(r: RpcRun, seed = 1): RpcRun {
  const cli = fileURLToPath(new URL('../bin/aegis.js', import.meta.url));
  const args = [cli, 'simulate', '--json', '--transport', r.transport, '--clients', String(r.n), '--dim', String(r.m), '--neighbors', String(r.k), '--seed', String(seed)];
  if (r.uploads !== undefined) args.push('--uploads-in-flight', String(r.uploads));
  if (r.warmUp) args.push('--warm-up');
  const p = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'pipe'] });
  const line = p.stdout.trim().split('\n').pop() ?? '';
  const stderr = (): string => p.stderr.trim().split('\n').slice(-2).join(' / ');
  let parsed: SimulateResult | { ok: false; error: { code: string; message: string } };
  try {
    parsed = JSON.parse(line) as typeof parsed;
  } catch {
    return { ...r, error: `exit ${p.status}: ${stderr()}` };
  }
  // The command failed (its --json error object): a row that says so, not a result without timings.
  if ('error' in parsed) return { ...r, error: `${parsed.error.code}: ${parsed.error.message} (${stderr()})` };
  return { ...r, result: parsed };
}

export async function benchRpc(opts: { json: boolean; quick: boolean; budgetSeconds: number }): Promise<void> {
  const cores = cpus().length;
  const n = opts.quick ? 20 : 100;
  const sizes = opts.quick ? [10_000, 100_000] : [100_000, 1_000_000];
  const k = secaggPlusDegree(n);
  const rows: RpcRun[] = [];
  for (const m of sizes) {
    const plan: RpcRun[] = [
      { n, m, k, transport: 'local' },
      { n, m, k, transport: 'grpc', uploads: 0 },
      { n, m, k, transport: 'grpc', uploads: 0, warmUp: true },
      ...(m === sizes[sizes.length - 1] ? [{ n, m, k, transport: 'grpc' as const, uploads: 1 }] : []),
    ];
    let local: SimulateResult | undefined;
    for (const p of plan) {
      process.stderr.write(`run  n=${n} m=${m} secagg+ k=${k} ${p.transport}${p.uploads === undefined ? '' : ` uploads in flight ${p.uploads || 'unlimited'}`}${p.warmUp ? ', second round' : ''}...\n`);
      const r = run(p);
      if (r.error) process.stderr.write(`     failed: ${r.error}\n`);
      if (p.transport === 'local') local = r.result;
      else if (r.result && local) r.ratio = r.result.timings_ms.total / local.timings_ms.total;
      rows.push(r);
    }
  }
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ bench: 'rpc', cores, rows })}\n`);
    return;
  }
  const headers = ['n', 'm', 'mode', 'k', 'transport', 'round', 'uploads', 'setup ms', 'round ms', 'vs in-process', 'client mean ms', 'unmask ms', 'coordinator CPU ms/client', 'certificate checks', 'peak RSS MB', ...BYTES_HEADERS, 'exact'];
  const body = rows.map((r) => {
    const res = r.result;
    const uploads = r.transport === 'local' ? '-' : r.uploads === 0 ? 'unpaced' : `${r.uploads}/process`;
    const round = r.transport === 'local' ? '-' : r.warmUp ? 'second' : 'first';
    if (!res) return [r.n, r.m, 'secagg+', r.k, r.transport, round, uploads, 'failed', r.error ?? '', '', '', '', '', '', '', ...BYTES_HEADERS.map(() => ''), ''];
    return [
      r.n,
      r.m,
      res.mode,
      r.k,
      r.transport,
      round,
      uploads,
      fmt(res.timings_ms.setup, 0),
      fmt(res.timings_ms.total, 0),
      r.transport === 'local' ? '1.00 (baseline)' : `${fmt(r.ratio ?? NaN, 2)}x`,
      fmt(res.timings_ms.client_mean),
      fmt(res.timings_ms.server_unmask, 0),
      res.coordinator_cpu_ms_per_client === null ? '-' : fmt(res.coordinator_cpu_ms_per_client, 2),
      res.peer_certificate_checks === null ? '-' : String(res.peer_certificate_checks),
      `${fmt(res.peak_rss_mb, 0)} (${r.transport === 'local' ? 'all, one process' : 'coordinator'})`,
      ...bytesCells(res),
      res.ok ? String(res.exact) : `aborted: ${res.reason}`,
    ];
  });
  process.stdout.write(`Round over gRPC (loopback, TLS 1.3, mTLS; clients in ${Math.min(4, cores)} client processes) against the same round in process. Cores: ${cores}.\n\n`);
  process.stdout.write(`${table(headers, body)}\n`);
  process.stdout.write(
    '\n"round ms": launch to outcome (setup — CA, enrollment, process start-up — not included). "vs in-process": grpc round time / in-process round time measured in this run.\n' +
      '"peak RSS": grpc rows measure the coordinator process alone (clients in other processes); local rows the one process that holds everything.\n' +
      '"unmask ms": local, the coordinator\'s unmasking; grpc, from the unmasking phase opening to the outcome (includes the clients\' unmask answers).\n' +
      '"round": grpc, the clients\' first round, or their second (a round of another job ran first with the same clients: channels open, tokens fetched, certificates of the first round\'s neighbours remembered).\n' +
      '"certificate checks": grpc, the peers\' certificates the clients parsed and checked against the CA in the round (each client checks a neighbour\'s once).\n' +
      '"coordinator CPU ms/client": grpc, the coordinator process\'s CPU time (user + system, every thread) from launch to outcome, divided by n; in process the clients share the process, so it is not measured.\n' +
      '"sent kB/client": what a client sends over the round (protocol messages\' payload); "masked kB": its masked upload, at r bits per value, against its floor m·r/8.\n',
  );
}
