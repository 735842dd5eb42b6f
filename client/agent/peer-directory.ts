/**
 * The identity (round) keys of a round's members, as the client learns them from the
 * certificates the coordinator relays with the advertised keys. A certificate counts only if the
 * pinned CA signed it, it is valid now, and it names the entry's client id (and nothing else but
 * its round key: the naming rules the coordinator reads its callers with too); entries that fail
 * are left out, so the state machine sees an unknown id (and aborts if it is a neighbour). The
 * round key is the certificate's `urn:aegis:round-key:` URI for a P-256 certificate, the
 * certificate's own key for an Ed25519 one from before P-256 (shared/keystore/round-key.ts).
 *
 * The checks are ClientCertificateChecker's (shared/keystore/client-certificate.ts): the CA's
 * signature over the certificate's signed part first, then the fields, without Node's full X.509
 * parse (which alone costs twice the signature check).
 *
 * Certificates are checked when a key is asked for, not when the broadcast arrives: a SecAgg+
 * client asks only for its k neighbours' keys, so it parses and verifies k certificates per
 * round, not n. A certificate that passed once is remembered by its exact DER bytes (bounded),
 * with the id and validity period it names: the same bytes under the same CA always verify the
 * same way, so a later round only checks the period again and compares the id.
 */
import { ClientCertificateChecker, type CheckedClientCertificate } from '../../shared/keystore/client-certificate.js';

/** Certificates remembered across rounds: enough for a cohort of thousands, a few MB at most. */
export const VERIFIED_CERTIFICATES_MAX = 4096;

export class PeerDirectory {
  /** This round's relayed certificates, by the id their entry names. */
  private readonly offered = new Map<string, Uint8Array>();
  /** This round's answers, once asked (undefined: the certificate did not pass). */
  private readonly answers = new Map<string, Uint8Array | undefined>();
  /** Certificates that passed the CA checks, by their DER (base64); oldest first. */
  private readonly verified = new Map<string, CheckedClientCertificate>();
  private readonly checker: ClientCertificateChecker;
  /** Certificates parsed and verified so far (what the cache and the laziness save shows here). */
  verifications = 0;

  constructor(caPem: string) {
    this.checker = new ClientCertificateChecker(caPem);
  }

  /** The Ed25519 round key of `clientId`, if its relayed certificate passes the checks. */
  keyOf(clientId: string): Uint8Array | undefined {
    if (this.answers.has(clientId)) return this.answers.get(clientId);
    const der = this.offered.get(clientId);
    const key = der ? this.check(clientId, der) : undefined;
    this.answers.set(clientId, key);
    return key;
  }

  /** Forgets the round's certificates (a new round names its members anew); verified ones stay remembered. */
  clear(): void {
    this.offered.clear();
    this.answers.clear();
  }

  /** Takes the round's entries' certificates, to be checked when their keys are asked for. */
  learn(entries: readonly { clientId: string; certificate?: Uint8Array }[]): void {
    for (const e of entries) {
      if (!e.certificate || e.certificate.length === 0) continue;
      const before = this.offered.get(e.clientId);
      if (before && Buffer.compare(before, e.certificate) === 0) continue;
      this.offered.set(e.clientId, e.certificate);
      this.answers.delete(e.clientId);
    }
  }

  private check(clientId: string, der: Uint8Array): Uint8Array | undefined {
    const now = Date.now();
    const id = Buffer.from(der).toString('base64');
    let v = this.verified.get(id);
    if (!v) {
      v = this.verify(der);
      if (!v) return undefined;
      if (this.verified.size >= VERIFIED_CERTIFICATES_MAX) this.verified.delete(this.verified.keys().next().value as string);
      this.verified.set(id, v);
    }
    if (!(v.notBefore <= now && now <= v.notAfter) || v.clientId !== clientId) return undefined;
    return v.roundKey;
  }

  /** The CA's signature and the names, read once per certificate. */
  private verify(der: Uint8Array): CheckedClientCertificate | undefined {
    this.verifications++;
    return this.checker.check(der);
  }
}
