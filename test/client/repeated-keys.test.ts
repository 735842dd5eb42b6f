/**
 * U1's duplicate-key check (client/round/checks.ts `hasRepeatedKey`): keys bucketed by a prefix,
 * with a fallback to whole keys when a coordinator crafts keys that share a prefix.
 */
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { hasRepeatedKey } from '../../client/round/checks.js';

const key = (): Uint8Array => new Uint8Array(randomBytes(32));
/** A key that shares its first `shared` bytes with `k` and differs from it (by `flip`, 1..255) in the byte after them. */
const sharingPrefix = (k: Uint8Array, shared: number, flip: number): Uint8Array => {
  const out = key();
  out.set(k.subarray(0, shared));
  out[shared] = k[shared]! ^ flip;
  return out;
};

describe('hasRepeatedKey', () => {
  test('finds no repeat among distinct random keys, and finds a copy of any one of them wherever it is put', () => {
    const keys = Array.from({ length: 1000 }, key);
    expect(hasRepeatedKey(keys)).toBe(false);
    fc.assert(
      fc.property(fc.nat(999), fc.nat(1000), (from, at) => {
        const withCopy = [...keys];
        withCopy.splice(at, 0, Uint8Array.from(keys[from]!)); // the same bytes in another array
        expect(hasRepeatedKey(withCopy)).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  test('keys crafted to share a prefix of 3 to 31 bytes are not taken for repeats, and a real repeat among them is still found', () => {
    for (let shared = 3; shared < 32; shared++) {
      const base = key();
      const crafted = [base, ...Array.from({ length: 20 }, (_, i) => sharingPrefix(base, shared + (i % (32 - shared)), 1 + i))];
      expect(new Set(crafted.map((k) => Buffer.from(k).toString('hex'))).size).toBe(crafted.length);
      expect(hasRepeatedKey(crafted)).toBe(false);
      const mixed = [key(), ...crafted.slice(0, 3), key(), Uint8Array.from(crafted[2]!)];
      expect(hasRepeatedKey(mixed)).toBe(true);
      const repeatOfFirst = [...crafted.slice(0, 2), key(), Uint8Array.from(crafted[0]!)];
      expect(hasRepeatedKey(repeatOfFirst)).toBe(true);
    }
  });

  test('two keys that differ only past the prefix, and nothing else repeated, are no repeat', () => {
    const a = key();
    const b = Uint8Array.from(a);
    b[31] = b[31]! ^ 0x80;
    expect(hasRepeatedKey([a, key(), b])).toBe(false);
    expect(hasRepeatedKey([a, key(), b, Uint8Array.from(b)])).toBe(true);
  });

  test('keys alike in their first 30 bits and different only in the two bits after them are no repeat', () => {
    const a = key();
    const others = [0x40, 0x80, 0xc0].map((flip) => {
      const b = Uint8Array.from(a);
      b[3] = b[3]! ^ flip;
      return b;
    });
    expect(hasRepeatedKey([a, ...others])).toBe(false);
    expect(hasRepeatedKey([a, ...others, key(), Uint8Array.from(others[1]!)])).toBe(true);
  });

  test('an empty list and a single key have no repeat', () => {
    expect(hasRepeatedKey([])).toBe(false);
    expect(hasRepeatedKey([key()])).toBe(false);
  });
});
