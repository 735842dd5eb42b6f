/**
 * `npm run bench -- soak [--json] [--quick]`: does a coordinator stay flat over many rounds?
 *
 * 200 consecutive rounds (one plain job of 200 rounds, launched round after round) with 50
 * clients over gRPC — loopback TLS 1.3 with mTLS, every client enrolled over the enrollment
 * listener and running as a ClientRunner in this process — SecAgg+ with k = 2⌈log2 n⌉ + 1,
 * m = 10^4, no dropout. The coordinator runs alone in a child process of its own
 * (soak-coordinator.ts, with --expose-gc), so what it reports after every round is its own:
 * RSS and V8 heap used after a forced full GC (what it retains, not the garbage it has not
 * collected yet), open file descriptors, and the event-loop delay during the round (p99, max).
 * Every round's unmasked sum is compared word for word with the sum of the inputs the clients
 * were given (each client's input differs per round); a round that is not exact is reported and
 * the benchmark exits 1.
 *
 * Figure of merit: each figure's growth after warm-up, (late - early) / early, where early is the
 * median over rounds 20–29 and late the median over rounds 191–200 (medians of ten rounds, not
 * single rounds: one round's RSS or delay is noisy). Target: under 5%.
 *
 * Baseline, measured in the same run: a second coordinator process, set up the same way but with
 * no clients and no rounds, sampled (and collected) at the same moments. Its growth is the noise
 * floor of the measurement; each figure is also printed as a ratio to the idle coordinator's
 * value at the end. The round time's late/early ratio is printed too.
 *
 * `--quick` (CI): 40 rounds, 10 clients, m = 10^3, growth from rounds 10–14 to rounds 36–40.
 * `AEGIS_SOAK_HEAP_SNAPSHOTS=DIR`: heap snapshots of the coordinator at the end of both windows.
 */
import { writeFile } from 'node:fs/promises';
import { fork } from 'node:child_process';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchEntry } from './entry.js';
import { ClientRunner, enrollWithToken } from '../client/agent/connection.js';
import { createIdentity } from '../client/enroll/csr.js';
import type { JobManifestInput } from '../shared/protocol/manifest.js';
import { mapLimit, IpcChild } from './sim/grpc-sim.js';
import { secaggPlusDegree } from './secagg.js';
import { renderSoakChart, sparkline, type SoakSeries } from './soak-chart.js';
import type { SoakCoordinatorReply, SoakCoordinatorRequest, SoakSample } from './soak-coordinator.js';
import { bytesCells, BYTES_HEADERS, fmt, table } from './table.js';
import { sumBitsOf } from '../shared/protocol/params.js';
import { bytesReport, countAgentTraffic, emptyCounts, settleCounts } from './sim/wire-count.js';

export interface SoakOptions {
  rounds: number;
  clients: number;
  dim: number;
  /** Rounds before the early window (the early window starts at round `warmup`). */
  warmup: number;
  /** Rounds in each window (early: warmup .. warmup + window - 1; late: the last `window`). */
  window: number;
  /** SecAgg+ degree; default 2⌈log2 n⌉ + 1. */
  neighbors?: number;
  /** Where the SVG chart goes; none when undefined. */
  chartPath?: string;
  /**
   * A directory for heap snapshots of the coordinator running the rounds, taken after the last
   * round of each window (`soak-early-R.heapsnapshot`, `soak-late-R.heapsnapshot`), to compare
   * when a figure grows. None when undefined.
   */
  heapSnapshotDir?: string;
  progress?: (line: string) => void;
}

export const FULL: SoakOptions = { rounds: 200, clients: 50, dim: 10_000, warmup: 20, window: 10 };
export const QUICK: SoakOptions = { rounds: 40, clients: 10, dim: 1_000, warmup: 10, window: 5 };

/** Growth target after warm-up: under 5%. */
export const TARGET = 0.05;

/** One figure per round, in plain units. */
export interface SoakFigures {
  rss_mb: number;
  heap_used_mb: number;
  fds: number;
  eld_p99_ms: number;
  eld_max_ms: number;
}

