/**
 * The peer directory (client/agent/peer-directory.ts): the round keys a client takes for its
 * peers come only from certificates its pinned CA signed for that client id — the `urn:aegis:
 * round-key:` URI of a P-256 certificate, or the key of an Ed25519 certificate from before
 * P-256. Anything else is left out (the round then sees an unknown id). Certificates are checked
 * only when a key is asked for, and one that passed is not parsed again in a later round.
 */
import { describe, expect, jest, test } from '@jest/globals';
import { createCsr, createIdentity } from '../../client/enroll/csr.js';
import { PeerDirectory } from '../../client/agent/peer-directory.js';
import { clientIdOf, createCa, issueClientCertificate, issueServerCertificate, KeyBindings } from '../../coordinator/auth/ca.js';
import { ErrorCode } from '../../shared/errors.js';
import { codeOf } from '../support/codes.js';
import { roundKeyUri } from '../../shared/keystore/round-key.js';
import { ED25519, loadX509 } from '../../shared/keystore/webcrypto-ed25519.js';
import { ECDSA_SHA256, p256CryptoKeys, P256Purpose } from '../../shared/keystore/webcrypto-p256.js';

describe('peer directory', () => {
  test('learns round keys from P-256 and Ed25519 client certificates of the pinned CA, each under its own id only', async () => {
    for (const keyType of ['p256', 'ed25519'] as const) {
      const ca = await createCa({ name: `peers ${keyType}`, keyType });
      const bindings = new KeyBindings();
      const [a, b] = [await createIdentity(), await createIdentity()];
      const certA = await issueClientCertificate(ca, await createCsr(a, 'a'), 'a', { bindings });
      const certB = await issueClientCertificate(ca, await createCsr(b, 'b', { tlsKeyType: 'ed25519' }), 'b', { bindings });
      const dir = new PeerDirectory(ca.certificatePem);
      dir.learn([
        { clientId: 'a', certificate: certA.certificateDer },
        { clientId: 'b', certificate: certB.certificateDer },
        // b's certificate offered for another id is not taken.
        { clientId: 'c', certificate: certB.certificateDer },
        { clientId: 'd' },
      ]);
      expect(dir.keyOf('a')).toEqual(a.publicKey);
      expect(dir.keyOf('b')).toEqual(b.publicKey);
      expect(dir.keyOf('c')).toBeUndefined();
      expect(dir.keyOf('d')).toBeUndefined();
    }
  });

  test('leaves out a certificate of another CA, a server certificate, a P-256 certificate naming no or two round keys, and names a client certificate may not carry (refused by the coordinator alike)', async () => {
    const ca = await createCa({ name: 'pinned' });
    const other = await createCa({ name: 'other' });
    const id = await createIdentity();
    const foreign = await issueClientCertificate(other, await createCsr(id, 'a'), 'a', { bindings: new KeyBindings() });
    const server = await issueServerCertificate(ca, { hosts: ['a'] });
    // Certificates the pinned CA's key signs with hand-made SANs (what a forger with the CA key, or a bug, could make).
    const x509 = await loadX509();
    const { keys } = await p256CryptoKeys(id.seed, P256Purpose.ClientTls);
    const handmade = async (uris: string[], dns: string[] = []): Promise<Uint8Array> => {
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: '01',
        subject: [{ CN: ['a'] }],
        issuer: ca.certificate.subject,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 3_600_000),
        signingAlgorithm: ECDSA_SHA256 as unknown as typeof ED25519,
        publicKey: keys.publicKey,
        signingKey: (ca as unknown as { keys: { privateKey: typeof keys.privateKey } }).keys.privateKey,
        extensions: [new x509.SubjectAlternativeNameExtension([...uris.map((value) => ({ type: 'url' as const, value })), ...dns.map((value) => ({ type: 'dns' as const, value }))])],
      });
      return new Uint8Array(cert.rawData);
    };
    const other32 = (await createIdentity()).publicKey;
    const noRoundKey = await handmade(['urn:aegis:client:a']);
    const twoRoundKeys = await handmade(['urn:aegis:client:a', roundKeyUri(id.publicKey), roundKeyUri(other32)]);
    const good = await handmade(['urn:aegis:client:a', roundKeyUri(id.publicKey)]);
    for (const der of [foreign.certificateDer, server.certificateDer, noRoundKey, twoRoundKeys]) {
      const dir = new PeerDirectory(ca.certificatePem);
      dir.learn([{ clientId: 'a', certificate: der }]);
      expect(dir.keyOf('a')).toBeUndefined();
    }
    // The control: the same construction with one round key is taken.
    const dir = new PeerDirectory(ca.certificatePem);
    dir.learn([{ clientId: 'a', certificate: good }]);
    expect(dir.keyOf('a')).toEqual(id.publicKey);

    // Names a client certificate may not carry, read the same way by a client (a peer's
    // certificate) and by the coordinator (its caller's): one function, clientIdNamedBy.
    const names = {
      'another URI': await handmade(['urn:aegis:client:a', roundKeyUri(id.publicKey), 'urn:aegis:operator:a']),
      'a DNS name': await handmade(['urn:aegis:client:a', roundKeyUri(id.publicKey)], ['a.example']),
      'two client ids': await handmade(['urn:aegis:client:a', 'urn:aegis:client:b', roundKeyUri(id.publicKey)]),
      'an id other than its CN': await handmade(['urn:aegis:client:b', roundKeyUri(id.publicKey)]),
    };
    for (const [what, der] of Object.entries(names)) {
      const peers = new PeerDirectory(ca.certificatePem);
      peers.learn([{ clientId: 'a', certificate: der }]);
      expect([what, peers.keyOf('a')]).toEqual([what, undefined]);
      expect([what, codeOf(() => clientIdOf(der))]).toEqual([what, ErrorCode.InvalidArgument]);
    }
    expect(clientIdOf(good)).toBe('a');
  });

  test('checks a certificate only when its key is asked for, and once across rounds; the validity period and the id are checked every time', async () => {
    const ca = await createCa({ name: 'lazy' });
    const bindings = new KeyBindings();
    const ids = await Promise.all(['a', 'b', 'c'].map(() => createIdentity()));
    const now = Date.now();
    const certs = await Promise.all(['a', 'b', 'c'].map(async (id, i) => (await issueClientCertificate(ca, await createCsr(ids[i]!, id), id, { bindings, ttlMs: 3_600_000, now })).certificateDer));
    const entries = ['a', 'b', 'c'].map((clientId, i) => ({ clientId, certificate: certs[i]! }));
    const dir = new PeerDirectory(ca.certificatePem);
    dir.learn(entries);
    expect(dir.verifications).toBe(0);
    expect(dir.keyOf('a')).toEqual(ids[0]!.publicKey);
    expect(dir.keyOf('a')).toEqual(ids[0]!.publicKey);
    expect(dir.verifications).toBe(1);

    // The next round relays the same certificates: a's is not parsed again, b's is on first use.
    dir.clear();
    expect(dir.keyOf('a')).toBeUndefined(); // nothing relayed yet this round
    dir.learn(entries);
    expect(dir.keyOf('a')).toEqual(ids[0]!.publicKey);
    expect(dir.keyOf('b')).toEqual(ids[1]!.publicKey);
    expect(dir.verifications).toBe(2);

    // A remembered certificate relayed under another id is not taken.
    dir.clear();
    dir.learn([{ clientId: 'c', certificate: certs[0]! }]);
    expect(dir.keyOf('c')).toBeUndefined();
    expect(dir.verifications).toBe(2);

    // Past its validity period a remembered certificate is refused without being parsed again.
    const clock = jest.spyOn(Date, 'now').mockReturnValue(now + 2 * 3_600_000);
    try {
      dir.clear();
      dir.learn(entries);
      expect(dir.keyOf('a')).toBeUndefined();
      expect(dir.verifications).toBe(2);
    } finally {
      clock.mockRestore();
    }
  });
});
