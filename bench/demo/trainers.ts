/**
 * The trainers `aegis demo --trainer` can run the digits job with: `tfjs` (the client's built-in
 * trainer, the default) or an external trainer process from `examples/` (docs/trainer-protocol.md)
 * — `pytorch` (examples/pytorch-digits: a small CNN in PyTorch) or `numpy`
 * (examples/numpy-logreg: softmax regression in NumPy). An external trainer's example folder
 * holds the job's model and training (manifest.json: model.format "safetensors" with its
 * tensors) and its initial weights (initial.safetensors); every client runs its script
 * (train.py, trainer.py) for local training and validation, and the coordinator runs the same
 * script in evaluate mode to check each new global model on the held-out test digits
 * (`--evaluator-cmd`).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { decodeSafetensors, tensorsToFlat } from '../../shared/model/safetensors.js';
import { SafetensorsModelSpecSchema, TrainingSchema, type SafetensorsModelSpec } from '../../shared/protocol/manifest.js';

export const DEMO_TRAINERS = ['tfjs', 'pytorch', 'numpy'] as const;
export type DemoTrainer = (typeof DEMO_TRAINERS)[number];

/** The Python the external trainers run on by default: Debian's, which has python3-torch and numpy. */
export const DEFAULT_PYTHON = '/usr/bin/python3';

/** Each external trainer's folder under examples/ and its script there. */
const EXAMPLES: Record<Exclude<DemoTrainer, 'tfjs'>, { dir: string; script: string }> = {
  pytorch: { dir: 'pytorch-digits', script: 'train.py' },
  numpy: { dir: 'numpy-logreg', script: 'trainer.py' },
};

/** An external trainer as the demo runs it. */
export interface ExternalDemoTrainer {
  kind: Exclude<DemoTrainer, 'tfjs'>;
  /** The example folder. */
  dir: string;
  /** The trainer command line (for --trainer-cmd and --evaluator-cmd): `PYTHON DIR/SCRIPT`, quoted. */
  cmd: string;
  model: SafetensorsModelSpec;
  /** The manifest's training section as the example gives it (fields the schema does not know are refused). */
  training: Record<string, unknown>;
  /** The initial weights: the declared tensors of initial.safetensors, concatenated. */
  weights: Float32Array;
}

/** The repository's examples/ folder: found by walking up from this module (bench/demo/ in the sources, dist/bench/demo/ built). */
export function examplesDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'examples', 'aegis_trainer.py'))) return join(dir, 'examples');
    dir = dirname(dir);
  }
  throw new AegisError(ErrorCode.NotFound, 'the examples/ folder (with aegis_trainer.py) was not found above the aegis program', 'run the demo from a clone of the repository');
}

/** One word of a command line, quoted for `splitCommand` (shell-like: '…' keeps it literally). */
const quoteWord = (w: string): string => (/^[A-Za-z0-9_./@%+=:,-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`);

/**
 * Loads an external trainer's example: its manifest's model and training, and its initial
 * weights, checked against the manifest's tensors and `initialWeightsSha256`. `python` must be
 * an executable file (checked by the CLI).
 */
export async function loadExternalTrainer(kind: Exclude<DemoTrainer, 'tfjs'>, python: string): Promise<ExternalDemoTrainer> {
  const dir = join(examplesDir(), EXAMPLES[kind].dir);
  const manifestPath = join(dir, 'manifest.json');
  const script = join(dir, EXAMPLES[kind].script);
  if (!existsSync(manifestPath) || !existsSync(script)) throw new AegisError(ErrorCode.NotFound, `the ${kind} trainer's example is incomplete: ${dir} needs manifest.json and ${EXAMPLES[kind].script}`);
  const raw = JSON.parse(await readFile(manifestPath, 'utf8')) as { model?: unknown; training?: unknown };
  const model = SafetensorsModelSpecSchema.safeParse(raw.model);
  if (!model.success) throw new AegisError(ErrorCode.InvalidArgument, `${manifestPath}: model is not a safetensors model spec (${model.error.issues[0]?.message ?? 'invalid'})`);
  const training = TrainingSchema.safeParse(raw.training);
  if (!training.success) throw new AegisError(ErrorCode.InvalidArgument, `${manifestPath}: training is invalid (${training.error.issues[0]?.message ?? 'invalid'})`);
  const weights = tensorsToFlat(decodeSafetensors(await readFile(join(dir, 'initial.safetensors'))), model.data.tensors);
  const sha = createHash('sha256').update(weightBytes(weights)).digest('hex');
  if (sha !== model.data.initialWeightsSha256) {
    throw new AegisError(ErrorCode.HashMismatch, `${join(dir, 'initial.safetensors')} does not hash to ${manifestPath}'s model.initialWeightsSha256`, `regenerate both: ${python} ${join(dir, 'make_initial.py')}`);
  }
  return { kind, dir, cmd: [python, script].map(quoteWord).join(' '), model: model.data, training: raw.training as Record<string, unknown>, weights };
}
