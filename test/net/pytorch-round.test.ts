/**
 * Federated training with the PyTorch trainer (examples/pytorch-digits) end to end: a
 * coordinator and 3 clients over real gRPC on TLS 1.3, each client running the real trainer
 * process (/usr/bin/python3 with PyTorch) for its local fit, and the coordinator checking every
 * model with the same script as its evaluator. A tap around the trainer (torch_tap.py) copies the
 * weights each fit wrote aside, so each model version can be checked against the plain weighted
 * FedAvg of what the trainers produced — exactly, within the quantization error.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import type { ClientRunner } from '../../client/agent/connection.js';
import { MemoryDataStore } from '../../client/store/memory.js';
import { externalTrainerRunner } from '../../client/trainer/external.js';
import { splitDigits, type DigitsSplit } from '../../bench/demo/mnist.js';
import { loadExternalTrainer, type ExternalDemoTrainer } from '../../bench/demo/trainers.js';
import { decodeSafetensors, tensorsToFlat } from '../../shared/model/safetensors.js';
import type { JobManifestInput } from '../../shared/protocol/manifest.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';

const PYTHON = '/usr/bin/python3';
const TAP = fileURLToPath(new URL('../support/trainers/torch_tap.py', import.meta.url));
const CLIENTS = 3;
const ROUNDS = 3;
const CLIP = 4096;
const BITS = 24;

let split: DigitsSplit;
let torch: ExternalDemoTrainer;

beforeAll(async () => {
  split = splitDigits({ clients: CLIENTS, perDigitLimit: 100, seed: 7 });
  torch = await loadExternalTrainer('pytorch', PYTHON);
});

describe('a 3-client training job with the PyTorch trainer', () => {
  let c: Coordinator;
  let runners: ClientRunner[] = [];
  let tap: string;

  beforeAll(async () => {
    tap = await mkdtemp(join(tmpdir(), 'aegis-torch-tap-'));
    const validation = { count: () => Promise.resolve(split.test.count), trainingExamples: () => Promise.resolve(split.test) };
    c = await startCoordinator({ validationSets: { 'digits-test': validation }, evaluator: { cmd: torch.cmd, timeoutMs: 600_000 } });
    const clients = await enrollClients(c, CLIENTS, 'torch');
    runners = startRunners(c, clients, torch.weights.length, undefined, (i) => {
      // The real trainer behind the tap; the clients' own validation evaluate is left out (the coordinator's evaluator checks every model).
      const { train, trainerFormats, trainFirst } = externalTrainerRunner({ cmd: [PYTHON, TAP, tap, join(torch.dir, 'train.py')], timeoutMs: 600_000, data: new MemoryDataStore(split.shards[i]!) });
      return { input: undefined, train, trainerFormats, trainFirst };
    });
    await waitFor(() => c.connectedClients().length === CLIENTS, 20_000, 'clients to connect');
  });

  afterAll(async () => {
    await Promise.all(runners.map((r) => r.stop()));
    await c.close();
  });

  it('runs every round; each model version is the weighted FedAvg of the weights the trainers wrote, and the evaluator sees it learn', async () => {
    const bytes = manifest({
      jobId: 'pytorch-3',
      rounds: ROUNDS,
      round: { dim: torch.weights.length, cohort: CLIENTS, clip: CLIP, bits: BITS },
      // The trainers fit before their clients answer phase 0: it has the time a loaded machine needs.
      deadlines: { advertiseMs: 600_000, shareMs: 60_000, maskedMs: 60_000, consistencyMs: 60_000, unmaskMs: 60_000 },
      model: torch.model,
      training: torch.training as JobManifestInput['training'],
      validation: { gate: 0.5, dataset: 'digits-test', localFraction: 0 },
    });
    await c.launch(bytes, { gatherMs: 5_000, initialWeights: weightBytes(torch.weights) });
    expect(await c.trainingFinished('pytorch-3')).toBe('completed');
    const versions = c.modelsOf('pytorch-3');
    expect(versions).toHaveLength(ROUNDS + 1);

    const files = await readdir(tap);
    const step = (2 * CLIP) / (2 ** BITS - 1);
    for (const v of versions.slice(1)) {
      const r = v.roundIndex!;
      expect(c.resultOf('pytorch-3', r).survivors).toHaveLength(CLIENTS);
      // What each trainer wrote in this round, read back from the tap.
      const fits = files.filter((f) => f.startsWith(`fit-r${r}-`) && f.endsWith('.safetensors'));
      expect(fits).toHaveLength(CLIENTS);
      const trained = await Promise.all(
        fits.map(async (f) => {
          const weights = tensorsToFlat(decodeSafetensors(await readFile(join(tap, f))), torch.model.tensors);
          const reply = JSON.parse(await readFile(join(tap, f.replace(/\.safetensors$/, '.json')), 'utf8')) as { num_examples: number };
          return { weights, n: reply.num_examples };
        }),
      );
      const previous = versions[v.version - 1]!.weights;
      const totalWeight = trained.reduce((a, t) => a + t.n, 0);
      expect(v.totalWeight).toBe(totalWeight);
      let maxErr = 0;
      let maxUnweightedGap = 0;
      for (let j = 0; j < previous.length; j++) {
        let weighted = 0;
        let plain = 0;
        for (const t of trained) {
          weighted += t.n * (t.weights[j]! - previous[j]!);
          plain += t.weights[j]! - previous[j]!;
        }
        const fedavg = previous[j]! + weighted / totalWeight;
        maxErr = Math.max(maxErr, Math.abs(v.weights[j]! - fedavg));
        maxUnweightedGap = Math.max(maxUnweightedGap, Math.abs(previous[j]! + plain / trained.length - fedavg));
      }
      // Quantization: at most one step per client, over the total weight; plus float32 rounding.
      const bound = (trained.length * step) / totalWeight + 1e-5;
      expect(maxErr).toBeLessThanOrEqual(bound);
      // The check can tell: the unweighted mean of the same weights is far outside the bound.
      expect(maxUnweightedGap).toBeGreaterThan(10 * bound);
    }

    // The coordinator's evaluator measured every version on the held-out digits: it learns.
    const history = c.statusOf('pytorch-3').training!.history;
    expect(history.map((h) => h.validationAccuracy)).toEqual(versions.map(() => expect.any(Number)));
    const first = history[0]!.validationAccuracy!;
    const last = history[ROUNDS]!.validationAccuracy!;
    expect(first).toBeLessThan(0.25); // about chance (0.1)
    expect(last).toBeGreaterThan(first + 0.4);
    expect(versions[ROUNDS]!.validationLoss!).toBeLessThan(versions[0]!.validationLoss!);
    // Three rounds of real PyTorch processes (fits, evaluations) on a shared machine: no speed is judged, the bound only ends a hung run.
  });
});
