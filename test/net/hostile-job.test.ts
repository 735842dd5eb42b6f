/**
 * A coordinator that lies across a whole job, over real gRPC and TLS 1.3, against real
 * ClientRunners that trust a publisher registry and a backup registry and keep audit books. The
 * attacker is the coordinator itself: it has the real CA, the real registry and every client's
 * certificate, and scripts each round start (test/support/hostile-coordinator.ts). Each attack
 * must end in a typed refusal, and the victim's masked input must never leave it.
 */
import { afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditBook } from '../../client/audit/audit.js';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import { createCa, issueClientCertificate, KeyBindings, type CaCertificate } from '../../coordinator/auth/ca.js';
import { createCsr } from '../../client/enroll/csr.js';
import { groupRoundParams } from '../../shared/protocol/params.js';
import { readSnapshot } from '../../shared/trust/registry-dir.js';
import { TrustBook } from '../../shared/trust/trust-book.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { HostileCoordinator } from '../support/hostile-coordinator.js';
import { hex, publisherRegistry, sha256, signedJob as signJob, signedRoundStart, type SignedJob } from '../support/signed-jobs.js';

const DIM = 6;
const N = 5;
const publisher = randomBytes(32);
const sha = sha256;

let registry: string;
let ca: CaCertificate;
let clients: Enrolled[];

beforeAll(async () => {
  registry = await publisherRegistry(publisher);
  // The real coordinator enrolls the clients; the same CA then serves the attacker.
  const honest = await startCoordinator({ registryDir: registry });
  clients = await enrollClients(honest, N, 'member');
  ca = honest.ca;
  await honest.close();
});

const signedJob = (over: Parameters<typeof manifest>[0]): SignedJob => signJob(publisher, over);

/** The honest round start of `job` for a group of `members`. */
const honestStart = signedRoundStart;

interface Fleet {
  h: HostileCoordinator;
  runners: ClientRunner[];
  events: { id: string; e: RunnerEvent }[];
  audits: AuditBook[];
  ids: string[];
}

let fleet: Fleet | undefined;
afterEach(async () => {
  if (!fleet) return;
  await Promise.all(fleet.runners.map((r) => r.stop()));
  await fleet.h.close();
  fleet = undefined;
});

/** The attacker and `n` trusting clients connected to it, each with an audit book (in audit mode when `audit`). */
async function hostileFleet(n = N, opts: { audit?: boolean; train?: boolean } = {}): Promise<Fleet> {
  const members = clients.slice(0, n);
  const h = await HostileCoordinator.start(ca, clients, registry);
  const dirs = await Promise.all(members.map(() => mkdtemp(join(tmpdir(), 'aegis-hostile-client-'))));
  const audits = await Promise.all(dirs.map((d) => AuditBook.open(d)));
  if (opts.audit) for (const a of audits) await a.enter('operator', 'suspected rogue coordinator');
  const events: Fleet['events'] = [];
  const target = { address: h.address, ca: { certificatePem: ca.certificatePem } } as unknown as Parameters<typeof startRunners>[0];
  const runners = startRunners(target, members, DIM, (id, e) => events.push({ id, e }), (i) => ({
    trust: { backup: () => readSnapshot(registry), book: TrustBook.open(dirs[i]!) },
    audit: audits[i]!,
    ...(opts.train ? { train: async () => ({ values: new Float32Array(DIM).fill(0.25), weight: 1 }) } : {}),
  }));
  await waitFor(() => h.connected().length === n, 20_000, 'clients to connect to the attacker');
  fleet = { h, runners, events, audits, ids: members.map((m) => m.clientId) };
  return fleet;
}

/** Waits until every client in `ids` declined a round with `code`, and returns their declines. */
async function declinedBy(f: Fleet, ids: readonly string[], code: string): Promise<void> {
  await waitFor(() => ids.every((id) => f.h.sent('decline', id).some((d) => d.reason === code)), 20_000, `declines with ${code}`);
}

