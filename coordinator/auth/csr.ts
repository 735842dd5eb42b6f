/**
 * Certificate signing requests (PKCS#10, RFC 2986) as the coordinator CA reads them, before
 * anything is signed: the key (ECDSA P-256, or Ed25519 for a client enrolled before P-256), the
 * self-signature, the subject, and for a client the Ed25519 round key with its proof of
 * possession (shared/keystore/round-key.ts). coordinator/auth/ca.ts issues from what is
 * checked here (and re-exports what callers use).
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { abytes } from '../../shared/bytes.js';
import { ErrorCode, fail } from '../../shared/errors.js';
import { CLIENT_ID_PATTERN } from '../../shared/protocol/session.js';
import { ED25519, ed25519CryptoKeys, loadX509, type X509 } from '../../shared/keystore/webcrypto-ed25519.js';
import { ECDSA_SHA256, p256CryptoKeys, P256Purpose } from '../../shared/keystore/webcrypto-p256.js';
import {
  keyTypeOf,
  normalizedSpki,
  rawPublicKey,
  ROUND_KEY_PROOF_URI_PREFIX,
  ROUND_KEY_URI_PREFIX,
  roundKeyOfUri,
  roundKeyProofOfUri,
  verifyRoundKeyProof,
  type TlsKeyType,
} from '../../shared/keystore/round-key.js';

export { CLIENT_ID_PATTERN };

export function assertClientId(clientId: unknown): string {
  if (typeof clientId !== 'string' || !CLIENT_ID_PATTERN.test(clientId)) {
    fail(ErrorCode.InvalidArgument, 'client id must be 1..128 characters of [A-Za-z0-9._:@-]');
  }
  return clientId;
}

/** The signing algorithm of a key type, as @peculiar/x509 takes it. */
export const signingAlgorithmOf = (type: TlsKeyType): typeof ED25519 => (type === 'p256' ? (ECDSA_SHA256 as unknown as typeof ED25519) : ED25519);

const toU8 = (b: ArrayBuffer | Uint8Array): Uint8Array => (b instanceof Uint8Array ? b : new Uint8Array(b));

/** The type and raw key (`rawPublicKey`) of a P-256 or Ed25519 SubjectPublicKeyInfo, null for any other key. */
export function publicKeyOfSpki(spki: Uint8Array): { type: TlsKeyType; raw: Uint8Array } | null {
  try {
    const { key } = normalizedSpki(spki);
    const type = keyTypeOf(key);
    return type === undefined ? null : { type, raw: rawPublicKey(key) };
  } catch {
    return null;
  }
}

/** A parsed CSR: its key's type, raw bytes and (normalized) SubjectPublicKeyInfo. */
export interface ParsedCsr {
  csr: X509.Pkcs10CertificateRequest;
  keyType: TlsKeyType;
  /** `rawPublicKey`: 32 Ed25519 bytes or the 65-byte P-256 point. */
  key: Uint8Array;
  spki: Uint8Array;
}

/** A DER CSR with a P-256 or Ed25519 key; `invalid-argument` for anything else. */
export function parseCsr(x509: typeof X509, csrDer: Uint8Array): ParsedCsr {
  let csr: X509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrDer);
    // @peculiar/x509 decodes the subject, the key, the attributes and the extensions on first
    // use: decoded here, so a malformed part is `invalid-argument` now rather than a library
    // error (an internal error) wherever it is read later.
    csr.subjectName.toJSON();
    void csr.publicKey.rawData;
    void csr.attributes;
    for (const e of csr.extensions) void e.value;
    csr.getExtensions('2.5.29.17');
  } catch {
    fail(ErrorCode.InvalidArgument, 'malformed CSR');
  }
  const spki = toU8(csr.publicKey.rawData);
  const key = publicKeyOfSpki(spki);
  if (key === null) fail(ErrorCode.InvalidArgument, 'the CSR key must be ECDSA P-256 or Ed25519');
  return { csr, keyType: key.type, key: key.raw, spki: normalizedSpki(spki).spki };
}

