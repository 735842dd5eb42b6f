/**
 * Per-call authorization on the main (mTLS) listener: who is calling, from the verified peer
 * certificate, checked again on every call (a revoked client or serial is refused on its next
 * call even with an unexpired certificate, and a long-lived connection does not outlive its
 * certificate). Round calls also need a single-use token issued to the same identity; Admin
 * calls need an operator certificate, checked the same way on every call: its serial not revoked
 * (operators share the client registry's revocation list) and not past its expiry by the
 * coordinator's clock — a connection opened before either does not keep it working.
 */
import type * as grpc from '@grpc/grpc-js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { authorizePeer, certificateFacts } from '../auth/peer.js';
import { AuthError, type TokenVerifier } from '../auth/tokens.js';
import type { ClientRegistry } from '../clients/client-registry.js';
import type { ClientRecord } from '../clients/registry.js';

/** What grpc-js (>= 1.12) exposes of a call's TLS session. */
interface AuthContextLike {
  sslPeerCertificate?: { raw?: Buffer };
}

/** A call whose TLS session can be inspected. */
export type AuthenticatedCall = { getAuthContext?: () => AuthContextLike | null; metadata?: grpc.Metadata };

/**
 * The certificate admission (admission.ts) read for a call, by the call's metadata: grpc-js
 * builds one Metadata object per call from its headers and hands that same object on to the
 * handler, so the handler need not ask the TLS socket again (grpc-js builds Node's whole
 * peer-certificate object at each ask). A WeakMap: an entry lives as long as its call's metadata.
 */
const admitted = new WeakMap<grpc.Metadata, Uint8Array>();

/** Notes the certificate admission read for the call whose headers are `metadata`. */
export function noteAdmittedCertificate(metadata: grpc.Metadata, der: Uint8Array): void {
  admitted.set(metadata, der);
}

/** The raw DER of the caller's verified certificate, if any (the one admission read, when it did). */
export function peerCertificate(call: AuthenticatedCall): Uint8Array | undefined {
  const noted = call.metadata === undefined ? undefined : admitted.get(call.metadata);
  if (noted !== undefined) return noted;
  const raw = call.getAuthContext?.()?.sslPeerCertificate?.raw;
  return raw && raw.length > 0 ? new Uint8Array(raw) : undefined;
}

function bearer(metadata: grpc.Metadata): string | undefined {
  const [v] = metadata.get('authorization');
  if (typeof v !== 'string' || !v.startsWith('Bearer ')) return undefined;
  return v.slice(7);
}

export class CallerAuthorization {
  constructor(
    private readonly clients: ClientRegistry,
    private readonly verifier: TokenVerifier,
    private readonly clock: () => number,
  ) {}

  /** The calling client (verified certificate, not revoked); throws `unauthenticated`. Notes it as seen. */
  client(call: AuthenticatedCall): ClientRecord {
    const der = peerCertificate(call);
    const { clientId } = authorizePeer(der, this.clients.registry.revocations);
    // The handshake checked the validity period; a long-lived connection must not outlive it.
    if (certificateFacts(der!)!.notAfter <= this.clock()) throw new AuthError('expired', 'peer certificate');
    const rec = this.clients.get(clientId);
    if (!rec) throw new AuthError('no-identity', 'peer certificate');
    this.clients.markSeen(clientId);
    return rec;
  }

  /** The client of a round call: certificate, then its single-use token. */
  async roundClient(call: AuthenticatedCall & { metadata: grpc.Metadata }): Promise<ClientRecord> {
    const rec = this.client(call);
    const token = bearer(call.metadata);
    if (token === undefined) throw new AuthError('malformed', 'token');
    await this.verifier.verify(token, { clientId: rec.clientId });
    return rec;
  }

  /**
   * The calling operator's name; `permission-denied` for a client certificate, `unauthenticated`
   * (`revoked`, `expired`) for an operator certificate revoked or past its expiry.
   */
  operator(call: AuthenticatedCall): string {
    const der = peerCertificate(call);
    if (!der) throw new AuthError('no-identity', 'peer certificate');
    const facts = certificateFacts(der);
    const name = facts?.operator;
    if (facts === undefined || name === undefined) throw new AegisError(ErrorCode.PermissionDenied, 'this call needs an operator certificate');
    if (this.clients.isRevoked({ serial: facts.serial })) throw new AuthError('revoked', 'operator certificate');
    if (facts.notAfter <= this.clock()) throw new AuthError('expired', 'operator certificate');
    return name;
  }
}
