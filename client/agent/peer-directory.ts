/**
 * The identity (round) keys of a round's members, as the client learns them from the
 * certificates the coordinator relays with the advertised keys. A certificate counts only if the
 * pinned CA signed it, it is valid now, and it names the entry's client id (and nothing else but
 * its round key); entries that fail are left out, so the state machine sees an unknown id (and
 * aborts if it is a neighbour). The round key is the certificate's `urn:aegis:round-key:` URI
 * for a P-256 certificate, the certificate's own key for an Ed25519 one from before P-256
 * (shared/keystore/round-key.ts).
 */
import { X509Certificate } from 'node:crypto';
import { certificateKeys, ROUND_KEY_URI_PREFIX, sanUris } from '../../shared/keystore/round-key.js';

export class PeerDirectory {
  private readonly keys = new Map<string, Uint8Array>();
  private readonly ca: X509Certificate;

  constructor(caPem: string) {
    this.ca = new X509Certificate(caPem);
  }

  /** The Ed25519 round key of `clientId`, if a checked certificate gave one. */
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
        const names = sanUris(cert).filter((u) => !u.startsWith(ROUND_KEY_URI_PREFIX));
        if (cert.subject !== `CN=${e.clientId}` || names.length !== 1 || names[0] !== `urn:aegis:client:${e.clientId}`) continue;
        if ((cert.subjectAltName ?? '').split(', ').some((n) => !n.startsWith('URI:'))) continue;
        this.keys.set(e.clientId, certificateKeys(cert).roundKey);
      } catch {
        continue;
      }
    }
  }
}