/** The URIs a CSR asks for in its subjectAltName extension request. */
export function csrSanUris(x509: typeof X509, csr: X509.Pkcs10CertificateRequest): { uris: string[]; others: number } {
  const exts = csr.getExtensions('2.5.29.17');
  if (exts.length === 0) return { uris: [], others: 0 };
  if (exts.length > 1) fail(ErrorCode.InvalidArgument, 'the CSR asks for more than one subjectAltName');
  let names: { type: string; value: string }[];
  try {
    names = new x509.SubjectAlternativeNameExtension(exts[0]!.rawData).names.toJSON();
  } catch {
    fail(ErrorCode.InvalidArgument, 'malformed subjectAltName in the CSR');
  }
  const uris = names.filter((n) => n.type === 'url').map((n) => n.value);
  return { uris, others: names.length - uris.length };
}

/**
 * The round key of a client CSR (before anything is signed). An Ed25519 CSR (a client enrolled
 * before P-256) is its own round key and asks for no names. A P-256 CSR must ask for exactly two
 * SAN URIs, the round key and the round key's signature binding this CSR's key to `clientId`
 * (shared/keystore/round-key.ts): `bad-signature` when that signature does not verify.
 */
export function csrRoundKey(x509: typeof X509, p: ParsedCsr, clientId: string): Uint8Array {
  const { uris, others } = csrSanUris(x509, p.csr);
  if (p.keyType === 'ed25519') {
    if (uris.length > 0 || others > 0) fail(ErrorCode.InvalidArgument, 'an Ed25519 CSR is its own round key and asks for no names');
    return p.key;
  }
  const keys = uris.filter((u) => u.startsWith(ROUND_KEY_URI_PREFIX));
  const proofs = uris.filter((u) => u.startsWith(ROUND_KEY_PROOF_URI_PREFIX));
  const roundKey = keys.length === 1 ? roundKeyOfUri(keys[0]!) : undefined;
  const proof = proofs.length === 1 ? roundKeyProofOfUri(proofs[0]!) : undefined;
  if (roundKey === undefined || proof === undefined || uris.length !== 2 || others !== 0) {
    fail(ErrorCode.InvalidArgument, `a P-256 client CSR must ask for exactly two names: its round key (${ROUND_KEY_URI_PREFIX}<base64url>) and the round key's proof (${ROUND_KEY_PROOF_URI_PREFIX}<base64url>)`);
  }
  if (!verifyRoundKeyProof(roundKey, clientId, p.spki, proof)) fail(ErrorCode.BadSignature, 'CSR: the round-key proof does not verify');
  return roundKey;
}

/**
 * What a client CSR asks for, read before anything is signed: its subject CN (the client id it
 * wants) and its Ed25519 ROUND key (the CSR's key for an Ed25519 CSR; the named round key,
 * whose proof is checked here, for a P-256 one). Throws `invalid-argument` for a malformed CSR
 * or another key type, `bad-signature` for a round-key proof that does not verify. The CSR's
 * own signature is checked by `issueClientCertificate`.
 */
export async function inspectCsr(csrDer: Uint8Array): Promise<{ clientId: string; publicKey: Uint8Array }> {
  abytes(csrDer, undefined, 'CSR');
  const x509 = await loadX509();
  const p = parseCsr(x509, csrDer);
  const cns = p.csr.subjectName.getField('CN');
  if (cns.length !== 1) fail(ErrorCode.InvalidArgument, 'the CSR subject must be CN=<client id>');
  const clientId = assertClientId(cns[0]);
  return { clientId, publicKey: csrRoundKey(x509, p, clientId) };
}

/** What an offline CA request asks for (coordinator/auth/offline-ca.ts). */
export type CertificateKind = 'client' | 'server' | 'operator';
/** The subject CN a CSR of each kind must carry. */
export function expectedCsrCn(kind: CertificateKind, subject: string, hosts: readonly string[] = []): string {
  if (kind === 'client') return assertClientId(subject);
  if (kind === 'operator') return `operator:${assertClientId(subject)}`;
  const first = hosts[0];
  if (first === undefined) fail(ErrorCode.InvalidArgument, 'a server request needs at least one host');
  return first;
}