export interface SoakRound extends SoakFigures {
  /** 1-based. */
  round: number;
  /** The round completed with every client and its sum equals the sum of the inputs. */
  exact: boolean;
  survivors: number;
  /** Launch to outcome, measured in the coordinator. */
  round_ms: number;
  /** Why the round is not exact (aborted, a survivor missing, words differing). */
  problem?: string;
  /** What a client sent in this round, mean payload bytes (wire-count.ts). */
  sent_bytes_per_client: number;
  /** The idle coordinator at the same moment. */
  idle: SoakFigures;
}

export type GrowthKey = 'rss_mb' | 'heap_used_mb' | 'fds' | 'eld_p99_ms';
export const GROWTH_KEYS: readonly GrowthKey[] = ['rss_mb', 'heap_used_mb', 'fds', 'eld_p99_ms'];

export interface SoakResult {
  bench: 'soak';
  cores: number;
  clients: number;
  rounds_run: number;
  dim: number;
  neighbors: number;
  /** 1-based inclusive round ranges whose medians the growth compares. */
  windows: { early: [number, number]; late: [number, number] };
  target: number;
  /** (median late - median early) / median early, per figure; round_ms for information. */
  growth: Record<GrowthKey | 'round_ms', number>;
  /** The same for the idle coordinator: the measurement's noise floor. */
  idle_growth: Record<GrowthKey, number>;
  met: Record<GrowthKey, boolean>;
  /** Late-window median of the soak coordinator / of the idle coordinator, per figure. */
  vs_idle: Record<GrowthKey, number>;
  all_exact: boolean;
  /** The last round's bytes per client by phase, sent and received, with r and the masked floor m·r/8. */
  bytes: ReturnType<typeof bytesReport>;
  gc_forced: boolean;
  elapsed_s: number;
  chart?: string;
  rounds: SoakRound[];
}

/** Client `c`'s input for round `r` (0-based): dim + 1 words, the last the weight 1. */
export function soakInput(c: number, r: number, dim: number): Uint32Array {
  const v = new Uint32Array(dim + 1);
  const base = c * 7919 + r * 104_729;
  for (let j = 0; j < dim; j++) v[j] = (base + j * 31) & 0xffff;
  v[dim] = 1;
  return v;
}

/** The coordinator process entry: next to this file when built, dist/bench/ when run from the sources (tests). */
function coordinatorEntry(): string {
  return benchEntry('soak-coordinator.js', import.meta.url, 'the coordinator process');
}

type CoordinatorProcess = IpcChild<SoakCoordinatorRequest, SoakCoordinatorReply>;

