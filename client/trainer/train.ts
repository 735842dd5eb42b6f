/**
 * Local training for a round of a training job (FedAvg): start from the round's global weights,
 * train on the client's own examples as the manifest says, and hand back the weighted update —
 * (trained − global) × example count — which is what the client masks. The coordinator divides
 * the aggregated sum by the aggregated weight and applies the mean with `applyUpdate`.
 */
import type { Optimizer, Tensor } from '@tensorflow/tfjs';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { ErrorCode, fail } from '../../shared/errors.js';
import { isTfjsModel, type TrainingManifest, type TrainingSpec } from '../../shared/protocol/manifest.js';
import { buildModel, flattenWeights, loadTf, parameterCount, type Tf } from '../../shared/model/tfjs.js';
import type { LocalDataStore, TrainingExamples } from '../store/types.js';
import { evaluateModel, ioShape, targets } from '../../shared/model/evaluate.js';

export { evaluateModel };

/** One client's contribution to a round. */
export interface LocalUpdate {
  /** (trained − global weights) × `weight`, flattened; `round.dim` values. */
  values: Float32Array;
  /** The update's FedAvg weight: the number of examples trained on. */
  weight: number;
  /** Examples trained on (equals `weight`). */
  examples: number;
  /** Mean training loss of the last epoch. */
  loss: number;
  /** Wall time of building, training and extracting the update, in ms. */
  trainMs: number;
}

/**
 * Trains the manifest's model from `globalWeights` on the store's examples (at most
 * `maxWeight` of them, the first ones, so one client cannot outweigh the cohort) and returns
 * the weighted update. Everything tfjs allocates is disposed before it returns. `seed` fixes
 * the per-epoch shuffle order (tfjs' own shuffle takes no seed); training is still not
 * bit-reproducible across backends.
 */
export async function trainLocally(opts: {
  manifest: TrainingManifest;
  globalWeights: Float32Array;
  data: LocalDataStore;
  maxWeight: number;
  seed?: number;
}): Promise<LocalUpdate> {
  const { manifest, globalWeights, data, maxWeight } = opts;
  const training = manifest.training;
  if (!Number.isInteger(maxWeight) || maxWeight < 1) fail(ErrorCode.InvalidArgument, `maxWeight must be a positive integer, got ${maxWeight}`);
  const spec = manifest.model;
  if (!isTfjsModel(spec)) fail(ErrorCode.TrainerUnavailable, "this job's model is safetensors: it needs an external trainer (aegis client run --trainer-cmd)");
  // The local validation holdout (manifest.validation.localFraction) is never trained on.
  const { train: examples } = splitHoldout(await data.trainingExamples({ features: training.features, label: training.label }), manifest.validation?.localFraction ?? 0);
  if (examples.count === 0) fail(ErrorCode.InvalidArgument, 'no training examples');
  const count = Math.min(examples.count, maxWeight);

  const t0 = performance.now();
  const { tf } = await loadTf();
  const model = await buildModel(tf, spec, globalWeights);
  const owned: Tensor[] = [];
  let optimizer: Optimizer | undefined;
  try {
    const dim = parameterCount(model);
    if (dim !== manifest.round.dim) fail(ErrorCode.InvalidArgument, `the model has ${dim} parameters, the manifest's round.dim is ${manifest.round.dim}`);
    const io = ioShape(model, examples.featureDim);
    const x = tf.tensor(examples.features.subarray(0, count * examples.featureDim), [count, ...io.inputShape], 'float32');
    owned.push(x);
    const y = targets(tf, training.loss, examples.labels.subarray(0, count), io.units, 'fit');
    owned.push(y);

    optimizer = makeOptimizer(tf, training.optimizer, training.learningRate);
    model.compile({ optimizer, loss: training.loss });
    const rng = opts.seed === undefined ? DeterministicRng.secure() : DeterministicRng.fromSeed('aegis/train/shuffle', opts.seed);
    let loss = Number.NaN;
    for (let e = 0; e < training.epochs; e++) {
      // one fit() per epoch on a seeded permutation: tfjs' shuffle uses Math.random
      const [xs, ys] = tf.tidy(() => {
        const idx = tf.tensor1d(Int32Array.from(rng.permutation(count)), 'int32');
        return [tf.gather(x, idx), tf.gather(y, idx)];
      });
      try {
        const h = await model.fit(xs, ys, { epochs: 1, batchSize: training.batchSize, shuffle: false, verbose: 0 });
        const last = h.history.loss?.at(-1);
        loss = typeof last === 'number' ? last : last === undefined ? Number.NaN : ((await last.data())[0] ?? Number.NaN);
      } finally {
        tf.dispose([xs, ys]);
      }
    }

    const trained = flattenWeights(model);
    const values = new Float32Array(dim);
    for (let i = 0; i < dim; i++) values[i] = (trained[i]! - globalWeights[i]!) * count;
    if (!values.every(Number.isFinite)) {
      fail(ErrorCode.NonFiniteValue, 'local training diverged: the update has non-finite values (lower the learning rate)');
    }
    return { values, weight: count, examples: count, loss, trainMs: performance.now() - t0 };
  } finally {
    tf.dispose(owned);
    optimizer?.dispose(); // compile() with an optimizer object leaves it to the caller
    model.dispose();
  }
}

