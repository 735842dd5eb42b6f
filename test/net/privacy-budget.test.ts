/**
 * The client's privacy budget over real gRPC/TLS with in-process runners: a client whose ledger
 * lives in a data dir and whose budget fits exactly two rounds of a DP training job takes part
 * in rounds 0 and 1, is charged for them on disk before its masked inputs leave, and declines
 * round 2 with `privacy-budget` (the coordinator's round status counts the decline by reason;
 * the round completes without it). Restarted from its data dir, the client still holds the
 * spending and declines a second DP job of another id. With a budget, a job that is not
 * differentially private is declined too; a client without a budget joins every round and
 * is still charged.
 */
import { afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import { openLedger } from '../../client/admission/ledger-file.js';
import { epsilonOf, privacyView, totalRdp, type PrivacyLimit } from '../../client/admission/privacy-budget.js';
import { roundPrivacyOf } from '../../client/admission/round-privacy.js';
import type { TrainingRound } from '../../client/admission/training-round.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { calibrate } from '../../shared/dp/calibrate.js';
import { ErrorReason } from '../../shared/gen/aegis/v1/vocabulary_pb.js';
import { DIGITS_TRAINING, digitsModel } from '../../shared/model/digits.js';
import { loadTf } from '../../shared/model/tfjs.js';
import type { DpSpec } from '../../shared/protocol/dp-manifest.js';
import { parseManifest, type ModelSpec } from '../../shared/protocol/manifest.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';

/** Four clients, threshold two (phase 0 needs threshold + 1): a round completes without the one that declines. */
const CLIENTS = 4;
let spec: ModelSpec;
let initial: Float32Array;
let dp: DpSpec;
let c: Coordinator | undefined;
let runners: ClientRunner[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  const { tf } = await loadTf();
  ({ spec, weights: initial } = await digitsModel(tf, { hidden: 4, seed: 5 }));
  const k = calibrate({ noiseMultiplier: 2, delta: 1e-5, rounds: 4, clients: 2, maxClients: CLIENTS, dim: initial.length, clip: 1 });
  dp = {
    mechanism: 'distributed-discrete-gaussian',
    clip: k.clip,
    noiseMultiplier: k.noise_multiplier,
    delta: k.delta,
    epsilon: k.epsilon,
    minClients: k.clients,
    maxClients: k.max_clients,
    bits: k.bits,
    gamma: k.gamma,
    sigma2: k.sigma2_per_client,
    normBound2: k.norm_bound2,
    beta: k.beta,
  };
});

