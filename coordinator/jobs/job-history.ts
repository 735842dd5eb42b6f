/**
 * The job history: what the coordinator keeps of its jobs across restarts, in
 * `<dataDir>/jobs.db` (SQLite through better-sqlite3; mode 0600, WAL, secure_delete, every write
 * one transaction with synchronous = FULL, so a coordinator killed with SIGKILL finds every
 * change it reported before the kill). Only the embedded default (one coordinator process, no
 * Redis) keeps it; with Redis the job directory on Redis plays that part.
 *
 * Layout (meta 'layout' = 1):
 *   jobs(job_id, revision, manifest_json, signed_manifest, signer, launched_at, cancelled_at,
 *        training, PRIMARY KEY(job_id, revision))
 *     manifest_json  the manifest's bytes as launched (its SHA-256 is the manifest hash)
 *     signed_manifest the publisher-signed envelope it came in, if any; signer: key id, publisher
 *     training       JSON: state, rounds completed / aborted (in a row), detail, flagged rounds, gather
 *   rounds(job_id, revision, idx, round, sum, PRIMARY KEY(job_id, revision, idx))
 *     round          JSON: start and end times, the cohort (client ids, until retention), the
 *                    outcome (survivors until retention; reason, phase and detail of an abort;
 *                    declines by reason — counts), the counts per phase, the timeline
 *     sum            a completed round's unmasked sum (the published result), little-endian u32
 *   models(job_id, revision, version, sha256, weights, meta, PRIMARY KEY(job_id, revision, version))
 *     weights        the model version (float32 little-endian); meta: JSON round, clients,
 *                    total weight, time, validation accuracy and loss
 * No client input — masked or not — and no key is ever written here: the coordinator never
 * holds an input in clear, and a round's protocol state (advertised keys, encrypted shares,
 * masked vectors) stays in memory and is lost with its process.
 *
 * The Jobs owner (./jobs.ts) calls `save` after each change it reports; this module only maps
 * job records to rows and back.
 */
import { create } from '@bufbuild/protobuf';
import { chmodSync, closeSync, constants as fsc, existsSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { parseManifest } from '../../shared/protocol/manifest.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { vectorFromBytes, vectorToBytes } from '../../shared/rpc/convert.js';
import { roundName } from '../../shared/round-number.js';
import { FrozenHost } from '../hosts/frozen-host.js';
import type { PhaseStart, RoundHostLike, RoundStatus } from '../hosts/types.js';
import type { DeclineCounts, RoundOutcome } from '../round/index.js';
import type { CompletedState, AbortedState } from '../round/types.js';
import { UploadGate } from '../service/upload-gate.js';
import { maskedDim, maskedRoundParams } from '../../shared/protocol/dp-manifest.js';
import { ModelStore, newTrainingProgress, weightBytes, weightsOf, type ModelVersionRecord, type TrainingJobState } from './training.js';
import type { Job, ManifestSigner, RoundRecord } from './types.js';

export const JOB_HISTORY_FILE = 'jobs.db';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  job_id TEXT NOT NULL, revision INTEGER NOT NULL, manifest_json BLOB NOT NULL, signed_manifest BLOB,
  signer TEXT, launched_at INTEGER NOT NULL, cancelled_at INTEGER, training TEXT,
  PRIMARY KEY (job_id, revision));
CREATE TABLE IF NOT EXISTS rounds (
  job_id TEXT NOT NULL, revision INTEGER NOT NULL, idx INTEGER NOT NULL, round TEXT NOT NULL, sum BLOB,
  PRIMARY KEY (job_id, revision, idx));
