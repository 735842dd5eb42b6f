/**
 * The data dir's built-in operator credential ("admin"), with a real data dir (KEK, vault) and a
 * coordinator on loopback TLS 1.3: it lives the configured lifetime and is on record at start; the
 * key check reissues it at 2/3 of its lifetime (the clock moves, nothing sleeps), when it is
 * revoked, and when it lives longer than allowed, revoking the old serial as superseded; an
 * operator's `reissue admin` replaces it in the vault, and an operator session still holding the
 * old one opens the new one and repeats the refused call once. The credential is ECDSA P-256 (from
 * the sealed operator-seed); an Ed25519 one of a data dir from before P-256 keeps working until it
 * is reissued, and its reissue is P-256.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import { AdminSession, call } from '../../coordinator/admin-client.js';
import { csrForSeed, issueFromCsr, serialOf } from '../../coordinator/auth/ca.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { builtInOperator, builtInOperatorCertificate, openCoordinatorSecrets, openOperatorCredential, reissueOperatorIfDue, writeEndpoint, type CoordinatorSecrets } from '../../coordinator/service/data-dir.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import { VAULT_FILE } from '../../shared/keystore/keys-cli.js';
import { DEFAULT_POLICY } from '../../shared/keystore/policy.js';
import { SealedVault } from '../../shared/keystore/vault.js';

const PASS = 'built-in operator test passphrase';
const DAY = 86_400_000;
const previousMinVersion = tls.DEFAULT_MIN_VERSION;
const previousPass = process.env.AEGIS_PASSPHRASE;
let now = Date.now();
const clock = (): number => now;
let dir: string;
let secrets: CoordinatorSecrets;
let c: Coordinator;

const serialNow = async (): Promise<string> => serialOf((await builtInOperatorCertificate(dir))!);
const listOperators = async (session: AdminSession) => (await call<admin.ListOperatorsRequest, admin.ListOperatorsReply>(session, 'listOperators', create(admin.ListOperatorsRequestSchema, {}))).operators;
const check = () => reissueOperatorIfDue(dir, secrets.kek, secrets.ca, DEFAULT_POLICY, { ttlMs: 7 * DAY, clock, isRevoked: (serial) => c.clients.isRevoked({ serial }), onReplaced: (der) => c.operators.builtInReplaced(der) });

beforeAll(async () => {
  process.env.AEGIS_PASSPHRASE = PASS;
  dir = mkdtempSync(join(tmpdir(), 'aegis-builtin-operator-'));
  secrets = await openCoordinatorSecrets(dir, { passphrase: async () => PASS, pin: async () => '' }, { operatorTtlMs: 7 * DAY });
  c = new Coordinator({ ca: secrets.ca, tokens: secrets.tokens, registry: new Registry(), dataDir: dir, clock, operatorTtlMs: 7 * DAY, builtInOperator: builtInOperator(dir, secrets.kek, secrets.ca, clock) });
  const { address, enrollAddress } = await c.listen('127.0.0.1:0', '127.0.0.1:0');
  await writeEndpoint(dir, { address, enrollAddress, pid: process.pid });
});

afterAll(async () => {
  await c.close();
  await secrets.kek.close();
  rmSync(dir, { recursive: true, force: true });
  tls.DEFAULT_MIN_VERSION = previousMinVersion;
  if (previousPass === undefined) delete process.env.AEGIS_PASSPHRASE;
  else process.env.AEGIS_PASSPHRASE = previousPass;
});

describe('the built-in operator credential', () => {
  test('made at first start with the configured lifetime, on record, not due while fresh', async () => {
    const session = await AdminSession.open({ dataDir: dir });
    try {
      const [row] = await listOperators(session);
      expect(row).toMatchObject({ name: 'admin', builtIn: true, status: admin.OperatorStatus.ACTIVE, serial: (await serialNow()).replace(/^0+/, '') });
      expect(Number(row!.expiresAtMs) - Number(row!.issuedAtMs)).toBe(7 * DAY + 60_000);
      // An ECDSA P-256 key (from the sealed operator-seed), opened to match its certificate.
      const opened = await openOperatorCredential(dir, { passphrase: async () => PASS, pin: async () => '' });
      expect(createPrivateKey(opened.keyPem).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      expect(new X509Certificate(opened.certificatePem).checkPrivateKey(createPrivateKey(opened.keyPem))).toBe(true);
      expect(new X509Certificate(opened.certificatePem).raw.equals(new X509Certificate(readFileSync(join(dir, 'operator.pem'))).raw)).toBe(true);
    } finally {
      session.close();
    }
    await expect(check()).resolves.toBeUndefined();
  });

  test('reissued at 2/3 of its lifetime, well before it expires; the old serial is revoked as superseded', async () => {
    const old = await serialNow();
    now += 4 * DAY; // less than 2/3 of 7 days
    await expect(check()).resolves.toBeUndefined();
    now += DAY; // past 2/3 (4.67 days), two days before expiry
    await expect(check()).resolves.toMatchObject({ key: 'operator', reason: 'due' });
    const fresh = await serialNow();
    expect(fresh).not.toBe(old);
    expect(c.clients.isRevoked({ serial: old })).toBe(true);
    expect(c.clients.isRevoked({ serial: fresh })).toBe(false);
    expect((await c.operators.list()).find((o) => o.serial === old.replace(/^0+/, ''))).toMatchObject({ status: 'revoked', reason: 'superseded' });
  });

  test('a revoked built-in credential is reissued at the next check', async () => {
    const old = await serialNow();
    await c.operators.revoke({ name: 'admin' }, 'key-compromise');
    await expect(check()).resolves.toMatchObject({ key: 'operator' });
    expect(await serialNow()).not.toBe(old);
    expect((await c.operators.list()).find((o) => o.serial === old.replace(/^0+/, ''))).toMatchObject({ status: 'revoked', reason: 'key-compromise' });
  });

  test('a credential living longer than the configured lifetime (shortened since) is reissued with the shorter one', async () => {
    const old = await serialNow();
    const shorter = await reissueOperatorIfDue(dir, secrets.kek, secrets.ca, DEFAULT_POLICY, { ttlMs: DAY, clock, onReplaced: (der) => c.operators.builtInReplaced(der) });
    expect(shorter).toMatchObject({ key: 'operator' });
    const row = (await c.operators.list()).find((o) => o.status === 'active' && o.name === 'admin')!;
    expect(row.expiresAt - row.issuedAt).toBe(DAY + 60_000);
    expect(c.clients.isRevoked({ serial: old })).toBe(true);
  });

  test('an Ed25519 built-in credential from before P-256 (same sealed seed) keeps opening the Admin service; its reissue is P-256', async () => {
    now = Date.now();
    // What a data dir from before P-256 holds: a certificate for the Ed25519 key of operator-seed.
    const vault = await SealedVault.open(join(dir, VAULT_FILE));
    const seed = await vault.get(secrets.kek, 'operator-seed');
    const legacy = await issueFromCsr(secrets.ca, { kind: 'operator', subject: 'admin', csrDer: await csrForSeed(seed, 'operator:admin') }, { ttlMs: 7 * DAY, now });
    seed.fill(0);
    await vault.put(secrets.kek, 'operator-certificate', legacy.certificateDer);
    writeFileSync(join(dir, 'operator.pem'), legacy.certificatePem);
    await c.operators.builtInReplaced(legacy.certificateDer);
    const opened = await openOperatorCredential(dir, { passphrase: async () => PASS, pin: async () => '' });
    expect(createPrivateKey(opened.keyPem).asymmetricKeyType).toBe('ed25519');
    expect(new X509Certificate(opened.certificatePem).checkPrivateKey(createPrivateKey(opened.keyPem))).toBe(true);
    const session = await AdminSession.open({ dataDir: dir });
    try {
      expect((await listOperators(session)).find((o) => o.serial === legacy.serial.replace(/^0+/, ''))).toMatchObject({ status: admin.OperatorStatus.ACTIVE, builtIn: true });
      const r = await c.operators.reissue('admin', undefined);
      expect(r.superseded).toEqual([legacy.serial.replace(/^0+/, '')]);
      const fresh = new X509Certificate(readFileSync(join(dir, 'operator.pem')));
      expect(fresh.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      // The session's Ed25519 certificate is refused now; it opens the P-256 one and goes on.
      expect((await listOperators(session)).find((o) => o.serial === legacy.serial.replace(/^0+/, ''))).toMatchObject({ status: admin.OperatorStatus.REVOKED });
    } finally {
      session.close();
    }
  });

  test('an operator reissue replaces it in the vault; a session holding the old one renews and repeats its call once', async () => {
    // Back to the real time: the credentials the moved clock made are not valid yet for TLS.
    now = Date.now();
    await c.operators.reissue('admin', undefined);
    const session = await AdminSession.open({ dataDir: dir });
    try {
      await listOperators(session); // the connection is open with the current credential
      const old = await serialNow();
      const r = await c.operators.reissue('admin', undefined);
      expect(r.superseded).toEqual([old.replace(/^0+/, '')]);
      expect(await serialNow()).not.toBe(old);
      // The old certificate is refused; the session opens the new one from the data dir and goes on.
      const rows = await listOperators(session);
      expect(rows.find((o) => o.serial === old.replace(/^0+/, ''))).toMatchObject({ status: admin.OperatorStatus.REVOKED, revocationReason: 'superseded' });
      // When the data dir holds nothing newer, the refusal stands (one renewal, no loop).
      await c.operators.revoke({ name: 'admin' }, 'unspecified');
      await expect(listOperators(session)).rejects.toMatchObject({ code: 'unauthenticated', message: 'operator certificate refused: revoked' });
    } finally {
      session.close();
    }
  });
});
