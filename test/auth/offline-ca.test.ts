/**
 * Offline CA request validation (coordinator/auth/offline-ca.ts) and the fail-closed CA: a
 * coordinator given only the CA certificate cannot issue anything. And the server certificate of
 * an offline-mode data dir from before P-256: used while it fits, then replaced by a P-256 one.
 */
import { describe, expect, test } from '@jest/globals';
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CaKeyUnavailableError, caCertificateFromPem, createCa, csrForSeed, issueClientCertificate, issueFromCsr, KeyBindings } from '../../coordinator/auth/ca.js';
import { awaitOfflineCredentials, CA_REQUESTS_DIR, CA_SIGNED_DIR, encodeRequest, validateRequest } from '../../coordinator/auth/offline-ca.js';
import { openCoordinatorSecrets, openOperatorCredential } from '../../coordinator/service/data-dir.js';
import { VAULT_FILE } from '../../shared/keystore/keys-cli.js';
import { SealedVault } from '../../shared/keystore/vault.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { isAegisError, ErrorCode } from '../../shared/errors.js';

const seed = (): Uint8Array => new Uint8Array(randomBytes(32));

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return isAegisError(e) ? e.code : `not an AegisError: ${String(e)}`;
  }
  return 'accepted';
}

describe('offline CA requests', () => {
  test('a good client request validates and is signed; its id binds its content', async () => {
    const csrDer = await csrForSeed(seed(), 'dev-1');
    const { id, json } = encodeRequest({ kind: 'client', subject: 'dev-1', csrDer, invite: '0123456789abcdef', createdAt: 1 });
    const r = await validateRequest(json);
    expect(r).toMatchObject({ id, kind: 'client', subject: 'dev-1', invite: '0123456789abcdef' });
    const ca = await createCa({ name: 'test offline CA' });
    const cert = await issueFromCsr(ca, r, { ttlMs: 90 * 86_400_000 });
    expect(cert.notAfter.getTime() - cert.notBefore.getTime()).toBeGreaterThan(89 * 86_400_000);
  });

  test('a CSR whose signature does not verify is refused (bad-signature)', async () => {
    const csrDer = await csrForSeed(seed(), 'dev-1');
    csrDer[csrDer.length - 5]! ^= 0x01; // inside the signature
    const { json } = encodeRequest({ kind: 'client', subject: 'dev-1', csrDer, createdAt: 1 });
    expect(await refusal(validateRequest(json))).toBe(ErrorCode.BadSignature);
  });

  test('a kind other than client/server/operator is refused', async () => {
    const csrDer = await csrForSeed(seed(), 'dev-1');
    const { json } = encodeRequest({ kind: 'ca' as never, subject: 'dev-1', csrDer, createdAt: 1 });
    expect(await refusal(validateRequest(json))).toBe(ErrorCode.InvalidArgument);
  });

  test('a malformed client id is refused', async () => {
    const csrDer = await csrForSeed(seed(), 'bad id');
    const { json } = encodeRequest({ kind: 'client', subject: 'bad id', csrDer, createdAt: 1 });
    expect(await refusal(validateRequest(json))).toBe(ErrorCode.InvalidArgument);
  });

  test('a request edited after it was written is refused: kind, subject or CSR swapped', async () => {
    const csrDer = await csrForSeed(seed(), 'operator:admin');
    const { json } = encodeRequest({ kind: 'operator', subject: 'admin', csrDer, createdAt: 1 });
    expect(await refusal(validateRequest(json))).toBe('accepted');
    const doc = JSON.parse(json) as Record<string, unknown>;
    // Same CSR, relabelled as a client request for another id.
    expect(await refusal(validateRequest(JSON.stringify({ ...doc, kind: 'client' })))).toBe(ErrorCode.Malformed);
    expect(await refusal(validateRequest(JSON.stringify({ ...doc, subject: 'root' })))).toBe(ErrorCode.Malformed);
    const other = Buffer.from(await csrForSeed(seed(), 'operator:admin')).toString('base64');
    expect(await refusal(validateRequest(JSON.stringify({ ...doc, csr: other })))).toBe(ErrorCode.Malformed);
    // A consistent forgery (id recomputed) whose CSR names another subject is refused on the CSR.
    const forged = encodeRequest({ kind: 'client', subject: 'admin', csrDer, createdAt: 1 }).json;
    expect(await refusal(validateRequest(forged))).toBe(ErrorCode.InvalidArgument);
    expect(await refusal(validateRequest('{"not": "a request"}'))).toBe(ErrorCode.Malformed);
  });
});

