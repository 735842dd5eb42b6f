/**
 * Audit mode (DESIGN.md §3), persisted in the client's data dir:
 *
 *   audit.json  the state (version 1, mode 0600, written atomically): how many jobs still need
 *               the operator's approval, why audit mode was entered, the pending approvals and
 *               the jobs admitted in this audit episode
 *   audit.log   one JSON line per decision (enter, approve, admit run/refused, leave), 0600
 *   audit.lock  held while one process reads-modifies-writes audit.json (O_EXCL)
 *
 * There is deliberately no way to leave audit mode early: the only writes are `enter`,
 * `approve` and `admit`, and the counter only goes down by admitting approved jobs. Nothing the
 * coordinator sends can reset it, and a damaged file is refused rather than read as "not in
 * audit mode".
 */
import { mkdir, open, readFile, constants as fsc } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { writeFileAtomic } from '../../shared/fs.js';
import { withFileLock } from '../../shared/fs-lock.js';

/** How many jobs after a trigger need an explicit approval. */
export const AUDIT_JOBS = 5;

export type AuditTrigger = 'validation-drop' | 'registry-mismatch' | 'poisoning-flag' | 'operator';

export interface AuditStatus {
  inAuditMode: boolean;
  remaining: number;
  enteredAt?: string;
  reason?: AuditTrigger;
  detail?: string;
  approvals: { jobId: string; manifestSha256: string; approvedAt: string }[];
  admitted: { jobId: string; manifestSha256: string; at: string }[];
}

export const AUDIT_FILE = 'audit.json';
export const AUDIT_LOG = 'audit.log';
export const AUDIT_LOCK = 'audit.lock';

const FORMAT_VERSION = 1;
const DETAIL_MAX = 200;
/** Bounds the file: an operator approving in a loop cannot grow it without limit. */
const MAX_APPROVALS = 64;

const JOB_ID = /^[A-Za-z0-9._-]{1,64}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const TRIGGERS = ['validation-drop', 'registry-mismatch', 'poisoning-flag', 'operator'] as const;

const Iso = z.string().min(1).max(40);
const StateSchema = z
  .object({
    version: z.literal(FORMAT_VERSION),
    remaining: z.number().int().min(0).max(AUDIT_JOBS),
    enteredAt: Iso.optional(),
    reason: z.enum(TRIGGERS).optional(),
    detail: z.string().max(DETAIL_MAX).optional(),
    approvals: z.array(z.object({ jobId: z.string().regex(JOB_ID), manifestSha256: z.string().regex(SHA256_HEX), approvedAt: Iso }).strict()).max(MAX_APPROVALS),
    admitted: z.array(z.object({ jobId: z.string().regex(JOB_ID), manifestSha256: z.string().regex(SHA256_HEX), at: Iso }).strict()).max(AUDIT_JOBS),
  })
  .strict()
  // In audit mode the reason and time must be there: a file that lost them is damaged, not "fine".
  .refine((s) => s.remaining === 0 || (s.enteredAt !== undefined && s.reason !== undefined));
type State = z.infer<typeof StateSchema>;

/** A missing file: audit mode was never entered. */
const NEVER_ENTERED: State = { version: FORMAT_VERSION, remaining: 0, approvals: [], admitted: [] };

type LogEvent = 'enter' | 'approve' | 'admit-run' | 'admit-refused' | 'leave' | 'refused' | DataEvent | 'schema';
/** Data leaving (backup, export) or entering (restore) the data dir; every one is logged. */
export type DataEvent = 'backup' | 'export' | 'restore';

export interface DataEventRecord {
  event: DataEvent;
  /** The encrypted file written or read (its path; never its contents). */
  file: string;
  sha256: string;
  bytes: number;
  records: number;
  /** 'passphrase' or the recipient's key fingerprint (SHA-256 of the public key, 16 hex). */
  protectedBy: string;
}
/** The only fields a log line carries: ids, hashes, fixed reason codes and counts, never values. */
interface LogLine {
  at: string;
  event: LogEvent;
  jobId?: string;
  manifestSha256?: string;
  reason?: string;
  remaining: number;
  file?: string;
  sha256?: string;
  bytes?: number;
  records?: number;
  protectedBy?: string;
  /** A change of the store's field schema: its new version and each field's old and new class (names only). */
  schemaVersion?: number;
  changes?: { field: string; from: string; to: string }[];
}


function checkJob(jobId: string, manifestSha256: string): void {
  if (typeof jobId !== 'string' || !JOB_ID.test(jobId)) {
    throw new AegisError(ErrorCode.InvalidArgument, 'the job id must be 1 to 64 characters of A-Z a-z 0-9 . _ -');
  }
  if (typeof manifestSha256 !== 'string' || !SHA256_HEX.test(manifestSha256)) {
    throw new AegisError(ErrorCode.InvalidArgument, 'the manifest SHA-256 must be 64 lowercase hex digits');
  }
}

