/**
 * Vector arithmetic in Z_{2^32}: the WebAssembly SIMD path against the plain JS path
 * (AEGIS_NO_SIMD=1) and both against a reference written here, wrap-around, and the
 * accumulator's reset / snapshot / live view.
 *
 * `simdAvailable()` reads AEGIS_NO_SIMD when called; a `VectorAccumulator` picks its path once,
 * in its constructor. `withPath` sets the variable around construction only.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { addIfFits, addInto, simdAvailable, subInto, VectorAccumulator } from '../../shared/crypto/vecops.js';
import { expandInto, prgWords } from '../../shared/crypto/prg.js';

type Path = 'simd' | 'js';
const savedNoSimd = process.env.AEGIS_NO_SIMD;
function setPath(path: Path): void {
  if (path === 'js') process.env.AEGIS_NO_SIMD = '1';
  else delete process.env.AEGIS_NO_SIMD;
}
function restoreEnv(): void {
  if (savedNoSimd === undefined) delete process.env.AEGIS_NO_SIMD;
  else process.env.AEGIS_NO_SIMD = savedNoSimd;
}
afterEach(restoreEnv);

function withPath(path: Path, length: number, chunkWords?: number): VectorAccumulator {
  setPath(path);
  try {
    return new VectorAccumulator(length, chunkWords);
  } finally {
    restoreEnv();
  }
}
const usesWasm = (acc: VectorAccumulator): boolean => Reflect.get(acc, 'wasm') !== null;

/** Little-endian bytes of `words`. */
const bytesOf = (words: Uint32Array): Uint8Array => new Uint8Array(words.buffer.slice(words.byteOffset, words.byteOffset + words.length * 4));

describe('the two paths', () => {
  test('simdAvailable() follows AEGIS_NO_SIMD at call time, and an accumulator keeps the path it was built with', () => {
    setPath('simd');
    expect(simdAvailable()).toBe(true);
    const simd = new VectorAccumulator(16);
    setPath('js');
    expect(simdAvailable()).toBe(false);
    const js = new VectorAccumulator(16);
    setPath('simd');
    expect(simdAvailable()).toBe(true);
    expect(usesWasm(simd)).toBe(true);
    expect(usesWasm(js)).toBe(false);
  });

  test('random sequences of mask expansions and vector additions give identical vectors on the SIMD and JS paths, equal to a reference', () => {
    const op = fc.record({ kind: fc.constantFrom('expand' as const, 'vector' as const), sign: fc.constantFrom(1 as const, -1 as const), seed: fc.uint8Array({ minLength: 32, maxLength: 32 }) });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3000 }),
        fc.constantFrom(1, 3, 4, 7, 16, 64, 1000, 16384),
        fc.array(op, { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        (n, chunkWords, ops, fill) => {
          const simd = withPath('simd', n, chunkWords);
          const js = withPath('js', n, chunkWords);
          const ref = new Uint32Array(n).fill(fill);
          simd.reset(ref);
          js.reset(ref);
          for (const o of ops) {
            const words = prgWords(o.seed, n);
            if (o.kind === 'expand') {
              expandInto(simd, o.seed, o.sign);
              expandInto(js, o.seed, o.sign);
            } else {
              simd.addVector(words, o.sign);
              js.addVector(words, o.sign);
            }
            for (let i = 0; i < n; i++) ref[i] = o.sign === 1 ? ref[i]! + words[i]! : ref[i]! - words[i]!;
          }
          expect(usesWasm(simd) && !usesWasm(js)).toBe(true);
          expect(Array.from(simd.vector)).toEqual(Array.from(ref));
          expect(Array.from(js.vector)).toEqual(Array.from(ref));
        },
      ),
      { numRuns: 150 },
    );
  });

  test('addBytes at any offset and of any whole number of words gives identical vectors on the SIMD and JS paths', () => {
    // The accumulator's documented contract: acc[offset + i] += word i, for a chunk of at most
    // chunkWords words at any offset. Several calls in a row, like a caller feeding chunks.
    const call = fc.record({ offset: fc.nat(), words: fc.uint32Array({ minLength: 1, maxLength: 16 }), sign: fc.constantFrom(1 as const, -1 as const) });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.array(call, { minLength: 1, maxLength: 5 }), (n, calls) => {
        const simd = withPath('simd', n, 16);
        const js = withPath('js', n, 16);
        const ref = new Uint32Array(n);
        for (const c of calls) {
          const offset = c.offset % n;
          const words = c.words.subarray(0, n - offset);
          simd.addBytes(offset, bytesOf(words), c.sign);
          js.addBytes(offset, bytesOf(words), c.sign);
          for (let i = 0; i < words.length; i++) ref[offset + i] = c.sign === 1 ? ref[offset + i]! + words[i]! : ref[offset + i]! - words[i]!;
        }
        expect(Array.from(js.vector)).toEqual(Array.from(ref));
        expect(Array.from(simd.vector)).toEqual(Array.from(ref));
      }),
      { numRuns: 300 },
    );
  });

  test.each(['simd', 'js'] as const)('on the %s path, a short addBytes chunk in the middle of the vector changes only its own words', (path) => {
    const acc = withPath(path, 32, 16);
    const first = new Uint32Array(16).map((_, i) => 0x01010101 * (i + 1));
    acc.addBytes(0, bytesOf(first), 1);
    acc.reset();
    acc.addBytes(8, bytesOf(new Uint32Array([7])), 1);
    const expected = new Uint32Array(32);
    expected[8] = 7;
    expect(Array.from(acc.vector)).toEqual(Array.from(expected));
  });

  test.each(['simd', 'js'] as const)('on the %s path, addBytes takes bytes at any alignment', (path) => {
    const acc = withPath(path, 5);
    const raw = new Uint8Array(1 + 20);
    const words = new Uint32Array([1, 2, 0xffffffff, 4, 5]);
    raw.set(bytesOf(words), 1);
    acc.reset(new Uint32Array([1, 1, 1, 1, 1]));
    acc.addBytes(0, raw.subarray(1), 1);
    expect(Array.from(acc.vector)).toEqual([2, 3, 0, 5, 6]);
    acc.addBytes(0, raw.subarray(1), -1);
    expect(Array.from(acc.vector)).toEqual([1, 1, 1, 1, 1]);
  });
});

