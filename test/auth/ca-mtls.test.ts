/**
 * The coordinator CA (RFC 5280; ECDSA P-256 per RFC 5480, Ed25519 per RFC 8410 for CAs and
 * clients from before P-256) and a real TLS 1.3 mutual-auth handshake (RFC 8446 §4.4.2-4.4.3) on
 * 127.0.0.1 with Node's `tls`: certificates the CA issued connect and name their client id;
 * anything else is refused. Key types in detail: test/auth/certificate-keys.test.ts.
 */
import { describe, expect, test } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { codeOfAsync } from '../support/codes.js';
import {
  clientIdOf,
  createCa,
  exportCa,
  importCa,
  isIssuedBy,
  issueClientCertificate,
  issueOperatorCertificate,
  issueServerCertificate,
  KeyAlreadyBoundError,
  KeyBindings,
  serialOf,
} from '../../coordinator/auth/ca.js';
import { Revocations } from '../../coordinator/auth/enrollment.js';
import { authorizePeer, certificateFacts } from '../../coordinator/auth/peer.js';
import { AuthError } from '../../coordinator/auth/tokens.js';
import { createECDH } from 'node:crypto';
import { createCsr, createIdentity, identityKeyPem, needsRenewal, tlsKeyPemFor } from '../../client/enroll/csr.js';
import { ErrorCode } from '../../shared/errors.js';
import { ED25519, ed25519CryptoKeys, loadX509 } from '../../shared/keystore/webcrypto-ed25519.js';

