import { describe, expect, test } from '@jest/globals';
import { parseManifest, type JobManifestInput } from '../../shared/protocol/manifest.js';
import { codeOf } from '../support/codes.js';

const now = new Date('2026-11-23T12:00:00Z');
const base: JobManifestInput = {
  version: 1,
  jobId: 'digits-fedavg',
  rounds: 3,
  round: { dim: 1000, cohort: 20, neighbors: 8 },
  issuedAt: '2026-11-23T00:00:00Z',
  expiresAt: '2026-11-30T00:00:00Z',
};
const bytes = (m: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(m));

describe('job manifests', () => {
  test('a valid manifest parses with defaults filled in and its SHA-256 as the hash', () => {
    const { manifest, hash } = parseManifest(bytes(base), now);
    expect(manifest.round).toEqual({ dim: 1000, cohort: 20, neighbors: 8, threshold: 5, clip: 1, bits: 16 });
    expect(manifest.deadlines.unmaskMs).toBe(30_000);
    expect(Buffer.from(hash).toString('hex')).toMatch(/^[0-9a-f]{64}$/);
    const again = parseManifest(bytes({ ...base, rounds: 4 }), now).hash;
    expect(Buffer.compare(hash, again)).not.toBe(0);
  });

  test.each([
    ['not JSON', new TextEncoder().encode('{ nope')],
    ['an unknown field', bytes({ ...base, extra: 1 })],
    ['a bad job id', bytes({ ...base, jobId: 'no spaces allowed' })],
    ['a threshold that is not a majority of the neighbours', bytes({ ...base, round: { ...base.round, threshold: 4 } })],
    ['a cohort whose sum could overflow 32 bits', bytes({ ...base, round: { dim: 10, cohort: 70000, bits: 16 } })],
    ['a deadline out of range', bytes({ ...base, deadlines: { unmaskMs: 5 } })],
    ['an expiry before the issue time', bytes({ ...base, expiresAt: '2026-11-22T00:00:00Z' })],
  ])('a manifest with %s is refused with a typed error', (_name, b) => {
    expect(codeOf(() => parseManifest(b, now))).toMatch(/^(invalid-argument|overflow-risk|malformed)$/);
  });

  test('an expired manifest is refused', () => {
    expect(codeOf(() => parseManifest(bytes(base), new Date('2026-12-01T00:00:00Z')))).toBe('expired');
  });

  test('a manifest with a key twice in one object is refused as malformed (no two readers may see two manifests)', () => {
    const text = new TextDecoder().decode(bytes(base)).replace('"jobId":', '"jobId":"other","jobId":');
    expect(codeOf(() => parseManifest(new TextEncoder().encode(text), now))).toBe('malformed');
  });
});
