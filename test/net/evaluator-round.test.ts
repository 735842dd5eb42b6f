/**
 * The coordinator's external evaluator (`coordinator start --evaluator-cmd`) over real gRPC on
 * TLS 1.3, with real trainer processes (examples/pytorch-digits on /usr/bin/python3):
 *
 *   - its accuracy gates a round: a model that loses more than the gate is held back (flagged);
 *   - an evaluator that fails holds the new model back (`model-unchecked`): never published, the
 *     previous version stays current, the clients hear the round as not ok; once the evaluator
 *     works again, training goes on (a new revision of the job from the current version);
 *   - every way an evaluation can fail — a hang past the timeout, a crash, a garbage reply, a
 *     reply about other examples — is an unchecked model, never a number.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { evaluateByCommand, UncheckedModel } from '../../coordinator/jobs/evaluator.js';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import type { TrainingRound } from '../../client/admission/training-round.js';
import { MemoryDataStore } from '../../client/store/memory.js';
import { externalTrainerRunner } from '../../client/trainer/external.js';
import { splitDigits, type DigitsSplit } from '../../bench/demo/mnist.js';
import { loadExternalTrainer, type ExternalDemoTrainer } from '../../bench/demo/trainers.js';
import { parseManifest, type JobManifestInput, type TrainingManifest } from '../../shared/protocol/manifest.js';
import { AbortReason as PbAbortReason } from '../../shared/gen/aegis/v1/vocabulary_pb.js';
import { AbortReason } from '../../shared/protocol/vocabulary.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import type { Coordinator, CoordinatorOptions } from '../../coordinator/service/coordinator.js';

const PYTHON = '/usr/bin/python3';
const TAP = fileURLToPath(new URL('../support/trainers/torch_tap.py', import.meta.url));
const CLIENTS = 3;
/** Real PyTorch processes on a shared machine: the bound only ends a hung run. */
const LONG = 1_800_000;

let split: DigitsSplit;
let torch: ExternalDemoTrainer;
const validation = () => ({ count: () => Promise.resolve(split.test.count), trainingExamples: () => Promise.resolve(split.test) });

beforeAll(async () => {
  split = splitDigits({ clients: CLIENTS, perDigitLimit: 150, seed: 3 });
  torch = await loadExternalTrainer('pytorch', PYTHON);
});

function jobManifest(jobId: string, over: { rounds: number; revision?: number; initial?: { sha256: string }; gate?: number }): Uint8Array {
  return manifest({
    jobId,
    ...(over.revision ? { revision: over.revision } : {}),
    rounds: over.rounds,
    round: { dim: torch.weights.length, cohort: CLIENTS, clip: 4096, bits: 24 },
    deadlines: { advertiseMs: 600_000, shareMs: 60_000, maskedMs: 60_000, consistencyMs: 60_000, unmaskMs: 60_000 },
    model: over.initial ? { ...torch.model, initialWeightsSha256: over.initial.sha256 } : torch.model,
    training: { ...(torch.training as JobManifestInput['training']), maxAbortedRounds: 0 },
    validation: { gate: over.gate ?? 0.05, dataset: 'digits-test', localFraction: 0 },
  });
}

