/**
 * `npm run bench -- floor`: what a whole round cannot go below on this machine. The unavoidable
 * crypto of the clients that do not drop — bench client's baseline, with the client's own
 * primitives: per client 2k X25519 agreements, k + t Ed25519 verifications, 2 signatures, k + 1
 * AES-256-CTR keystreams of (m + 1)·4 bytes under keys of their own and the Shamir split — run on
 * one thread, then spread over two worker threads (no protocol, no coordinator, no quantization,
 * and nothing of the clients that drop: a lower bound), against the whole round in process on two
 * worker threads (`aegis simulate --workers 2`), measured in the same run, alternating.
 * Sizes: n = 500, m = 10^5, k = 19, 10% dropout (the secagg grid's row with a 3 s target);
 * `--quick`: n = 100, m = 10^4.
 */
import { cpus } from 'node:os';
import { Worker } from 'node:worker_threads';
import { benchEntry } from './entry.js';
import { simulate } from './sim/simulate.js';
import { fmt, median, table } from './table.js';

export interface FloorResult {
  bench: 'floor';
  cores: number;
  n: number;
  m: number;
  k: number;
  t: number;
  dropout: number;
  repeats: number;
  /** The clients that do not drop, n·(1 − dropout): whose crypto the floor counts. */
  clients_that_stay: number;
  /** Their unavoidable crypto on one thread, wall ms (median). */
  crypto_one_thread_ms: number;
  /** The same spread over two worker threads, wall ms (median). */
  crypto_two_threads_ms: number;
  /** The whole round in process on two worker threads, launch to outcome, ms (median). */
  round_ms: number;
  /** round_ms / crypto_two_threads_ms. */
  round_vs_floor: number;
  exact: boolean;
}

/** Wall time of `n` clients' unavoidable crypto spread over `threads` worker threads (their start-up not counted). */
async function cryptoWallMs(n: number, m: number, k: number, t: number, threads: number): Promise<number> {
  const path = benchEntry('floor-worker.js', import.meta.url, 'the worker thread');
  const workers = Array.from({ length: threads }, (_, w) => new Worker(path, { workerData: { count: Math.floor(n / threads) + (w < n % threads ? 1 : 0), m, k, t } }));
  const nextMessage = (w: Worker): Promise<void> =>
    new Promise((resolve, reject) => {
      w.once('message', () => resolve());
      w.once('error', reject);
    });
  try {
    await Promise.all(workers.map(nextMessage)); // each has warmed up
    const t0 = performance.now();
    const done = workers.map(nextMessage);
    for (const w of workers) w.postMessage('go');
    await Promise.all(done);
    return performance.now() - t0;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/** `roundWorkers`: the round's worker threads (default 2; 0 runs it in this thread). */
export async function runFloorBench(o: { n: number; m: number; k: number; dropout: number; repeats: number; roundWorkers?: number }): Promise<FloorResult> {
  const t = Math.floor(o.k / 2) + 1;
  const stay = Math.round(o.n * (1 - o.dropout));
  const one: number[] = [];
  const two: number[] = [];
  const round: number[] = [];
  let exact = true;
  for (let r = 0; r < o.repeats; r++) {
    one.push(await cryptoWallMs(stay, o.m, o.k, t, 1));
    two.push(await cryptoWallMs(stay, o.m, o.k, t, 2));
    const res = await simulate({ clients: o.n, dim: o.m, neighbors: o.k, dropout: o.dropout, workers: o.roundWorkers ?? 2, seed: r + 1 });
    exact &&= res.ok && res.exact;
    round.push(res.timings_ms.total);
  }
  const floor = median(two);
  const roundMs = median(round);
  return { bench: 'floor', cores: cpus().length, n: o.n, m: o.m, k: o.k, t, dropout: o.dropout, repeats: o.repeats, clients_that_stay: stay, crypto_one_thread_ms: median(one), crypto_two_threads_ms: floor, round_ms: roundMs, round_vs_floor: roundMs / floor, exact };
}

export async function benchFloor(opts: { json: boolean; quick: boolean }): Promise<void> {
  const o = opts.quick ? { n: 100, m: 10_000, k: 19, dropout: 0.1, repeats: 2 } : { n: 500, m: 100_000, k: 19, dropout: 0.1, repeats: 2 };
  process.stderr.write(`round floor: n=${o.n} m=${o.m} k=${o.k} dropout ${o.dropout * 100}%, ${o.repeats} repeats (crypto on 1 thread, on 2, the round, alternating)\n`);
  const r = await runFloorBench(o);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  const s = (ms: number): string => fmt(ms / 1000, 2);
  process.stdout.write(
    `The floor of a round: the unavoidable crypto of its ${r.clients_that_stay} clients that do not drop, against the whole round in process on two worker threads (SecAgg+ k = ${r.k}, t = ${r.t}, m = ${r.m}, ${r.dropout * 100}% dropout); medians of ${r.repeats}. Cores: ${r.cores}.\n\n` +
      `${table(
        ['n', 'm', 'k', 'staying', 'crypto, 1 thread s', 'crypto, 2 threads s', '2 threads / 1', 'round, 2 workers s', 'round / crypto floor', 'exact'],
        [[r.n, r.m, r.k, r.clients_that_stay, s(r.crypto_one_thread_ms), s(r.crypto_two_threads_ms), `${fmt(r.crypto_one_thread_ms / r.crypto_two_threads_ms, 2)}x`, s(r.round_ms), `${fmt(r.round_vs_floor, 2)}x`, String(r.exact)]],
      )}\n\n` +
      `"crypto": per client ${2 * r.k} X25519 agreements, ${r.k + r.t} Ed25519 verifications, 2 signatures, ${r.k + 1} AES-256-CTR keystreams under keys of their own (${fmt(((r.k + 1) * (r.m + 1) * 4) / 1e6, 1)} MB) and the Shamir split — bench client's baseline, for every client that does not drop, with no protocol, coordinator or quantization, and nothing of the clients that drop: a lower bound of the round on this machine.\n` +
      '"round": aegis simulate --workers 2 with the same n, m, k and dropout, launch to outcome.\n',
  );
}
