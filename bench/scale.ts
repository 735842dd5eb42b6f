/**
 * `npm run bench -- scale [--json] [--quick]`: how Aegis scales past one process — unmasking
 * spread over worker processes, and a large round split into aggregation groups.
 *
 * 1. Unmasking on workers: the masks of one round's unmasking phase (a keystream of m + 1 words per
 *    survivor's self mask; 200 survivors at m = 10^6, --quick: 100 at 10^5) expanded in this process with no Redis (the embedded default), then as
 *    sealed parts through Redis by 1 and by 2 worker processes (`coordinator/queue/unmask-queue.ts`).
 *    Baselines in the same run: raw AES-256-CTR keystream speed and in-process mask expansion.
 * 2. A grouped round of 10,000 simulated clients at m = 10^4 (aggregation groups of 250, SecAgg+
 *    with k = 16 in each), the real state machines in worker threads (`aegis simulate`); the
 *    target on this machine is under 60 s. --quick: 2,000 clients.
 * Needs a Redis (AEGIS_REDIS_URL, default redis://127.0.0.1:6379) for part 1.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';
import { UnmaskQueue } from '../coordinator/queue/unmask-queue.js';
import { connectRedis } from '../coordinator/queue/redis.js';
import { applyMaskJobs, type MaskJob } from '../coordinator/round/index.js';
import { VectorAccumulator } from '../shared/crypto/vecops.js';
import { progress } from '../shared/cli/output.js';
import { measureBaselines } from './baseline.js';
import { simulate, type SimulateResult } from './sim/simulate.js';
import { simulateFrontends } from './sim/frontends-sim.js';
import { bytesCells, BYTES_HEADERS, fmt, table } from './table.js';

const WORKER = fileURLToPath(new URL('./scale-worker.js', import.meta.url));

async function startWorkers(n: number, url: string, prefix: string, key: Uint8Array): Promise<ChildProcess[]> {
  const procs = Array.from({ length: n }, () => fork(WORKER, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
  await Promise.all(
    procs.map(
      (p) =>
        new Promise<void>((resolve, reject) => {
          p.once('message', () => resolve());
          p.once('exit', (code) => reject(new Error(`an unmask worker exited (${code})`)));
          p.send({ url, prefix, key: Buffer.from(key).toString('base64') });
        }),
    ),
  );
  return procs;
}

async function stopWorkers(procs: ChildProcess[]): Promise<void> {
  await Promise.all(
    procs.map(
      (p) =>
        new Promise<void>((resolve) => {
          p.once('exit', () => resolve());
          p.send('stop');
          setTimeout(() => p.kill('SIGKILL'), 5000).unref();
        }),
    ),
  );
}

export async function benchScale(o: { json: boolean; quick: boolean }): Promise<void> {
  const base = measureBaselines(o.quick ? 300 : 1000);
  const url = process.env.AEGIS_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const survivors = o.quick ? 100 : 200;
  const words = o.quick ? 100_001 : 1_000_001;
  const jobs: MaskJob[] = Array.from({ length: survivors }, () => ({ key: new Uint8Array(randomBytes(32)), sign: -1 }));
  const keystreamGB = (survivors * words * 4) / 1e9;

  progress(`unmasking ${survivors} masks of ${words} words (${keystreamGB.toFixed(2)} GB keystream)`);
  const t0 = performance.now();
  const acc = new VectorAccumulator(words);
  applyMaskJobs(acc, jobs);
  const localMs = performance.now() - t0;
  const reference = acc.vector.slice();

  const redis = await connectRedis(url);
  const key = new Uint8Array(randomBytes(32));
  const rows: { setup: string; ms: number; gbps: number; vsLocal: number; vsAes: number; exact: boolean }[] = [
    { setup: 'this process, no Redis (embedded)', ms: localMs, gbps: keystreamGB / (localMs / 1000), vsLocal: 1, vsAes: keystreamGB / (localMs / 1000) / base.aesCtrGBps, exact: true },
  ];
  for (const workers of [1, 2]) {
    const prefix = `aegis-bench-${randomBytes(4).toString('hex')}`;
    const procs = await startWorkers(workers, url, prefix, key);
    const front = new UnmaskQueue(redis, key, { prefix });
    const t = performance.now();
    const partials = await front.dispatch('bench', jobs, words, workers);
    const ms = performance.now() - t;
    const sum = new Uint32Array(words);
    for (const p of partials) for (let i = 0; i < words; i++) sum[i] = (sum[i]! + p[i]!) >>> 0;
    const exact = Buffer.from(sum.buffer).equals(Buffer.from(reference.buffer));
    await front.obliterate();
    await front.close();
    await stopWorkers(procs);
    const gbps = keystreamGB / (ms / 1000);
    rows.push({ setup: `${workers} worker process${workers > 1 ? 'es' : ''} via Redis`, ms, gbps, vsLocal: localMs / ms, vsAes: gbps / base.aesCtrGBps, exact });
    progress(`  ${workers} worker(s): ${ms.toFixed(0)} ms`);
  }
  await redis.quit();

  const clients = o.quick ? 2000 : 10_000;
  progress(`a grouped round: ${clients} clients, m = 10^4, groups of 250, k = 16`);
  const sim = await simulate({ clients, dim: 10_000, groupSize: 250, neighbors: 16, bits: 16, workers: cpus().length, seed: 7, progress: (l) => progress(`  ${l}`) });
  const grouped = { clients, dim: 10_000, group_size: 250, groups: sim.groups?.count ?? 1, ok: sim.ok, exact: sim.exact, total_ms: sim.timings_ms.total, target_ms: 60_000, met: sim.ok && sim.exact && sim.timings_ms.total < 60_000, keystream_gb: sim.prg_bytes / 1e9, bytes_per_client: sim.bytes_per_client, sum_bits: sim.sum_bits, masked_floor_bytes: sim.masked_floor_bytes };

  // 3. One round across 1 and 2 front-end processes sharing its state on Redis.
  const feClients = o.quick ? 40 : 100;
  const feDim = o.quick ? 1_000 : 10_000;
  const feRows: { frontends: number; ms: number; vsOne: number; ok: boolean; exact: boolean; survivors: number; bytes: SimulateResult }[] = [];
  for (const frontends of [1, 2]) {
    progress(`a round on Redis: ${feClients} clients, m = ${feDim}, ${frontends} front end${frontends > 1 ? 's' : ''}`);
    const r = await simulateFrontends({ redisUrl: url, frontends, clients: feClients, dim: feDim, neighbors: 16, threshold: 9, workers: 2, seed: 5, transport: 'grpc', progress: (l) => progress(`  ${l}`) });
    feRows.push({ frontends, ms: r.timings_ms.total, vsOne: feRows.length ? feRows[0]!.ms / r.timings_ms.total : 1, ok: r.ok, exact: r.exact, survivors: r.survivors, bytes: r });
  }
  const frontEnds = { clients: feClients, dim: feDim, neighbors: 16, rows: feRows.map(({ bytes, ...row }) => ({ ...row, bytes_per_client: bytes.bytes_per_client, sum_bits: bytes.sum_bits })) };

  const result = { baselines: base, unmask: { survivors, words, keystream_gb: keystreamGB, rows }, grouped_round: grouped, front_ends: frontEnds };
  if (o.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  process.stdout.write(
    `baselines: AES-256-CTR ${fmt(base.aesCtrGBps, 2)} GB/s, mask expansion ${fmt(base.expansionGBps, 2)} GB/s (one thread)\n\n` +
      `unmasking ${survivors} masks × ${words} words (${keystreamGB.toFixed(2)} GB of keystream)\n` +
      table(
        ['setup', 'ms', 'GB/s', 'speed-up vs embedded', 'x raw AES-CTR', 'exact'],
        rows.map((r) => [r.setup, fmt(r.ms, 0), fmt(r.gbps, 2), fmt(r.vsLocal, 2), fmt(r.vsAes, 2), r.exact ? 'yes' : 'NO']),
      ) +
      `\n\ngrouped round: ${clients} clients in ${grouped.groups} groups of 250, m = 10^4: ${(grouped.total_ms / 1000).toFixed(1)} s (target < 60 s: ${grouped.met ? 'met' : 'NOT met'}), exact: ${grouped.exact}\n` +
      `${table(BYTES_HEADERS, [bytesCells(sim)])}\n` +
      `\none round on Redis, ${feClients} clients (SecAgg+ k = 16), m = ${feDim}, clients in 2 processes; launch to outcome\n` +
      table(
        ['front ends', 'ms', 'speed-up vs 1 front end', ...BYTES_HEADERS, 'exact'],
        feRows.map((r) => [String(r.frontends), fmt(r.ms, 0), fmt(r.vsOne, 2), ...bytesCells(r.bytes), r.ok && r.exact ? 'yes' : 'NO']),
      ) +
      '\n',
  );
}
