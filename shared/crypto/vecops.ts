/**
 * Vector arithmetic in Z_{2^32} for mask expansion and running sums.
 *
 * The hot loop of secure aggregation is "acc += keystream (mod 2^32)" over millions of words.
 * A plain JS loop over Uint32Array does ~2.9 GB/s here; the same loop in WebAssembly SIMD
 * (i32x4.add, 4 lanes) is several times faster, which lifts AES-CTR mask expansion from ~40%
 * to ~60% of raw keystream speed. The module is 238 bytes, the binary encoding of this text
 * format (as `wat2wasm --enable-simd` writes it), embedded as base64 (test/crypto/vecops.test.ts
 * checks it against the JS reference):
 *
 *   (module
 *     (memory (export "memory") 1)
 *     (func (export "add") (param $dst i32) (param $src i32) (param $bytes i32)
 *       (local $end i32)
 *       (local.set $end (i32.add (local.get $dst) (local.get $bytes)))
 *       (block $out (loop $top
 *         (br_if $out (i32.ge_u (local.get $dst) (local.get $end)))
 *         (v128.store (local.get $dst)
 *           (i32x4.add (v128.load (local.get $dst)) (v128.load (local.get $src))))
 *         (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
 *         (local.set $src (i32.add (local.get $src) (i32.const 16)))
 *         (br $top))))
 *     (func (export "sub") ...same with i32x4.sub...)
 *     (func (export "and") (param $dst i32) (param $bytes i32) (param $mask i32)
 *       (local $end i32)
 *       (local.set $end (i32.add (local.get $dst) (local.get $bytes)))
 *       (block $out (loop $top
 *         (br_if $out (i32.ge_u (local.get $dst) (local.get $end)))
 *         (v128.store (local.get $dst)
 *           (v128.and (v128.load (local.get $dst)) (i32x4.splat (local.get $mask))))
 *         (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
 *         (br $top)))))
 *
 * Where WebAssembly SIMD is missing, the JS loops below do the same work.
 */

import { reduceInto } from './bitpack.js';

const SIMD_WASM_BASE64 =
  'AGFzbQEAAAABBwFgA39/fwADBAMAAAAFAwEAAQccBAZtZW1vcnkCAANhZGQAAANzdWIAAQNhbmQAAgqxAQM9AQF/IAAgAmohAwJAA0AgACADTw0BIAAgAP0ABAAgAf0ABAD9rgH9CwQAIABBEGohACABQRBqIQEMAAsLCz0BAX8gACACaiEDAkADQCAAIANPDQEgACAA/QAEACAB/QAEAP2xAf0LBAAgAEEQaiEAIAFBEGohAQwACwsLMwEBfyAAIAFqIQMCQANAIAAgA08NASAAIAD9AAQAIAL9Ef1O/QsEACAAQRBqIQAMAAsLCw==';

interface SimdExports {
  memory: WebAssembly.Memory;
  add(dst: number, src: number, bytes: number): void;
  sub(dst: number, src: number, bytes: number): void;
  and(dst: number, bytes: number, mask: number): void;
}

let simdModule: WebAssembly.Module | null | undefined;
function simd(): WebAssembly.Module | null {
  if (simdModule === undefined) {
    const bytes = Buffer.from(SIMD_WASM_BASE64, 'base64');
    simdModule = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  }
  return simdModule;
}

/** `AEGIS_NO_SIMD=1` forces the JS loops (for tests of the fallback and for comparison). */
export const simdAvailable = (): boolean => process.env.AEGIS_NO_SIMD !== '1' && simd() !== null;

export function addInto(acc: Uint32Array, src: Uint32Array): void {
  if (src.length !== acc.length) throw new RangeError('vector lengths differ');
  const n = acc.length;
  // Stores into a Uint32Array wrap mod 2^32 (ToUint32), so no explicit masking is needed.
  for (let i = 0; i < n; i++) acc[i]! += src[i]!;
}

export function subInto(acc: Uint32Array, src: Uint32Array): void {
  if (src.length !== acc.length) throw new RangeError('vector lengths differ');
  const n = acc.length;
  for (let i = 0; i < n; i++) acc[i]! -= src[i]!;
}

/**
 * acc += src (mod 2^32) when every word of `src` is below 2^bits, in one pass over `src`; false,
 * with `acc` as it was, otherwise. The coordinator adds each masked input on arrival, and a
 * vector read once from memory instead of twice (checked, then added) is most of what that
 * costs. A refused vector is subtracted again, which restores `acc` exactly (mod 2^32).
 */
