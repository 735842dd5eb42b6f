/**
 * Which manifest bytes a launch may run. With a publisher registry, only a manifest signed by a
 * publisher it lists (and not revoked), unexpired, is taken, and its signed payload is the
 * manifest; without one (the embedded default) a signed manifest cannot be checked and is
 * refused.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { verifySignedManifest } from '../../shared/trust/manifest.js';
import { publisherKey, verifyPublishers, verifyRootHistory } from '../../shared/trust/registry.js';
import { readSnapshot } from '../../shared/trust/registry-dir.js';
import type { ManifestSigner } from './types.js';

export async function verifiedManifestBytes(
  registryDir: string | undefined,
  manifestJson: Uint8Array,
  signed: Uint8Array | undefined,
  now: Date,
): Promise<{ manifestJson: Uint8Array; signer?: ManifestSigner }> {
  if (registryDir === undefined) {
    if (signed) throw new AegisError(ErrorCode.UnknownKey, 'this coordinator has no publisher registry to check a signed manifest against (coordinator start --registry DIR)');
    return { manifestJson };
  }
  if (!signed) throw new AegisError(ErrorCode.UnknownKey, 'this coordinator takes only signed manifests (aegis manifest sign; aegis round launch job.dsse.json)');
  const snapshot = await readSnapshot(registryDir);
  const chain = verifyRootHistory(undefined, snapshot.roots, now);
  const root = chain[chain.length - 1]!.doc;
  const publishers = verifyPublishers(root, snapshot.publishers, now);
  const verified = verifySignedManifest(signed, (id) => publisherKey(publishers, id), { now });
  const keyId = verified.signers[0];
  if (keyId === undefined) return { manifestJson: verified.manifestJson };
  const publisher = Object.hasOwn(publishers.publishers, keyId) ? (publishers.publishers[keyId]?.name ?? null) : null;
  return { manifestJson: verified.manifestJson, signer: { keyId, publisher } };
}
