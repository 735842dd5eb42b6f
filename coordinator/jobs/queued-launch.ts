/**
 * Launches through the launch queue (`--redis`, coordinator/queue/launch-queue.ts): a launch is
 * checked where it is asked for, queued, and run by whichever coordinator process takes it.
 */
import type { Logger } from 'pino';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { isTrainingManifest, parseManifest } from '../../shared/protocol/manifest.js';
import type { LaunchQueue, LaunchTask } from '../queue/launch-queue.js';
import { verifiedManifestBytes } from './manifest-check.js';
import { sha256, weightsOf } from './training.js';
import type { Job, LaunchResult } from './types.js';

/** What a queued launch needs of the coordinator's jobs (jobs.ts, which calls in here). */
export interface LaunchingJobs {
  get(jobId: string): Job | undefined;
  launch(manifestJson: Uint8Array, opts: { gatherMs?: number; initialWeights?: Uint8Array; signedManifest?: Uint8Array; roundIndex?: number }): Promise<LaunchResult>;
  trainingFinished(jobId: string): Promise<'completed' | 'failed'>;
  readonly stopped: boolean;
}

/**
 * Checks everything a launch can be refused for — signature, expiry, parameters, initial
 * weights — then queues it for whichever coordinator process takes it.
 */
export async function queueLaunch(
  queue: LaunchQueue,
  ctx: { registryDir?: string; log?: Logger; clock: () => number },
  manifestJsonIn: Uint8Array,
  opts: { gatherMs?: number; initialWeights?: Uint8Array; signedManifest?: Uint8Array },
): Promise<LaunchResult & { queued?: string }> {
  const { manifestJson } = await verifiedManifestBytes(ctx.registryDir, manifestJsonIn, opts.signedManifest, new Date(ctx.clock()));
  const { manifest, hash } = parseManifest(manifestJson, new Date(ctx.clock()));
  const training = isTrainingManifest(manifest);
  if (training) {
    if (!opts.initialWeights || opts.initialWeights.length === 0) throw new AegisError(ErrorCode.InvalidArgument, 'a training job needs its initial weights (aegis round launch --weights FILE)');
    weightsOf(opts.initialWeights, manifest.round.dim);
    if (Buffer.from(sha256(opts.initialWeights)).toString('hex') !== manifest.model.initialWeightsSha256) {
      throw new AegisError(ErrorCode.HashMismatch, "the initial weights do not match the manifest's model.initialWeightsSha256");
    }
  }
  const q = await queue.enqueue({
    jobId: manifest.jobId,
    training,
    rounds: manifest.rounds,
    manifestJson: manifestJsonIn,
    gatherMs: Math.min(opts.gatherMs ?? 0, 3_600_000),
    ...(opts.signedManifest ? { signedManifest: opts.signedManifest } : {}),
    ...(training && opts.initialWeights ? { initialWeights: opts.initialWeights } : {}),
  });
  ctx.log?.info({ job: manifest.jobId, round: q.roundIndex, queued: q.id }, 'launch queued');
  return { jobId: manifest.jobId, manifestHash: hash, roundIndex: q.roundIndex, cohort: [], queued: q.id };
}

/**
 * Each coordinator's launches of queued tasks that have not yet started their round, by job and
 * round index: a launch gathers its cohort before its round exists, and a second delivery in that
 * time must not start another.
 */
const launching = new WeakMap<LaunchingJobs, Map<string, Promise<unknown>>>();

/**
 * Runs one launch taken from the queue and resolves when it has ended. A delivery of a launch
 * this process already ran, runs, or is still starting is not started again: it waits for and
 * reports that run.
 */
export async function runQueuedLaunch(jobs: LaunchingJobs, task: LaunchTask, log: Logger | undefined): Promise<{ ok: boolean; state: string; survivors?: number }> {
  const inFlight = launching.get(jobs) ?? launching.set(jobs, new Map()).get(jobs)!;
  const key = `${task.jobId}\u0000${task.roundIndex}`;
  const starting = inFlight.get(key);
  const known = jobs.get(task.jobId);
  const existing = known?.training ? known.rounds[0] : known?.rounds.find((r) => r.index === task.roundIndex);
  if (starting || existing) {
    log?.warn({ job: task.jobId, round: task.roundIndex, attempt: task.attempt }, 'launch delivered again: not started twice');
    // Still starting: its outcome is this delivery's (a launch that failed fails both).
    await starting;
  } else {
    const launch = jobs.launch(task.manifestJson, {
      gatherMs: task.gatherMs,
      ...(task.initialWeights ? { initialWeights: task.initialWeights } : {}),
      ...(task.signedManifest ? { signedManifest: task.signedManifest } : {}),
      ...(known?.training || task.initialWeights ? {} : { roundIndex: task.roundIndex }),
    });
    inFlight.set(key, launch);
    try {
      await launch;
    } finally {
      inFlight.delete(key);
    }
  }
  const job = jobs.get(task.jobId)!;
  if (job.training) {
    const state = await jobs.trainingFinished(task.jobId);
    return { ok: state === 'completed', state };
  }
  const r = job.rounds.find((x) => x.index === task.roundIndex)!;
  const o = await r.host.outcome;
  if (!o.ok && jobs.stopped) throw new AegisError(ErrorCode.Unavailable, 'this coordinator shut down during the round');
  return o.ok ? { ok: true, state: 'completed', survivors: o.survivors.length } : { ok: false, state: o.reason };
}
