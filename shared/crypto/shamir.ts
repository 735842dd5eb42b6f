/**
 * Shamir secret sharing (Shamir 1979) of 32-byte secrets over the prime field
 * F_p, p = 2^256 + 297 — the smallest prime above 2^256, so every 32-byte string is exactly
 * one field element (no halves, no bias, no lossy reduction). Field arithmetic comes from
 * @noble/curves (`Field`), coefficients from the OS CSPRNG.
 *
 * A share is (x, y) with x in 1..MAX_SHARES (never 0: f(0) is the secret) and y in F_p,
 * encoded as 33 big-endian bytes. Reconstruction needs `threshold` shares with distinct x;
 * it refuses fewer, repeated or out-of-range x, and a result >= 2^256 (only inconsistent
 * shares can produce one).
 */
import { randomBytes } from 'node:crypto';
import { Field } from '@noble/curves/abstract/modular.js';
import { abytes } from '../bytes.js';
import { ErrorCode, fail } from '../errors.js';

export const SHAMIR_PRIME = (1n << 256n) + 297n;
export const SHARE_BYTES = 33;
export const SECRET_BYTES = 32;
export const MAX_SHARES = 10000;
const Fp = Field(SHAMIR_PRIME);
const TWO_256 = 1n << 256n;

export interface Share {
  x: number;
  y: bigint;
}

