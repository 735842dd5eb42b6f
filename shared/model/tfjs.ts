/**
 * TensorFlow.js loading and model plumbing shared by the client trainer, the coordinator CLI and
 * the demo. Models travel as a `ModelSpec` (a layers-model topology) plus one flat float32
 * vector: every weight of `model.getWeights()` in order, concatenated — the vector a round
 * aggregates, so its length is the round's `dim`.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LayersModel, io } from '@tensorflow/tfjs';
import { bytesOf } from '../bytes.js';
import { AegisError, ErrorCode, fail } from '../errors.js';
import type { ModelSpec } from '../protocol/manifest.js';

/** The tfjs namespace (`@tensorflow/tfjs`, or `@tensorflow/tfjs-node`, which re-exports it). */
export type Tf = typeof import('@tensorflow/tfjs');
export type { LayersModel };

/** Backends `AEGIS_TF_BACKEND` can force. */
const BACKENDS = ['tensorflow', 'wasm', 'cpu'] as const;
type Backend = (typeof BACKENDS)[number];

let loading: Promise<{ tf: Tf; backend: string }> | undefined;

/**
 * Loads tfjs once per process: the native `@tensorflow/tfjs-node` backend when it is installed
 * (an optional dependency), else the WebAssembly backend. `AEGIS_TF_BACKEND=wasm|cpu|tensorflow`
 * forces one; a forced backend that cannot load is `unavailable`, never a silent fallback.
 */
export function loadTf(): Promise<{ tf: Tf; backend: string }> {
  loading ??= pickBackend(process.env.AEGIS_TF_BACKEND).catch((e: unknown) => {
    loading = undefined; // a failed load can be retried (after installing a backend, say)
    throw e;
  });
  return loading;
}

async function pickBackend(forced: string | undefined): Promise<{ tf: Tf; backend: string }> {
  const want = forced === undefined || forced === '' ? undefined : forced;
  if (want !== undefined && !(BACKENDS as readonly string[]).includes(want)) {
    fail(ErrorCode.InvalidArgument, `AEGIS_TF_BACKEND must be one of ${BACKENDS.join(', ')}`);
  }
  if (want === undefined || want === 'tensorflow') {
    const tf = await importTfNode();
    if (tf) return { tf, backend: await activate(tf, 'tensorflow') };
    if (want === 'tensorflow') {
      fail(ErrorCode.Unavailable, 'AEGIS_TF_BACKEND=tensorflow but @tensorflow/tfjs-node cannot be loaded (is it installed for this platform?)');
    }
  }
  const tf = namespace(await import('@tensorflow/tfjs'));
  tf.enableProdMode(); // no "install tfjs-node" banner, no debug checks
  const backend: Backend = want === 'cpu' ? 'cpu' : 'wasm';
  if (backend === 'wasm') {
    try {
      await import('@tensorflow/tfjs-backend-wasm');
    } catch (e) {
      fail(ErrorCode.Unavailable, `the tfjs wasm backend cannot be loaded: ${shortMessage(e)}`);
    }
  }
  return { tf, backend: await activate(tf, backend) };
}

/** `@tensorflow/tfjs-node`, or undefined when it is not installed or does not load here. */
async function importTfNode(): Promise<Tf | undefined> {
  const name = '@tensorflow/tfjs-node'; // a variable, so tsc does not try to resolve it
  try {
    const tf = namespace((await import(name)) as Tf);
    tf.enableProdMode();
    return tf;
  } catch {
    return undefined;
  }
}

async function activate(tf: Tf, backend: Backend): Promise<string> {
  let ok = false;
  try {
    ok = await tf.setBackend(backend);
    await tf.ready();
  } catch (e) {
    fail(ErrorCode.Unavailable, `the tfjs ${backend} backend failed to start: ${shortMessage(e)}`);
  }
  if (!ok || tf.getBackend() !== backend) fail(ErrorCode.Unavailable, `the tfjs ${backend} backend failed to start`);
  return backend;
}