describe('a coordinator with an offline CA cannot issue certificates', () => {
  test('issuing with the public CA fails closed with CaKeyUnavailableError', async () => {
    const full = await createCa({ name: 'test offline CA' });
    const ca = await caCertificateFromPem(full.certificatePem);
    expect('keys' in ca || 'seed' in ca).toBe(false);
    const csrDer = await csrForSeed(seed(), 'dev-1');
    await expect(issueClientCertificate(ca, csrDer, 'dev-1', { bindings: new KeyBindings() })).rejects.toBeInstanceOf(CaKeyUnavailableError);
    await expect(issueFromCsr(ca, { kind: 'client', subject: 'dev-1', csrDer }, { ttlMs: 86_400_000 })).rejects.toBeInstanceOf(CaKeyUnavailableError);

    // The Coordinator given only the CA certificate (and no server credential) cannot start:
    // it would have to issue its own TLS certificate.
    const coordinator = new Coordinator({ ca, tokens: TokenIssuer.create(), registry: new Registry() });
    const err = await coordinator.listen('127.0.0.1:0', '127.0.0.1:0').then(
      () => undefined,
      (e: unknown) => e,
    );
    await coordinator.close();
    expect(err).toBeInstanceOf(CaKeyUnavailableError);
    expect((err as CaKeyUnavailableError).code).toBe(ErrorCode.FailedPrecondition);
  });
});

