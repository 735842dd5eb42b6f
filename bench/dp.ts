/**
 * `npm run bench -- dp [--json] [--quick]`: what differential privacy inside the sum costs a
 * client, and what it costs the model.
 *
 * a. Client cost per update (bench/dp-cost.ts) at m = 10^5 and 10^6 (10^4 with --quick), with
 *    the parameters the calibrator gives for a realistic job (ε = 8, δ = 10^−5, 100 clients,
 *    10 rounds, clip 1): clip + rotate, conditional rounding, noise sampling and wrap, against
 *    the client's masking of the same m in the same run (the real share-broadcast step of a
 *    SecAgg+ client with k = 15 neighbours, as in a cohort of 100), and the ratio DP / masking.
 * b. Test accuracy against ε (bench/dp-accuracy.ts): the digits job with many clients per round
 *    simulated in process, at target ε of 1, 2, 4 and 8 (δ = 10^−5, for the whole job), against
 *    the same job without DP measured in the same run (and the clipped job without noise).
 */
import { calibrate, type Calibration } from '../shared/dp/calibrate.js';
import { dpAccuracy, type AccuracyResult } from './dp-accuracy.js';
import { measureDpStages, measureMasking, type DpStageTimes, type MaskingTimes } from './dp-cost.js';
import { fmt, table } from './table.js';

/** The realistic job the cost is calibrated for. */
export const COST_JOB = { epsilon: 8, delta: 1e-5, clients: 100, rounds: 10, clip: 1 } as const;

export interface CostRow extends DpStageTimes, MaskingTimes {
  m: number;
  padded_dim: number;
  bits: number;
  noise_multiplier: number;
  sigma2_per_client: string;
  /** dp_total_ms / masking_ms. */
  ratio: number;
}

export interface DpBenchOptions {
  /** Update sizes for part a. */
  sizes: number[];
  /** Repetitions of each DP stage (median). */
  reps: number;
  accuracy: Parameters<typeof dpAccuracy>[0];
  /** Whether these settings can judge the aim (not --quick: its baseline barely leaves chance). */
  judgeAim: boolean;
}

export interface DpBenchResult {
  bench: 'dp';
  cost_job: typeof COST_JOB;
  cost: CostRow[];
  accuracy: AccuracyResult;
  /** The product's aim: at ε <= 8, δ = 1e-5 for the whole job, test accuracy within 5 points of no DP. */
  target: { epsilon: number; delta: number; within_points: number; best_epsilon_met: number | null; met: boolean | null };
}

/** The settings of a full run and of --quick. */
export function dpBenchOptions(quick: boolean, progress?: (line: string) => void): DpBenchOptions {
  return {
    sizes: quick ? [10_000] : [100_000, 1_000_000],
    reps: quick ? 2 : 3,
    judgeAim: !quick,
    accuracy: {
      clients: quick ? 10 : 100,
      rounds: quick ? 2 : 5,
      clip: 1,
      epsilons: quick ? [8] : [1, 2, 4, 8],
      delta: 1e-5,
      hidden: quick ? 16 : 32,
      alpha: 1,
      seed: 42,
      clipOnly: true,
      ...(quick ? { perDigitLimit: 60 } : {}),
      ...(progress ? { progress } : {}),
    },
  };
}

export function costRow(m: number, reps: number): CostRow {
  const cal: Calibration = calibrate({ epsilon: COST_JOB.epsilon, delta: COST_JOB.delta, rounds: COST_JOB.rounds, clients: COST_JOB.clients, dim: m, clip: COST_JOB.clip });
  const mask = measureMasking(m);
  const dp = measureDpStages(cal, reps);
  return { m, padded_dim: cal.padded_dim, bits: cal.bits, noise_multiplier: cal.noise_multiplier, sigma2_per_client: cal.sigma2_per_client, ...dp, ...mask, ratio: dp.dp_total_ms / mask.masking_ms };
}