/** Keeps the operator's note short and on one line (it is shown in status output). */
function cleanDetail(detail: string | undefined): string | undefined {
  if (detail === undefined) return undefined;
  // eslint-disable-next-line no-control-regex
  const s = detail.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, DETAIL_MAX);
  return s.length > 0 ? s : undefined;
}

function toStatus(s: State): AuditStatus {
  return {
    inAuditMode: s.remaining > 0,
    remaining: s.remaining,
    ...(s.enteredAt !== undefined ? { enteredAt: s.enteredAt } : {}),
    ...(s.reason !== undefined ? { reason: s.reason } : {}),
    ...(s.detail !== undefined ? { detail: s.detail } : {}),
    approvals: s.approvals.map((a) => ({ ...a })),
    admitted: s.admitted.map((a) => ({ ...a })),
  };
}

const samePair = (a: { jobId: string; manifestSha256: string }, jobId: string, sha: string): boolean => a.jobId === jobId && a.manifestSha256 === sha;

export class AuditBook {
  private constructor(
    private readonly dir: string,
    private readonly clock: () => number,
  ) {}

  /** Opens the book in DATA_DIR (created 0700 if missing) and checks the state file once. */
  static async open(dataDir: string, clock: () => number = Date.now): Promise<AuditBook> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const book = new AuditBook(dataDir, clock);
    await book.status(); // a damaged audit.json is reported at start, not at the first job
    return book;
  }

  private get file(): string {
    return join(this.dir, AUDIT_FILE);
  }

  private now(): string {
    return new Date(this.clock()).toISOString();
  }

  async status(): Promise<AuditStatus> {
    return this.locked(async () => toStatus(await this.read()));
  }

  /**
   * Enters audit mode (or re-enters it): the next AUDIT_JOBS jobs need approval. Approvals given
   * and jobs admitted before this trigger are dropped — they were decided without knowing of it.
   */
  async enter(trigger: AuditTrigger, detail?: string): Promise<AuditStatus> {
    if (!(TRIGGERS as readonly string[]).includes(trigger)) throw new AegisError(ErrorCode.InvalidArgument, `unknown audit trigger '${String(trigger)}'`);
    const note = cleanDetail(detail);
    return this.locked(async () => {
      const at = this.now();
      const s: State = { version: FORMAT_VERSION, remaining: AUDIT_JOBS, enteredAt: at, reason: trigger, ...(note !== undefined ? { detail: note } : {}), approvals: [], admitted: [] };
      await this.write(s);
      await this.log({ at, event: 'enter', reason: trigger, remaining: s.remaining });
      return toStatus(s);
    });
  }

  /**
   * Records the operator's approval of exactly (jobId, manifestSha256), used by one admission.
   * Outside audit mode, or for a job already admitted in this episode, nothing is stored and
   * `needed` is false.
   */
  async approve(jobId: string, manifestSha256: string): Promise<{ needed: boolean; status: AuditStatus }> {
    checkJob(jobId, manifestSha256);
    return this.locked(async () => {
      const s = await this.read();
      const at = this.now();
      if (s.remaining === 0 || s.admitted.some((a) => samePair(a, jobId, manifestSha256))) {
        await this.log({ at, event: 'approve', jobId, manifestSha256, reason: s.remaining === 0 ? 'not-in-audit-mode' : 'already-admitted', remaining: s.remaining });
        return { needed: false, status: toStatus(s) };
      }
      if (!s.approvals.some((a) => samePair(a, jobId, manifestSha256))) {
        if (s.approvals.length >= MAX_APPROVALS) throw new AegisError(ErrorCode.InvalidArgument, `${MAX_APPROVALS} approvals are already pending; run the approved jobs first`);
        s.approvals.push({ jobId, manifestSha256, approvedAt: at });
        await this.write(s);
      }
      await this.log({ at, event: 'approve', jobId, manifestSha256, remaining: s.remaining });
      return { needed: true, status: toStatus(s) };
    });
  }

  /**
   * Records a round the client refused before admission (a trust check failed: unknown key,
   * rollback, registry mismatch, a model that does not match its hash, ...). Only the reason
   * code and, when known, the job and manifest hash go to the log.
   */
  async refused(code: string, job?: { jobId: string; manifestSha256: string }): Promise<void> {
    const reason = /^[a-z-]{1,40}$/.test(code) ? code : 'internal';
    const ok = job && JOB_ID.test(job.jobId) && SHA256_HEX.test(job.manifestSha256);
    await this.locked(async () => {
      const s = await this.read();
      await this.log({ at: this.now(), event: 'refused', ...(ok ? { jobId: job.jobId, manifestSha256: job.manifestSha256 } : {}), reason, remaining: s.remaining });
    });
  }

  /**
   * Decides whether a job may run (called by the client before each round of a job). In audit
   * mode a job not yet admitted needs an approval for its exact (jobId, manifestSha256): it is
   * consumed and the counter goes down; when the counter reaches 0, audit mode is over.
   */
  async admit(jobId: string, manifestSha256: string): Promise<{ decision: 'run'; remaining: number }> {
    checkJob(jobId, manifestSha256);
    return this.locked(async () => {
      const s = await this.read();
      const at = this.now();
      if (s.remaining === 0) {
        await this.log({ at, event: 'admit-run', jobId, manifestSha256, reason: 'not-in-audit-mode', remaining: 0 });
        return { decision: 'run' as const, remaining: 0 };
      }
      if (s.admitted.some((a) => samePair(a, jobId, manifestSha256))) {
        // Another round of a job already approved: it was counted once.
        await this.log({ at, event: 'admit-run', jobId, manifestSha256, reason: 'already-admitted', remaining: s.remaining });
        return { decision: 'run' as const, remaining: s.remaining };
      }
      const i = s.approvals.findIndex((a) => samePair(a, jobId, manifestSha256));
      if (i < 0) {
        await this.log({ at, event: 'admit-refused', jobId, manifestSha256, reason: 'no-approval', remaining: s.remaining });
        throw new AegisError(
          ErrorCode.ApprovalRequired,
          `job ${jobId} (manifest ${manifestSha256}) needs the operator's approval: audit mode (${s.reason ?? 'unknown'}), ${s.remaining} job(s) left to approve; ` +
            `run: aegis client approve ${jobId} --manifest-sha256 ${manifestSha256} --data-dir ${this.dir}`,
        );
      }
      s.approvals.splice(i, 1);
      s.remaining -= 1;
      s.admitted.push({ jobId, manifestSha256, at });
      // Approvals still pending when the episode ends are dropped: they are no longer needed.
      if (s.remaining === 0) s.approvals = [];
      await this.write(s);
      await this.log({ at, event: 'admit-run', jobId, manifestSha256, reason: 'approved', remaining: s.remaining });
      if (s.remaining === 0) await this.log({ at, event: 'leave', reason: 'approved-jobs-done', remaining: 0 });
      return { decision: 'run' as const, remaining: s.remaining };
    });
  }

  // -------------------------------------------------------------------------------------------

  /** Appends a backup, export or restore to the audit log (file, hash, size, count, key — no data). */
  async dataEvent(e: DataEventRecord): Promise<void> {
    await this.locked(async () => {
      const s = await this.read();
      await this.log({ at: this.now(), event: e.event, file: e.file, sha256: e.sha256, bytes: e.bytes, records: e.records, protectedBy: e.protectedBy, remaining: s.remaining });
    });
  }

  /**
   * Appends a change of the store's field schema (which fields are stored in clear): the new
   * schema version and, per field, its normalised name, old and new class — never a value.
   */
  async schemaEvent(e: { schemaVersion: number; changes: readonly { field: string; from: string; to: string }[] }): Promise<void> {
    await this.locked(async () => {
      const s = await this.read();
      await this.log({ at: this.now(), event: 'schema', schemaVersion: e.schemaVersion, changes: e.changes.map((c) => ({ field: c.field, from: c.from, to: c.to })), remaining: s.remaining });
    });
  }

  /** The audit log's lines, oldest first (for `aegis client audit log` and tests). */
  async logLines(): Promise<Record<string, unknown>[]> {
    const text = await readFile(join(this.dir, AUDIT_LOG), 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return '';
      throw e;
    });
    return text
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  /** Reads audit.json; a missing file = never entered, anything unreadable is refused. */
  private async read(): Promise<State> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { ...NEVER_ENTERED, approvals: [], admitted: [] };
      throw e;
    }
    const damaged = (why: string): AegisError =>
      new AegisError(
        ErrorCode.InvalidArgument,
        `${this.file} is ${why}: audit mode is not reset for a damaged file; inspect it (and ${AUDIT_LOG}), then fix or restore it, or delete it only if you mean to leave audit mode`,
      );
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw damaged('not valid JSON');
    }
    const r = StateSchema.safeParse(json);
    if (!r.success) throw damaged(`not a version-${FORMAT_VERSION} audit state (missing or bad fields)`);
    return r.data;
  }

  private async write(s: State): Promise<void> {
    await writeFileAtomic(this.file, `${JSON.stringify(s, null, 1)}\n`, 0o600);
  }

  private async log(line: LogLine): Promise<void> {
    const fh = await open(join(this.dir, AUDIT_LOG), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_APPEND, 0o600);
    try {
      await fh.chmod(0o600);
      await fh.write(`${JSON.stringify(line)}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /**
   * Runs `fn` holding audit.lock, so the CLI (approve) and a running client (admit) never lose
   * each other's update. Waits up to ~5 s; a lock older than 30 s is from a crashed process.
   */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(join(this.dir, AUDIT_LOCK), 'aegis client run or an audit command', fn);
  }


  /** Moves a stale lock aside (rename is atomic: of two processes breaking it, one wins). */

}
