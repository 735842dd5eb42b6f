/**
 * Local training by an external process (`client run --trainer-cmd`, docs/trainer-protocol.md):
 * the same FedAvg contract as the built-in tfjs trainer (train.ts) — the local validation
 * holdout is never trained on, at most 2^bits − 1 examples are used, and the update is
 * (trained − global) × weight — with the fit and the evaluate run by the trainer process.
 * The records come from the client's store, decrypted in memory, and are streamed to the
 * trainer's stdin; they are never written to a file.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { TrainingManifest } from '../../shared/protocol/manifest.js';
import { runEvaluate, runFit } from '../../shared/trainer/process.js';
import { TrainerError, type TensorSpec, type TrainerContext } from '../../shared/trainer/protocol.js';
import type { TrainedUpdate, TrainingRound } from '../admission/training-round.js';
import type { LocalDataStore, TrainingExamples } from '../store/types.js';
import { splitHoldout } from './train.js';

/** The model formats an external trainer trains. */
export const EXTERNAL_TRAINER_FORMATS: readonly string[] = ['safetensors'];

export interface ExternalTrainerOptions {
  /** The trainer command (argv, or a line split like a shell would). */
  cmd: string[] | string;
  /** The most one call may take, ms (a round's deadline may cut it shorter). */
  timeoutMs: number;
  data: LocalDataStore;
  /** Hears of every failed call, with its redacted stderr tail (for the client's log). */
  onFailure?: (err: TrainerError, call: 'fit' | 'evaluate', round: TrainingRound) => void;
  /**
   * A test tap: hears of each fit's trained weights as the trainer wrote them and Aegis read
   * them back, before the update is made from them.
   */
  onTrained?: (trained: Float32Array, round: TrainingRound) => void;
}

/** The declared tensors of a round's model (a safetensors model only). */
function tensorsOf(manifest: TrainingManifest): TensorSpec[] {
  if (manifest.model.format !== 'safetensors') {
    throw new TrainerError('unavailable', `this job's model is ${manifest.model.format}; an external trainer takes safetensors models (model.format "safetensors" with model.tensors)`);
  }
  return manifest.model.tensors;
}

/** What the trainer learns about the round (the header's `context`). */
export function trainerContext(round: TrainingRound): TrainerContext {
  const { manifest } = round;
  return {
    job: manifest.jobId,
    round: round.roundIndex,
    model_version: round.modelVersion,
    training: { ...manifest.training },
    features: [manifest.training.features],
    label: manifest.training.label,
    tensors: tensorsOf(manifest),
  };
}

/** The first `count` examples as protocol records ({x, y}), one at a time. */
export function* exampleRecords(ex: TrainingExamples, count = ex.count): Generator<{ x: Float32Array; y: number }> {
  for (let i = 0; i < Math.min(count, ex.count); i++) yield { x: ex.features.subarray(i * ex.featureDim, (i + 1) * ex.featureDim), y: ex.labels[i]! };
}

/** How long a call of `round` may run: the trainer timeout, cut to the round's deadline. */
function callTimeout(o: ExternalTrainerOptions, round: TrainingRound): number {
  const left = round.deadlineAt === undefined ? Infinity : round.deadlineAt - Date.now();
  if (left <= 0) throw new TrainerError('timeout', "no time is left before the round's deadline to run the trainer");
  return Math.min(o.timeoutMs, left);
}

/** The external trainer as the client's `train` and `validate`. */
export function externalTrainer(o: ExternalTrainerOptions): {
  train: (round: TrainingRound) => Promise<TrainedUpdate>;
  validate: (round: TrainingRound) => Promise<{ accuracy: number; loss: number; examples: number } | undefined>;
} {
  const reported = <T>(call: 'fit' | 'evaluate', round: TrainingRound, p: () => Promise<T>): Promise<T> =>
    p().catch((err: unknown) => {
      if (err instanceof TrainerError) o.onFailure?.(err, call, round);
      throw err;
    });

  const examplesOf = async (manifest: TrainingManifest): Promise<ReturnType<typeof splitHoldout>> =>
    splitHoldout(await o.data.trainingExamples({ features: manifest.training.features, label: manifest.training.label }), manifest.validation?.localFraction ?? 0);

  const train = (round: TrainingRound): Promise<TrainedUpdate> =>
    reported('fit', round, async () => {
      const { manifest, globalWeights } = round;
      const context = trainerContext(round);
      const { train: examples } = await examplesOf(manifest);
      if (examples.count === 0) throw new AegisError(ErrorCode.NoInput, 'no training examples');
      // As the built-in trainer: at most the weight one client may have, the first examples.
      const maxWeight = 2 ** manifest.round.bits - 1;
      const sent = Math.min(examples.count, maxWeight);
      const t0 = performance.now();
      const r = await runFit({ cmd: o.cmd, timeoutMs: callTimeout(o, round), context, tensors: context.tensors, global: globalWeights, records: exampleRecords(examples, sent) });
      o.onTrained?.(r.trained, round);
      // The weight: the examples the trainer says it trained on, never more than it was sent.
      const weight = Math.min(r.numExamples, sent);
      const values = new Float32Array(globalWeights.length);
      for (let i = 0; i < values.length; i++) values[i] = (r.trained[i]! - globalWeights[i]!) * weight;
      if (!values.every(Number.isFinite)) throw new TrainerError('tensor', 'the trained weights are finite but their update overflows float32 (the trainer diverged)', { stderrTail: r.stderrTail });
      const loss = r.metrics.loss ?? r.metrics.train_loss ?? Number.NaN;
      return { values, weight, examples: weight, loss, trainMs: performance.now() - t0 };
    });

  const validate = async (round: TrainingRound): Promise<{ accuracy: number; loss: number; examples: number } | undefined> =>
    reported('evaluate', round, async () => {
      const { manifest } = round;
      if (!((manifest.validation?.localFraction ?? 0) > 0)) return undefined;
      const { holdout } = await examplesOf(manifest);
      if (!holdout) return undefined;
      const context = trainerContext(round);
      const r = await runEvaluate({ cmd: o.cmd, timeoutMs: callTimeout(o, round), context, tensors: context.tensors, global: round.globalWeights, records: exampleRecords(holdout) });
      return { accuracy: r.metrics.accuracy, loss: r.loss, examples: holdout.count };
    });

  return { train, validate };
}

/**
 * What a client runner takes to train with an external trainer (`client run --trainer-cmd`):
 * its fit and evaluate, safetensors models only, and training before the client answers phase
 * 0 so that a failure declines the round with its reason.
 */
export function externalTrainerRunner(o: ExternalTrainerOptions): ReturnType<typeof externalTrainer> & { trainerFormats: readonly string[]; trainFirst: true } {
  return { ...externalTrainer(o), trainerFormats: EXTERNAL_TRAINER_FORMATS, trainFirst: true };
}
