/**
 * DeterministicRng: the AES-256-CTR stream behind stochastic rounding, the neighbour-graph
 * permutation and the simulator. Same keystream as the mask PRG, no word handed out twice,
 * and unbiased bounded integers.
 */
import { describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { ErrorCode, isAegisError } from '../../shared/errors.js';
import { BLOCK_WORDS, DeterministicRng } from '../../shared/crypto/rng.js';
import { prgWords } from '../../shared/crypto/prg.js';

const key = new Uint8Array(createHash('sha256').update('rng test').digest());

describe('DeterministicRng', () => {
  test('nextU32 yields the AES-256-CTR keystream words in order, across block boundaries', () => {
    const rng = new DeterministicRng(key);
    const words = Array.from({ length: BLOCK_WORDS * 2 + 3 }, () => rng.nextU32());
    expect(words).toEqual(Array.from(prgWords(key, BLOCK_WORDS * 2 + 3)));
  });

  test('nextBlock hands out the next fresh block and never a word that nextU32 already gave or will give', () => {
    const stream = prgWords(key, BLOCK_WORDS * 4);
    const rng = new DeterministicRng(key);
    expect(rng.nextU32()).toBe(stream[0]);
    // The rest of block 0 is dropped, unused: nextBlock is block 1.
    expect(Array.from(rng.nextBlock())).toEqual(Array.from(stream.subarray(BLOCK_WORDS, 2 * BLOCK_WORDS)));
    expect(rng.nextU32()).toBe(stream[2 * BLOCK_WORDS]);
    expect(Array.from(rng.nextBlock())).toEqual(Array.from(stream.subarray(3 * BLOCK_WORDS)));
  });

  test('fromSeed is deterministic per (label, seed) and differs across labels and seeds', () => {
    const draw = (r: DeterministicRng): number[] => Array.from({ length: 8 }, () => r.nextU32());
    expect(draw(DeterministicRng.fromSeed('sim', 7))).toEqual(draw(DeterministicRng.fromSeed('sim', 7)));
    expect(draw(DeterministicRng.fromSeed('sim', 7))).not.toEqual(draw(DeterministicRng.fromSeed('sim', 8)));
    expect(draw(DeterministicRng.fromSeed('sim', 7))).not.toEqual(draw(DeterministicRng.fromSeed('dropout', 7)));
    expect(draw(DeterministicRng.secure())).not.toEqual(draw(DeterministicRng.secure()));
  });

  test('nextFloat stays in [0, 1) and has mean 1/2', () => {
    const rng = new DeterministicRng(key);
    let sum = 0;
    let outside = 0;
    for (let i = 0; i < 100000; i++) {
      const f = rng.nextFloat();
      if (!(f >= 0 && f < 1)) outside++;
      sum += f;
    }
    expect(outside).toBe(0);
    expect(Math.abs(sum / 100000 - 0.5)).toBeLessThan(0.005);
  });

  test('nextInt(n) stays in [0, n) and is uniform even where a plain modulo would be biased', () => {
    // n = 3 · 2^30: r mod n would hit [0, 2^30) twice as often as the rest.
    const rng = new DeterministicRng(key);
    const n = 3 * 2 ** 30;
    let low = 0;
    let outside = 0;
    const draws = 60000;
    for (let i = 0; i < draws; i++) {
      const r = rng.nextInt(n);
      if (!(Number.isInteger(r) && r >= 0 && r < n)) outside++;
      if (r < 2 ** 30) low++;
    }
    expect(outside).toBe(0);
    // Uniform: a third of draws land in [0, 2^30); a modulo would put half there.
    expect(Math.abs(low / draws - 1 / 3)).toBeLessThan(0.01);
    expect(rng.nextInt(1)).toBe(0);
    expect(Number.isInteger(rng.nextInt(2 ** 32))).toBe(true);
  });

  test('refuses bounds outside 1..2^32 and keys that are not 32 bytes', () => {
    const rng = new DeterministicRng(key);
    for (const n of [0, -1, 2 ** 32 + 1, 2.5]) expect(() => rng.nextInt(n)).toThrow(RangeError);
    let err: unknown;
    try {
      new DeterministicRng(new Uint8Array(16));
    } catch (e) {
      err = e;
    }
    expect(isAegisError(err, ErrorCode.BadKeyLength)).toBe(true);
  });
});
