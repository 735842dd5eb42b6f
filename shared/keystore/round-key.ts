/**
 * A client's two keys and how its certificate ties them together.
 *
 * Each client has one Ed25519 identity key (RFC 8032), its ROUND key: it signs the client's
 * round messages, peers verify them with it, and the coordinator's registry knows the client by
 * it. Its TLS key is separate: ECDSA P-256 (shared/keystore/webcrypto-p256.ts), derived from the
 * same 32-byte identity seed, because BoringSSL-based, Go and Java TLS 1.3 stacks refuse Ed25519
 * certificates by default. A client certificate carries the round key next to its P-256 key as
 * the SAN URI `urn:aegis:round-key:<base64url of the 32 bytes>`, so peers and the coordinator
 * read the round key from a certificate the CA signed.
 *
 * The CSR proves possession of both keys: the P-256 key signs the CSR (PKCS#10), and the round
 * key signs the binding — an Ed25519 signature over `lengthPrefixed(label, client id, the CSR's
 * SubjectPublicKeyInfo DER)`, asked for as a second SAN URI of the CSR,
 * `urn:aegis:round-key-proof:<base64url of the 64 bytes>` (plain URIs rather than an attribute
 * under a private OID: any X.509 tool shows them, and the CA never copies the proof into the
 * certificate). Without that signature anyone could ask for a certificate naming another
 * device's round key. The certificate carries only the round key (the CA checked the proof).
 *
 * A certificate from before P-256 (Ed25519 key, no round-key URI) still works: its key is the
 * round key and the TLS key at once.
 */
import { createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { abytes, lengthPrefixed } from '../bytes.js';
import { ed25519Sign, ed25519Verify } from '../crypto/ed25519.js';
import { ErrorCode, fail } from '../errors.js';
import { isValidClientId } from '../protocol/session.js';

/** The SAN URI prefix of a client's round key. */
export const ROUND_KEY_URI_PREFIX = 'urn:aegis:round-key:';
/** The SAN URI prefix of the round key's proof of possession (in a CSR only). */
export const ROUND_KEY_PROOF_URI_PREFIX = 'urn:aegis:round-key-proof:';
const PROOF_LABEL = 'aegis/v1/round-key-binding';

/** The key type of a TLS certificate Aegis issues: P-256 (the default) or Ed25519 (before P-256). */
export type TlsKeyType = 'p256' | 'ed25519';
export const TLS_KEY_TYPES: readonly TlsKeyType[] = ['p256', 'ed25519'];

/** The key type of a public KeyObject, undefined for any other key (RSA, P-384, ...). */
export function keyTypeOf(key: KeyObject): TlsKeyType | undefined {
  if (key.asymmetricKeyType === 'ed25519') return 'ed25519';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'p256';
  return undefined;
}

/** SubjectPublicKeyInfo DER as OpenSSL writes it (one encoding per key, for comparisons and the proof). */
export function normalizedSpki(spki: Uint8Array): { key: KeyObject; spki: Uint8Array } {
  const key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  return { key, spki: new Uint8Array(key.export({ format: 'der', type: 'spki' })) };
}

/** The raw public key: the 32 Ed25519 bytes, or the 65-byte uncompressed P-256 point (0x04 || x || y). */
export function rawPublicKey(key: KeyObject): Uint8Array {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.kty === 'OKP' && typeof jwk.x === 'string') return new Uint8Array(Buffer.from(jwk.x, 'base64url'));
  if (jwk.kty === 'EC' && typeof jwk.x === 'string' && typeof jwk.y === 'string') {
    return new Uint8Array(Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]));
  }
  fail(ErrorCode.InvalidArgument, 'unsupported public key');
}

/** What the round key signs: the client id and the TLS key it vouches for. */
export function roundKeyProofMessage(clientId: string, spki: Uint8Array): Uint8Array {
  return lengthPrefixed(PROOF_LABEL, clientId, normalizedSpki(spki).spki);
}

/** The round key's signature binding the TLS key `spki` to `clientId` (`seed`: the identity seed). */
export function signRoundKeyProof(seed: Uint8Array, clientId: string, spki: Uint8Array): Uint8Array {
  abytes(seed, 32, 'identity seed');
  return ed25519Sign(seed, roundKeyProofMessage(clientId, spki));
}

/** True when `proof` is `roundKey`'s signature over the binding (strict Ed25519; small-order keys fail). */
export function verifyRoundKeyProof(roundKey: Uint8Array, clientId: string, spki: Uint8Array, proof: Uint8Array): boolean {
  try {
    return ed25519Verify(roundKey, roundKeyProofMessage(clientId, spki), proof);
  } catch {
    return false;
  }
}

/** The SAN URI naming `roundKey`. */
export function roundKeyUri(roundKey: Uint8Array): string {
  abytes(roundKey, 32, 'round key');
  return `${ROUND_KEY_URI_PREFIX}${Buffer.from(roundKey).toString('base64url')}`;
}

/** The round key of a SAN URI `urn:aegis:round-key:<b64url>`, or undefined when it is not one (or malformed). */
export function roundKeyOfUri(uri: string): Uint8Array | undefined {
  if (!uri.startsWith(ROUND_KEY_URI_PREFIX)) return undefined;
  const text = uri.slice(ROUND_KEY_URI_PREFIX.length);
  if (!/^[A-Za-z0-9_-]{43}$/.test(text)) return undefined;
  const key = Buffer.from(text, 'base64url');
  return key.length === 32 && key.toString('base64url') === text ? new Uint8Array(key) : undefined;
}

/** The CSR's SAN URI carrying the round key's 64-byte `proof`. */
export function roundKeyProofUri(proof: Uint8Array): string {
  abytes(proof, 64, 'round-key proof');
  return `${ROUND_KEY_PROOF_URI_PREFIX}${Buffer.from(proof).toString('base64url')}`;
}

