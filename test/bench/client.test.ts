import { describe, expect, test } from '@jest/globals';
import { runClientBench, unavoidableCrypto } from '../../bench/client.js';

describe('client cost benchmark', () => {
  test('the crypto baseline times each part of one client\'s unavoidable crypto, and they add up', () => {
    const b = unavoidableCrypto(5, 3, 1000);
    for (const k of ['x25519_ms', 'verify_ms', 'sign_ms', 'keystream_ms', 'split_ms'] as const) expect(b[k]).toBeGreaterThan(0);
    expect(b.total_ms).toBeCloseTo(b.x25519_ms + b.verify_ms + b.sign_ms + b.keystream_ms + b.split_ms, 9);
  });

  test('each repeat keeps its own client time, baseline and ratio; the verdict is taken from their medians', async () => {
    const r = await runClientBench({ n: 12, m: 1000, k: 5, repeats: 3 });
    expect(r.runs).toHaveLength(3);
    for (const x of r.runs) expect(x.ratio).toBeCloseTo(x.client_ms / x.baseline_ms, 9);
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[1]!;
    expect(r.client_ms).toBe(median(r.runs.map((x) => x.client_ms)));
    expect(r.baseline.total_ms).toBe(median(r.runs.map((x) => x.baseline_ms)));
    expect(r.ratio).toBeCloseTo(r.client_ms / r.baseline.total_ms, 9);
  });

  test('a small run: an exact round, the client\'s time against the baseline as their ratio, and the target', async () => {
    const r = await runClientBench({ n: 12, m: 1000, k: 5, repeats: 1 });
    expect(r).toMatchObject({ bench: 'client', n: 12, m: 1000, k: 5, t: 3, repeats: 1, target: 1.5, exact: true });
    expect(r.client_ms).toBeGreaterThan(0);
    expect(r.ratio).toBeCloseTo(r.client_ms / r.baseline.total_ms, 9);
    expect(r.met).toBe(r.ratio <= 1.5);
    // One repeat: its own ratio is the medians' ratio.
    expect(r.runs).toHaveLength(1);
    expect(r.runs[0]!.ratio).toBeCloseTo(r.ratio, 9);
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });
});