describe('coordinator CA', () => {
  test('a client certificate issued from a CSR carries the client id and verifies against the CA', async () => {
    const ca = await createCa({ name: 'aegis test CA' });
    const id = await createIdentity();
    const cert = await issueClientCertificate(ca, await createCsr(id, 'hospital-7@eu'), 'hospital-7@eu', { bindings: new KeyBindings() });
    expect(clientIdOf(cert.certificateDer)).toBe('hospital-7@eu');
    expect(isIssuedBy(ca, cert.certificateDer)).toBe(true);
    expect(serialOf(cert.certificateDer)).toBe(cert.serial);
    expect(cert.serial).toMatch(/^[0-9a-f]{32}$/);
    const node = new X509Certificate(Buffer.from(cert.certificateDer));
    expect(node.subjectAltName).toBe(`URI:urn:aegis:client:hospital-7@eu, URI:urn:aegis:round-key:${Buffer.from(id.publicKey).toString('base64url')}`);
    expect(node.publicKey.asymmetricKeyType).toBe('ec');
    expect(Date.parse(node.validTo) - Date.now()).toBeLessThanOrEqual(24 * 3600 * 1000);
  });

  test('the CA is self-signed, a CA for ten years, and survives export and import as raw bytes', async () => {
    const ca = await createCa({ name: 'aegis test CA' });
    const node = new X509Certificate(Buffer.from(ca.certificateDer));
    expect(node.ca).toBe(true);
    expect(node.verify(node.publicKey)).toBe(true);
    expect(Date.parse(node.validTo) - Date.now()).toBeGreaterThan(9.9 * 365 * 24 * 3600 * 1000);
    const again = await importCa(exportCa(ca));
    const id = await createIdentity();
    const cert = await issueClientCertificate(again, await createCsr(id, 'c1'), 'c1', { bindings: new KeyBindings() });
    expect(isIssuedBy(ca, cert.certificateDer)).toBe(true);
  });

  test('a CA key that does not match the CA certificate is refused at import', async () => {
    const a = await createCa({ name: 'a' });
    const b = await createCa({ name: 'b' });
    await expect(codeOfAsync(importCa({ seed: exportCa(a).seed, certificateDer: b.certificateDer }))).resolves.toBe(ErrorCode.InvalidArgument);
  });

  test('a certificate from another CA does not verify against this CA', async () => {
    const ca = await createCa({ name: 'mine' });
    const other = await createCa({ name: 'other' });
    const id = await createIdentity();
    const cert = await issueClientCertificate(other, await createCsr(id, 'c1'), 'c1', { bindings: new KeyBindings() });
    expect(isIssuedBy(ca, cert.certificateDer)).toBe(false);
  });

  test('a CSR with a bad signature is refused and binds nothing', async () => {
    const ca = await createCa({ name: 'ca' });
    const csr = await createCsr(await createIdentity(), 'c1');
    const bad = new Uint8Array(csr);
    bad[bad.length - 1]! ^= 0x01; // the last byte is inside the signature BIT STRING
    const bindings = new KeyBindings();
    await expect(codeOfAsync(issueClientCertificate(ca, bad, 'c1', { bindings }))).resolves.toBe(ErrorCode.BadSignature);
    expect(bindings.size).toBe(0);
  });

  test('a CSR whose subject names another client id is refused', async () => {
    const ca = await createCa({ name: 'ca' });
    const csr = await createCsr(await createIdentity(), 'alice');
    await expect(codeOfAsync(issueClientCertificate(ca, csr, 'mallory', { bindings: new KeyBindings() }))).resolves.toBe(ErrorCode.InvalidArgument);
  });

  test('a CSR with a key other than P-256 or Ed25519 (here P-384) is refused', async () => {
    const ca = await createCa({ name: 'ca' });
    // A P-384 key from fixed bytes (no key generation in the repository, see okp.ts).
    const ecdh = createECDH('secp384r1');
    ecdh.setPrivateKey(Buffer.alloc(48, 7));
    const point = ecdh.getPublicKey();
    const b64 = (b: Buffer): string => b.toString('base64url');
    const jwk = { kty: 'EC', crv: 'P-384', x: b64(point.subarray(1, 49)), y: b64(point.subarray(49)), d: b64(Buffer.alloc(48, 7)) };
    const x509 = await loadX509();
    const alg = { name: 'ECDSA', namedCurve: 'P-384' };
    const privateKey = await globalThis.crypto.subtle.importKey('jwk', jwk, alg, false, ['sign']);
    const { d: _d, ...pub } = jwk;
    const publicKey = await globalThis.crypto.subtle.importKey('jwk', pub, alg, true, ['verify']);
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: [{ CN: ['c1'] }],
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } as unknown as typeof ED25519,
      keys: { privateKey, publicKey } as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
    });
    await expect(codeOfAsync(issueClientCertificate(ca, new Uint8Array(csr.rawData), 'c1', { bindings: new KeyBindings() }))).resolves.toBe(ErrorCode.InvalidArgument);
  });

  test('one key cannot be enrolled under two client ids, but the same id may renew with it', async () => {
    const ca = await createCa({ name: 'ca' });
    const id = await createIdentity();
    const bindings = new KeyBindings();
    await issueClientCertificate(ca, await createCsr(id, 'alice'), 'alice', { bindings });
    await issueClientCertificate(ca, await createCsr(id, 'alice'), 'alice', { bindings });
    const err = await issueClientCertificate(ca, await createCsr(id, 'bob'), 'bob', { bindings }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeyAlreadyBoundError);
    const restored = KeyBindings.fromJSON(JSON.parse(JSON.stringify(bindings)));
    const err2 = await issueClientCertificate(ca, await createCsr(id, 'bob'), 'bob', { bindings: restored }).catch((e: unknown) => e);
    expect(err2).toBeInstanceOf(KeyAlreadyBoundError);
  });

  test('malformed client ids are refused before anything is signed', async () => {
    const ca = await createCa({ name: 'ca' });
    const id = await createIdentity();
    for (const bad of ['', 'a b', 'x'.repeat(129), 'cn=evil,o=x', 'é']) {
      await expect(codeOfAsync(createCsr(id, bad))).resolves.toBe(ErrorCode.InvalidArgument);
      await expect(codeOfAsync(issueClientCertificate(ca, await createCsr(id, 'ok'), bad, { bindings: new KeyBindings() }))).resolves.toBe(ErrorCode.InvalidArgument);
    }
  });

  test('a certificate is read once (its facts are a function of its bytes), and revocation is checked on every call', async () => {
    const ca = await createCa({ name: 'ca' });
    const bindings = new KeyBindings();
    const cert = await issueClientCertificate(ca, await createCsr(await createIdentity(), 'carol'), 'carol', { bindings });
    const facts = certificateFacts(cert.certificateDer)!;
    expect(facts).toEqual({ clientId: 'carol', operator: undefined, serial: cert.serial.toLowerCase(), notAfter: Date.parse(new X509Certificate(Buffer.from(cert.certificateDer)).validTo) });
    // The same bytes in another buffer give the remembered facts, not a second parse.
    expect(certificateFacts(Uint8Array.from(cert.certificateDer))).toBe(facts);
    const revocations = new Revocations();
    expect(authorizePeer(cert.certificateDer, revocations)).toEqual({ clientId: 'carol', serial: facts.serial });
    revocations.revokeSerial(cert.serial);
    expect(() => authorizePeer(cert.certificateDer, revocations)).toThrow(expect.objectContaining({ reason: 'revoked' }));
    const byClient = new Revocations();
    byClient.revokeClient('carol');
    expect(() => authorizePeer(cert.certificateDer, byClient)).toThrow(expect.objectContaining({ reason: 'revoked' }));
    // An operator's certificate names an operator and no client.
    const op = await issueOperatorCertificate(ca, { name: 'dana' });
    expect(certificateFacts(op.certificateDer)).toMatchObject({ clientId: undefined, operator: 'dana' });
    expect(() => authorizePeer(op.certificateDer, new Revocations())).toThrow(expect.objectContaining({ reason: 'no-identity' }));
  });

  test('a certificate that names no client id gives no peer identity', async () => {
    const ca = await createCa({ name: 'ca' });
    const server = await issueServerCertificate(ca, { hosts: ['127.0.0.1', 'localhost'] });
    for (const der of [ca.certificateDer, server.certificateDer, new Uint8Array([0x30, 0x00]), undefined]) {
      const err = (() => {
        try {
          authorizePeer(der, new Revocations());
          return undefined;
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(AuthError);
      expect((err as AuthError).reason).toBe('no-identity');
    }
  });

  test('a client renews after two thirds of its certificate lifetime, and outside its validity', async () => {
    const ca = await createCa({ name: 'ca' });
    const now = Date.UTC(2030, 0, 1);
    const cert = await issueClientCertificate(ca, await createCsr(await createIdentity(), 'c1'), 'c1', { bindings: new KeyBindings(), now, ttlMs: 24 * 3600 * 1000 });
    const from = cert.notBefore.getTime();
    const span = cert.notAfter.getTime() - from;
    expect(needsRenewal(cert.certificateDer, now)).toBe(false);
    expect(needsRenewal(cert.certificateDer, from + span * 0.6)).toBe(false);
    expect(needsRenewal(cert.certificateDer, from + span * 0.7)).toBe(true);
    expect(needsRenewal(cert.certificateDer, cert.notAfter.getTime() + 1)).toBe(true);
    expect(needsRenewal(cert.certificateDer, from - 1)).toBe(true);
  });
});

interface Outcome {
  ok: boolean;
  protocol?: string | null;
  data?: string;
}

describe('TLS 1.3 mutual authentication on 127.0.0.1', () => {
  async function setup() {
    const ca = await createCa({ name: 'aegis mtls CA' });
    const server = await issueServerCertificate(ca, { hosts: ['127.0.0.1', 'localhost'] });
    const seen: string[] = [];
    const revocations = new Revocations();
    const srv = tls.createServer(
      {
        key: server.privateKeyPem,
        cert: server.certificatePem,
        ca: [ca.certificatePem],
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.3',
      },
      (socket) => {
        // What the transport does on every call: the verified certificate's id, unless revoked.
        try {
          const peer = authorizePeer(new Uint8Array(socket.getPeerCertificate().raw), revocations);
          seen.push(peer.clientId);
          socket.end('ok');
        } catch (e) {
          socket.end(e instanceof AuthError ? `refused: ${e.reason}` : 'error');
        }
      },
    );
    srv.on('tlsClientError', () => undefined);
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const port = (srv.address() as AddressInfo).port;
    return { ca, srv, port, seen, revocations };
  }

  function connect(port: number, ca: string, extra: tls.ConnectionOptions): Promise<Outcome> {
    return new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca: [ca], servername: 'localhost', ...extra });
      let data = '';
      s.on('data', (d: Buffer) => (data += d.toString()));
      s.on('error', () => resolve({ ok: false }));
      s.on('end', () => resolve(data === 'ok' ? { ok: true, protocol: s.getProtocol() } : { ok: false, data }));
      s.on('close', () => resolve({ ok: data === 'ok' }));
    });
  }

  test('an issued client certificate connects over TLS 1.3 and the server sees its client id', async () => {
    const { ca, srv, port, seen } = await setup();
    try {
      const id = await createIdentity();
      const cert = await issueClientCertificate(ca, await createCsr(id, 'clinic-42'), 'clinic-42', { bindings: new KeyBindings() });
      const out = await connect(port, ca.certificatePem, { key: tlsKeyPemFor(id, cert.certificateDer), cert: cert.certificatePem });
      expect(out).toEqual({ ok: true, protocol: 'TLSv1.3' });
      expect(seen).toEqual(['clinic-42']);
    } finally {
      srv.close();
    }
  });

  test('a self-signed client certificate not from the CA is refused', async () => {
    const { ca, srv, port, seen } = await setup();
    try {
      const id = await createIdentity();
      const x509 = await loadX509();
      const { keys } = await ed25519CryptoKeys(id.seed);
      const selfSigned = await x509.X509CertificateGenerator.createSelfSigned({
        name: [{ CN: ['clinic-42'] }],
        signingAlgorithm: ED25519,
        keys,
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'urn:aegis:client:clinic-42' }])],
      });
      const out = await connect(port, ca.certificatePem, { key: identityKeyPem(id), cert: selfSigned.toString('pem') });
      expect(out.ok).toBe(false);
      expect(seen).toEqual([]);
    } finally {
      srv.close();
    }
  });

  test('a client certificate from another CA is refused', async () => {
    const { ca, srv, port, seen } = await setup();
    try {
      const other = await createCa({ name: 'other CA' });
      const id = await createIdentity();
      const cert = await issueClientCertificate(other, await createCsr(id, 'clinic-42'), 'clinic-42', { bindings: new KeyBindings() });
      const out = await connect(port, ca.certificatePem, { key: tlsKeyPemFor(id, cert.certificateDer), cert: cert.certificatePem });
      expect(out.ok).toBe(false);
      expect(seen).toEqual([]);
    } finally {
      srv.close();
    }
  });

  test('a client without a certificate is refused', async () => {
    const { ca, srv, port, seen } = await setup();
    try {
      const out = await connect(port, ca.certificatePem, {});
      expect(out.ok).toBe(false);
      expect(seen).toEqual([]);
    } finally {
      srv.close();
    }
  });

  test('a TLS 1.2-only client is refused even with an issued certificate', async () => {
    const { ca, srv, port, seen } = await setup();
    try {
      const id = await createIdentity();
      const cert = await issueClientCertificate(ca, await createCsr(id, 'clinic-42'), 'clinic-42', { bindings: new KeyBindings() });
      const out = await connect(port, ca.certificatePem, { key: tlsKeyPemFor(id, cert.certificateDer), cert: cert.certificatePem, maxVersion: 'TLSv1.2' });
      expect(out.ok).toBe(false);
      expect(seen).toEqual([]);
    } finally {
      srv.close();
    }
  });

  test('a revoked client is refused on its next call even with an unexpired certificate', async () => {
    const { ca, srv, port, seen, revocations } = await setup();
    try {
      const id = await createIdentity();
      const cert = await issueClientCertificate(ca, await createCsr(id, 'lost-laptop'), 'lost-laptop', { bindings: new KeyBindings() });
      const opts = { key: tlsKeyPemFor(id, cert.certificateDer), cert: cert.certificatePem };
      expect((await connect(port, ca.certificatePem, opts)).ok).toBe(true);
      revocations.revokeClient('lost-laptop');
      expect(await connect(port, ca.certificatePem, opts)).toEqual({ ok: false, data: 'refused: revoked' });
      expect(seen).toEqual(['lost-laptop']);
    } finally {
      srv.close();
    }
  });

  test('a revoked certificate serial is refused while a new certificate for the same client connects', async () => {
    const { ca, srv, port, seen, revocations } = await setup();
    try {
      const id = await createIdentity();
      const bindings = new KeyBindings();
      const old = await issueClientCertificate(ca, await createCsr(id, 'clinic-9'), 'clinic-9', { bindings });
      const renewed = await issueClientCertificate(ca, await createCsr(id, 'clinic-9'), 'clinic-9', { bindings });
      expect(renewed.serial).not.toBe(old.serial);
      revocations.revokeSerial(old.serial);
      expect(await connect(port, ca.certificatePem, { key: tlsKeyPemFor(id, old.certificateDer), cert: old.certificatePem })).toEqual({ ok: false, data: 'refused: revoked' });
      expect((await connect(port, ca.certificatePem, { key: tlsKeyPemFor(id, renewed.certificateDer), cert: renewed.certificatePem })).ok).toBe(true);
      expect(seen).toEqual(['clinic-9']);
    } finally {
      srv.close();
    }
  });
});