function startCoordinator(what: string): CoordinatorProcess {
  const child = fork(coordinatorEntry(), [], { execArgv: ['--expose-gc'], serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  return new IpcChild<SoakCoordinatorRequest, SoakCoordinatorReply>(child, what);
}

async function ask<K extends SoakCoordinatorReply['op']>(p: CoordinatorProcess, req: SoakCoordinatorRequest, op: K): Promise<Extract<SoakCoordinatorReply, { op: K }>> {
  const r = await p.request(req);
  if (r.op !== op) throw new Error(`unexpected reply ${r.op} to ${req.op}`);
  return r as Extract<SoakCoordinatorReply, { op: K }>;
}

const MB = 1024 * 1024;
const figures = (s: SoakSample): SoakFigures => ({ rss_mb: s.rss / MB, heap_used_mb: s.heapUsed / MB, fds: s.fds, eld_p99_ms: s.eldP99Ms, eld_max_ms: s.eldMaxMs });

export function median(xs: readonly number[]): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The 1-based windows for `rounds` rounds: early from the end of warm-up, late the last ones. */
export function windowsOf(o: Pick<SoakOptions, 'rounds' | 'warmup' | 'window'>): { early: [number, number]; late: [number, number] } {
  const early: [number, number] = [o.warmup, Math.min(o.rounds, o.warmup + o.window - 1)];
  const late: [number, number] = [Math.max(early[1] + 1, o.rounds - o.window + 1), o.rounds];
  return { early, late };
}

function growthOf(values: (r: number) => number, w: { early: [number, number]; late: [number, number] }): number {
  const pick = ([a, b]: [number, number]): number[] => Array.from({ length: b - a + 1 }, (_, i) => values(a + i));
  const early = median(pick(w.early));
  const late = median(pick(w.late));
  return (late - early) / early;
}

/** The manifest of the soak's one job: `rounds` plain rounds, deadlines no live client misses. */
function soakManifest(rounds: number, clients: number, dim: number, neighbors: number): Uint8Array {
  const now = Date.now();
  const phaseMs = 60_000;
  const m: JobManifestInput = {
    version: 1,
    jobId: 'aegis-soak',
    rounds,
    round: { dim, cohort: clients, neighbors },
    deadlines: { advertiseMs: phaseMs, shareMs: phaseMs, maskedMs: phaseMs, consistencyMs: phaseMs, unmaskMs: phaseMs },
    issuedAt: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 7 * 24 * 3_600_000).toISOString(),
  };
  return new TextEncoder().encode(JSON.stringify(m));
}

/** Runs the soak and returns its figures (the caller prints them). */
export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  if (!(o.rounds >= 2 && o.clients >= 3 && o.warmup >= 1 && o.window >= 1 && o.warmup + 2 * o.window - 1 <= o.rounds)) {
    throw new RangeError('soak: need rounds >= warmup + 2 * window - 1, clients >= 3');
  }
  const log = o.progress ?? (() => undefined);
  const n = o.clients;
  const k = o.neighbors ?? secaggPlusDegree(n);
  const w = windowsOf(o);
  const tStart = performance.now();
  const soak = startCoordinator('soak coordinator');
  const idle = startCoordinator('idle coordinator');
  const runners: ClientRunner[] = [];
  const rounds: SoakRound[] = [];
  // The clients' traffic, counted afresh for every round.
  let wire = emptyCounts();
  let bytes = bytesReport(wire, o.dim, sumBitsOf({ cohort: n, bits: 16 }));
  try {
    const [ready] = await Promise.all([ask(soak, { op: 'init' }, 'ready'), ask(idle, { op: 'init' }, 'ready')]);
    log(`coordinator on ${ready.address} (enrollment ${ready.enrollAddress}); idle coordinator started; enrolling ${n} clients`);
    const ids = Array.from({ length: n }, (_, i) => `soak-${String(i).padStart(String(n - 1).length, '0')}`);
    const { tokens } = await ask(soak, { op: 'invite', clientIds: ids }, 'invites');
    const enrolled = await mapLimit(ids, 8, async (clientId, i) => {
      const identity = await createIdentity();
      const e = await enrollWithToken({ enrollAddress: ready.enrollAddress, caPem: ready.caPem, token: tokens[i]!, identity, clientId });
      return { clientId: e.clientId, identity, certificateDer: e.certificateDer };
    });
    for (const [c, e] of enrolled.entries()) {
      const r = new ClientRunner({
        address: ready.address,
        caPem: ready.caPem,
        clientId: e.clientId,
        identity: e.identity,
        certificateDer: e.certificateDer,
        input: (round, params) => soakInput(c, round.roundIndex, params.dim),
        backoffMs: { min: 50, max: 1000 },
      });
      countAgentTraffic(r.agent, () => wire);
      r.start();
      runners.push(r);
    }
    await ask(soak, { op: 'wait-connected', count: n, timeoutMs: 30_000 + 200 * n }, 'connected');
    log(`${n} clients subscribed; ${o.rounds} rounds of SecAgg+ k = ${k}, m = ${o.dim}`);

    const manifest = soakManifest(o.rounds, n, o.dim, k);
    // Both coordinators start the first round's interval afresh.
    await Promise.all([ask(soak, { op: 'sample' }, 'sample'), ask(idle, { op: 'sample' }, 'sample')]);
    for (let r = 0; r < o.rounds; r++) {
      wire = emptyCounts();
      const out = await ask(soak, { op: 'round', manifest, gatherMs: 30_000 }, 'round');
      bytes = bytesReport(settleCounts(wire), o.dim, sumBitsOf({ cohort: n, bits: 16 }));
      const snapshot = o.heapSnapshotDir && (r + 1 === w.early[1] || r + 1 === w.late[1]) ? join(o.heapSnapshotDir, `soak-${r + 1 === w.early[1] ? 'early' : 'late'}-${r + 1}.heapsnapshot`) : undefined;
      const [s, i] = await Promise.all([ask(soak, { op: 'sample', ...(snapshot ? { heapSnapshot: snapshot } : {}) }, 'sample'), ask(idle, { op: 'sample' }, 'sample')]);
      let problem: string | undefined;
      if (!out.ok) problem = `aborted: ${out.reason ?? 'unknown'}`;
      else if (out.roundIndex !== r) problem = `ran as round index ${out.roundIndex}, expected ${r}`;
      else if (out.survivors !== n) problem = `${out.survivors} of ${n} clients in the sum`;
      else {
        const expected = new Uint32Array(o.dim + 1);
        for (let c = 0; c < n; c++) {
          const v = soakInput(c, r, o.dim);
          for (let j = 0; j < v.length; j++) expected[j] = (expected[j]! + v[j]!) >>> 0;
        }
        const got = out.sum;
        const wrong = !got || got.length !== expected.length ? -1 : expected.findIndex((x, j) => got[j] !== x);
        if (wrong !== -1) problem = got && got.length === expected.length ? `sum differs from the inputs' at word ${wrong}` : 'no sum of the right length';
      }
      rounds.push({ round: r + 1, exact: problem === undefined, survivors: out.survivors, round_ms: out.ms, ...(problem ? { problem } : {}), sent_bytes_per_client: bytes.bytes_per_client.total, ...figures(s.sample), idle: figures(i.sample) });
      if (problem) log(`  round ${r + 1}: NOT exact (${problem})`);
      if ((r + 1) % 10 === 0 || r === 0 || r + 1 === o.rounds) {
        const x = rounds[r]!;
        log(`  round ${r + 1}/${o.rounds}: ${fmt(x.round_ms, 0)} ms, RSS ${fmt(x.rss_mb)} MB, heap ${fmt(x.heap_used_mb)} MB, fds ${x.fds}, loop delay p99 ${fmt(x.eld_p99_ms)} ms`);
      }
    }
  } finally {
    await Promise.all(runners.map((r) => r.stop()));
    await Promise.all([soak.stop(), idle.stop()]);
  }

  const at = (r: number): SoakRound => rounds[r - 1]!;
  const growth = {} as SoakResult['growth'];
  const idleGrowth = {} as SoakResult['idle_growth'];
  const met = {} as SoakResult['met'];
  const vsIdle = {} as SoakResult['vs_idle'];
  const late = Array.from({ length: w.late[1] - w.late[0] + 1 }, (_, i) => at(w.late[0] + i));
  for (const key of GROWTH_KEYS) {
    growth[key] = growthOf((r) => at(r)[key], w);
    idleGrowth[key] = growthOf((r) => at(r).idle[key], w);
    met[key] = growth[key] < TARGET;
    vsIdle[key] = median(late.map((x) => x[key])) / median(late.map((x) => x.idle[key]));
  }
  growth.round_ms = growthOf((r) => at(r).round_ms, w);
  const result: SoakResult = {
    bench: 'soak',
    cores: cpus().length,
    clients: n,
    rounds_run: rounds.length,
    dim: o.dim,
    neighbors: k,
    windows: w,
    target: TARGET,
    growth,
    idle_growth: idleGrowth,
    met,
    vs_idle: vsIdle,
    all_exact: rounds.every((r) => r.exact),
    bytes,
    gc_forced: true,
    elapsed_s: (performance.now() - tStart) / 1000,
    rounds,
  };
  if (o.chartPath) {
    const series: SoakSeries[] = [
      { title: 'RSS after GC', unit: 'MB', soak: rounds.map((r) => r.rss_mb), idle: rounds.map((r) => r.idle.rss_mb) },
      { title: 'V8 heap used after GC', unit: 'MB', soak: rounds.map((r) => r.heap_used_mb), idle: rounds.map((r) => r.idle.heap_used_mb) },
      { title: 'open file descriptors', unit: 'count', soak: rounds.map((r) => r.fds), idle: rounds.map((r) => r.idle.fds) },
      { title: 'event-loop delay p99 during the round', unit: 'ms', soak: rounds.map((r) => r.eld_p99_ms), idle: rounds.map((r) => r.idle.eld_p99_ms) },
    ];
    await writeFile(o.chartPath, renderSoakChart(series, `Coordinator over ${rounds.length} rounds, ${n} clients over gRPC (SecAgg+ k = ${k}, m = ${o.dim})`, o.warmup));
    result.chart = o.chartPath;
  }
  return result;
}