describe('the offline-mode server certificate across the move to P-256', () => {
  test('an Ed25519 server certificate from before P-256 is used while it fits; for other hosts a P-256 one is requested, and its key is served', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-offline-server-'));
    const full = await createCa({ name: 'offline CA', keyType: 'ed25519' });
    const passphrase = 'offline server test passphrase';
    const secrets = { passphrase: async () => passphrase, pin: async () => '' };
    const s = await openCoordinatorSecrets(dir, secrets, { offlineCaPem: full.certificatePem });
    try {
      // What the release before P-256 left in the vault: certificates for the Ed25519 keys of the seeds.
      const vault = await SealedVault.open(join(dir, VAULT_FILE));
      const hosts = ['127.0.0.1', 'localhost'];
      const serverSeed = await vault.get(s.kek, 'server-seed');
      const operatorSeed = await vault.get(s.kek, 'operator-seed');
      const oldServer = await issueFromCsr(full, { kind: 'server', subject: hosts[0]!, hosts, csrDer: await csrForSeed(serverSeed, hosts[0]!) }, { ttlMs: 86_400_000 });
      const operator = await issueFromCsr(full, { kind: 'operator', subject: 'admin', csrDer: await csrForSeed(operatorSeed, 'operator:admin') }, { ttlMs: 86_400_000 });
      await vault.put(s.kek, 'server-certificate', oldServer.certificateDer);
      await vault.put(s.kek, 'operator-certificate', operator.certificateDer);

      const kept = await awaitOfflineCredentials(dir, s.kek, s.ca, { hosts, pollMs: 50 });
      expect(new X509Certificate(kept.certificatePem).raw.equals(Buffer.from(oldServer.certificateDer))).toBe(true);
      expect(createPrivateKey(kept.privateKeyPem).asymmetricKeyType).toBe('ed25519');
      expect(new X509Certificate(kept.certificatePem).checkPrivateKey(createPrivateKey(kept.privateKeyPem))).toBe(true);
      // The Ed25519 operator certificate fits too and is opened with the Ed25519 key of its seed.
      const keptOperator = await openOperatorCredential(dir, secrets);
      expect(new X509Certificate(keptOperator.certificatePem).raw.equals(Buffer.from(operator.certificateDer))).toBe(true);
      expect(createPrivateKey(keptOperator.keyPem).asymmetricKeyType).toBe('ed25519');
      expect(new X509Certificate(keptOperator.certificatePem).checkPrivateKey(createPrivateKey(keptOperator.keyPem))).toBe(true);

      // Another host: the old certificate no longer fits, a P-256 request is written and waited for.
      const moved = ['10.0.0.9', '127.0.0.1', 'localhost'];
      const waiting = awaitOfflineCredentials(dir, s.kek, s.ca, { hosts: moved, pollMs: 50 });
      const requests = join(dir, CA_REQUESTS_DIR);
      const file = await (async () => {
        for (;;) {
          const found = existsSync(requests) ? readdirSync(requests).find((f) => f.endsWith('.json') && f !== 'revocations.json') : undefined;
          if (found) return join(requests, found);
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      const req = await validateRequest(readFileSync(file, 'utf8'));
      expect({ kind: req.kind, keyType: req.keyType, hosts: req.hosts }).toEqual({ kind: 'server', keyType: 'p256', hosts: moved });
      const cert = await issueFromCsr(full, req, { ttlMs: 86_400_000 });
      await mkdir(join(dir, CA_SIGNED_DIR), { recursive: true });
      writeFileSync(join(dir, CA_SIGNED_DIR, `${req.id}.pem`), cert.certificatePem);
      const next = await waiting;
      expect(new X509Certificate(next.certificatePem).raw.equals(Buffer.from(cert.certificateDer))).toBe(true);
      expect(createPrivateKey(next.privateKeyPem).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      expect(new X509Certificate(next.certificatePem).checkPrivateKey(createPrivateKey(next.privateKeyPem))).toBe(true);
    } finally {
      await s.kek.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the offline-mode operator credential', () => {
  test('a new data dir asks the offline CA for a P-256 operator certificate (and server certificate); the credential opens with the P-256 key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-offline-operator-'));
    const full = await createCa({ name: 'offline CA' });
    const secrets = { passphrase: async () => 'offline operator test passphrase', pin: async () => '' };
    const s = await openCoordinatorSecrets(dir, secrets, { offlineCaPem: full.certificatePem });
    try {
      const hosts = ['127.0.0.1', 'localhost'];
      const waiting = awaitOfflineCredentials(dir, s.kek, s.ca, { hosts, pollMs: 50 });
      const requests = join(dir, CA_REQUESTS_DIR);
      const files = await (async () => {
        for (;;) {
          const found = existsSync(requests) ? readdirSync(requests).filter((f) => f.endsWith('.json') && f !== 'revocations.json') : [];
          if (found.length === 2) return found.map((f) => join(requests, f));
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      const reqs = await Promise.all(files.map(async (f) => validateRequest(readFileSync(f, 'utf8'))));
      expect(Object.fromEntries(reqs.map((r) => [r.kind, r.keyType]))).toEqual({ server: 'p256', operator: 'p256' });
      await mkdir(join(dir, CA_SIGNED_DIR), { recursive: true });
      for (const r of reqs) writeFileSync(join(dir, CA_SIGNED_DIR, `${r.id}.pem`), (await issueFromCsr(full, r, { ttlMs: 86_400_000 })).certificatePem);
      await waiting;
      const op = await openOperatorCredential(dir, secrets);
      expect(createPrivateKey(op.keyPem).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      expect(new X509Certificate(op.certificatePem).checkPrivateKey(createPrivateKey(op.keyPem))).toBe(true);
      expect(new X509Certificate(op.certificatePem).checkIssued(new X509Certificate(full.certificatePem))).toBe(true);
      expect(readFileSync(join(dir, 'operator.pem'), 'utf8')).toBe(op.certificatePem);
    } finally {
      await s.kek.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
