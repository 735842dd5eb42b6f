/** Signed manifests: what a client accepts and why it refuses. */
import { describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { keyIdOf, MANIFEST_PAYLOAD_TYPE, signEnvelope } from '../../shared/trust/dsse.js';
import { describeManifest, signManifest, verifySignedManifest } from '../../shared/trust/manifest.js';
import { manifest } from '../support/cluster.js';
import { codeOf } from '../support/codes.js';
import { dpSection } from '../support/dp.js';
import { dpEpsilonAfter } from '../../shared/protocol/dp-manifest.js';

const seed = randomBytes(32);
const pk = ed25519PublicFromSeed(seed);
const trusted = (id: string) => (id === keyIdOf(pk) ? pk : undefined);
const job = manifest({ jobId: 'signed-job', round: { dim: 4, cohort: 3 } });

describe('signed manifests', () => {
  it('verify: the manifest, its hash (of the signed bytes) and the signer', () => {
    const env = signManifest(job, [seed]);
    const v = verifySignedManifest(JSON.stringify(env), trusted);
    expect(v.manifest.jobId).toBe('signed-job');
    expect(Buffer.from(v.hash).toString('hex')).toBe(createHash('sha256').update(job).digest('hex'));
    expect(v.signers).toEqual([keyIdOf(pk)]);
  });

  it('refuse an unknown or revoked publisher, an expired manifest, and an older revision', () => {
    const env = signManifest(job, [seed]);
    expect(codeOf(() => verifySignedManifest(env, () => undefined))).toBe('unknown-key');
    expect(codeOf(() => verifySignedManifest(env, trusted, { now: new Date(Date.now() + 2 * 3_600_000) }))).toBe('expired');
    const r2 = manifest({ jobId: 'signed-job', revision: 2, round: { dim: 4, cohort: 3 } });
    expect(verifySignedManifest(signManifest(r2, [seed]), trusted, { seenRevision: 2 }).manifest.revision).toBe(2);
    expect(codeOf(() => verifySignedManifest(env, trusted, { seenRevision: 2 }))).toBe('rollback');
  });

  it('refuse a signed payload with a key twice in one object, even though the signature is valid', () => {
    const text = new TextDecoder().decode(job).replace('"jobId":', '"jobId":"evil","jobId":');
    const env = signEnvelope(MANIFEST_PAYLOAD_TYPE, new TextEncoder().encode(text), [seed]);
    expect(codeOf(() => verifySignedManifest(env, trusted))).toBe('malformed');
  });

  it('a publisher never signs an invalid manifest', () => {
    expect(codeOf(() => signManifest(new TextEncoder().encode('{"version":1}'), [seed]))).toBe('invalid-argument');
  });

  it('describe the signed fields in plain words', () => {
    const lines = describeManifest(verifySignedManifest(signManifest(job, [seed]), trusted).manifest, [{ keyid: keyIdOf(pk), name: 'ml-team', verified: true }]);
    expect(lines[0]).toBe('job signed-job, revision 1: 1 round');
    expect(lines.join('\n')).toMatch(/classic SecAgg/);
    expect(lines.at(-1)).toBe(`signed by ${keyIdOf(pk)} (ml-team): signature valid`);
  });

  it('describe a DP job: the mechanism, clip, noise, minimum clients and the ε recomputed from the parameters (not the claimed one); a job without DP says so', () => {
    const dp = { ...dpSection({ dim: 16, minClients: 3, maxClients: 4, rounds: 5 }) };
    const claimed = dp.epsilon * 2; // a claim above the accountant's is allowed; below is refused
    const m = manifest({
      jobId: 'dp-job',
      rounds: 5,
      round: { dim: 16, cohort: 4, threshold: 3, clip: 4, bits: 16 },
      model: { format: 'safetensors', tensors: [{ name: 'w', shape: [16], dtype: 'F32' }], initialWeightsSha256: '0'.repeat(64) },
      training: {},
      dp: { ...dp, epsilon: claimed },
    });
    const parsed = verifySignedManifest(signManifest(m, [seed]), trusted).manifest;
    const text = describeManifest(parsed, []).join('\n');
    const recomputed = dpEpsilonAfter(parsed, 5);
    expect(text).toContain(`differential privacy: distributed-discrete-gaussian, updates clipped to L2 norm 1, noise multiplier 1 with at least 3 clients in every sum; (epsilon, delta) = (${recomputed.toPrecision(6)}, 0.00001) over all 5 rounds (recomputed from the parameters; the manifest claims ${claimed.toPrecision(6)})`);
    expect(describeManifest(verifySignedManifest(signManifest(job, [seed]), trusted).manifest, []).join('\n')).toContain('differential privacy: none');
  });
});