function bytesToBig(b: Uint8Array): bigint {
  return b.length === 0 ? 0n : BigInt('0x' + Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex'));
}

function bigToBytes(v: bigint, len: number): Uint8Array {
  const hex = v.toString(16).padStart(len * 2, '0');
  if (hex.length > len * 2) fail(ErrorCode.MalformedShares, 'field element does not fit');
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

export const encodeShareValue = (y: bigint): Uint8Array => bigToBytes(y, SHARE_BYTES);
export function decodeShareValue(b: Uint8Array): bigint {
  abytes(b, SHARE_BYTES, 'share value');
  const y = bytesToBig(b);
  if (y >= SHAMIR_PRIME) fail(ErrorCode.MalformedShares, 'share value outside the field');
  return y;
}

/** Bytes drawn per random field element: 48 reduced mod p (statistical distance < 2^-128). */
const ELEMENT_SEED_BYTES = 48;

/** A uniform field element from `ELEMENT_SEED_BYTES` random bytes. */
const randomElement = (seed: Uint8Array): bigint => bytesToBig(seed) % SHAMIR_PRIME;

function checkX(x: number): void {
  if (!Number.isInteger(x) || x < 1 || x > MAX_SHARES) fail(ErrorCode.MalformedShares, `share x-coordinate must be in 1..${MAX_SHARES}`);
}

/**
 * Splits each of `secrets` (32 bytes each) with a random degree-(threshold-1) polynomial and
 * evaluates it at every x in `xs`. Returns `out[s][i]` = share of secret s at xs[i].
 */
export function split(secrets: Uint8Array[], threshold: number, xs: number[]): bigint[][] {
  if (!Number.isInteger(threshold) || threshold < 1) fail(ErrorCode.InvalidArgument, 'threshold must be >= 1');
  if (xs.length < threshold) fail(ErrorCode.InvalidArgument, 'fewer shareholders than the threshold');
  if (xs.length > MAX_SHARES) fail(ErrorCode.InvalidArgument, `at most ${MAX_SHARES} shares`);
  const seen = new Set<number>();
  for (const x of xs) {
    checkX(x);
    if (seen.has(x)) fail(ErrorCode.MalformedShares, 'repeated share x-coordinate');
    seen.add(x);
  }
  const P = SHAMIR_PRIME;
  for (const secret of secrets) abytes(secret, SECRET_BYTES, 'secret');
  // Every coefficient's randomness in one draw from the OS CSPRNG (one call per element costs
  // more than the element's arithmetic), wiped once the coefficients are made.
  const seeds = randomBytes(secrets.length * (threshold - 1) * ELEMENT_SEED_BYTES);
  let at = 0;
  const polys = secrets.map((secret) => {
    const coeffs: bigint[] = [bytesToBig(secret)];
    for (let i = 1; i < threshold; i++, at += ELEMENT_SEED_BYTES) coeffs.push(randomElement(seeds.subarray(at, at + ELEMENT_SEED_BYTES)));
    return coeffs;
  });
  seeds.fill(0);
  return polys.map((coeffs) => {
    return xs.map((x) => {
      // Horner; x is small, so r*x stays well under 2^270 and one reduction per step suffices.
      const bx = BigInt(x);
      let r = 0n;
      for (let i = coeffs.length - 1; i >= 0; i--) r = (r * bx + coeffs[i]!) % P;
      return r;
    });
  });
}

// Lagrange coefficients at 0 are a function of the x-set alone; a coordinator reconstructs
// many secrets from the same responders (every secret of classic SecAgg; a client's two secrets
// in SecAgg+, whose neighbour sets differ per client and per round), so cache them per set. The
// cache keeps the sets used last (least recently used out first): a round's sets are used
// together, and a new round's graph rarely repeats an old one, so a long-running coordinator's
// cache stays at its bound instead of filling with the sets of rounds long over.
const lagrangeCache = new Map<string, bigint[]>();
const LAGRANGE_CACHE_MAX = 256;

function lagrangeAtZero(xs: number[]): bigint[] {
  const key = xs.join(',');
  const hit = lagrangeCache.get(key);
  if (hit) {
    // Most recently used: moved to the end of the Map's insertion order.
    lagrangeCache.delete(key);
    lagrangeCache.set(key, hit);
    return hit;
  }
  const bx = xs.map(BigInt);
  // l_i(0) = prod_{j != i} x_j / (x_j - x_i); numerators and denominators, then one batch inverse.
  const nums: bigint[] = [];
  const dens: bigint[] = [];
  for (let i = 0; i < bx.length; i++) {
    let num = 1n;
    let den = 1n;
    for (let j = 0; j < bx.length; j++) {
      if (j === i) continue;
      num = Fp.mul(num, bx[j]!);
      den = Fp.mul(den, Fp.sub(bx[j]!, bx[i]!));
    }
    nums.push(num);
    dens.push(den);
  }
  const inv = Fp.invertBatch(dens);
  const coeffs = nums.map((n, i) => Fp.mul(n, inv[i]!));
  if (lagrangeCache.size >= LAGRANGE_CACHE_MAX) lagrangeCache.delete(lagrangeCache.keys().next().value!);
  lagrangeCache.set(key, coeffs);
  return coeffs;
}

/** The polynomial's value at 0 from exactly the given shares (no threshold check). */
export function interpolateAtZero(shares: Share[]): bigint {
  const xs = shares.map((s) => s.x);
  const coeffs = lagrangeAtZero(xs);
  let acc = 0n;
  for (let i = 0; i < shares.length; i++) acc = Fp.add(acc, Fp.mul(coeffs[i]!, shares[i]!.y));
  return acc;
}

/**
 * Reconstructs a 32-byte secret from at least `threshold` shares. Uses the `threshold` shares
 * with the smallest x (so a coordinator's many reconstructions hit the same Lagrange set).
 */
export function combine(shares: Share[], threshold: number): Uint8Array {
  if (!Number.isInteger(threshold) || threshold < 1) fail(ErrorCode.InvalidArgument, 'threshold must be >= 1');
  const seen = new Set<number>();
  for (const s of shares) {
    checkX(s.x);
    if (typeof s.y !== 'bigint' || s.y < 0n || s.y >= SHAMIR_PRIME) fail(ErrorCode.MalformedShares, 'share value outside the field');
    if (seen.has(s.x)) fail(ErrorCode.MalformedShares, 'repeated share x-coordinate');
    seen.add(s.x);
  }
  if (shares.length < threshold) fail(ErrorCode.InsufficientShares, `need ${threshold} shares, have ${shares.length}`);
  const use = [...shares].sort((a, b) => a.x - b.x).slice(0, threshold);
  const v = interpolateAtZero(use);
  if (v >= TWO_256) fail(ErrorCode.MalformedShares, 'shares are inconsistent');
  return bigToBytes(v, SECRET_BYTES);
}