/** What `verifyCsr` found in a CSR. */
export interface VerifiedCsr {
  keyType: TlsKeyType;
  /** The raw key the certificate will certify (`certificatePublicKey`). */
  publicKey: Uint8Array;
  /** Its SubjectPublicKeyInfo (DER, normalized: `certificateSpki` of the certificate equals it). */
  spki: Uint8Array;
  /** Client requests: the Ed25519 round key (the CSR's own key for an Ed25519 CSR). */
  roundKey?: Uint8Array;
}

/**
 * Checks a DER CSR of `kind` fully before anything is signed: well-formed, a P-256 or Ed25519
 * key (an Ed25519 key not of small order), a self-signature that verifies (`bad-signature`
 * otherwise), a subject that is exactly CN=`cn`, and for a client CSR its round key and proof
 * (`inspectCsr`). Server and operator CSRs ask for no names (the CA writes them).
 */
export async function verifyCsr(csrDer: Uint8Array, kind: CertificateKind, cn: string): Promise<VerifiedCsr> {
  const x509 = await loadX509();
  const p = await checkedCsr(x509, csrDer, cn);
  const out: VerifiedCsr = { keyType: p.keyType, publicKey: p.key, spki: p.spki };
  if (kind === 'client') {
    const roundKey = csrRoundKey(x509, p, cn);
    assertNotSmallOrder(roundKey);
    return { ...out, roundKey };
  }
  const san = csrSanUris(x509, p.csr);
  if (san.uris.length > 0 || san.others > 0) fail(ErrorCode.InvalidArgument, `a ${kind} CSR asks for no names (the CA writes them)`);
  return out;
}

export function assertNotSmallOrder(ed25519Key: Uint8Array): void {
  let smallOrder: boolean;
  try {
    smallOrder = ed25519.Point.fromBytes(ed25519Key).isSmallOrder();
  } catch {
    smallOrder = true;
  }
  if (smallOrder) fail(ErrorCode.InvalidArgument, 'the CSR key is not a valid Ed25519 public key');
}

export async function checkedCsr(x509: typeof X509, csrDer: Uint8Array, cn: string): Promise<ParsedCsr> {
  abytes(csrDer, undefined, 'CSR');
  const p = parseCsr(x509, csrDer);
  if (p.keyType === 'ed25519') assertNotSmallOrder(p.key);
  let ok: boolean;
  try {
    ok = await p.csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) fail(ErrorCode.BadSignature, 'CSR: signature does not verify');
  const cns = p.csr.subjectName.getField('CN');
  if (p.csr.subjectName.toJSON().length !== 1 || cns.length !== 1 || cns[0] !== cn) fail(ErrorCode.InvalidArgument, `the CSR subject must be CN=${cn}`);
  return p;
}

/**
 * A DER CSR with subject CN=`cn` for the key of `seed`: Ed25519 (`'ed25519'`, the RFC 8032 seed:
 * a client or operator key from before P-256), or the P-256 key derived from the seed for
 * `purpose` (shared/keystore/webcrypto-p256.ts: `P256Purpose.Server` for the coordinator's TLS
 * server key, `P256Purpose.Operator` for an operator's key).
 */
export async function csrForSeed(seed: Uint8Array, cn: string, key: 'ed25519' | P256Purpose = 'ed25519'): Promise<Uint8Array> {
  abytes(seed, 32, 'key seed');
  const x509 = await loadX509();
  const keyType: TlsKeyType = key === 'ed25519' ? 'ed25519' : 'p256';
  const { keys } = key === 'ed25519' ? await ed25519CryptoKeys(seed) : await p256CryptoKeys(seed, key);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: [{ CN: [cn] }], signingAlgorithm: signingAlgorithmOf(keyType), keys });
  return toU8(csr.rawData);
}