export async function runDpBench(o: DpBenchOptions, say: (line: string) => void = () => undefined): Promise<DpBenchResult> {
  const cost: CostRow[] = [];
  for (const m of o.sizes) {
    say(`client cost at m=${m}: masking (k=15) and the DP stages, calibrated for ε=${COST_JOB.epsilon}, δ=${COST_JOB.delta}, ${COST_JOB.clients} clients, ${COST_JOB.rounds} rounds`);
    cost.push(costRow(m, o.reps));
  }
  const accuracy = await dpAccuracy(o.accuracy);
  const met = accuracy.rows.filter((r) => r.variant === 'DP' && r.target_epsilon !== null && r.target_epsilon <= 8 && r.diff_points >= -5);
  const best = met.length > 0 ? Math.min(...met.map((r) => r.target_epsilon!)) : null;
  return { bench: 'dp', cost_job: COST_JOB, cost, accuracy, target: { epsilon: 8, delta: 1e-5, within_points: 5, best_epsilon_met: best, met: o.judgeAim ? best !== null : null } };
}

const ms = (x: number): string => (x >= 100 ? fmt(x, 0) : x >= 10 ? fmt(x, 1) : fmt(x, 2));
const pct = (x: number): string => `${fmt(x * 100)}%`;

export function renderDpBench(r: DpBenchResult): string {
  const a = r.accuracy;
  const out: string[] = [];
  out.push(`a. Client cost per update (ε=${r.cost_job.epsilon}, δ=${r.cost_job.delta}, ${r.cost_job.clients} clients, ${r.cost_job.rounds} rounds, clip ${r.cost_job.clip}; medians; masking = the share-broadcast step with k=15, same run)\n`);
  out.push(
    table(
      ['m', 'D', 'bits', 'z', 'clip+rotate ms', 'rounding ms', 'noise ms', 'wrap ms', 'DP total ms', 'dpEncode ms', 'masking ms', 'DP / masking', 'quantize ms'],
      r.cost.map((c) => [c.m, c.padded_dim, c.bits, fmt(c.noise_multiplier, 3), ms(c.clip_rotate_ms), ms(c.rounding_ms), ms(c.noise_ms), ms(c.wrap_ms), ms(c.dp_total_ms), ms(c.dp_encode_ms), ms(c.masking_ms), `${fmt(c.ratio, 2)}x`, ms(c.quantize_ms)]),
    ),
  );
  out.push('');
  out.push(
    `b. Test accuracy against ε: the digits job, ${a.clients} clients per round simulated in process (all train every round), ${a.rounds} rounds, clip ${a.clip}, ` +
      `${a.parameters} parameters (D=${a.padded_dim}), Dirichlet α=${a.alpha}, ${a.train_examples} training / ${a.test_examples} test digits; initial accuracy ${pct(a.initial_accuracy)}\n`,
  );
  out.push(
    table(
      ['variant', 'target ε', 'ε (accountant)', 'δ', 'z', 'bits', 'noise std of mean', 'test acc', 'vs no DP', 'clients/round', 'rounds', 'clip'],
      a.rows.map((x) => [
        x.variant,
        x.target_epsilon === null ? '-' : String(x.target_epsilon),
        x.epsilon === null ? (x.variant === 'clip only' ? 'inf' : '-') : fmt(x.epsilon, 3),
        x.delta === null ? '-' : String(x.delta),
        x.noise_multiplier === null ? '-' : fmt(x.noise_multiplier, 3),
        x.bits ?? '-',
        x.noise_std_of_mean === null ? '-' : x.noise_std_of_mean.toExponential(2),
        pct(x.accuracy),
        x.variant === 'no DP' ? 'baseline' : `${x.diff_points >= 0 ? '+' : ''}${fmt(x.diff_points)} pts`,
        a.clients,
        a.rounds,
        x.variant === 'no DP' ? '-' : a.clip,
      ]),
    ),
  );
  out.push('');
  out.push(`median L2 norm of a client's unweighted update, per round (no-DP job): ${a.update_norm_median.map((n) => fmt(n, 2)).join(', ')}`);
  out.push(
    `aim: at ε <= ${r.target.epsilon}, δ = ${r.target.delta} for the whole job, test accuracy within ${r.target.within_points} points of no DP: ` +
      (r.target.met === null ? 'not judged (--quick: too few clients and rounds)' : r.target.met ? `met (smallest ε that meets it: ${r.target.best_epsilon_met})` : 'NOT met at these settings'),
  );
  return `${out.join('\n')}\n`;
}

export async function benchDp(o: { json: boolean; quick: boolean }): Promise<void> {
  const say = (line: string): void => void process.stderr.write(`${line}\n`);
  const r = await runDpBench(dpBenchOptions(o.quick, say), say);
  process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : renderDpBench(r));
}
