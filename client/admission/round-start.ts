/**
 * The manifest of a round start, and the round start checked against it. The manifest a client
 * acts on is always one it verified: the payload of the publisher-signed envelope when the
 * client takes only signed jobs (trust.ts), else the manifest JSON the start carries, hashed
 * against the round's manifest hash. A start without one is refused (`manifest-required`): its
 * parameters could not be checked, and in audit mode its approval could not be asked for.
 *
 * Then every value the coordinator sends beside the manifest must be what the manifest and the
 * rules both sides use allow (`parameters-mismatch` otherwise): the round parameters (the
 * group's, derived from the manifest's by `groupRoundParams`), the phase deadlines, and the
 * group — this client among its members, no member twice, no fewer members than
 * `minimumGroupSize` and no more than the group may hold.
 */
import { createHash } from 'node:crypto';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { parseManifest, type JobManifest } from '../../shared/protocol/manifest.js';
import type { RoundStart } from '../../shared/protocol/messages.js';
import { groupRoundParams, minimumGroupSize, type RoundParams } from '../../shared/protocol/params.js';
import { isValidClientId } from '../../shared/protocol/session.js';
import { maskedRoundParams } from '../../shared/protocol/dp-manifest.js';

const sha256 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest();

const PARAM_KEYS: readonly (keyof RoundParams)[] = ['dim', 'cohort', 'threshold', 'neighbors', 'clip', 'bits'];
const DEADLINE_KEYS = ['advertiseMs', 'shareMs', 'maskedMs', 'consistencyMs', 'unmaskMs'] as const;

const mismatch = (what: string): AegisError => new AegisError(ErrorCode.ParametersMismatch, what);

/**
 * The manifest JSON a round start carries, checked against the round's manifest hash, parsed
 * and valid now. `manifest-required` when the start carries none.
 */
export function manifestOfRoundStart(ev: RoundStart, now = new Date()): JobManifest {
  if (!ev.manifestJson) throw new AegisError(ErrorCode.ManifestRequired, 'the round start carries no manifest: its parameters cannot be checked');
  if (!sha256(ev.manifestJson).equals(Buffer.from(ev.round.manifestHash))) {
    throw new AegisError(ErrorCode.HashMismatch, 'the manifest sent with the round start does not hash to the round’s manifest hash');
  }
  return parseManifest(ev.manifestJson, now).manifest;
}

/**
 * Checks everything the round start says beside the manifest against it: parameters, deadlines
 * and the group (`parameters-mismatch`). `clientId` must be one of the group's members.
 */
export function checkRoundStart(ev: RoundStart, manifest: JobManifest, clientId: string): void {
  const g = ev.group;
  if (!g) throw mismatch('the round start names no group: this client cannot check whom it aggregates with');
  if (!Number.isInteger(g.count) || g.count < 1 || !Number.isInteger(g.index) || g.index < 0 || g.index >= g.count) throw mismatch(`group ${g.index} of ${g.count} is not a group of the round`);
  const members = new Set(g.members);
  if (members.size !== g.members.length || !g.members.every(isValidClientId)) throw mismatch('the group lists a malformed member or one member twice');
  if (!members.has(clientId)) throw mismatch('the group does not list this client');
  const p = manifest.round;
  const size = g.members.length;
  const smallest = minimumGroupSize(p, g.count);
  if (size < smallest) throw mismatch(`a group of ${size} is smaller than the manifest allows (at least ${smallest})`);
  const largest = g.count > 1 ? (p.groupSize ?? 0) : p.cohort;
  if (size > largest) throw mismatch(`a group of ${size} is larger than the manifest allows (at most ${largest})`);
  if (g.count > 1 && p.groupSize === undefined) throw mismatch('the round is split into groups, but the manifest has no group size');
  // A grouped round's parameters are derived from the manifest's for the group's size; a round
  // of one group runs with the manifest's own.
  // A DP job masks its encoded length (shared/protocol/dp-manifest.ts maskedRoundParams).
  const expected = maskedRoundParams(manifest, g.count > 1 ? groupRoundParams(p, size) : p);
  const differs = PARAM_KEYS.filter((k) => expected[k] !== ev.params[k]);
  if (differs.length > 0) throw mismatch(`the round parameters differ from the manifest's (${differs.join(', ')})`);
  const d = ev.deadlines;
  if (!d || DEADLINE_KEYS.some((k) => d[k] !== manifest.deadlines[k])) throw mismatch('the phase deadlines differ from the manifest’s');
}
