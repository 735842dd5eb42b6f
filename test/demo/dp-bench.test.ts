/**
 * `npm run bench -- dp` on tiny sizes: the client-cost rows (the DP stages against the real
 * masking step) and the accuracy rows (the digits job with the mechanism applied to every
 * client's update, against the same job without DP) have the structure the table and --json
 * report, with sane numbers. No wall-clock limits: only that times are positive and finite.
 */
import { describe, expect, it } from '@jest/globals';
import { calibrate } from '../../shared/dp/calibrate.js';
import { renderDpBench, runDpBench, COST_JOB } from '../../bench/dp.js';
import { measureMasking } from '../../bench/dp-cost.js';

const positive = (x: number): void => {
  expect(Number.isFinite(x)).toBe(true);
  expect(x).toBeGreaterThan(0);
};

describe('bench dp', () => {
  it('reports the DP stages next to the masking of the same update, and accuracy against ε next to no DP', async () => {
    const r = await runDpBench({
      sizes: [3000],
      reps: 1,
      judgeAim: false,
      accuracy: { clients: 3, rounds: 1, clip: 0.5, epsilons: [8], delta: 1e-5, hidden: 8, alpha: 1, seed: 7, perDigitLimit: 20, clipOnly: true },
    });
    expect(r.bench).toBe('dp');
    expect(r.target.met).toBeNull(); // settings this small cannot judge the aim
    expect(r.cost).toHaveLength(1);
    const c = r.cost[0]!;
    expect(c.m).toBe(3000);
    expect(c.padded_dim).toBe(4096);
    expect(c.words).toBe(3001);
    expect(c.neighbors).toBe(15);
    // The calibration is the realistic job's, for this m.
    const cal = calibrate({ epsilon: COST_JOB.epsilon, delta: COST_JOB.delta, rounds: COST_JOB.rounds, clients: COST_JOB.clients, dim: 3000, clip: COST_JOB.clip });
    expect(c.bits).toBe(cal.bits);
    expect(c.noise_multiplier).toBe(cal.noise_multiplier);
    for (const x of [c.clip_rotate_ms, c.rounding_ms, c.noise_ms, c.wrap_ms, c.dp_total_ms, c.dp_encode_ms, c.masking_ms, c.ratio]) positive(x);
    expect(c.dp_total_ms).toBeCloseTo(c.clip_rotate_ms + c.rounding_ms + c.noise_ms + c.wrap_ms, 9);
    expect(c.ratio).toBeCloseTo(c.dp_total_ms / c.masking_ms, 9);
    expect(c.rounding_draws).toBeGreaterThanOrEqual(1);

    const a = r.accuracy;
    expect(a.rows.map((x) => x.variant)).toEqual(['no DP', 'clip only', 'DP']);
    const [base, clipOnly, dp] = a.rows as [(typeof a.rows)[0], (typeof a.rows)[0], (typeof a.rows)[0]];
    for (const x of a.rows) {
      expect(x.accuracy).toBeGreaterThanOrEqual(0);
      expect(x.accuracy).toBeLessThanOrEqual(1);
      expect(x.per_round).toHaveLength(1);
      expect(x.per_round[0]).toBe(x.accuracy);
      expect(x.diff_points).toBeCloseTo((x.accuracy - base.accuracy) * 100, 9);
    }
    expect(base.diff_points).toBe(0);
    expect(base.epsilon).toBeNull();
    expect(clipOnly.epsilon).toBeNull();
    // The DP row's ε is the accountant's for the calibrated job (3 clients, 1 round, the model's dimension).
    const job = calibrate({ epsilon: 8, delta: 1e-5, rounds: 1, clients: 3, maxClients: 3, dim: a.parameters, clip: 0.5 });
    expect(dp.target_epsilon).toBe(8);
    expect(dp.epsilon).toBe(job.epsilon);
    expect(dp.epsilon!).toBeLessThanOrEqual(8);
    expect(dp.noise_multiplier).toBe(job.noise_multiplier);
    expect(dp.bits).toBe(job.bits);
    positive(dp.noise_std_of_mean!);
    expect(a.parameters).toBe(784 * 8 + 8 + 8 * 10 + 10);
    expect(a.update_norm_median).toHaveLength(1);
    positive(a.update_norm_median[0]!);

    // One JSON document, and the table names every column it promises.
    expect(() => JSON.stringify(r)).not.toThrow();
    const text = renderDpBench(r);
    for (const h of ['clip+rotate ms', 'rounding ms', 'noise ms', 'wrap ms', 'masking ms', 'DP / masking', 'test acc', 'vs no DP', 'baseline']) expect(text).toContain(h);
  });

  it('times the masking of a real SecAgg+ client with k neighbours', () => {
    const m = measureMasking(1000, 4);
    expect(m.neighbors).toBe(4);
    expect(m.words).toBe(1001);
    positive(m.masking_ms);
    positive(m.quantize_ms);
  });
});
