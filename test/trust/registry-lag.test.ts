/**
 * A backup registry that lags the primary (shared/trust/registry.ts: checkRegistries,
 * verifyWithPublishers): an older version the primary validly extends is no disagreement — jobs
 * are verified against the backup, less what the primary revoked, and a publisher only the
 * primary lists is `backup-behind` — while a same-version disagreement, a revocation undone, a
 * dropped publisher, a foreign root or a primary behind its backup stay `registry-mismatch`.
 */
import { describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { isAegisError } from '../../shared/errors.js';
import { keyIdOf, signEnvelope, verifyEnvelope, type DsseEnvelope } from '../../shared/trust/dsse.js';
import { checkRegistries, signPublishersDoc, signRootDoc, verifyWithPublishers, type PublishersDoc, type RegistrySnapshot, type RootDoc } from '../../shared/trust/registry.js';

const NOW = new Date('2030-06-01T00:00:00.000Z');
const LATER = '2031-06-01T00:00:00.000Z';
const JOB_TYPE = 'application/vnd.aegis.test+json';

const newSeed = (): Uint8Array => new Uint8Array(randomBytes(32));
const pk = (s: Uint8Array): Uint8Array => ed25519PublicFromSeed(s);
const idOf = (s: Uint8Array): string => keyIdOf(pk(s));
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

const rootDoc = (version: number, seeds: Uint8Array[], threshold: number): RootDoc => ({
  type: 'aegis-root',
  version,
  expires: LATER,
  keys: Object.fromEntries(seeds.map((s) => [idOf(s), b64(pk(s))])),
  threshold,
});
const pubsDoc = (version: number, rootVersion: number, publishers: PublishersDoc['publishers']): PublishersDoc => ({ type: 'aegis-publishers', version, expires: LATER, rootVersion, publishers });

function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'none';
  } catch (e) {
    if (isAegisError(e)) return e.code;
    throw e;
  }
}

const [a, b, c, d] = [newSeed(), newSeed(), newSeed(), newSeed()] as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
const e1 = signRootDoc(rootDoc(1, [a, b, c], 2), [a, b, c]);
// Root v2 (rotation: c out, d in) signed by a threshold of v1's keys and of its own.
const e2 = signRootDoc(rootDoc(2, [a, b, d], 2), [a, b, d]);
const alice = newSeed();
const carol = newSeed();
const entry = (s: Uint8Array, name: string): PublishersDoc['publishers'] => ({ [idOf(s)]: { publicKey: b64(pk(s)), name } });
const onlyAlice = entry(alice, 'alice');
const aliceAndCarol = { ...onlyAlice, ...entry(carol, 'carol') };
const snap = (roots: DsseEnvelope[], version: number, rootVersion: number, publishers: PublishersDoc['publishers']): RegistrySnapshot => ({
  roots,
  publishers: signPublishersDoc(pubsDoc(version, rootVersion, publishers), [a, b]),
});

/** A job signed by `seed`, checked the way a client checks a manifest (first-signature key lookup). */
const job = (seed: Uint8Array): DsseEnvelope => signEnvelope(JOB_TYPE, Buffer.from('{"jobId":"j"}'), [seed]);
const verifyJob = (checked: ReturnType<typeof checkRegistries>, env: DsseEnvelope): string => codeOf(() => verifyWithPublishers(checked, (key) => verifyEnvelope(env, JOB_TYPE, key)));

