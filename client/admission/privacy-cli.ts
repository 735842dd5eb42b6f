/**
 * `aegis client privacy status`: what this client's DP rounds cost it (privacy-budget.ts), from
 * its contribution ledger (DATA_DIR/ledger.json, where the charges are sealed) — in total, per
 * publisher and per job, with the first and last round charged, ε at δ (the budget's δ, else
 * --delta) and the limit when one is given. Opening the ledger verifies it under the client's
 * identity, so it asks for the identity passphrase like `client run`.
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { readJsonFile } from '../../shared/cli/files.js';
import { printResult, reportError } from '../../shared/cli/output.js';
import { obtainPassphrase } from '../../shared/cli/passphrase.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { loadClient } from '../agent/data-dir.js';
import { openLedger } from './ledger-file.js';
import { parsePrivacyBudget, privacyView, type PrivacyLimit, type PrivacyView, type Spending } from './privacy-budget.js';

const DEFAULT_DIR = process.env.AEGIS_CLIENT_DIR ?? './aegis-client';
const DEFAULT_DELTA = 1e-5;

/** `--privacy-budget`'s value, or an `invalid-argument` naming the flag (exit 2). */
export function privacyBudgetOption(text: string): PrivacyLimit {
  try {
    return parsePrivacyBudget(text);
  } catch (err) {
    throw new AegisError(ErrorCode.InvalidArgument, `--privacy-budget: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function deltaOption(text: string): number {
  const d = Number(text);
  if (!/^[0-9.eE+-]+$/.test(text) || !(d > 0 && d < 1)) throw new AegisError(ErrorCode.InvalidArgument, `--delta must be a number in (0, 1), not '${text.slice(0, 40)}'`);
  return d;
}

/** The limit in a `client run --config` file (`privacyBudget`), if it has one. */
async function limitOfConfig(file: string): Promise<PrivacyLimit | undefined> {
  const json = await readJsonFile(file, '--config');
  const v = (json as { privacyBudget?: unknown } | null)?.privacyBudget;
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new AegisError(ErrorCode.InvalidArgument, `--config ${file}: privacyBudget must be a string 'epsilon=E,delta=D'`);
  try {
    return parsePrivacyBudget(v);
  } catch (err) {
    throw new AegisError(ErrorCode.InvalidArgument, `--config ${file}: privacyBudget: ${err instanceof Error ? err.message : String(err)}`);
  }
}

const spendingJson = (s: Spending): Record<string, unknown> => ({
  rounds: s.rounds,
  epsilon: s.epsilon,
  order: Number.isNaN(s.order) ? null : s.order,
  first_at: s.firstAt ?? null,
  last_at: s.lastAt ?? null,
});

/** The JSON shape (snake_case, like the rest of the CLI's JSON). */
export function privacyJson(dir: string, v: PrivacyView): Record<string, unknown> {
  return {
    ok: true,
    data_dir: dir,
    delta: v.delta,
    limit: v.limit ? { epsilon: v.limit.epsilon, delta: v.limit.delta } : null,
    remaining_epsilon: v.remaining ?? null,
    total: spendingJson(v.total),
    publishers: v.publishers.map((p) => ({ publisher: p.publisher, ...spendingJson(p) })),
    jobs: v.jobs.map((j) => ({ publisher: j.publisher, job_id: j.jobId ?? null, manifest_sha256: j.manifestSha256, round_indexes: j.roundIndexes, ...spendingJson(j) })),
  };
}

const eps = (e: number): string => e.toFixed(4);
const when = (s: Spending): string => (s.firstAt ? `${s.firstAt} .. ${s.lastAt}` : '');

export function privacyText(v: PrivacyView): string {
  const lines = [
    `spent: epsilon ${eps(v.total.epsilon)} at delta ${v.delta} over ${v.total.rounds} DP round(s)${v.total.rounds ? `  ${when(v.total)}` : ''}`,
    v.limit ? `budget: epsilon ${v.limit.epsilon} at delta ${v.limit.delta}; remaining epsilon ${eps(v.remaining ?? 0)}` : 'budget: none given (client run --privacy-budget); rounds are charged, none refused',
  ];
  if (v.publishers.length > 0) lines.push('per publisher:');
  for (const p of v.publishers) lines.push(`  ${p.publisher}  epsilon ${eps(p.epsilon)}  ${p.rounds} round(s)  ${when(p)}`);
  if (v.jobs.length > 0) lines.push('per job:');
  for (const j of v.jobs) lines.push(`  ${j.jobId ?? '(no job id)'}  manifest ${j.manifestSha256.slice(0, 12)}…  ${j.publisher}  epsilon ${eps(j.epsilon)}  ${j.rounds} round(s)  ${when(j)}`);
  return lines.join('\n');
}

export function registerPrivacy(client: Command): void {
  const privacy = client.command('privacy').description("this client's privacy budget: what its differentially private rounds cost it");
  privacy
    .command('status')
    .description('privacy spent in total, per publisher and per job (first and last round, epsilon at delta), and the budget when given')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--privacy-budget <epsilon=E,delta=D>', 'the budget to show the spending against (as client run --privacy-budget)')
    .option('--config <file>', "a client run --config file: its privacyBudget is the budget (--privacy-budget wins)")
    .option('--delta <delta>', 'the delta epsilon is given at when no budget is given', String(DEFAULT_DELTA))
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; privacyBudget?: string; config?: string; delta: string; json?: boolean }) => {
      try {
        const limit = o.privacyBudget !== undefined ? privacyBudgetOption(o.privacyBudget) : o.config ? await limitOfConfig(o.config) : undefined;
        const delta = deltaOption(o.delta);
        const dir = resolve(o.dataDir);
        const loaded = await loadClient(dir, await obtainPassphrase({ what: `the identity key in ${dir}` }));
        const { ledger } = await openLedger(dir, loaded.identity.seed, { missing: 'refuse' });
        const v = privacyView(ledger.privacyCharges(), delta, limit);
        printResult(o, privacyJson(dir, v), privacyText(v));
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
