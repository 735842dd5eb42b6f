/**
 * gRPC credentials that carry the TLS policy of shared/net/tls-policy.ts. grpc-js's own
 * `createSsl` helpers take no TLS version or cipher options (they read one process-wide environment
 * variable), so Aegis builds its secure contexts itself:
 * - `channelCredentials`: a channel from a secure context with the policy (grpc-js applies nothing
 *   of its own on top of a context given this way);
 * - `PolicyServerCredentials`: server credentials whose options carry the policy both at the
 *   server's construction and in every later secure context (`update`), e.g. a new CRL: a new
 *   context applies to the handshakes that follow, connections already open keep theirs.
 */
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { TLS_CLIENT_POLICY, TLS_SERVER_POLICY } from '../net/tls-policy.js';

/** Channel credentials pinning `caPem`, with a client certificate when `keyPem`/`certificatePem` are given. */
export function channelCredentials(caPem: string | Buffer, identity?: { keyPem: string | Buffer; certificatePem: string | Buffer }): grpc.ChannelCredentials {
  const context = createSecureContext({
    ...TLS_CLIENT_POLICY,
    ca: Buffer.from(caPem),
    ...(identity ? { key: Buffer.from(identity.keyPem), cert: Buffer.from(identity.certificatePem) } : {}),
  });
  return grpc.credentials.createFromSecureContext(context);
}

export interface ServerTlsMaterial {
  /** The server's key and certificate chain (PEM). */
  keyPem: string | Buffer;
  certificatePem: string | Buffer;
  /** Client certificates must chain to this CA (PEM); none: the server asks for no client certificate. */
  clientCaPem?: string | Buffer;
  /** A CRL (PEM) checked during the handshake against each client certificate. */
  crlPem?: string | Buffer;
}

/** Server credentials with the Aegis TLS policy; `update` swaps the material for later handshakes. */
export class PolicyServerCredentials extends grpc.ServerCredentials {
  private readonly requireClientCertificate: boolean;

  constructor(material: ServerTlsMaterial) {
    const requireClientCertificate = material.clientCaPem !== undefined;
    super({ ...TLS_SERVER_POLICY, requestCert: requireClientCertificate, rejectUnauthorized: requireClientCertificate }, PolicyServerCredentials.contextOptions(material));
    this.requireClientCertificate = requireClientCertificate;
  }

  /** New key, certificate, client CA or CRL for the handshakes that follow. */
  update(material: ServerTlsMaterial): void {
    if ((material.clientCaPem !== undefined) !== this.requireClientCertificate) throw new Error('a listener cannot switch client certificates on or off');
    this.updateSecureContextOptions(PolicyServerCredentials.contextOptions(material));
  }

  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }

  private static contextOptions(m: ServerTlsMaterial): SecureContextOptions {
    return {
      ...TLS_SERVER_POLICY,
      key: Buffer.from(m.keyPem),
      cert: Buffer.from(m.certificatePem),
      ...(m.clientCaPem !== undefined ? { ca: Buffer.from(m.clientCaPem) } : {}),
      ...(m.crlPem !== undefined ? { crl: Buffer.from(m.crlPem) } : {}),
    };
  }
}
