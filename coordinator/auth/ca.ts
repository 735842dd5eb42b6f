/**
 * The coordinator's certificate authority (RFC 5280 profile).
 *
 * Keys (docs/operator-guide.md, "Certificates and TLS"): a new CA, the coordinator's TLS server key and each
 * client's TLS key are ECDSA P-256 (RFC 5480; certificates signed ecdsa-with-SHA256, RFC 5758),
 * the one certificate key every TLS 1.3 stack accepts by default — BoringSSL-based stacks, Go and
 * Java refuse Ed25519 in CertificateVerify (RFC 8446 §4.2.3). A CA made before P-256 (Ed25519,
 * RFC 8410) loads and keeps signing with Ed25519 (`importCa` reads the type from its
 * certificate), and a client enrolled with an Ed25519 certificate keeps renewing with it.
 *
 * A client certificate carries its identity twice: subject CN = client id and a SAN URI
 * `urn:aegis:client:<id>`; `clientIdOf` requires both to agree. A P-256 client certificate also
 * carries the client's Ed25519 round key (the key its round messages are signed with) as the SAN
 * URI `urn:aegis:round-key:<b64url>` (shared/keystore/round-key.ts): the CSR proves possession of
 * it, and `certificateKeys` reads it back. Serial numbers are 16 random bytes (RFC 5280 §4.1.2.2
 * allows up to 20; randomness keeps them unpredictable). One round key can be bound to one client
 * id only (`KeyBindings`, persisted by the caller): otherwise a stolen enrollment token plus a
 * copied key would let two ids share a device identity.
 *
 * The CA's private key is a 32-byte seed (Ed25519: the RFC 8032 seed; P-256: the seed of
 * shared/keystore/webcrypto-p256.ts); `exportCa` / `importCa` move it as raw bytes so the caller
 * can seal it (shared/keystore/vault.ts). It never goes to disk in clear.
 */
