/**
 * Test accuracy against ε (part b of `npm run bench -- dp`): the demo's digits job (its model,
 * its local training, its non-IID split of the real digits) with a realistic cohort — many
 * clients per round, simulated in this process; the point is the noise level of such a cohort,
 * not the network.
 *
 * Each round every client trains from the global model with the demo's trainer
 * (client/trainer `trainLocally`, tfjs) on its own shard, then:
 *   - DP job: its update unweighted (as a DP client sends it, client/admission/training-round.ts)
 *     goes through the real `dpEncode` with the calibrated parameters and its own randomness; the
 *     words are added into a Z_{2^32} sum as masking's sum would hold them (the masks cancel),
 *     and the coordinator's `dpDecodeSum` divided by the client count is the mean FedAvg applies;
 *   - clip only: the same unweighted updates clipped to C and averaged, no noise (where the
 *     clip alone leaves the job; ε = ∞);
 *   - baseline, no DP: the plain job — updates weighted by example count, FedAvg's weighted mean
 *     (what `aegis demo` runs without --dp).
 * Every variant starts from the same initial model and uses the same shuffle seeds, so the
 * difference is the mechanism's. The DP parameters come from the calibrator for the whole job:
 * the rounds, n_min = n_max = the clients per round (every client survives here), the model's
 * dimension and the clip.
 */
import { addInto } from '../shared/crypto/vecops.js';
import { DeterministicRng } from '../shared/crypto/rng.js';
import { calibrate, dpParamsOf, type Calibration } from '../shared/dp/calibrate.js';
import { dpDecodeSum64, dpEncode, encodedLength } from '../shared/dp/encode.js';
import { paddedDim } from '../shared/dp/hadamard.js';
import { DiscreteGaussian } from '../shared/dp/sampler.js';
import { dpSessionSeed } from '../shared/protocol/dp-manifest.js';
import { parseManifest, type JobManifestInput, type TrainingManifest } from '../shared/protocol/manifest.js';
import { sha256 } from '../shared/protocol/session.js';
import { DIGITS_TRAINING, digitsModel } from '../shared/model/digits.js';
import { loadTf } from '../shared/model/tfjs.js';
import { applyUpdate, evaluateModel, trainLocally } from '../client/trainer/index.js';
import { MemoryDataStore } from '../client/store/memory.js';
import { splitDigits } from './demo/mnist.js';

export interface AccuracyOptions {
  /** Clients per round (all of them train every round). */
  clients: number;
  rounds: number;
  /** L2 clip C of each client's unweighted update. */
  clip: number;
  /** Target ε values over the whole job, at `delta`. */
  epsilons: number[];
  delta: number;
  /** Hidden units of the digits model (the demo's: 128). */
  hidden: number;
  /** Dirichlet concentration of the split (the demo's: 1). */
  alpha: number;
  seed: number;
  /** Use only the first n digits of each class (quick runs). */
  perDigitLimit?: number;
  /** Also run the clipped job without noise. */
  clipOnly: boolean;
  progress?: (line: string) => void;
}

export interface AccuracyRow {
  /** "no DP", "clip only" or "DP". */
  variant: 'no DP' | 'clip only' | 'DP';
  /** Target ε for the job (DP rows); null otherwise. */
  target_epsilon: number | null;
  /** The accountant's ε for the calibrated parameters over all rounds (DP rows). */
  epsilon: number | null;
  delta: number | null;
  noise_multiplier: number | null;
  bits: number | null;
  gamma: number | null;
  /** Std of the noise on the mean update, per coordinate (real units): √(n·σ²)·γ / n. */
  noise_std_of_mean: number | null;
  accuracy: number;
  loss: number;
  /** (accuracy − baseline accuracy) in percentage points. */
  diff_points: number;
  /** Test accuracy after each round. */
  per_round: number[];
  ms: number;
}

export interface AccuracyResult {
  clients: number;
  rounds: number;
  clip: number;
  hidden: number;
  parameters: number;
  padded_dim: number;
  alpha: number;
  train_examples: number;
  test_examples: number;
  initial_accuracy: number;
  /** Median L2 norm of the clients' unweighted updates, per round of the baseline job. */
  update_norm_median: number[];
  rows: AccuracyRow[];
}

type Variant = { kind: 'plain' } | { kind: 'clip' } | { kind: 'dp'; cal: Calibration };

/** The calibration of the job's `dp` section for a target ε (what `aegis dp calibrate --epsilon` gives). */
export function calibrateJob(o: { epsilon: number; delta: number; rounds: number; clients: number; dim: number; clip: number }): Calibration {
  return calibrate({ epsilon: o.epsilon, delta: o.delta, rounds: o.rounds, clients: o.clients, maxClients: o.clients, dim: o.dim, clip: o.clip });
}

function l2(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  return Math.sqrt(s);
}

