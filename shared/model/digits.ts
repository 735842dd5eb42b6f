/**
 * The demo's digits model: a small dense network over 28×28 pixel images (MNIST). Dense only:
 * the tfjs wasm backend cannot train conv2d (no Conv2DBackpropFilter kernel).
 */
import type { ModelSpec, TrainingSpec } from '../protocol/manifest.js';
import { modelSpecOf, type Tf } from './tfjs.js';

/** 28 × 28 pixels, flattened. */
export const DIGITS_INPUT = 784;
export const DIGITS_CLASSES = 10;

/**
 * The digits model and its initial weights: [784] → `hidden` relu → 10 softmax, kernels
 * glorot-uniform from `seed`, biases zero. Same options → byte-identical weights and the same
 * `initialWeightsSha256`, so a manifest can be regenerated and checked anywhere.
 */
export async function digitsModel(tf: Tf, opts: { hidden?: number; seed?: number } = {}): Promise<{ spec: ModelSpec; weights: Float32Array }> {
  const hidden = opts.hidden ?? 128;
  const seed = opts.seed ?? 42;
  const model = tf.sequential({
    name: 'digits', // fixed names: tfjs otherwise numbers layers per process, and the topology would differ
    layers: [
      tf.layers.dense({
        name: 'hidden',
        inputShape: [DIGITS_INPUT],
        units: hidden,
        activation: 'relu',
        kernelInitializer: tf.initializers.glorotUniform({ seed }),
        biasInitializer: 'zeros',
      }),
      tf.layers.dense({
        name: 'output',
        units: DIGITS_CLASSES,
        activation: 'softmax',
        kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }),
        biasInitializer: 'zeros',
      }),
    ],
  });
  try {
    return modelSpecOf(model);
  } finally {
    model.dispose();
  }
}

/** The demo job's local training: two epochs of Adam per round over pixels and digit labels. */
export const DIGITS_TRAINING = {
  epochs: 2,
  batchSize: 32,
  learningRate: 0.002,
  optimizer: 'adam',
  loss: 'categoricalCrossentropy',
  features: 'pixels',
  label: 'digit',
  maxAbortedRounds: 3,
} as const satisfies TrainingSpec;
