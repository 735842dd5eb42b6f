/**
 * Round admission against a backup registry kept with `registry publish` (registry-publish.ts):
 * a backup that only lags the primary declines the new publisher's job with `backup-behind` and
 * no audit mode, and takes it once published; a backup that disagrees — the same version with
 * other contents, a publisher it revoked listed again, another registry — still puts the client
 * in audit mode. Registries are real directories; the audit and trust books files.
 */
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { admitRound, newAdmissionMemory, type AdmissionContext } from '../../client/admission/admission.js';
import { memoryLedger } from '../../client/admission/ledger.js';
import type { TrustSources } from '../../client/admission/trust.js';
import { AuditBook } from '../../client/audit/audit.js';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { ErrorCode } from '../../shared/errors.js';
import { parseManifest } from '../../shared/protocol/manifest.js';
import type { RoundStart } from '../../shared/protocol/messages.js';
import { keyIdOf } from '../../shared/trust/dsse.js';
import { signManifest } from '../../shared/trust/manifest.js';
import { snapshotBytes } from '../../shared/trust/registry.js';
import { addPublisher, initRegistry, readSnapshot, revokePublisher } from '../../shared/trust/registry-dir.js';
import { publishRegistry } from '../../shared/trust/registry-publish.js';
import { TrustBook } from '../../shared/trust/trust-book.js';
import { manifest } from '../support/cluster.js';

const PASS = 'registry passphrase for tests';
const ME = 'client-me';
const oldTeam = randomBytes(32);
const newTeam = randomBytes(32);

let dir: string;
let primary: string;
let backup: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'aegis-admission-backup-'));
  primary = join(dir, 'primary');
  backup = join(dir, 'backup');
  await initRegistry(primary, { roots: 1, threshold: 1, passphrase: PASS });
  await addPublisher(primary, { publicKey: ed25519PublicFromSeed(oldTeam), name: 'old-team', passphrase: PASS });
  await publishRegistry(primary, backup);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const plainJob = (jobId: string): Uint8Array => manifest({ jobId, round: { dim: 4, cohort: 3 } });
const sha = (b: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(b).digest());

/** The signed round start of a job `seed` published, as a coordinator sends it. */
function signedStart(jobId: string, seed: Uint8Array): RoundStart {
  const json = plainJob(jobId);
  const m = parseManifest(json).manifest;
  return {
    type: 'round-start',
    round: { manifestHash: sha(json), roundIndex: 0 },
    params: m.round,
    deadlines: m.deadlines,
    manifestJson: json,
    group: { index: 0, count: 1, members: ['client-a', 'client-b', ME] },
    signedManifest: new TextEncoder().encode(JSON.stringify(signManifest(json, [seed]))),
  };
}

/** The coordinator serves `primary`, the client's backup is `backupDir`; books in `dir`. */
async function context(backupDir = backup): Promise<{ ctx: AdmissionContext; audit: AuditBook }> {
  const audit = await AuditBook.open(dir);
  const trust: TrustSources = {
    coordinatorRegistry: async () => snapshotBytes(await readSnapshot(primary)),
    backup: () => readSnapshot(backupDir),
    book: TrustBook.open(dir),
  };
  return { audit, ctx: { clientId: ME, hasPlainInput: true, fetchModel: () => Promise.reject(new Error('no model fetch expected')), memory: newAdmissionMemory(), ledger: memoryLedger(), trust, audit } };
}

async function auditEvents(): Promise<[unknown, unknown][]> {
  const text = await readFile(join(dir, 'audit.log'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .map((l) => [l.event, l.reason]);
}

describe('a backup that lags the primary', () => {
  it('takes the old publisher’s job, declines the new publisher’s with backup-behind (no audit mode), and takes it once published', async () => {
    await addPublisher(primary, { publicKey: ed25519PublicFromSeed(newTeam), name: 'new-team', passphrase: PASS });
    const { ctx, audit } = await context();
    expect(await admitRound(ctx, signedStart('old-job', oldTeam))).toMatchObject({ admitted: true });
    const behind = await admitRound(ctx, signedStart('new-job', newTeam));
    expect(behind).toMatchObject({ admitted: false, code: ErrorCode.BackupBehind });
    expect(await audit.status()).toMatchObject({ inAuditMode: false });
    const logged = await auditEvents();
    expect(logged).toContainEqual(['refused', 'backup-behind']);
    expect(logged.filter(([event]) => event === 'enter')).toEqual([]);
    // What the client remembers: the backup's versions, and the primary's ahead of them.
    expect((await TrustBook.open(dir).load()).registry).toMatchObject({ publishersVersion: 2, primary: { publishersVersion: 3 } });

    expect((await publishRegistry(primary, backup)).changed).toBe(true);
    expect(await admitRound(ctx, signedStart('new-job', newTeam))).toMatchObject({ admitted: true });
    expect(await audit.status()).toMatchObject({ inAuditMode: false });
    expect((await TrustBook.open(dir).load()).registry).toEqual({ rootVersion: 1, rootSha256: expect.any(String), publishersVersion: 3 });
  });

  it('a publisher revoked on the primary only is refused at once, not trusted from the lagging backup', async () => {
    await revokePublisher(primary, { keyid: keyIdOf(ed25519PublicFromSeed(oldTeam)), passphrase: PASS });
    const { ctx, audit } = await context();
    expect(await admitRound(ctx, signedStart('old-job', oldTeam))).toMatchObject({ admitted: false, code: ErrorCode.UnknownKey });
    expect(await audit.status()).toMatchObject({ inAuditMode: false });
  });
});

describe('a backup that disagrees still puts the client in audit mode', () => {
  /** A second history of the same registry (same root keys): what a tampered or forked copy is. */
  async function fork(): Promise<string> {
    const f = join(dir, 'fork');
    await cp(primary, f, { recursive: true });
    return f;
  }

  async function expectAuditMode(backupDir: string): Promise<void> {
    const { ctx, audit } = await context(backupDir);
    expect(await admitRound(ctx, signedStart('old-job', oldTeam))).toMatchObject({ admitted: false, code: ErrorCode.RegistryMismatch });
    expect(await audit.status()).toMatchObject({ inAuditMode: true, reason: 'registry-mismatch' });
  }

  it('the same publishers version with other contents', async () => {
    const f = await fork();
    await addPublisher(f, { publicKey: ed25519PublicFromSeed(randomBytes(32)), name: 'someone-else', passphrase: PASS });
    await addPublisher(primary, { publicKey: ed25519PublicFromSeed(newTeam), name: 'new-team', passphrase: PASS });
    await expectAuditMode(f);
  });

  it('a publisher the backup revoked, listed in the newer primary', async () => {
    const f = await fork();
    await revokePublisher(f, { keyid: keyIdOf(ed25519PublicFromSeed(oldTeam)), passphrase: PASS });
    await addPublisher(primary, { publicKey: ed25519PublicFromSeed(newTeam), name: 'new-team', passphrase: PASS });
    await addPublisher(primary, { publicKey: ed25519PublicFromSeed(randomBytes(32)), name: 'third', passphrase: PASS });
    await expectAuditMode(f);
  });

  it('a backup of another registry (a foreign root)', async () => {
    const other = join(dir, 'other');
    await initRegistry(other, { roots: 1, threshold: 1, passphrase: PASS });
    await addPublisher(other, { publicKey: ed25519PublicFromSeed(oldTeam), name: 'old-team', passphrase: PASS });
    await addPublisher(primary, { publicKey: ed25519PublicFromSeed(newTeam), name: 'new-team', passphrase: PASS });
    await expectAuditMode(other);
  });
});