import { randomBytes, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { abytes } from '../../shared/bytes.js';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { ed25519CryptoKeys, ed25519PrivateKeyPem, loadX509, type X509 } from '../../shared/keystore/webcrypto-ed25519.js';
import { p256CryptoKeys, p256PrivateKeyPem, P256Purpose } from '../../shared/keystore/webcrypto-p256.js';
import { certificateKeys, certificateKeyType, clientIdNamedBy, CLIENT_URI_PREFIX, normalizedSpki, rawPublicKey, roundKeyUri, type TlsKeyType } from '../../shared/keystore/round-key.js';

import {
  assertClientId,
  assertNotSmallOrder,
  CLIENT_ID_PATTERN,
  checkedCsr,
  csrRoundKey,
  expectedCsrCn,
  publicKeyOfSpki,
  signingAlgorithmOf,
  verifyCsr,
  type CertificateKind,
} from './csr.js';

export { certificateKeys, CLIENT_URI_PREFIX, type TlsKeyType };
export { assertClientId, CLIENT_ID_PATTERN, csrForSeed, expectedCsrCn, inspectCsr, publicKeyOfSpki, verifyCsr, type CertificateKind, type VerifiedCsr } from './csr.js';

/** CA validity: 10 years. */
export const CA_TTL_MS = 10 * 365 * 24 * 3600 * 1000;
/** Default client certificate lifetime: 24 hours; the client renews at 2/3 of it. */
export const CLIENT_CERT_TTL_MS = 24 * 3600 * 1000;
/** Default server certificate lifetime: 30 days. */
export const SERVER_CERT_TTL_MS = 30 * 24 * 3600 * 1000;
/** Clock skew allowance: notBefore is set this far in the past. */
const BACKDATE_MS = 60 * 1000;

type SubtleKeyPair = Awaited<ReturnType<typeof ed25519CryptoKeys>>['keys'];

/**
 * The public half of a CA: what a coordinator with an offline CA holds (`caCertificateFromPem`).
 * Every issuing function takes a `CaCertificate` and fails closed with `CaKeyUnavailableError`
 * when it carries no signing key.
 */
export interface CaCertificate {
  readonly name: string;
  readonly certificate: X509.X509Certificate;
  /** DER of the self-signed CA certificate (the trust anchor clients pin). */
  readonly certificateDer: Uint8Array;
  /** PEM of the CA certificate, for Node's `tls` `ca` option. */
  readonly certificatePem: string;
  /** The CA's key type: P-256 for a CA made now, Ed25519 for one made before. */
  readonly keyType: TlsKeyType;
  /** The raw public key: 32 Ed25519 bytes, or the 65-byte uncompressed P-256 point. */
  readonly publicKey: Uint8Array;
}

/** A CA with its signing key (the embedded default, or `aegis ca` on the offline CA host). */
export interface CertificateAuthority extends CaCertificate {
  /** Internal: the signing keys. */
  readonly keys: SubtleKeyPair;
  /** Internal: the 32-byte seed (of either key type), only for `exportCa`. */
  readonly seed: Uint8Array;
}

/** Raised when a certificate would be issued by a CA object that holds no private key (offline CA). */
export class CaKeyUnavailableError extends AegisError {
  constructor() {
    super(ErrorCode.FailedPrecondition, 'this coordinator holds no CA private key (offline CA): certificates are signed on the CA host with aegis ca sign-csr');
  }
}

/** True when `ca` carries its signing key. */
export function hasCaKey(ca: CaCertificate): ca is CertificateAuthority {
  const k = (ca as Partial<CertificateAuthority>).keys;
  return k !== undefined && k !== null && (k as { privateKey?: unknown }).privateKey !== undefined;
}

/** The CA with its key; `CaKeyUnavailableError` for a public-only CA. */
export function requireCaKey(ca: CaCertificate): CertificateAuthority {
  if (!hasCaKey(ca)) throw new CaKeyUnavailableError();
  return ca;
}

/**
 * The public CA from its certificate (PEM or DER): checks it is a self-signed P-256 or Ed25519 CA
 * certificate (basicConstraints cA, keyCertSign). It holds no key: issuing with it fails closed.
 */
export async function caCertificateFromPem(pemOrDer: string | Uint8Array): Promise<CaCertificate> {
  const x509 = await loadX509();
  let certificate: X509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(typeof pemOrDer === 'string' ? pemOrDer : toU8(pemOrDer));
  } catch {
    fail(ErrorCode.InvalidArgument, 'the CA certificate is not a PEM or DER X.509 certificate');
  }
  const key = publicKeyOfSpki(toU8(certificate.publicKey.rawData));
  if (key === null) fail(ErrorCode.InvalidArgument, 'the CA certificate key must be ECDSA P-256 or Ed25519');
  const bc = certificate.getExtension(x509.BasicConstraintsExtension);
  if (!bc || !bc.ca) fail(ErrorCode.InvalidArgument, 'the certificate is not a CA certificate (basicConstraints cA is not set)');
  let selfSigned: boolean;
  try {
    selfSigned = await certificate.isSelfSigned();
  } catch {
    selfSigned = false;
  }
  if (!selfSigned) fail(ErrorCode.BadSignature, 'the CA certificate is not self-signed');
  const cn = certificate.subjectName.getField('CN')[0] ?? 'aegis';
  return { name: cn, certificate, certificateDer: toU8(certificate.rawData), certificatePem: certificate.toString('pem'), keyType: key.type, publicKey: key.raw };
}

/** Raised when a public key is already bound to another client id. */
export class KeyAlreadyBoundError extends AegisError {
  constructor() {
    super(ErrorCode.KeyAlreadyBound, 'this public key is already enrolled under another client id');
  }
}

/** A random, positive 16-byte serial number as hex. */
function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x40; // positive INTEGER, and always 16 bytes long in DER
  return b.toString('hex');
}

const toU8 = (b: ArrayBuffer | Uint8Array): Uint8Array => (b instanceof Uint8Array ? b : new Uint8Array(b));