describe('addInto / subInto', () => {
  test('wrap mod 2^32 at the edges', () => {
    const a = new Uint32Array([0xffffffff, 0x80000000, 0, 1, 0xfffffffe]);
    addInto(a, new Uint32Array([1, 0x80000000, 0, 0xffffffff, 3]));
    expect(Array.from(a)).toEqual([0, 0, 0, 0, 1]);
    const b = new Uint32Array([0, 1, 0x80000000, 5]);
    subInto(b, new Uint32Array([1, 2, 0x80000001, 5]));
    expect(Array.from(b)).toEqual([0xffffffff, 0xffffffff, 0xffffffff, 0]);
  });

  test('agree with arithmetic mod 2^32 on random vectors, and subInto undoes addInto', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 200 }).chain((n) => fc.tuple(fc.uint32Array({ minLength: n, maxLength: n }), fc.uint32Array({ minLength: n, maxLength: n }))), ([a, b]) => {
        const sum = a.slice();
        addInto(sum, b);
        for (let i = 0; i < a.length; i++) expect(sum[i]).toBe(Number((BigInt(a[i]!) + BigInt(b[i]!)) % 2n ** 32n));
        const diff = a.slice();
        subInto(diff, b);
        for (let i = 0; i < a.length; i++) expect(diff[i]).toBe(Number((BigInt(a[i]!) - BigInt(b[i]!) + 2n ** 32n) % 2n ** 32n));
        subInto(sum, b);
        expect(Array.from(sum)).toEqual(Array.from(a));
      }),
      { numRuns: 200 },
    );
  });
});

describe('addIfFits (check every word below 2^bits and add, in one pass)', () => {
  test('adds a vector whose words all fit, mod 2^32, for every bits from 1 to 32', () => {
    for (let bits = 1; bits <= 32; bits++) {
      const top = 2 ** bits - 1;
      const acc = new Uint32Array([0xffffffff, 7, 0, 123456789]);
      const src = new Uint32Array([top, 0, top, Math.floor(top / 3)]);
      expect(addIfFits(acc, src, bits)).toBe(true);
      expect(Array.from(acc)).toEqual([0xffffffff, 7, 0, 123456789].map((a, i) => Number((BigInt(a) + BigInt(src[i]!)) % 2n ** 32n)));
    }
  });

  test('refuses a vector with one word of 2^bits or more — first, middle or last — and leaves the sum exactly as it was', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 31 }), fc.integer({ min: 1, max: 60 }), fc.nat(), fc.uint32Array({ minLength: 60, maxLength: 60 }), (bits, n, at, start) => {
        const acc = start.slice(0, n);
        const before = Array.from(acc);
        const src = new Uint32Array(n).map((_, i) => start[(i * 7) % 60]! & (2 ** bits - 1));
        src[at % n] = src[at % n]! | 2 ** bits; // one bit above the allowed ones
        expect(addIfFits(acc, src, bits)).toBe(false);
        expect(Array.from(acc)).toEqual(before);
      }),
      { numRuns: 300 },
    );
  });

  test('refuses vectors of another length and bits outside 1..32', () => {
    expect(() => addIfFits(new Uint32Array(3), new Uint32Array(4), 8)).toThrow(RangeError);
    for (const bits of [0, 33, 1.5]) expect(() => addIfFits(new Uint32Array(3), new Uint32Array(3), bits)).toThrow(RangeError);
  });
});

