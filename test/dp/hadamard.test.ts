/**
 * The randomized Hadamard rotation (shared/dp/hadamard.ts): orthonormal (norms kept, inverse
 * exact to 1e-9), signs fixed by the round's seed and different across seeds, padding to a power
 * of two.
 */
import { describe, expect, test } from '@jest/globals';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { fwhtNormalized, paddedDim, rotate, rotationSigns, unrotateInPlace } from '../../shared/dp/hadamard.js';

const seed = (b: number) => new Uint8Array(32).fill(b);
const norm = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));

describe('randomized Hadamard rotation', () => {
  test('pads to the next power of two', () => {
    expect([1, 2, 3, 4, 5, 1000, 1024, 1025].map(paddedDim)).toEqual([1, 2, 4, 4, 8, 1024, 1024, 2048]);
    expect(() => paddedDim(0)).toThrow(/dimension/);
    expect(() => paddedDim(2 ** 26 + 1)).toThrow(/dimension/);
  });

  test('the normalized transform is H/√D: a unit vector maps to ±1/√D everywhere, and applying it twice is the identity', () => {
    const v = new Float64Array(8);
    v[3] = 1;
    fwhtNormalized(v);
    expect(Array.from(v).every((x) => Math.abs(Math.abs(x) - 1 / Math.sqrt(8)) < 1e-15)).toBe(true);
    fwhtNormalized(v);
    expect(Array.from(v).map((x) => Math.round(x * 1e12) / 1e12)).toEqual([0, 0, 0, 1, 0, 0, 0, 0]);
    expect(() => fwhtNormalized(new Float64Array(6))).toThrow(/power of two/);
  });

  test.each([1, 3, 1000, 4096, 70000])('m = %i: rotation keeps the L2 norm and the inverse returns the input to 1e-9', (m) => {
    const rng = DeterministicRng.fromSeed('hadamard', m);
    const x = Float64Array.from({ length: m }, () => rng.nextFloat() * 2 - 1);
    const signs = rotationSigns(seed(1), paddedDim(m));
    const y = rotate(x, signs);
    expect(y.length).toBe(paddedDim(m));
    expect(Math.abs(norm(y) - norm(x))).toBeLessThan(1e-9 * norm(x));
    unrotateInPlace(y, signs);
    let worst = 0;
    for (let i = 0; i < m; i++) worst = Math.max(worst, Math.abs(y[i]! - x[i]!));
    for (let i = m; i < y.length; i++) worst = Math.max(worst, Math.abs(y[i]!));
    expect(worst).toBeLessThan(1e-9);
  });

  test('the signs are a function of the seed: the same for every client of a round, about half negative, different in another round', () => {
    const a = rotationSigns(seed(1), 4096);
    expect(rotationSigns(seed(1), 4096)).toEqual(a);
    const b = rotationSigns(seed(2), 4096);
    expect(b).not.toEqual(a);
    const negatives = a.reduce((s, x) => s + (x < 0 ? 1 : 0), 0);
    expect(Math.abs(negatives - 2048)).toBeLessThan(3.72 * Math.sqrt(1024)); // binomial(4096, 1/2), 10^-4 band
    expect(() => rotationSigns(new Uint8Array(16), 8)).toThrow(/32 bytes/);
  });

  test('rotation flattens a spike: one coordinate of norm 1 becomes D coordinates of 1/√D', () => {
    const x = new Float64Array(1024);
    x[17] = 1;
    const y = rotate(x, rotationSigns(seed(3), 1024));
    expect(Math.max(...Array.from(y, Math.abs))).toBeCloseTo(1 / 32, 12);
  });
});