/** tfjs ships CommonJS: under Node's ESM loader the whole API may sit on `default`. */
function namespace(mod: Tf): Tf {
  const d = (mod as Tf & { default?: Tf }).default;
  return d !== undefined && typeof d.setBackend === 'function' ? d : mod;
}

/** The first line of an error's message, capped: enough to act on, never a stack. */
function shortMessage(e: unknown): string {
  const m = (e instanceof Error ? e.message : String(e)).split('\n')[0] ?? '';
  return m.length > 160 ? `${m.slice(0, 157)}...` : m;
}

/** How many float32 values the model's weights hold (the flat vector's length). */
export function parameterCount(model: LayersModel): number {
  let n = 0;
  for (const w of model.weights) n += w.shape.reduce<number>((a, d) => a * (d ?? 0), 1);
  return n;
}

/**
 * Builds the layers model of `spec.architecture` and, when `weights` are given, sets them (a flat
 * vector in `getWeights()` order). A malformed architecture or a wrong weight count is
 * `invalid-argument`: the spec comes from a manifest and must not crash a client.
 */
export async function buildModel(tf: Tf, spec: ModelSpec, weights?: Float32Array): Promise<LayersModel> {
  let model: LayersModel;
  try {
    model = await tf.models.modelFromJSON({ modelTopology: spec.architecture } as Parameters<Tf['models']['modelFromJSON']>[0]);
  } catch (e) {
    throw new AegisError(ErrorCode.InvalidArgument, `model architecture is not a tfjs layers model: ${shortMessage(e)}`);
  }
  if (weights === undefined) return model;
  try {
    setFlatWeights(tf, model, weights);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/** Sets a flat vector (in `getWeights()` order) as the model's weights. */
export function setFlatWeights(tf: Tf, model: LayersModel, weights: Float32Array): void {
  const m = parameterCount(model);
  if (weights.length !== m) fail(ErrorCode.InvalidArgument, `weights have ${weights.length} values, the model has ${m}`);
  const tensors = [];
  let o = 0;
  for (const w of model.weights) {
    const size = w.shape.reduce<number>((a, d) => a * (d ?? 0), 1);
    tensors.push(tf.tensor(weights.subarray(o, o + size), w.shape as number[], 'float32'));
    o += size;
  }
  try {
    model.setWeights(tensors); // copies: the tensors can go
  } finally {
    tf.dispose(tensors);
  }
}

/** The model's weights as one flat vector: `getWeights()` order, concatenated. */
export function flattenWeights(model: LayersModel): Float32Array {
  const ws = model.getWeights();
  const out = new Float32Array(parameterCount(model));
  let o = 0;
  for (const w of ws) {
    const v = w.dataSync();
    out.set(v, o);
    o += v.length;
  }
  // getWeights() hands out the variables' own tensors (read()): disposing them would break the model
  return out;
}

/**
 * The spec and flat weights of a model built in code (the demo model, tests): the topology
 * JSON, and the SHA-256 the manifest pins the initial weights with.
 */
export function modelSpecOf(model: LayersModel): { spec: ModelSpec; weights: Float32Array } {
  const architecture = model.toJSON(null, false) as unknown as Record<string, unknown>;
  const weights = flattenWeights(model);
  return { spec: { format: 'tfjs-layers', architecture, initialWeightsSha256: weightsSha256(weights) }, weights };
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Float32 little-endian bytes (the tfjs `weights.bin` layout). */
export function weightsToBytes(w: Float32Array): Uint8Array {
  const out = new Uint8Array(w.length * 4);
  if (LITTLE_ENDIAN_HOST) {
    out.set(bytesOf(w));
  } else {
    const dv = new DataView(out.buffer);
    for (let i = 0; i < w.length; i++) dv.setFloat32(i * 4, w[i]!, true);
  }
  return out;
}

/** The inverse of `weightsToBytes`; copies, so `b` may sit at any offset. */
export function weightsFromBytes(b: Uint8Array): Float32Array {
  if (b.length % 4 !== 0) fail(ErrorCode.InvalidArgument, `weight bytes must be a multiple of 4, got ${b.length}`);
  const out = new Float32Array(b.length / 4);
  if (LITTLE_ENDIAN_HOST) {
    new Uint8Array(out.buffer).set(b);
  } else {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(i * 4, true);
  }
  return out;
}

/** Hex SHA-256 of the weights' bytes: what `ModelSpec.initialWeightsSha256` pins. */
export function weightsSha256(w: Float32Array): string {
  return createHash('sha256').update(weightsToBytes(w)).digest('hex');
}

/** The files of a tfjs layers-model folder. */
const MODEL_JSON = 'model.json';
const WEIGHTS_BIN = 'weights.bin';

/**
 * Writes a standard tfjs layers-model folder (`model.json` + `weights.bin`) that
 * `tf.loadLayersModel('file://…/model.json')` and the Python converter read: the way a job's
 * trained model leaves Aegis.
 */
export async function saveTfjsModel(dir: string, spec: ModelSpec, weights: Float32Array): Promise<{ modelJson: string; weightsBin: string }> {
  const { tf } = await loadTf();
  const model = await buildModel(tf, spec, weights);
  let weightSpecs: io.WeightsManifestEntry[] = [];
  try {
    await model.save(
      tf.io.withSaveHandler(async (a) => {
        weightSpecs = a.weightSpecs ?? [];
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
  } finally {
    model.dispose();
  }
  const json: io.ModelJSON = {
    format: 'layers-model',
    generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers} (Aegis)`,
    convertedBy: null,
    modelTopology: spec.architecture,
    weightsManifest: [{ paths: [WEIGHTS_BIN], weights: weightSpecs.map((s) => ({ name: s.name, shape: s.shape, dtype: 'float32' })) }],
  };
  await mkdir(dir, { recursive: true });
  const modelJson = join(dir, MODEL_JSON);
  const weightsBin = join(dir, WEIGHTS_BIN);
  await writeFile(weightsBin, weightsToBytes(weights));
  await writeFile(modelJson, JSON.stringify(json));
  return { modelJson, weightsBin };
}

/**
 * Reads a layers-model folder written by `saveTfjsModel` (float32 weights only): the topology,
 * the flat weights, and the manifest's weight specs.
 */
export async function loadTfjsModel(dir: string): Promise<{ architecture: Record<string, unknown>; weights: Float32Array; weightSpecs: io.WeightsManifestEntry[] }> {
  let json: io.ModelJSON;
  try {
    json = JSON.parse(await readFile(join(dir, MODEL_JSON), 'utf8')) as io.ModelJSON;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') fail(ErrorCode.NotFound, `no ${MODEL_JSON} in ${dir}`);
    throw new AegisError(ErrorCode.InvalidArgument, `${MODEL_JSON} is not valid JSON`);
  }
  if (typeof json !== 'object' || json === null || typeof json.modelTopology !== 'object' || json.modelTopology === null || !Array.isArray(json.weightsManifest)) {
    fail(ErrorCode.InvalidArgument, `${MODEL_JSON} is not a tfjs layers model`);
  }
  const parts: Uint8Array[] = [];
  const weightSpecs: io.WeightsManifestEntry[] = [];
  for (const group of json.weightsManifest) {
    for (const s of group.weights) {
      if (s.dtype !== undefined && s.dtype !== 'float32') fail(ErrorCode.InvalidArgument, `weight ${s.name} is ${s.dtype}; only float32 is supported`);
      weightSpecs.push(s);
    }
    for (const p of group.paths) {
      if (!/^[A-Za-z0-9._-]+$/.test(p) || p === '.' || p === '..') fail(ErrorCode.InvalidArgument, `weight file name ${JSON.stringify(p)} is not a plain file name`);
      parts.push(await readFile(join(dir, p)));
    }
  }
  const bytes = Buffer.concat(parts);
  const weights = weightsFromBytes(bytes);
  const expected = weightSpecs.reduce((a, s) => a + s.shape.reduce((x, d) => x * d, 1), 0);
  if (weights.length !== expected) fail(ErrorCode.InvalidArgument, `weight files hold ${weights.length} values, the manifest lists ${expected}`);
  return { architecture: json.modelTopology as Record<string, unknown>, weights, weightSpecs };
}
