/**
 * The client registry in registry.json shared by several writers without Redis
 * (coordinator/clients/file-store.ts): two ClientRegistry instances on one data dir, each with
 * its own cache, as two coordinator processes. A writer with a stale cache cannot drop another's
 * revocation and learns it when it writes (or at its one-minute tick); concurrent revocations by
 * both are all kept; an invite redeems once across writers; a file that cannot be read is left
 * untouched while this process still refuses the client it revoked.
 */
import { afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import { createCsr, createIdentity } from '../../client/enroll/csr.js';
import { createCa, type CertificateAuthority } from '../../coordinator/auth/ca.js';
import { EnrollmentError } from '../../coordinator/auth/enrollment.js';
import { ClientRegistry, type RevocationsChanged } from '../../coordinator/clients/client-registry.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { loadRegistry } from '../../coordinator/service/data-dir.js';
import { ErrorCode, isAegisError } from '../../shared/errors.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';

let ca: CertificateAuthority;
const dirs: string[] = [];

beforeAll(async () => {
  ca = await createCa({ name: 'Aegis registry test CA' });
});

afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function dataDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'aegis-registry-file-'));
  dirs.push(d);
  return d;
}

/** A writer: its own cache (loaded from the file, as `coordinator start` does) and the default file store. */
async function writer(dir: string, onRevoked?: (id: string) => void): Promise<ClientRegistry> {
  const r = new ClientRegistry({ ca, registry: await loadRegistry(dir), dataDir: dir, clock: Date.now, ...(onRevoked ? { onRevoked } : {}) });
  await r.start();
  return r;
}

async function enrollVia(reg: ClientRegistry, clientId: string, token?: string): Promise<void> {
  const identity = await createIdentity();
  const t = token ?? (await reg.createInvite()).token;
  await reg.enroll(create(enroll.EnrollRequestSchema, { token: t, csrDer: await createCsr(identity, clientId) }));
}

