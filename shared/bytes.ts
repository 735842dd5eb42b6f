/** Byte helpers shared by every module: input asserts, encodings, constant-time comparison. */
import { timingSafeEqual } from 'node:crypto';
import { ErrorCode, fail } from './errors.js';

/** Asserts `b` is a Uint8Array (Buffer included), optionally of an exact length. */
export function abytes(b: unknown, len?: number, what = 'value'): Uint8Array {
  if (!(b instanceof Uint8Array)) fail(ErrorCode.InvalidArgument, `${what} must be bytes`);
  if (len !== undefined && b.length !== len) {
    fail(ErrorCode.BadKeyLength, `${what} must be ${len} bytes, got ${b.length}`);
  }
  return b;
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function u32be(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) fail(ErrorCode.InvalidArgument, 'u32 out of range');
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, false);
  return b;
}

const enc = new TextEncoder();
export const utf8 = (s: string): Uint8Array => enc.encode(s);

/**
 * Unambiguous encoding of a tuple: each item as a 4-byte big-endian length and its bytes.
 * Used for every signed transcript and every AAD, so ("ab","c") never equals ("a","bc").
 * One allocation: transcripts over a whole survivor list are built on hot paths.
 */
export function lengthPrefixed(...items: (Uint8Array | string)[]): Uint8Array {
  let size = 0;
  for (const it of items) size += 4 + (typeof it === 'string' ? Buffer.byteLength(it) : it.length);
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (const it of items) {
    if (typeof it === 'string') {
      const n = out.write(it, o + 4, 'utf8');
      out.writeUInt32BE(n, o);
      o += 4 + n;
    } else {
      out.writeUInt32BE(it.length, o);
      out.set(it, o + 4);
      o += 4 + it.length;
    }
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** Constant-time equality for secrets; lengths are public. */
export function ctEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}

/** Byte equality of public data (not constant time: for secrets use ctEqual). */
export const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && Buffer.compare(a, b) === 0;

/** True when every byte is zero, without an early exit. */
export function isAllZero(b: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < b.length; i++) acc |= b[i]!;
  return acc === 0;
}

/** The bytes of a typed array (or any view), in place: no copy. */
export const bytesOf = (v: ArrayBufferView): Uint8Array => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
export const toHex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');

/** The bytes as a string of one character per byte, read in place: a cheap exact map key for byte strings. */
export const bytesKey = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');
export function fromHex(h: string): Uint8Array {
  if (h.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(h)) fail(ErrorCode.InvalidArgument, 'malformed hex');
  return new Uint8Array(Buffer.from(h, 'hex'));
}
