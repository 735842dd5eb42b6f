/**
 * ClientCertificateChecker (shared/keystore/client-certificate.ts) reads a peer's certificate
 * with a DER reader of its own after checking the CA's signature, instead of Node's X.509
 * parser. It must never take a certificate Node's parser and the same rules would refuse, nor
 * read one differently: these tests hold it against that reference (the checks the peer
 * directory made before) on well-formed certificates of both CA types, on certificates the CA
 * key signs with names a client certificate may not carry, and on every one-byte change,
 * truncation and extension of a valid certificate.
 */
import { X509Certificate } from 'node:crypto';
import { describe, expect, test } from '@jest/globals';
import { createCsr, createIdentity } from '../../client/enroll/csr.js';
import { createCa, issueClientCertificate, issueServerCertificate, KeyBindings, type CertificateAuthority } from '../../coordinator/auth/ca.js';
import { MalformedDerError, readTime, readTlv } from '../../shared/crypto/der.js';
import { ClientCertificateChecker, type CheckedClientCertificate } from '../../shared/keystore/client-certificate.js';
import { certificateKeys, clientIdNamedBy, roundKeyUri } from '../../shared/keystore/round-key.js';
import { ED25519, loadX509 } from '../../shared/keystore/webcrypto-ed25519.js';
import { ECDSA_SHA256, p256CryptoKeys, P256Purpose } from '../../shared/keystore/webcrypto-p256.js';

/** The reference: Node's X.509 parser, the issuer and signature checks, and the naming rules. */
function reference(ca: X509Certificate, der: Uint8Array): CheckedClientCertificate | undefined {
  try {
    const cert = new X509Certificate(Buffer.from(der));
    if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return undefined;
    const { tlsKeyType, roundKey } = certificateKeys(cert);
    return { clientId: clientIdNamedBy(cert), roundKey, tlsKeyType, notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo) };
  } catch {
    return undefined;
  }
}

const plain = (c: CheckedClientCertificate | undefined): unknown => c && { ...c, roundKey: Buffer.from(c.roundKey).toString('hex') };

async function handmadeSigner(ca: CertificateAuthority): Promise<(o: { uris?: string[]; dns?: string[]; subject?: Record<string, string[]>; noSan?: boolean; notAfter?: Date }) => Promise<Uint8Array>> {
  const x509 = await loadX509();
  const id = await createIdentity();
  const { keys } = await p256CryptoKeys(id.seed, P256Purpose.ClientTls);
  const signingKey = (ca as unknown as { keys: { privateKey: typeof keys.privateKey } }).keys.privateKey;
  return async (o) => {
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: '01',
      subject: [o.subject ?? { CN: ['a'] }],
      issuer: ca.certificate.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: o.notAfter ?? new Date(Date.now() + 3_600_000),
      signingAlgorithm: (ca.keyType === 'p256' ? ECDSA_SHA256 : ED25519) as unknown as typeof ED25519,
      publicKey: keys.publicKey,
      signingKey,
      extensions: o.noSan ? [] : [new x509.SubjectAlternativeNameExtension([...(o.uris ?? ['urn:aegis:client:a', roundKeyUri(id.publicKey)]).map((value) => ({ type: 'url' as const, value })), ...(o.dns ?? []).map((value) => ({ type: 'dns' as const, value }))])],
    });
    return new Uint8Array(cert.rawData);
  };
}

