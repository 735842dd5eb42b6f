/**
 * The per-call identity check the transport runs after the TLS 1.3 handshake (which already
 * verified the chain to the coordinator CA and the validity period): the client id the
 * certificate names, refused when that client or that certificate's serial is revoked — so a
 * revoked client is refused on its next call even with an unexpired certificate.
 *
 * What a certificate names is read once per certificate (`certificateFacts`), not on every call:
 * parsing one costs OpenSSL 3 about as much as a signature, and every round call checks its
 * caller's certificate twice (at the headers, and in the handler). The facts are a function of
 * the certificate's bytes alone; revocation and expiry are checked against them on every call.
 */
import { clientIdOf, operatorOf, serialOf } from './ca.js';
import { X509Certificate } from 'node:crypto';
import type { Revocations } from './enrollment.js';
import { AuthError } from './tokens.js';

export interface Peer {
  clientId: string;
  /** Hex serial number of the presented certificate. */
  serial: string;
}

/** What a certificate says about its holder. */
export interface CertificateFacts {
  /** The client it names (undefined for an operator's or any other certificate). */
  clientId: string | undefined;
  /** The operator it names (undefined for a client's or any other certificate). */
  operator: string | undefined;
  /** Hex serial, lower case (as `serialOf` gives it). */
  serial: string;
  /** Its notAfter, ms since the epoch. */
  notAfter: number;
}

/** Certificates remembered: every enrolled client's and operator's of a large deployment. */
export const CERTIFICATE_FACTS_MAX = 10_000;
const remembered = new Map<string, CertificateFacts | null>();

/** The facts of a certificate (DER), read once per distinct certificate; undefined when it cannot be parsed. */
export function certificateFacts(der: Uint8Array): CertificateFacts | undefined {
  const key = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  const hit = remembered.get(key);
  if (hit !== undefined) return hit ?? undefined;
  let facts: CertificateFacts | null;
  try {
    const cert = new X509Certificate(Buffer.from(der));
    const operator = operatorOf(cert);
    let clientId: string | undefined;
    if (operator === undefined) {
      try {
        clientId = clientIdOf(cert);
      } catch {
        clientId = undefined;
      }
    }
    facts = { clientId, operator, serial: serialOf(cert), notAfter: Date.parse(cert.validTo) };
  } catch {
    facts = null;
  }
  if (remembered.size >= CERTIFICATE_FACTS_MAX) remembered.delete(remembered.keys().next().value as string);
  remembered.set(key, facts);
  return facts ?? undefined;
}

/** The caller's identity from its verified TLS certificate (DER); throws `AuthError`. */
export function authorizePeer(certificateDer: Uint8Array | undefined, revocations: Revocations): Peer {
  if (!(certificateDer instanceof Uint8Array) || certificateDer.length === 0) throw new AuthError('no-identity', 'peer certificate');
  const facts = certificateFacts(certificateDer);
  if (!facts || facts.clientId === undefined) throw new AuthError('no-identity', 'peer certificate');
  const peer: Peer = { clientId: facts.clientId, serial: facts.serial };
  if (revocations.isRevoked(peer)) throw new AuthError('revoked', 'peer certificate');
  return peer;
}
