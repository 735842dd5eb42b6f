/** The client's checks before training: the manifest is the hashed one, the model the announced one. */
import { describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { manifestOfRoundStart } from '../../client/admission/round-start.js';
import { verifiedModel } from '../../client/admission/training-round.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { isTrainingManifest, parseManifest, type TrainingManifest } from '../../shared/protocol/manifest.js';
import type { RoundStart } from '../../shared/protocol/messages.js';
import { manifest } from '../support/cluster.js';
import { codeOf } from '../support/codes.js';

const weights = new Float32Array([0.5, -1.25, 3, 0]);
const sha = (b: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(b).digest());
const initialSha = Buffer.from(sha(weightBytes(weights))).toString('hex');
const json = manifest({
  jobId: 'tiny',
  round: { dim: 4, cohort: 3, clip: 8, bits: 16 },
  model: { format: 'tfjs-layers', architecture: { class_name: 'Sequential', config: {} }, initialWeightsSha256: initialSha },
  training: {},
});
const parsed = parseManifest(json).manifest;
if (!isTrainingManifest(parsed)) throw new Error('fixture is a training manifest');
const m: TrainingManifest = parsed;

function start(over: Partial<RoundStart> = {}): RoundStart {
  return { type: 'round-start', round: { manifestHash: sha(json), roundIndex: 0 }, params: m.round, manifestJson: json, model: { version: 0, sha256: sha(weightBytes(weights)) }, ...over };
}

describe('manifestOfRoundStart', () => {
  it('returns the manifest when it hashes to the round’s manifest hash and the parameters agree', () => {
    expect(manifestOfRoundStart(start())?.jobId).toBe('tiny');
    expect(manifestOfRoundStart(start({ manifestJson: undefined }))).toBeUndefined();
  });
  it('refuses a manifest that is not the hashed one', () => {
    const other = manifest({ jobId: 'tiny', rounds: 2, round: { dim: 4, cohort: 3, clip: 8, bits: 16 } });
    expect(codeOf(() => manifestOfRoundStart(start({ manifestJson: other })))).toBe('hash-mismatch');
  });
  it('refuses round parameters that differ from the manifest’s', () => {
    expect(codeOf(() => manifestOfRoundStart(start({ params: { ...m.round, clip: 1000 } })))).toBe('hash-mismatch');
  });
  it('refuses an expired manifest', () => {
    expect(codeOf(() => manifestOfRoundStart(start(), new Date(Date.now() + 2 * 3_600_000)))).toBe('expired');
  });
});

describe('verifiedModel', () => {
  const bytes = weightBytes(weights);
  it('returns the weights when the bytes hash to the announced value and version 0 is the manifest’s', () => {
    expect([...verifiedModel(bytes, { version: 0, sha256: sha(bytes) }, m)]).toEqual([...weights]);
  });
  it('refuses bytes that do not hash to the announced value', () => {
    const other = weightBytes(new Float32Array([0.5, -1.25, 3, 1]));
    expect(codeOf(() => verifiedModel(other, { version: 1, sha256: sha(bytes) }, m))).toBe('hash-mismatch');
  });
  it('refuses a version 0 that is not the manifest’s initial weights, even when announced consistently', () => {
    const other = weightBytes(new Float32Array([9, 9, 9, 9]));
    expect(codeOf(() => verifiedModel(other, { version: 0, sha256: sha(other) }, m))).toBe('hash-mismatch');
    // A later version may differ from the initial weights.
    expect(verifiedModel(other, { version: 1, sha256: sha(other) }, m)[0]).toBe(9);
  });
  it('refuses a model of the wrong size', () => {
    const short = bytes.subarray(4);
    expect(codeOf(() => verifiedModel(short, { version: 1, sha256: sha(short) }, m))).toBe('hash-mismatch');
  });
});
