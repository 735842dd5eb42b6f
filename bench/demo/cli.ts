/** `aegis demo`: registers the command on the CLI root (see run.ts for what it does). */
import type { Command } from 'commander';
import { access, constants, stat } from 'node:fs/promises';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { parseChoice, parseDuration, parseFloatOption, parseIntOption, progress, reportError } from '../../shared/cli/output.js';
import { DEFAULT_PYTHON, DEMO_TRAINERS, type DemoTrainer } from './trainers.js';
import { runDemo, type DemoResult } from './run.js';

/** `aegis demo --dp` defaults: (ε, δ) for the whole job and the clip of each update. */
export const DEMO_DP_DEFAULTS = { epsilon: 8, delta: 1e-5, clip: 1 } as const;

interface DemoCliOptions {
  trainer: DemoTrainer;
  python: string;
  clients: number;
  rounds: number;
  dropout: number;
  seed: number;
  alpha: number;
  workers?: number;
  perDigit?: number;
  out: string;
  json?: boolean;
  dashboard?: string;
  dashboardAllowRemote?: boolean;
  dashboardHold: number;
  dp?: boolean;
  epsilon?: number;
  delta?: number;
  clip?: number;
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('federated training of a digits classifier on real MNIST digits: a coordinator and N clients over loopback TLS, FedAvg with secure aggregation')
    .option('--clients <n>', 'clients, each with its own non-IID shard', parseIntOption('clients', 3, 200), 10)
    .option('--rounds <r>', 'FedAvg rounds', parseIntOption('rounds', 1, 1000), 10)
    .option('--dropout <p>', 'probability that a client vanishes in a round (in a random phase)', parseFloatOption('dropout', 0, 0.5), 0)
    .option('--seed <s>', 'seed of the data split, the initial model and the dropouts', parseIntOption('seed', 0, 2 ** 31), 42)
    .option('--alpha <a>', 'Dirichlet concentration of the split (smaller: more skewed)', parseFloatOption('alpha', 0.01, 1000), 1)
    .option('--workers <w>', 'client processes (default: min(2, cores))', parseIntOption('workers', 1, 64))
    .option('--per-digit <n>', 'use only the first n digits of each class (quick runs)', parseIntOption('per-digit', 20, 2000))
    .option('--out <dir>', 'where the chart, the final model and result.json go', './aegis-demo')
    .option('--trainer <trainer>', 'who trains in every client: tfjs (built in), pytorch (examples/pytorch-digits, a small CNN) or numpy (examples/numpy-logreg); an external trainer runs as a process per fit, and the coordinator checks each model with the same script (--evaluator-cmd)', parseChoice('trainer', DEMO_TRAINERS), 'tfjs')
    .option('--python <path>', 'the Python that runs --trainer pytorch|numpy (it needs torch or numpy)', DEFAULT_PYTHON)
    .option('--json', 'print one JSON object on stdout (progress still goes to stderr)')
    .option('--dashboard <host:port>', "serve the coordinator's web dashboard there (loopback only unless --dashboard-allow-remote); its login link is printed on stderr")
    .option('--dashboard-allow-remote', 'let --dashboard listen on a non-loopback address')
    .option('--dashboard-hold <duration>', 'keep the coordinator and dashboard up this long after the last round', parseDuration('dashboard-hold', 0, 24 * 3_600_000), 0)
    .option('--dp', 'run the job differentially private (distributed discrete Gaussian inside the secure sum): the manifest gets a dp section calibrated for --epsilon and --delta over all its rounds')
    .option('--epsilon <e>', `with --dp: target epsilon for the whole job (default ${DEMO_DP_DEFAULTS.epsilon})`, parseFloatOption('epsilon', 0.01, 1000))
    .option('--delta <d>', `with --dp: delta of the guarantee, in (0, 1e-3] (default ${DEMO_DP_DEFAULTS.delta})`, parseFloatOption('delta', 1e-12, 1e-3))
    .option('--clip <c>', `with --dp: L2 clip of each client's update, before the noise (default ${DEMO_DP_DEFAULTS.clip})`, parseFloatOption('clip', 1e-6, 1e6))
    .action(async function (this: Command, o: DemoCliOptions) {
      const dpFlag = (['epsilon', 'delta', 'clip'] as const).find((k) => o[k] !== undefined);
      if (!o.dp && dpFlag !== undefined) {
        const flag = { epsilon: '--epsilon <e>', delta: '--delta <d>', clip: '--clip <c>' }[dpFlag];
        this.error(`error: option '${flag}' needs --dp`, { exitCode: 2, code: 'aegis.demo.dp-option' });
      }
      const live = liveProgress();
      try {
        if (o.trainer !== 'tfjs') await checkPython(o.python);
        const r = await runDemo({
          trainer: o.trainer,
          python: o.python,
          clients: o.clients,
          rounds: o.rounds,
          dropout: o.dropout,
          seed: o.seed,
          alpha: o.alpha,
          outDir: o.out,
          ...(o.workers === undefined ? {} : { workers: o.workers }),
          ...(o.perDigit === undefined ? {} : { perDigitLimit: o.perDigit }),
          progress: live.progress,
          status: live.status,
          ...(o.dashboard === undefined ? {} : { dashboard: o.dashboard, dashboardAllowRemote: o.dashboardAllowRemote === true, dashboardHoldMs: o.dashboardHold }),
          ...(o.dp ? { dp: { epsilon: o.epsilon ?? DEMO_DP_DEFAULTS.epsilon, delta: o.delta ?? DEMO_DP_DEFAULTS.delta, clip: o.clip ?? DEMO_DP_DEFAULTS.clip } } : {}),
        });
        live.end();
        if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
        else process.stdout.write(summary(r));
        if (!r.ok) process.exitCode = 1;
      } catch (err) {
        live.end();
        reportError(err, Boolean(o.json));
      }
    });
}

