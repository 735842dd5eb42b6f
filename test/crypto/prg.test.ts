/**
 * The mask PRG (DESIGN.md §2): AES-256-CTR from an all-zero counter block, read as
 * little-endian uint32. Checked against an independent construction from AES-256-ECB of the
 * counter blocks 0, 1, 2, ..., and `expandInto` against that reference for lengths that end
 * mid-chunk and mid-block.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { createCipheriv, createHash } from 'node:crypto';
import { ErrorCode, isAegisError } from '../../shared/errors.js';
import { expandInto, prgWords } from '../../shared/crypto/prg.js';
import { VectorAccumulator } from '../../shared/crypto/vecops.js';

/** Keystream words 0..n-1: AES-256-ECB of the 16-byte big-endian counters 0, 1, 2, ... */
function referenceWords(key: Uint8Array, n: number): Uint32Array {
  const blocks = Math.ceil(n / 4);
  const counters = Buffer.alloc(blocks * 16);
  for (let i = 0; i < blocks; i++) counters.writeUInt32BE(i, i * 16 + 12);
  const ecb = createCipheriv('aes-256-ecb', key, null);
  ecb.setAutoPadding(false);
  const ks = Buffer.concat([ecb.update(counters), ecb.final()]);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = ks.readUInt32LE(i * 4);
  return out;
}

const keyFor = (label: string): Uint8Array => new Uint8Array(createHash('sha256').update(label).digest());

/** A start vector with every kind of value, wrap-prone ones included. */
function startVector(n: number): Uint32Array {
  const v = new Uint32Array(n);
  for (let i = 0; i < n; i++) v[i] = i % 3 === 0 ? 0xffffffff - i : Math.imul(i, 0x9e3779b1) >>> 0;
  return v;
}

const LENGTHS = [1, 3, 5, 16383, 16384, 16385, 40001];
const savedNoSimd = process.env.AEGIS_NO_SIMD;
afterEach(() => {
  if (savedNoSimd === undefined) delete process.env.AEGIS_NO_SIMD;
  else process.env.AEGIS_NO_SIMD = savedNoSimd;
});

describe('prgWords', () => {
  test.each([0, 1, 3, 4, 5, 1000, 16385])('the first %i words equal AES-256-ECB of the big-endian counter blocks 0, 1, 2, ... read as little-endian uint32', (n) => {
    const key = keyFor(`prg ${n}`);
    expect(Array.from(prgWords(key, n))).toEqual(Array.from(referenceWords(key, n)));
  });

  test('the keystream is a prefix code: fewer words are the start of more words', () => {
    const key = keyFor('prefix');
    const long = prgWords(key, 1027);
    expect(Array.from(prgWords(key, 5))).toEqual(Array.from(long.subarray(0, 5)));
    expect(Array.from(prgWords(key, 1026))).toEqual(Array.from(long.subarray(0, 1026)));
  });

  test('different keys give different streams, and the all-zero key gives the known AES-256 encryption of the zero block', () => {
    expect(Array.from(prgWords(keyFor('a'), 8))).not.toEqual(Array.from(prgWords(keyFor('b'), 8)));
    // FIPS-197-style known answer: AES-256 with the zero key on the zero block.
    const zeroBlock = Buffer.from(prgWords(new Uint8Array(32), 4).buffer).toString('hex');
    expect(zeroBlock).toBe('dc95c078a2408989ad48a21492842087');
  });

  test('a key that is not 32 bytes is refused with bad-key-length', () => {
    for (const len of [0, 16, 31, 33]) {
      let err: unknown;
      try {
        prgWords(new Uint8Array(len), 4);
      } catch (e) {
        err = e;
      }
      expect(isAegisError(err, ErrorCode.BadKeyLength)).toBe(true);
    }
  });
});

describe.each([
  ['WebAssembly SIMD', undefined],
  ['plain JS (AEGIS_NO_SIMD=1)', '1'],
])('expandInto on the %s path', (_name, noSimd) => {
  const accumulator = (n: number, chunkWords?: number): VectorAccumulator => {
    if (noSimd === undefined) delete process.env.AEGIS_NO_SIMD;
    else process.env.AEGIS_NO_SIMD = noSimd;
    return new VectorAccumulator(n, chunkWords);
  };

  test('the accumulator really runs on this path', () => {
    expect(Reflect.get(accumulator(8), 'wasm') !== null).toBe(noSimd === undefined);
  });

  test.each(LENGTHS)('sign +1 adds exactly the keystream words mod 2^32 over a length of %i', (n) => {
    const key = keyFor(`plus ${n}`);
    const start = startVector(n);
    const acc = accumulator(n);
    acc.reset(start);
    expandInto(acc, key, 1);
    const ks = referenceWords(key, n);
    const got = acc.snapshot();
    const bad: number[] = [];
    for (let i = 0; i < n; i++) if (got[i] !== ((start[i]! + ks[i]!) >>> 0)) bad.push(i);
    expect(bad).toEqual([]);
  });

  test.each(LENGTHS)('sign -1 subtracts exactly the keystream words mod 2^32 over a length of %i', (n) => {
    const key = keyFor(`minus ${n}`);
    const start = startVector(n);
    const acc = accumulator(n);
    acc.reset(start);
    expandInto(acc, key, -1);
    const ks = referenceWords(key, n);
    const got = acc.snapshot();
    const bad: number[] = [];
    for (let i = 0; i < n; i++) if (got[i] !== ((start[i]! - ks[i]!) >>> 0)) bad.push(i);
    expect(bad).toEqual([]);
  });

  test.each(LENGTHS)('+1 then -1 with the same key returns a vector of length %i to where it started', (n) => {
    const key = keyFor(`roundtrip ${n}`);
    const start = startVector(n);
    const acc = accumulator(n);
    acc.reset(start);
    expandInto(acc, key, 1);
    expect(Array.from(acc.vector)).not.toEqual(Array.from(start));
    expandInto(acc, key, -1);
    expect(Array.from(acc.vector)).toEqual(Array.from(start));
  });

  test('pairwise masks cancel: u adds PRG(s_uv), v subtracts it, and the sum is the sum of the inputs', () => {
    const n = 20011;
    const key = keyFor('s_uv');
    const acc = accumulator(n);
    const xu = startVector(n);
    const xv = startVector(n).map((x) => x ^ 0x5a5a5a5a);
    acc.reset(xu);
    expandInto(acc, key, 1);
    acc.addVector(xv);
    expandInto(acc, key, -1);
    const expected = new Uint32Array(n);
    for (let i = 0; i < n; i++) expected[i] = xu[i]! + xv[i]!;
    expect(Array.from(acc.vector)).toEqual(Array.from(expected));
  });

  test.each([
    [1, 7],
    [5, 13],
    [1001, 4099],
    [16, 16],
    [4, 17],
  ])('a chunk of %i words (not the default) still adds exactly the keystream over %i words', (chunkWords, n) => {
    const key = keyFor(`chunk ${chunkWords} ${n}`);
    const acc = accumulator(n, chunkWords);
    expandInto(acc, key, 1);
    expect(Array.from(acc.vector)).toEqual(Array.from(referenceWords(key, n)));
    expandInto(acc, key, -1);
    expect(acc.vector.every((w) => w === 0)).toBe(true);
  });
});