const pct = (x: number): string => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%` : '-');

const LABELS: Record<GrowthKey, string> = { rss_mb: 'RSS', heap_used_mb: 'heap used', fds: 'open fds', eld_p99_ms: 'event-loop delay p99' };

export async function benchSoak(opts: { json: boolean; quick: boolean; budgetSeconds: number }): Promise<void> {
  const o = opts.quick ? QUICK : FULL;
  const chartPath = join(tmpdir(), `aegis-soak-${process.pid}.svg`);
  const heapSnapshotDir = process.env.AEGIS_SOAK_HEAP_SNAPSHOTS;
  const r = await runSoak({ ...o, chartPath, ...(heapSnapshotDir ? { heapSnapshotDir } : {}), progress: (l) => process.stderr.write(`${l}\n`) });
  for (const key of GROWTH_KEYS) process.stderr.write(`${LABELS[key].padEnd(21)} ${sparkline(r.rounds.map((x) => x[key]))}\n`);
  process.stderr.write(`chart: ${chartPath}\n`);
  const notExact = r.rounds.filter((x) => !x.exact);
  if (notExact.length > 0) process.exitCode = 1;
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  const { early, late } = r.windows;
  process.stdout.write(
    `Soak: ${r.rounds_run} consecutive rounds, ${r.clients} clients over gRPC (loopback TLS 1.3, mTLS; ClientRunners in the bench process), SecAgg+ k = ${r.neighbors}, m = ${r.dim}. ` +
      `The coordinator in a process of its own, sampled after every round (forced full GC before RSS and heap). Cores: ${r.cores}. ${fmt(r.elapsed_s, 0)} s in all.\n\n`,
  );
  const shown = r.rounds.filter((x) => x.round === 1 || x.round % 10 === 0 || x.round === r.rounds_run);
  process.stdout.write(
    `${table(
      ['round', 'exact', 'round ms', 'sent kB/client', 'RSS MB', 'heap MB', 'fds', 'loop p99 ms', 'loop max ms', 'idle RSS MB', 'idle heap MB', 'idle fds', 'idle loop p99 ms'],
      shown.map((x) => [x.round, x.exact ? 'yes' : 'NO', fmt(x.round_ms, 0), fmt(x.sent_bytes_per_client / 1000), fmt(x.rss_mb), fmt(x.heap_used_mb), x.fds, fmt(x.eld_p99_ms), fmt(x.eld_max_ms), fmt(x.idle.rss_mb), fmt(x.idle.heap_used_mb), x.idle.fds, fmt(x.idle.eld_p99_ms)]),
    )}\n\n`,
  );
  process.stdout.write(
    `Growth after warm-up: median of rounds ${late[0]}–${late[1]} against median of rounds ${early[0]}–${early[1]}; target under ${TARGET * 100}%.\n` +
      `${table(
        ['figure', 'growth', 'target', 'idle coordinator growth (noise floor)', 'late value vs idle coordinator'],
        GROWTH_KEYS.map((key) => [LABELS[key], pct(r.growth[key]), r.met[key] ? 'met' : 'NOT met', pct(r.idle_growth[key]), `${fmt(r.vs_idle[key], 2)}x`]),
      )}\n` +
      `round time: ${pct(r.growth.round_ms)} (rounds ${late[0]}–${late[1]} vs ${early[0]}–${early[1]}: ${fmt(1 + r.growth.round_ms, 2)}x)\n\n`,
  );
  process.stdout.write(`What each client put on the wire in the last round (protocol messages' payload):\n${table(BYTES_HEADERS, [bytesCells(r.bytes)])}\n\n`);
  process.stdout.write(
    'Baseline: an idle coordinator — the same process set up the same way, listening, no clients, no rounds — sampled and collected at the same moments. ' +
      'Its growth is what the measurement itself shows over the same time (the noise floor); "vs idle coordinator" is what the rounds and their clients add.\n' +
      '"loop p99/max": perf_hooks.monitorEventLoopDelay (10 ms resolution) in the coordinator between two samples: the round, launch to outcome, and the sample itself.\n',
  );
  if (notExact.length > 0) process.stdout.write(`\nNOT exact: ${notExact.map((x) => `round ${x.round} (${x.problem})`).join('; ')}\n`);
  process.stdout.write(`\nchart: ${chartPath}\n`);
}
