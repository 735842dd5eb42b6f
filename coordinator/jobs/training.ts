/**
 * The coordinator's side of a training job (FedAvg over secure aggregation): the versions of
 * the job's global model and the step that turns a round's unmasked sum into the next version.
 *
 * A round's masked vectors carry each client's update already multiplied by its weight (its
 * example count) and the weight as the last word, so the unmasked sum decodes to
 * (sum of weighted updates, total weight); their quotient is the weighted mean update, which
 * is added to the global model. Only the sum is ever seen here. An aborted round changes
 * nothing: the next round starts from the same version.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { writeFileAtomic } from '../../shared/fs.js';
import type { WeightedSum } from '../../shared/crypto/quantize.js';

export interface ModelVersionRecord {
  version: number;
  /** SHA-256 of the weights' bytes (float32 little-endian). */
  sha256: Uint8Array;
  weights: Float32Array;
  /** The round whose sum produced this version (undefined for version 0). */
  roundIndex?: number;
  /** Clients whose updates are in it, and the sum of their weights. */
  clients: number;
  totalWeight: number;
  createdAt: number;
  /** Accuracy on the job's validation set, once measured (the poisoning check). */
  validationAccuracy?: number;
  /** Mean loss on the job's validation set, measured with the accuracy. */
  validationLoss?: number;
}

export type TrainingJobState = 'running' | 'completed' | 'failed';

/** The float32 little-endian bytes of a weight vector (the tfjs weights.bin layout). */
export function weightBytes(w: Float32Array): Uint8Array {
  const out = new Uint8Array(w.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < w.length; i++) view.setFloat32(i * 4, w[i]!, true);
  return out;
}

