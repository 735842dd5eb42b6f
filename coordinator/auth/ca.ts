/**
 * The coordinator's certificate authority (RFC 5280 profile, Ed25519 keys per RFC 8410).
 *
 * Every key is Ed25519: the CA, the coordinator's TLS server key and each client's identity key.
 * Node 20's TLS 1.3 (OpenSSL 3) signs and verifies CertificateVerify with the `ed25519` scheme
 * (RFC 8446 §4.2.3) for both server and client certificates, so one algorithm serves the CA,
 * the handshake and each client's identity; test/auth/ca-mtls.test.ts checks it with a real
 * handshake.
 *
 * A client certificate carries its identity twice: subject CN = client id and a SAN URI
 * `urn:aegis:client:<id>`; `clientIdOf` requires both to agree. Serial numbers are 16 random
 * bytes (RFC 5280 §4.1.2.2 allows up to 20; randomness keeps them unpredictable). One public key
 * can be bound to one client id only (`KeyBindings`, persisted by the caller): otherwise a stolen
 * enrollment token plus a copied key would let two ids share a device identity.
 *
 * The CA's private key is a 32-byte seed; `exportCa` / `importCa` move it as raw bytes so the
 * caller can seal it with shared/keystore/passphrase-keyfile.ts. It never goes to disk in clear.
 */
import { createPublicKey, randomBytes, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { abytes } from '../../shared/bytes.js';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { ED25519, ed25519CryptoKeys, ed25519PrivateKeyPem, loadX509, type X509 } from '../../shared/keystore/webcrypto-ed25519.js';

/** Client ids: 1..128 characters of [A-Za-z0-9._:@-] (no characters special in X.500 names). */
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9._:@-]{1,128}$/;
/** The SAN URI prefix that names a client. */
export const CLIENT_URI_PREFIX = 'urn:aegis:client:';
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
  readonly publicKey: Uint8Array;
}

/** A CA with its signing key (the embedded default, or `aegis ca` on the offline CA host). */
export interface CertificateAuthority extends CaCertificate {
  /** Internal: the signing keys. */
  readonly keys: SubtleKeyPair;
  /** Internal: the 32-byte seed, only for `exportCa`. */
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
 * The public CA from its certificate (PEM or DER): checks it is a self-signed Ed25519 CA
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
  const publicKey = ed25519RawFromSpki(toU8(certificate.publicKey.rawData));
  if (publicKey === null) fail(ErrorCode.InvalidArgument, 'the CA certificate key must be Ed25519');
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
  return { name: cn, certificate, certificateDer: toU8(certificate.rawData), certificatePem: certificate.toString('pem'), publicKey };
}

/** Raised when a public key is already bound to another client id. */
export class KeyAlreadyBoundError extends AegisError {
  constructor() {
    super(ErrorCode.KeyAlreadyBound, 'this public key is already enrolled under another client id');
  }
}

export function assertClientId(clientId: unknown): string {
  if (typeof clientId !== 'string' || !CLIENT_ID_PATTERN.test(clientId)) {
    fail(ErrorCode.InvalidArgument, 'client id must be 1..128 characters of [A-Za-z0-9._:@-]');
  }
  return clientId;
}

/** A random, positive 16-byte serial number as hex. */
function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x40; // positive INTEGER, and always 16 bytes long in DER
  return b.toString('hex');
}

const toU8 = (b: ArrayBuffer | Uint8Array): Uint8Array => (b instanceof Uint8Array ? b : new Uint8Array(b));

function finish(name: string, certificate: X509.X509Certificate, keys: SubtleKeyPair, seed: Uint8Array, publicKey: Uint8Array): CertificateAuthority {
  return {
    name,
    certificate,
    certificateDer: toU8(certificate.rawData),
    certificatePem: certificate.toString('pem'),
    publicKey,
    keys,
    seed,
  };
}

/** A new CA: an Ed25519 key from random bytes and a self-signed certificate valid 10 years. */
export async function createCa(opts: { name: string; now?: number }): Promise<CertificateAuthority> {
  if (typeof opts.name !== 'string' || opts.name.length < 1 || opts.name.length > 64 || !/^[A-Za-z0-9 ._-]+$/.test(opts.name)) {
    fail(ErrorCode.InvalidArgument, 'CA name must be 1..64 characters of [A-Za-z0-9 ._-]');
  }
  const x509 = await loadX509();
  const seed = new Uint8Array(randomBytes(32));
  const { keys, publicKey } = await ed25519CryptoKeys(seed);
  const now = opts.now ?? Date.now();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [opts.name] }],
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + CA_TTL_MS),
    signingAlgorithm: ED25519,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return finish(opts.name, certificate, keys, seed, publicKey);
}