describe('registry.json shared by two writers without Redis', () => {
  test('a stale writer persisting (flushLastSeen) after another revoked: the revocation survives in the file and the stale writer now refuses the client', async () => {
    const dir = dataDir();
    const a = await writer(dir);
    await enrollVia(a, 'dev-1');
    await enrollVia(a, 'dev-2');
    const ended: string[] = [];
    const b = await writer(dir, (id) => ended.push(id));
    const changes: RevocationsChanged[] = [];
    b.onRevocationsChanged((c) => changes.push(c));
    expect(b.isActive('dev-2')).toBe(true);

    await a.revoke('dev-2', 'key-compromise', 'seen on a forum');
    const serial = a.get('dev-2')!.serial;
    // B still has its old copy, and writes: a later last-seen time of dev-1.
    expect(b.isRevoked({ clientId: 'dev-2' })).toBe(false);
    b.markSeen('dev-1');
    await expect(b.flushLastSeen(true)).resolves.toBe(true);

    const disk = await loadRegistry(dir);
    expect(disk.revocations.isRevoked({ clientId: 'dev-2' })).toBe(true);
    expect(disk.revocations.isRevoked({ serial })).toBe(true);
    expect(disk.revocations.infoOf(serial)).toMatchObject({ reason: 'key-compromise' });
    expect(disk.clients.get('dev-2')).toMatchObject({ revocationReason: 'key-compromise', revocationDetail: 'seen on a forum' });
    expect(disk.clients.get('dev-1')!.lastSeenAt).toBeDefined();
    // B learned it from the merge: refused there too, its stream ended, its listeners told.
    expect(b.isRevoked({ clientId: 'dev-2' })).toBe(true);
    expect(b.isRevoked({ serial })).toBe(true);
    expect(b.statusOf('dev-2')).toBe('revoked');
    expect(ended).toEqual(['dev-2']);
    expect(changes).toEqual([{ clients: ['dev-2'], serials: [serial], source: 'write' }]);
    // And the CRL B signs lists the serial.
    expect((await b.signedCrl()).entries).toBe(1);
  });

  test('a writer that never writes learns another writer\'s revocation at its sweep (every minute)', async () => {
    const dir = dataDir();
    const a = await writer(dir);
    await enrollVia(a, 'dev-1');
    const b = await writer(dir);
    await a.revoke('dev-1', 'lost-device');
    expect(b.isRevoked({ clientId: 'dev-1' })).toBe(false);
    const learned = new Promise<RevocationsChanged>((resolve) => b.onRevocationsChanged(resolve));
    b.sweep();
    await expect(learned).resolves.toMatchObject({ clients: ['dev-1'], source: 'resync' });
    expect(b.isRevoked({ clientId: 'dev-1' })).toBe(true);
  });

  test('concurrent revocations of two clients by two writers, many times over: every revocation is kept, on disk and in both caches', async () => {
    const dir = dataDir();
    const a = await writer(dir);
    const b = await writer(dir);
    const pairs: [string, string][] = [];
    for (let i = 0; i < 12; i++) {
      const pair: [string, string] = [`a-${i}`, `b-${i}`];
      // Enrolled by one writer each, so the other's cache may not know the client it revokes.
      await Promise.all([enrollVia(a, pair[0]), enrollVia(b, pair[1])]);
      pairs.push(pair);
    }
    for (const [x, y] of pairs) {
      // Each writer also flushes a last-seen time in the same instant (a stale write racing).
      a.markSeen(x);
      b.markSeen(y);
      await Promise.all([a.revoke(y, 'retired'), b.revoke(x, 'lost-device'), a.flushLastSeen(true), b.flushLastSeen(true)]);
    }
    await Promise.all([a.flush(), b.flush()]);
    const disk = await loadRegistry(dir);
    // A cache learns the other's last writes at its next write or tick (the minute sweep).
    await Promise.all([a.store.tick(), b.store.tick()]);
    for (const [x, y] of pairs) {
      for (const reg of [disk, a.registry, b.registry]) {
        expect(reg.revocations.isRevoked({ clientId: x })).toBe(true);
        expect(reg.revocations.isRevoked({ clientId: y })).toBe(true);
        expect(reg.revocations.isRevoked({ serial: disk.clients.get(x)!.serial })).toBe(true);
        expect(reg.revocations.isRevoked({ serial: disk.clients.get(y)!.serial })).toBe(true);
      }
      expect(disk.clients.get(x)!.revocationReason).toBe('lost-device');
      expect(disk.clients.get(y)!.revocationReason).toBe('retired');
    }
    expect(disk.clients.size).toBe(24);
    // Every write was whole: no temporary file or lock left behind.
    expect(readdirSync(dir).sort()).toEqual(['registry.json']);
  });

  test('an invite redeems once across writers: two enrollments with one token at the same time, one enrolls, the other is refused as used', async () => {
    const dir = dataDir();
    const a = await writer(dir);
    const b = await writer(dir);
    for (let i = 0; i < 4; i++) {
      const { token } = await a.createInvite();
      const results = await Promise.allSettled([enrollVia(a, `x-${i}`, token), enrollVia(b, `y-${i}`, token)]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(refused.reason).toBeInstanceOf(EnrollmentError);
      expect((refused.reason as EnrollmentError).reason).toBe('used');
      // And again later, on either: used.
      await expect(enrollVia(b, `z-${i}`, token)).rejects.toMatchObject({ reason: 'used' });
    }
    const disk = await loadRegistry(dir);
    expect(disk.clients.size).toBe(4);
  });

  test('a refused enrollment leaves the token usable (the id is taken under another key; the token then enrolls another id)', async () => {
    const dir = dataDir();
    const a = await writer(dir);
    await enrollVia(a, 'taken');
    const b = await writer(dir);
    const { token } = await a.createInvite();
    await expect(enrollVia(b, 'taken', token)).rejects.toMatchObject({ code: ErrorCode.KeyAlreadyBound });
    await enrollVia(b, 'fresh', token);
    expect((await loadRegistry(dir)).clients.has('fresh')).toBe(true);
  });

  test('a registry.json that cannot be read is left untouched; the revocation still holds in this process and the error says so', async () => {
    const dir = dataDir();
    const a = await writer(dir);
    await enrollVia(a, 'dev-1');
    writeFileSync(join(dir, 'registry.json'), '{"version": 1, "clients": [');
    const err = await a.revoke('dev-1', 'key-compromise').catch((e: unknown) => e);
    expect(isAegisError(err, ErrorCode.InvalidArgument)).toBe(true);
    expect(String((err as Error).message)).toMatch(/registry\.json/);
    expect(readFileSync(join(dir, 'registry.json'), 'utf8')).toBe('{"version": 1, "clients": [');
    expect(a.isRevoked({ clientId: 'dev-1' })).toBe(true);
    expect(a.isRevoked({ serial: a.get('dev-1')!.serial })).toBe(true);
  });

  test('revokeSerials revokes bare serials for every writer and the CRL, earliest time kept; listeners hear it', async () => {
    const dir = dataDir();
    const a = await writer(dir);
    const b = await writer(dir);
    const heard: RevocationsChanged[] = [];
    a.onRevocationsChanged((c) => heard.push(c));
    const at = await a.revokeSerials(['00ABCDEF', 'abcdef', '1234'], { reason: 'key-compromise', detail: 'operator laptop' });
    expect(heard).toEqual([{ clients: [], serials: ['abcdef', '1234'], source: 'local' }]);
    await b.revokeSerials(['abcdef'], { reason: 'retired' });
    for (const reg of [a.registry, b.registry, await loadRegistry(dir)]) {
      expect(reg.revocations.isRevoked({ serial: 'ABCDEF' })).toBe(true);
      expect(reg.revocations.infoOf('abcdef')).toEqual({ revokedAt: at, reason: 'key-compromise', detail: 'operator laptop' });
    }
    await expect(a.revokeSerials(['not hex'], { reason: 'retired' })).rejects.toMatchObject({ code: ErrorCode.InvalidArgument });
    await expect(a.revokeSerials(['ab'], { reason: 'dropped' })).rejects.toMatchObject({ code: ErrorCode.InvalidArgument });
    expect((await a.signedCrl()).entries).toBe(2);
  });

  test('a registry of an older release (no issuedAt, no serial details) loads, and is merged, not overwritten', async () => {
    const dir = dataDir();
    const a = await writer(dir);
    await enrollVia(a, 'dev-1');
    const json = JSON.parse(readFileSync(join(dir, 'registry.json'), 'utf8')) as { clients: Record<string, unknown>[]; revocations: Record<string, unknown> };
    delete json.clients[0]!.issuedAt;
    json.revocations = { version: 1, clients: ['gone-1'], serials: ['beef'] };
    writeFileSync(join(dir, 'registry.json'), JSON.stringify(json));
    const b = new ClientRegistry({ ca, registry: new Registry(), dataDir: dir, clock: Date.now });
    await b.start();
    expect(b.isRevoked({ clientId: 'gone-1' })).toBe(true);
    await b.revoke('dev-1');
    const disk = await loadRegistry(dir);
    expect(disk.revocations.isRevoked({ clientId: 'gone-1', serial: 'beef' })).toBe(true);
    expect(disk.revocations.isRevoked({ clientId: 'dev-1' })).toBe(true);
  });
});