/** The 64-byte proof of a SAN URI `urn:aegis:round-key-proof:<b64url>`, or undefined when it is not one. */
export function roundKeyProofOfUri(uri: string): Uint8Array | undefined {
  if (!uri.startsWith(ROUND_KEY_PROOF_URI_PREFIX)) return undefined;
  const text = uri.slice(ROUND_KEY_PROOF_URI_PREFIX.length);
  if (!/^[A-Za-z0-9_-]{86}$/.test(text)) return undefined;
  const proof = Buffer.from(text, 'base64url');
  return proof.length === 64 && proof.toString('base64url') === text ? new Uint8Array(proof) : undefined;
}

/**
 * The URIs of a certificate's subjectAltName as Node prints it ("URI:a, DNS:b, ..."). Entries
 * Node quotes (values with separators) are left out: no Aegis URI has such characters.
 */
export function sanUris(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '')
    .split(', ')
    .filter((n) => n.startsWith('URI:'))
    .map((n) => n.slice(4));
}

/** The SAN URI prefix that names a client. */
export const CLIENT_URI_PREFIX = 'urn:aegis:client:';

/**
 * The client a certificate names — the coordinator reading who calls, and a client reading a
 * peer's relayed certificate, both read it here. A client certificate's subjectAltName holds
 * only URIs: exactly one `urn:aegis:client:<id>` with a valid id, and besides it nothing but its
 * round key's URI; its subject is `CN=<id>`. Anything else is `invalid-argument`. It does not
 * check the issuer or validity (the TLS stack, `isIssuedBy` or the caller does).
 */
export function clientIdNamedBy(cert: X509Certificate): string {
  const entries = cert.subjectAltName ? cert.subjectAltName.split(', ') : [];
  const uris = entries.every((n) => n.startsWith('URI:')) ? entries.map((n) => n.slice(4)) : null;
  const subject = cert.subject;
  return clientIdOfNames(uris, subject.startsWith('CN=') && !subject.includes('\n') ? subject.slice(3) : null);
}

/**
 * The rules of `clientIdNamedBy`, on names however they were read: `uris` the subjectAltName's
 * URIs (null if it names anything else), `subjectCn` the subject's value when the subject is a
 * single CN (null otherwise).
 */
export function clientIdOfNames(uris: readonly string[] | null, subjectCn: string | null): string {
  if (uris === null) fail(ErrorCode.InvalidArgument, 'a client certificate names something other than URIs');
  const named = uris.filter((u) => !u.startsWith(ROUND_KEY_URI_PREFIX));
  if (named.length !== 1 || !named[0]!.startsWith(CLIENT_URI_PREFIX)) fail(ErrorCode.InvalidArgument, 'the certificate names no single client id');
  const id = named[0]!.slice(CLIENT_URI_PREFIX.length);
  if (!isValidClientId(id)) fail(ErrorCode.InvalidArgument, 'client id must be 1..128 characters of [A-Za-z0-9._:@-]');
  if (subjectCn !== id) fail(ErrorCode.InvalidArgument, 'the certificate subject and client id disagree');
  return id;
}

/**
 * The key type and the round key of a client certificate (DER or a parsed one): a P-256
 * certificate carries its round key as the one `urn:aegis:round-key:` URI; an Ed25519 one (from
 * before P-256) is its own round key and names none. Anything else is `invalid-argument`. It does
 * not check the issuer or validity (the TLS stack, `isIssuedBy` or the caller does).
 */
export function certificateKeys(certificate: Uint8Array | X509Certificate): { tlsKeyType: TlsKeyType; roundKey: Uint8Array } {
  let cert: X509Certificate;
  try {
    cert = certificate instanceof X509Certificate ? certificate : new X509Certificate(Buffer.from(certificate));
  } catch {
    fail(ErrorCode.InvalidArgument, 'malformed certificate');
  }
  const key = cert.publicKey;
  return certificateKeysOfNames(keyTypeOf(key), sanUris(cert), () => rawPublicKey(key));
}

/**
 * The rules of `certificateKeys`, on a certificate however it was read: its key's type
 * (undefined for any other), its SAN URIs, and its raw public key (asked for an Ed25519 one only).
 */
export function certificateKeysOfNames(type: TlsKeyType | undefined, uris: readonly string[], rawKey: () => Uint8Array): { tlsKeyType: TlsKeyType; roundKey: Uint8Array } {
  const named = uris.filter((u) => u.startsWith(ROUND_KEY_URI_PREFIX));
  if (type === 'ed25519') {
    if (named.length > 0) fail(ErrorCode.InvalidArgument, 'an Ed25519 certificate names no separate round key');
    return { tlsKeyType: type, roundKey: rawKey() };
  }
  if (type === 'p256') {
    const key = named.length === 1 ? roundKeyOfUri(named[0]!) : undefined;
    if (key === undefined) fail(ErrorCode.InvalidArgument, 'the certificate names no single round key');
    return { tlsKeyType: type, roundKey: key };
  }
  fail(ErrorCode.InvalidArgument, 'the certificate key is neither ECDSA P-256 nor Ed25519');
}

/** The key type of a certificate's key (DER), `invalid-argument` for another type. */
export function certificateKeyType(certificateDer: Uint8Array): TlsKeyType {
  let type: TlsKeyType | undefined;
  try {
    type = keyTypeOf(new X509Certificate(Buffer.from(certificateDer)).publicKey);
  } catch {
    fail(ErrorCode.InvalidArgument, 'malformed certificate');
  }
  if (type === undefined) fail(ErrorCode.InvalidArgument, 'the certificate key is neither ECDSA P-256 nor Ed25519');
  return type;
}