/** The CA as raw bytes: `seed` (secret, seal it) and the certificate DER (public). */
export function exportCa(ca: CertificateAuthority): { seed: Uint8Array; certificateDer: Uint8Array } {
  return { seed: new Uint8Array(ca.seed), certificateDer: new Uint8Array(ca.certificateDer) };
}

/** Rebuilds a CA from `exportCa`'s bytes; refuses a seed that does not match the certificate. */
export async function importCa(bytes: { seed: Uint8Array; certificateDer: Uint8Array }): Promise<CertificateAuthority> {
  abytes(bytes.seed, 32, 'CA seed');
  abytes(bytes.certificateDer, undefined, 'CA certificate');
  const x509 = await loadX509();
  const certificate = new x509.X509Certificate(bytes.certificateDer);
  const { keys, publicKey } = await ed25519CryptoKeys(new Uint8Array(bytes.seed));
  const certKey = ed25519RawFromSpki(toU8(certificate.publicKey.rawData));
  if (certKey === null || Buffer.compare(Buffer.from(certKey), Buffer.from(publicKey)) !== 0) {
    fail(ErrorCode.InvalidArgument, 'CA key does not match the CA certificate');
  }
  const cn = certificate.subjectName.getField('CN')[0] ?? 'aegis';
  return finish(cn, certificate, keys, new Uint8Array(bytes.seed), publicKey);
}

/** The raw 32-byte key of an Ed25519 SubjectPublicKeyInfo, null for any other key type. */
export function ed25519RawFromSpki(spki: Uint8Array): Uint8Array | null {
  try {
    const key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
    if (key.asymmetricKeyType !== 'ed25519') return null;
    return new Uint8Array(Buffer.from(key.export({ format: 'jwk' }).x!, 'base64url'));
  } catch {
    return null;
  }
}

/**
 * Which client id each enrolled public key belongs to. The caller persists it (`toJSON`) with
 * the rest of the coordinator's state; it holds public keys only.
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
    signingAlgorithm: ED25519,
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

/** The coordinator's TLS server certificate and key (PEM for Node's `tls`). */
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
  const { keys } = await ed25519CryptoKeys(seed);
  const now = opts.now ?? Date.now();
  const cert = await issueLeaf(x509, ca, { cn: opts.hosts[0]!, publicKey: keys.publicKey, usage: x509.ExtendedKeyUsage.serverAuth, names, now, ttl });
  return { ...issued(cert), privateKeyPem: ed25519PrivateKeyPem(seed) };
}

/** A DER CSR and its raw Ed25519 key; `invalid-argument` for anything else. */
function parseCsr(x509: typeof X509, csrDer: Uint8Array): { csr: X509.Pkcs10CertificateRequest; publicKey: Uint8Array } {
  let csr: X509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrDer);
  } catch {
    fail(ErrorCode.InvalidArgument, 'malformed CSR');
  }
  const publicKey = ed25519RawFromSpki(toU8(csr.publicKey.rawData));
  if (publicKey === null) fail(ErrorCode.InvalidArgument, 'the CSR key must be Ed25519');
  return { csr, publicKey };
}

/**
 * Issues a client certificate from a DER PKCS#10 CSR. Refuses (before signing anything): a CSR
 * whose signature does not verify (`bad-signature`), a key other than Ed25519 or of small order,
 * a CSR subject CN other than `clientId`, and a key already bound to another id
 * (`KeyAlreadyBoundError`). Binds the key to the id in `bindings` on success only.
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
  const { csr, publicKey } = await checkedCsr(x509, csrDer, clientId);
  const owner = opts.bindings.owner(publicKey);
  if (owner !== undefined && owner !== clientId) throw new KeyAlreadyBoundError();

  const now = opts.now ?? Date.now();
  const cert = await issueLeaf(x509, ca, {
    cn: clientId,
    publicKey: csr.publicKey,
    usage: x509.ExtendedKeyUsage.clientAuth,
    names: [{ type: 'url', value: `${CLIENT_URI_PREFIX}${clientId}` }],
    now,
    ttl,
  });
  opts.bindings.bind(publicKey, clientId);
  return issued(cert);
}

/**
 * The client id of a client certificate (DER): the SAN URI `urn:aegis:client:<id>`, which must
 * be the only such URI and equal the subject's only attribute, CN. Synchronous, on Node's
 * X509Certificate, so a TLS handler can call it on `getPeerCertificate().raw`. It does not
 * check the issuer: the TLS stack (or `isIssuedBy`) does.
 */
