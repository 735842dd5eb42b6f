/**
 * The training loop of a job (FedAvg over secure aggregation): after each round, a completed
 * round's weighted mean update makes the next model version — unless the job's validation set
 * shows the poisoning gate was crossed, when the model is held back and the round flagged — and
 * the next round starts, until the manifest's rounds are done or too many in a row failed — or
 * at once, when the round failed because clients await an operator's approval (audit mode).
 */
import type { Logger } from 'pino';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import { evaluateModel } from '../../shared/model/evaluate.js';
import type { ServerEvent } from '../../shared/protocol/messages.js';
import { isTfjsModel } from '../../shared/protocol/manifest.js';
import type { LocalDataStore } from '../../shared/store/types.js';
import { decodeRoundSum, type RoundOutcome } from '../round/index.js';
import { declineDetail } from './decline-detail.js';
import { decodeDpRoundSum } from './dp-round.js';
import { applyWeightedMean, type ModelVersionRecord, type TrainingProgress } from './training.js';
import type { Job, RoundRecord } from './types.js';
import { roundName } from '../../shared/round-number.js';

export interface TrainingLoopContext {
  log?: Logger;
  validationSets?: Record<string, LocalDataStore>;
  /** Tells a round's cohort its outcome. */
  announce: (r: RoundRecord, ev: ServerEvent) => void;
  /** Starts the job's next round (waiting for reconnecting clients up to the advertise deadline). */
  startNextRound: (job: Job) => Promise<unknown>;
  /** True once the coordinator is shutting down. */
  closing: () => boolean;
}

/** True when a completed round of this job is announced only after its validation check. */
export const announcedAfterValidation = (job: Job): boolean => job.training !== undefined && job.manifest.validation?.dataset !== undefined;

/**
 * After a training round: a completed round's weighted mean update makes the next model
 * version; an aborted one changes nothing. Then the next round starts, until the manifest's
 * rounds are done or too many rounds in a row aborted. A round that had too few clients because
 * clients await approval fails the job at once, saying how many and what to do (approve, then
 * launch the job again: it runs on from its latest model).
 */
export async function advanceTraining(ctx: TrainingLoopContext, job: Job, t: TrainingProgress, r: RoundRecord, o: RoundOutcome): Promise<void> {
  const { log } = ctx;
  const validated = job.manifest.validation?.dataset !== undefined;
  if (t.state !== 'running') {
    if (o.ok && validated) ctx.announce(r, { type: 'round-outcome', round: r.ref, ok: true });
    return;
  }
  const { manifest } = job;
  const maxAborted = manifest.training?.maxAbortedRounds ?? 3;
  const fail = (detail: string): void => {
    t.state = 'failed';
    t.detail = detail;
    log?.warn({ job: job.jobId, completed: t.completed, aborted: t.aborted }, `training job failed: ${detail}`);
    t.settle('failed');
  };
  if (o.ok) {
    let flagged = false;
    try {
      const result = manifest.dp
        ? decodeDpRoundSum(manifest, o.sum, o.survivors.length, o.state.sessionId)
        : decodeRoundSum(o.sum, o.survivors.length, o.state.cfg.params);
      const next = applyWeightedMean(t.models.latest.weights, result);
      const check = await validationCheck(ctx, job, t, next);
      const gate = manifest.validation?.gate ?? 1;
      // Beyond the gate plus the validation set's sampling noise (two standard errors).
      if (check && check.previous - check.accuracy > gate + 2 * Math.sqrt(0.25 / check.examples)) {
        // Held back: not published; the next round starts from the same version.
        flagged = true;
        t.flagged.push(r.index);
        t.aborted++;
        t.abortedInARow++;
        log?.warn({ job: job.jobId, round: r.index, previous: check.previous, accuracy: check.accuracy, gate }, 'model held back: validation accuracy dropped beyond the gate (suspected poisoning)');
      } else {
        const v = t.models.add(next, { roundIndex: r.index, clients: o.survivors.length, totalWeight: result.totalWeight });
        if (check) {
          v.validationAccuracy = check.accuracy;
          v.validationLoss = check.loss;
        }
        t.completed++;
        t.abortedInARow = 0;
        log?.info({ job: job.jobId, round: r.index, version: v.version, clients: v.clients }, 'model updated');
      }
    } catch (err) {
      if (validated) ctx.announce(r, { type: 'round-outcome', round: r.ref, ok: true });
      // An AegisError's message names the record and field (never a value): the cause, not just its code.
      return fail(`${roundName(r.index)}'s sum could not be applied (${isAegisError(err) ? `${err.code}: ${err.message}` : 'internal'})`);
    }
    if (validated) ctx.announce(r, { type: 'round-outcome', round: r.ref, ok: true, ...(flagged ? { poisoningFlagged: true } : {}) });
    if (flagged && t.abortedInARow > maxAborted) return fail(`${roundName(r.index)}'s model failed the validation gate (suspected poisoning); ${t.abortedInARow} rounds in a row without a published model`);
  } else {
    t.aborted++;
    t.abortedInARow++;
    const declines = declineDetail(o, { jobId: job.jobId, manifestSha256: Buffer.from(job.manifestHash).toString('hex'), invited: r.cohort.length });
    // Clients awaiting an operator's approval do not come round by themselves: retrying is no use.
    if (o.approvalShortfall) return fail(declines);
    if (t.abortedInARow > maxAborted) return fail(`${t.abortedInARow} rounds in a row aborted (last: ${o.reason}${declines ? `; ${declines}` : ''})`);
  }
  await continueTraining(ctx, job, t);
}

