/** The train benchmark's split of a round and its plain-FedAvg baseline. */
import { describe, expect, it } from '@jest/globals';
import { plainSumMs, splitRound } from '../../bench/train.js';
import type { DemoRound } from '../../bench/demo/run.js';

const round: DemoRound = {
  model_version: 2,
  round_index: 1,
  round_number: 2,
  invited: 10,
  clients: 10,
  dropouts: 0,
  examples: 8000,
  accuracy: 0.9,
  loss: 0.3,
  ms: 5000,
  timings_ms: { train_max: 4000, train_mean: 3000, trained_after: 4500, mask_max: 10, unmask: 8, coordinator: 20 },
};

describe('bench train', () => {
  it('splits a round into training, masking, coordinator work and network, and compares with plain FedAvg', () => {
    const r = splitRound(round, 5);
    expect(r.training_ms).toBe(4500);
    expect(r.masking_ms).toBe(10);
    expect(r.unmasking_ms).toBe(20);
    expect(r.network_ms).toBe(5000 - 4500 - 10 - 20);
    expect(r.training_ms + r.masking_ms + r.unmasking_ms + r.network_ms).toBe(r.round_ms);
    expect(r.plain_fedavg_ms).toBe(4505);
    expect(r.overhead).toBeCloseTo(5000 / 4505 - 1, 10);
  });
  it('times a real plain summation', () => {
    const ms = plainSumMs(3, 10_000, 3);
    expect(ms).toBeGreaterThan(0);
    expect(Number.isFinite(ms)).toBe(true);
  });
});
