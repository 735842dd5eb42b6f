import { describe, expect, test } from '@jest/globals';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildModel,
  flattenWeights,
  loadTf,
  loadTfjsModel,
  saveTfjsModel,
  weightsFromBytes,
  weightsSha256,
  weightsToBytes,
} from '../../shared/model/tfjs.js';
import type { Tensor } from '@tensorflow/tfjs';
import { messageOf, tinyModel } from './fixtures.js';
import { codeOfAsync } from '../support/codes.js';

describe('tfjs plumbing', () => {
  test('loadTf picks the wasm backend here (no tfjs-node installed), once per process', async () => {
    const a = await loadTf();
    expect(a.backend).toBe('wasm');
    expect(a.tf.getBackend()).toBe('wasm');
    expect(await loadTf()).toBe(a);
  });

  test('buildModel refuses a weight vector of the wrong length', async () => {
    const { tf } = await loadTf();
    const { spec, weights } = tinyModel(tf);
    const longer = new Float32Array(weights.length + 1);
    expect(await codeOfAsync(buildModel(tf, spec, longer))).toBe('invalid-argument');
    expect(await messageOf(buildModel(tf, spec, longer))).toBe(`weights have ${weights.length + 1} values, the model has ${weights.length}`);
  });

  test('build then flatten gives back exactly the weights set', async () => {
    const { tf } = await loadTf();
    const { spec, weights } = tinyModel(tf);
    const w = weights.map((_, i) => Math.sin(i) * 3);
    const model = await buildModel(tf, spec, w);
    expect(flattenWeights(model)).toEqual(w);
    model.dispose();
  });

  test('weight bytes round-trip exactly, from any offset; bad lengths are refused', () => {
    const w = new Float32Array([0, -0, 1.5, -3.25e-40, 3.4e38, Number.NaN, Math.PI]);
    const b = weightsToBytes(w);
    expect(b.length).toBe(28);
    expect(new DataView(b.buffer).getFloat32(8, true)).toBe(1.5);
    const shifted = new Uint8Array(b.length + 1);
    shifted.set(b, 1);
    const back = weightsFromBytes(shifted.subarray(1));
    expect(Buffer.from(weightsToBytes(back)).equals(Buffer.from(b))).toBe(true);
    expect(() => weightsFromBytes(new Uint8Array(5))).toThrow(/multiple of 4/);
  });

  test('the SHA-256 changes when one weight changes', () => {
    const w = new Float32Array(100).map((_, i) => i / 7);
    const h = weightsSha256(w);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(weightsSha256(w.slice())).toBe(h);
    const w2 = w.slice();
    w2[57] = Math.fround(w2[57]! + 0.001);
    expect(weightsSha256(w2)).not.toBe(h);
  });

  test('saveTfjsModel writes a tfjs layers-model folder that loads back with identical predictions', async () => {
    const { tf } = await loadTf();
    const { spec, weights } = tinyModel(tf);
    const w = weights.map((v, i) => v + (i % 5) * 0.01);
    const dir = await mkdtemp(join(tmpdir(), 'aegis-tfjs-'));
    try {
      const out = await saveTfjsModel(join(dir, 'nested', 'model'), spec, w);
      expect((await stat(out.weightsBin)).size).toBe(w.length * 4);
      const json = JSON.parse(await readFile(out.modelJson, 'utf8')) as { format: string; weightsManifest: { paths: string[]; weights: { name: string; shape: number[]; dtype: string }[] }[] };
      expect(json.format).toBe('layers-model');
      expect(json.weightsManifest[0]!.paths).toEqual(['weights.bin']);
      expect(json.weightsManifest[0]!.weights.map((s) => s.name)).toEqual(['h/kernel', 'h/bias', 'out/kernel', 'out/bias']);

      const loaded = await loadTfjsModel(join(dir, 'nested', 'model'));
      expect(loaded.weights).toEqual(w);
      const viaTf = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: loaded.architecture, weightSpecs: loaded.weightSpecs, weightData: loaded.weights.slice().buffer }));
      const original = await buildModel(tf, spec, w);
      const x = tf.randomNormal([5, 8]);
      const a = original.predict(x) as Tensor;
      const b = viaTf.predict(x) as Tensor;
      expect(Array.from(await b.data())).toEqual(Array.from(await a.data()));
      tf.dispose([x, a, b]);
      original.dispose();
      viaTf.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a malformed architecture is invalid-argument with a short message', async () => {
    const { tf } = await loadTf();
    const { spec } = tinyModel(tf);
    for (const architecture of [{ class_name: 'Nope', config: {} }, {}, { class_name: 'Sequential', config: { layers: [{ class_name: 'Dense', config: {} }] } }]) {
      const bad = { ...spec, architecture };
      expect(await codeOfAsync(buildModel(tf, bad))).toBe('invalid-argument');
      const msg = await messageOf(buildModel(tf, bad));
      expect(msg).not.toMatch(/\n/);
      expect(msg.length).toBeLessThan(250);
    }
  });
});
