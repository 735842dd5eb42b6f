import { describe, expect, test } from '@jest/globals';
import { runClientBench, unavoidableCrypto } from '../../bench/client.js';

describe('client cost benchmark', () => {
  test('the crypto baseline times each part of one client\'s unavoidable crypto, and they add up', () => {
    const b = unavoidableCrypto(5, 3, 1000);
    for (const k of ['x25519_ms', 'verify_ms', 'sign_ms', 'keystream_ms', 'split_ms'] as const) expect(b[k]).toBeGreaterThan(0);
    expect(b.total_ms).toBeCloseTo(b.x25519_ms + b.verify_ms + b.sign_ms + b.keystream_ms + b.split_ms, 9);
  });

  test('a small run: an exact round, the client\'s time against the baseline as their ratio, and the target', async () => {
    const r = await runClientBench({ n: 12, m: 1000, k: 5, repeats: 1 });
    expect(r).toMatchObject({ bench: 'client', n: 12, m: 1000, k: 5, t: 3, repeats: 1, target: 1.5, exact: true });
    expect(r.client_ms).toBeGreaterThan(0);
    expect(r.ratio).toBeCloseTo(r.client_ms / r.baseline.total_ms, 9);
    expect(r.met).toBe(r.ratio <= 1.5);
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });
});
