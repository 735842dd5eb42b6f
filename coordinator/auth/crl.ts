/**
 * Certificate revocation lists (RFC 5280 §5, CRL v2) signed by the coordinator CA with its own
 * algorithm: ecdsa-with-SHA256 for a P-256 CA (RFC 5758 §3.2), Ed25519 for one made before P-256.
 *
 * `signCrl` is the one way a CRL is made: by the embedded CA (Admin `GetCrl`, `aegis clients crl`)
 * and by the offline CA host. Each entry is a certificate serial with its revocation date and an
 * Aegis revocation reason (coordinator/auth/enrollment.ts `REVOCATION_REASONS`), written as the
 * RFC 5280 CRLReason entry extension:
 *
 * | Aegis reason     | CRLReason (RFC 5280 §5.3.1)            |
 * | ---------------- | -------------------------------------- |
 * | `unspecified`    | none (the extension is left out, as §5.3.1 asks for unspecified) |
 * | `key-compromise` | keyCompromise (1)                      |
 * | `lost-device`    | cessationOfOperation (5)               |
 * | `superseded`     | superseded (4)                         |
 * | `retired`        | cessationOfOperation (5)               |
 *
 * A lost device is not known to be compromised, so it is not keyCompromise; an operator who has
 * reason to think its key was read (a device taken, not mislaid) revokes with `key-compromise`.
 * Every CRL carries the CRL number and the authority key identifier extensions (§5.2.1, §5.2.3)
 * and a nextUpdate.
 */
import { webcrypto } from 'node:crypto';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { ED25519, loadX509, type X509 } from '../../shared/keystore/webcrypto-ed25519.js';
import { ECDSA_SHA256 } from '../../shared/keystore/webcrypto-p256.js';
import { requireCaKey, type CaCertificate, type CertificateAuthority } from './ca.js';
import { REVOCATION_REASONS, type RevocationReason } from './enrollment.js';

/** The CRLReason names (RFC 5280) an Aegis reason is written as; undefined: no reasonCode extension. */
export const CRL_REASON_OF: Readonly<Record<RevocationReason, string | undefined>> = {
  unspecified: undefined,
  'key-compromise': 'keyCompromise',
  'lost-device': 'cessationOfOperation',
  superseded: 'superseded',
  retired: 'cessationOfOperation',
};

/** id-ce-cRLNumber. */
const CRL_NUMBER_OID = '2.5.29.20';
/** At most this many entries in one CRL. */
const MAX_ENTRIES = 1_000_000;

export interface CrlEntryInput {
  /** The certificate serial, hex (as `serialOf` / the registry keep it). */
  serial: string;
  /** Revocation time, milliseconds since the Unix epoch. */
  revokedAt: number;
  /** An Aegis revocation reason (`REVOCATION_REASONS`). */
  reason: string;
}

/** A serial as the hex of a positive DER INTEGER (even length, a leading 00 when the top bit is set). */
function serialHex(serial: string): string {
  let s = typeof serial === 'string' ? serial.toLowerCase().replace(/^0+(?=.)/, '') : '';
  if (!/^[0-9a-f]{1,40}$/.test(s)) fail(ErrorCode.InvalidArgument, 'a CRL entry serial must be hex, at most 20 bytes');
  if (s.length % 2 === 1) s = `0${s}`;
  if (parseInt(s[0]!, 16) >= 8) s = `00${s}`;
  return s;
}