function finish(name: string, certificate: X509.X509Certificate, keyType: TlsKeyType, keys: SubtleKeyPair, seed: Uint8Array, publicKey: Uint8Array): CertificateAuthority {
  return {
    name,
    certificate,
    certificateDer: toU8(certificate.rawData),
    certificatePem: certificate.toString('pem'),
    keyType,
    publicKey,
    keys,
    seed,
  };
}

/** The CA's WebCrypto keys and raw public key from its seed. */
async function caKeys(type: TlsKeyType, seed: Uint8Array): Promise<{ keys: SubtleKeyPair; publicKey: Uint8Array }> {
  if (type === 'ed25519') return ed25519CryptoKeys(seed);
  const { keys, spki } = await p256CryptoKeys(seed, P256Purpose.Ca);
  return { keys, publicKey: rawPublicKey(normalizedSpki(spki).key) };
}

/**
 * A new CA: a key from 32 random bytes and a self-signed certificate valid 10 years. The key is
 * ECDSA P-256 unless `keyType` says `ed25519` (what CAs were before P-256; kept for tests of
 * older data dirs and deployments that need it).
 */
export async function createCa(opts: { name: string; now?: number; keyType?: TlsKeyType }): Promise<CertificateAuthority> {
  if (typeof opts.name !== 'string' || opts.name.length < 1 || opts.name.length > 64 || !/^[A-Za-z0-9 ._-]+$/.test(opts.name)) {
    fail(ErrorCode.InvalidArgument, 'CA name must be 1..64 characters of [A-Za-z0-9 ._-]');
  }
  const keyType = opts.keyType ?? 'p256';
  if (keyType !== 'p256' && keyType !== 'ed25519') fail(ErrorCode.InvalidArgument, 'CA key type must be p256 or ed25519');
  const x509 = await loadX509();
  const seed = new Uint8Array(randomBytes(32));
  const { keys, publicKey } = await caKeys(keyType, seed);
  const now = opts.now ?? Date.now();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [opts.name] }],
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + CA_TTL_MS),
    signingAlgorithm: signingAlgorithmOf(keyType),
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return finish(opts.name, certificate, keyType, keys, seed, publicKey);
}

/** The CA as raw bytes: `seed` (secret, seal it) and the certificate DER (public). */
export function exportCa(ca: CertificateAuthority): { seed: Uint8Array; certificateDer: Uint8Array } {
  return { seed: new Uint8Array(ca.seed), certificateDer: new Uint8Array(ca.certificateDer) };
}

/**
 * Rebuilds a CA from `exportCa`'s bytes; the key type is the certificate's (an Ed25519 CA from an
 * older data dir stays Ed25519). Refuses a seed that does not match the certificate.
 */
export async function importCa(bytes: { seed: Uint8Array; certificateDer: Uint8Array }): Promise<CertificateAuthority> {
  abytes(bytes.seed, 32, 'CA seed');
  abytes(bytes.certificateDer, undefined, 'CA certificate');
  const x509 = await loadX509();
  const certificate = new x509.X509Certificate(bytes.certificateDer);
  const certKey = publicKeyOfSpki(toU8(certificate.publicKey.rawData));
  if (certKey === null) fail(ErrorCode.InvalidArgument, 'the CA certificate key must be ECDSA P-256 or Ed25519');
  const { keys, publicKey } = await caKeys(certKey.type, new Uint8Array(bytes.seed));
  if (Buffer.compare(Buffer.from(certKey.raw), Buffer.from(publicKey)) !== 0) {
    fail(ErrorCode.InvalidArgument, 'CA key does not match the CA certificate');
  }
  const cn = certificate.subjectName.getField('CN')[0] ?? 'aegis';
  return finish(cn, certificate, certKey.type, keys, new Uint8Array(bytes.seed), publicKey);
}

/** The raw 32-byte key of an Ed25519 SubjectPublicKeyInfo, null for any other key type. */
export function ed25519RawFromSpki(spki: Uint8Array): Uint8Array | null {
  const key = publicKeyOfSpki(spki);
  return key?.type === 'ed25519' ? key.raw : null;
}