CREATE TABLE IF NOT EXISTS models (
  job_id TEXT NOT NULL, revision INTEGER NOT NULL, version INTEGER NOT NULL, sha256 BLOB NOT NULL,
  weights BLOB NOT NULL, meta TEXT NOT NULL, PRIMARY KEY (job_id, revision, version));`;

/** A round as the history keeps it (the `round` column). */
interface StoredRound {
  index: number;
  startedAt: number;
  endedAt?: number;
  cohort: string[];
  retired?: { invited: number; survivors: number };
  status: RoundStatus;
  timeline: PhaseStart[];
  closeMs: Partial<Record<Phase, number>>;
  outcome?: { ok: true; survivors: string[]; declines: DeclineCounts } | { ok: false; reason: AbortReason; at: Phase; detail: string; declines: DeclineCounts; approvalShortfall: boolean };
}

/** A training job's progress as the history keeps it (the `training` column). */
interface StoredTraining {
  state: TrainingJobState;
  completed: number;
  aborted: number;
  abortedInARow: number;
  detail: string;
  flagged: number[];
  gatherMs: number;
}

interface StoredModelMeta {
  roundIndex?: number;
  clients: number;
  totalWeight: number;
  createdAt: number;
  validationAccuracy?: number;
  validationLoss?: number;
}

/** A job read back from the history, with whether an operator cancelled it (and when). */
export interface RestoredJob {
  job: Job;
  cancelledAt?: number;
  /** Indexes of rounds that were running when the coordinator stopped (now aborted, `interrupted`). */
  interrupted: number[];
}

/** Where a job's model versions are exported as files: `models/<jobId>` (revision 1) or `models/<jobId>@r<N>`. */
export const modelDirName = (jobId: string, revision: number): string => (revision <= 1 ? jobId : `${jobId}@r${revision}`);

const noIdentity = (): undefined => undefined;
/** The start envelope of a round no longer running (nothing is sent from it again). */
const NO_START = create(pb.ServerEnvelopeSchema, {});

/** Where a completed round's sum is read from: the history's row of the round. */
interface SumSource {
  history: JobHistory;
  jobId: string;
  revision: number;
  index: number;
}

/**
 * A completed round's final state whose `sum` is read from the job history each time it is asked
 * for: the history holds it, memory does not. `sum` is a getter of the class, so every such
 * state shares one shape. Copy one with `copyWith` (its prototype kept), never by spreading: a
 * spread copy has no `sum`.
 */
class StateWithStoredSum {
  readonly phase = Phase.Completed;
  constructor(
    readonly cfg: CompletedState['cfg'],
    readonly stats: CompletedState['stats'],
    readonly survivors: readonly string[],
    private readonly source: SumSource,
  ) {}

  get sum(): Uint32Array {
    const { history, jobId, revision, index } = this.source;
    return history.readSum(jobId, revision, index);
  }
}

/** A completed outcome whose `sum` (and its state's) is read from the job history when asked for; see StateWithStoredSum. */
class OutcomeWithStoredSum {
  readonly ok = true as const;
  constructor(
    readonly survivors: readonly string[],
    readonly declines: DeclineCounts,
    readonly state: StateWithStoredSum,
  ) {}

  get sum(): Uint32Array {
    return this.state.sum;
  }
}

function outcomeWithStoredSum(survivors: readonly string[], declines: DeclineCounts, cfg: CompletedState['cfg'], stats: CompletedState['stats'], source: SumSource): RoundOutcome {
  return new OutcomeWithStoredSum(survivors, declines, new StateWithStoredSum(cfg, stats, survivors, source)) as unknown as RoundOutcome;
}

const INTERRUPTED_DETAIL = 'the coordinator stopped during this round (killed or crashed); nothing was published';

export class JobHistory {
  private readonly db: Database.Database;
  /** What each round was last saved as, so unchanged rounds are not written again. */
  private readonly savedRounds = new WeakMap<RoundRecord, string>();
  /** Model versions of each job (`id@revision`) already written. */
  private readonly savedModels = new Map<string, number>();

  private constructor(db: Database.Database) {
    this.db = db;
  }

  /** Opens (or creates) `dataDir/jobs.db`, mode 0600. */
  static open(dataDir: string): JobHistory {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const path = join(dataDir, JOB_HISTORY_FILE);
    // Created with mode 0600 before SQLite opens it (SQLite would use the umask).
    closeSync(openSync(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600));
    chmodSync(path, 0o600);
    const db = new Database(path);
    try {
      db.pragma('journal_mode = WAL');
      // Each commit reaches the disk before `save` returns (a kill or power cut keeps it).
      db.pragma('synchronous = FULL');
      // Freed pages are zeroed: rows retention rewrote do not linger in the file.
      db.pragma('secure_delete = ON');
      // A page cache of 1 MiB: the history is written round after round and read back by point
      // lookups (a round's sum when asked for), so a larger cache buys nothing — better-sqlite3's
      // default of 16 MB would fill with the rows of past rounds, and a coordinator's memory
      // would grow with its rounds until it did.
      db.pragma('cache_size = -1024');
      db.exec(SCHEMA);
      db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('layout', '1')").run();
      for (const s of ['-wal', '-shm']) if (existsSync(path + s)) chmodSync(path + s, 0o600);
    } catch (err) {
      db.close();
      throw err;
    }
    return new JobHistory(db);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  /**
   * Moves every committed change into the database file and empties the WAL (`TRUNCATE`), so
   * rows retention rewrote are gone from both files: secure_delete zeroed their old content in
   * the database, and the WAL's older frames that still held it are cut off.
   */
  checkpoint(): void {
    if (this.db.open) this.db.pragma('wal_checkpoint(TRUNCATE)');
  }

  /**
   * Writes a job as it stands: its row, every round that changed since it was last saved, and
   * its model versions not written yet — in one transaction. Returns the rounds it wrote.
   */
  save(job: Job, cancelledAt: number | undefined): RoundRecord[] {
    if (!this.db.open) return [];
    const revision = job.manifest.revision;
    const t = job.training;
    const training: StoredTraining | null = t
      ? { state: t.state, completed: t.completed, aborted: t.aborted, abortedInARow: t.abortedInARow, detail: t.detail, flagged: [...t.flagged], gatherMs: t.gatherMs }
      : null;
    const rounds = job.rounds
      .filter((r) => !r.released)
      .map((r) => ({ r, stored: storedRound(r) }))
      .map(({ r, stored }) => ({ r, stored, json: JSON.stringify(stored) }))
      .filter(({ r, json }) => this.savedRounds.get(r) !== json);
    const key = `${job.jobId}@${revision}`;
    const models = t ? t.models.all : [];
    const written = this.savedModels.get(key) ?? 0;
    this.db.transaction(() => {
      this.db
        .prepare(
          `INSERT INTO jobs (job_id, revision, manifest_json, signed_manifest, signer, launched_at, cancelled_at, training) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (job_id, revision) DO UPDATE SET cancelled_at = excluded.cancelled_at, training = excluded.training`,
        )
        .run(
          job.jobId,
          revision,
          Buffer.from(job.manifestJson),
          job.signedManifest ? Buffer.from(job.signedManifest) : null,
          job.signer ? JSON.stringify(job.signer) : null,
          job.rounds[0]?.startedAt ?? Date.now(),
          cancelledAt ?? null,
          training ? JSON.stringify(training) : null,
        );
      const putRound = this.db.prepare('INSERT OR REPLACE INTO rounds (job_id, revision, idx, round, sum) VALUES (?, ?, ?, ?, ?)');
      for (const { r, json } of rounds) {
        const sum = r.outcome?.ok ? Buffer.from(vectorToBytes(r.outcome.sum)) : null;
        putRound.run(job.jobId, revision, r.index, json, sum);
      }
      const putModel = this.db.prepare('INSERT OR IGNORE INTO models (job_id, revision, version, sha256, weights, meta) VALUES (?, ?, ?, ?, ?, ?)');
      const setMeta = this.db.prepare('UPDATE models SET meta = ? WHERE job_id = ? AND revision = ? AND version = ?');
      for (const v of models) {
        // Validation accuracy is measured after a version is made: its meta is written again.
        if (v.version < written) setMeta.run(JSON.stringify(modelMeta(v)), job.jobId, revision, v.version);
        else putModel.run(job.jobId, revision, v.version, Buffer.from(v.sha256), Buffer.from(weightBytes(v.weights)), JSON.stringify(modelMeta(v)));
      }
    })();
    for (const { r, json } of rounds) this.savedRounds.set(r, json);
    this.savedModels.set(key, models.length);
    return rounds.map(({ r }) => r);
  }

  /**
   * Lets go of the weights of a training job's older model versions written here: they are read
   * back from the history when asked for (ModelStore.release). The latest stays in memory.
   */
  releaseModels(job: Job): void {
    const t = job.training;
    if (!t || !this.db.open) return;
    const revision = job.manifest.revision;
    const written = this.savedModels.get(`${job.jobId}@${revision}`) ?? 0;
    for (let version = 0; version < written; version++) t.models.release(version, () => this.readWeights(job.jobId, revision, version, job.manifest.round.dim));
  }

  /** A model version's weights as saved, a fresh copy each time. */
  readWeights(jobId: string, revision: number, version: number, dim: number): Float32Array {
    if (!this.db.open) throw new AegisError(ErrorCode.Unavailable, 'the job history is closed (the coordinator has stopped)');
    const row = this.db.prepare<[string, number, number], { weights: Buffer }>('SELECT weights FROM models WHERE job_id = ? AND revision = ? AND version = ?').get(jobId, revision, version);
    if (!row) throw new AegisError(ErrorCode.NotFound, `job '${jobId}' has no saved model version ${version}`);
    return weightsOf(new Uint8Array(row.weights), dim);
  }

  /** A completed round's sum as saved, a fresh copy each time (`not-found` when none is saved). */
  readSum(jobId: string, revision: number, index: number): Uint32Array {
    if (!this.db.open) throw new AegisError(ErrorCode.Unavailable, 'the job history is closed (the coordinator has stopped)');
    const row = this.db.prepare<[string, number, number], { sum: Buffer | null }>('SELECT sum FROM rounds WHERE job_id = ? AND revision = ? AND idx = ?').get(jobId, revision, index);
    if (!row?.sum) throw new AegisError(ErrorCode.NotFound, `job '${jobId}' has no saved sum for ${roundName(index)}`);
    return vectorFromBytes(new Uint8Array(row.sum));
  }

  /**
   * Lets go of what a finished round no longer needs in memory once the history holds it as it
   * stands: its live host (the cohort's identity keys, its protocol state) becomes a FrozenHost,
   * its start envelopes are dropped, and a completed round's sum is read from here each time it
   * is asked for. A coordinator that runs for weeks then keeps per round only its counts,
   * timeline and cohort (until retention). Call it right after `save` wrote the round (`save`
   * returns the rounds it wrote); returns false, changing nothing, for a round still running or
   * never saved.
   */
  release(job: Job, r: RoundRecord): boolean {
    if (r.released || !r.outcome || !this.db.open || !this.savedRounds.has(r)) return false;
    const o = r.outcome;
    const revision = job.manifest.revision;
    const state = { ...o.state, cfg: { ...o.state.cfg, view: new Uint8Array(0), identityOf: noIdentity } };
    let outcome: RoundOutcome;
    if (o.ok) {
      // The survivors' ids as the cohort's strings (those decoded from the members' messages are
      // copies of their own), in one array for the outcome and its state.
      const ofCohort = new Map(r.cohort.map((id) => [id, id]));
      const survivors = o.survivors.map((id) => ofCohort.get(id) ?? id);
      outcome = outcomeWithStoredSum(survivors, o.declines, state.cfg, state.stats, { history: this, jobId: job.jobId, revision, index: r.index });
    } else {
      outcome = { ...o, state: state as AbortedState };
    }
    r.host = FrozenHost.of(r.host, outcome);
    r.outcome = outcome;
    r.startEnvelope = NO_START;
    r.startOf.clear();
    r.released = true;
    // A released round is not saved again until something changes it (retention), which
    // clears `released`: what it was last saved as need not be kept either.
    this.savedRounds.delete(r);
    return true;
  }

  /**
   * Every job's latest revision, as records the Jobs owner serves again. A round that was
   * running when its coordinator stopped comes back aborted with reason `interrupted`; a training
   * job keeps the state it was saved in (`running` for one whose coordinator was killed: the
   * caller resumes it). Model versions are served from here and exported again under `dataDir`.
   */
  load(dataDir: string, clock: () => number): RestoredJob[] {
    const rows = this.db
      .prepare<[], { job_id: string; revision: number; manifest_json: Buffer; signed_manifest: Buffer | null; signer: string | null; launched_at: number; cancelled_at: number | null; training: string | null }>(
        'SELECT j.* FROM jobs j WHERE j.revision = (SELECT MAX(revision) FROM jobs k WHERE k.job_id = j.job_id) ORDER BY j.launched_at, j.job_id',
      )
      .all();
    const roundsOf = this.db.prepare<[string, number], { idx: number; round: string; has_sum: number }>('SELECT idx, round, sum IS NOT NULL AS has_sum FROM rounds WHERE job_id = ? AND revision = ? ORDER BY idx');
    const modelsOf = this.db.prepare<[string, number], { version: number; sha256: Buffer; meta: string }>('SELECT version, sha256, meta FROM models WHERE job_id = ? AND revision = ? ORDER BY version');
    const out: RestoredJob[] = [];
    for (const row of rows) {
      // The manifest was valid when it was launched; its expiry since then does not erase the job.
      const { manifest, hash } = parseManifest(new Uint8Array(row.manifest_json), new Date(row.launched_at));
      const job: Job = {
        jobId: row.job_id,
        manifest,
        manifestJson: new Uint8Array(row.manifest_json),
        manifestHash: hash,
        ...(row.signed_manifest ? { signedManifest: new Uint8Array(row.signed_manifest) } : {}),
        ...(row.signer ? { signer: JSON.parse(row.signer) as ManifestSigner } : {}),
        rounds: [],
      };
      const interrupted: number[] = [];
      for (const rr of roundsOf.all(row.job_id, row.revision)) {
        const stored = JSON.parse(rr.round) as StoredRound;
        if (!stored.outcome) interrupted.push(stored.index);
        const record = roundRecord(job, stored, rr.has_sum === 1 ? { history: this, jobId: row.job_id, revision: row.revision, index: stored.index } : undefined, clock);
        job.rounds.push(record);
        // An interrupted round is written again (now aborted) at the next save.
        if (!stored.outcome) record.released = false;
      }
      if (row.training) {
        const st = JSON.parse(row.training) as StoredTraining;
        const models = new ModelStore(job.jobId, clock, modelDirName(job.jobId, manifest.revision));
        const versions = modelsOf.all(row.job_id, row.revision);
        const latest = versions.length - 1;
        const read = (version: number) => (): Float32Array => this.readWeights(job.jobId, manifest.revision, version, manifest.round.dim);
        for (const m of versions) {
          const meta = JSON.parse(m.meta) as StoredModelMeta;
          models.restore({
            version: m.version,
            sha256: new Uint8Array(m.sha256),
            // Only the latest version's weights are read into memory; the others when asked for.
            weights: m.version === latest ? read(m.version)() : new Float32Array(0),
            clients: meta.clients,
            totalWeight: meta.totalWeight,
            createdAt: meta.createdAt,
            ...(meta.roundIndex === undefined ? {} : { roundIndex: meta.roundIndex }),
            ...(meta.validationAccuracy === undefined ? {} : { validationAccuracy: meta.validationAccuracy }),
            ...(meta.validationLoss === undefined ? {} : { validationLoss: meta.validationLoss }),
          });
        }
        this.savedModels.set(`${job.jobId}@${manifest.revision}`, versions.length);
        for (let version = 0; version < latest; version++) models.release(version, read(version));
        // The exported files are written again where missing (a kill may have come before them).
        models.persistTo(dataDir, true);
        const t = newTrainingProgress(models, st.gatherMs);
        Object.assign(t, { state: st.state, completed: st.completed, aborted: st.aborted, abortedInARow: st.abortedInARow, detail: st.detail, flagged: st.flagged });
        if (st.state !== 'running') t.settle(st.state);
        job.training = t;
      }
      out.push({ job, ...(row.cancelled_at === null ? {} : { cancelledAt: row.cancelled_at }), interrupted });
    }
    return out;
  }
}

function modelMeta(v: ModelVersionRecord): StoredModelMeta {
  return {
    ...(v.roundIndex === undefined ? {} : { roundIndex: v.roundIndex }),
    clients: v.clients,
    totalWeight: v.totalWeight,
    createdAt: v.createdAt,
    ...(v.validationAccuracy === undefined ? {} : { validationAccuracy: v.validationAccuracy }),
    ...(v.validationLoss === undefined ? {} : { validationLoss: v.validationLoss }),
  };
}

/** What the history keeps of a round: counts, times and outcome; client ids only until retention. */
function storedRound(r: RoundRecord): StoredRound {
  const o = r.outcome;
  return {
    index: r.index,
    startedAt: r.startedAt,
    ...(r.endedAt === undefined ? {} : { endedAt: r.endedAt }),
    cohort: [...r.cohort],
    ...(r.retired ? { retired: { ...r.retired } } : {}),
    status: r.host.status(),
    timeline: r.host.timeline.map((t) => ({ ...t })),
    closeMs: { ...r.host.closeMs },
    ...(o
      ? {
          outcome: o.ok
            ? { ok: true as const, survivors: [...o.survivors], declines: { ...o.declines } }
            : { ok: false as const, reason: o.reason, at: o.at, detail: o.detail, declines: { ...o.declines }, approvalShortfall: o.approvalShortfall },
        }
      : {}),
  };
}

/** A round record served again from the history (a FrozenHost stands in for the host it ran on); a completed round's sum is read from the history when asked for. */
function roundRecord(job: Job, s: StoredRound, sum: SumSource | undefined, clock: () => number): RoundRecord {
  let outcome: RoundOutcome;
  let endedAt = s.endedAt;
  let status = s.status;
  if (s.outcome?.ok && sum) {
    const cfg = { params: maskedRoundParams(job.manifest, job.manifest.round), round: { manifestHash: job.manifestHash, roundIndex: s.index }, view: new Uint8Array(0), identityOf: noIdentity } as unknown as CompletedState['cfg'];
    outcome = outcomeWithStoredSum(s.outcome.survivors, s.outcome.declines, cfg, { prgWords: 0 }, sum);
  } else if (s.outcome && !s.outcome.ok) {
    outcome = { ...s.outcome, state: { phase: Phase.Aborted } as unknown as AbortedState };
  } else {
    // Running when its coordinator stopped: what it had received died with that process.
    outcome = { ok: false, reason: AbortReason.Interrupted, at: s.status.phase, detail: INTERRUPTED_DETAIL, declines: s.status.declines, approvalShortfall: false, state: { phase: Phase.Aborted } as unknown as AbortedState };
    endedAt = clock();
    status = { ...s.status, phase: Phase.Aborted };
  }
  const host: RoundHostLike = new FrozenHost(outcome, status, s.timeline, s.closeMs);
  return {
    gate: UploadGate.forDim(maskedDim(job.manifest), 12 * (maskedDim(job.manifest) + 1)),
    startEnvelope: NO_START,
    startOf: new Map(),
    released: true,
    index: s.index,
    ref: { manifestHash: job.manifestHash, roundIndex: s.index },
    host,
    cohort: [...s.cohort],
    startedAt: s.startedAt,
    ...(endedAt === undefined ? {} : { endedAt }),
    outcome,
    ...(s.retired ? { retired: { ...s.retired } } : {}),
  };
}
