/**
 * Words of Z_{2^r} bit-packed for the wire: r bits per word, r in 1..32.
 *
 * A round's masked inputs are summed in Z_{2^32}, but the sum only needs r bits (r = ⌈log2 n⌉ + b
 * for n clients of b-bit values, or a DP round's modulus). 2^r divides 2^32, so reducing every
 * word mod 2^r before it is sent, and the sum mod 2^r at the end, gives exactly the sum mod 2^r:
 * the masks still cancel. A packed vector then carries m · r bits instead of m · 32.
 *
 * Layout: word i occupies bits [i·r, (i+1)·r) of the stream, least significant bit first, and
 * the stream is stored least significant byte first: ⌈m·r / 8⌉ bytes, the unused high bits of
 * the last byte zero. One canonical encoding per vector — a decoder refuses anything else.
 *
 * Both loops move whole 32-bit words (a little-endian view of the stream) rather than bytes.
 */
import { AegisError, ErrorCode } from '../errors.js';

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Bytes of `count` words packed at `bits` bits each. */
export const packedBytes = (count: number, bits: number): number => Math.ceil((count * bits) / 8);

const assertBits = (bits: number): void => {
  if (!Number.isInteger(bits) || bits < 1 || bits > 32) throw new AegisError(ErrorCode.InvalidArgument, `packing bits must be an integer in 1..32, got ${bits}`);
};

/** mask of the low `bits` bits, as an int32 pattern (bits = 32: all ones). */
const lowMask = (bits: number): number => (bits === 32 ? -1 : (1 << bits) - 1);

/** v[i] mod 2^bits, in place. */
export function reduceInto(v: Uint32Array, bits: number): void {
  assertBits(bits);
  if (bits === 32) return;
  const mask = lowMask(bits);
  for (let i = 0; i < v.length; i++) v[i]! &= mask;
}

/** True when every word of `v` is below 2^bits (is a word of Z_{2^bits} as it stands). */
export function fitsBits(v: Uint32Array, bits: number): boolean {
  assertBits(bits);
  if (bits === 32) return true;
  let high = 0;
  for (let i = 0; i < v.length; i++) high |= v[i]!;
  return high >>> bits === 0;
}

/** Swaps each 32-bit word's bytes in place (a big-endian host's view of the little-endian stream). */
function swapWords(w: Uint32Array): void {
  for (let i = 0; i < w.length; i++) {
    const x = w[i]!;
    w[i] = ((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24);
  }
}

/** The low `bits` bits of every word of `v`, packed: ⌈v.length·bits / 8⌉ bytes. */
export function packWords(v: Uint32Array, bits: number): Uint8Array {
  assertBits(bits);
  const n = v.length;
  const out = new Uint32Array(Math.ceil((n * bits) / 32));
  if (bits === 32) {
    out.set(v);
  } else {
    const mask = lowMask(bits);
    let cur = 0;
    let used = 0;
    let o = 0;
    for (let i = 0; i < n; i++) {
      const x = v[i]! & mask;
      cur |= x << used;
      used += bits;
      if (used >= 32) {
        out[o++] = cur;
        used -= 32;
        // The bits of x that did not fit in the word just written (none when it ended exactly).
        cur = used === 0 ? 0 : x >>> (bits - used);
      }
    }
    if (used > 0) out[o] = cur;
  }
  if (!LITTLE_ENDIAN) swapWords(out);
  return new Uint8Array(out.buffer, 0, packedBytes(n, bits));
}

let scratch = new Uint32Array(0);

/**
 * The scratch buffer of `unpackWords`, at least `words` long: one per thread, grown to the largest
 * packing seen and kept (no larger than the largest message the process accepts, since every
 * packing arrives in one; the copy it replaces was as large, only shorter-lived).
 */
function scratchWords(words: number): Uint32Array {
  if (scratch.length < words) scratch = new Uint32Array(words);
  return scratch;
}

/**
 * `count` words of `bits` bits from their packing. Refuses (invalid-argument) a length other than
 * ⌈count·bits / 8⌉ and a set bit in the padding: every vector has exactly one packing.
 */
export function unpackWords(packed: Uint8Array, count: number, bits: number): Uint32Array {
  assertBits(bits);
  if (!Number.isInteger(count) || count < 0) throw new AegisError(ErrorCode.InvalidArgument, `a packed vector's word count must be a non-negative integer, got ${count}`);
  const want = packedBytes(count, bits);
  if (packed.length !== want) throw new AegisError(ErrorCode.InvalidArgument, `${count} words of ${bits} bits take ${want} bytes, got ${packed.length}`);
  const pad = want * 8 - count * bits;
  if (pad > 0 && packed[want - 1]! >>> (8 - pad) !== 0) throw new AegisError(ErrorCode.InvalidArgument, 'a packed vector has bits set in its padding');
  // An aligned copy with whole words (the stream's last word may be partial), and one zero word
  // past the end, so that every word's next word can be read. The copy lives in a scratch buffer
  // kept between calls (it never leaves this function): a coordinator unpacks one upload after
  // another, and a fresh copy each time was garbage as large as the upload.
  const used = Math.ceil(want / 4) + 1;
  const words = scratchWords(used);
  const bytes = new Uint8Array(words.buffer, 0, used * 4);
  bytes.set(packed);
  bytes.fill(0, want);
  if (!LITTLE_ENDIAN) swapWords(words.subarray(0, used));
  const out = new Uint32Array(count);
  if (bits === 32) {
    out.set(words.subarray(0, count));
    return out;
  }
  // Word i starts at bit p = i·r: bits s = p mod 32 onwards of stream word p / 32, then the low
  // bits of the next one. Without a branch: the next word shifted left by 32 - s, written as
  // (<< 1) << (31 - s) so that s = 0 shifts it out entirely (a JavaScript shift count is mod 32).
  // p < 2^31: at most (2^26 + 1) words of at most 31 bits (params.ts bounds the dimension).
  const mask = lowMask(bits);
  for (let i = 0, p = 0; i < count; i++, p += bits) {
    const w = p >>> 5;
    const s = p & 31;
    out[i] = ((words[w]! >>> s) | ((words[w + 1]! << 1) << (31 - s))) & mask;
  }
  return out;
}
