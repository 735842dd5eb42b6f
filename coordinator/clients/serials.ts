/**
 * What a client record says about its certificates and its revocation: the serials still valid
 * (they all go on the CRL when the client is revoked), and the reason code and detail of a
 * revocation, also as registries of older releases wrote them (free text).
 */
import { X509Certificate } from 'node:crypto';
import { revocationReasonOf, type RevocationReason } from '../auth/enrollment.js';
import type { ClientRecord } from './registry.js';

/** Earlier serials kept per client (for the CRL), newest first. */
const MAX_PREVIOUS_SERIALS = 64;

/** The revocation reason code of a revoked record (free text of an older registry reads as `unspecified`). */
export function revocationCodeOf(rec: ClientRecord): RevocationReason {
  return revocationReasonOf(rec.revocationReason) ?? 'unspecified';
}

/** The free-text detail of a revocation (an older registry's free-text reason is its detail). */
export function revocationDetailOf(rec: ClientRecord): string {
  if (rec.revocationDetail !== undefined) return rec.revocationDetail;
  return rec.revocationReason !== undefined && revocationReasonOf(rec.revocationReason) === undefined ? rec.revocationReason : '';
}

/** The client's current serial and its earlier ones whose certificates are still valid at `now`. */
export function certificateSerialsOf(rec: ClientRecord, now: number): string[] {
  return [rec.serial, ...(rec.previousSerials ?? []).filter((p) => p.expiresAt > now).map((p) => p.serial)];
}

/**
 * Before `rec`'s certificate is replaced (renewal, re-enrollment): keeps its serial while that
 * certificate is still valid, so a later revocation puts it on the CRL too. Returns the list.
 */
export function rememberSerial(rec: ClientRecord, now: number): { serial: string; expiresAt: number }[] {
  const kept = (rec.previousSerials ?? []).filter((p) => p.expiresAt > now && p.serial !== rec.serial);
  if (rec.certificateExpiresAt > now) kept.unshift({ serial: rec.serial, expiresAt: rec.certificateExpiresAt });
  rec.previousSerials = kept.slice(0, MAX_PREVIOUS_SERIALS);
  if (rec.previousSerials.length === 0) delete rec.previousSerials;
  return rec.previousSerials ?? [];
}

const notBefore = new Map<string, number>();

/**
 * When the record's current certificate was recorded: `issuedAt`, or for records of older
 * releases the certificate's notBefore (else its expiry). Orders two records of one client.
 */
export function issuedAtOf(rec: ClientRecord): number {
  if (rec.issuedAt !== undefined) return rec.issuedAt;
  let t = notBefore.get(rec.serial);
  if (t === undefined) {
    try {
      t = Date.parse(new X509Certificate(Buffer.from(rec.certificate, 'base64')).validFrom);
    } catch {
      t = Number.NaN;
    }
    if (!Number.isFinite(t)) t = rec.certificateExpiresAt;
    if (notBefore.size > 10_000) notBefore.clear();
    notBefore.set(rec.serial, t);
  }
  return t;
}

/** The `issuedAt` of a certificate that replaces `previous` at `now`: later than `previous`'s, whatever the clocks. */
export function nextIssuedAt(previous: ClientRecord | undefined, now: number): number {
  return previous === undefined ? now : Math.max(now, issuedAtOf(previous) + 1);
}
