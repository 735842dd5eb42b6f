import { describe, expect, test } from '@jest/globals';
import { MemoryDataStore } from '../../client/store/memory.js';
import { applyUpdate, evaluateModel, trainLocally } from '../../client/trainer/index.js';
import { loadTf } from '../../shared/model/tfjs.js';
import { blobs, manifestFor, messageOf, tinyModel } from './fixtures.js';
import { codeOfAsync } from '../support/codes.js';

const TRAINING = { epochs: 5, batchSize: 16, learningRate: 0.02, optimizer: 'adam' };

describe('local training', () => {
  test('the weighted update of a separable problem raises the accuracy clearly', async () => {
    const { tf } = await loadTf();
    const { spec, weights } = tinyModel(tf);
    const manifest = manifestFor(spec, weights.length, TRAINING);
    const train = blobs(300, { seed: 1 });
    const test = blobs(300, { seed: 2 });

    const u = await trainLocally({ manifest, globalWeights: weights, data: new MemoryDataStore(train.records), maxWeight: 10_000, seed: 5 });
    expect(u.values.length).toBe(weights.length);
    expect(u.weight).toBe(300);
    expect(u.examples).toBe(300);
    expect(Number.isFinite(u.loss)).toBe(true);
    expect(u.trainMs).toBeGreaterThan(0);

    const mean = u.values.map((v) => v / u.weight);
    const next = applyUpdate(weights, mean);
    const before = await evaluateModel({ spec, loss: manifest.training.loss, weights, examples: test.examples });
    const after = await evaluateModel({ spec, loss: manifest.training.loss, weights: next, examples: test.examples });
    expect(after.accuracy).toBeGreaterThan(0.9);
    expect(after.accuracy).toBeGreaterThan(before.accuracy + 0.2);
    expect(after.loss).toBeLessThan(before.loss);
  });

  test('maxWeight caps the examples used and the weight', async () => {
    const { tf } = await loadTf();
    const { spec, weights } = tinyModel(tf);
    const manifest = manifestFor(spec, weights.length, { ...TRAINING, epochs: 1 });
    const u = await trainLocally({ manifest, globalWeights: weights, data: new MemoryDataStore(blobs(100).records), maxWeight: 40 });
    expect(u.weight).toBe(40);
    expect(u.examples).toBe(40);
  });

  test.each(['sgd', 'momentum', 'rmsprop'])('the %s optimizer trains too', async (optimizer) => {
    const { tf } = await loadTf();
    const { spec, weights } = tinyModel(tf);
    const manifest = manifestFor(spec, weights.length, { epochs: 1, optimizer, learningRate: 0.01 });
    const u = await trainLocally({ manifest, globalWeights: weights, data: new MemoryDataStore(blobs(60).records), maxWeight: 100 });
    expect(u.values.some((v) => v !== 0)).toBe(true);
  });

  test.each(['sparseCategoricalCrossentropy', 'meanSquaredError', 'binaryCrossentropy'])('the %s loss trains and evaluates', async (loss) => {
    const { tf } = await loadTf();
    const { spec, weights } = tinyModel(tf);
    const manifest = manifestFor(spec, weights.length, { ...TRAINING, loss });
    const data = blobs(150);
    const u = await trainLocally({ manifest, globalWeights: weights, data: new MemoryDataStore(data.records), maxWeight: 1000 });
    const r = await evaluateModel({ spec, loss: manifest.training.loss, weights: applyUpdate(weights, u.values.map((v) => v / u.weight)), examples: data.examples });
    expect(r.accuracy).toBeGreaterThan(0.8);
    expect(Number.isFinite(r.loss)).toBe(true);
  });

  test('a round dim that is not the parameter count is invalid-argument', async () => {
    const { tf } = await loadTf();
    const { spec, weights } = tinyModel(tf);
    const manifest = manifestFor(spec, weights.length + 1, TRAINING);
    const p = (): Promise<unknown> => trainLocally({ manifest, globalWeights: weights, data: new MemoryDataStore(blobs(30).records), maxWeight: 100 });
    expect(await codeOfAsync(p())).toBe('invalid-argument');
    expect(await messageOf(p())).toMatch(/round\.dim/);
  });

  test('no examples, a feature count the model does not take, or out-of-range labels are invalid-argument', async () => {
    const { tf } = await loadTf();
    const { spec, weights } = tinyModel(tf);
    const manifest = manifestFor(spec, weights.length, TRAINING);
    const run = (records: ConstructorParameters<typeof MemoryDataStore>[0]): Promise<unknown> =>
      trainLocally({ manifest, globalWeights: weights, data: new MemoryDataStore(records), maxWeight: 100 });
    expect(await messageOf(run([{ other: 1 }]))).toBe('no training examples');
    expect(await codeOfAsync(run([{ other: 1 }]))).toBe('invalid-argument');
    expect(await codeOfAsync(run([{ x: [1, 2, 3], y: 0 }]))).toBe('invalid-argument');
    expect(await codeOfAsync(run([{ x: [1, 2, 3, 4, 5, 6, 7, 8], y: 3 }]))).toBe('invalid-argument');
    expect(await codeOfAsync(run([{ x: [1, 2, 3, 4, 5, 6, 7, 8], y: 0.5 }]))).toBe('invalid-argument');
  });

  test('no tensors leak across calls', async () => {
    const { tf } = await loadTf();
    const { spec, weights } = tinyModel(tf);
    const manifest = manifestFor(spec, weights.length, { ...TRAINING, epochs: 2 });
    const data = blobs(64);
    const once = async (): Promise<void> => {
      await trainLocally({ manifest, globalWeights: weights, data: new MemoryDataStore(data.records), maxWeight: 1000, seed: 1 });
      await evaluateModel({ spec, loss: 'categoricalCrossentropy', weights, examples: data.examples });
      await trainLocally({ manifest, globalWeights: weights, data: new MemoryDataStore([{ x: [1], y: 0 }]), maxWeight: 1000 }).catch(() => undefined);
    };
    await once();
    const n = tf.memory().numTensors;
    await once();
    expect(tf.memory().numTensors).toBe(n);
  });

  test('applyUpdate adds the mean update as float32 and checks the length', () => {
    expect(Array.from(applyUpdate(new Float32Array([1, 2, 3]), [0.5, -2, 0]))).toEqual([1.5, 0, 3]);
    expect(() => applyUpdate(new Float32Array(3), [1])).toThrow(/the update has 1 values, the model has 3/);
  });
});
