/** The client's checks before training: the manifest is the hashed one, the model the announced one. */
import { describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { checkRoundStart, manifestOfRoundStart } from '../../client/admission/round-start.js';
import { verifiedModel } from '../../client/admission/training-round.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import { isTrainingManifest, parseManifest, type TrainingManifest } from '../../shared/protocol/manifest.js';
import type { RoundStart } from '../../shared/protocol/messages.js';
import { groupRoundParams } from '../../shared/protocol/params.js';
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
  const group = { index: 0, count: 1, members: ['a', 'b', 'me'] };
  return { type: 'round-start', round: { manifestHash: sha(json), roundIndex: 0 }, params: m.round, deadlines: m.deadlines, manifestJson: json, model: { version: 0, sha256: sha(weightBytes(weights)) }, group, ...over };
}

describe('manifestOfRoundStart', () => {
  it('returns the manifest when it hashes to the round’s manifest hash, and refuses a start without one', () => {
    expect(manifestOfRoundStart(start()).jobId).toBe('tiny');
    expect(codeOf(() => manifestOfRoundStart(start({ manifestJson: undefined })))).toBe('manifest-required');
  });
  it('refuses a manifest that is not the hashed one', () => {
    const other = manifest({ jobId: 'tiny', rounds: 2, round: { dim: 4, cohort: 3, clip: 8, bits: 16 } });
    expect(codeOf(() => manifestOfRoundStart(start({ manifestJson: other })))).toBe('hash-mismatch');
  });
});

describe('checkRoundStart: everything beside the manifest is what the manifest allows', () => {
  const check = (over: Partial<RoundStart>, me = 'me'): string | undefined => codeOf(() => checkRoundStart(start(over), m, me));
  it('takes the honest start', () => {
    expect(check({})).toBeUndefined();
  });
  it('refuses each round parameter that differs from the manifest’s (a lower threshold too)', () => {
    for (const [k, v] of [['clip', 1000], ['bits', 8], ['dim', 5], ['threshold', m.round.threshold - 1], ['neighbors', 1], ['cohort', 4]] as const) {
      expect([k, check({ params: { ...m.round, [k]: v } })]).toEqual([k, 'parameters-mismatch']);
    }
  });
  it('refuses deadlines other than the manifest’s, or none', () => {
    expect(check({ deadlines: { ...m.deadlines, maskedMs: m.deadlines.maskedMs * 10 } })).toBe('parameters-mismatch');
    expect(check({ deadlines: undefined })).toBe('parameters-mismatch');
  });
  it('refuses a start without a group, a group without this client, a member twice, or a malformed member', () => {
    expect(check({ group: undefined })).toBe('parameters-mismatch');
    expect(check({}, 'someone-else')).toBe('parameters-mismatch');
    expect(check({ group: { index: 0, count: 1, members: ['a', 'a', 'me'] } })).toBe('parameters-mismatch');
    expect(check({ group: { index: 0, count: 1, members: ['a', 'b c', 'me'] } })).toBe('parameters-mismatch');
    expect(check({ group: { index: 1, count: 1, members: ['a', 'b', 'me'] } })).toBe('parameters-mismatch');
  });
  it('in a job with groups of 250, refuses a victim put in a group of 3 (with its derived threshold 2), and takes a group of more than 125', () => {
    const grouped = parseManifest(manifest({ jobId: 'big', round: { dim: 4, cohort: 1000, neighbors: 20, groupSize: 250 } })).manifest;
    const members = (n: number): string[] => [...Array.from({ length: n - 1 }, (_, i) => `c${String(i).padStart(4, '0')}`), 'me'].sort();
    const startOf = (n: number, count: number): RoundStart => ({ ...start(), params: groupRoundParams(grouped.round, n), deadlines: grouped.deadlines, group: { index: 0, count, members: members(n) } });
    expect(codeOf(() => checkRoundStart(startOf(3, 4), grouped, 'me'))).toBe('parameters-mismatch');
    expect(codeOf(() => checkRoundStart(startOf(125, 8), grouped, 'me'))).toBe('parameters-mismatch');
    expect(codeOf(() => checkRoundStart(startOf(126, 7), grouped, 'me'))).toBeUndefined();
    expect(codeOf(() => checkRoundStart(startOf(251, 4), grouped, 'me'))).toBe('parameters-mismatch');
  });
  it('refuses a group smaller than t + 1 (and 3), or larger than the cohort', () => {
    expect(check({ group: { index: 0, count: 1, members: ['a', 'me'] } })).toBe('parameters-mismatch');
    expect(check({ group: { index: 0, count: 1, members: ['a', 'b', 'c', 'me'] } })).toBe('parameters-mismatch');
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
