/**
 * Checks a client certificate against a pinned CA without parsing it as a whole: the CA's
 * signature over the certificate's TBSCertificate bytes first, then — in bytes the CA has
 * signed — the few fields a peer needs: issuer, validity, subject, key type and subjectAltName.
 *
 * Why not Node's `X509Certificate`: on OpenSSL 3.0 its parse alone costs ~300 µs (the public
 * key's decoding), and a SecAgg+ client checks each new neighbour's certificate in the round
 * (client/agent/peer-directory.ts), k of them per round; the CA's signature check is ~140 µs
 * (P-256) of that. The JavaScript ASN.1 libraries in the dependency tree are slower still.
 *
 * What is read and how (shared/crypto/der.ts, strict DER):
 *   Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }
 * with nothing after it. The signature algorithm must be the CA key's (ecdsa-with-SHA256 for
 * P-256, Ed25519), in both places it appears (as OpenSSL's X509_verify requires), and the
 * signature must verify over the TBSCertificate's encoding with the CA's key. Only then is the
 * TBSCertificate read: its issuer must be the CA's subject byte for byte, its validity two
 * X.509 times; its subject, key and subjectAltName go through the same naming rules the
 * coordinator applies to its callers through Node's parser (shared/keystore/round-key.ts:
 * `clientIdOfNames`, `certificateKeysOfNames`). A certificate that fails any of it is
 * `undefined`: one answer for every cause.
 */
import { verify as verifySignature, X509Certificate, type KeyObject } from 'node:crypto';
import { sameBytes } from '../bytes.js';
import { children, contentOf, encoding, MalformedDerError, readTime, readTlv, type Tlv } from '../crypto/der.js';
import { certificateKeysOfNames, clientIdOfNames, keyTypeOf, type TlsKeyType } from './round-key.js';

/** What a client certificate that passed says. */
export interface CheckedClientCertificate {
  clientId: string;
  roundKey: Uint8Array;
  tlsKeyType: TlsKeyType;
  notBefore: number;
  notAfter: number;
}

const SEQUENCE = 0x30;
const SET = 0x31;
const BIT_STRING = 0x03;
const OCTET_STRING = 0x04;
const OID = 0x06;
const INTEGER = 0x02;
const BOOLEAN = 0x01;
const URI = 0x86; // GeneralName uniformResourceIdentifier: [6] IMPLICIT IA5String
const EXPLICIT_VERSION = 0xa0;
const EXTENSIONS = 0xa3;

/** AlgorithmIdentifiers, DER: ecdsa-with-SHA256 (RFC 5758, no parameters) and Ed25519 (RFC 8410). */
const ECDSA_SHA256_ALGORITHM = Uint8Array.of(0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02);
const ED25519_ALGORITHM = Uint8Array.of(0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70);
/** SubjectPublicKeyInfo algorithms: id-ecPublicKey on prime256v1, and Ed25519. */
const P256_KEY_ALGORITHM = Uint8Array.of(0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07);
/** Object identifiers' content bytes: commonName (2.5.4.3), subjectAltName (2.5.29.17). */
const CN_OID = Uint8Array.of(0x55, 0x04, 0x03);
const SAN_OID = Uint8Array.of(0x55, 0x1d, 0x11);
/** Strings a CN may be written in: UTF8String, PrintableString, IA5String. */
const CN_STRINGS = new Set([0x0c, 0x13, 0x16]);

export class ClientCertificateChecker {
  private readonly caKey: KeyObject;
  private readonly caType: TlsKeyType;
  private readonly caSubject: Uint8Array;
  private readonly algorithm: Uint8Array;

  /** `ca`: the pinned CA's certificate (PEM or DER), P-256 or Ed25519. */
  constructor(ca: string | Uint8Array) {
    const cert = new X509Certificate(typeof ca === 'string' ? ca : Buffer.from(ca));
    const type = keyTypeOf(cert.publicKey);
    if (!type) throw new Error('the CA key is neither ECDSA P-256 nor Ed25519');
    this.caKey = cert.publicKey;
    this.caType = type;
    this.algorithm = type === 'p256' ? ECDSA_SHA256_ALGORITHM : ED25519_ALGORITHM;
    const der = new Uint8Array(cert.raw);
    this.caSubject = encoding(der, tbsFields(der, tbsOf(der)[0]).subject).slice();
  }

  /** The certificate's id, round key and validity if the CA signed it and it names a client; else undefined. */
  check(der: Uint8Array): CheckedClientCertificate | undefined {
    try {
      return this.read(der);
    } catch {
      return undefined;
    }
  }

  private read(der: Uint8Array): CheckedClientCertificate | undefined {
    const [tbs, algorithm, signatureValue] = tbsOf(der);
    if (!sameBytes(encoding(der, algorithm), this.algorithm) || signatureValue.tag !== BIT_STRING) return undefined;
    const bits = contentOf(der, signatureValue);
    if (bits.length < 2 || bits[0] !== 0) return undefined;
    const signed = verifySignature(this.caType === 'p256' ? 'sha256' : null, encoding(der, tbs), this.caKey, bits.subarray(1));
    if (!signed) return undefined;

    // From here on the bytes are the CA's.
    const f = tbsFields(der, tbs);
    if (!sameBytes(encoding(der, f.signature), this.algorithm) || !sameBytes(encoding(der, f.issuer), this.caSubject)) return undefined;
    const validity = children(der, f.validity, SEQUENCE);
    if (validity.length !== 2) return undefined;
    const notBefore = readTime(der, validity[0]!);
    const notAfter = readTime(der, validity[1]!);

    const uris = f.extensions ? subjectAltNameUris(der, f.extensions) : [];
    const clientId = clientIdOfNames(uris, singleCommonName(der, f.subject));
    const { type, rawKey } = publicKeyOf(der, f.spki);
    const { tlsKeyType, roundKey } = certificateKeysOfNames(type, uris ?? [], () => rawKey);
    return { clientId, roundKey, tlsKeyType, notBefore, notAfter };
  }
}