/** A coordinator whose evaluator is the PyTorch script behind the tap (broken in `mode` while TAP_DIR/broken exists), and 3 clients training with PyTorch. */
async function cluster(
  tapDir: string,
  mode: 'garbage' | 'crash',
  opts: Partial<CoordinatorOptions>,
  wreckFrom?: number,
): Promise<{ c: Coordinator; runners: ClientRunner[]; clients: Enrolled[]; events: { id: string; e: RunnerEvent }[] }> {
  const c = await startCoordinator({
    validationSets: { 'digits-test': validation() },
    evaluator: { cmd: [PYTHON, TAP, tapDir, join(torch.dir, 'train.py'), mode].map((w) => `'${w}'`).join(' '), timeoutMs: 600_000 },
    ...opts,
  });
  const clients = await enrollClients(c, CLIENTS, `ev-${mode}`);
  const events: { id: string; e: RunnerEvent }[] = [];
  const runners = startRunners(c, clients, torch.weights.length, (id, e) => events.push({ id, e }), (i) => {
    const { train, trainerFormats, trainFirst } = externalTrainerRunner({ cmd: [PYTHON, join(torch.dir, 'train.py')], timeoutMs: 600_000, data: new MemoryDataStore(split.shards[i]!) });
    return {
      input: undefined,
      trainerFormats,
      trainFirst,
      train: async (round: TrainingRound) => {
        const u = await train(round);
        // From round `wreckFrom` on, every client sends a model-wrecking update (poisoned clients).
        if (wreckFrom !== undefined && round.roundIndex >= wreckFrom) return { ...u, values: round.globalWeights.map((w) => -3 * w * u.weight) };
        return u;
      },
    };
  });
  await waitFor(() => c.connectedClients().length === CLIENTS, 20_000, 'clients to connect');
  return { c, runners, clients, events };
}

describe('the coordinator’s external evaluator', () => {
  let stop: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const s of stop) await s();
    stop = [];
  });

  it(
    'gates a round with its accuracy: a model that loses more than the gate is held back and the round flagged',
    async () => {
      const tapDir = await mkdtemp(join(tmpdir(), 'aegis-eval-gate-'));
      const { c, runners } = await cluster(tapDir, 'crash', {}, 1);
      stop.push(async () => {
        await Promise.all(runners.map((r) => r.stop()));
        await c.close();
      });
      await c.launch(jobManifest('gated', { rounds: 2 }), { gatherMs: 5_000, initialWeights: weightBytes(torch.weights) });
      expect(await c.trainingFinished('gated')).toBe('failed');
      // Round 1's model was published; round 2's (wrecked) was held back on the evaluator's word.
      expect(c.modelsOf('gated')).toHaveLength(2);
      const t = c.statusOf('gated').training!;
      expect(t.flaggedRounds).toEqual([1]);
      expect(t.uncheckedRounds).toEqual([]);
      expect(t.detail).toMatch(/validation gate/);
      // The accuracies are the evaluator's (tfjs cannot run this model): version 1 well above version 0.
      expect(t.history[1]!.validationAccuracy).toBeGreaterThan(t.history[0]!.validationAccuracy! + 0.2);
    },
    LONG,
  );

  it(
    'holds back a model it could not check (model-unchecked): the previous version stays current, and training goes on once it works again',
    async () => {
      const tapDir = await mkdtemp(join(tmpdir(), 'aegis-eval-unchecked-'));
      // The evaluator breaks (answers garbage) once round 1's model is published, before round 2 gathers.
      const { c, runners, events } = await cluster(tapDir, 'garbage', {
        onBetweenRounds: (jobId) => {
          if (jobId === 'unchecked') writeFileSync(join(tapDir, 'broken'), '');
        },
      });
      stop.push(async () => {
        await Promise.all(runners.map((r) => r.stop()));
        await c.close();
      });
      await c.launch(jobManifest('unchecked', { rounds: 2, gate: 0.5 }), { gatherMs: 5_000, initialWeights: weightBytes(torch.weights) });
      expect(await c.trainingFinished('unchecked')).toBe('failed');
      // Round 2 completed (its sum was unmasked) but its model was never published: version 1 stays current.
      const versions = c.modelsOf('unchecked');
      expect(versions).toHaveLength(2);
      const round2 = c.statusOf('unchecked', 1);
      expect(round2).toMatchObject({ ok: true, finished: true, holdReason: PbAbortReason.MODEL_UNCHECKED });
      expect(round2.detail).toMatch(/^model held back: the evaluator failed \(protocol\)/);
      const t = round2.training!;
      expect(t.uncheckedRounds).toEqual([1]);
      expect(t.flaggedRounds).toEqual([]);
      expect(t.model!.version).toBe(1);
      expect(Buffer.from(t.model!.sha256)).toEqual(Buffer.from(versions[1]!.sha256));
      expect(t.detail).toMatch(/model-unchecked/);
      // Round 1 is not held back; every client heard round 2 as not ok, with the reason.
      expect(c.statusOf('unchecked', 0).holdReason).toBe(PbAbortReason.UNSPECIFIED);
      await waitFor(() => events.filter((x) => x.e.kind === 'round-ended' && x.e.roundIndex === 1).length === CLIENTS, 10_000, 'every client to hear round 2 ended');
      for (const x of events.filter((y) => y.e.kind === 'round-ended' && y.e.roundIndex === 1)) expect(x.e).toMatchObject({ ok: false, reason: AbortReason.ModelUnchecked });

      // The evaluator works again: a new revision of the job from the current version trains on.
      await rm(join(tapDir, 'broken'));
      const from = versions[1]!;
      await c.launch(jobManifest('unchecked', { rounds: 1, revision: 2, initial: { sha256: Buffer.from(from.sha256).toString('hex') } }), { gatherMs: 5_000, initialWeights: weightBytes(from.weights) });
      expect(await c.trainingFinished('unchecked')).toBe('completed');
      const next = c.modelsOf('unchecked');
      expect(next).toHaveLength(2);
      expect(next[1]!.validationAccuracy).toEqual(expect.any(Number));
      expect(c.statusOf('unchecked').training!.uncheckedRounds).toEqual([]);
    },
    LONG,
  );
});