describe('a backup that lags the primary', () => {
  test('the primary adds a publisher: no mismatch; an old publisher is trusted, the new one is backup-behind', () => {
    const checked = checkRegistries(snap([e1], 3, 1, aliceAndCarol), snap([e1], 2, 1, onlyAlice), undefined, NOW);
    expect(checked.publishers.version).toBe(2);
    expect(checked.primaryPublishers?.version).toBe(3);
    expect(verifyJob(checked, job(alice))).toBe('none');
    expect(verifyJob(checked, job(carol))).toBe('backup-behind');
    // Nobody lists it: still unknown-key.
    expect(verifyJob(checked, job(newSeed()))).toBe('unknown-key');
    // Carol's key id over a signature she did not make is not "behind": it stays unknown-key.
    const forged = { ...job(carol), signatures: [{ keyid: idOf(carol), sig: job(newSeed()).signatures[0]!.sig }] };
    expect(verifyJob(checked, forged)).toBe('unknown-key');
  });

  test('the primary rotated its root from the backup root: the backup only lags', () => {
    const checked = checkRegistries(snap([e1, e2], 3, 2, aliceAndCarol), snap([e1], 2, 1, onlyAlice), undefined, NOW);
    expect(checked.root.version).toBe(1);
    expect(checked.state).toMatchObject({ rootVersion: 1, publishersVersion: 2, primary: { rootVersion: 2, publishersVersion: 3 } });
    expect(verifyJob(checked, job(alice))).toBe('none');
    expect(verifyJob(checked, job(carol))).toBe('backup-behind');
  });

  test('a publisher the primary revoked is refused even though the lagging backup still lists it', () => {
    const revoked = { [idOf(alice)]: { publicKey: b64(pk(alice)), name: 'alice', revoked: true, revokedAt: '2030-05-20T00:00:00.000Z' } };
    const checked = checkRegistries(snap([e1], 3, 1, revoked), snap([e1], 2, 1, onlyAlice), undefined, NOW);
    expect(verifyJob(checked, job(alice))).toBe('unknown-key');
  });

  test('the state remembers the primary: it is never taken back to the backup version; once caught up, they agree', () => {
    const primary = snap([e1], 3, 1, aliceAndCarol);
    const backup = snap([e1], 2, 1, onlyAlice);
    const state = checkRegistries(primary, backup, undefined, NOW).state;
    // The backup may keep lagging at v2 (not a rollback of the backup)...
    expect(codeOf(() => checkRegistries(primary, backup, state, NOW))).toBe('none');
    // ...but a primary going back to v2 (which would list a publisher it revoked again) is refused.
    expect(codeOf(() => checkRegistries(backup, backup, state, NOW))).toBe('rollback');
    const caughtUp = checkRegistries(primary, primary, state, NOW);
    expect(caughtUp.primaryPublishers).toBeUndefined();
    expect(caughtUp.state.primary).toBeUndefined();
    expect(caughtUp.state.publishersVersion).toBe(3);
    expect(verifyJob(caughtUp, job(carol))).toBe('none');
  });
});

describe('still a disagreement (registry-mismatch, audit mode)', () => {
  test('the same publishers version with other contents', () => {
    expect(codeOf(() => checkRegistries(snap([e1], 2, 1, aliceAndCarol), snap([e1], 2, 1, onlyAlice), undefined, NOW))).toBe('registry-mismatch');
  });

  test('a publisher revoked in the backup but listed in the newer primary', () => {
    const revoked = { [idOf(alice)]: { publicKey: b64(pk(alice)), name: 'alice', revoked: true, revokedAt: '2030-05-20T00:00:00.000Z' } };
    expect(codeOf(() => checkRegistries(snap([e1], 3, 1, aliceAndCarol), snap([e1], 2, 1, revoked), undefined, NOW))).toBe('registry-mismatch');
  });

  test('a publisher the backup lists dropped or renamed by the newer primary', () => {
    expect(codeOf(() => checkRegistries(snap([e1], 3, 1, entry(carol, 'carol')), snap([e1], 2, 1, onlyAlice), undefined, NOW))).toBe('registry-mismatch');
    expect(codeOf(() => checkRegistries(snap([e1], 3, 1, entry(alice, 'mallory')), snap([e1], 2, 1, onlyAlice), undefined, NOW))).toBe('registry-mismatch');
  });

  test('a root chain that does not extend the backup root (a foreign root)', () => {
    const [x, y] = [newSeed(), newSeed()];
    const foreign1 = signRootDoc(rootDoc(1, [x, y], 2), [x, y]);
    const foreign2 = signRootDoc(rootDoc(2, [x, y], 2), [x, y]);
    const foreign: RegistrySnapshot = { roots: [foreign1, foreign2], publishers: signPublishersDoc(pubsDoc(3, 2, aliceAndCarol), [x, y]) };
    expect(codeOf(() => checkRegistries(foreign, snap([e1], 2, 1, onlyAlice), undefined, NOW))).toBe('registry-mismatch');
  });

  test('a primary behind its backup (it may be hiding a revocation)', () => {
    expect(codeOf(() => checkRegistries(snap([e1], 2, 1, onlyAlice), snap([e1], 3, 1, aliceAndCarol), undefined, NOW))).toBe('registry-mismatch');
    expect(codeOf(() => checkRegistries(snap([e1], 3, 1, onlyAlice), snap([e1, e2], 4, 2, onlyAlice), undefined, NOW))).toBe('registry-mismatch');
  });
});
