/**
 * Which key every certificate has (docs/operator-guide.md, "Certificates and TLS"): a new CA, the TLS server
 * certificate and each new client certificate are ECDSA P-256 signed ecdsa-with-SHA256 (RFC 5480,
 * RFC 5758) — read back with the system `openssl`, not only with the code that wrote them; a
 * client certificate carries the client's Ed25519 round key (SAN urn:aegis:round-key:…) whose
 * proof of possession the CA checks; a CA and clients from before P-256 (Ed25519, RFC 8410) keep
 * working.
 */
import { describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  caCertificateFromPem,
  certificateKeys,
  clientIdOf,
  createCa,
  csrForSeed,
  exportCa,
  importCa,
  inspectCsr,
  isIssuedBy,
  issueClientCertificate,
  issueFromCsr,
  issueServerCertificate,
  KeyBindings,
  verifyCsr,
  type CaCertificate,
} from '../../coordinator/auth/ca.js';
import { signCrl, verifyCrl } from '../../coordinator/auth/crl.js';
import { createCsr, createIdentity, tlsKeyPemFor, tlsKeyTypeOf, type ClientIdentity } from '../../client/enroll/csr.js';
import { ErrorCode } from '../../shared/errors.js';
import { roundKeyProofUri, roundKeyUri, signRoundKeyProof } from '../../shared/keystore/round-key.js';
import { ED25519, ed25519CryptoKeys, loadX509 } from '../../shared/keystore/webcrypto-ed25519.js';
import { ECDSA_SHA256, p256CryptoKeys, P256Purpose, p256Scalar, p256Spki } from '../../shared/keystore/webcrypto-p256.js';
import { codeOfAsync } from '../support/codes.js';

/** `openssl x509 -text` of a certificate (the system binary). */
const opensslText = (pem: string): string => execFileSync('openssl', ['x509', '-noout', '-text'], { input: pem, encoding: 'utf8' });
const spkiOf = (der: Uint8Array): Buffer => new X509Certificate(Buffer.from(der)).publicKey.export({ format: 'der', type: 'spki' });

function expectP256SignedBy(text: string, signature: 'ecdsa-with-SHA256' | 'ED25519'): void {
  expect(text).toMatch(/Public Key Algorithm: id-ecPublicKey/);
  expect(text).toMatch(/NIST CURVE: P-256/);
  expect(text).toMatch(new RegExp(`Signature Algorithm: ${signature}`));
}

/**
 * A P-256 client CSR made by hand: `tlsSeed`'s P-256 key signs it, and it names `names` as SAN
 * URIs (a forger's CSR: any round key, any proof).
 */
async function handmadeCsr(tlsSeed: Uint8Array, clientId: string, names: { type: 'url' | 'dns'; value: string }[]): Promise<Uint8Array> {
  const x509 = await loadX509();
  const { keys } = await p256CryptoKeys(tlsSeed, P256Purpose.ClientTls);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [clientId] }],
    signingAlgorithm: ECDSA_SHA256 as unknown as typeof ED25519,
    keys,
    ...(names.length > 0 ? { extensions: [new x509.SubjectAlternativeNameExtension(names)] } : {}),
  });
  return new Uint8Array(csr.rawData);
}

/** The round-key proof URI `signer` makes for `clientId` and the P-256 key of `tlsSeed`. */
const proofUri = (signer: ClientIdentity, clientId: string, tlsSeed: Uint8Array): string =>
  roundKeyProofUri(signRoundKeyProof(signer.seed, clientId, p256Spki(tlsSeed, P256Purpose.ClientTls)));

/** Every way a CSR must be refused leaves nothing bound and is refused the same by each entry point. */
async function expectRefused(ca: CaCertificate, csr: Uint8Array, clientId: string, code: ErrorCode): Promise<void> {
  const bindings = new KeyBindings();
  await expect(codeOfAsync(issueClientCertificate(ca, csr, clientId, { bindings }))).resolves.toBe(code);
  await expect(codeOfAsync(inspectCsr(csr))).resolves.toBe(code);
  await expect(codeOfAsync(verifyCsr(csr, 'client', clientId))).resolves.toBe(code);
  await expect(codeOfAsync(issueFromCsr(ca, { kind: 'client', subject: clientId, csrDer: csr }, { ttlMs: 3_600_000 }))).resolves.toBe(code);
  expect(bindings.size).toBe(0);
}

