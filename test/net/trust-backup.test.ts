/**
 * A backup registry that lags the coordinator's, over real gRPC/TLS: ops added a publisher on
 * the primary and have not published it to the backup yet. The clients take the old publisher's
 * jobs, sit the new publisher's out with `backup-behind` — without entering audit mode — and take
 * them once `registry publish` has brought the backup in step.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditBook } from '../../client/audit/audit.js';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { signManifest } from '../../shared/trust/manifest.js';
import { addPublisher, initRegistry, readSnapshot } from '../../shared/trust/registry-dir.js';
import { publishRegistry } from '../../shared/trust/registry-publish.js';
import { TrustBook } from '../../shared/trust/trust-book.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';

const PASS = 'registry passphrase for tests';
const N = 4;
const DIM = 8;
const oldTeam = randomBytes(32);
const newTeam = randomBytes(32);

let primary: string;
let backup: string;
let c: Coordinator;
let runners: ClientRunner[];
let audits: AuditBook[];
const events: { id: string; e: RunnerEvent }[] = [];

beforeAll(async () => {
  const base = await mkdtemp(join(tmpdir(), 'aegis-backup-lag-'));
  primary = join(base, 'primary');
  backup = join(base, 'backup');
  await initRegistry(primary, { roots: 1, threshold: 1, passphrase: PASS });
  await addPublisher(primary, { publicKey: ed25519PublicFromSeed(oldTeam), name: 'old-team', passphrase: PASS });
  await publishRegistry(primary, backup);
  // The change made on the primary only: the backup now lags by one version.
  await addPublisher(primary, { publicKey: ed25519PublicFromSeed(newTeam), name: 'new-team', passphrase: PASS });

  c = await startCoordinator({ registryDir: primary });
  const clients = await enrollClients(c, N, 'lagging');
  const dirs = await Promise.all(clients.map(() => mkdtemp(join(tmpdir(), 'aegis-client-lag-'))));
  audits = await Promise.all(dirs.map((d) => AuditBook.open(d)));
  runners = startRunners(c, clients, DIM, (id, e) => events.push({ id, e }), (i) => ({
    trust: { backup: () => readSnapshot(backup), book: TrustBook.open(dirs[i]!) },
    audit: audits[i]!,
    // Two plain jobs run here: let each client contribute its one test input to both.
    inputReuse: true,
  }));
  await waitFor(() => c.connectedClients().length === N, 20_000, 'clients to connect');
});
afterAll(async () => {
  await Promise.all(runners.map((r) => r.stop()));
  await c.close();
});

// Phase 0 closes as soon as every invited client advertised keys or declined: its deadline only
// ends a round whose clients went silent, so it is long enough for a loaded machine.
const short = { advertiseMs: 120_000, shareMs: 60_000, maskedMs: 60_000, consistencyMs: 60_000, unmaskMs: 60_000 };
const launch = (jobId: string, seed: Uint8Array) =>
  c.launch(new Uint8Array(), {
    gatherMs: 5_000,
    signedManifest: new TextEncoder().encode(JSON.stringify(signManifest(manifest({ jobId, rounds: 3, round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 }, deadlines: short }), [seed]))),
  });
const satOut = (code: string) => new Set(events.filter((x) => x.e.kind === 'sat-out' && x.e.code === code).map((x) => x.id));

describe('a backup registry one version behind the coordinator’s', () => {
  it('the old publisher’s job runs, and no client enters audit mode', async () => {
    await launch('old-team-job', oldTeam);
    expect((await c.outcomeOf('old-team-job', 0)).ok).toBe(true);
    for (const a of audits) expect((await a.status()).inAuditMode).toBe(false);
  });

  it('the new publisher’s job is sat out by every client with backup-behind, still without audit mode', async () => {
    await launch('new-team-job', newTeam);
    expect((await c.outcomeOf('new-team-job', 0)).ok).toBe(false);
    expect(satOut('backup-behind').size).toBe(N);
    expect(satOut('registry-mismatch').size).toBe(0);
    for (const a of audits) expect((await a.status()).inAuditMode).toBe(false);
  });

  it('after registry publish the new publisher’s job runs', async () => {
    expect((await publishRegistry(primary, backup)).publishers.version).toBe(3);
    await launch('new-team-job-2', newTeam);
    expect((await c.outcomeOf('new-team-job-2', 0)).ok).toBe(true);
    for (const a of audits) expect((await a.status()).inAuditMode).toBe(false);
  });
});