/**
 * The training loop's next step once a round's outcome is taken in (or, after a restart, once
 * the job is read back from the job history): the job completes or fails when its round
 * indexes are used up, else its next round starts.
 */
export async function continueTraining(ctx: TrainingLoopContext, job: Job, t: TrainingProgress): Promise<void> {
  const { log } = ctx;
  const { manifest } = job;
  const fail = (detail: string): void => {
    t.state = 'failed';
    t.detail = detail;
    log?.warn({ job: job.jobId, completed: t.completed, aborted: t.aborted }, `training job failed: ${detail}`);
    t.settle('failed');
  };
  // Round indexes are the manifest's: clients refuse one at or past its `rounds` (their ledger),
  // so a job ends when its indexes are used up — completed when it published a model in them.
  if (t.completed >= manifest.rounds || (job.rounds.length >= manifest.rounds && t.completed > 0)) {
    t.state = 'completed';
    if (t.completed < manifest.rounds) t.detail = `${t.completed} of ${manifest.rounds} rounds completed (${t.aborted} aborted or held back)`;
    log?.info({ job: job.jobId, rounds: t.completed, aborted: t.aborted, version: t.models.latest.version }, 'training job completed');
    t.settle('completed');
    return;
  }
  if (job.rounds.length >= manifest.rounds) return fail(`all ${manifest.rounds} rounds the manifest allows have run, none completed`);
  if (ctx.closing()) return fail('the coordinator shut down');
  try {
    await ctx.startNextRound(job);
  } catch (err) {
    fail(`the next round could not start: ${isAegisError(err) ? err.message : 'internal error'}`);
  }
}

/**
 * The poisoning check: accuracy on the manifest's validation set of the latest published
 * model and of the candidate. Returns undefined when the job names no validation set.
 */
async function validationCheck(ctx: TrainingLoopContext, job: Job, t: TrainingProgress, candidate: Float32Array): Promise<{ previous: number; accuracy: number; loss: number; examples: number } | undefined> {
  const { manifest } = job;
  const dataset = manifest.validation?.dataset;
  // The coordinator evaluates tfjs models only: a safetensors job's validation set is not checked here.
  if (dataset === undefined || !manifest.model || !manifest.training || !isTfjsModel(manifest.model)) return undefined;
  const set = ctx.validationSets?.[dataset];
  if (!set) throw new AegisError(ErrorCode.NotFound, `validation set '${dataset}' is gone`);
  const examples = await set.trainingExamples({ features: manifest.training.features, label: manifest.training.label });
  const spec = manifest.model;
  const lossFn = manifest.training.loss;
  const latest = t.models.latest;
  if (latest.validationAccuracy === undefined || latest.validationLoss === undefined) {
    const e = await evaluateModel({ spec, loss: lossFn, weights: latest.weights, examples });
    latest.validationAccuracy ??= e.accuracy;
    latest.validationLoss ??= e.loss;
  }
  const { accuracy, loss } = await evaluateModel({ spec, loss: lossFn, weights: candidate, examples });
  return { previous: latest.validationAccuracy, accuracy, loss, examples: examples.count };
}

/** Measures a model version on the job's validation set (accuracy and loss), if not yet done. */
export async function measureModel(validationSets: Record<string, LocalDataStore> | undefined, job: Job, v: ModelVersionRecord): Promise<void> {
  const { manifest } = job;
  const dataset = manifest.validation?.dataset;
  if (dataset === undefined || !manifest.model || !manifest.training || !isTfjsModel(manifest.model) || (v.validationAccuracy !== undefined && v.validationLoss !== undefined)) return;
  const set = validationSets?.[dataset];
  if (!set) return;
  const examples = await set.trainingExamples({ features: manifest.training.features, label: manifest.training.label });
  const e = await evaluateModel({ spec: manifest.model, loss: manifest.training.loss, weights: v.weights, examples });
  v.validationAccuracy ??= e.accuracy;
  v.validationLoss ??= e.loss;
}
