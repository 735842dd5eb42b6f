/**
 * Trust in a round's signed manifest (DESIGN.md §3): the client takes only rounds whose manifest
 * a publisher signed, with the publisher listed in the coordinator's registry and in a backup
 * registry that must agree with it, and never an older revision of a job than one it accepted.
 */
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import type { JobManifest } from '../../shared/protocol/manifest.js';
import type { RoundStart } from '../../shared/protocol/messages.js';
import { verifySignedManifest } from '../../shared/trust/manifest.js';
import { checkRegistries, parseSnapshot, verifyWithPublishers, type RegistrySnapshot } from '../../shared/trust/registry.js';
import type { TrustBook } from '../../shared/trust/trust-book.js';
import type { AuditBook } from '../audit/audit.js';

/** Where a client's trust comes from: the two registries, and what it accepted before. */
export interface TrustSources {
  /** The snapshot the coordinator's registry serves (its Trust service), as bytes. */
  coordinatorRegistry: () => Promise<Uint8Array>;
  /** The backup registry the client was configured with. */
  backup: () => Promise<RegistrySnapshot>;
  /** The registry versions and job revisions accepted before (nothing older is taken back). */
  book: Pick<TrustBook, 'load' | 'accept'>;
}

/**
 * The signed manifest of a round start: both registries verified and in agreement, or the
 * backup only lagging the primary (else the client enters audit mode: `registry-mismatch`;
 * checkRegistries says which is which), a trusted publisher's valid signature, no
 * older revision of the job than one accepted before, and the signed bytes being the round's
 * manifest. What was checked is then remembered in the trust book. Returns the signed manifest
 * (the one the client acts on: the start's own manifest JSON, if any, must be its exact bytes)
 * and the key ids of the registry publishers whose signatures verified.
 */
export async function checkSignedManifest(ev: RoundStart, trust: TrustSources, audit?: Pick<AuditBook, 'enter'>): Promise<{ manifest: JobManifest; signers: string[] }> {
  if (!ev.signedManifest) throw new AegisError(ErrorCode.ManifestRequired, 'the round start carries no signed manifest; this client takes only publisher-signed jobs');
  const now = new Date();
  const primary = parseSnapshot(await trust.coordinatorRegistry());
  const backup = await trust.backup();
  const seen = await trust.book.load();
  let checked: ReturnType<typeof checkRegistries>;
  try {
    checked = checkRegistries(primary, backup, seen.registry, now);
  } catch (err) {
    if (isAegisError(err, ErrorCode.RegistryMismatch)) await audit?.enter('registry-mismatch', 'the coordinator registry and the backup registry disagree');
    throw err;
  }
  // A backup that only lags the primary is no sign of a rogue coordinator: jobs are verified
  // against it, and a publisher it does not list yet is `backup-behind` (no audit mode).
  const signed = ev.signedManifest;
  const v = verifyWithPublishers(checked, (key) => verifySignedManifest(signed, key, { now }));
  const previous = seen.revisions[v.manifest.jobId];
  if (previous !== undefined && v.manifest.revision < previous) {
    throw new AegisError(ErrorCode.Rollback, `revision ${v.manifest.revision} of job '${v.manifest.jobId}' is older than revision ${previous}, already accepted`);
  }
  if (!Buffer.from(v.hash).equals(Buffer.from(ev.round.manifestHash)) || (ev.manifestJson && !Buffer.from(ev.manifestJson).equals(Buffer.from(v.manifestJson)))) {
    throw new AegisError(ErrorCode.HashMismatch, 'the signed manifest is not the manifest of this round');
  }
  await trust.book.accept(checked.state, v.manifest.jobId, v.manifest.revision);
  return { manifest: v.manifest, signers: v.signers };
}
