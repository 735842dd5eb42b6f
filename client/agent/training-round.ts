/**
 * What a client checks before it trains in a round, and how it gets the global model.
 *
 * The round start names the manifest by hash (in `round.manifestHash`, which also binds the
 * round's session id) and carries the manifest itself: the client hashes what it got and
 * refuses anything else. A training round names a model version by SHA-256; the client fetches
 * the weights and refuses them unless they hash to that value — and, for version 0, to the
 * manifest's `model.initialWeightsSha256`. A refused round is sat out: the client never
 * advertises keys for it.
 */
import { createHash } from 'node:crypto';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { isTrainingManifest, parseManifest, type JobManifest, type TrainingManifest } from '../../shared/protocol/manifest.js';
import type { ModelVersionRef, RoundStart } from '../../shared/protocol/messages.js';
import { groupRoundParams, type RoundParams } from '../../shared/protocol/params.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
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

/**
 * The global model of a training round from its bytes, after checking them: the length must
 * be the manifest's dim in float32, the SHA-256 the announced one, and version 0 must be the
 * manifest's initial weights.
 */
export function verifiedModel(bytes: Uint8Array, announced: ModelVersionRef, manifest: TrainingManifest): Float32Array {
  const dim = manifest.round.dim;
  if (bytes.length !== dim * 4) throw new AegisError(ErrorCode.HashMismatch, `the model has ${bytes.length} bytes; the manifest's dim ${dim} needs ${dim * 4}`);
  const digest = sha256(bytes);
  if (!digest.equals(Buffer.from(announced.sha256))) throw new AegisError(ErrorCode.HashMismatch, `model version ${announced.version} does not hash to the value the round start announced`);
  if (announced.version === 0 && digest.toString('hex') !== manifest.model.initialWeightsSha256) {
    throw new AegisError(ErrorCode.HashMismatch, "model version 0 is not the manifest's initial weights (model.initialWeightsSha256)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(dim);
  for (let i = 0; i < dim; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/** A training round as the client's trainer sees it. */
export interface TrainingRound {
  roundIndex: number;
  manifest: TrainingManifest;
  /** The verified global model this round trains from. */
  globalWeights: Float32Array;
  modelVersion: number;
}

/** What a trainer returns: the weighted update (new − global, times weight) and the weight. */
export interface TrainedUpdate {
  values: Float32Array;
  weight: number;
  examples?: number;
  loss?: number;
  trainMs?: number;
}

export type Trainer = (round: TrainingRound) => Promise<TrainedUpdate>;

export { isTrainingManifest, hex as hexOf };
