/** Shared fixtures of the trainer suites: a tiny dense model, gaussian blobs, a training manifest. */
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { modelSpecOf, type Tf } from '../../shared/model/tfjs.js';
import { DeadlinesSchema, TrainingSchema, type ModelSpec, type TrainingManifest } from '../../shared/protocol/manifest.js';
import { validateRoundParams } from '../../shared/protocol/params.js';
import type { DataRecord, TrainingExamples } from '../../client/store/types.js';

/** The message a promise rejects with. */
export async function messageOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  throw new Error('expected a rejection');
}

/** inputs → hidden relu → classes softmax, glorot-uniform from `seed`. */
export function tinyModel(tf: Tf, o: { inputs?: number; hidden?: number; classes?: number; seed?: number } = {}): { spec: ModelSpec; weights: Float32Array } {
  const seed = o.seed ?? 7;
  const model = tf.sequential({
    name: 'tiny',
    layers: [
      tf.layers.dense({ name: 'h', inputShape: [o.inputs ?? 8], units: o.hidden ?? 16, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed }) }),
      tf.layers.dense({ name: 'out', units: o.classes ?? 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }),
    ],
  });
  try {
    return modelSpecOf(model);
  } finally {
    model.dispose();
  }
}

/** Gaussian blobs: `classes` centres drawn in [-3, 3]^dim, unit noise around each. */
export function blobs(n: number, o: { classes?: number; dim?: number; seed?: number } = {}): { records: DataRecord[]; examples: TrainingExamples } {
  const classes = o.classes ?? 3;
  const dim = o.dim ?? 8;
  const centres = DeterministicRng.fromSeed('blob-centres', 1);
  const c = Array.from({ length: classes }, () => Array.from({ length: dim }, () => centres.nextFloat() * 6 - 3));
  const rng = DeterministicRng.fromSeed('blobs', o.seed ?? 1);
  const gauss = (): number => Math.sqrt(-2 * Math.log(1 - rng.nextFloat())) * Math.cos(2 * Math.PI * rng.nextFloat());
  const records: DataRecord[] = [];
  const features = new Float32Array(n * dim);
  const labels = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const label = i % classes;
    const x = c[label]!.map((v) => v + gauss());
    features.set(x, i * dim);
    labels[i] = label;
    records.push({ x, y: label });
  }
  return { records, examples: { features, featureDim: dim, labels, count: n } };
}

/** A training manifest around `spec` (round: dim, cohort 3, clip 1e3, bits 16). */
export function manifestFor(spec: ModelSpec, dim: number, training: Record<string, unknown> = {}): TrainingManifest {
  return {
    version: 1,
    jobId: 'blobs',
    revision: 1,
    rounds: 1,
    round: validateRoundParams({ dim, cohort: 3, clip: 1e3, bits: 16 }),
    deadlines: DeadlinesSchema.parse({}),
    model: spec,
    training: TrainingSchema.parse({ features: 'x', label: 'y', ...training }),
    issuedAt: '2026-01-01T00:00:00Z',
    expiresAt: '2027-01-01T00:00:00Z',
  };
}