/** Parses weight bytes; throws `invalid-argument` unless there are exactly `dim` float32 values. */
export function weightsOf(bytes: Uint8Array, dim: number): Float32Array {
  if (bytes.length !== dim * 4) {
    throw new AegisError(ErrorCode.InvalidArgument, `initial weights have ${bytes.length} bytes; the manifest's dim ${dim} needs ${dim * 4} (float32)`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(dim);
  for (let i = 0; i < dim; i++) {
    const v = view.getFloat32(i * 4, true);
    if (!Number.isFinite(v)) throw new AegisError(ErrorCode.InvalidArgument, `initial weight ${i} is not finite`);
    out[i] = v;
  }
  return out;
}

export const sha256 = (b: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(b).digest());

/**
 * FedAvg: global + (sum of weighted updates) / (total weight), in float32. A round whose
 * survivors weigh nothing leaves the model as it is.
 */
export function applyWeightedMean(global: Float32Array, result: WeightedSum): Float32Array {
  if (result.mean.length !== global.length) {
    throw new AegisError(ErrorCode.InvalidArgument, `the round's sum has ${result.mean.length} values, the model ${global.length}`);
  }
  const out = new Float32Array(global.length);
  for (let i = 0; i < global.length; i++) out[i] = global[i]! + result.mean[i]!;
  for (let i = 0; i < out.length; i++) {
    if (!Number.isFinite(out[i]!)) throw new AegisError(ErrorCode.NonFiniteValue, `model value ${i} is not finite after the update`);
  }
  return out;
}

/**
 * The versions of one job's global model, kept in memory and, with a data dir, written to
 * `<dataDir>/models/<jobId>/v<N>.bin` (plus `index.json` with the hashes) as they are made — an
 * export for operators; the job history (job-history.ts) is what a restarted coordinator reads.
 * A job id launched again under a higher revision N writes to `models/<jobId>@r<N>/`.
 */
export class ModelStore {
  private readonly versions: ModelVersionRecord[] = [];
  /** Versions whose weights are read from the job history when asked for (`release`). */
  private readonly released = new Set<number>();
  private writes: Promise<void> = Promise.resolve();
  private dataDir: string | undefined;
  private writeError: Error | undefined;

  constructor(
    private readonly jobId: string,
    private readonly clock: () => number = Date.now,
    /** The folder under `models/` (default: the job id). */
    private readonly dirName: string = jobId,
  ) {}

  /**
   * From now on every version is written under `dataDir`, starting with those made so far (with
   * `missingOnly`, only those whose file is not there yet).
   */
  persistTo(dataDir: string, missingOnly = false): void {
    this.dataDir = dataDir;
    const dir = join(dataDir, 'models', this.dirName);
    for (const v of this.versions) if (!missingOnly || !existsSync(join(dir, `v${v.version}.bin`))) this.write(v);
  }

  /** Puts back a version read from the job history (in order, from 0); nothing is written. */
  restore(rec: ModelVersionRecord): void {
    if (rec.version !== this.versions.length) throw new AegisError(ErrorCode.Malformed, `job '${this.jobId}': model version ${rec.version} out of order`);
    this.versions.push(rec);
  }

  get latest(): ModelVersionRecord {
    const v = this.versions[this.versions.length - 1];
    if (!v) throw new AegisError(ErrorCode.NotFound, `job '${this.jobId}' has no model yet`);
    return v;
  }

  get all(): readonly ModelVersionRecord[] {
    return this.versions;
  }

  get(version: number): ModelVersionRecord {
    const v = this.versions[version];
    if (!v) throw new AegisError(ErrorCode.NotFound, `job '${this.jobId}' has no model version ${version}`);
    return v;
  }

  /**
   * Lets go of an older version's weights once the job history holds them: from now on they are
   * read with `read` each time they are asked for (a model download, the exported file written
   * again). The latest version stays in memory — the next round starts from it. Returns false,
   * changing nothing, for the latest version or one already let go of.
   */
  release(version: number, read: () => Float32Array): boolean {
    const v = this.versions[version];
    if (!v || version >= this.versions.length - 1 || this.released.has(version)) return false;
    // In place (the record may be held elsewhere, e.g. while its validation is measured).
    Object.defineProperty(v, 'weights', { get: read, enumerable: true, configurable: true });
    this.released.add(version);
    return true;
  }

  /** Adds the next version (0 first) and starts writing it out. */
  add(weights: Float32Array, from: { roundIndex?: number; clients: number; totalWeight: number }): ModelVersionRecord {
    const rec: ModelVersionRecord = { version: this.versions.length, sha256: sha256(weightBytes(weights)), weights, clients: from.clients, totalWeight: from.totalWeight, createdAt: this.clock() };
    if (from.roundIndex !== undefined) rec.roundIndex = from.roundIndex;
    this.versions.push(rec);
    this.write(rec);
    return rec;
  }

  private write(rec: ModelVersionRecord): void {
    if (this.dataDir === undefined) return;
    const dir = join(this.dataDir, 'models', this.dirName);
    const index = this.versions
      .filter((v) => v.version <= rec.version)
      .map((v) => ({ version: v.version, sha256: Buffer.from(v.sha256).toString('hex'), roundIndex: v.roundIndex, clients: v.clients, totalWeight: v.totalWeight, createdAt: new Date(v.createdAt).toISOString() }));
    this.writes = this.writes.then(async () => {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await writeFileAtomic(join(dir, `v${rec.version}.bin`), weightBytes(rec.weights), 0o600);
      await writeFileAtomic(join(dir, 'index.json'), `${JSON.stringify({ jobId: this.jobId, versions: index }, null, 2)}\n`, 0o600);
    }).catch((err: unknown) => {
      // The versions stay in memory (and served); the failure is reported by flushed().
      this.writeError ??= err instanceof Error ? err : new Error(String(err));
    });
  }

  /** Resolves once every version made so far is on disk; rejects if a write failed. */
  async flushed(): Promise<void> {
    await this.writes;
    if (this.writeError) throw new AegisError(ErrorCode.Unavailable, `could not write the models of job '${this.jobId}' (${(this.writeError as NodeJS.ErrnoException).code ?? 'io'})`);
  }
}

/** A training job's progress, as the coordinator drives it round after round. */
export interface TrainingProgress {
  state: TrainingJobState;
  models: ModelStore;
  completed: number;
  aborted: number;
  /** Aborted rounds since the last completed one. */
  abortedInARow: number;
  detail: string;
  /** Rounds whose model the poisoning check held back. */
  flagged: number[];
  /**
   * Rounds whose model was held back because the coordinator's evaluator could not check it
   * (hold reason `model-unchecked`), with why (the failure's kind, never the trainer's output).
   */
  unchecked: { round: number; detail: string }[];
  gatherMs: number;
  /** Settles when the job completes or fails. */
  finished: Promise<TrainingJobState>;
  settle: (s: TrainingJobState) => void;
}

export function newTrainingProgress(models: ModelStore, gatherMs: number): TrainingProgress {
  let settle!: (s: TrainingJobState) => void;
  const finished = new Promise<TrainingJobState>((r) => (settle = r));
  return { state: 'running', models, completed: 0, aborted: 0, abortedInARow: 0, detail: '', flagged: [], unchecked: [], gatherMs, finished, settle };
}