describe('client certificate checker', () => {
  test('reads what Node reads, and refuses what it refuses, on certificates of P-256 and Ed25519 CAs', async () => {
    let accepted = 0;
    let refused = 0;
    for (const keyType of ['p256', 'ed25519'] as const) {
      const ca = await createCa({ name: `checker ${keyType}`, keyType });
      const other = await createCa({ name: 'other', keyType });
      const bindings = new KeyBindings();
      const ids = [await createIdentity(), await createIdentity()];
      const handmade = await handmadeSigner(ca);
      const corpus: Record<string, Uint8Array> = {
        'P-256 client': (await issueClientCertificate(ca, await createCsr(ids[0]!, 'client-1'), 'client-1', { bindings })).certificateDer,
        'Ed25519 client': (await issueClientCertificate(ca, await createCsr(ids[1]!, 'client-2', { tlsKeyType: 'ed25519' }), 'client-2', { bindings })).certificateDer,
        'another CA': (await issueClientCertificate(other, await createCsr(ids[0]!, 'client-1'), 'client-1', { bindings: new KeyBindings() })).certificateDer,
        server: (await issueServerCertificate(ca, { hosts: ['a'] })).certificateDer,
        'the CA itself': ca.certificateDer,
        'hand-made, well named': await handmade({}),
        'hand-made, expired': await handmade({ notAfter: new Date(Date.now() - 1000) }),
        'no round key': await handmade({ uris: ['urn:aegis:client:a'] }),
        'another URI': await handmade({ uris: ['urn:aegis:client:a', roundKeyUri(ids[0]!.publicKey), 'urn:aegis:operator:a'] }),
        'a DNS name': await handmade({ dns: ['a.example'] }),
        'two client ids': await handmade({ uris: ['urn:aegis:client:a', 'urn:aegis:client:b', roundKeyUri(ids[0]!.publicKey)] }),
        'an id other than its CN': await handmade({ uris: ['urn:aegis:client:b', roundKeyUri(ids[0]!.publicKey)] }),
        'a subject of two attributes': await handmade({ subject: { CN: ['a'], O: ['x'] } }),
        'no subjectAltName': await handmade({ noSan: true }),
      };
      const checker = new ClientCertificateChecker(ca.certificatePem);
      const caX = new X509Certificate(ca.certificatePem);
      for (const [what, der] of Object.entries(corpus)) {
        const want = reference(caX, der);
        expect([what, plain(checker.check(der))]).toEqual([what, plain(want)]);
        if (want) accepted++;
        else refused++;
      }
    }
    // The corpus holds both outcomes: per CA type the two enrolled clients and the two well-named
    // hand-made certificates pass (expiry is the directory's check, not the reader's), the other
    // ten do not.
    expect([accepted, refused]).toEqual([8, 20]);
  });

  test('a changed byte, a cut or an added byte never passes, and never reads differently', async () => {
    const ca = await createCa({ name: 'mutations' });
    const id = await createIdentity();
    const der = (await issueClientCertificate(ca, await createCsr(id, 'client-1'), 'client-1', { bindings: new KeyBindings() })).certificateDer;
    const checker = new ClientCertificateChecker(ca.certificateDer);
    const caX = new X509Certificate(ca.certificatePem);
    expect(checker.check(der)?.roundKey).toEqual(id.publicKey);

    const variants: Uint8Array[] = [];
    for (let i = 0; i < der.length; i++) {
      for (const flip of [0x01, 0x80, 0xff]) {
        const v = der.slice();
        v[i]! ^= flip;
        variants.push(v);
      }
    }
    for (let n = 0; n < der.length; n++) variants.push(der.subarray(0, n));
    variants.push(Uint8Array.of(...der, 0), Uint8Array.of(...der, 0x30, 0x00));

    const lenient: number[] = [];
    variants.forEach((v, i) => {
      const got = checker.check(v);
      // Nothing changed passes here: each change breaks the signature, the envelope or DER.
      expect(got).toBeUndefined();
      // Node's parser takes a certificate followed by other bytes; this reader does not.
      if (reference(caX, v) !== undefined) lenient.push(i);
    });
    expect(lenient.map((i) => variants[i]!.length)).toEqual([der.length + 1, der.length + 2]);
  });
});

describe('DER reader', () => {
  test('refuses what DER does not allow: indefinite and non-minimal lengths, high tag numbers, overruns', () => {
    const bad = [
      [0x30, 0x80, 0x00, 0x00], // indefinite length
      [0x04, 0x81, 0x05, 1, 2, 3, 4, 5], // a length below 128 in long form
      [0x04, 0x82, 0x00, 0x80, ...new Array(128).fill(0)], // a leading zero length byte
      [0x1f, 0x01, 0x00], // a high tag number
      [0x04, 0x05, 1, 2], // content past the end
      [0x04], // no length
    ];
    for (const b of bad) expect(() => readTlv(Uint8Array.from(b), 0)).toThrow(MalformedDerError);
    const ok = readTlv(Uint8Array.from([0x04, 0x81, 0x80, ...new Array(128).fill(7)]), 0);
    expect([ok.content, ok.end]).toEqual([3, 131]);
  });

  test('reads UTCTime and GeneralizedTime as X.509 writes them, and refuses dates that do not exist', () => {
    const time = (tag: number, s: string): number => {
      const b = Uint8Array.from([tag, s.length, ...Buffer.from(s, 'ascii')]);
      return readTime(b, readTlv(b, 0));
    };
    expect(time(0x17, '491231235959Z')).toBe(Date.UTC(2049, 11, 31, 23, 59, 59));
    expect(time(0x17, '500101000000Z')).toBe(Date.UTC(1950, 0, 1, 0, 0, 0));
    expect(time(0x18, '20500101000000Z')).toBe(Date.UTC(2050, 0, 1, 0, 0, 0));
    for (const [tag, s] of [[0x17, '261332000000Z'], [0x17, '260230000000Z'], [0x17, '2612070000Z'], [0x17, '261207000000+'], [0x18, '2026120700000Z'], [0x17, '26120700000aZ']] as const) {
      expect(() => time(tag, s)).toThrow(MalformedDerError);
    }
  });
});
