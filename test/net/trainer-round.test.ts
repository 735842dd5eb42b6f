/**
 * Training rounds with an external trainer in every client: the NumPy softmax-regression example
 * (examples/numpy-logreg) run as real Python processes, a coordinator and clients over real gRPC
 * on TLS 1.3. A tap around the trainer copies the weights each trainer wrote, so the test checks
 * the coordinator's integer sum against what the trainers wrote — not against what they claimed
 * — and that a client whose trainer crashes or hangs declines the round with `trainer-failed`,
 * the round goes on without it, and the client trains again in the next round.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import { MemoryDataStore } from '../../client/store/memory.js';
import { splitHoldout } from '../../client/trainer/train.js';
import { externalTrainerRunner } from '../../client/trainer/external.js';
import { splitDigits, type DigitsSplit } from '../../bench/demo/mnist.js';
import { decodeSafetensors, tensorsToFlat, type TensorSpec } from '../../shared/model/safetensors.js';
import { ErrorReason } from '../../shared/gen/aegis/v1/vocabulary_pb.js';
import { vectorFromBytes } from '../../shared/rpc/convert.js';
import type { TrainerError } from '../../shared/trainer/protocol.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';

const PY = '/usr/bin/python3';
const TAP = resolve('test/support/trainers/tap_trainer.py');
const EXAMPLE = resolve('examples/numpy-logreg');
const example = JSON.parse(readFileSync(join(EXAMPLE, 'manifest.json'), 'utf8')) as {
  round: { dim: number; clip: number; bits: number };
  model: { tensors: TensorSpec[]; initialWeightsSha256: string; format: 'safetensors' };
  training: Record<string, unknown>;
  validation: { gate: number; localFraction: number };
};
const TENSORS = example.model.tensors;
const DIM = example.round.dim;
const { clip: CLIP, bits: BITS } = example.round;
const LOCAL_FRACTION = example.validation.localFraction;
const initial = new Float32Array(readFileSync(join(EXAMPLE, 'initial.bin')).buffer.slice(0));

/** A job of the example's model for `cohort` clients. */
function job(jobId: string, cohort: number, rounds: number): Uint8Array {
  return manifest({
    jobId,
    rounds,
    round: { dim: DIM, cohort, clip: CLIP, bits: BITS },
    // The trainers run before phase 0's answer: its deadline covers them.
    deadlines: { advertiseMs: 120_000, shareMs: 30_000, maskedMs: 60_000, consistencyMs: 30_000, unmaskMs: 30_000 },
    model: example.model,
    training: { ...example.training, maxAbortedRounds: 0 } as never,
    validation: example.validation,
  });
}

/** What the tap copied: the weights client `label`'s trainer wrote in `round`. */
const tapped = (tap: string, label: string, round: number): Float32Array => tensorsToFlat(decodeSafetensors(readFileSync(join(tap, `${label}-r${round}.safetensors`))), TENSORS);

/** Runners whose trainer is the NumPy example behind the tap; `timeoutMs(i)` per client. */
function trainerRunners(c: Coordinator, clients: Enrolled[], split: DigitsSplit, tap: string, failures: { id: string; err: TrainerError }[], events: { id: string; e: RunnerEvent }[], timeoutMs = (_i: number) => 60_000): ClientRunner[] {
  return startRunners(
    c,
    clients,
    DIM,
    (id, e) => events.push({ id, e }),
    (i) => ({
      input: undefined,
      ...externalTrainerRunner({
        cmd: [PY, TAP, tap, clients[i]!.clientId, '--', PY, join(EXAMPLE, 'trainer.py')],
        timeoutMs: timeoutMs(i),
        data: new MemoryDataStore(split.shards[i]!),
        onFailure: (err) => failures.push({ id: clients[i]!.clientId, err }),
      }),
    }),
  );
}

/** How many examples client i trains on: its shard minus the local validation holdout. */
async function trainCount(split: DigitsSplit, i: number): Promise<number> {
  const ex = await new MemoryDataStore(split.shards[i]!).trainingExamples({ features: 'pixels', label: 'digit' });
  return splitHoldout(ex, LOCAL_FRACTION).train.count;
}

