/**
 * `aegis client ledger`: what this client joined and contributed, from its contribution ledger
 * (DATA_DIR/ledger.json) — job ids, manifest hashes, rounds, model versions and times;
 * never an input. Opening the ledger verifies it under the client's identity, so it asks for the
 * identity passphrase like `client run`.
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { printResult, reportError } from '../../shared/cli/output.js';
import { obtainPassphrase } from '../../shared/cli/passphrase.js';
import { loadClient } from '../agent/data-dir.js';
import type { LedgerView } from './ledger.js';
import { openLedger } from './ledger-file.js';
import { roundJson, roundName, roundRanges } from '../../shared/round-number.js';

const DEFAULT_DIR = process.env.AEGIS_CLIENT_DIR ?? './aegis-client';

/** The JSON shape (snake_case, like the rest of the CLI's JSON). */
export function ledgerJson(dir: string, v: LedgerView): Record<string, unknown> {
  return {
    ok: true,
    data_dir: dir,
    jobs: v.jobs.map((j) => ({
      job_id: j.jobId ?? null,
      manifest_sha256: j.manifestSha256,
      kind: j.kind,
      rounds: j.rounds ?? null,
      expires_at: j.expiresAt ?? null,
      joined_round_indexes: j.joined,
      contributions: j.contributions,
      contributed_from_version: j.contributedFrom ?? null,
      recent: j.recent.map((r) => ({
        ...roundJson(r.roundIndex),
        model_version: r.modelVersion ?? null,
        joined_at: r.joinedAt,
        contributed_at: r.contributedAt ?? null,
        outcome: r.outcome ?? null,
        input_id: r.input ?? null,
      })),
    })),
    inputs: v.inputs,
  };
}

export function ledgerText(v: LedgerView): string {
  if (v.jobs.length === 0) return 'no rounds joined yet';
  const lines: string[] = [];
  for (const j of v.jobs) {
    lines.push(
      `${j.jobId ?? '(no manifest)'}  ${j.kind}  manifest ${j.manifestSha256}`,
      `  rounds joined: ${roundRanges(j.joined)}${j.rounds !== undefined ? ` of ${j.rounds}` : ''}; contributed to ${j.contributions}${j.contributedFrom !== undefined ? `, last from model version ${j.contributedFrom}` : ''}`,
    );
    for (const r of j.recent) {
      const version = r.modelVersion !== undefined ? ` model v${r.modelVersion}` : '';
      const sent = r.contributedAt ? `contributed ${r.contributedAt}` : 'no input sent';
      lines.push(`    ${roundName(r.roundIndex)}${version}  joined ${r.joinedAt}  ${sent}  ${r.outcome ?? 'no outcome seen'}${r.input ? `  input ${r.input}` : ''}`);
    }
  }
  lines.push(`${v.inputs} plain input digest(s) kept`);
  return lines.join('\n');
}

export function registerLedger(client: Command): void {
  client
    .command('ledger')
    .description('what this client joined and contributed (job ids, manifest hashes, rounds, model versions, times; never inputs)')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; json?: boolean }) => {
      try {
        const dir = resolve(o.dataDir);
        const loaded = await loadClient(dir, await obtainPassphrase({ what: `the identity key in ${dir}` }));
        const { ledger } = await openLedger(dir, loaded.identity.seed, { missing: 'refuse' });
        const v = ledger.view();
        printResult(o, ledgerJson(dir, v), ledgerText(v));
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
