/**
 * The manifest of a round start. The round start names the manifest by hash (in
 * `round.manifestHash`, which also binds the round's session id) and carries the manifest
 * itself: the client hashes what it got and refuses anything else, and takes the round only
 * with the parameters the manifest gives it.
 */
import { createHash } from 'node:crypto';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { parseManifest, type JobManifest } from '../../shared/protocol/manifest.js';
import type { RoundStart } from '../../shared/protocol/messages.js';
import { groupRoundParams, type RoundParams } from '../../shared/protocol/params.js';

const sha256 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest();

/**
 * The manifest of a round start, checked: its hash must be the round's manifest hash, it must
 * parse and be valid now, and the round parameters sent beside it must be the manifest's.
 * Returns undefined for a start without a manifest (plain rounds of older coordinators).
 */
export function manifestOfRoundStart(ev: RoundStart, now = new Date()): JobManifest | undefined {
  if (!ev.manifestJson) return undefined;
  if (!sha256(ev.manifestJson).equals(Buffer.from(ev.round.manifestHash))) {
    throw new AegisError(ErrorCode.HashMismatch, 'the manifest sent with the round start does not hash to the round’s manifest hash');
  }
  const { manifest } = parseManifest(ev.manifestJson, now);
  const keys: (keyof RoundParams)[] = ['dim', 'cohort', 'threshold', 'neighbors', 'clip', 'bits'];
  // In a grouped round the client is sent its group's parameters: derived from the manifest's by
  // the one rule both sides use, for a group no larger than the manifest's group size (and at
  // least 3, as any round).
  const g = manifest.round.groupSize;
  const grouped = g !== undefined && ev.params.cohort >= 3 && ev.params.cohort <= Math.min(g, manifest.round.cohort);
  const expected = grouped ? groupRoundParams(manifest.round, ev.params.cohort) : manifest.round;
  const differs = keys.filter((k) => expected[k] !== ev.params[k]);
  if (differs.length > 0) throw new AegisError(ErrorCode.HashMismatch, `the round parameters differ from the manifest's (${differs.join(', ')})`);
  return manifest;
}
