/**
 * Client enrollment: the client's Ed25519 identity key (RFC 8032) and its PKCS#10 CSR
 * (RFC 2986, Ed25519 per RFC 8410), and when to renew the short-lived certificate.
 *
 * The identity seed is 32 bytes from `crypto.randomBytes` (see shared/crypto/okp.ts). The CSR's
 * subject is CN=<client id>; its self-signature proves possession of the key, which the
 * coordinator checks before its CA issues anything.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { abytes } from '../../shared/bytes.js';
import { ErrorCode, fail } from '../../shared/errors.js';
import { ED25519, ed25519CryptoKeys, ed25519PrivateKeyPem, loadX509 } from '../../shared/keystore/webcrypto-ed25519.js';

const CLIENT_ID_PATTERN = /^[A-Za-z0-9._:@-]{1,128}$/;

export interface ClientIdentity {
  /** The 32-byte Ed25519 seed: secret, seal it at rest. */
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
}

/** A new identity: an Ed25519 key from 32 random bytes. */
export async function createIdentity(seed: Uint8Array = new Uint8Array(randomBytes(32))): Promise<ClientIdentity> {
  abytes(seed, 32, 'identity seed');
  const { publicKey } = await ed25519CryptoKeys(seed);
  return { seed, publicKey };
}

/** The identity key as PKCS#8 PEM, for Node's `tls` `key` option. */
export function identityKeyPem(identity: ClientIdentity): string {
  return ed25519PrivateKeyPem(identity.seed);
}

/** A DER CSR for `clientId`, signed by the identity key. */
export async function createCsr(identity: ClientIdentity, clientId: string): Promise<Uint8Array> {
  if (typeof clientId !== 'string' || !CLIENT_ID_PATTERN.test(clientId)) {
    fail(ErrorCode.InvalidArgument, 'client id must be 1..128 characters of [A-Za-z0-9._:@-]');
  }
  const x509 = await loadX509();
  const { keys } = await ed25519CryptoKeys(identity.seed);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [clientId] }],
    signingAlgorithm: ED25519,
    keys,
  });
  return new Uint8Array(csr.rawData);
}

/**
 * True once `fraction` of the certificate's lifetime has passed (default 2/3: a 24 h
 * certificate renews after 16 h, leaving 8 h to reach the coordinator), or when `now` is
 * outside the validity period.
 */
export function needsRenewal(certDer: Uint8Array, now: number = Date.now(), fraction = 2 / 3): boolean {
  abytes(certDer, undefined, 'certificate');
  if (!(fraction > 0 && fraction < 1)) fail(ErrorCode.InvalidArgument, 'renewal fraction must be in (0, 1)');
  let from: number;
  let to: number;
  try {
    const cert = new X509Certificate(Buffer.from(certDer));
    from = Date.parse(cert.validFrom);
    to = Date.parse(cert.validTo);
  } catch {
    fail(ErrorCode.InvalidArgument, 'malformed certificate');
  }
  if (!(now >= from && now < to)) return true;
  return now >= from + (to - from) * fraction;
}