export function addIfFits(acc: Uint32Array, src: Uint32Array, bits: number): boolean {
  if (src.length !== acc.length) throw new RangeError('vector lengths differ');
  if (!Number.isInteger(bits) || bits < 1 || bits > 32) throw new RangeError('bits must be an integer in 1..32');
  const n = acc.length;
  let high = 0;
  for (let i = 0; i < n; i++) {
    const x = src[i]!;
    high |= x;
    acc[i]! += x;
  }
  if (bits === 32 || high >>> bits === 0) return true;
  subInto(acc, src);
  return false;
}

const PAGE = 65536;
const align16 = (n: number): number => (n + 15) & ~15;

/**
 * A length-`length` vector in Z_{2^32} with a scratch area for one chunk of input, both inside
 * one WebAssembly memory (or plain typed arrays without SIMD). One per thread; reuse it across
 * clients with `reset()`: no allocation on the hot path.
 */
export class VectorAccumulator {
  readonly length: number;
  /** Words per chunk that `addBytes` / `subBytes` take at once. */
  readonly chunkWords: number;
  private readonly wasm: SimdExports | null;
  private readonly accOffset = 0;
  private readonly scratchOffset: number;
  private mem8: Uint8Array;
  private accView: Uint32Array;

  constructor(length: number, chunkWords = 16384) {
    if (!Number.isInteger(length) || length < 1 || length > 2 ** 28) throw new RangeError('vector length out of range');
    this.length = length;
    this.chunkWords = chunkWords;
    this.scratchOffset = align16(length * 4);
    const mod = simdAvailable() ? simd() : null;
    if (mod) {
      const pages = Math.ceil((this.scratchOffset + chunkWords * 4 + 16) / PAGE);
      // The module declares its own 1-page memory; grow it to fit (one instance per accumulator).
      const ex = new WebAssembly.Instance(mod, {}).exports as unknown as SimdExports;
      const have = ex.memory.buffer.byteLength / PAGE;
      if (pages > have) ex.memory.grow(pages - have);
      this.wasm = ex;
      this.mem8 = new Uint8Array(ex.memory.buffer);
    } else {
      this.wasm = null;
      this.mem8 = new Uint8Array(this.scratchOffset + chunkWords * 4 + 16);
    }
    this.accView = new Uint32Array(this.mem8.buffer, this.accOffset, length);
  }

  /** The live vector (a view: copy it with `snapshot()` before the next `reset()`). */
  get vector(): Uint32Array {
    return this.accView;
  }

  reset(from?: Uint32Array): void {
    if (from) {
      if (from.length !== this.length) throw new RangeError('length mismatch');
      this.accView.set(from);
    } else this.accView.fill(0);
  }

  snapshot(): Uint32Array {
    return this.accView.slice();
  }

  /** Every word mod 2^bits, in place (bits in 1..32; 32 leaves the vector as it is). */
  reduce(bits: number): void {
    if (!Number.isInteger(bits) || bits < 1 || bits > 32) throw new RangeError('bits must be an integer in 1..32');
    if (bits === 32) return;
    // Whole 16-byte lanes: the last lane's extra words are the padding before the scratch area.
    if (this.wasm) this.wasm.and(this.accOffset, align16(this.length * 4), (1 << bits) - 1);
    else reduceInto(this.accView, bits);
  }

  /**
   * acc[offsetWords + i] += word i of `bytes` (little-endian uint32), for a chunk of at most
   * `chunkWords` words. `bytes.length` must be a multiple of 4.
   */
  addBytes(offsetWords: number, bytes: Uint8Array, sign: 1 | -1): void {
    const words = bytes.length >>> 2;
    if (this.wasm) {
      this.mem8.set(bytes, this.scratchOffset);
      // Whole 16-byte lanes: zero the scratch past the chunk so the extra 1-3 words of the last
      // lane add nothing — whether they fall on the next real words or on the padding.
      const n = align16(bytes.length);
      if (n !== bytes.length) this.mem8.fill(0, this.scratchOffset + bytes.length, this.scratchOffset + n);
      if (sign === 1) this.wasm.add(this.accOffset + offsetWords * 4, this.scratchOffset, n);
      else this.wasm.sub(this.accOffset + offsetWords * 4, this.scratchOffset, n);
      return;
    }
    const src = bytes.byteOffset % 4 === 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset, words) : new Uint32Array(bytes.slice().buffer);
    const acc = this.accView;
    if (sign === 1) for (let i = 0; i < words; i++) acc[offsetWords + i]! += src[i]!;
    else for (let i = 0; i < words; i++) acc[offsetWords + i]! -= src[i]!;
  }

  addVector(v: Uint32Array, sign: 1 | -1 = 1): void {
    if (v.length !== this.length) throw new RangeError('length mismatch');
    if (sign === 1) addInto(this.accView, v);
    else subInto(this.accView, v);
  }
}