/**
 * Which client id each enrolled round key (the client's Ed25519 identity key) belongs to. The
 * caller persists it (`toJSON`) with the rest of the coordinator's state; it holds public keys only.
 */
export class KeyBindings {
  private readonly byKey = new Map<string, string>();

  /** The client id `publicKey` is bound to, if any. */
  owner(publicKey: Uint8Array): string | undefined {
    return this.byKey.get(Buffer.from(publicKey).toString('base64url'));
  }

  /** Binds `publicKey` to `clientId`; the same pair again is a no-op (renewal). */
  bind(publicKey: Uint8Array, clientId: string): void {
    const owner = this.owner(publicKey);
    if (owner !== undefined && owner !== clientId) throw new KeyAlreadyBoundError();
    this.byKey.set(Buffer.from(publicKey).toString('base64url'), clientId);
  }

  get size(): number {
    return this.byKey.size;
  }

  toJSON(): { version: 1; bindings: [string, string][] } {
    return { version: 1, bindings: [...this.byKey.entries()] };
  }

  static fromJSON(json: unknown): KeyBindings {
    const out = new KeyBindings();
    const j = json as { version?: unknown; bindings?: unknown };
    if (j === null || typeof j !== 'object' || j.version !== 1 || !Array.isArray(j.bindings)) {
      fail(ErrorCode.InvalidArgument, 'malformed key bindings');
    }
    for (const pair of j.bindings as unknown[]) {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(pair[0])) {
        fail(ErrorCode.InvalidArgument, 'malformed key bindings');
      }
      out.bind(new Uint8Array(Buffer.from(pair[0], 'base64url')), assertClientId(pair[1]));
    }
    return out;
  }
}

export interface IssuedCertificate {
  certificateDer: Uint8Array;
  certificatePem: string;
  /** Hex serial number (for revocation). */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

function issued(cert: X509.X509Certificate): IssuedCertificate {
  return {
    certificateDer: toU8(cert.rawData),
    certificatePem: cert.toString('pem'),
    serial: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
  };
}

/** A leaf certificate signed by the CA: not a CA, digital signature only, one extended usage. */
async function issueLeaf(
  x509: typeof X509,
  caIn: CaCertificate,
  leaf: {
    cn: string;
    publicKey: Parameters<typeof X509.X509CertificateGenerator.create>[0]['publicKey'];
    usage: string;
    names: ConstructorParameters<typeof X509.SubjectAlternativeNameExtension>[0];
    now: number;
    ttl: number;
  },
): Promise<X509.X509Certificate> {
  const ca = requireCaKey(caIn);
  return x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [leaf.cn] }],
    issuer: ca.certificate.subject,
    notBefore: new Date(leaf.now - BACKDATE_MS),
    notAfter: new Date(leaf.now + leaf.ttl),
    signingAlgorithm: signingAlgorithmOf(ca.keyType),
    publicKey: leaf.publicKey,
    signingKey: ca.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([leaf.usage]),
      new x509.SubjectAlternativeNameExtension(leaf.names),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
    ],
  });
}

/**
 * The coordinator's TLS server certificate and key (PEM for Node's `tls`): a fresh ECDSA P-256
 * key (from 32 random bytes), whatever the CA's key type.
 */
