/**
 * The randomized Hadamard rotation of the distributed discrete Gaussian mechanism (Kairouz, Liu
 * and Steinke, ICML 2021, §4.2; Suresh et al., ICML 2017): x ↦ (1/√D) · H_D · diag(ξ) · x, where
 * D is the dimension padded to a power of two, H_D the ±1 Walsh–Hadamard matrix and ξ ∈ {±1}^D
 * public random signs. The map is orthonormal (it preserves L2 norms exactly in real
 * arithmetic), so the clip norm bounds the rotated vector too; what it buys is flatness: each
 * rotated coordinate is a Rademacher sum with variance ||x||²/D, so no coordinate carries much
 * more than its share of the norm. That is what lets a small modulus hold the sum without
 * wrapping (see calibrate.ts), and spreads the rounding error evenly.
 *
 * The signs are public per-round randomness: every client of a round must use the same ξ (the
 * coordinator un-rotates the sum once), so they come from the round's public seed through
 * HKDF-SHA256 (label `aegis/v1/dp-rotation`) and the AES-256-CTR PRG (shared/crypto/prg.ts).
 * Privacy never depends on ξ: the accountant holds for every orthonormal map.
 *
 * Float64 throughout; the inverse is exact up to rounding (about 1e-15 relative per level).
 */
import { abytes, utf8 } from '../bytes.js';
import { hkdfSha256 } from '../crypto/hkdf.js';
import { prgWords } from '../crypto/prg.js';
import { ErrorCode, fail } from '../errors.js';

/** HKDF info label of the rotation's sign key. */
export const ROTATION_LABEL = 'aegis/v1/dp-rotation';
/** Largest padded dimension: 2^26 values (512 MiB of Float64 at most; far above any model here). */
export const MAX_PADDED_DIM = 2 ** 26;

/** The smallest power of two >= dim (dim >= 1). */
export function paddedDim(dim: number): number {
  if (!Number.isInteger(dim) || dim < 1 || dim > MAX_PADDED_DIM) fail(ErrorCode.InvalidArgument, `dimension must be an integer in 1..${MAX_PADDED_DIM}`);
  let d = 1;
  while (d < dim) d *= 2;
  return d;
}

/**
 * The ±1 signs ξ for a round: bit i of the PRG stream keyed by HKDF(seed, label) chooses −1.
 * `seed` is the round's public 32-byte seed (e.g. the session id).
 */
export function rotationSigns(seed: Uint8Array, padded: number): Int8Array {
  abytes(seed, 32, 'rotation seed');
  const key = hkdfSha256(seed, new Uint8Array(0), utf8(ROTATION_LABEL), 32);
  const words = prgWords(key, Math.ceil(padded / 32));
  const signs = new Int8Array(padded);
  for (let i = 0; i < padded; i++) signs[i] = (words[i >>> 5]! >>> (i & 31)) & 1 ? -1 : 1;
  return signs;
}

/** In-place fast Walsh–Hadamard transform scaled by 1/√D: orthonormal and its own inverse. */
export function fwhtNormalized(v: Float64Array): void {
  const n = v.length;
  if (n === 0 || (n & (n - 1)) !== 0) fail(ErrorCode.InvalidArgument, 'Walsh–Hadamard length must be a power of two');
  for (let h = 1; h < n; h *= 2) {
    for (let i = 0; i < n; i += 2 * h) {
      for (let j = i; j < i + h; j++) {
        const a = v[j]!;
        const b = v[j + h]!;
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
  const s = 1 / Math.sqrt(n);
  for (let i = 0; i < n; i++) v[i]! *= s;
}

/** (1/√D) H diag(ξ) x, for x of any length <= signs.length (zero-padded). A fresh Float64Array of length D. */
export function rotate(x: ArrayLike<number>, signs: Int8Array): Float64Array {
  if (x.length > signs.length) fail(ErrorCode.InvalidArgument, 'vector longer than the rotation');
  const v = new Float64Array(signs.length);
  for (let i = 0; i < x.length; i++) v[i] = x[i]! * signs[i]!;
  fwhtNormalized(v);
  return v;
}

/** The inverse rotation diag(ξ) (1/√D) H y, in place on y (length D). */
export function unrotateInPlace(y: Float64Array, signs: Int8Array): void {
  if (y.length !== signs.length) fail(ErrorCode.InvalidArgument, 'vector length does not match the rotation');
  fwhtNormalized(y);
  for (let i = 0; i < y.length; i++) y[i]! *= signs[i]!;
}
