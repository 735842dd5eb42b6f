/**
 * Signed launches over real gRPC/TLS: a coordinator with a publisher registry takes only signed
 * manifests; clients verify each round's signed manifest against the coordinator's registry and
 * a backup registry, remember what they accepted, and gate jobs in audit mode. A rogue
 * coordinator — with its own registry, or none — is refused by every client.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditBook } from '../../client/audit/audit.js';
import { TrustBook } from '../../shared/trust/trust-book.js';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { signManifest } from '../../shared/trust/manifest.js';
import { addPublisher, initRegistry, readSnapshot } from '../../shared/trust/registry-dir.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';
import { codeOfAsync } from '../support/codes.js';
import { createHash } from 'node:crypto';

const PASS = 'registry passphrase for tests';
const N = 4;
const DIM = 8;
let realRegistry: string;
let rogueRegistry: string;
const publisher = randomBytes(32);
const rogue = randomBytes(32);

async function registryWith(seed: Uint8Array, name: string): Promise<string> {
  const dir = join(await mkdtemp(join(tmpdir(), 'aegis-registry-')), 'r');
  await initRegistry(dir, { roots: 1, threshold: 1, passphrase: PASS });
  await addPublisher(dir, { publicKey: ed25519PublicFromSeed(seed), name, passphrase: PASS });
  return dir;
}

beforeAll(async () => {
  realRegistry = await registryWith(publisher, 'ml-team');
  rogueRegistry = await registryWith(rogue, 'rogue');
});

interface Fleet {
  c: Coordinator;
  runners: ClientRunner[];
  events: { id: string; e: RunnerEvent }[];
  audits: AuditBook[];
  dirs: string[];
  stop: () => Promise<void>;
}

/** A coordinator (with `registryDir` or none) and N clients that trust `realRegistry` as their backup. */
async function fleet(registryDir: string | undefined, audits?: AuditBook[]): Promise<Fleet> {
  const c = await startCoordinator(registryDir ? { registryDir } : {});
  const clients = await enrollClients(c, N, 'trusting');
  const dirs = await Promise.all(clients.map(() => mkdtemp(join(tmpdir(), 'aegis-client-trust-'))));
  const books = audits ?? (await Promise.all(dirs.map((d) => AuditBook.open(d))));
  const events: Fleet['events'] = [];
  const runners = startRunners(c, clients, DIM, (id, e) => events.push({ id, e }), (i) => ({
    trust: { backup: () => readSnapshot(realRegistry), book: TrustBook.open(dirs[i]!) },
    audit: books[i]!,
  }));
  await waitFor(() => c.connectedClients().length === N, 20_000, 'clients to connect');
  return {
    c,
    runners,
    events,
    audits: books,
    dirs,
    stop: async () => {
      await Promise.all(runners.map((r) => r.stop()));
      await c.close();
    },
  };
}

const job = (jobId: string, deadlines = { advertiseMs: 10_000, shareMs: 10_000, maskedMs: 10_000, consistencyMs: 10_000, unmaskMs: 10_000 }) =>
  manifest({ jobId, rounds: 3, round: { dim: DIM, cohort: N, clip: 1e6, bits: 24 }, deadlines });
const satOut = (f: Fleet, code: string) => new Set(f.events.filter((x) => x.e.kind === 'sat-out' && x.e.code === code).map((x) => x.id));