export function clientIdOf(certificateDer: Uint8Array): string {
  let cert: NodeX509Certificate;
  try {
    cert = new NodeX509Certificate(Buffer.from(certificateDer));
  } catch {
    fail(ErrorCode.InvalidArgument, 'malformed certificate');
  }
  // Node lists SAN entries as "TYPE:value, ..." (values with separators are quoted; client ids
  // cannot contain any, so a quoted entry never names a client).
  const uris = (cert.subjectAltName ?? '')
    .split(', ')
    .filter((n) => n.startsWith(`URI:${CLIENT_URI_PREFIX}`));
  if (uris.length !== 1) fail(ErrorCode.InvalidArgument, 'the certificate names no single client id');
  const id = assertClientId(uris[0]!.slice(`URI:${CLIENT_URI_PREFIX}`.length));
  if (cert.subject !== `CN=${id}`) fail(ErrorCode.InvalidArgument, 'the certificate subject and client id disagree');
  return id;
}

/** The hex serial number of a certificate (DER), lower case as `IssuedCertificate.serial`. */
export function serialOf(certificateDer: Uint8Array): string {
  return new NodeX509Certificate(Buffer.from(certificateDer)).serialNumber.toLowerCase();
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
 * An operator credential: a fresh Ed25519 key (32 random bytes) and a certificate naming
 * `urn:aegis:operator:<name>` (CN = operator:<name>), usable for mTLS to the Admin service only:
 * `clientIdOf` refuses it, so it can never take part in a round.
 */
export async function issueOperatorCertificate(
  ca: CaCertificate,
  opts: { name: string; ttlMs?: number; now?: number },
): Promise<IssuedCertificate & { seed: Uint8Array; privateKeyPem: string }> {
  assertClientId(opts.name);
  const x509 = await loadX509();
  const seed = new Uint8Array(randomBytes(32));
  const { keys } = await ed25519CryptoKeys(seed);
  const cert = await issueLeaf(x509, ca, {
    cn: `operator:${opts.name}`,
    publicKey: keys.publicKey,
    usage: x509.ExtendedKeyUsage.clientAuth,
    names: [{ type: 'url', value: `${OPERATOR_URI_PREFIX}${opts.name}` }],
    now: opts.now ?? Date.now(),
    ttl: opts.ttlMs ?? OPERATOR_CERT_TTL_MS,
  });
  return { ...issued(cert), seed, privateKeyPem: ed25519PrivateKeyPem(seed) };
}

/** The operator name of an operator certificate (DER), or undefined for any other certificate. */
export function operatorOf(certificateDer: Uint8Array): string | undefined {
  try {
    const cert = new NodeX509Certificate(Buffer.from(certificateDer));
    const uris = (cert.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('URI:urn:aegis:'));
    if (uris.length !== 1 || !uris[0]!.startsWith(`URI:${OPERATOR_URI_PREFIX}`)) return undefined;
    const name = uris[0]!.slice(`URI:${OPERATOR_URI_PREFIX}`.length);
    if (!CLIENT_ID_PATTERN.test(name) || cert.subject !== `CN=operator:${name}`) return undefined;
    return name;
  } catch {
    return undefined;
  }
}

/**
 * What a CSR asks for, read before anything is signed: its subject CN (the client id it wants)
 * and its raw Ed25519 public key. Throws `invalid-argument` for a malformed CSR or another key
 * type. The CSR's signature is checked by `issueClientCertificate`.
 */
export async function inspectCsr(csrDer: Uint8Array): Promise<{ clientId: string; publicKey: Uint8Array }> {
  abytes(csrDer, undefined, 'CSR');
  const { csr, publicKey } = parseCsr(await loadX509(), csrDer);
  const cns = csr.subjectName.getField('CN');
  if (cns.length !== 1) fail(ErrorCode.InvalidArgument, 'the CSR subject must be CN=<client id>');
  return { clientId: assertClientId(cns[0]), publicKey };
}

/** The raw Ed25519 public key of a certificate (DER). */
export function certificatePublicKey(certificateDer: Uint8Array): Uint8Array {
  const cert = new NodeX509Certificate(Buffer.from(certificateDer));
  const jwk = cert.publicKey.export({ format: 'jwk' });
  if (jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') fail(ErrorCode.InvalidArgument, 'the certificate key is not Ed25519');
  return new Uint8Array(Buffer.from(jwk.x, 'base64url'));
}

/** What an offline CA request asks for (coordinator/auth/offline-ca.ts). */
export type CertificateKind = 'client' | 'server' | 'operator';
/** Longest lifetime the offline CA signs: 398 days (the CA/B Forum's ceiling for server certificates). */
export const MAX_OFFLINE_CERT_TTL_MS = 398 * 24 * 3600 * 1000;

/** The subject CN a CSR of each kind must carry. */
export function expectedCsrCn(kind: CertificateKind, subject: string, hosts: readonly string[] = []): string {
  if (kind === 'client') return assertClientId(subject);
  if (kind === 'operator') return `operator:${assertClientId(subject)}`;
  const first = hosts[0];
  if (first === undefined) fail(ErrorCode.InvalidArgument, 'a server request needs at least one host');
  return first;
}

/**
 * Checks a DER CSR fully before anything is signed: well-formed, an Ed25519 key that is not of
 * small order, a self-signature that verifies (`bad-signature` otherwise), and a subject that is
 * exactly CN=`cn`. Returns the raw public key.
 */
export async function verifyCsr(csrDer: Uint8Array, cn: string): Promise<Uint8Array> {
  return (await checkedCsr(await loadX509(), csrDer, cn)).publicKey;
}

async function checkedCsr(x509: typeof X509, csrDer: Uint8Array, cn: string): Promise<{ csr: X509.Pkcs10CertificateRequest; publicKey: Uint8Array }> {
  abytes(csrDer, undefined, 'CSR');
  const { csr, publicKey } = parseCsr(x509, csrDer);
  let smallOrder: boolean;
  try {
    smallOrder = ed25519.Point.fromBytes(publicKey).isSmallOrder();
  } catch {
    smallOrder = true;
  }
  if (smallOrder) fail(ErrorCode.InvalidArgument, 'the CSR key is not a valid Ed25519 public key');
  let ok: boolean;
  try {
    ok = await csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) fail(ErrorCode.BadSignature, 'CSR: signature does not verify');
  const cns = csr.subjectName.getField('CN');
  if (csr.subjectName.toJSON().length !== 1 || cns.length !== 1 || cns[0] !== cn) fail(ErrorCode.InvalidArgument, `the CSR subject must be CN=${cn}`);
  return { csr, publicKey };
}

/** A DER CSR with subject CN=`cn` for the Ed25519 key of `seed` (the coordinator's server and operator keys). */
export async function csrForSeed(seed: Uint8Array, cn: string): Promise<Uint8Array> {
  abytes(seed, 32, 'key seed');
  const x509 = await loadX509();
  const { keys } = await ed25519CryptoKeys(seed);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: [{ CN: [cn] }], signingAlgorithm: ED25519, keys });
  return toU8(csr.rawData);
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
 * urn:aegis:client:<id>; operator: CN = operator:<name> and SAN urn:aegis:operator:<name>;
 * server: CN = first host, SAN = hosts, serverAuth). Needs the CA's key.
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
  await verifyCsr(req.csrDer, cn);
  const x509 = await loadX509();
  const csr = new x509.Pkcs10CertificateRequest(req.csrDer);
  const names =
    req.kind === 'client'
      ? [{ type: 'url' as const, value: `${CLIENT_URI_PREFIX}${req.subject}` }]
      : req.kind === 'operator'
        ? [{ type: 'url' as const, value: `${OPERATOR_URI_PREFIX}${req.subject}` }]
        : hostNames(req.hosts ?? []);
  const usage = req.kind === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth;
  const cert = await issueLeaf(x509, signer, { cn, publicKey: csr.publicKey, usage, names, now: opts.now ?? Date.now(), ttl });
  return issued(cert);
}
