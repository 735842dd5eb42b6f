import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { fitsBits, packedBytes, packWords, reduceInto, unpackWords } from '../../shared/crypto/bitpack.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';

/** The layout written out bit by bit (the reference the word loops must match). */
function referencePack(v: readonly number[], bits: number): Uint8Array {
  const out = new Uint8Array(Math.ceil((v.length * bits) / 8));
  v.forEach((w, i) => {
    for (let j = 0; j < bits; j++) {
      if (Math.floor(w / 2 ** j) % 2 === 1) {
        const at = i * bits + j;
        out[at >> 3]! |= 1 << (at & 7);
      }
    }
  });
  return out;
}

const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (err) {
    return err instanceof AegisError ? err.code : 'untyped';
  }
  return undefined;
};

describe('bit-packing words of Z_{2^r}', () => {
  const words = (bits: number, maxLength = 80): fc.Arbitrary<number[]> => fc.array(fc.nat({ max: 2 ** bits - 1 }), { maxLength });

  test('every r from 1 to 32: the packing is the bit-by-bit layout, ⌈m·r/8⌉ bytes, and unpacks to the words', () => {
    for (let bits = 1; bits <= 32; bits++) {
      fc.assert(
        fc.property(words(bits), (v) => {
          const packed = packWords(Uint32Array.from(v), bits);
          expect(packed.length).toBe(packedBytes(v.length, bits));
          expect([...packed]).toEqual([...referencePack(v, bits)]);
          expect([...unpackWords(packed, v.length, bits)]).toEqual(v);
        }),
        { numRuns: 40 },
      );
    }
  });

  test('a worked example: three 5-bit words in two bytes, least significant bit first', () => {
    // 0b00001, 0b11111, 0b10100 -> bits 0..14: 1 0000 | 1111 1 | 00101 (low to high)
    expect([...packWords(Uint32Array.from([1, 31, 20]), 5)]).toEqual([0b11100001, 0b01010011]);
    expect([...unpackWords(Uint8Array.from([0b11100001, 0b01010011]), 3, 5)]).toEqual([1, 31, 20]);
  });

  test('only the low r bits of a word are packed', () => {
    expect([...unpackWords(packWords(Uint32Array.from([0xffffffff, 0x12345678]), 12), 2, 12)]).toEqual([0xfff, 0x678]);
    const v = Uint32Array.from([0xffffffff, 0x12345678, 7]);
    expect(fitsBits(v, 12)).toBe(false);
    reduceInto(v, 12);
    expect([...v]).toEqual([0xfff, 0x678, 7]);
    expect(fitsBits(v, 12)).toBe(true);
    expect(fitsBits(Uint32Array.from([0xffffffff]), 32)).toBe(true);
  });

  test('long vectors (m = 10^5 + 1) round-trip at 25 bits, and an unaligned input decodes the same', () => {
    const v = Uint32Array.from({ length: 100_001 }, (_, i) => (i * 2654435761) % 2 ** 25);
    const packed = packWords(v, 25);
    expect(packed.length).toBe(Math.ceil((100_001 * 25) / 8));
    expect(unpackWords(packed, v.length, 25)).toEqual(v);
    const shifted = new Uint8Array(packed.length + 3);
    shifted.set(packed, 3);
    expect(unpackWords(shifted.subarray(3), v.length, 25)).toEqual(v);
  });

  test('one unpacking leaves nothing behind for the next: a short vector of zeros after a long one of ones, and results of their own', () => {
    for (const bits of [1, 7, 13, 25, 31, 32]) {
      const ones = new Uint32Array(1000).fill(2 ** bits - 1);
      const first = unpackWords(packWords(ones, bits), ones.length, bits);
      expect(first).toEqual(ones);
      // 5 words: the packing ends inside a stream word, and the unpacking reads that word and the
      // next; nothing the long vector's unpacking left behind may show in these values.
      expect([...unpackWords(packWords(new Uint32Array(5), bits), 5, bits)]).toEqual([0, 0, 0, 0, 0]);
      expect(first).toEqual(ones); // the first result is its own memory, not the unpacking's
    }
  });

  test('every malformed packing is refused with invalid-argument: wrong length, set padding bits, bad bits or count', () => {
    const packed = packWords(Uint32Array.from([1, 2, 3]), 5); // 15 bits in 2 bytes: 1 padding bit
    expect(codeOf(() => unpackWords(packed, 3, 5))).toBeUndefined();
    expect(codeOf(() => unpackWords(packed.subarray(0, 1), 3, 5))).toBe(ErrorCode.InvalidArgument);
    expect(codeOf(() => unpackWords(Uint8Array.from([...packed, 0]), 3, 5))).toBe(ErrorCode.InvalidArgument);
    const padded = packed.slice();
    padded[1]! |= 0x80;
    expect(codeOf(() => unpackWords(padded, 3, 5))).toBe(ErrorCode.InvalidArgument);
    // The same bytes claimed as two words or four are the wrong length.
    expect(codeOf(() => unpackWords(packed, 2, 5))).toBe(ErrorCode.InvalidArgument);
    expect(codeOf(() => unpackWords(packed, 4, 5))).toBe(ErrorCode.InvalidArgument);
    for (const bits of [0, 33, 2.5, -1]) {
      expect(codeOf(() => unpackWords(packed, 3, bits))).toBe(ErrorCode.InvalidArgument);
      expect(codeOf(() => packWords(Uint32Array.from([1]), bits))).toBe(ErrorCode.InvalidArgument);
    }
    expect(codeOf(() => unpackWords(packed, -1, 5))).toBe(ErrorCode.InvalidArgument);
    expect(codeOf(() => unpackWords(new Uint8Array(0), 2 ** 32 - 1, 32))).toBe(ErrorCode.InvalidArgument);
    expect(unpackWords(new Uint8Array(0), 0, 7)).toEqual(new Uint32Array(0));
  });
});
