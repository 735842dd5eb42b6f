/**
 * A DP training job and a training job without DP, run to completion on one coordinator with
 * in-process clients (real gRPC, mTLS, SecAgg): what the tests of the coordinator's privacy views
 * (round status, /metrics, the dashboard) look at.
 */
import { createHash } from 'node:crypto';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { enrollWithToken, type ClientRunner } from '../../client/agent/connection.js';
import { createIdentity } from '../../client/enroll/csr.js';
import type { Trainer } from '../../client/admission/training-round.js';
import type { DpManifestView } from '../../shared/protocol/dp-manifest.js';
import { dpSection } from './dp.js';
import { manifest, startRunners, waitFor, type Enrolled } from './cluster.js';

export const DP_CLIENTS = 4;
export const DP_DIM = 16;
export const DP_ROUNDS = 3;
export const DP_JOB = 'dp-job';
export const PLAIN_JOB = 'no-dp-job';

const initial = new Float32Array(DP_DIM).map((_, i) => Math.cos(i) / 4);
const model = {
  format: 'safetensors' as const,
  tensors: [{ name: 'w', shape: [DP_DIM], dtype: 'F32' as const }],
  initialWeightsSha256: createHash('sha256').update(weightBytes(initial)).digest('hex'),
};

/** Client i's update: small fixed values inside the clip, weighted by 1 + i examples. */
const trainerOf =
  (i: number): Trainer =>
  async () => {
    const weight = 1 + i;
    return { values: new Float32Array(DP_DIM).map((_, j) => (((i + j) % 5) - 2) * 0.02 * weight), weight, examples: weight };
  };

/** Generous phase deadlines: the rounds must complete on a loaded machine too (every client answers at once when it can). */
const DEADLINES = { advertiseMs: 60_000, shareMs: 60_000, maskedMs: 90_000, consistencyMs: 60_000, unmaskMs: 60_000 };
const round = { dim: DP_DIM, cohort: DP_CLIENTS, threshold: 3, clip: 4, bits: 16 };
const dp = dpSection({ dim: DP_DIM, minClients: 3, maxClients: DP_CLIENTS, rounds: DP_ROUNDS });

/** The DP job's manifest as the DP helpers read it (dpEpsilonAfter(DP_VIEW, k) is ε after k rounds). */
export const DP_VIEW: DpManifestView = { rounds: DP_ROUNDS, round, dp };

/** Enrolls the clients and starts their runners (each a trainer, no plain input). */
export async function startDpClients(c: Coordinator): Promise<ClientRunner[]> {
  // One after another, each with room for a busy machine (a test-suite run beside it).
  const clients: Enrolled[] = [];
  for (let i = 0; i < DP_CLIENTS; i++) {
    const identity = await createIdentity();
    const { token } = await c.createInvite();
    const r = await enrollWithToken({ enrollAddress: c.enrollAddress, caPem: c.ca.certificatePem, token, identity, clientId: `dpv-${i}`, timeoutMs: 120_000 });
    clients.push({ clientId: r.clientId, identity, certificateDer: r.certificateDer });
  }
  const runners = startRunners(c, clients, DP_DIM, undefined, (i) => ({ input: undefined, train: trainerOf(i), trainerFormats: ['safetensors'] }));
  await waitFor(() => c.connectedClients().length === DP_CLIENTS, 20_000, 'clients to connect');
  return runners;
}

/** Runs a training job of DP_ROUNDS rounds to its end: with the `dp` section (DP_JOB) or without (PLAIN_JOB). */
export async function runJob(c: Coordinator, withDp: boolean): Promise<void> {
  const jobId = withDp ? DP_JOB : PLAIN_JOB;
  const job = manifest({ jobId, rounds: DP_ROUNDS, round, model, training: { maxAbortedRounds: 0 }, deadlines: DEADLINES, ...(withDp ? { dp } : {}) });
  await c.launch(job, { gatherMs: 5_000, initialWeights: weightBytes(initial) });
  const end = await c.trainingFinished(jobId);
  if (end !== 'completed') throw new Error(`job ${jobId} ended ${end}`);
}
