/**
 * A training round as the client's trainer sees it, and the global model it trains from.
 *
 * A training round names a model version by SHA-256; the client fetches the weights and
 * refuses them unless they hash to that value — and, for version 0, to the manifest's
 * `model.initialWeightsSha256`. A refused round is sat out: the client never advertises keys
 * for it. An admitted one starts local training at once: it runs while the keys are advertised
 * and shared, and its update is the client's input when the masked input is due.
 */
import { createHash } from 'node:crypto';
import { encodeWeightedInput } from '../../shared/crypto/quantize.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { TrainingManifest } from '../../shared/protocol/manifest.js';
import type { ModelVersionRef } from '../../shared/protocol/messages.js';
import { dpParamsOfManifest, dpSessionSeed } from '../../shared/protocol/dp-manifest.js';
import { dpEncode, encodedLength } from '../../shared/dp/encode.js';
import { cryptoSource } from '../../shared/dp/sampler.js';
import type { RoundInput } from '../round/types.js';

const sha256 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest();

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
  /**
   * When the trainer must be done (ms since the epoch), for a trainer that runs before the
   * client answers phase 0 (`AdmissionContext.trainFirst`); undefined: no limit here.
   */
  deadlineAt?: number;
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

/**
 * Starts local training for an admitted round and returns the input it is making: the trainer's
 * weighted update, checked against the manifest (an integer weight in 1..2^bits − 1, dim
 * values), then clipped and quantized with fresh randomness. `onTrained` hears of each update
 * before it is quantized. A failure surfaces where the input is awaited (the client then leaves
 * the round), never as an unhandled rejection.
 */
export function trainingInput(train: Trainer, round: TrainingRound, onTrained?: (update: TrainedUpdate) => void): Promise<RoundInput> {
  const { manifest } = round;
  const input = (async (): Promise<RoundInput> => {
    const u = await train(round);
    const maxWeight = 2 ** manifest.round.bits - 1;
    if (!Number.isInteger(u.weight) || u.weight < 1 || u.weight > maxWeight) throw new AegisError(ErrorCode.InvalidArgument, `the update's weight must be an integer in 1..${maxWeight}`);
    if (u.values.length !== manifest.round.dim) throw new AegisError(ErrorCode.InvalidArgument, `the update has ${u.values.length} values, the manifest's dim is ${manifest.round.dim}`);
    onTrained?.(u);
    if (manifest.dp) return dpTrainingInput(u, manifest);
    return encodeWeightedInput(u.values, u.weight, manifest.round, DeterministicRng.secure());
  })();
  input.catch(() => undefined);
  return input;
}

/**
 * The input of a DP round (the manifest's `dp` section), made once the session id is known:
 * the trainer's update unweighted (one client's example count must not leave it outside the
 * noise), then clipped, rotated by the round's public seed, rounded and noised (dpEncode), with
 * the weight word 1 — so the sum's weight is the survivor count. The D + 1 words are 32-bit;
 * the DP values live mod 2^bits, which divides 2^32, so the SecAgg sum reduces exactly.
 */
export function dpTrainingInput(u: TrainedUpdate, manifest: TrainingManifest): (sessionId: Uint8Array) => Uint32Array {
  const params = dpParamsOfManifest(manifest);
  const update = new Float64Array(u.values.length);
  for (let i = 0; i < update.length; i++) update[i] = u.values[i]! / u.weight;
  return (sessionId) => {
    const words = new Uint32Array(encodedLength(params) + 1);
    words.set(dpEncode(update, params, dpSessionSeed(sessionId), cryptoSource()));
    words[words.length - 1] = 1;
    update.fill(0);
    return words;
  };
}
