/**
 * The identity keys of a round's members, as the client learns them from the certificates the
 * coordinator relays with the advertised keys. A certificate counts only if the pinned CA
 * signed it, it is valid now, and it names the entry's client id; entries that fail are left
 * out, so the state machine sees an unknown id (and aborts if it is a neighbour).
 */
import { X509Certificate } from 'node:crypto';

export class PeerDirectory {
  private readonly keys = new Map<string, Uint8Array>();
  private readonly ca: X509Certificate;

  constructor(caPem: string) {
    this.ca = new X509Certificate(caPem);
  }

  /** The Ed25519 identity key of `clientId`, if a checked certificate gave one. */
  keyOf(clientId: string): Uint8Array | undefined {
    return this.keys.get(clientId);
  }

  /** Forgets every key (a new round names its members anew). */
  clear(): void {
    this.keys.clear();
  }

  /** Learns the identity keys of the entries whose certificates pass the checks. */
  learn(entries: readonly { clientId: string; certificate?: Uint8Array }[]): void {
    const now = Date.now();
    for (const e of entries) {
      if (!e.certificate || e.certificate.length === 0) continue;
      try {
        const cert = new X509Certificate(Buffer.from(e.certificate));
        if (!cert.checkIssued(this.ca) || !cert.verify(this.ca.publicKey)) continue;
        if (!(Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo))) continue;
        const uri = `URI:urn:aegis:client:${e.clientId}`;
        if (cert.subjectAltName !== uri || cert.subject !== `CN=${e.clientId}`) continue;
        const jwk = cert.publicKey.export({ format: 'jwk' });
        if (jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') continue;
        this.keys.set(e.clientId, new Uint8Array(Buffer.from(jwk.x, 'base64url')));
      } catch {
        continue;
      }
    }
  }
}
