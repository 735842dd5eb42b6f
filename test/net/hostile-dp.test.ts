/**
 * A coordinator that lies about a DP job, over real gRPC and TLS 1.3, against real
 * ClientRunners that trust a publisher registry: stripping the signed `dp` section, or changing
 * any of its parameters, is a manifest change like any other — the clients refuse the round
 * before advertising a key, so no update (noised or not) ever leaves them. The control: the
 * signed DP job, sent as an honest coordinator would (the masked length is the DP encoding's),
 * is taken.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientRunner } from '../../client/agent/connection.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { readSnapshot } from '../../shared/trust/registry-dir.js';
import { TrustBook } from '../../shared/trust/trust-book.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { HostileCoordinator } from '../support/hostile-coordinator.js';
import { hex, publisherRegistry, sha256, signedJob, signedRoundStart, type SignedJob } from '../support/signed-jobs.js';
import { dpSection } from '../support/dp.js';

const DIM = 24;
const N = 5;
const publisher = randomBytes(32);
const initial = new Float32Array(DIM).fill(0.5);
const model = { format: 'safetensors' as const, tensors: [{ name: 'w', shape: [DIM], dtype: 'F32' as const }], initialWeightsSha256: hex(sha256(weightBytes(initial))) };
const dp = dpSection({ dim: DIM, minClients: 3, maxClients: N, rounds: 4 });

let h: HostileCoordinator;
let runners: ClientRunner[] = [];
let clients: Enrolled[];
let ids: string[];
let job: SignedJob;

beforeAll(async () => {
  const registry = await publisherRegistry(publisher);
  const honest = await startCoordinator({ registryDir: registry });
  clients = await enrollClients(honest, N, 'dp-member');
  const ca = honest.ca;
  await honest.close();
  h = await HostileCoordinator.start(ca, clients, registry);
  const dirs = await Promise.all(clients.map(() => mkdtemp(join(tmpdir(), 'aegis-hostile-dp-'))));
  const target = { address: h.address, ca: { certificatePem: ca.certificatePem } } as unknown as Parameters<typeof startRunners>[0];
  runners = startRunners(target, clients, DIM, undefined, (i) => ({
    input: undefined,
    trust: { backup: () => readSnapshot(registry), book: TrustBook.open(dirs[i]!) },
    train: async () => ({ values: new Float32Array(DIM).fill(0.01), weight: 1 }),
    trainerFormats: ['safetensors'],
  }));
  ids = clients.map((c) => c.clientId);
  job = signedJob(publisher, { jobId: 'dp-job', rounds: 4, round: { dim: DIM, cohort: N, threshold: 3, clip: 4, bits: 16 }, model, training: {}, dp } as never);
  await waitFor(() => h.connected().length === N, 20_000, 'clients to connect to the attacker');
});

afterAll(async () => {
  await Promise.all(runners.map((r) => r.stop()));
  await h.close();
});

/** Every client declined round `index` (with any code); returns the codes. */
async function declines(index: number): Promise<string[]> {
  await waitFor(() => ids.every((id) => h.sent('decline', id).some((d) => d.round.roundIndex === index)), 20_000, `declines of round ${index}`);
  return ids.map((id) => h.sent('decline', id).find((d) => d.round.roundIndex === index)!.reason);
}

/** A manifest JSON of the same job with `dp` replaced (undefined: stripped). */
function altered(dpOver: Record<string, unknown> | undefined): Uint8Array {
  return manifest({ jobId: 'dp-job', rounds: 4, round: { dim: DIM, cohort: N, threshold: 3, clip: 4, bits: 16 }, model, training: {}, ...(dpOver ? { dp: dpOver } : {}) } as never);
}

const advertised = (index: number) => h.sent('advertise-keys').filter((m) => m.round.roundIndex === index);

describe('a coordinator that changes the signed dp section is refused', () => {
  const cases: [string, Uint8Array][] = [
    ['stripped', altered(undefined)],
    ['a smaller noise multiplier', altered({ ...dp, noiseMultiplier: dp.noiseMultiplier / 2 })],
    ['a smaller per-client variance', altered({ ...dp, sigma2: `1/4` })],
    ['a larger clip', altered({ ...dp, clip: dp.clip * 2 })],
    ['fewer minimum clients', altered({ ...dp, minClients: 2 })],
  ];
  cases.forEach(([what, json], k) => {
    it(`dp ${what}: the JSON under the signed envelope, or alone, is declined and no key is advertised`, async () => {
      const index = 2 * k;
      // The changed JSON with the publisher's envelope: the envelope's payload is not this JSON.
      h.startRound(ids, () => ({ ...signedRoundStart(job, ids, index), round: { manifestHash: sha256(json), roundIndex: index }, manifestJson: json }));
      const withEnvelope = await declines(index);
      // The changed JSON alone: a trusting client takes only signed manifests.
      h.startRound(ids, () => {
        const s = { ...signedRoundStart(job, ids, index + 1), round: { manifestHash: sha256(json), roundIndex: index + 1 }, manifestJson: json };
        delete (s as { signedManifest?: Uint8Array }).signedManifest;
        return s;
      });
      const alone = await declines(index + 1);
      expect(withEnvelope).toEqual(ids.map(() => 'hash-mismatch'));
      expect(alone).toEqual(ids.map(() => 'manifest-required'));
      expect(advertised(index)).toEqual([]);
      expect(advertised(index + 1)).toEqual([]);
    });
  });

  it('(control) the signed DP job as an honest coordinator sends it is taken: every client advertises its keys', async () => {
    h.models.set(`${hex(job.hash)}:0`, weightBytes(initial));
    h.startRound(ids, () => ({ ...signedRoundStart(job, ids, 0), model: { version: 0, sha256: sha256(weightBytes(initial)) } }));
    await waitFor(() => ids.every((id) => h.sent('advertise-keys', id).some((m) => hex(m.round.manifestHash) === hex(job.hash))), 20_000, 'the DP round to be taken');
    expect(h.sent('decline').filter((d) => hex(d.round.manifestHash) === hex(job.hash))).toEqual([]);
  });
});
