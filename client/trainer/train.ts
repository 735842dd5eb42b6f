/**
 * Local training for a round of a training job (FedAvg): start from the round's global weights,
 * train on the client's own examples as the manifest says, and hand back the weighted update —
 * (trained − global) × example count — which is what the client masks. The coordinator divides
 * the aggregated sum by the aggregated weight and applies the mean with `applyUpdate`.
 */
import type { LayersModel, Optimizer, Tensor } from '@tensorflow/tfjs';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { ErrorCode, fail } from '../../shared/errors.js';
import type { ModelSpec, TrainingManifest, TrainingSpec } from '../../shared/protocol/manifest.js';
import { buildModel, flattenWeights, loadTf, parameterCount, type Tf } from '../../shared/model/tfjs.js';
import type { LocalDataStore, TrainingExamples } from '../store/types.js';

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

type Loss = TrainingSpec['loss'];

/** Examples per predict() call in `evaluateModel`: bounds memory whatever the example count. */
const EVAL_BATCH = 1024;

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
  // The local validation holdout (manifest.validation.localFraction) is never trained on.
  const { train: examples } = splitHoldout(await data.trainingExamples({ features: training.features, label: training.label }), manifest.validation?.localFraction ?? 0);
  if (examples.count === 0) fail(ErrorCode.InvalidArgument, 'no training examples');
  const count = Math.min(examples.count, maxWeight);

  const t0 = performance.now();
  const { tf } = await loadTf();
  const model = await buildModel(tf, manifest.model, globalWeights);
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

/**
 * Accuracy and mean loss of `weights` on `examples`, in batches. Accuracy: the argmax matches
 * the integer label (multi-unit outputs); for one output unit, the prediction rounded (or
 * thresholded at 0.5 for binary cross-entropy) equals the label.
 */
export async function evaluateModel(opts: { spec: ModelSpec; loss: Loss; weights: Float32Array; examples: TrainingExamples }): Promise<{ accuracy: number; loss: number }> {
  const { spec, loss, weights, examples } = opts;
  if (examples.count === 0) fail(ErrorCode.InvalidArgument, 'no examples to evaluate');
  const { tf } = await loadTf();
  const model = await buildModel(tf, spec, weights);
  try {
    const io = ioShape(model, examples.featureDim);
    const d = examples.featureDim;
    let correct = 0;
    let lossSum = 0;
    for (let s = 0; s < examples.count; s += EVAL_BATCH) {
      const n = Math.min(EVAL_BATCH, examples.count - s);
      const sums = tf.tidy(() => {
        const xb = tf.tensor(examples.features.subarray(s * d, (s + n) * d), [n, ...io.inputShape], 'float32');
        const labels = examples.labels.subarray(s, s + n);
        const yb = targets(tf, loss, labels, io.units, 'eval');
        const p = model.predict(xb) as Tensor;
        const perExample =
          loss === 'binaryCrossentropy' ? tf.metrics.binaryCrossentropy(yb, p)
          : loss === 'meanSquaredError' ? tf.metrics.meanSquaredError(yb, p)
          : tf.metrics.categoricalCrossentropy(yb, p);
        let hits: Tensor;
        if (io.units > 1) hits = tf.equal(tf.argMax(p, -1), tf.tensor1d(labels, 'int32'));
        else if (loss === 'binaryCrossentropy') hits = tf.equal(tf.greaterEqual(p, 0.5), tf.greaterEqual(yb, 0.5));
        else hits = tf.equal(tf.round(p), yb);
        return tf.stack([tf.sum(tf.cast(hits, 'float32')), tf.sum(perExample)]);
      });
      const [c, l] = await sums.data();
      sums.dispose();
      correct += c ?? 0;
      lossSum += l ?? 0;
    }
    return { accuracy: correct / examples.count, loss: lossSum / examples.count };
  } finally {
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

/** The model's per-example input shape and output units, checked against the examples. */
function ioShape(model: LayersModel, featureDim: number): { inputShape: number[]; units: number } {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) fail(ErrorCode.InvalidArgument, 'the model must have one input and one output');
  const inputShape = model.inputs[0]!.shape.slice(1);
  const outShape = model.outputs[0]!.shape;
  if (inputShape.some((v) => typeof v !== 'number' || v < 1)) fail(ErrorCode.InvalidArgument, 'the model input shape must be fully defined');
  if (outShape.length !== 2 || typeof outShape[1] !== 'number') fail(ErrorCode.InvalidArgument, 'the model output must be [batch, units]');
  const dims = inputShape as number[];
  const inputSize = dims.reduce((a, v) => a * v, 1);
  if (featureDim !== inputSize) fail(ErrorCode.InvalidArgument, `the examples have ${featureDim} features, the model takes ${inputSize}`);
  return { inputShape: dims, units: outShape[1] };
}

/**
 * Training targets from labels. Multi-unit outputs take one-hot integer labels (for
 * sparse categorical cross-entropy: the integers themselves when fitting, as tfjs wants);
 * single-unit outputs take the labels as a column. `eval` always one-hot encodes integer labels,
 * so the loss can be computed by the categorical formula.
 */
function targets(tf: Tf, loss: Loss, labels: Float32Array, units: number, mode: 'fit' | 'eval'): Tensor {
  const sparse = loss === 'sparseCategoricalCrossentropy';
  const integer = units > 1 || sparse;
  const n = labels.length;
  if (integer) {
    for (let i = 0; i < n; i++) {
      const l = labels[i]!;
      if (!Number.isInteger(l) || l < 0 || l >= units) fail(ErrorCode.InvalidArgument, `labels must be integers in 0..${units - 1} for this model (example ${i})`);
    }
  }
  if (!integer || (sparse && mode === 'fit')) return tf.tensor2d(labels, [n, 1], 'float32');
  const oneHot = new Float32Array(n * units);
  for (let i = 0; i < n; i++) oneHot[i * units + labels[i]!] = 1;
  return tf.tensor2d(oneHot, [n, units], 'float32');
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
  if (!(fraction > 0)) return undefined;
  const all = await opts.data.trainingExamples({ features: manifest.training.features, label: manifest.training.label });
  const { holdout } = splitHoldout(all, fraction);
  if (!holdout) return undefined;
  const r = await evaluateModel({ spec: manifest.model, loss: manifest.training.loss, weights: opts.weights, examples: holdout });
  return { ...r, examples: holdout.count };
}
