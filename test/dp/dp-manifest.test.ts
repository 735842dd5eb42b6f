/**
 * The manifest's `dp` section: a calibrated section parses, the helpers recompute its privacy
 * from its own parameters, the masked length is the padded dimension, and every consistency
 * rule refuses a section that breaks it, with an error naming the rule.
 */
import { describe, expect, it } from '@jest/globals';
import { calibrate } from '../../shared/dp/calibrate.js';
import { accountDdg, ddgRho } from '../../shared/dp/accountant.js';
import { parseManifest, type JobManifestInput } from '../../shared/protocol/manifest.js';
import { dpEpsilonAfter, dpParamsOfManifest, dpSpecOfCalibration, dpRoundCost, maskedDim, maskedRoundParams, type DpSpec } from '../../shared/protocol/dp-manifest.js';

const DIM = 100;
const ROUNDS = 5;

function section(over: { clients?: number; maxClients?: number; bits?: number } = {}): DpSpec {
  const c = calibrate({ noiseMultiplier: 1.1, delta: 1e-6, rounds: ROUNDS, clients: over.clients ?? 4, maxClients: over.maxClients ?? 6, dim: DIM, clip: 0.5, ...(over.bits ? { bits: over.bits } : {}) });
  return dpSpecOfCalibration(c);
}

function bytes(dp: unknown, round: Partial<JobManifestInput['round']> = {}, extra: Record<string, unknown> = {}): Uint8Array {
  const now = Date.now();
  const m = {
    version: 1,
    jobId: 'dp-job',
    rounds: ROUNDS,
    round: { dim: DIM, cohort: 6, threshold: 4, clip: 4, bits: 16, ...round },
    model: { format: 'safetensors', tensors: [{ name: 'w', shape: [DIM], dtype: 'F32' }], initialWeightsSha256: '0'.repeat(64) },
    training: {},
    dp,
    issuedAt: new Date(now - 1000).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    ...extra,
  };
  return new TextEncoder().encode(JSON.stringify(m));
}

const refusal = (b: Uint8Array): string => {
  try {
    parseManifest(b);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('the manifest was accepted');
};

describe('the dp section of a manifest', () => {
  it('a calibrated section parses; its cost and ε come from its own parameters', () => {
    const dp = section();
    const { manifest } = parseManifest(bytes(dp));
    expect(manifest.dp).toEqual(dp);
    const p = dpParamsOfManifest(manifest);
    expect(p).toMatchObject({ dim: DIM, clip: dp.clip, gamma: dp.gamma, bits: dp.bits, normBound2: BigInt(dp.normBound2) });
    const r = { sigma2: Number(p.sigma2.num) / Number(p.sigma2.den), clients: dp.minClients, dim: 128, normBound2: p.normBound2 };
    expect(dpRoundCost(manifest).rho).toBe(ddgRho(r));
    expect(dpRoundCost(manifest).rdp(8)).toBeGreaterThan(0);
    // The accountant over all rounds gives the calibrator's ε (what the manifest claims here).
    expect(dpEpsilonAfter(manifest, ROUNDS)).toBeCloseTo(accountDdg(r, ROUNDS, dp.delta).epsilon, 12);
    expect(dpEpsilonAfter(manifest, ROUNDS)).toBeCloseTo(dp.epsilon, 9);
    expect(dpEpsilonAfter(manifest, 2)).toBeLessThan(dp.epsilon);
    expect(dpEpsilonAfter(manifest, 0)).toBe(0);
    // The masked vector is the padded dimension (the weight word comes on top).
    expect(maskedDim(manifest)).toBe(128);
    expect(maskedRoundParams(manifest, manifest.round)).toMatchObject({ dim: 128, cohort: 6, threshold: 4 });
  });

  it('a manifest without dp masks round.dim', () => {
    const { manifest } = parseManifest(bytes(undefined));
    expect(manifest.dp).toBeUndefined();
    expect(maskedDim(manifest)).toBe(DIM);
    expect(() => dpRoundCost(manifest)).toThrow(/no dp section/);
  });

  it('refuses a claimed ε lower than the accountant gives for the parameters', () => {
    const dp = section();
    expect(refusal(bytes({ ...dp, epsilon: dp.epsilon * 0.9 }))).toMatch(/dp epsilon .* is lower than the accountant's/);
    // More rounds than calibrated for: the same parameters spend more.
    expect(refusal(bytes(dp, {}, { rounds: ROUNDS + 1 }))).toMatch(/lower than the accountant's .* over 6 rounds/);
    // Less noise than claimed: σ² halved (the accountant's ε rises, the noise std falls below z·C).
    const [num, den] = dp.sigma2.split('/');
    expect(refusal(bytes({ ...dp, sigma2: `${num}/${BigInt(den!) * 2n}` }))).toMatch(/noise std .* below noiseMultiplier × clip/);
  });

  it('refuses a threshold below minClients', () => {
    expect(refusal(bytes(section(), { threshold: 3, cohort: 5 }))).toMatch(/minClients is 4 but round.threshold is 3/);
  });

  it('refuses maxClients below the cohort or below minClients', () => {
    expect(refusal(bytes(section(), { cohort: 7, threshold: 4 }))).toMatch(/maxClients 6 is below round.cohort 7/);
    expect(refusal(bytes({ ...section(), minClients: 7 }, { cohort: 8, threshold: 7 }))).toMatch(/maxClients 6 is below minClients 7/);
  });

  it('refuses too few bits for the wrap bound at maxClients', () => {
    const dp = section();
    expect(refusal(bytes({ ...dp, bits: dp.bits - 2 }))).toMatch(/bits \d+ are too few for 6 clients/);
    // Calibrated for 6 clients at most, claimed for 60: the wrap bound no longer holds.
    expect(refusal(bytes({ ...dp, maxClients: 60 }))).toMatch(/too few for 60 clients/);
  });

  it('refuses a rounding bound B below what conditional rounding needs', () => {
    expect(refusal(bytes({ ...section(), normBound2: '1' }))).toMatch(/normBound2 1 is below the rounding bound/);
  });

  it('refuses malformed values, a plain job, and aggregation groups', () => {
    const dp = section();
    expect(refusal(bytes({ ...dp, mechanism: 'gaussian' }))).toMatch(/manifest: dp.mechanism/);
    expect(refusal(bytes({ ...dp, sigma2: '1.5' }))).toMatch(/dp.sigma2 must be "num\/den"/);
    expect(refusal(bytes({ ...dp, bits: 33 }))).toMatch(/dp.bits/);
    expect(refusal(bytes({ ...dp, extra: 1 }))).toMatch(/manifest: dp/);
    expect(refusal(bytes({ ...dp, gamma: -1 }))).toMatch(/dp.gamma/);
    expect(refusal(bytes(dp, {}, { model: undefined, training: undefined }))).toMatch(/dp needs a training job/);
    expect(refusal(bytes(dp, { cohort: 12, threshold: 6, groupSize: 6 }))).toMatch(/aggregation groups/);
  });
});