/** The three parts of a Certificate, which must be the whole of `der`. */
function tbsOf(der: Uint8Array): [Tlv, Tlv, Tlv] {
  const cert = readTlv(der, 0);
  if (cert.end !== der.length) throw new MalformedDerError();
  const parts = children(der, cert, SEQUENCE);
  if (parts.length !== 3 || parts[0]!.tag !== SEQUENCE) throw new MalformedDerError();
  return parts as [Tlv, Tlv, Tlv];
}

interface TbsFields {
  signature: Tlv;
  issuer: Tlv;
  validity: Tlv;
  subject: Tlv;
  spki: Tlv;
  extensions?: Tlv;
}

/** TBSCertificate (RFC 5280 4.1): [0] version, serial, signature, issuer, validity, subject, SPKI, [1], [2], [3] extensions. */
function tbsFields(der: Uint8Array, tbs: Tlv): TbsFields {
  const f = children(der, tbs, SEQUENCE);
  let i = f[0]?.tag === EXPLICIT_VERSION ? 1 : 0;
  const at = (tag: number): Tlv => {
    const t = f[i++];
    if (!t || t.tag !== tag) throw new MalformedDerError();
    return t;
  };
  at(INTEGER);
  const fields: TbsFields = { signature: at(SEQUENCE), issuer: at(SEQUENCE), validity: at(SEQUENCE), subject: at(SEQUENCE), spki: at(SEQUENCE) };
  for (; i < f.length; i++) {
    const t = f[i]!;
    if (t.tag === EXTENSIONS && !fields.extensions) fields.extensions = t;
    else if (t.tag !== 0x81 && t.tag !== 0x82 && t.tag !== 0xa1 && t.tag !== 0xa2) throw new MalformedDerError();
  }
  return fields;
}

/** The value of a subject that is exactly one CN (one RDN of one attribute), else null. */
function singleCommonName(der: Uint8Array, subject: Tlv): string | null {
  const rdns = children(der, subject, SEQUENCE);
  if (rdns.length !== 1) return null;
  const atvs = children(der, rdns[0]!, SET);
  if (atvs.length !== 1) return null;
  const [type, value] = children(der, atvs[0]!, SEQUENCE);
  if (!type || !value || type.tag !== OID || !sameBytes(contentOf(der, type), CN_OID) || !CN_STRINGS.has(value.tag)) return null;
  return printable(contentOf(der, value));
}

/** The subjectAltName's URIs (none without one); null if it names anything but URIs. */
function subjectAltNameUris(der: Uint8Array, extensions: Tlv): string[] | null {
  const list = children(der, extensions, EXTENSIONS);
  if (list.length !== 1) throw new MalformedDerError();
  let san: Tlv | undefined;
  for (const ext of children(der, list[0]!, SEQUENCE)) {
    const parts = children(der, ext, SEQUENCE);
    if (parts.length < 2 || parts.length > 3 || parts[0]!.tag !== OID || (parts.length === 3 && parts[1]!.tag !== BOOLEAN)) throw new MalformedDerError();
    const value = parts[parts.length - 1]!;
    if (value.tag !== OCTET_STRING) throw new MalformedDerError();
    if (!sameBytes(contentOf(der, parts[0]!), SAN_OID)) continue;
    if (san) throw new MalformedDerError(); // one subjectAltName (RFC 5280 4.2: an extension appears once)
    san = value;
  }
  if (!san) return [];
  const names = readTlv(der, san.content, san.end);
  if (names.end !== san.end) throw new MalformedDerError();
  const uris: string[] = [];
  for (const n of children(der, names, SEQUENCE)) {
    if (n.tag !== URI) return null;
    const uri = printable(contentOf(der, n));
    if (uri === null) return null;
    uris.push(uri);
  }
  return uris;
}

/** The key's type and raw bytes (the 32 bytes of an Ed25519 key; a P-256 point is not needed). */
function publicKeyOf(der: Uint8Array, spki: Tlv): { type: TlsKeyType | undefined; rawKey: Uint8Array } {
  const [algorithm, key] = children(der, spki, SEQUENCE);
  if (!algorithm || !key || key.tag !== BIT_STRING) throw new MalformedDerError();
  const bits = contentOf(der, key);
  if (bits[0] !== 0) throw new MalformedDerError();
  const alg = encoding(der, algorithm);
  if (sameBytes(alg, ED25519_ALGORITHM) && bits.length === 33) return { type: 'ed25519', rawKey: bits.slice(1) };
  if (sameBytes(alg, P256_KEY_ALGORITHM) && bits.length === 66 && bits[1] === 0x04) return { type: 'p256', rawKey: bits.slice(1) };
  return { type: undefined, rawKey: new Uint8Array(0) };
}

/** Bytes of printable ASCII without spaces or commas as a string (what Aegis names are), else null. */
function printable(bytes: Uint8Array): string | null {
  let s = '';
  for (const b of bytes) {
    if (b < 0x21 || b > 0x7e || b === 0x2c) return null;
    s += String.fromCharCode(b);
  }
  return s;
}
