/**
 * Evaluating a model on examples (accuracy and loss), shared by the client (local validation,
 * training targets) and the coordinator (its poisoning check on a validation set), and the
 * packed-examples type both read.
 */
import type { LayersModel, Tensor } from '@tensorflow/tfjs';
import { ErrorCode, fail } from '../errors.js';
import type { ModelSpec, TrainingSpec } from '../protocol/manifest.js';
import { buildModel, loadTf, type Tf } from './tfjs.js';

/** Examples packed for training or evaluation: row-major features and one label per example. */
export interface TrainingExamples {
  /** count × featureDim values, row-major. */
  features: Float32Array;
  featureDim: number;
  /** One label per example. */
  labels: Float32Array;
  count: number;
}

export type Loss = TrainingSpec['loss'];

/** Examples per predict() call in `evaluateModel`: bounds memory whatever the example count. */
const EVAL_BATCH = 1024;

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

/** The model's per-example input shape and output units, checked against the examples. */
export function ioShape(model: LayersModel, featureDim: number): { inputShape: number[]; units: number } {
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
export function targets(tf: Tf, loss: Loss, labels: Float32Array, units: number, mode: 'fit' | 'eval'): Tensor {
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