describe('a coordinator that lies about the job is refused before any key is advertised', () => {
  it('a round start without the manifest (neither the signed envelope nor its JSON) is declined with manifest-required', async () => {
    const f = await hostileFleet();
    const job = signedJob({ jobId: 'stripped', round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    f.h.startRound(f.ids, () => {
      const s = honestStart(job, f.ids);
      delete s.signedManifest;
      delete s.manifestJson;
      return s;
    });
    await declinedBy(f, f.ids, 'manifest-required');
    expect(f.h.sent('advertise-keys')).toEqual([]);
    expect(f.h.sent('masked-input')).toEqual([]);
  });

  it('in audit mode, the signed envelope without its JSON and with threshold 2 instead of the signed 3 is refused, and no approval is used up', async () => {
    const f = await hostileFleet(N, { audit: true });
    const job = signedJob({ jobId: 'audited', rounds: 3, round: { dim: DIM, cohort: N, threshold: 3, neighbors: 4, clip: 1e6, bits: 24 } });
    // The attack as it was reported: the envelope is there, its JSON is not, the threshold is lowered.
    f.h.startRound(f.ids, () => {
      const s = honestStart(job, f.ids);
      delete s.manifestJson;
      return { ...s, params: { ...s.params, threshold: 2 } };
    });
    await declinedBy(f, f.ids, 'parameters-mismatch');
    // The same start with the signed threshold: the payload is the manifest, so audit mode asks for approval.
    f.h.startRound(f.ids, () => {
      const s = honestStart(job, f.ids, 1);
      delete s.manifestJson;
      return s;
    });
    await declinedBy(f, f.ids, 'approval-required');
    for (const a of f.audits) expect((await a.status()).remaining).toBe(5);
    expect(f.h.sent('advertise-keys')).toEqual([]);
  });

  it('a manifest swapped for an older revision of the job is declined with rollback', async () => {
    const f = await hostileFleet();
    const newer = signedJob({ jobId: 'revised', revision: 2, rounds: 3, round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    const older = signedJob({ jobId: 'revised', revision: 1, rounds: 3, round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    f.h.startRound(f.ids, () => honestStart(newer, f.ids));
    await waitFor(() => f.ids.every((id) => f.h.sent('advertise-keys', id).length === 1), 20_000, 'the honest start to be taken');
    f.h.startRound(f.ids, () => honestStart(older, f.ids, 1));
    await declinedBy(f, f.ids, 'rollback');
    expect(f.h.sent('advertise-keys').filter((m) => hex(m.round.manifestHash) === hex(older.hash))).toEqual([]);
  });

  it('a victim told another threshold than the others declines with parameters-mismatch; the others are not fooled either', async () => {
    const f = await hostileFleet();
    const job = signedJob({ jobId: 'split-params', round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    const victim = f.ids[0]!;
    f.h.startRound(f.ids, (id) => {
      const s = honestStart(job, f.ids);
      return id === victim ? { ...s, params: { ...s.params, threshold: s.params.threshold - 1 } } : s;
    });
    await declinedBy(f, [victim], 'parameters-mismatch');
    expect(f.h.sent('advertise-keys', victim)).toEqual([]);
    expect(f.h.sent('masked-input')).toEqual([]);
  });

  it('a victim placed in a group of 3 out of a group size of 250 declines with parameters-mismatch', async () => {
    const f = await hostileFleet();
    const job = signedJob({ jobId: 'tiny-group', round: { dim: DIM, cohort: 1000, neighbors: 20, groupSize: 250, clip: 1e6, bits: 16 } });
    const victim = f.ids[0]!;
    const group = [victim, f.ids[1]!, f.ids[2]!].sort();
    f.h.startRound([victim], () => ({ ...honestStart(job, group), params: groupRoundParams(job.manifest.round, 3), group: { index: 3, count: 4, members: group } }));
    await declinedBy(f, [victim], 'parameters-mismatch');
    expect(f.h.sent('advertise-keys', victim)).toEqual([]);
  });
});

describe('one view per round: clients shown different things abort in phase 0', () => {
  it('(control) the same view relayed to everyone goes on to the share phase', async () => {
    const f = await hostileFleet(4);
    const job = signedJob({ jobId: 'one-view', round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    f.h.startRound(f.ids, () => honestStart(job, f.ids));
    await waitFor(() => f.ids.every((id) => f.h.sent('advertise-keys', id).length === 1), 20_000, 'advertisements');
    f.h.broadcastAdvertisements({ manifestHash: job.hash, roundIndex: 0 });
    await waitFor(() => f.ids.every((id) => f.h.sent('share-keys', id).length === 1), 20_000, 'share pairs');
    expect(f.events.filter((x) => x.e.kind === 'aborted')).toEqual([]);
  });

  it('a certificate remembered from an honest round, relayed under another id in the next, ends in unknown-id before any share is sent', async () => {
    const f = await hostileFleet(4);
    const job = signedJob({ jobId: 'swapped-certificates', rounds: 3, round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    // Round 0 is honest: every client checks (and remembers) every peer's certificate.
    f.h.startRound(f.ids, () => honestStart(job, f.ids));
    await waitFor(() => f.ids.every((id) => f.h.sent('advertise-keys', id).length === 1), 20_000, 'advertisements');
    f.h.broadcastAdvertisements({ manifestHash: job.hash, roundIndex: 0 });
    await waitFor(() => f.ids.every((id) => f.h.sent('share-keys', id).length === 1), 20_000, 'share pairs');
    expect(f.events.filter((x) => x.e.kind === 'aborted')).toEqual([]);
    // Round 1: the two first clients' entries carry each other's certificates (both real, both
    // checked before) — keys the coordinator could claim are theirs.
    f.h.startRound(f.ids, () => honestStart(job, f.ids, 1));
    await waitFor(() => f.ids.every((id) => f.h.sent('advertise-keys', id).length === 2), 20_000, 'advertisements of round 1');
    f.h.broadcastAdvertisements({ manifestHash: job.hash, roundIndex: 1 }, (entries) => {
      const [a, b] = [entries.find((e) => e.clientId === f.ids[0])!, entries.find((e) => e.clientId === f.ids[1])!];
      [a.certificate, b.certificate] = [b.certificate, a.certificate];
    });
    await waitFor(() => f.ids.every((id) => f.events.some((x) => x.id === id && x.e.kind === 'aborted')), 20_000, 'aborts');
    expect(new Set(f.events.filter((x) => x.e.kind === 'aborted').map((x) => (x.e as { reason: string }).reason))).toEqual(new Set(['unknown-id']));
    expect(f.h.sent('share-keys')).toHaveLength(4); // round 0's only
  });

  /**
   * Relays `certificate` as the first client's in round 0; every other client must leave it out
   * (unknown-id) and send no share.
   */
  async function relayedCertificateRefused(jobId: string, certificate: Uint8Array): Promise<void> {
    const f = await hostileFleet(4);
    const job = signedJob({ jobId, round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    const [victim, ...others] = f.ids;
    f.h.startRound(f.ids, () => honestStart(job, f.ids));
    await waitFor(() => f.ids.every((id) => f.h.sent('advertise-keys', id).length === 1), 20_000, 'advertisements');
    f.h.broadcastAdvertisements({ manifestHash: job.hash, roundIndex: 0 }, (entries) => {
      entries.find((e) => e.clientId === victim)!.certificate = certificate;
    });
    await waitFor(() => others.every((id) => f.events.some((x) => x.id === id && x.e.kind === 'aborted')), 20_000, 'aborts');
    const reasons = f.events.filter((x) => x.e.kind === 'aborted' && x.id !== victim).map((x) => (x.e as { reason: string }).reason);
    expect(new Set(reasons)).toEqual(new Set(['unknown-id']));
    expect(f.h.sent('share-keys').filter((m) => m.clientId !== victim)).toEqual([]);
  }

  it("a client's certificate relayed with its round key rewritten to another's ends in unknown-id before any share is sent", async () => {
    const prefix = 'urn:aegis:round-key:';
    const der = Buffer.from(clients[0]!.certificateDer);
    const at = der.indexOf(prefix) + prefix.length;
    const substitute = Buffer.from(Buffer.from(clients[1]!.identity.publicKey).toString('base64url'));
    expect(der.indexOf(prefix)).toBeGreaterThan(0);
    // The same certificate, byte for byte, but for the key its URI names: the CA's signature no longer covers it.
    await relayedCertificateRefused('rewritten-round-key', new Uint8Array(Buffer.concat([der.subarray(0, at), substitute, der.subarray(at + substitute.length)])));
  });

  it("a certificate for the same id and keys from another CA ends in unknown-id before any share is sent", async () => {
    const rogue = await createCa({ name: 'rogue CA' });
    const victim = clients[0]!;
    const foreign = await issueClientCertificate(rogue, await createCsr(victim.identity, victim.clientId), victim.clientId, { bindings: new KeyBindings() });
    await relayedCertificateRefused('foreign-ca', foreign.certificateDer);
  });

  it('different member lists (one client told a group the others were not) end in view-mismatch before any share is sent', async () => {
    const f = await hostileFleet(4);
    const job = signedJob({ jobId: 'two-views', round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 } });
    const victim = f.ids[0]!;
    const offline = clients[4]!.clientId;
    f.h.startRound(f.ids, (id) => honestStart(job, id === victim ? f.ids : [...f.ids, offline]));
    await waitFor(() => f.ids.every((id) => f.h.sent('advertise-keys', id).length === 1), 20_000, 'advertisements');
    f.h.broadcastAdvertisements({ manifestHash: job.hash, roundIndex: 0 });
    await waitFor(() => f.ids.every((id) => f.events.some((x) => x.id === id && x.e.kind === 'aborted')), 20_000, 'aborts');
    const reasons = new Set(f.events.filter((x) => x.e.kind === 'aborted').map((x) => (x.e as { reason: string }).reason));
    expect([...reasons]).toEqual(['view-mismatch']);
    expect(f.h.sent('share-keys')).toEqual([]);
    expect(f.h.sent('masked-input')).toEqual([]);
  });

  it('a different model sent to one client (the model-inconsistency attack) ends in view-mismatch before any masked input', async () => {
    const f = await hostileFleet(4, { train: true });
    const w0 = new Float32Array(DIM).fill(0.5);
    const w0Bytes = new Uint8Array(w0.buffer);
    const job = signedJob({
      jobId: 'inconsistent',
      rounds: 5,
      round: { dim: DIM, cohort: N, clip: 8, bits: 16 },
      model: { format: 'tfjs-layers', architecture: { class_name: 'Sequential', config: {} }, initialWeightsSha256: hex(sha(w0Bytes)) },
      training: {},
    });
    const real = new Uint8Array(new Float32Array(DIM).fill(0.75).buffer);
    const crafted = new Uint8Array(new Float32Array(DIM).fill(0).buffer);
    f.h.models.set(`${hex(job.hash)}:1`, real);
    f.h.models.set(`${hex(job.hash)}:2`, crafted);
    const victim = f.ids[0]!;
    f.h.startRound(f.ids, (id) => ({ ...honestStart(job, f.ids, 1), model: id === victim ? { version: 1, sha256: sha(real) } : { version: 2, sha256: sha(crafted) } }));
    await waitFor(() => f.ids.every((id) => f.h.sent('advertise-keys', id).length === 1), 20_000, 'advertisements');
    f.h.broadcastAdvertisements({ manifestHash: job.hash, roundIndex: 1 });
    await waitFor(() => f.ids.every((id) => f.events.some((x) => x.id === id && x.e.kind === 'aborted')), 20_000, 'aborts');
    expect(new Set(f.events.filter((x) => x.e.kind === 'aborted').map((x) => (x.e as { reason: string }).reason))).toEqual(new Set(['view-mismatch']));
    expect(f.h.sent('masked-input')).toEqual([]);
    expect(f.h.sent('share-keys')).toEqual([]);
  });
});

