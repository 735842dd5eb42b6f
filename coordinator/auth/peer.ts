/**
 * The per-call identity check the transport runs after the TLS 1.3 handshake (which already
 * verified the chain to the coordinator CA and the validity period): the client id the
 * certificate names, refused when that client or that certificate's serial is revoked — so a
 * revoked client is refused on its next call even with an unexpired certificate.
 */
import { clientIdOf, serialOf } from './ca.js';
import type { Revocations } from './enrollment.js';
import { AuthError } from './tokens.js';

export interface Peer {
  clientId: string;
  /** Hex serial number of the presented certificate. */
  serial: string;
}

/** The caller's identity from its verified TLS certificate (DER); throws `AuthError`. */
export function authorizePeer(certificateDer: Uint8Array | undefined, revocations: Revocations): Peer {
  if (!(certificateDer instanceof Uint8Array) || certificateDer.length === 0) throw new AuthError('no-identity', 'peer certificate');
  let peer: Peer;
  try {
    peer = { clientId: clientIdOf(certificateDer), serial: serialOf(certificateDer) };
  } catch {
    throw new AuthError('no-identity', 'peer certificate');
  }
  if (revocations.isRevoked(peer)) throw new AuthError('revoked', 'peer certificate');
  return peer;
}