describe('evaluateByCommand', () => {
  let dir: string;
  let job: TrainingManifest;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aegis-evaluators-'));
    job = parseManifest(jobManifest('units', { rounds: 1 })).manifest as TrainingManifest;
    await writeFile(join(dir, 'hang.py'), 'import sys, time\nsys.stdin.read()\nwhile True:\n    time.sleep(60)\n');
    await writeFile(join(dir, 'crash.py'), 'import sys\nsys.stdin.read()\nsys.exit(3)\n');
    await writeFile(join(dir, 'garbage.py'), 'import sys\nsys.stdin.read()\nprint("accuracy: 0.99")\n');
    await writeFile(join(dir, 'few.py'), 'import sys, json\nsys.stdin.read()\nprint(json.dumps({"aegis_trainer": 1, "num_examples": 1, "loss": 0.1, "metrics": {"accuracy": 0.99}}))\n');
  });

  const check = (script: string | undefined, timeoutMs = 600_000) =>
    evaluateByCommand({
      evaluator: script === undefined ? undefined : { cmd: `${PYTHON} ${script.startsWith('/') ? script : join(dir, script)}`, timeoutMs },
      jobId: 'units',
      manifest: job,
      set: validation(),
      weights: torch.weights,
      round: 0,
      modelVersion: 1,
    });

  it('turns a hang past its timeout, a crash, a garbage reply and a reply about other examples into an unchecked model', async () => {
    await expect(check('hang.py', 2_000)).rejects.toThrow(UncheckedModel);
    await expect(check('hang.py', 2_000)).rejects.toThrow(/\(timeout\)/);
    await expect(check('crash.py')).rejects.toThrow(/\(exit-code\)/);
    await expect(check('garbage.py')).rejects.toThrow(/\(protocol\)/);
    await expect(check('few.py')).rejects.toThrow(`the evaluator reported 1 examples, it was given ${split.test.count}`);
    await expect(check(undefined)).rejects.toThrow(/no evaluator/);
  });

  it('returns the real evaluator’s accuracy and loss on every example of the set', async () => {
    const r = await check(join(torch.dir, 'train.py'));
    expect(r.examples).toBe(split.test.count);
    expect(r.accuracy).toBeGreaterThanOrEqual(0);
    expect(r.accuracy).toBeLessThan(0.3); // the initial weights: about chance
    expect(r.loss).toBeGreaterThan(2);
  });
});
