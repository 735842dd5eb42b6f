import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from '@jest/globals';
import { MIN_PER_CLIENT, PIXELS, splitDigits, type DigitsSplit } from '../../bench/demo/mnist.js';

interface MnistDigit {
  length: number;
  get(i: number): number[];
}
const mnist = createRequire(import.meta.url)('mnist') as Record<number, MnistDigit>;

const hash = (px: ArrayLike<number>): string =>
  createHash('sha256').update(Buffer.from(Float32Array.from(px).buffer)).digest('hex');
const pixelsOf = (r: unknown): Float32Array => (r as { pixels: Float32Array }).pixels;
const digitOf = (r: unknown): number => (r as { digit: number }).digit;
const shardHashes = (s: DigitsSplit): string[][] => s.shards.map((sh) => sh.map((r) => hash(pixelsOf(r))));
const testHashes = (s: DigitsSplit): string[] =>
  Array.from({ length: s.test.count }, (_, i) => hash(s.test.features.subarray(i * PIXELS, (i + 1) * PIXELS)));

/** Mean total-variation distance between each shard's label distribution and the pooled one. */
function meanTv(labelCounts: number[][]): number {
  const global = new Array<number>(10).fill(0);
  for (const c of labelCounts) c.forEach((x, d) => (global[d]! += x));
  const total = global.reduce((a, b) => a + b, 0);
  const tvs = labelCounts.map((c) => {
    const n = c.reduce((a, b) => a + b, 0);
    return 0.5 * c.reduce((s, x, d) => s + Math.abs(x / n - global[d]! / total), 0);
  });
  return tvs.reduce((a, b) => a + b, 0) / tvs.length;
}

describe('MNIST demo split', () => {
  const full = splitDigits({ clients: 10, alpha: 0.5 });

  it('holds out the first 15% of each digit and uses every other sample exactly once', () => {
    const expectTest: string[] = [];
    const expectTrain: string[] = [];
    for (let d = 0; d < 10; d++) {
      const n = mnist[d]!.length;
      const nTest = Math.round(n * 0.15);
      for (let i = 0; i < n; i++) (i < nTest ? expectTest : expectTrain).push(hash(mnist[d]!.get(i)));
    }
    const test = testHashes(full);
    const train = shardHashes(full).flat();
    expect(full.testCount).toBe(expectTest.length);
    expect(full.trainCount).toBe(expectTrain.length);
    expect(full.testCount + full.trainCount).toBe(10000);
    expect(test).toEqual(expectTest); // grouped by digit, in source order
    expect([...train].sort()).toEqual([...expectTrain].sort()); // each training sample once
    expect(new Set(train).size).toBe(train.length);
    const testSet = new Set(test);
    expect(train.filter((h) => testSet.has(h))).toEqual([]);
  });

  it('packs the test set and labels it; records are { pixels, digit }', () => {
    expect(full.test.featureDim).toBe(PIXELS);
    expect(full.test.features).toHaveLength(full.testCount * PIXELS);
    expect(full.test.labels).toHaveLength(full.testCount);
    expect(new Set(full.test.labels)).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    const r = full.shards[0]![0]!;
    expect(Object.keys(r).sort()).toEqual(['digit', 'pixels']);
    expect(pixelsOf(r)).toBeInstanceOf(Float32Array);
    expect(pixelsOf(r)).toHaveLength(PIXELS);
    expect(pixelsOf(r).every((v) => v >= 0 && v <= 1)).toBe(true);
    full.shards.forEach((sh, c) => {
      const counts = new Array<number>(10).fill(0);
      for (const rec of sh) counts[digitOf(rec)]!++;
      expect(counts).toEqual(full.labelCounts[c]);
    });
  });

  it('is non-IID for alpha = 0.5 and close to IID for a large alpha', () => {
    expect(meanTv(full.labelCounts)).toBeGreaterThan(0.1);
    expect(meanTv(splitDigits({ clients: 10, alpha: 1000, perDigitLimit: 400 }).labelCounts)).toBeLessThan(0.1);
  });

  it('is identical for the same seed and differs for another', () => {
    const a = splitDigits({ clients: 6, seed: 7, alpha: 0.5, perDigitLimit: 80 });
    const b = splitDigits({ clients: 6, seed: 7, alpha: 0.5, perDigitLimit: 80 });
    const c = splitDigits({ clients: 6, seed: 8, alpha: 0.5, perDigitLimit: 80 });
    expect(shardHashes(a)).toEqual(shardHashes(b));
    expect(a.shards.map((s) => s.map(digitOf))).toEqual(b.shards.map((s) => s.map(digitOf)));
    expect(testHashes(a)).toEqual(testHashes(b));
    expect(shardHashes(c)).not.toEqual(shardHashes(a));
    expect(c.labelCounts).not.toEqual(a.labelCounts);
  });

  it('gives every client at least the minimum, even with a very skewed alpha', () => {
    const s = splitDigits({ clients: 50, alpha: 0.05, perDigitLimit: 200, seed: 3 });
    expect(s.shards).toHaveLength(50);
    for (const sh of s.shards) expect(sh.length).toBeGreaterThanOrEqual(MIN_PER_CLIENT);
    expect(s.shards.reduce((a, sh) => a + sh.length, 0)).toBe(s.trainCount);
    // 1000 clients share ~8,500 samples: the minimum drops to what goes round.
    const many = splitDigits({ clients: 1000, alpha: 0.5 });
    const floor = Math.floor(many.trainCount / 1000);
    for (const sh of many.shards) expect(sh.length).toBeGreaterThanOrEqual(floor);
    expect(splitDigits({ clients: 1, perDigitLimit: 30 }).shards[0]).toHaveLength(10 * (30 - 5));
  });

  it('honours perDigitLimit and testFraction', () => {
    const s = splitDigits({ clients: 3, perDigitLimit: 30, testFraction: 0.2 });
    expect(s.testCount).toBe(60);
    expect(s.trainCount).toBe(240);
    const perDigit = new Array<number>(10).fill(0);
    for (const c of s.labelCounts) c.forEach((x, d) => (perDigit[d]! += x));
    expect(perDigit).toEqual(new Array<number>(10).fill(24));
    expect(Array.from(s.test.labels.subarray(0, 7))).toEqual([0, 0, 0, 0, 0, 0, 1]);
    // The test set is exactly the first 6 samples of each digit.
    expect(testHashes(s).slice(0, 6)).toEqual(Array.from({ length: 6 }, (_, i) => hash(mnist[0]!.get(i))));
  });

  it.each([
    ['zero clients', { clients: 0 }],
    ['too many clients', { clients: 1001 }],
    ['fractional clients', { clients: 2.5 }],
    ['a non-integer seed', { clients: 2, seed: 1.5 }],
    ['alpha zero', { clients: 2, alpha: 0 }],
    ['alpha NaN', { clients: 2, alpha: Number.NaN }],
    ['testFraction 1', { clients: 2, testFraction: 1 }],
    ['a negative testFraction', { clients: 2, testFraction: -0.1 }],
    ['perDigitLimit 0', { clients: 2, perDigitLimit: 0 }],
    ['more clients than samples', { clients: 100, perDigitLimit: 5 }],
  ])('refuses %s with a plain Error', (_name, opts) => {
    expect(() => splitDigits(opts)).toThrow(Error);
    expect(() => splitDigits(opts)).toThrow(/splitDigits: /);
  });
});
