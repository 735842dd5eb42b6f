/**
 * `aegis dp calibrate`: the parameters of the distributed discrete Gaussian mechanism for a
 * noise multiplier or a target ε (shared/dp/calibrate.ts), printed as a table or, with --json,
 * one JSON document whose fields (epsilon, delta, noise_multiplier, bits, gamma,
 * sigma_per_client, …) are what a manifest's DP section will carry. Pure computation: no files,
 * no network.
 */
import type { Command } from 'commander';
import { parseFloatOption, parseIntOption, printResult, reportError } from '../cli/output.js';
import { calibrate, DEFAULT_BETA, DEFAULT_WRAP_PROBABILITY, type CalibrateInput, type Calibration } from './calibrate.js';
import { MAX_PADDED_DIM } from './hadamard.js';

type CalibrateOptions = CalibrateInput & { json?: boolean };

/** A number in (min, max), each end excluded unless `closedMax`: δ, for one, may be neither 0 nor 1. */
function parseInterval(name: string, min: number, max: number, closedMax = false) {
  return (v: string): number => {
    const n = Number(v);
    if (!(Number.isFinite(n) && n > min && (closedMax ? n <= max : n < max))) throw new Error(`--${name} must be a number in (${min}, ${max}${closedMax ? ']' : ')'}`);
    return n;
  };
}

function parseBeta(v: string): number {
  const n = Number(v);
  if (!(Number.isFinite(n) && n >= 0 && n < 1)) throw new Error('--beta must be a number in [0, 1)');
  return n;
}

function table(c: Calibration): string {
  const rows: [string, string][] = [
    ['mechanism', 'distributed discrete Gaussian (KLS21), no subsampling amplification'],
    ['epsilon', `${c.epsilon.toPrecision(6)} after ${c.rounds} round(s) (continuous Gaussian: ${c.gaussian_epsilon.toPrecision(6)})`],
    ...(c.assuming_sampling
      ? ([
          [
            'epsilon IF sampled',
            `${c.assuming_sampling.epsilon.toPrecision(6)} ASSUMING the coordinator samples each client with probability ${c.assuming_sampling.rate} per round (unverifiable: clients charge the epsilon above) (continuous Gaussian: ${c.assuming_sampling.gaussian_epsilon.toPrecision(6)})`,
          ],
        ] as [string, string][])
      : []),
    ['delta', String(c.delta)],
    ['zCDP rho', c.rho.toPrecision(6)],
    ['noise multiplier z', c.noise_multiplier.toPrecision(6)],
    ['clients (n_min / n_max)', `${c.clients} / ${c.max_clients}`],
    ['dim (padded)', `${c.dim} (${c.padded_dim})`],
    ['clip C', String(c.clip)],
    ['bits', String(c.bits)],
    ['gamma (granularity)', c.gamma.toPrecision(6)],
    ['sigma per client', `${c.sigma_per_client.toPrecision(6)} (variance ${c.sigma2_per_client} in integer steps)`],
    ['rounding beta / bound', `${c.beta.toPrecision(4)} / ||v||^2 <= ${c.norm_bound2}`],
    ['tau', c.tau.toPrecision(3)],
    ['P[wrap] per round <=', c.wrap_probability.toPrecision(3)],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

export function registerDp(program: Command): void {
  const dp = program.command('dp').description('differential privacy inside the sum: calibration of the distributed discrete Gaussian mechanism');
  dp.command('calibrate')
    .description('choose the granularity, modulus bits and per-client noise for a noise multiplier or a target epsilon, and report the (epsilon, delta) they give (zCDP/RDP accounting, no amplification by sampling)')
    .option('--noise-multiplier <z>', 'noise standard deviation of the sum over the clip norm (give this or --epsilon)', parseFloatOption('noise-multiplier', 0.001, 1e6))
    .option('--epsilon <e>', 'target epsilon after all rounds (give this or --noise-multiplier)', parseInterval('epsilon', 0, 1e4, true))
    .requiredOption('--delta <d>', 'delta of the (epsilon, delta) guarantee, in (0, 1)', parseInterval('delta', 0, 1))
    .requiredOption('--rounds <n>', 'rounds a client may take part in', parseIntOption('rounds', 1, 1e9))
    .requiredOption('--clients <n>', 'the fewest clients (honest survivors) whose noise is in every sum (n_min)', parseIntOption('clients', 1, 1e7))
    .option('--max-clients <n>', 'the most clients a sum can hold, for the wrap bound (default: --clients)', parseIntOption('max-clients', 1, 1e7))
    .requiredOption('--dim <n>', 'number of values in an update', parseIntOption('dim', 1, MAX_PADDED_DIM))
    .requiredOption('--clip <c>', 'L2 clip norm of each update', parseInterval('clip', 0, 1e12, true))
    .option('--bits <b>', 'modulus bits 2..32 (default: the fewest that cost at most 1% over the continuous Gaussian)', parseIntOption('bits', 2, 32))
    .option('--beta <b>', `conditional rounding parameter in [0, 1) (default ${DEFAULT_BETA.toPrecision(4)} = e^-0.5)`, parseBeta)
    .option('--wrap-probability <p>', `bound on the chance a round's sum wraps (default ${DEFAULT_WRAP_PROBABILITY})`, parseInterval('wrap-probability', 0, 1e-3, true))
    .option(
      '--assume-sampling-rate <q>',
      'opt-in: also report epsilon as if each client joined each round independently with probability q (honest Poisson sampling, which no client can check); a target --epsilon then applies to that figure',
      parseInterval('assume-sampling-rate', 0, 1, true),
    )
    .option('--json', 'print one JSON object on stdout')
    .action(function (this: Command, o: CalibrateOptions) {
      // Exactly one of the two: a usage error naming both flags, exit 2 (shared/cli/usage.ts).
      if ((o.noiseMultiplier === undefined) === (o.epsilon === undefined)) {
        this.error(`error: give exactly one of option '--noise-multiplier <z>' and option '--epsilon <e>'`, { exitCode: 2, code: 'aegis.dp.mode' });
      }
      if (o.maxClients !== undefined && o.maxClients < o.clients) this.error(`error: option '--max-clients <n>' must be at least --clients`, { exitCode: 2, code: 'aegis.dp.max-clients' });
      try {
        const c = calibrate({ ...o, noiseMultiplier: o.noiseMultiplier, epsilon: o.epsilon });
        printResult(o, { ok: true, ...c }, table(c));
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