describe.each(['simd', 'js'] as const)('VectorAccumulator on the %s path', (path) => {
  test('starts at zero; reset(from) copies the values in; reset() zeroes them again', () => {
    const acc = withPath(path, 6);
    expect(Array.from(acc.vector)).toEqual([0, 0, 0, 0, 0, 0]);
    const from = new Uint32Array([1, 2, 3, 0xffffffff, 5, 6]);
    acc.reset(from);
    expect(Array.from(acc.vector)).toEqual(Array.from(from));
    from[0] = 99; // a copy, not a view of the caller's array
    expect(acc.vector[0]).toBe(1);
    acc.reset();
    expect(Array.from(acc.vector)).toEqual([0, 0, 0, 0, 0, 0]);
  });

  test('snapshot() is a copy that later changes do not touch, while vector is the live view', () => {
    const acc = withPath(path, 4);
    acc.reset(new Uint32Array([10, 20, 30, 40]));
    const snap = acc.snapshot();
    const live = acc.vector;
    acc.addVector(new Uint32Array([1, 1, 1, 1]));
    expect(Array.from(snap)).toEqual([10, 20, 30, 40]);
    expect(Array.from(live)).toEqual([11, 21, 31, 41]);
    acc.reset();
    expect(Array.from(snap)).toEqual([10, 20, 30, 40]);
    expect(Array.from(live)).toEqual([0, 0, 0, 0]);
  });

  test('reduce(bits) leaves every word mod 2^bits, for every bits from 1 to 32 and lengths off the 4-word lanes, and refuses bits outside 1..32', () => {
    for (const length of [1, 3, 4, 5, 17, 1001]) {
      const acc = withPath(path, length);
      const words = new Uint32Array(length).map((_, i) => (Math.imul(i + 1, 0x9e3779b1) ^ 0xa5a5a5a5) >>> 0);
      for (let bits = 1; bits <= 32; bits++) {
        acc.reset(words);
        acc.reduce(bits);
        const mod = 2 ** bits;
        expect(Array.from(acc.vector)).toEqual(Array.from(words, (w) => w % mod));
        // The reduced vector stays an ordinary accumulator: adding to it is arithmetic mod 2^32.
        acc.addVector(words);
        expect(Array.from(acc.vector)).toEqual(Array.from(words, (w) => ((w % mod) + w) % 2 ** 32));
      }
      acc.reset(words);
      for (const bits of [0, 33, 1.5, Number.NaN]) expect(() => acc.reduce(bits)).toThrow(RangeError);
      expect(Array.from(acc.vector)).toEqual(Array.from(words));
    }
  });

  test('addVector with sign -1 subtracts, and wraps below zero', () => {
    const acc = withPath(path, 3);
    acc.addVector(new Uint32Array([1, 2, 3]), -1);
    expect(Array.from(acc.vector)).toEqual([0xffffffff, 0xfffffffe, 0xfffffffd]);
    acc.addVector(new Uint32Array([1, 2, 3]));
    expect(Array.from(acc.vector)).toEqual([0, 0, 0]);
  });

  test('refuses vectors of another length and lengths outside 1..2^28, leaving the vector untouched', () => {
    const acc = withPath(path, 3);
    acc.reset(new Uint32Array([7, 8, 9]));
    expect(() => acc.reset(new Uint32Array(4))).toThrow(RangeError);
    expect(() => acc.addVector(new Uint32Array(2))).toThrow(RangeError);
    expect(Array.from(acc.vector)).toEqual([7, 8, 9]);
    for (const n of [0, -1, 1.5, 2 ** 28 + 1, Number.NaN]) expect(() => withPath(path, n)).toThrow(RangeError);
  });
});