export async function issueServerCertificate(
  ca: CaCertificate,
  opts: { hosts: string[]; ttlMs?: number; now?: number },
): Promise<IssuedCertificate & { privateKeyPem: string }> {
  if (!Array.isArray(opts.hosts) || opts.hosts.length === 0 || opts.hosts.length > 32) {
    fail(ErrorCode.InvalidArgument, 'a server certificate needs 1..32 host names or addresses');
  }
  const ttl = opts.ttlMs ?? SERVER_CERT_TTL_MS;
  if (!Number.isInteger(ttl) || ttl < 60_000 || ttl > 398 * 24 * 3600 * 1000) fail(ErrorCode.InvalidArgument, 'server certificate ttl out of range');
  const names = opts.hosts.map((h) => {
    if (typeof h !== 'string' || !/^[A-Za-z0-9.:-]{1,253}$/.test(h)) fail(ErrorCode.InvalidArgument, 'malformed host name');
    const isIp = /^\d{1,3}(\.\d{1,3}){3}$/.test(h) || h.includes(':');
    return { type: isIp ? ('ip' as const) : ('dns' as const), value: h };
  });
  const x509 = await loadX509();
  const seed = new Uint8Array(randomBytes(32));
  const { keys } = await p256CryptoKeys(seed, P256Purpose.Server);
  const now = opts.now ?? Date.now();
  const cert = await issueLeaf(x509, ca, { cn: opts.hosts[0]!, publicKey: keys.publicKey, usage: x509.ExtendedKeyUsage.serverAuth, names, now, ttl });
  const privateKeyPem = p256PrivateKeyPem(seed, P256Purpose.Server);
  seed.fill(0);
  return { ...issued(cert), privateKeyPem };
}

/** The SAN of a client certificate: its id, and for a P-256 key its round key. */
function clientNames(clientId: string, keyType: TlsKeyType, roundKey: Uint8Array): { type: 'url'; value: string }[] {
  return [{ type: 'url', value: `${CLIENT_URI_PREFIX}${clientId}` }, ...(keyType === 'p256' ? [{ type: 'url' as const, value: roundKeyUri(roundKey) }] : [])];
}

/**
 * Issues a client certificate from a DER PKCS#10 CSR: for a P-256 CSR (the default) a P-256
 * certificate naming the round key, for an Ed25519 CSR (a client enrolled before P-256) an
 * Ed25519 certificate as before. Refuses (before signing anything): a CSR whose signature or
 * round-key proof does not verify (`bad-signature`), another key type, a round key of small
 * order, a CSR subject CN other than `clientId`, and a round key already bound to another id
 * (`KeyAlreadyBoundError`). Binds the round key to the id in `bindings` on success only.
 */
export async function issueClientCertificate(
  ca: CaCertificate,
  csrDer: Uint8Array,
  clientId: string,
  opts: { bindings: KeyBindings; ttlMs?: number; now?: number },
): Promise<IssuedCertificate> {
  assertClientId(clientId);
  const ttl = opts.ttlMs ?? CLIENT_CERT_TTL_MS;
  if (!Number.isInteger(ttl) || ttl < 60_000 || ttl > 7 * 24 * 3600 * 1000) fail(ErrorCode.InvalidArgument, 'client certificate ttl must be 1 min..7 days');
  const x509 = await loadX509();
  const p = await checkedCsr(x509, csrDer, clientId);
  const publicKey = csrRoundKey(x509, p, clientId);
  assertNotSmallOrder(publicKey);
  const owner = opts.bindings.owner(publicKey);
  if (owner !== undefined && owner !== clientId) throw new KeyAlreadyBoundError();

  const now = opts.now ?? Date.now();
  const cert = await issueLeaf(x509, ca, {
    cn: clientId,
    publicKey: p.csr.publicKey,
    usage: x509.ExtendedKeyUsage.clientAuth,
    names: clientNames(clientId, p.keyType, publicKey),
    now,
    ttl,
  });
  opts.bindings.bind(publicKey, clientId);
  return issued(cert);
}

/**
 * The client id of a client certificate (DER, or parsed): the SAN URI `urn:aegis:client:<id>`,
 * which must agree with the subject's CN — the rules of `clientIdNamedBy` (shared, so a client
 * reads its peers' certificates the same way). Synchronous, on Node's X509Certificate, so a TLS
 * handler can call it on `getPeerCertificate().raw`. It does not check the issuer: the TLS stack
 * (or `isIssuedBy`) does.
 */
export function clientIdOf(certificate: Uint8Array | NodeX509Certificate): string {
  return clientIdNamedBy(parsed(certificate));
}

/** A certificate as Node parses it (`invalid-argument` for bytes that are not one). */
function parsed(certificate: Uint8Array | NodeX509Certificate): NodeX509Certificate {
  if (certificate instanceof NodeX509Certificate) return certificate;
  try {
    return new NodeX509Certificate(Buffer.from(certificate));
  } catch {
    fail(ErrorCode.InvalidArgument, 'malformed certificate');
  }
}

