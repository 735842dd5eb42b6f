/**
 * The mask PRG of DESIGN.md §2: AES-256-CTR keystream from an all-zero 128-bit counter block,
 * read as little-endian uint32 words. Keys are 32-byte outputs of HKDF (pairwise s_uv, or the
 * self-mask key derived from b_u), each used for exactly one keystream.
 *
 * `expandInto` is the hot path: it streams the keystream in cache-sized chunks straight into an
 * accumulator (add or subtract mod 2^32) and never materialises the whole mask.
 */
import { createCipheriv } from 'node:crypto';
import { endianness } from 'node:os';
import { abytes } from '../bytes.js';
import { VectorAccumulator } from './vecops.js';

if (endianness() !== 'LE') throw new Error('Aegis needs a little-endian platform (masks are little-endian uint32 words)');

const ZERO_IV = Buffer.alloc(16);
let zeros = Buffer.alloc(0);
function zeroBytes(n: number): Buffer {
  if (zeros.length < n) zeros = Buffer.alloc(n);
  return zeros.subarray(0, n);
}

/** The first `words` keystream words for `key`, as a fresh Uint32Array (tests, small uses). */
export function prgWords(key: Uint8Array, words: number): Uint32Array {
  abytes(key, 32, 'PRG key');
  const c = createCipheriv('aes-256-ctr', key, ZERO_IV);
  const out = c.update(zeroBytes(words * 4));
  return new Uint32Array(out.buffer.slice(out.byteOffset, out.byteOffset + words * 4));
}

/** acc += sign * PRG(key) over the accumulator's whole length (mod 2^32). */
export function expandInto(acc: VectorAccumulator, key: Uint8Array, sign: 1 | -1): void {
  abytes(key, 32, 'PRG key');
  const c = createCipheriv('aes-256-ctr', key, ZERO_IV);
  const chunk = acc.chunkWords;
  const z = zeroBytes(chunk * 4);
  for (let off = 0; off < acc.length; off += chunk) {
    const n = Math.min(chunk, acc.length - off);
    acc.addBytes(off, c.update(n === chunk ? z : z.subarray(0, n * 4)), sign);
  }
}

/** Raw keystream throughput baseline: `bytes` of AES-256-CTR keystream, discarded. */
export function keystreamOnly(key: Uint8Array, bytes: number, chunkBytes = 65536): void {
  const c = createCipheriv('aes-256-ctr', key, ZERO_IV);
  const z = zeroBytes(chunkBytes);
  for (let off = 0; off < bytes; off += chunkBytes) c.update(off + chunkBytes <= bytes ? z : z.subarray(0, bytes - off));
}