export async function dpAccuracy(o: AccuracyOptions): Promise<AccuracyResult> {
  const say = o.progress ?? (() => undefined);
  const { tf } = await loadTf();
  const split = splitDigits({ clients: o.clients, seed: o.seed, alpha: o.alpha, ...(o.perDigitLimit ? { perDigitLimit: o.perDigitLimit } : {}) });
  const stores = split.shards.map((s) => new MemoryDataStore(s));
  const { spec, weights: initial } = await digitsModel(tf, { hidden: o.hidden, seed: o.seed });
  const now = Date.now();
  const input: JobManifestInput = {
    version: 1,
    jobId: 'digits-dp-bench',
    rounds: o.rounds,
    round: { dim: initial.length, cohort: o.clients, clip: 4096, bits: 16 },
    model: spec,
    training: DIGITS_TRAINING,
    issuedAt: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 24 * 3_600_000).toISOString(),
  };
  const manifest = parseManifest(new TextEncoder().encode(JSON.stringify(input))).manifest as TrainingManifest;
  const loss = DIGITS_TRAINING.loss;
  const evaluate = (w: Float32Array) => evaluateModel({ spec, loss, weights: w, examples: split.test });
  const initialEval = await evaluate(initial);
  const norms: number[] = [];

  const run = async (v: Variant): Promise<{ accuracy: number; loss: number; perRound: number[]; ms: number }> => {
    const t0 = performance.now();
    let global = initial;
    const perRound: number[] = [];
    let last = initialEval;
    const params = v.kind === 'dp' ? dpParamsOf(v.cal) : undefined;
    const sampler = params ? new DiscreteGaussian(params.sigma2) : undefined;
    for (let r = 0; r < o.rounds; r++) {
      const mean = new Float64Array(initial.length);
      const sum = params ? new Uint32Array(encodedLength(params)) : undefined;
      const sessionSeed = dpSessionSeed(sha256(`aegis-bench-dp:${o.seed}:${r}`));
      let totalWeight = 0;
      const roundNorms: number[] = [];
      for (let i = 0; i < o.clients; i++) {
        const u = await trainLocally({ manifest, globalWeights: global, data: stores[i]!, maxWeight: 2 ** 16 - 1, seed: r * 1_000_003 + i });
        const update = new Float64Array(u.values.length);
        for (let j = 0; j < update.length; j++) update[j] = u.values[j]! / u.weight;
        const norm = l2(update);
        roundNorms.push(norm);
        if (v.kind === 'plain') {
          for (let j = 0; j < mean.length; j++) mean[j]! += u.values[j]!;
          totalWeight += u.weight;
        } else if (v.kind === 'clip') {
          const s = Math.min(1, o.clip / norm);
          for (let j = 0; j < mean.length; j++) mean[j]! += update[j]! * s;
          totalWeight += 1;
        } else {
          addInto(sum!, dpEncode(update, params!, sessionSeed, DeterministicRng.fromSeed('aegis-bench-dp-client', `${o.seed}:${r}:${i}`), sampler));
          totalWeight += 1;
        }
      }
      if (v.kind === 'plain') norms.push(roundNorms.sort((a, b) => a - b)[Math.floor(roundNorms.length / 2)]!);
      if (sum) mean.set(dpDecodeSum64(sum, params!, sessionSeed));
      for (let j = 0; j < mean.length; j++) mean[j]! /= totalWeight;
      global = applyUpdate(global, mean);
      last = await evaluate(global);
      perRound.push(last.accuracy);
      say(`  ${v.kind === 'dp' ? `ε=${v.cal.epsilon.toFixed(2)}` : v.kind === 'clip' ? 'clip only' : 'no DP'}: round ${r + 1}/${o.rounds} test accuracy ${(last.accuracy * 100).toFixed(1)}%`);
    }
    return { accuracy: last.accuracy, loss: last.loss, perRound, ms: performance.now() - t0 };
  };

  say(`baseline: the digits job without DP (${o.clients} clients per round, ${o.rounds} rounds, ${initial.length} parameters)`);
  const base = await run({ kind: 'plain' });
  const row = (variant: AccuracyRow['variant'], r: Awaited<ReturnType<typeof run>>, cal?: Calibration, target?: number): AccuracyRow => ({
    variant,
    target_epsilon: target ?? null,
    epsilon: cal?.epsilon ?? null,
    delta: cal?.delta ?? null,
    noise_multiplier: cal?.noise_multiplier ?? null,
    bits: cal?.bits ?? null,
    gamma: cal?.gamma ?? null,
    noise_std_of_mean: cal ? (cal.sigma_per_client * Math.sqrt(o.clients)) / o.clients : null,
    accuracy: r.accuracy,
    loss: r.loss,
    diff_points: (r.accuracy - base.accuracy) * 100,
    per_round: r.perRound,
    ms: Math.round(r.ms),
  });
  const rows: AccuracyRow[] = [row('no DP', base)];
  if (o.clipOnly) {
    say(`clip only: the unweighted updates clipped to ${o.clip}, no noise`);
    rows.push(row('clip only', await run({ kind: 'clip' })));
  }
  for (const epsilon of o.epsilons) {
    const cal = calibrateJob({ epsilon, delta: o.delta, rounds: o.rounds, clients: o.clients, dim: initial.length, clip: o.clip });
    say(`DP: target ε=${epsilon} at δ=${o.delta}: noise multiplier ${cal.noise_multiplier.toFixed(3)}, ${cal.bits} bits, accountant's ε ${cal.epsilon.toFixed(3)}`);
    rows.push(row('DP', await run({ kind: 'dp', cal }), cal, epsilon));
  }
  return {
    clients: o.clients,
    rounds: o.rounds,
    clip: o.clip,
    hidden: o.hidden,
    parameters: initial.length,
    padded_dim: paddedDim(initial.length),
    alpha: o.alpha,
    train_examples: split.trainCount,
    test_examples: split.testCount,
    initial_accuracy: initialEval.accuracy,
    update_norm_median: norms,
    rows,
  };
}
