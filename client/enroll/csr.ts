/**
 * Client enrollment: the client's keys, its PKCS#10 CSR (RFC 2986) and when to renew the
 * short-lived certificate.
 *
 * One secret, the 32-byte identity seed from `crypto.randomBytes` (see shared/crypto/okp.ts),
 * makes both keys (shared/keystore/round-key.ts):
 * - the Ed25519 identity key (RFC 8032), the ROUND key: it signs round messages, the coordinator
 *   registers the client under it, and the contribution ledger's keys derive from the seed;
 * - the TLS key: ECDSA P-256 derived from the seed (shared/keystore/webcrypto-p256.ts), the
 *   default for every new CSR, or the Ed25519 key itself for a client enrolled before P-256,
 *   which keeps renewing with it (`tlsKeyType` of its certificate).
 *
 * The CSR's subject is CN=<client id>; its self-signature proves possession of the TLS key. A
 * P-256 CSR also names the round key (SAN URI urn:aegis:round-key:<b64url>) and carries the round
 * key's signature over the client id and the CSR's public key (SAN URI
 * urn:aegis:round-key-proof:<b64url>), which the coordinator checks before its CA issues anything.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { abytes } from '../../shared/bytes.js';
import { ErrorCode, fail } from '../../shared/errors.js';
import { CLIENT_ID_PATTERN } from '../../shared/protocol/session.js';
import { certificateKeys, roundKeyProofUri, roundKeyUri, signRoundKeyProof, TLS_KEY_TYPES, type TlsKeyType } from '../../shared/keystore/round-key.js';
import { ED25519, ed25519CryptoKeys, ed25519PrivateKeyPem, loadX509 } from '../../shared/keystore/webcrypto-ed25519.js';
import { ECDSA_SHA256, p256CryptoKeys, p256PrivateKeyPem, P256Purpose } from '../../shared/keystore/webcrypto-p256.js';

export type { TlsKeyType };
/** The TLS key type of a new enrollment. */
export const DEFAULT_TLS_KEY_TYPE: TlsKeyType = 'p256';


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

/** The Ed25519 identity (round) key as PKCS#8 PEM: the TLS key of a certificate from before P-256. */
export function identityKeyPem(identity: ClientIdentity): string {
  return ed25519PrivateKeyPem(identity.seed);
}

/** The TLS private key of `type` as PKCS#8 PEM, for Node's `tls` `key` option. */
export function tlsKeyPem(identity: ClientIdentity, type: TlsKeyType): string {
  return type === 'p256' ? p256PrivateKeyPem(identity.seed, P256Purpose.ClientTls) : identityKeyPem(identity);
}

/** The TLS key type of a client certificate (DER): p256, or ed25519 for one from before P-256. */
export function tlsKeyTypeOf(certificateDer: Uint8Array): TlsKeyType {
  return certificateKeys(certificateDer).tlsKeyType;
}

/** The TLS private key (PKCS#8 PEM) that goes with `certificateDer`, a certificate of this identity. */
export function tlsKeyPemFor(identity: ClientIdentity, certificateDer: Uint8Array): string {
  return tlsKeyPem(identity, tlsKeyTypeOf(certificateDer));
}

/**
 * A DER CSR for `clientId`. With a P-256 TLS key (the default), signed by that key, naming the
 * round key and carrying its proof; with `tlsKeyType: 'ed25519'`, signed by the identity key
 * alone, as before P-256.
 */
export async function createCsr(identity: ClientIdentity, clientId: string, opts: { tlsKeyType?: TlsKeyType } = {}): Promise<Uint8Array> {
  if (typeof clientId !== 'string' || !CLIENT_ID_PATTERN.test(clientId)) {
    fail(ErrorCode.InvalidArgument, 'client id must be 1..128 characters of [A-Za-z0-9._:@-]');
  }
  const type = opts.tlsKeyType ?? DEFAULT_TLS_KEY_TYPE;
  if (!TLS_KEY_TYPES.includes(type)) fail(ErrorCode.InvalidArgument, `TLS key type must be one of ${TLS_KEY_TYPES.join(', ')}`);
  const x509 = await loadX509();
  if (type === 'ed25519') {
    const { keys } = await ed25519CryptoKeys(identity.seed);
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: [{ CN: [clientId] }], signingAlgorithm: ED25519, keys });
    return new Uint8Array(csr.rawData);
  }
  const { keys, spki } = await p256CryptoKeys(identity.seed, P256Purpose.ClientTls);
  const proof = signRoundKeyProof(identity.seed, clientId, spki);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [clientId] }],
    signingAlgorithm: ECDSA_SHA256 as unknown as typeof ED25519,
    keys,
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: 'url', value: roundKeyUri(identity.publicKey) },
        { type: 'url', value: roundKeyProofUri(proof) },
      ]),
    ],
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
