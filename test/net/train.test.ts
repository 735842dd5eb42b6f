/**
 * Federated training end to end: a coordinator and clients over real gRPC on TLS 1.3, real tfjs
 * training on real digits (the mnist package), FedAvg over secure aggregation. Checks that the
 * model learns, that each model version is exactly the plain weighted FedAvg of the clients'
 * updates (within the quantization error), and that a model whose hash does not match is
 * refused — by the coordinator at launch and by clients when a coordinator serves one.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { ModelStore, weightBytes } from '../../coordinator/jobs/training.js';
import { AuditBook } from '../../client/audit/audit.js';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import type { TrainingRound } from '../../client/admission/training-round.js';
import { MemoryDataStore } from '../../client/store/memory.js';
import { evaluateModel, trainLocally, validateLocally } from '../../client/trainer/index.js';
import { splitDigits, type DigitsSplit } from '../../bench/demo/mnist.js';
import { createHash } from 'node:crypto';
import { DIGITS_TRAINING, digitsModel } from '../../shared/model/digits.js';
import { loadTf } from '../../shared/model/tfjs.js';
import type { ModelSpec } from '../../shared/protocol/manifest.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';
import { codeOfAsync } from '../support/codes.js';

const CLIENTS = 4;
const ROUNDS = 3;
const CLIP = 1024;
const BITS = 24;

interface Captured {
  clientId: string;
  roundIndex: number;
  modelVersion: number;
  values: Float32Array;
  weight: number;
}

let split: DigitsSplit;
let spec: ModelSpec;
let initial: Float32Array;

beforeAll(async () => {
  const { tf } = await loadTf();
  split = splitDigits({ clients: CLIENTS, perDigitLimit: 70, seed: 5 });
  ({ spec, weights: initial } = await digitsModel(tf, { hidden: 32, seed: 11 }));
});

function trainingManifest(
  jobId: string,
  over: { maxAbortedRounds?: number; advertiseMs?: number; maskedMs?: number; rounds?: number; validation?: { gate: number; dataset?: string; localFraction: number } } = {},
): Uint8Array {
  return manifest({
    jobId,
    rounds: over.rounds ?? ROUNDS,
    round: { dim: initial.length, cohort: CLIENTS, clip: CLIP, bits: BITS },
    deadlines: { advertiseMs: over.advertiseMs ?? 15_000, shareMs: 15_000, maskedMs: over.maskedMs ?? 60_000, consistencyMs: 15_000, unmaskMs: 15_000 },
    model: spec,
    training: { ...DIGITS_TRAINING, epochs: 3, maxAbortedRounds: over.maxAbortedRounds ?? 3 },
    ...(over.validation ? { validation: over.validation } : {}),
  });
}

describe('a training job of 3 FedAvg rounds over secure aggregation', () => {
  let c: Coordinator;
  let runners: ClientRunner[] = [];
  const captured: Captured[] = [];
  const events: { id: string; e: RunnerEvent }[] = [];

  beforeAll(async () => {
    c = await startCoordinator();
    const clients = await enrollClients(c, CLIENTS, 'trainer');
    runners = startRunners(
      c,
      clients,
      initial.length,
      (id, e) => events.push({ id, e }),
      (i) => ({
        input: undefined,
        train: async (round: TrainingRound) => {
          const u = await trainLocally({ manifest: round.manifest, globalWeights: round.globalWeights, data: new MemoryDataStore(split.shards[i]!), maxWeight: 2 ** BITS - 1 });
          captured.push({ clientId: clients[i]!.clientId, roundIndex: round.roundIndex, modelVersion: round.modelVersion, values: u.values, weight: u.weight });
          return u;
        },
      }),
    );
    await waitFor(() => c.connectedClients().length === CLIENTS, 20_000, 'clients to connect');
  });

  afterAll(async () => {
    await Promise.all(runners.map((r) => r.stop()));
    await c.close();
  });

  it('runs every round, learns, and each model version is the plain weighted FedAvg of the updates', async () => {
    await c.launch(trainingManifest('digits-3'), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    expect(await c.trainingFinished('digits-3')).toBe('completed');

    const status = c.statusOf('digits-3');
    expect(status.training?.state).toBe('completed');
    expect(status.training?.roundsCompleted).toBe(ROUNDS);
    const versions = c.modelsOf('digits-3');
    expect(versions).toHaveLength(ROUNDS + 1);
    // Every version's recorded hash is the hash of its weights, and version 0 is the manifest's.
    for (const v of versions) expect(Buffer.from(v.sha256).toString('hex')).toBe(createHash('sha256').update(weightBytes(v.weights)).digest('hex'));
    expect(Buffer.from(versions[0]!.sha256).toString('hex')).toBe(spec.initialWeightsSha256);

    const step = (2 * CLIP) / (2 ** BITS - 1);
    for (const v of versions.slice(1)) {
      const r = v.roundIndex!;
      const survivors = c.resultOf('digits-3', r).survivors;
      const updates = captured.filter((u) => u.roundIndex === r && survivors.includes(u.clientId));
      expect(updates).toHaveLength(survivors.length);
      // Every client trained from the previous version.
      for (const u of updates) expect(u.modelVersion).toBe(v.version - 1);
      const previous = versions[v.version - 1]!.weights;
      const totalWeight = updates.reduce((a, u) => a + u.weight, 0);
      expect(v.totalWeight).toBe(totalWeight);
      let maxErr = 0;
      let maxUnweightedGap = 0;
      for (let j = 0; j < previous.length; j++) {
        let s = 0;
        let plain = 0;
        for (const u of updates) {
          s += u.values[j]!;
          plain += u.values[j]! / u.weight;
        }
        const fedavg = previous[j]! + s / totalWeight;
        maxErr = Math.max(maxErr, Math.abs(v.weights[j]! - fedavg));
        maxUnweightedGap = Math.max(maxUnweightedGap, Math.abs(previous[j]! + plain / updates.length - fedavg));
      }
      // Quantization: at most one step per client, divided by the total weight; plus float32 rounding.
      const bound = (updates.length * step) / totalWeight + 1e-5;
      expect(maxErr).toBeLessThanOrEqual(bound);
      // The check can tell: the unweighted mean of the same updates is far outside the bound.
      expect(maxUnweightedGap).toBeGreaterThan(10 * bound);
    }

    const before = await evaluateModel({ spec, loss: 'categoricalCrossentropy', weights: initial, examples: split.test });
    const after = await evaluateModel({ spec, loss: 'categoricalCrossentropy', weights: versions[ROUNDS]!.weights, examples: split.test });
    expect(after.accuracy).toBeGreaterThan(0.5);
    expect(after.accuracy).toBeGreaterThan(before.accuracy + 0.3);
    expect(after.loss).toBeLessThan(before.loss);
    // Each client reported training once per round it took part in.
    expect(events.filter((x) => x.e.kind === 'trained').length).toBe(captured.length);
  });

  it('refuses initial weights whose hash is not the manifest’s, and registers no job', async () => {
    const tampered = new Float32Array(initial);
    tampered[0] = tampered[0]! + 0.5;
    expect(await codeOfAsync(c.launch(trainingManifest('digits-tampered'), { initialWeights: weightBytes(tampered) }))).toBe('hash-mismatch');
    expect(await codeOfAsync(c.launch(trainingManifest('digits-none'), {}))).toBe('invalid-argument');
    expect(await codeOfAsync(c.launch(trainingManifest('digits-short'), { initialWeights: weightBytes(initial).subarray(4) }))).toBe('invalid-argument');
    expect(() => c.statusOf('digits-tampered')).toThrow(/no job/);
  });
});

describe('a coordinator that serves other weights than the ones it announced', () => {
  it('is refused by every client: they sit the round out with hash-mismatch and never train', async () => {
    const c = await startCoordinator();
    const clients = await enrollClients(c, CLIENTS, 'wary');
    const events: { id: string; e: RunnerEvent }[] = [];
    let trained = 0;
    const runners = startRunners(
      c,
      clients,
      initial.length,
      (id, e) => events.push({ id, e }),
      () => ({
        input: undefined,
        train: () => {
          trained++;
          return Promise.reject(new Error('must not train'));
        },
      }),
    );
    try {
      await waitFor(() => c.connectedClients().length === CLIENTS, 20_000, 'clients to connect');
      await c.launch(trainingManifest('digits-rogue', { maxAbortedRounds: 0, advertiseMs: 120_000 }), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
      // Poison the served model after it was announced (what a compromised coordinator could do).
      const served = c.modelsOf('digits-rogue')[0]!.weights;
      served[0] = served[0]! + 1;
      expect(await c.trainingFinished('digits-rogue')).toBe('failed');
      const satOut = events.filter((x) => x.e.kind === 'sat-out');
      expect(new Set(satOut.map((x) => x.id)).size).toBe(CLIENTS);
      for (const x of satOut) expect(x.e.kind === 'sat-out' && x.e.code).toBe('hash-mismatch');
      expect(trained).toBe(0);
      expect(c.statusOf('digits-rogue').training?.detail).toMatch(/aborted/);
    } finally {
      await Promise.all(runners.map((r) => r.stop()));
      await c.close();
    }
  });
});

describe('a client whose local training fails', () => {
  it('leaves the round (a dropout for the others), and the round completes without it', async () => {
    const c = await startCoordinator();
    const clients = await enrollClients(c, CLIENTS, 'flaky');
    const events: { id: string; e: RunnerEvent }[] = [];
    const runners = startRunners(
      c,
      clients,
      initial.length,
      (id, e) => events.push({ id, e }),
      (i) => ({
        input: undefined,
        train: (round: TrainingRound) =>
          i === 0
            ? Promise.reject(new Error('disk full'))
            : trainLocally({ manifest: round.manifest, globalWeights: round.globalWeights, data: new MemoryDataStore(split.shards[i]!), maxWeight: 2 ** BITS - 1 }),
      }),
    );
    try {
      await waitFor(() => c.connectedClients().length === CLIENTS, 20_000, 'clients to connect');
      await c.launch(trainingManifest('digits-flaky', { rounds: 1, maskedMs: 6_000 }), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
      expect(await c.trainingFinished('digits-flaky')).toBe('completed');
      const survivors = c.resultOf('digits-flaky', 0).survivors;
      expect(survivors).toHaveLength(CLIENTS - 1);
      expect(survivors).not.toContain(clients[0]!.clientId);
      const left = events.filter((x) => x.e.kind === 'left');
      expect(left.map((x) => x.id)).toEqual([clients[0]!.clientId]);
      // The reason is a code, never the exception's text (it could carry local details).
      expect(left[0]!.e.kind === 'left' && left[0]!.e.code).toBe('internal');
    } finally {
      await Promise.all(runners.map((r) => r.stop()));
      await c.close();
    }
  });
});

describe('the poisoned-server scenario', () => {
  it('a coordinator that publishes a poisoned global model is caught by the clients’ validation; they enter audit mode and refuse the next job until approved', async () => {
    // The "poisoned server": it publishes round 1's model label-flipped — the output layer's
    // columns rotated, so every digit is read as the next one — with a matching hash.
    const honestAdd = ModelStore.prototype.add;
    const flipLabels = (w: Float32Array): Float32Array => {
      const out = new Float32Array(w);
      const hidden = 32;
      const kernel = w.length - (hidden * 10 + 10);
      for (let r = 0; r <= hidden; r++) {
        // Rows of the output kernel, then its bias (r = hidden): column c takes column c + 1.
        const base = r < hidden ? kernel + r * 10 : kernel + hidden * 10;
        for (let c = 0; c < 10; c++) out[base + c] = w[base + ((c + 1) % 10)]!;
      }
      return out;
    };
    ModelStore.prototype.add = function (this: ModelStore, weights: Float32Array, from: Parameters<ModelStore['add']>[1]) {
      return honestAdd.call(this, from.roundIndex === 1 ? flipLabels(weights) : weights, from);
    };
    const c = await startCoordinator();
    const clients = await enrollClients(c, CLIENTS, 'guarded');
    const dirs = await Promise.all(clients.map(() => mkdtemp(join(tmpdir(), 'aegis-poison-'))));
    const audits = await Promise.all(dirs.map((d) => AuditBook.open(d)));
    const events: { id: string; e: RunnerEvent }[] = [];
    const runners = startRunners(c, clients, 4, (id, e) => events.push({ id, e }), (i) => ({
      audit: audits[i]!,
      train: (round: TrainingRound) => trainLocally({ manifest: round.manifest, globalWeights: round.globalWeights, data: new MemoryDataStore(split.shards[i]!), maxWeight: 2 ** BITS - 1 }),
      validate: async (round: TrainingRound) => validateLocally({ manifest: round.manifest, weights: round.globalWeights, data: new MemoryDataStore(split.shards[i]!) }),
    }));
    try {
      await waitFor(() => c.connectedClients().length === CLIENTS, 20_000, 'clients to connect');
      const bytes = trainingManifest('poisoned', { maxAbortedRounds: 0, advertiseMs: 120_000, validation: { gate: 0.05, localFraction: 0.2 } });
      await c.launch(bytes, { gatherMs: 5_000, initialWeights: weightBytes(initial) });
      // Rounds 0 and 1 complete; round 2 would train on the poisoned version 2: nobody does.
      expect(await c.trainingFinished('poisoned')).toBe('failed');
      expect(c.modelsOf('poisoned')).toHaveLength(3);
      const refused = events.filter((x) => x.e.kind === 'sat-out' && x.e.roundIndex === 2);
      expect(new Set(refused.map((x) => x.id)).size).toBe(CLIENTS);
      for (const x of refused) expect(x.e.kind === 'sat-out' && x.e.code).toBe('approval-required');
      for (const a of audits) {
        const s = await a.status();
        expect(s).toMatchObject({ inAuditMode: true, remaining: 5, reason: 'validation-drop' });
      }
      // The next job is refused until each operator approves exactly that job and manifest hash.
      const next = manifest({ jobId: 'after-poison', rounds: 2, round: { dim: 4, cohort: CLIENTS }, deadlines: { advertiseMs: 120_000, shareMs: 60_000, maskedMs: 60_000, consistencyMs: 60_000, unmaskMs: 60_000 } });
      await c.launch(next, { gatherMs: 5_000 });
      expect((await c.outcomeOf('after-poison', 0)).ok).toBe(false);
      expect(new Set(events.filter((x) => x.e.kind === 'sat-out' && x.e.code === 'approval-required' && x.e.roundIndex === 0).map((x) => x.id)).size).toBe(CLIENTS);
      const hash = createHash('sha256').update(next).digest('hex');
      for (const a of audits) await a.approve('after-poison', hash);
      await c.launch(next, { gatherMs: 5_000 });
      expect((await c.outcomeOf('after-poison', 1)).ok).toBe(true);
      // The approval counted once: 4 more jobs need one.
      for (const a of audits) expect((await a.status()).remaining).toBe(4);
    } finally {
      ModelStore.prototype.add = honestAdd;
      await Promise.all(runners.map((r) => r.stop()));
      await c.close();
    }
  });
});

describe('the coordinator’s poisoning check', () => {
  it('holds back a round’s model that fails the validation gate on its validation set, flags the round, and the clients enter audit mode', async () => {
    const validation = { count: () => Promise.resolve(split.test.count), trainingExamples: () => Promise.resolve(split.test) };
    const c = await startCoordinator({ validationSets: { digits: validation } });
    const clients = await enrollClients(c, CLIENTS, 'checked');
    const dirs = await Promise.all(clients.map(() => mkdtemp(join(tmpdir(), 'aegis-flag-'))));
    const audits = await Promise.all(dirs.map((d) => AuditBook.open(d)));
    const events: { id: string; e: RunnerEvent }[] = [];
    const runners = startRunners(c, clients, 4, (id, e) => events.push({ id, e }), (i) => ({
      audit: audits[i]!,
      train: async (round: TrainingRound) => {
        const u = await trainLocally({ manifest: round.manifest, globalWeights: round.globalWeights, data: new MemoryDataStore(split.shards[i]!), maxWeight: 2 ** BITS - 1 });
        // From round 1 on, every client sends a model-wrecking update (poisoned clients).
        if (round.roundIndex >= 1) return { ...u, values: round.globalWeights.map((w) => -3 * w * u.weight) };
        return u;
      },
    }));
    try {
      await waitFor(() => c.connectedClients().length === CLIENTS, 20_000, 'clients to connect');
      const bytes = trainingManifest('checked', { maxAbortedRounds: 0, validation: { gate: 0.05, dataset: 'digits', localFraction: 0 } });
      expect(await codeOfAsync(startCoordinator().then(async (other) => other.launch(bytes, { initialWeights: weightBytes(initial) }).finally(() => other.close())))).toBe('not-found');
      await c.launch(bytes, { gatherMs: 5_000, initialWeights: weightBytes(initial) });
      expect(await c.trainingFinished('checked')).toBe('failed');
      // Round 0's model was published; round 1's was held back.
      expect(c.modelsOf('checked')).toHaveLength(2);
      const status = c.statusOf('checked').training!;
      expect(status.flaggedRounds).toEqual([1]);
      expect(status.detail).toMatch(/validation gate/);
      // Round 0's model is a real step up from the initial one (its accuracy after one round of
      // local training varies around 0.5 from run to run, so it is measured against the initial model's).
      expect(status.history[0]!.validationAccuracy).toBeDefined();
      expect(status.history[1]!.validationAccuracy).toBeGreaterThan(status.history[0]!.validationAccuracy! + 0.2);
      await waitFor(() => new Set(events.filter((x) => x.e.kind === 'poisoning-flag').map((x) => x.id)).size === CLIENTS, 10_000, 'every client to be told');
      for (const a of audits) expect(await a.status()).toMatchObject({ inAuditMode: true, reason: 'poisoning-flag', remaining: 5 });
    } finally {
      await Promise.all(runners.map((r) => r.stop()));
      await c.close();
    }
  });
});