describe('signed launches against the registry', () => {
  let f: Fleet;
  beforeAll(async () => {
    f = await fleet(realRegistry);
  });
  afterAll(async () => f.stop());

  it('a manifest a listed publisher signed runs, and every client verified it', async () => {
    const bytes = job('signed');
    const env = signManifest(bytes, [publisher]);
    const r = await f.c.launch(new Uint8Array(), { gatherMs: 5_000, signedManifest: new TextEncoder().encode(JSON.stringify(env)) });
    expect(Buffer.from(r.manifestHash).toString('hex')).toBe(createHash('sha256').update(bytes).digest('hex'));
    const out = await f.c.outcomeOf('signed', 0);
    expect(out.ok).toBe(true);
    if (out.ok) expect(Array.from(out.sum)).toEqual(Array.from(expectedSum([0, 1, 2, 3], DIM)));
    expect(f.events.filter((x) => x.e.kind === 'sat-out')).toEqual([]);
  });

  it('the coordinator refuses an unsigned manifest and one signed by a key its registry does not list', async () => {
    expect(await codeOfAsync(f.c.launch(job('unsigned'), {}))).toBe('unknown-key');
    const forged = new TextEncoder().encode(JSON.stringify(signManifest(job('forged'), [rogue])));
    expect(await codeOfAsync(f.c.launch(new Uint8Array(), { signedManifest: forged }))).toBe('unknown-key');
  });
});

describe('rogue coordinators', () => {
  it('one serving its own registry (a rogue publisher) is refused by every client, which enter audit mode', async () => {
    const f = await fleet(rogueRegistry);
    try {
      const env = signManifest(job('rogue-job', { advertiseMs: 120_000, shareMs: 60_000, maskedMs: 60_000, consistencyMs: 60_000, unmaskMs: 60_000 }), [rogue]);
      await f.c.launch(new Uint8Array(), { gatherMs: 5_000, signedManifest: new TextEncoder().encode(JSON.stringify(env)) });
      const out = await f.c.outcomeOf('rogue-job', 0);
      expect(out.ok).toBe(false);
      expect(satOut(f, 'registry-mismatch').size).toBe(N);
      for (const a of f.audits) expect((await a.status()).inAuditMode).toBe(true);
      // Each refusal is a line in the client's audit log: the reason code, the claimed job.
      for (const dir of f.dirs) {
        const lines = (await readFile(join(dir, 'audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(lines.some((l) => l.event === 'refused' && l.reason === 'registry-mismatch' && l.jobId === 'rogue-job')).toBe(true);
        expect(lines.some((l) => l.event === 'enter' && l.reason === 'registry-mismatch')).toBe(true);
      }
    } finally {
      await f.stop();
    }
  });

  it('one without a registry, launching an unsigned job, is refused by every client', async () => {
    const f = await fleet(undefined);
    try {
      await f.c.launch(job('unsigned-rogue', { advertiseMs: 120_000, shareMs: 60_000, maskedMs: 60_000, consistencyMs: 60_000, unmaskMs: 60_000 }), { gatherMs: 5_000 });
      expect((await f.c.outcomeOf('unsigned-rogue', 0)).ok).toBe(false);
      expect(satOut(f, 'manifest-required').size).toBe(N);
    } finally {
      await f.stop();
    }
  });
});

describe('audit mode gates jobs', () => {
  it('clients in audit mode sit a signed job out until the operator approves that job and hash', async () => {
    const dirs = await Promise.all(Array.from({ length: N }, () => mkdtemp(join(tmpdir(), 'aegis-audit-'))));
    const audits = await Promise.all(dirs.map((d) => AuditBook.open(d)));
    for (const a of audits) await a.enter('operator', 'test');
    const f = await fleet(realRegistry, audits);
    try {
      const bytes = job('audited', { advertiseMs: 120_000, shareMs: 10_000, maskedMs: 10_000, consistencyMs: 10_000, unmaskMs: 10_000 });
      const signed = new TextEncoder().encode(JSON.stringify(signManifest(bytes, [publisher])));
      await f.c.launch(new Uint8Array(), { gatherMs: 5_000, signedManifest: signed });
      expect((await f.c.outcomeOf('audited', 0)).ok).toBe(false);
      expect(satOut(f, 'approval-required').size).toBe(N);
      const hash = createHash('sha256').update(bytes).digest('hex');
      for (const a of audits) await a.approve('audited', hash);
      await f.c.launch(new Uint8Array(), { gatherMs: 5_000, signedManifest: signed });
      expect((await f.c.outcomeOf('audited', 1)).ok).toBe(true);
      for (const a of audits) expect((await a.status()).remaining).toBe(4);
    } finally {
      await f.stop();
    }
  });
});
