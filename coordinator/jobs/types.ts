/**
 * What the coordinator keeps of a job and of each of its rounds (in memory, for this process's
 * life), and the options that shape how jobs run.
 */
import type { Logger } from 'pino';
import type { EvaluatorOptions } from './evaluator.js';
import type * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { JobManifest } from '../../shared/protocol/manifest.js';
import type { RoundRef, ServerEvent } from '../../shared/protocol/messages.js';
import type { LocalDataStore } from '../../shared/store/types.js';
import type { JobDirectory } from '../queue/job-directory.js';
import type { LaunchQueue } from '../queue/launch-queue.js';
import type { UnmaskQueue } from '../queue/unmask-queue.js';
import type { RoundHostLike } from '../hosts/types.js';
import type { CoordinatorMetrics } from '../service/metrics.js';
import type { RoundOutcome } from '../round/index.js';
import type { RedisRounds } from '../queue/redis-rounds.js';
import type { UploadGate } from '../service/upload-gate.js';
import type { TrainingProgress } from './training.js';

export interface JobsOptions {
  /**
   * The coordinator's data dir: training jobs' model versions are exported under `models/`, and —
   * without Redis — the job history (jobs.db, job-history.ts) keeps every job across restarts.
   * Undefined keeps everything in memory only.
   */
  dataDir?: string;
  log?: Logger;
  /** Prometheus metrics (coordinator/service/metrics.ts): phase durations, clients, dropouts, outcomes. */
  metrics?: CoordinatorMetrics;
  /**
   * With Redis (`--redis`): launches are queued here and taken by any coordinator process on the
   * same Redis (coordinator/queue/launch-queue.ts); this process works the queue too.
   */
  launchQueue?: LaunchQueue;
  /**
   * With Redis: the unmasking phase's mask expansion goes out as worker jobs
   * (coordinator/queue/unmask-queue.ts) in `unmaskParts` parts (default 2), expanded by any unmask
   * worker on the same Redis; without it the masks are expanded in this process.
   */
  unmaskQueue?: UnmaskQueue;
  unmaskParts?: number;
  /**
   * With Redis: round state lives on Redis (coordinator/queue/redis-rounds.ts), so several
   * coordinator processes (front ends) run each round together and a client may reach any of them.
   */
  redisRounds?: RedisRounds;
  /** With Redis: where this process publishes its jobs, so every coordinator on the Redis lists them. */
  jobDirectory?: JobDirectory;
  /**
   * Memory for masked inputs being received at once, bytes; default 96 MiB. Sets how many
   * clients may upload together (upload-gate.ts): peak memory stays O(m), not O(n·m).
   */
  uploadBudgetBytes?: number;
  /**
   * How long a finished round keeps which clients took part (retention.ts); default 30 days.
   * Checked at start and every hour.
   */
  roundRetentionMs?: number;
  /**
   * Called with each event just before it is queued for a client (tracing, metrics, and the
   * end-to-end tests' crash injection). Must not throw.
   */
  tap?: (clientId: string, event: ServerEvent['type']) => void;
  /**
   * Called once a training job's state after a round (its new model version, if any) is written
   * to the job history, just before its next round gathers (the end-to-end tests' crash
   * injection, coordinator/service/crash-points.ts). Must not throw.
   */
  onBetweenRounds?: (jobId: string, nextRound: number) => void;
  /**
   * A publisher registry directory (aegis registry init): the coordinator then takes only
   * manifests signed by a publisher it lists, and serves its signed metadata (Trust service).
   */
  registryDir?: string;
  /**
   * Validation sets by name, for the poisoning check of training jobs whose manifest names one
   * (`validation.dataset`): a round's new model that loses more accuracy on it than the gate is
   * held back, the round flagged, and the clients told.
   */
  validationSets?: Record<string, LocalDataStore>;
  /**
   * The external evaluator (`coordinator start --evaluator-cmd`) that checks the models of
   * training jobs in safetensors format on their validation set (coordinator/jobs/evaluator.ts).
   * When it cannot check a model, the model is held back (`model-unchecked`).
   */
  evaluator?: EvaluatorOptions;
}

export interface RoundRecord {
  /** Masked-input upload slots. */
  gate: UploadGate;
  /** The RoundStart sent to the cohort (the first group's, in a grouped round). */
  startEnvelope: pb.ServerEnvelope;
  /** Each member's RoundStart (its group's parameters in a grouped round). */
  startOf: Map<string, pb.ServerEnvelope>;
  index: number;
  ref: RoundRef;
  host: RoundHostLike;
  cohort: string[];
  startedAt: number;
  /** When the outcome arrived. */
  endedAt?: number;
  outcome?: RoundOutcome;
  /**
   * Held by the job history as it stands (job-history.ts `release`): its host is frozen, its start
   * envelopes dropped, and a completed round's sum is read from the history when asked for.
   */
  released?: boolean;
  /** Past its retention (retention.ts): who took part is forgotten; `cohort` is empty, the counts stay. */
  retired?: { invited: number; survivors: number };
}

/** The publisher whose signature on a job's manifest verified. */
export interface ManifestSigner {
  keyId: string;
  publisher: string | null;
}

export interface Job {
  jobId: string;
  manifest: JobManifest;
  manifestJson: Uint8Array;
  manifestHash: Uint8Array;
  /** The publisher-signed envelope the job was launched with (sent in every round start). */
  signedManifest?: Uint8Array;
  /** Who signed it: the key id of the signature that verified, and the publisher's name in the registry. */
  signer?: ManifestSigner;
  rounds: RoundRecord[];
  /** A training job: its model versions and progress (the coordinator drives its rounds). */
  training?: TrainingProgress;
}

/** What a launch answers: the job, its manifest hash, the round it started (or queued) and its cohort. */
export interface LaunchResult {
  jobId: string;
  manifestHash: Uint8Array;
  roundIndex: number;
  cohort: string[];
}

/** A job record before its first round (copies of the caller's bytes). */
export function newJob(manifest: JobManifest, manifestJson: Uint8Array, hash: Uint8Array, signed: Uint8Array | undefined): Job {
  return {
    jobId: manifest.jobId,
    manifest,
    manifestJson: new Uint8Array(manifestJson),
    manifestHash: hash,
    ...(signed ? { signedManifest: new Uint8Array(signed) } : {}),
    rounds: [],
  };
}

/** Rounds of a job that completed (a training job: those that made a model version). */
export function roundsDone(job: Job): number {
  return job.training ? job.training.completed : job.rounds.filter((r) => r.outcome?.ok).length;
}

/** The cohort size of a round, also once retention emptied its cohort. */
export const invitedOf = (r: RoundRecord): number => r.retired?.invited ?? r.cohort.length;
