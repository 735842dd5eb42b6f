/** `aegis simulate`: registers the command on the CLI root. */
import { Command, Option } from 'commander';
import { parseDuration, parseFloatOption, parseIntOption, progress, reportError } from '../../shared/cli/output.js';
import { DROP_PHASES, type DropPhase } from './client-host.js';
import { simulate, type SimulateResult } from './simulate.js';
import { KILL_POINTS, simulateFrontends, type KillPoint } from './frontends-sim.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';

export function registerSimulate(program: Command): void {
  program
    .command('simulate')
    .description('run one whole secure-aggregation round (in this process, or over gRPC) and check its sum')
    .option('--clients <n>', 'cohort size n', parseIntOption('clients', 3, 10000), 100)
    .option('--dim <m>', 'model values per client m', parseIntOption('dim', 1, 2 ** 26), 100000)
    .option('--neighbors <k>', 'neighbour degree k (default n-1: classic SecAgg; smaller: SecAgg+)', parseIntOption('neighbors', 2, 9999))
    .option('--threshold <t>', 'Shamir / survivor threshold t (default floor(k/2)+1)', parseIntOption('threshold', 2, 9999))
    .option('--dropout <p>', 'fraction of clients that drop', parseFloatOption('dropout', 0, 1), 0)
    .addOption(new Option('--drop-phase <phase>', 'the phase they drop in').choices([...DROP_PHASES, 'any']).default('any'))
    .option('--seed <s>', 'seed for inputs and the dropout schedule', parseIntOption('seed', 0, 2 ** 31), 1)
    .option('--bits <b>', 'quantization bits', parseIntOption('bits', 1, 24), 16)
    .option('--clip <c>', 'clip range c', parseFloatOption('clip', 1e-9, 1e9), 1)
    .option('--workers <w>', 'local: worker threads for the clients (0: all in this thread; default: cores); grpc: client processes (at least 1; default: min(4, cores))', parseIntOption('workers', 0, 64))
    .addOption(new Option('--transport <t>', 'local: in-process calls; grpc: a coordinator on loopback gRPC/mTLS here, the clients in child processes').choices(['local', 'grpc']).default('local'))
    .option('--phase-timeout <duration>', 'grpc: every phase deadline, e.g. 3s (default: scaled to n, k and m)', parseDuration('phase-timeout', 100, 3_600_000))
    .option('--uploads-in-flight <u>', 'grpc: client-side pacing, masked-input uploads in flight per client process (0: no limit; the coordinator gates uploads itself)', parseIntOption('uploads-in-flight', 0, 10000), 0)
    .option('--warm-up', 'grpc: run one round of another job with the same clients first, and measure the second (channels, tokens and checked certificates as in a job\'s later rounds)')
    .option('--group-size <g>', 'split the cohort into aggregation groups of at most g clients (each its own SecAgg(+) instance; k and t apply per group)', parseIntOption('group-size', 6, 10000))
    .option('--fail-groups <f>', 'grouped rounds: this many groups lose all their clients (in --drop-phase), as if their front end failed', parseIntOption('fail-groups', 0, 10000))
    .option('--redis <url>', 'run the round on Redis with --frontends coordinator processes sharing its state (implies --transport grpc)')
    .option('--frontends <f>', 'with --redis: coordinator front-end processes; client process w starts on front end w mod F and fails over to the others', parseIntOption('frontends', 1, 16), 2)
    .addOption(new Option('--kill-frontend-at <phase>', 'with --redis: kill the last front end (SIGKILL) as it opens this phase for its clients, or (masked-taken) right after it took a masked input, before it wrote its partial sum').choices([...KILL_POINTS]))
    .option('--unmask-workers <u>', 'with --redis: unmask worker processes (0: the front ends expand the masks)', parseIntOption('unmask-workers', 0, 16), 0)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { redis?: string; frontends: number; killFrontendAt?: KillPoint; unmaskWorkers: number; groupSize?: number; failGroups?: number; clients: number; dim: number; neighbors?: number; threshold?: number; dropout: number; dropPhase: DropPhase | 'any'; seed: number; bits: number; clip: number; workers?: number; transport: 'local' | 'grpc'; phaseTimeout?: number; uploadsInFlight: number; warmUp?: boolean; json?: boolean }) => {
      try {
        const { phaseTimeout, redis, frontends, killFrontendAt, unmaskWorkers, ...rest } = o;
        if (!redis && (killFrontendAt !== undefined || unmaskWorkers > 0)) throw new AegisError(ErrorCode.InvalidArgument, '--kill-frontend-at and --unmask-workers need --redis URL');
        if (redis && (o.groupSize !== undefined || o.transport === 'local' && process.argv.includes('--transport'))) throw new AegisError(ErrorCode.InvalidArgument, '--redis runs over gRPC with front-end processes; it takes neither --transport local nor --group-size');
        if (o.warmUp && (redis || o.transport !== 'grpc')) throw new AegisError(ErrorCode.InvalidArgument, '--warm-up needs --transport grpc (without --redis)');
        const common = { ...rest, ...(phaseTimeout === undefined ? {} : { phaseTimeoutMs: phaseTimeout }), progress };
        const r = redis
          ? await simulateFrontends({ ...common, transport: 'grpc', redisUrl: redis, frontends, unmaskWorkers, ...(killFrontendAt ? { killFrontendAt } : {}) })
          : await simulate(common);
        if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
        else printSummary(r);
        if (!r.ok || !r.exact) process.exitCode = 1;
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}

/** Bytes as kB (10^3) with one decimal. */
const kb = (bytes: number): string => `${(bytes / 1000).toFixed(1)} kB`;

function printSummary(r: SimulateResult): void {
  const lines = r.ok
    ? [
        `round ${r.exact ? 'exact' : 'NOT EXACT'}: ${r.survivors}/${r.clients} survivors, max |error| ${r.max_abs_error?.toExponential(2)}`,
        `  ${r.mode} over ${r.transport} k=${r.neighbors} t=${r.threshold} m=${r.dim}; client mean ${r.timings_ms.client_mean} ms, max ${r.timings_ms.client_max} ms; unmask ${r.timings_ms.server_unmask} ms`,
        `  total ${r.timings_ms.total} ms, keystream ${(r.prg_bytes / 1e9).toFixed(2)} GB, peak RSS ${r.peak_rss_mb} MB`,
        `  per client: sent ${kb(r.bytes_per_client.total)} (masked input ${kb(r.bytes_per_client.masked)} at ${r.sum_bits} bits, floor m·r/8 = ${kb(r.masked_floor_bytes)}), received ${kb(r.bytes_down_per_client.total)}`,
        ...(r.groups ? [`  ${r.groups.count} groups of at most ${r.groups.group_size}: ${r.groups.completed} completed${r.groups.failed.length ? `, ${r.groups.failed.length} aborted (their ${r.groups.failed.reduce((a, f) => a + f.members, 0)} clients dropped)` : ''}`] : []),
      ]
    : [`round aborted in ${r.aborted_at}: ${r.reason} — ${r.detail}`];
  process.stdout.write(`${lines.join('\n')}\n`);
}