// A minimal DER writer: the CRL is built here rather than by @peculiar/x509's generator, which
// writes an empty crlEntryExtensions SEQUENCE for an entry without a reason (RFC 5280 needs at
// least one extension when the field is present) and labels its PEM "CRL" (OpenSSL reads "X509 CRL").
function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array {
  const body = Buffer.concat(parts);
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  if (n >= 0x1000000) fail(ErrorCode.TooLarge, 'the CRL is too large');
  return new Uint8Array(Buffer.concat([Buffer.from([tag, ...len]), body]));
}
const seq = (...parts: Uint8Array[]): Uint8Array => tlv(0x30, ...parts);
const hexInteger = (hex: string): Uint8Array => tlv(0x02, Buffer.from(hex, 'hex'));
const intHex = (n: number): string => {
  let hex = n.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  return parseInt(hex[0]!, 16) >= 8 ? `00${hex}` : hex;
};
/** UTCTime through 2049, GeneralizedTime after (RFC 5280 §5.1.2.4), whole seconds. */
function derTime(ms: number): Uint8Array {
  const iso = new Date(Math.floor(ms / 1000) * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  const year = Number(iso.slice(0, 4));
  if (year < 1950 || year > 9999) fail(ErrorCode.InvalidArgument, 'CRL time out of range');
  return year < 2050 ? tlv(0x17, Buffer.from(digits.slice(2), 'ascii')) : tlv(0x18, Buffer.from(digits, 'ascii'));
}
/** AlgorithmIdentifier id-Ed25519 (RFC 8410: no parameters). */
const ED25519_ALG = new Uint8Array([0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]);
/** AlgorithmIdentifier ecdsa-with-SHA256, 1.2.840.10045.4.3.2 (RFC 5758 §3.2: no parameters). */
const ECDSA_SHA256_ALG = new Uint8Array([0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]);
/** A positive DER INTEGER of big-endian magnitude `b`. */
function derUnsigned(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, v[0]! >= 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}
/** WebCrypto's ECDSA signature (r || s, IEEE P1363) as the X.509 Ecdsa-Sig-Value SEQUENCE { r, s } (RFC 3279 §2.2.3). */
const ecdsaDer = (p1363: Uint8Array): Uint8Array => seq(derUnsigned(p1363.subarray(0, p1363.length / 2)), derUnsigned(p1363.subarray(p1363.length / 2)));
/** Extension id-ce-cRLReasons (2.5.29.21), non-critical, ENUMERATED `code`. */
const reasonExtension = (code: number): Uint8Array => seq(new Uint8Array([0x06, 0x03, 0x55, 0x1d, 0x15]), tlv(0x04, tlv(0x0a, Buffer.from([code]))));
/** Extension id-ce-cRLNumber (2.5.29.20), non-critical. */
const crlNumberExtension = (n: number): Uint8Array => seq(new Uint8Array([0x06, 0x03, 0x55, 0x1d, 0x14]), tlv(0x04, hexInteger(intHex(n))));

const isTime = (t: unknown): t is number => typeof t === 'number' && Number.isSafeInteger(t) && t >= 0;

/**
 * A CRL v2 signed by `ca` over `entries`, valid from `thisUpdate` to `nextUpdate` (ms since the
 * epoch; written in whole seconds), numbered `crlNumber` (issue them increasing). One entry per
 * serial (a repeated serial keeps its first entry). Refuses (`invalid-argument`) a malformed
 * serial, an unknown reason, times out of order or a negative number; `failed-precondition` for
 * a CA without its key (an offline CA signs on its own host).
 */
export async function signCrl(
  ca: CertificateAuthority,
  entries: { serial: string; revokedAt: number; reason: string }[],
  opts: { thisUpdate: number; nextUpdate: number; crlNumber: number },
): Promise<{ der: Uint8Array; pem: string }> {
  const signer = requireCaKey(ca);
  if (!isTime(opts.thisUpdate) || !isTime(opts.nextUpdate) || opts.nextUpdate <= opts.thisUpdate) {
    fail(ErrorCode.InvalidArgument, 'a CRL needs thisUpdate < nextUpdate (ms since the epoch)');
  }
  if (!Number.isSafeInteger(opts.crlNumber) || opts.crlNumber < 0) fail(ErrorCode.InvalidArgument, 'the CRL number must be a non-negative integer');
  if (!Array.isArray(entries) || entries.length > MAX_ENTRIES) fail(ErrorCode.InvalidArgument, `a CRL takes at most ${MAX_ENTRIES} entries`);
  const x509 = await loadX509();
  const seen = new Set<string>();
  const revoked: Uint8Array[] = [];
  for (const e of entries) {
    const serial = serialHex(e?.serial);
    if (!isTime(e.revokedAt)) fail(ErrorCode.InvalidArgument, 'a CRL entry needs its revocation time (ms since the epoch)');
    if (!(REVOCATION_REASONS as readonly string[]).includes(e.reason)) {
      fail(ErrorCode.InvalidArgument, `unknown revocation reason '${String(e.reason).slice(0, 40)}'; valid: ${REVOCATION_REASONS.join(', ')}`);
    }
    if (seen.has(serial)) continue;
    seen.add(serial);
    const name = CRL_REASON_OF[e.reason as RevocationReason];
    const parts = [hexInteger(serial), derTime(e.revokedAt)];
    if (name !== undefined) parts.push(seq(reasonExtension(x509.X509CrlReason[name as keyof typeof x509.X509CrlReason])));
    revoked.push(seq(...parts));
  }
  const aki = await x509.AuthorityKeyIdentifierExtension.create(signer.keys.publicKey);
  const ecdsa = signer.keyType === 'p256';
  const alg = ecdsa ? ECDSA_SHA256_ALG : ED25519_ALG;
  const tbs = seq(
    hexInteger('01'), // v2
    alg,
    new Uint8Array(signer.certificate.subjectName.toArrayBuffer()),
    derTime(opts.thisUpdate),
    derTime(opts.nextUpdate),
    ...(revoked.length > 0 ? [seq(...revoked)] : []),
    tlv(0xa0, seq(new Uint8Array(aki.rawData), crlNumberExtension(opts.crlNumber))),
  );
  const key = signer.keys.privateKey as unknown as webcrypto.CryptoKey;
  const signature = ecdsa ? ecdsaDer(new Uint8Array(await webcrypto.subtle.sign(ECDSA_SHA256, key, tbs))) : new Uint8Array(await webcrypto.subtle.sign(ED25519, key, tbs));
  const der = seq(tbs, alg, tlv(0x03, new Uint8Array([0]), signature));
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return { der, pem: `-----BEGIN X509 CRL-----\n${b64}\n-----END X509 CRL-----\n` };
}

export interface ParsedCrlEntry {
  /** Hex, lower case, without leading zeros (as the registry keeps serials). */
  serial: string;
  revokedAt: number;
  /** The RFC 5280 CRLReason name, or undefined when the entry has no reasonCode. */
  crlReason: string | undefined;
}

export interface ParsedCrl {
  issuer: string;
  thisUpdate: number;
  nextUpdate: number | undefined;
  crlNumber: number | undefined;
  entries: ParsedCrlEntry[];
}

async function load(pemOrDer: string | Uint8Array): Promise<X509.X509Crl> {
  const x509 = await loadX509();
  try {
    return new x509.X509Crl(typeof pemOrDer === 'string' ? pemOrDer : new Uint8Array(pemOrDer));
  } catch {
    throw new AegisError(ErrorCode.Malformed, 'not a PEM or DER X.509 CRL');
  }
}

/** Reads a CRL (PEM or DER) without checking its signature (see `verifyCrl`). */
export async function parseCrl(pemOrDer: string | Uint8Array): Promise<ParsedCrl> {
  const x509 = await loadX509();
  const crl = await load(pemOrDer);
  const numberExt = crl.getExtension(CRL_NUMBER_OID);
  let crlNumber: number | undefined;
  if (numberExt) {
    const v = new Uint8Array(numberExt.value);
    if (v[0] === 0x02 && v[1] === v.length - 2) crlNumber = Number(BigInt(`0x${Buffer.from(v.subarray(2)).toString('hex') || '0'}`));
  }
  return {
    issuer: crl.issuer,
    thisUpdate: crl.thisUpdate.getTime(),
    nextUpdate: crl.nextUpdate?.getTime(),
    crlNumber,
    entries: crl.entries.map((e) => ({
      serial: e.serialNumber.toLowerCase().replace(/^0+(?=.)/, ''),
      revokedAt: e.revocationDate.getTime(),
      crlReason: e.reason === undefined ? undefined : x509.X509CrlReason[e.reason],
    })),
  };
}

/** True when the CRL's signature verifies under the CA certificate's key and it names that CA as issuer. */
export async function verifyCrl(pemOrDer: string | Uint8Array, ca: CaCertificate): Promise<boolean> {
  const crl = await load(pemOrDer);
  if (crl.issuer !== ca.certificate.subject) return false;
  try {
    return await crl.verify({ publicKey: ca.certificate });
  } catch {
    return false;
  }
}