describe('certificate keys', () => {
  test('a new CA is ECDSA P-256, self-signed ecdsa-with-SHA256, and survives export and import as its seed', async () => {
    const ca = await createCa({ name: 'aegis p256 CA' });
    expect(ca.keyType).toBe('p256');
    const text = opensslText(ca.certificatePem);
    expectP256SignedBy(text, 'ecdsa-with-SHA256');
    expect(text).toMatch(/CA:TRUE/);
    expect(ca.publicKey.length).toBe(65);
    const again = await importCa(exportCa(ca));
    expect(again.keyType).toBe('p256');
    expect(Buffer.from(again.publicKey).equals(Buffer.from(ca.publicKey))).toBe(true);
    const pub = await caCertificateFromPem(ca.certificatePem);
    expect(pub.keyType).toBe('p256');
    // The public CA cannot issue; the imported one issues certificates the original recognises.
    const id = await createIdentity();
    const cert = await issueClientCertificate(again, await createCsr(id, 'c1'), 'c1', { bindings: new KeyBindings() });
    expect(isIssuedBy(ca, cert.certificateDer)).toBe(true);
    const other = await createCa({ name: 'other' });
    await expect(codeOfAsync(importCa({ seed: exportCa(other).seed, certificateDer: ca.certificateDer }))).resolves.toBe(ErrorCode.InvalidArgument);
  });

  test('the TLS server certificate is ECDSA P-256 with its key as PKCS#8 PEM, from a P-256 CA and from an Ed25519 CA alike', async () => {
    for (const keyType of ['p256', 'ed25519'] as const) {
      const ca = await createCa({ name: `server ${keyType}`, keyType });
      const server = await issueServerCertificate(ca, { hosts: ['127.0.0.1', 'localhost'] });
      const text = opensslText(server.certificatePem);
      expectP256SignedBy(text, keyType === 'p256' ? 'ecdsa-with-SHA256' : 'ED25519');
      expect(text).toMatch(/TLS Web Server Authentication/);
      expect(new X509Certificate(server.certificatePem).checkPrivateKey(createPrivateKey(server.privateKeyPem))).toBe(true);
      expect(isIssuedBy(ca, server.certificateDer)).toBe(true);
    }
  });

  test('a client certificate is P-256, names the client and its Ed25519 round key, and its TLS key is derived from the identity seed', async () => {
    const ca = await createCa({ name: 'ca' });
    const id = await createIdentity();
    const csr = await createCsr(id, 'clinic-3');
    await expect(inspectCsr(csr)).resolves.toEqual({ clientId: 'clinic-3', publicKey: id.publicKey });
    const cert = await issueClientCertificate(ca, csr, 'clinic-3', { bindings: new KeyBindings() });
    const text = opensslText(cert.certificatePem);
    expectP256SignedBy(text, 'ecdsa-with-SHA256');
    expect(text).toMatch(/TLS Web Client Authentication/);
    expect(text).toContain(`URI:${roundKeyUri(id.publicKey)}`);
    expect(text).not.toMatch(/round-key-proof/); // the proof stays in the CSR
    expect(clientIdOf(cert.certificateDer)).toBe('clinic-3');
    expect(certificateKeys(cert.certificateDer)).toEqual({ tlsKeyType: 'p256', roundKey: id.publicKey });
    expect(tlsKeyTypeOf(cert.certificateDer)).toBe('p256');
    expect(spkiOf(cert.certificateDer).equals(Buffer.from(p256Spki(id.seed, P256Purpose.ClientTls)))).toBe(true);
    expect(new X509Certificate(cert.certificatePem).checkPrivateKey(createPrivateKey(tlsKeyPemFor(id, cert.certificateDer)))).toBe(true);
  });

  test('the P-256 key of a seed is deterministic per purpose, differs across seeds and purposes, and lies in [1, n-1]', async () => {
    const n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
    const a = (await createIdentity()).seed;
    const b = (await createIdentity()).seed;
    const hex = (x: Uint8Array): string => Buffer.from(x).toString('hex');
    expect(hex(p256Scalar(a, P256Purpose.ClientTls))).toBe(hex(p256Scalar(new Uint8Array(a), P256Purpose.ClientTls)));
    expect(hex(p256Scalar(a, P256Purpose.ClientTls))).not.toBe(hex(p256Scalar(b, P256Purpose.ClientTls)));
    expect(hex(p256Scalar(a, P256Purpose.ClientTls))).not.toBe(hex(p256Scalar(a, P256Purpose.Server)));
    for (const seed of [a, b, new Uint8Array(32), new Uint8Array(32).fill(0xff)]) {
      const d = BigInt(`0x${hex(p256Scalar(seed, P256Purpose.Ca))}`);
      expect(d >= 1n && d <= n - 1n).toBe(true);
    }
    // Two CSRs of one identity certify the same TLS key (renewal keeps it).
    const x509 = await loadX509();
    const id = await createIdentity();
    const [c1, c2] = [await createCsr(id, 'c1'), await createCsr(id, 'c1')].map((d) => new x509.Pkcs10CertificateRequest(d));
    expect(Buffer.from(c1!.publicKey.rawData).equals(Buffer.from(c2!.publicKey.rawData))).toBe(true);
  });

  test('a CSR whose round-key proof does not verify is refused with bad-signature and binds nothing', async () => {
    const ca = await createCa({ name: 'ca' });
    const victim = await createIdentity();
    const mallory = await createIdentity();
    const victimUri = { type: 'url' as const, value: roundKeyUri(victim.publicKey) };
    // The victim's round key, with a "proof" Mallory signed with her own round key.
    await expectRefused(ca, await handmadeCsr(mallory.seed, 'victim', [victimUri, { type: 'url', value: proofUri(mallory, 'victim', mallory.seed) }]), 'victim', ErrorCode.BadSignature);
    // The victim's genuine proof (made for the victim's own P-256 key), replayed under Mallory's P-256 key.
    await expectRefused(ca, await handmadeCsr(mallory.seed, 'victim', [victimUri, { type: 'url', value: proofUri(victim, 'victim', victim.seed) }]), 'victim', ErrorCode.BadSignature);
    // The victim's proof for its own key, but for another client id.
    await expectRefused(ca, await handmadeCsr(victim.seed, 'mallory', [victimUri, { type: 'url', value: proofUri(victim, 'victim', victim.seed) }]), 'mallory', ErrorCode.BadSignature);
    // A genuine proof with one bit flipped, at every byte.
    const good = signRoundKeyProof(victim.seed, 'victim', p256Spki(victim.seed, P256Purpose.ClientTls));
    for (let i = 0; i < 64; i += 9) {
      const bad = new Uint8Array(good);
      bad[i]! ^= 0x01;
      await expectRefused(ca, await handmadeCsr(victim.seed, 'victim', [victimUri, { type: 'url', value: roundKeyProofUri(bad) }]), 'victim', ErrorCode.BadSignature);
    }
    // The same genuine proof goes through: the refusals above are the proof's.
    const ok = await handmadeCsr(victim.seed, 'victim', [victimUri, { type: 'url', value: roundKeyProofUri(good) }]);
    const cert = await issueClientCertificate(ca, ok, 'victim', { bindings: new KeyBindings() });
    expect(certificateKeys(cert.certificateDer).roundKey).toEqual(victim.publicKey);
  });

  test('a P-256 client CSR without its round key, without its proof, or asking for other names is refused', async () => {
    const ca = await createCa({ name: 'ca' });
    const id = await createIdentity();
    const keyUri = { type: 'url' as const, value: roundKeyUri(id.publicKey) };
    const proof = { type: 'url' as const, value: proofUri(id, 'c1', id.seed) };
    for (const names of [[], [keyUri], [proof], [keyUri, proof, { type: 'url' as const, value: 'urn:aegis:client:c2' }], [keyUri, proof, { type: 'dns' as const, value: 'evil.example' }], [keyUri, keyUri, proof]]) {
      await expectRefused(ca, await handmadeCsr(id.seed, 'c1', names), 'c1', ErrorCode.InvalidArgument);
    }
    // An Ed25519 CSR (before P-256) asks for no names.
    const x509 = await loadX509();
    const { keys } = await ed25519CryptoKeys(id.seed);
    const named = await x509.Pkcs10CertificateRequestGenerator.create({ name: [{ CN: ['c1'] }], signingAlgorithm: ED25519, keys, extensions: [new x509.SubjectAlternativeNameExtension([keyUri])] });
    await expectRefused(ca, new Uint8Array(named.rawData), 'c1', ErrorCode.InvalidArgument);
  });

  test('a client CSR with any five bytes overwritten is taken or refused with a reason code, never a library error (lazily decoded parts included)', async () => {
    const ca = await createCa({ name: 'ca' });
    const csr = await createCsr(await createIdentity(), 'c1');
    const unexpected: string[] = [];
    for (let at = 0; at < csr.length; at++) {
      for (const fill of [0x00, 0xff]) {
        const b = new Uint8Array(csr);
        b.fill(fill, at, at + 5);
        for (const step of [() => inspectCsr(b), () => verifyCsr(b, 'client', 'c1'), () => issueClientCertificate(ca, b, 'c1', { bindings: new KeyBindings() })]) {
          const code = await codeOfAsync(step());
          if (code?.startsWith('unexpected')) unexpected.push(`bytes ${at}..${at + 4} = ${fill}: ${code}`);
        }
      }
    }
    expect(unexpected).toEqual([]);
  });

  test('one round key is bound to one client id across key types: a P-256 CSR cannot take an id an Ed25519 enrollment holds, and the same id renews in either type', async () => {
    const ca = await createCa({ name: 'ca', keyType: 'ed25519' });
    const id = await createIdentity();
    const bindings = new KeyBindings();
    const old = await issueClientCertificate(ca, await createCsr(id, 'alice', { tlsKeyType: 'ed25519' }), 'alice', { bindings });
    expect(certificateKeys(old.certificateDer)).toEqual({ tlsKeyType: 'ed25519', roundKey: id.publicKey });
    await expect(codeOfAsync(issueClientCertificate(ca, await createCsr(id, 'bob'), 'bob', { bindings }))).resolves.toBe(ErrorCode.KeyAlreadyBound);
    const moved = await issueClientCertificate(ca, await createCsr(id, 'alice'), 'alice', { bindings });
    expect(certificateKeys(moved.certificateDer)).toEqual({ tlsKeyType: 'p256', roundKey: id.publicKey });
    expect(bindings.size).toBe(1);
  });

  test('an Ed25519 CA (as data dirs made before P-256 hold it) loads from its seed and keeps issuing Ed25519-signed certificates, for Ed25519 and P-256 clients', async () => {
    const made = await createCa({ name: 'Aegis coordinator CA', keyType: 'ed25519' });
    expect(opensslText(made.certificatePem)).toMatch(/Public Key Algorithm: ED25519/);
    const ca = await importCa(exportCa(made));
    expect(ca.keyType).toBe('ed25519');
    expect((await caCertificateFromPem(made.certificatePem)).keyType).toBe('ed25519');
    const legacy = await createIdentity();
    const fresh = await createIdentity();
    const bindings = new KeyBindings();
    const old = await issueClientCertificate(ca, await createCsr(legacy, 'legacy', { tlsKeyType: 'ed25519' }), 'legacy', { bindings });
    const oldText = opensslText(old.certificatePem);
    expect(oldText).toMatch(/Public Key Algorithm: ED25519/);
    expect(oldText).toMatch(/Signature Algorithm: ED25519/);
    expect(new X509Certificate(old.certificatePem).subjectAltName).toBe('URI:urn:aegis:client:legacy'); // the profile from before P-256
    expect(tlsKeyTypeOf(old.certificateDer)).toBe('ed25519');
    const p256 = await issueClientCertificate(ca, await createCsr(fresh, 'fresh'), 'fresh', { bindings });
    expectP256SignedBy(opensslText(p256.certificatePem), 'ED25519');
    expect(certificateKeys(p256.certificateDer).roundKey).toEqual(fresh.publicKey);
    for (const der of [old.certificateDer, p256.certificateDer]) expect(isIssuedBy(made, der)).toBe(true);
    // Its CRLs are Ed25519-signed as before; a P-256 CA's are ecdsa-with-SHA256. OpenSSL verifies both.
    for (const c of [ca, await createCa({ name: 'p256 crl' })]) {
      const crl = await signCrl(c, [{ serial: old.serial, revokedAt: Date.now(), reason: 'superseded' }], { thisUpdate: Date.now(), nextUpdate: Date.now() + 3_600_000, crlNumber: 7 });
      await expect(verifyCrl(crl.pem, c)).resolves.toBe(true);
      const dir = mkdtempSync(join(tmpdir(), 'aegis-crl-'));
      writeFileSync(join(dir, 'ca.pem'), c.certificatePem);
      writeFileSync(join(dir, 'crl.pem'), crl.pem);
      const out = execFileSync('openssl', ['crl', '-in', join(dir, 'crl.pem'), '-CAfile', join(dir, 'ca.pem'), '-noout', '-text'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      expect(out).toMatch(new RegExp(`Signature Algorithm: ${c.keyType === 'p256' ? 'ecdsa-with-SHA256' : 'ED25519'}`));
    }
  });

  test('the offline CA path signs P-256 server and operator CSRs, and an Ed25519 operator CSR (from before P-256) as it is', async () => {
    const ca = await createCa({ name: 'offline' });
    const seed = (await createIdentity()).seed;
    const serverCsr = await csrForSeed(seed, '127.0.0.1', P256Purpose.Server);
    const server = await issueFromCsr(ca, { kind: 'server', subject: '127.0.0.1', hosts: ['127.0.0.1', 'localhost'], csrDer: serverCsr }, { ttlMs: 3_600_000 });
    expectP256SignedBy(opensslText(server.certificatePem), 'ecdsa-with-SHA256');
    expect(spkiOf(server.certificateDer).equals(Buffer.from(p256Spki(seed, P256Purpose.Server)))).toBe(true);
    const operator = await issueFromCsr(ca, { kind: 'operator', subject: 'admin', csrDer: await csrForSeed(seed, 'operator:admin', P256Purpose.Operator) }, { ttlMs: 3_600_000 });
    expectP256SignedBy(opensslText(operator.certificatePem), 'ecdsa-with-SHA256');
    expect(spkiOf(operator.certificateDer).equals(Buffer.from(p256Spki(seed, P256Purpose.Operator)))).toBe(true);
    // The operator and server keys of one seed differ (one label per use).
    expect(spkiOf(operator.certificateDer).equals(spkiOf(server.certificateDer))).toBe(false);
    const legacyOperator = await issueFromCsr(ca, { kind: 'operator', subject: 'admin', csrDer: await csrForSeed(seed, 'operator:admin') }, { ttlMs: 3_600_000 });
    expect(opensslText(legacyOperator.certificatePem)).toMatch(/Public Key Algorithm: ED25519/);
    // A client request through the offline path gets the same profile as the embedded CA's.
    const id = await createIdentity();
    const client = await issueFromCsr(ca, { kind: 'client', subject: 'dev-1', csrDer: await createCsr(id, 'dev-1') }, { ttlMs: 3_600_000 });
    expect(certificateKeys(client.certificateDer)).toEqual({ tlsKeyType: 'p256', roundKey: id.publicKey });
    expect(clientIdOf(client.certificateDer)).toBe('dev-1');
    // A server CSR that asks for names of its own is refused (the CA writes them).
    const x509 = await loadX509();
    const { keys } = await p256CryptoKeys(seed, P256Purpose.Server);
    const named = await x509.Pkcs10CertificateRequestGenerator.create({
      name: [{ CN: ['127.0.0.1'] }],
      signingAlgorithm: ECDSA_SHA256 as unknown as typeof ED25519,
      keys,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'evil.example' }])],
    });
    await expect(codeOfAsync(verifyCsr(new Uint8Array(named.rawData), 'server', '127.0.0.1'))).resolves.toBe(ErrorCode.InvalidArgument);
  });
});