/** The hex serial number of a certificate (DER), lower case as `IssuedCertificate.serial`. */
export function serialOf(certificate: Uint8Array | NodeX509Certificate): string {
  return parsed(certificate).serialNumber.toLowerCase();
}

/** True when `certificateDer` was signed by this CA and is valid at `now`. */
export function isIssuedBy(ca: CaCertificate, certificateDer: Uint8Array, now = Date.now()): boolean {
  try {
    const cert = new NodeX509Certificate(Buffer.from(certificateDer));
    const caCert = new NodeX509Certificate(Buffer.from(ca.certificateDer));
    if (!cert.checkIssued(caCert) || !cert.verify(caCert.publicKey)) return false;
    return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
  } catch {
    return false;
  }
}

/** The SAN URI prefix that names an operator (engineers and ops calling the Admin service). */
export const OPERATOR_URI_PREFIX = 'urn:aegis:operator:';
/** Operator certificate lifetime: one year (revocable like any serial). */
export const OPERATOR_CERT_TTL_MS = 365 * 24 * 3600 * 1000;

/**
 * An operator credential: a fresh seed (32 random bytes), the ECDSA P-256 key derived from it for
 * `P256Purpose.Operator` (shared/keystore/webcrypto-p256.ts), and a certificate naming
 * `urn:aegis:operator:<name>` (CN = operator:<name>), usable for mTLS to the Admin service only:
 * `clientIdOf` refuses it, so it can never take part in a round. The seed is what the caller
 * keeps (the vault's `operator-seed`); `operatorKeyPem` turns it back into the key.
 */
export async function issueOperatorCertificate(
  ca: CaCertificate,
  opts: { name: string; ttlMs?: number; now?: number },
): Promise<IssuedCertificate & { seed: Uint8Array; privateKeyPem: string }> {
  assertClientId(opts.name);
  const x509 = await loadX509();
  const seed = new Uint8Array(randomBytes(32));
  const { keys } = await p256CryptoKeys(seed, P256Purpose.Operator);
  const cert = await issueLeaf(x509, ca, {
    cn: `operator:${opts.name}`,
    publicKey: keys.publicKey,
    usage: x509.ExtendedKeyUsage.clientAuth,
    names: [{ type: 'url', value: `${OPERATOR_URI_PREFIX}${opts.name}` }],
    now: opts.now ?? Date.now(),
    ttl: opts.ttlMs ?? OPERATOR_CERT_TTL_MS,
  });
  return { ...issued(cert), seed, privateKeyPem: p256PrivateKeyPem(seed, P256Purpose.Operator) };
}

/**
 * The PKCS#8 PEM of the operator key of `seed` that `certificateDer` certifies: the P-256 key for
 * `P256Purpose.Operator`, or for an operator certificate from before P-256 the Ed25519 key of the
 * same seed (such credentials keep working until they are reissued).
 */
export function operatorKeyPem(seed: Uint8Array, certificateDer: Uint8Array): string {
  return certificateKeyType(certificateDer) === 'p256' ? p256PrivateKeyPem(seed, P256Purpose.Operator) : ed25519PrivateKeyPem(seed);
}

/** The operator name of an operator certificate (DER), or undefined for any other certificate. */
export function operatorOf(certificate: Uint8Array | NodeX509Certificate): string | undefined {
  try {
    const cert = parsed(certificate);
    const uris = (cert.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('URI:urn:aegis:'));
    if (uris.length !== 1 || !uris[0]!.startsWith(`URI:${OPERATOR_URI_PREFIX}`)) return undefined;
    const name = uris[0]!.slice(`URI:${OPERATOR_URI_PREFIX}`.length);
    if (!CLIENT_ID_PATTERN.test(name) || cert.subject !== `CN=operator:${name}`) return undefined;
    return name;
  } catch {
    return undefined;
  }
}

