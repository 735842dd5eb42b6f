/**
 * `aegis client audit enter|status` and `aegis client approve`: the operator's side of audit
 * mode. They touch only DATA_DIR/audit.* (no passphrase: nothing secret is read or written).
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { reportError, printResult } from '../../shared/cli/output.js';
import { AuditBook, type AuditStatus } from './audit.js';

const DEFAULT_DIR = process.env.AEGIS_CLIENT_DIR ?? './aegis-client';

/** The JSON shape of a status (snake_case, like the rest of the CLI's JSON). */
function statusJson(dir: string, s: AuditStatus): Record<string, unknown> {
  return {
    data_dir: dir,
    in_audit_mode: s.inAuditMode,
    remaining: s.remaining,
    entered_at: s.enteredAt ?? null,
    reason: s.reason ?? null,
    detail: s.detail ?? null,
    approvals: s.approvals.map((a) => ({ job_id: a.jobId, manifest_sha256: a.manifestSha256, approved_at: a.approvedAt })),
    admitted: s.admitted.map((a) => ({ job_id: a.jobId, manifest_sha256: a.manifestSha256, at: a.at })),
  };
}

function statusText(s: AuditStatus): string {
  if (!s.inAuditMode) {
    return s.enteredAt ? `not in audit mode (last entered ${s.enteredAt}, ${s.reason ?? 'unknown reason'}; its approved jobs are done)` : 'not in audit mode (never entered)';
  }
  const lines = [
    `IN AUDIT MODE since ${s.enteredAt ?? '?'}: ${s.reason ?? '?'}${s.detail ? ` (${s.detail})` : ''}`,
    `  ${s.remaining} more job(s) need approval (aegis client approve JOB --manifest-sha256 H)`,
  ];
  if (s.approvals.length === 0) lines.push('  pending approvals: none');
  else lines.push('  pending approvals:', ...s.approvals.map((a) => `    ${a.jobId}  ${a.manifestSha256}  approved ${a.approvedAt}`));
  if (s.admitted.length > 0) lines.push('  admitted in this audit:', ...s.admitted.map((a) => `    ${a.jobId}  ${a.manifestSha256}  at ${a.at}`));
  return lines.join('\n');
}


export function registerAudit(client: Command): void {
  const audit = client.command('audit').description('audit mode: after a trigger, the next jobs need the operator’s approval');
  audit
    .command('enter')
    .description('enter audit mode now (the next 5 jobs need approval); re-entering starts the count again')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--reason <text>', 'a short note for the record (at most 200 characters; no secrets)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; reason?: string; json?: boolean }) => {
      try {
        const dir = resolve(o.dataDir);
        const book = await AuditBook.open(dir);
        const s = await book.enter('operator', o.reason);
        printResult(o, { ok: true, ...statusJson(dir, s) }, `entered audit mode: the next ${s.remaining} jobs need approval (aegis client approve JOB --manifest-sha256 H --data-dir ${dir})`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
  audit
    .command('status')
    .description('whether the client is in audit mode, how many jobs still need approval, pending approvals')
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; json?: boolean }) => {
      try {
        const dir = resolve(o.dataDir);
        const s = await (await AuditBook.open(dir)).status();
        printResult(o, { ok: true, ...statusJson(dir, s) }, statusText(s));
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  client
    .command('approve')
    .description('in audit mode: approve one job, bound to its manifest hash (used by one job)')
    .argument('<job>', 'the job id')
    .requiredOption('--manifest-sha256 <hex>', "the SHA-256 of the job's manifest (64 hex digits)")
    .option('--data-dir <dir>', 'the client data dir', DEFAULT_DIR)
    .option('--json', 'print one JSON object on stdout')
    .action(async (job: string, o: { manifestSha256: string; dataDir: string; json?: boolean }) => {
      try {
        const dir = resolve(o.dataDir);
        const book = await AuditBook.open(dir);
        const r = await book.approve(job, o.manifestSha256.trim().toLowerCase());
        const text = r.needed
          ? `approved ${job} (manifest ${o.manifestSha256.trim().toLowerCase()}); ${r.status.remaining} job(s) still need approval in this audit`
          : r.status.inAuditMode
            ? `${job} with this manifest is already admitted; no approval needed`
            : 'not in audit mode: no approval needed (nothing recorded)';
        printResult(o, { ok: true, needed: r.needed, job_id: job, manifest_sha256: o.manifestSha256.trim().toLowerCase(), ...statusJson(dir, r.status) }, text);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