/** The next global weights: `global + meanDelta` (the coordinator's FedAvg step), as float32. */
export function applyUpdate(global: Float32Array, meanDelta: ArrayLike<number>): Float32Array {
  if (meanDelta.length !== global.length) fail(ErrorCode.InvalidArgument, `the update has ${meanDelta.length} values, the model has ${global.length}`);
  const out = new Float32Array(global.length);
  for (let i = 0; i < out.length; i++) out[i] = global[i]! + meanDelta[i]!;
  return out;
}

function makeOptimizer(tf: Tf, kind: TrainingSpec['optimizer'], lr: number): Optimizer {
  switch (kind) {
    case 'sgd':
      return tf.train.sgd(lr);
    case 'momentum':
      return tf.train.momentum(lr, 0.9);
    case 'adam':
      return tf.train.adam(lr);
    case 'rmsprop':
      return tf.train.rmsprop(lr);
  }
}


/**
 * The client's examples split into those it trains on and a local validation holdout: the last
 * `fraction` of them (at least one when the fraction is positive and there are two or more),
 * which checks each new global model before the client trains on it.
 */
export function splitHoldout(ex: TrainingExamples, fraction: number): { train: TrainingExamples; holdout: TrainingExamples | undefined } {
  if (!(fraction > 0) || ex.count < 2) return { train: ex, holdout: undefined };
  const held = Math.min(ex.count - 1, Math.max(1, Math.round(ex.count * fraction)));
  const keep = ex.count - held;
  const part = (from: number, to: number): TrainingExamples => ({
    features: ex.features.subarray(from * ex.featureDim, to * ex.featureDim),
    featureDim: ex.featureDim,
    labels: ex.labels.subarray(from, to),
    count: to - from,
  });
  return { train: part(0, keep), holdout: part(keep, ex.count) };
}

/**
 * Accuracy of `weights` on the client's local validation holdout, or undefined when the
 * manifest asks for none (or the client has too few examples to hold any out).
 */
export async function validateLocally(opts: { manifest: TrainingManifest; weights: Float32Array; data: LocalDataStore }): Promise<{ accuracy: number; loss: number; examples: number } | undefined> {
  const { manifest } = opts;
  const fraction = manifest.validation?.localFraction ?? 0;
  if (!(fraction > 0) || !isTfjsModel(manifest.model)) return undefined;
  const all = await opts.data.trainingExamples({ features: manifest.training.features, label: manifest.training.label });
  const { holdout } = splitHoldout(all, fraction);
  if (!holdout) return undefined;
  const spec = manifest.model;
  if (!isTfjsModel(spec)) return undefined;
  const r = await evaluateModel({ spec, loss: manifest.training.loss, weights: opts.weights, examples: holdout });
  return { ...r, examples: holdout.count };
}
