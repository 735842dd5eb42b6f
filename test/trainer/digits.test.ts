import { describe, expect, test } from '@jest/globals';
import { DIGITS_TRAINING, digitsModel } from '../../shared/model/digits.js';
import { buildModel, loadTf, weightsSha256 } from '../../shared/model/tfjs.js';
import { ModelSpecSchema, TrainingSchema } from '../../shared/protocol/manifest.js';

describe('the digits model', () => {
  test('the same seed gives the same spec and weights; another seed other weights', async () => {
    const { tf } = await loadTf();
    const a = await digitsModel(tf);
    const b = await digitsModel(tf, { seed: 42 });
    const c = await digitsModel(tf, { seed: 43 });
    expect(b.spec.initialWeightsSha256).toBe(a.spec.initialWeightsSha256);
    expect(b.spec.architecture).toEqual(a.spec.architecture);
    expect(c.spec.initialWeightsSha256).not.toBe(a.spec.initialWeightsSha256);
    expect(a.spec.initialWeightsSha256).toBe(weightsSha256(a.weights));
    expect(ModelSpecSchema.parse(a.spec)).toEqual(a.spec);
  });

  test('784 → 128 relu → 10 softmax, zero biases, and the spec builds', async () => {
    const { tf } = await loadTf();
    const { spec, weights } = await digitsModel(tf);
    expect(weights.length).toBe(784 * 128 + 128 + 128 * 10 + 10);
    expect(weights.subarray(784 * 128, 784 * 128 + 128).every((v) => v === 0)).toBe(true);
    const model = await buildModel(tf, spec, weights);
    expect(model.inputs[0]!.shape).toEqual([null, 784]);
    expect(model.outputs[0]!.shape).toEqual([null, 10]);
    model.dispose();
    expect((await digitsModel(tf, { hidden: 32 })).weights.length).toBe(784 * 32 + 32 + 32 * 10 + 10);
  });

  test('DIGITS_TRAINING is a valid training section', () => {
    expect(TrainingSchema.parse(DIGITS_TRAINING)).toEqual(DIGITS_TRAINING);
  });
});
