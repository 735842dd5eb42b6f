/**
 * The coordinator's model check through an external evaluator (`coordinator start
 * --evaluator-cmd`): for a training job whose model is in safetensors format — trained by
 * external trainers, so tfjs cannot run it — the validation gate's accuracy and loss come from
 * one evaluate call of the trainer protocol (shared/trainer/process.ts, docs/trainer-protocol.md)
 * on the coordinator's own validation set.
 *
 * Any failure of that call (it timed out, crashed, exited non-zero, answered garbage, or
 * evaluated other than the examples it was given) is an `UncheckedModel`: the training loop
 * then holds the model back (hold reason `model-unchecked`). Failing closed is the point — a
 * model no one could check must never reach clients.
 */
import type { LocalDataStore, TrainingExamples } from '../../shared/store/types.js';
import type { TrainingManifest } from '../../shared/protocol/manifest.js';
import { runEvaluate } from '../../shared/trainer/process.js';
import { isTrainerError } from '../../shared/trainer/protocol.js';
import { isAegisError } from '../../shared/errors.js';

/** `coordinator start --evaluator-cmd CMD [--evaluator-timeout S]`. */
export interface EvaluatorOptions {
  /** The command line (split like a shell would, run without one). */
  cmd: string;
  /** How long one evaluation may run, ms. */
  timeoutMs: number;
}

/** Default `--evaluator-timeout`: 5 minutes. */
export const DEFAULT_EVALUATOR_TIMEOUT_MS = 300_000;

/** The evaluator could not check a model; `detail` says how (a kind and counts, never output). */
export class UncheckedModel extends Error {
  constructor(readonly detail: string) {
    super(detail);
    this.name = 'UncheckedModel';
  }
}

/** True when this job's models are checked by the external evaluator rather than by tfjs. */
export const checkedByEvaluator = (manifest: TrainingManifest): boolean => manifest.model.format === 'safetensors';

/** The packed examples as trainer-protocol records ({x, y}), one at a time. */
function* recordsOf(examples: TrainingExamples): Generator<{ x: Float32Array; y: number }> {
  const d = examples.featureDim;
  for (let i = 0; i < examples.count; i++) yield { x: examples.features.subarray(i * d, (i + 1) * d), y: examples.labels[i]! };
}

/**
 * Accuracy and mean loss of `weights` (model version `modelVersion`, made by round `round`) on
 * the validation set, by the external evaluator. Throws `UncheckedModel` when there is no
 * evaluator or it fails.
 */
export async function evaluateByCommand(opts: {
  evaluator: EvaluatorOptions | undefined;
  jobId: string;
  manifest: TrainingManifest;
  set: LocalDataStore;
  weights: Float32Array;
  round: number;
  modelVersion: number;
}): Promise<{ accuracy: number; loss: number; examples: number }> {
  const { evaluator, manifest } = opts;
  if (!evaluator) throw new UncheckedModel('this coordinator has no evaluator for safetensors models (coordinator start --evaluator-cmd)');
  if (manifest.model.format !== 'safetensors') throw new UncheckedModel('the external evaluator checks safetensors models only');
  const training = manifest.training;
  const examples = await opts.set.trainingExamples({ features: training.features, label: training.label });
  try {
    const r = await runEvaluate({
      cmd: evaluator.cmd,
      timeoutMs: evaluator.timeoutMs,
      context: {
        job: opts.jobId,
        round: opts.round,
        model_version: opts.modelVersion,
        training: { ...training },
        features: [training.features],
        label: training.label,
        tensors: manifest.model.tensors,
      },
      tensors: manifest.model.tensors,
      global: opts.weights,
      records: recordsOf(examples),
    });
    // An evaluator that scored other examples than the set it was given checked nothing we know of.
    if (r.numExamples !== examples.count) throw new UncheckedModel(`the evaluator reported ${r.numExamples} examples, it was given ${examples.count}`);
    return { accuracy: r.metrics.accuracy, loss: r.loss, examples: examples.count };
  } catch (err) {
    if (err instanceof UncheckedModel) throw err;
    // The kind and Aegis's own message only: the trainer's stderr stays in its redacted tail.
    if (isTrainerError(err)) throw new UncheckedModel(`the evaluator failed (${err.kind}): ${err.message}`);
    throw new UncheckedModel(`the evaluator could not run (${isAegisError(err) ? err.code : 'internal'})`);
  }
}
