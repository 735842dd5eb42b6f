/**
 * A throwaway CA and a server certificate for 127.0.0.1 / localhost (ECDSA P-256, made with
 * @peculiar/x509 over Node's WebCrypto), for tests over real TLS 1.3. Nothing is written to disk.
 * Keys come from random bytes imported as JWK, never from `generateKey` (which can deadlock under
 * GC on Node 20, see shared/crypto/okp.ts).
 */
import 'reflect-metadata';
import { createECDH, KeyObject, randomBytes, webcrypto } from 'node:crypto';
import type * as X509 from '@peculiar/x509';

type KeyPair = Parameters<typeof X509.X509CertificateGenerator.createSelfSigned>[0]['keys'];
type Key = KeyPair['privateKey'];

export interface TlsFixture {
  caPem: string;
  serverCertPem: string;
  serverKeyPem: string;
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A P-256 key pair from a random scalar (< n except with probability ~2^-32). */
async function p256Keys(): Promise<KeyPair> {
  const ecdh = createECDH('prime256v1');
  const d = randomBytes(32);
  ecdh.setPrivateKey(d);
  const pub = ecdh.getPublicKey(); // 0x04 || x || y
  const jwk = { kty: 'EC', crv: 'P-256', x: pub.subarray(1, 33).toString('base64url'), y: pub.subarray(33).toString('base64url') };
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const privateKey = await webcrypto.subtle.importKey('jwk', { ...jwk, d: d.toString('base64url') }, alg, true, ['sign']);
  const publicKey = await webcrypto.subtle.importKey('jwk', jwk, alg, true, ['verify']);
  return { privateKey, publicKey } as unknown as KeyPair;
}

const keyPem = (key: Key): string =>
  KeyObject.from(key as unknown as webcrypto.CryptoKey).export({ type: 'pkcs8', format: 'pem' }).toString();

export async function makeTlsFixture(): Promise<TlsFixture> {
  // Imported here, not at the top: Jest links CommonJS dependencies before any ES module body
  // runs, so a static import would load tsyringe before the polyfill above exists.
  const x509 = await import('@peculiar/x509');
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const now = Date.now();
  const notBefore = new Date(now - 60_000);
  const notAfter = new Date(now + 3_600_000);
  const caKeys = await p256Keys();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=Aegis test CA',
    notBefore,
    notAfter,
    signingAlgorithm: ALG,
    keys: caKeys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  const serverKeys = await p256Keys();
  const server = await x509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: 'CN=localhost',
    issuer: ca.subject,
    notBefore,
    notAfter,
    signingAlgorithm: ALG,
    publicKey: serverKeys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: 'ip', value: '127.0.0.1' },
        { type: 'dns', value: 'localhost' },
      ]),
    ],
  });
  return { caPem: ca.toString('pem'), serverCertPem: server.toString('pem'), serverKeyPem: keyPem(serverKeys.privateKey) };
}
