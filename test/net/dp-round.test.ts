/**
 * A differentially private training round end to end: a coordinator and 6 clients over real
 * gRPC on TLS 1.3, a DP training job (the manifest's `dp` section from the calibrator), each client's trainer returning an update the test knows. The test decodes the
 * released sum itself (the session id the round recorded, dpDecodeSum64) and checks that
 *   - the weight word is the survivor count (updates travel unweighted),
 *   - the error (released − true sum of the updates) has the noise variance the manifest
 *     promises: Σ error² / (expected variance) is inside a χ² interval over all coordinates
 *     (not zero noise, not one client's noise alone, not unnoised-but-weighted updates),
 *   - the coordinator applied FedAvg with the survivor count: new model = initial + sum / 6.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import type { ClientRunner } from '../../client/agent/connection.js';
import type { Trainer } from '../../client/admission/training-round.js';
import { dpSection, dpTrainer, dpUpdate, expectPromisedNoise } from '../support/dp.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';

const N = 6;
const DIM = 200;
const MIN_CLIENTS = 4;

const initial = new Float32Array(DIM).map((_, i) => Math.sin(i) / 4);
const model = {
  format: 'safetensors' as const,
  tensors: [{ name: 'w', shape: [DIM], dtype: 'F32' as const }],
  initialWeightsSha256: createHash('sha256').update(weightBytes(initial)).digest('hex'),
};

const LABEL = 'dp-round-test';
/** Client i's unweighted update (norm 0.6, inside the clip), and its trainer (weighted by 10 + i). */
const update = (i: number): Float64Array => dpUpdate(LABEL, i, DIM);
const trainerOf = (i: number): Trainer => dpTrainer(LABEL, i, DIM);

describe('a DP training round with 6 clients', () => {
  let c: Coordinator;
  let runners: ClientRunner[] = [];
  let clients: Enrolled[];
  const dp = dpSection({ dim: DIM, minClients: MIN_CLIENTS, maxClients: N });

  beforeAll(async () => {
    c = await startCoordinator();
    clients = await enrollClients(c, N, 'dp');
    runners = startRunners(c, clients, DIM, undefined, (i) => ({ input: undefined, train: trainerOf(i), trainerFormats: ['safetensors'] }));
    await waitFor(() => c.connectedClients().length === N, 20_000, 'clients to connect');
  });

  afterAll(async () => {
    await Promise.all(runners.map((r) => r.stop()));
    await c.close();
  });

  it('releases the sum of the unweighted updates plus the promised noise, and applies the mean over the survivors', async () => {
    const job = manifest({
      jobId: 'dp-train',
      round: { dim: DIM, cohort: N, threshold: MIN_CLIENTS, clip: 4, bits: 16 },
      model,
      training: { maxAbortedRounds: 0 },
      dp,
    });
    await c.launch(job, { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    expect(await c.trainingFinished('dp-train')).toBe('completed');
    const o = await c.outcomeOf('dp-train', 0);
    if (!o.ok) throw new Error(`the round aborted: ${o.reason}`);
    expect(o.survivors).toHaveLength(N);
    // Every client's weight word is 1 (the sum's weight is the survivor count, not examples), and
    // the released sum carries the promised noise.
    expect(o.state.sessionId).toBeDefined();
    const released = expectPromisedNoise(o.sum, dp, DIM, o.state.sessionId!, N, update);
    const truth = new Float64Array(DIM);
    for (let i = 0; i < N; i++) update(i).forEach((x, j) => (truth[j]! += x));
    let sq = 0;
    for (let j = 0; j < DIM; j++) sq += (released[j]! - truth[j]!) ** 2;
    // The noise is far above what one client's weighted example counts would leave unhidden.
    expect(Math.sqrt(sq / DIM)).toBeGreaterThan(0.5 * dp.noiseMultiplier * dp.clip);

    // FedAvg over the survivor count: new model = initial + released / N (in float32).
    const models = c.modelsOf('dp-train');
    expect(models).toHaveLength(2);
    const next = models[1]!.weights;
    for (let j = 0; j < DIM; j++) expect(next[j]).toBeCloseTo(Math.fround(initial[j]! + released[j]! / N), 5);
  });
});