afterEach(async () => {
  for (const r of runners) await r.stop();
  runners = [];
  await c?.close();
  c = undefined;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const job = (jobId: string, rounds: number, withDp = true): Uint8Array =>
  manifest({
    jobId,
    rounds,
    round: { dim: initial.length, cohort: CLIENTS, threshold: 2, clip: 1, bits: 24 },
    deadlines: { advertiseMs: 60_000, shareMs: 20_000, maskedMs: 20_000, consistencyMs: 20_000, unmaskMs: 20_000 },
    model: spec,
    training: { ...DIGITS_TRAINING, epochs: 1, maxAbortedRounds: 0 },
    ...(withDp ? { dp } : {}),
  });

const train = (i: number) => async (round: TrainingRound) => {
  const values = new Float32Array(round.globalWeights.length).map((_, j) => ((i + 1) * ((j % 5) - 2)) / 10_000);
  return { values, weight: 1, examples: 1, loss: 0, trainMs: 0 };
};

/** Runners for `clients`; client 0 keeps its ledger in `dir` and has `budget`. */
async function fleet(coordinator: Coordinator, clients: Enrolled[], dir: string, budget: PrivacyLimit | undefined, events: { id: string; e: RunnerEvent }[]): Promise<ClientRunner[]> {
  const { ledger } = await openLedger(dir, clients[0]!.identity.seed, { missing: 'create' });
  return startRunners(coordinator, clients, initial.length, (id, e) => events.push({ id, e }), (i) => ({
    input: undefined,
    train: train(i),
    ...(i === 0 ? { ledger, ...(budget ? { privacyBudget: budget } : {}) } : {}),
  }));
}

const satOut = (events: { id: string; e: RunnerEvent }[], id: string): { roundIndex: number; code: string }[] =>
  events.flatMap(({ id: who, e }) => (who === id && e.kind === 'sat-out' ? [{ roundIndex: e.roundIndex, code: e.code }] : []));
const declined = (co: Coordinator, jobId: string, r: number) => co.statusOf(jobId, r).declines.map((d) => ({ reason: d.reason, clients: d.clients }));

describe('a client with a privacy budget', () => {
  test('takes part while the budget allows, then declines privacy-budget, and still does after a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-budget-'));
    dirs.push(dir);
    c = await startCoordinator();
    const clients = await enrollClients(c, CLIENTS, 'budget');
    const me = clients[0]!.clientId;
    // Exactly two rounds of this job's cost, at the budget's δ.
    const cost = roundPrivacyOf(parseManifest(job('dp-a', 3)).manifest);
    if (!cost.dp) throw new Error('expected a DP manifest');
    const limit = { epsilon: epsilonOf(totalRdp([{ rdp: cost.rdp }, { rdp: cost.rdp }]), 1e-5).epsilon, delta: 1e-5 };

    const events: { id: string; e: RunnerEvent }[] = [];
    runners = await fleet(c, clients, dir, limit, events);
    await waitFor(() => c!.connectedClients().length === CLIENTS, 60_000, 'clients to connect');
    await c.launch(job('dp-a', 3), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    expect(await c.trainingFinished('dp-a')).toBe('completed');

    expect(c.resultOf('dp-a', 0).survivors).toContain(me);
    expect(c.resultOf('dp-a', 1).survivors).toContain(me);
    expect(declined(c, 'dp-a', 0)).toEqual([]);
    expect(declined(c, 'dp-a', 2)).toEqual([{ reason: ErrorReason.PRIVACY_BUDGET, clients: 1 }]);
    expect(c.resultOf('dp-a', 2).survivors).not.toContain(me);
    expect(c.resultOf('dp-a', 2).survivors).toHaveLength(CLIENTS - 1);
    expect(satOut(events, me)).toEqual([{ roundIndex: 2, code: 'privacy-budget' }]);

    // Restart: a new runner and a ledger read back from the data dir.
    for (const r of runners) await r.stop();
    runners = [];
    const { ledger: reread } = await openLedger(dir, clients[0]!.identity.seed, { missing: 'refuse' });
    const v = privacyView(reread.privacyCharges(), 1e-5, limit);
    expect(v.jobs).toEqual([expect.objectContaining({ jobId: 'dp-a', roundIndexes: [0, 1] })]);
    expect(v.total.epsilon).toBe(limit.epsilon);
    expect(v.publishers.map((p) => p.publisher)).toEqual(['(unsigned)']);

    const after: { id: string; e: RunnerEvent }[] = [];
    runners = await fleet(c, clients, dir, limit, after);
    await waitFor(() => c!.connectedClients().length === CLIENTS, 60_000, 'clients to reconnect');
    await c.launch(job('dp-b', 1), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    expect(await c.trainingFinished('dp-b')).toBe('completed');
    expect(declined(c, 'dp-b', 0)).toEqual([{ reason: ErrorReason.PRIVACY_BUDGET, clients: 1 }]);
    expect(c.resultOf('dp-b', 0).survivors).not.toContain(me);
    expect(satOut(after, me)).toEqual([{ roundIndex: 0, code: 'privacy-budget' }]);
    // Nothing more was charged.
    const { ledger: last } = await openLedger(dir, clients[0]!.identity.seed, { missing: 'refuse' });
    expect(last.privacyCharges()).toHaveLength(2);
  });

  test('declines a job that is not differentially private; without a budget the client joins and DP rounds are charged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-budget-'));
    dirs.push(dir);
    c = await startCoordinator();
    const clients = await enrollClients(c, CLIENTS, 'nodp');
    const me = clients[0]!.clientId;
    const events: { id: string; e: RunnerEvent }[] = [];
    runners = await fleet(c, clients, dir, { epsilon: 100, delta: 1e-5 }, events);
    await waitFor(() => c!.connectedClients().length === CLIENTS, 60_000, 'clients to connect');
    await c.launch(job('plain-train', 1, false), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    expect(await c.trainingFinished('plain-train')).toBe('completed');
    expect(declined(c, 'plain-train', 0)).toEqual([{ reason: ErrorReason.PRIVACY_BUDGET, clients: 1 }]);
    expect(satOut(events, me)).toEqual([{ roundIndex: 0, code: 'privacy-budget' }]);

    // The same client without a budget: it joins a DP round and the round is charged.
    for (const r of runners) await r.stop();
    runners = await fleet(c, clients, dir, undefined, events);
    await waitFor(() => c!.connectedClients().length === CLIENTS, 60_000, 'clients to reconnect');
    await c.launch(job('dp-free', 1), { gatherMs: 5_000, initialWeights: weightBytes(initial) });
    expect(await c.trainingFinished('dp-free')).toBe('completed');
    expect(c.resultOf('dp-free', 0).survivors).toContain(me);
    const { ledger } = await openLedger(dir, clients[0]!.identity.seed, { missing: 'refuse' });
    expect(ledger.privacyCharges().map((x) => [x.jobId, x.roundIndex])).toEqual([['dp-free', 0]]);
  });
});
