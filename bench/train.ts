/**
 * `npm run bench -- train`: what secure aggregation adds to a round of federated training.
 *
 * Runs the demo's job (10 clients, real digits, tfjs, loopback TLS, client processes) and splits
 * each completed round into
 *   - local training: from the round's start until the last survivor finished training;
 *   - masking: the slowest client's masking compute (quantize + k + 1 AES-CTR masks);
 *   - unmasking: the coordinator's reconstruction and unmasking when the last phase closes;
 *   - network: the rest — the protocol's round trips (keys, shares, upload, consistency,
 *     unmask shares) and waiting.
 * The baseline, measured in the same run: plain FedAvg of the same updates — the same
 * training critical path plus summing the survivors' float updates in the clear (timed here on
 * vectors of the same size). It is charged no network time at all, so the overhead reported is
 * an upper bound. Target: secure aggregation adds under 10% to a round at 10 clients.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDemo, type DemoRound } from './demo/run.js';
import { fmt, table } from './table.js';

/** Milliseconds to sum `n` float32 vectors of `dim` values into a float64 accumulator (median of reps). */
export function plainSumMs(n: number, dim: number, reps = 15): number {
  const vectors = Array.from({ length: n }, (_, i) => Float32Array.from({ length: dim }, (_, j) => Math.sin(i * 31 + j)));
  const acc = new Float64Array(dim);
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    acc.fill(0);
    const t = performance.now();
    for (const v of vectors) for (let j = 0; j < dim; j++) acc[j] = acc[j]! + v[j]!;
    for (let j = 0; j < dim; j++) acc[j] = acc[j]! / n;
    times.push(performance.now() - t);
  }
  if (!Number.isFinite(acc[0])) throw new Error('sum went wrong');
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
}

export interface TrainBenchRow {
  /** The round's number in the job (from 1). */
  round_number: number;
  clients: number;
  round_ms: number;
  training_ms: number;
  masking_ms: number;
  network_ms: number;
  unmasking_ms: number;
  plain_fedavg_ms: number;
  overhead: number;
}

export function splitRound(r: DemoRound, plainMs: number): TrainBenchRow {
  const training = r.timings_ms.trained_after;
  const masking = r.timings_ms.mask_max;
  const coordinator = r.timings_ms.coordinator;
  const network = Math.max(0, r.ms - training - masking - coordinator);
  const plain = training + plainMs;
  return {
    round_number: r.round_number,
    clients: r.clients,
    round_ms: r.ms,
    training_ms: training,
    masking_ms: masking,
    network_ms: network,
    unmasking_ms: coordinator,
    plain_fedavg_ms: Math.round(plain),
    overhead: r.ms / plain - 1,
  };
}

export async function benchTrain(o: { json: boolean; quick: boolean }): Promise<void> {
  const clients = 10;
  const rounds = o.quick ? 3 : 6;
  const out = await mkdtemp(join(tmpdir(), 'aegis-bench-train-'));
  try {
    process.stderr.write(`train: ${clients} clients, ${rounds} rounds of the digits demo (tfjs, loopback TLS, client processes)\n`);
    const demo = await runDemo({ clients, rounds, dropout: 0, seed: 42, alpha: 1, outDir: out, progress: (l) => process.stderr.write(`  ${l}\n`) });
    const plainMs = plainSumMs(clients, demo.parameters);
    const rows = demo.per_round.map((r) => splitRound(r, plainMs));
    // Round 1 pays the processes' tfjs warm-up; the steady state is the rounds after it.
    const steady = rows.length > 1 ? rows.slice(1) : rows;
    const total = (k: keyof TrainBenchRow): number => steady.reduce((a, r) => a + (r[k] as number), 0);
    const overall = total('round_ms') / total('plain_fedavg_ms') - 1;
    const result = {
      clients,
      rounds,
      parameters: demo.parameters,
      backend: demo.backend,
      final_accuracy: demo.final.accuracy,
      baseline: { plain_sum_ms: plainMs, note: 'plain FedAvg = the same training critical path + summing the float updates in the clear, with no network time' },
      per_round: rows,
      steady_state: {
        rounds: steady.length,
        round_ms: total('round_ms') / steady.length,
        training_ms: total('training_ms') / steady.length,
        masking_ms: total('masking_ms') / steady.length,
        network_ms: total('network_ms') / steady.length,
        unmasking_ms: total('unmasking_ms') / steady.length,
        plain_fedavg_ms: total('plain_fedavg_ms') / steady.length,
        overhead: overall,
        ratio: overall + 1,
      },
      target: { overhead_below: 0.1, met: overall < 0.1 },
    };
    if (o.json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      return;
    }
    process.stdout.write(
      `${table(
        ['round', 'clients', 'round ms', 'training', 'masking', 'network', 'unmasking', 'plain FedAvg', 'overhead'],
        rows.map((r) => [r.round_number, r.clients, r.round_ms, r.training_ms, r.masking_ms, r.network_ms, r.unmasking_ms, r.plain_fedavg_ms, `${fmt(r.overhead * 100)}%`]),
      )}\n`,
    );
    const s = result.steady_state;
    process.stdout.write(
      `\nsteady state (rounds 2..${rows.length}): round ${fmt(s.round_ms, 0)} ms vs plain FedAvg ${fmt(s.plain_fedavg_ms, 0)} ms — ratio ${fmt(s.ratio, 3)}, secure aggregation adds ${fmt(s.overhead * 100)}% (target < 10%: ${result.target.met ? 'met' : 'NOT met'})\n` +
        `  of which masking ${fmt(s.masking_ms, 0)} ms, network ${fmt(s.network_ms, 0)} ms, unmasking ${fmt(s.unmasking_ms, 0)} ms; plain sum of ${clients} updates of ${demo.parameters} values: ${fmt(plainMs, 2)} ms; final test accuracy ${fmt(demo.final.accuracy * 100)}%\n`,
    );
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}