/** The SubjectPublicKeyInfo (DER, normalized) of a certificate or a CSR's key: what `chainsTo` compares. */
export function certificateSpki(certificateDer: Uint8Array): Uint8Array {
  return new Uint8Array(new NodeX509Certificate(Buffer.from(certificateDer)).publicKey.export({ format: 'der', type: 'spki' }));
}

/** The raw public key of a certificate (DER): 32 Ed25519 bytes or the 65-byte P-256 point. */
export function certificatePublicKey(certificateDer: Uint8Array): Uint8Array {
  const key = publicKeyOfSpki(certificateSpki(certificateDer));
  if (key === null) fail(ErrorCode.InvalidArgument, 'the certificate key is neither ECDSA P-256 nor Ed25519');
  return key.raw;
}

/** Longest lifetime the offline CA signs: 398 days (the CA/B Forum's ceiling for server certificates). */
export const MAX_OFFLINE_CERT_TTL_MS = 398 * 24 * 3600 * 1000;

/** The PKCS#8 PEM of the TLS server key of `seed` whose type is `keyType` (for `csrForSeed`'s keys). */
export function serverKeyPem(seed: Uint8Array, keyType: TlsKeyType): string {
  return keyType === 'p256' ? p256PrivateKeyPem(seed, P256Purpose.Server) : ed25519PrivateKeyPem(seed);
}

function hostNames(hosts: readonly string[]): { type: 'ip' | 'dns'; value: string }[] {
  if (!Array.isArray(hosts) || hosts.length === 0 || hosts.length > 32) fail(ErrorCode.InvalidArgument, 'a server certificate needs 1..32 host names or addresses');
  return hosts.map((h) => {
    if (typeof h !== 'string' || !/^[A-Za-z0-9.:-]{1,253}$/.test(h)) fail(ErrorCode.InvalidArgument, 'malformed host name');
    const isIp = /^\d{1,3}(\.\d{1,3}){3}$/.test(h) || h.includes(':');
    return { type: isIp ? ('ip' as const) : ('dns' as const), value: h };
  });
}

/**
 * The offline CA's one issuing path: a certificate of `kind` for the key of a verified CSR
 * (`verifyCsr`), with the same profile as the embedded CA's (client: CN = id and SAN
 * urn:aegis:client:<id>, plus urn:aegis:round-key:<b64url> for a P-256 key; operator: CN =
 * operator:<name> and SAN urn:aegis:operator:<name>; server: CN = first host, SAN = hosts,
 * serverAuth), signed with the CA's algorithm. Needs the CA's key.
 */
export async function issueFromCsr(
  ca: CaCertificate,
  req: { kind: CertificateKind; subject: string; hosts?: readonly string[]; csrDer: Uint8Array },
  opts: { ttlMs: number; now?: number },
): Promise<IssuedCertificate> {
  const signer = requireCaKey(ca);
  const ttl = opts.ttlMs;
  if (!Number.isInteger(ttl) || ttl < 60_000 || ttl > MAX_OFFLINE_CERT_TTL_MS) fail(ErrorCode.InvalidArgument, 'certificate ttl must be 1 min..398 days');
  if (req.kind !== 'client' && req.kind !== 'server' && req.kind !== 'operator') fail(ErrorCode.InvalidArgument, 'request kind must be client, server or operator');
  const cn = expectedCsrCn(req.kind, req.subject, req.hosts ?? []);
  const v = await verifyCsr(req.csrDer, req.kind, cn);
  const x509 = await loadX509();
  const csr = new x509.Pkcs10CertificateRequest(req.csrDer);
  const names =
    req.kind === 'client'
      ? clientNames(req.subject, v.keyType, v.roundKey!)
      : req.kind === 'operator'
        ? [{ type: 'url' as const, value: `${OPERATOR_URI_PREFIX}${req.subject}` }]
        : hostNames(req.hosts ?? []);
  const usage = req.kind === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth;
  const cert = await issueLeaf(x509, signer, { cn, publicKey: csr.publicKey, usage, names, now: opts.now ?? Date.now(), ttl });
  return issued(cert);
}