/** `--python` must be an executable file (a missing one is named before any coordinator starts). */
async function checkPython(path: string): Promise<void> {
  const ok = await stat(path)
    .then(async (st) => st.isFile() && (await access(path, constants.X_OK).then(() => true, () => false)))
    .catch(() => false);
  if (!ok) throw new AegisError(ErrorCode.InvalidArgument, `--python ${path} is not an executable file`, 'give the Python that has torch (pytorch) or numpy (numpy), e.g. --python /usr/bin/python3');
}

/**
 * Progress on stderr: on a terminal the status line is redrawn in place and lasting lines go
 * above it; otherwise the status is printed once per round and phase.
 */
function liveProgress(): { progress: (line: string) => void; status: (line: string, key: string) => void; end: () => void } {
  const tty = process.stderr.isTTY;
  let shown = false;
  let lastKey = '';
  const clear = (): void => {
    if (shown) process.stderr.write('\r\x1b[2K');
    shown = false;
  };
  return {
    progress: (line) => {
      if (tty) clear();
      progress(line);
    },
    status: (line, key) => {
      if (tty) {
        clear();
        process.stderr.write(line.slice(0, Math.max(20, (process.stderr.columns || 120) - 1)));
        shown = true;
      } else if (key !== lastKey) {
        progress(line);
      }
      lastKey = key;
    },
    end: clear,
  };
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;

/** The per-round table and where the outputs went. */
export function summary(r: DemoResult): string {
  const head = ['model', 'round', 'clients', 'dropouts', 'examples', 'test acc', 'test loss', 'time', 'train max', 'mask max', 'unmask'];
  const rows = [
    ['v0', '-', '-', '-', '-', pct(r.initial.accuracy), r.initial.loss.toFixed(4), '-', '-', '-', '-'],
    ...r.per_round.map((x) => [
      `v${x.model_version}`,
      String(x.round_number),
      `${x.clients}/${x.invited}`,
      String(x.dropouts),
      String(x.examples),
      pct(x.accuracy),
      x.loss.toFixed(4),
      `${(x.ms / 1000).toFixed(1)} s`,
      `${x.timings_ms.train_max} ms`,
      `${x.timings_ms.mask_max} ms`,
      `${x.timings_ms.unmask} ms`,
    ]),
  ];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
    '',
    ...r.aborted.map((a) => `round ${a.round_number} aborted (${a.reason}): ${a.detail}`),
    `${r.ok ? 'completed' : `FAILED (${r.detail})`}: ${r.per_round.length} rounds, ${r.clients} clients (${r.dropped} dropouts, ${r.aborted_rounds} aborted rounds), ${(r.total_ms / 1000).toFixed(1)} s`,
    `final test accuracy ${pct(r.final.accuracy)}${r.dp ? ` at (ε = ${r.dp.epsilon.toFixed(3)}, δ = ${r.dp.delta})` : ''} (loss ${r.final.loss.toFixed(4)}) on ${r.test_examples} held-out digits; ${r.train_examples} digits across the clients (each holds 10% out to check new models); ${r.parameters} parameters; ${r.trainer === 'tfjs' ? `tfjs ${r.backend}` : `trainer ${r.trainer} (an external process per fit; the coordinator's evaluator measured the accuracy)`}`,
    ...(r.dp
      ? [
          `differential privacy: (ε = ${r.dp.epsilon.toFixed(3)}, δ = ${r.dp.delta}) for the whole job of ${r.dp.rounds} rounds (accountant, no subsampling amplification); clip ${r.dp.clip}, noise multiplier ${r.dp.noise_multiplier.toFixed(3)}, noise sized for ${r.dp.min_clients} survivors of ${r.dp.max_clients}, ${r.dp.bits} bits`,
        ]
      : []),
    `chart: ${r.chart}`,
    r.trainer === 'tfjs' ? `model (tfjs format): ${r.model_dir}/model.json  (weights.bin sha256 ${r.model_sha256})` : `model (safetensors): ${r.model_dir}/model.safetensors  (weights sha256 ${r.model_sha256})`,
  ];
  return `${out.join('\n')}\n`;
}
