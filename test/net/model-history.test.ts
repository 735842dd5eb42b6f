/**
 * A training job's model versions with a job history (a data dir): once the history holds a
 * version that is no longer the latest, its weights leave memory and are read back from the
 * history when asked for — exact (their SHA-256 is the recorded one), and after a restart, when
 * only the latest version is read into memory (the model download over the CLI is checked in
 * test/cli/train-cli.test.ts). A coordinator training for weeks keeps one model in memory, not one per round.
 */
import { afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientRunner } from '../../client/agent/connection.js';
import type { TrainingRound } from '../../client/admission/training-round.js';
import { weightBytes, type ModelVersionRecord } from '../../coordinator/jobs/training.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { DIGITS_TRAINING, digitsModel } from '../../shared/model/digits.js';
import { loadTf } from '../../shared/model/tfjs.js';
import type { ModelSpec } from '../../shared/protocol/manifest.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';

const CLIENTS = 3;
const ROUNDS = 3;
let spec: ModelSpec;
let initial: Float32Array;
let c: Coordinator | undefined;
let runners: ClientRunner[] = [];
let dir: string | undefined;

beforeAll(async () => {
  const { tf } = await loadTf();
  ({ spec, weights: initial } = await digitsModel(tf, { hidden: 4, seed: 3 }));
});

afterEach(async () => {
  for (const r of runners) await r.stop();
  runners = [];
  await c?.close();
  c = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const sha = (w: Float32Array): string => createHash('sha256').update(weightBytes(w)).digest('hex');
/** True when the version's weights are held in memory (a data property), not read from the history. */
const held = (v: ModelVersionRecord): boolean => 'value' in Object.getOwnPropertyDescriptor(v, 'weights')!;

describe('model versions with a job history', () => {
  test('older versions leave memory once saved, and are read back exact, also after a restart', async () => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-models-'));
    c = await startCoordinator({ dataDir: dir });
    const clients = await enrollClients(c, CLIENTS, 'model-client');
    // Each client's update: a small step that differs per client and per round (no tfjs needed).
    const train = (i: number) => async (round: TrainingRound) => {
      const values = new Float32Array(round.globalWeights.length).map((_, j) => ((i + 1) * (round.roundIndex + 1) * ((j % 7) - 3)) / 1000);
      return { values, weight: 1, examples: 1, loss: 0, trainMs: 0 };
    };
    runners = startRunners(c, clients, initial.length, undefined, (i) => ({ input: undefined, train: train(i) }));
    await waitFor(() => c!.connectedClients().length === CLIENTS, 60_000, 'clients to connect');
    const job = manifest({
      jobId: 'weeks',
      rounds: ROUNDS,
      round: { dim: initial.length, cohort: CLIENTS, threshold: 2, clip: 1024, bits: 24 },
      model: spec,
      training: { ...DIGITS_TRAINING, epochs: 1 },
    });
    await c.launch(job, { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    expect(await c.trainingFinished('weeks')).toBe('completed');

    const versions = c.modelsOf('weeks');
    expect(versions).toHaveLength(ROUNDS + 1);
    // Only the latest is held; every version's weights, read back, have the recorded hash.
    expect(versions.map(held)).toEqual([false, false, false, true]);
    for (const v of versions) expect(sha(v.weights)).toBe(Buffer.from(v.sha256).toString('hex'));
    expect(sha(versions[0]!.weights)).toBe(spec.initialWeightsSha256);
    // Reading one back keeps nothing: still not held.
    expect(held(versions[1]!)).toBe(false);
    // The versions differ (the rounds moved the model), so an exact read-back is not a coincidence.
    expect(new Set(versions.map((v) => Buffer.from(v.sha256).toString('hex'))).size).toBe(ROUNDS + 1);
    const recorded = versions.map((v) => Buffer.from(v.sha256).toString('hex'));

    // A restart reads only the latest version's weights into memory; the rest are exact on demand.
    for (const r of runners) await r.stop();
    runners = [];
    await c.close();
    c = await startCoordinator({ dataDir: dir });
    const again = c.modelsOf('weeks');
    expect(again.map(held)).toEqual([false, false, false, true]);
    expect(again.map((v) => sha(v.weights))).toEqual(recorded);
  });
});
