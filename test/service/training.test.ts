/** The coordinator's FedAvg step and model versions. */
import { describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyWeightedMean, ModelStore, weightBytes, weightsOf } from '../../coordinator/jobs/training.js';
import { codeOf } from '../support/codes.js';

describe('weight bytes', () => {
  it('round-trip float32 little-endian and refuse a wrong length or non-finite values', () => {
    const w = new Float32Array([1.5, -2, 0, 3.25]);
    const b = weightBytes(w);
    expect(b.length).toBe(16);
    expect(Buffer.from(b.subarray(0, 4)).readFloatLE(0)).toBe(1.5);
    expect([...weightsOf(b, 4)]).toEqual([...w]);
    expect(codeOf(() => weightsOf(b, 5))).toBe('invalid-argument');
    const nan = weightBytes(new Float32Array([1, Number.NaN]));
    expect(codeOf(() => weightsOf(nan, 2))).toBe('invalid-argument');
  });
});

describe('applyWeightedMean', () => {
  it('adds the mean update and keeps float32', () => {
    const out = applyWeightedMean(new Float32Array([1, 2]), { sum: new Float64Array([3, -6]), totalWeight: 3, mean: new Float64Array([1, -2]) });
    expect([...out]).toEqual([2, 0]);
    expect(codeOf(() => applyWeightedMean(new Float32Array(3), { sum: new Float64Array(2), totalWeight: 1, mean: new Float64Array(2) }))).toBe('invalid-argument');
    expect(codeOf(() => applyWeightedMean(new Float32Array(1), { sum: new Float64Array(1), totalWeight: 1, mean: new Float64Array([Number.POSITIVE_INFINITY]) }))).toBe('non-finite-value');
  });
});

describe('ModelStore', () => {
  it('numbers versions, hashes them, and writes them (0600) only once told where', async () => {
    const s = new ModelStore('job-x');
    const v0 = s.add(new Float32Array([1, 2]), { clients: 0, totalWeight: 0 });
    expect(v0.version).toBe(0);
    expect(Buffer.from(v0.sha256).toString('hex')).toBe(createHash('sha256').update(weightBytes(new Float32Array([1, 2]))).digest('hex'));
    const dir = await mkdtemp(join(tmpdir(), 'aegis-models-'));
    s.persistTo(dir);
    s.add(new Float32Array([1.5, 2]), { roundIndex: 0, clients: 3, totalWeight: 40 });
    await s.flushed();
    const files = (await readdir(join(dir, 'models', 'job-x'))).sort();
    expect(files).toEqual(['index.json', 'v0.bin', 'v1.bin']);
    expect((await stat(join(dir, 'models', 'job-x', 'v1.bin'))).mode & 0o777).toBe(0o600);
    expect([...weightsOf(new Uint8Array(await readFile(join(dir, 'models', 'job-x', 'v1.bin'))), 2)]).toEqual([1.5, 2]);
    const index = JSON.parse(await readFile(join(dir, 'models', 'job-x', 'index.json'), 'utf8')) as { versions: { version: number; roundIndex?: number; totalWeight: number }[] };
    expect(index.versions.map((v) => [v.version, v.roundIndex, v.totalWeight])).toEqual([[0, undefined, 0], [1, 0, 40]]);
    expect(s.latest.version).toBe(1);
    expect(codeOf(() => s.get(7))).toBe('not-found');
  });
});