describe('a training round with the NumPy example trainer in 3 clients', () => {
  let c: Coordinator;
  let runners: ClientRunner[] = [];
  let clients: Enrolled[];
  let split: DigitsSplit;
  const tap = mkdtempSync(join(tmpdir(), 'aegis-tap-'));
  const failures: { id: string; err: TrainerError }[] = [];
  const events: { id: string; e: RunnerEvent }[] = [];

  beforeAll(async () => {
    split = splitDigits({ clients: 3, perDigitLimit: 24, seed: 3 });
    c = await startCoordinator();
    clients = await enrollClients(c, 3, 'numpy');
    runners = trainerRunners(c, clients, split, tap, failures, events);
    await waitFor(() => c.connectedClients().length === 3, 20_000, 'clients to connect');
  });

  afterAll(async () => {
    await Promise.all(runners.map((r) => r.stop()));
    await c.close();
    rmSync(tap, { recursive: true, force: true });
  });

  it("the coordinator's integer sum is the sum of the updates made from the weights the trainers wrote, quantized", async () => {
    await c.launch(job('numpy-exact', 3, 1), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    expect(await c.trainingFinished('numpy-exact')).toBe('completed');
    expect(failures).toEqual([]);
    const result = c.resultOf('numpy-exact', 0);
    expect([...result.survivors].sort()).toEqual(clients.map((e) => e.clientId).sort());
    const sum = vectorFromBytes(result.sum);
    expect(sum.length).toBe(DIM + 1);

    // Each client's update from its tapped weights, exactly as the client makes it: float32
    // (trained − global) × weight, weight = its examples after the holdout.
    const weights = await Promise.all(clients.map((_, i) => trainCount(split, i)));
    expect(sum[DIM]).toBe(weights.reduce((a, w) => a + w, 0));
    const updates = clients.map((e, i) => {
      const trained = tapped(tap, e.clientId, 0);
      const u = new Float32Array(DIM);
      for (let j = 0; j < DIM; j++) u[j] = (trained[j]! - initial[j]!) * weights[i]!;
      return u;
    });
    // The trainers did train: the weights moved.
    for (const u of updates) expect(u.some((v) => v !== 0)).toBe(true);
    // Quantization rounds each value of each client to one of its two neighbouring levels
    // (randomly); the coordinator's integer sum must lie between the sums of the lower and the
    // upper levels — in integers, no tolerance.
    const max = 2 ** BITS - 1;
    const scale = max / (2 * CLIP);
    let outside = 0;
    let width = 0;
    for (let j = 0; j < DIM; j++) {
      let lo = 0;
      let hi = 0;
      for (const u of updates) {
        const v = Math.max(-CLIP, Math.min(CLIP, u[j]!));
        const y = (v + CLIP) * scale;
        lo += Math.min(Math.floor(y), max);
        hi += Math.min(Number.isInteger(y) ? y : Math.floor(y) + 1, max);
      }
      if (sum[j]! < lo || sum[j]! > hi) outside++;
      width = Math.max(width, hi - lo);
    }
    expect(outside).toBe(0);
    expect(width).toBeLessThanOrEqual(3);
    // The new model is the initial one plus the FedAvg mean the sum gives.
    const v1 = c.modelsOf('numpy-exact')[1]!;
    expect(Buffer.from(v1.sha256).toString('hex')).toBe(createHash('sha256').update(weightBytes(v1.weights)).digest('hex'));
    expect(v1.totalWeight).toBe(sum[DIM]);
  }, 300_000);
});

describe('a client whose trainer fails declines the round and trains in the next one', () => {
  let c: Coordinator;
  let runners: ClientRunner[] = [];
  let clients: Enrolled[];
  const tap = mkdtempSync(join(tmpdir(), 'aegis-tap-'));
  const failures: { id: string; err: TrainerError }[] = [];
  const events: { id: string; e: RunnerEvent }[] = [];

  beforeAll(async () => {
    const split = splitDigits({ clients: 4, perDigitLimit: 16, seed: 4 });
    c = await startCoordinator();
    clients = await enrollClients(c, 4, 'flaky');
    // Client 1's trainer has 3 s per call: its hanging trainer is stopped then.
    runners = trainerRunners(c, clients, split, tap, failures, events, (i) => (i === 1 ? 3_000 : 60_000));
    await waitFor(() => c.connectedClients().length === 4, 20_000, 'clients to connect');
  });

  afterAll(async () => {
    await Promise.all(runners.map((r) => r.stop()));
    await c.close();
    rmSync(tap, { recursive: true, force: true });
  });

  it('round 1: client 0 crashes; round 2: client 1 hangs past its timeout; round 3: all four train', async () => {
    const [c0, c1] = [clients[0]!.clientId, clients[1]!.clientId];
    writeFileSync(join(tap, `${c0}.fail`), 'crash');
    // Client 1's trainer hangs in round 2: its fail file is put in place once round 1 is over.
    const launched = c.launch(job('numpy-flaky', 4, 3), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    await launched;
    await waitFor(() => c.modelsOf('numpy-flaky').length >= 2, 240_000, 'round 1 to complete');
    writeFileSync(join(tap, `${c1}.fail`), 'sleep');
    expect(await c.trainingFinished('numpy-flaky')).toBe('completed');

    const declined = (r: number) => c.statusOf('numpy-flaky', r).declines.map((d) => ({ reason: d.reason, clients: d.clients }));
    // Round 1: client 0 declined with trainer-failed, the three others completed it.
    expect(declined(0)).toEqual([{ reason: ErrorReason.TRAINER_FAILED, clients: 1 }]);
    expect([...c.resultOf('numpy-flaky', 0).survivors].sort()).toEqual(clients.slice(1).map((e) => e.clientId).sort());
    // Round 2: client 1's trainer was killed at its timeout; it declined, the others went on.
    expect(declined(1)).toEqual([{ reason: ErrorReason.TRAINER_FAILED, clients: 1 }]);
    expect(c.resultOf('numpy-flaky', 1).survivors).not.toContain(c1);
    expect(c.resultOf('numpy-flaky', 1).survivors).toContain(c0);
    // Round 3: everyone, both failed clients included.
    expect(declined(2)).toEqual([]);
    expect(c.resultOf('numpy-flaky', 2).survivors).toHaveLength(4);

    // The clients saw why: a crash, then a timeout, each with its kind; sat out with trainer-failed.
    expect(failures.map((f) => ({ id: f.id, kind: f.err.kind }))).toEqual([
      { id: c0, kind: 'crashed' },
      { id: c1, kind: 'timeout' },
    ]);
    const satOut = events.filter((x) => x.e.kind === 'sat-out').map((x) => ({ id: x.id, code: (x.e as { code: string }).code }));
    expect(satOut).toEqual([
      { id: c0, code: 'trainer-failed' },
      { id: c1, code: 'trainer-failed' },
    ]);
    // And the failed clients' trainers wrote weights in round 3, which the coordinator summed.
    expect(tapped(tap, c0, 2).length).toBe(DIM);
    expect(tapped(tap, c1, 2).length).toBe(DIM);
  }, 600_000);
});
