/**
 * Shamir secret sharing over F_p, p = 2^256 + 297: threshold behaviour under random
 * parameters (fast-check), refusal of malformed share sets, field exactness for every 32-byte
 * string, primality of p checked here from scratch, and the 10,000-share limit.
 */
import { describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { ErrorCode } from '../../shared/errors.js';
import {
  combine,
  decodeShareValue,
  encodeShareValue,
  interpolateAtZero,
  MAX_SHARES,
  SHAMIR_PRIME,
  type Share,
  split,
} from '../../shared/crypto/shamir.js';
import { codeOf } from '../support/codes.js';

const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const big = (b: Uint8Array): bigint => BigInt('0x' + (toHex(b) || '0'));


/** Shares of one secret at `xs`, as (x, y) pairs. */
function sharesOf(secret: Uint8Array, t: number, xs: number[]): Share[] {
  const [ys] = split([secret], t, xs);
  return xs.map((x, i) => ({ x, y: ys![i]! }));
}

/** A random subset of `k` items (Fisher–Yates driven by fast-check's seed list). */
function pick<T>(items: T[], k: number, seeds: number[]): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = (seeds[i % seeds.length]! + i) % (i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, k);
}

// Random threshold t in 2..12, n in t..30, n distinct x in 1..10000, and a 32-byte secret.
const scenario = fc
  .integer({ min: 2, max: 12 })
  .chain((t) =>
    fc.record({
      t: fc.constant(t),
      xs: fc.uniqueArray(fc.integer({ min: 1, max: MAX_SHARES }), { minLength: t, maxLength: 30 }),
      secret: fc.uint8Array({ minLength: 32, maxLength: 32 }),
      seeds: fc.array(fc.nat(), { minLength: 1, maxLength: 30 }),
    }),
  );

describe('Shamir threshold behaviour (fast-check)', () => {
  test('any t of the n shares reconstruct the secret, and so does any larger set', () => {
    fc.assert(
      fc.property(scenario, ({ t, xs, secret, seeds }) => {
        const shares = sharesOf(secret, t, xs);
        expect(toHex(combine(pick(shares, t, seeds), t))).toBe(toHex(secret));
        expect(toHex(combine(pick(shares, t, seeds.map((s) => s + 7)), t))).toBe(toHex(secret));
        expect(toHex(combine(shares, t))).toBe(toHex(secret));
      }),
      { numRuns: 150 },
    );
  });

  test('t − 1 shares are refused with insufficient-shares, and interpolating them does not give the secret', () => {
    fc.assert(
      fc.property(scenario, ({ t, xs, secret, seeds }) => {
        const shares = sharesOf(secret, t, xs);
        const few = pick(shares, t - 1, seeds);
        expect(codeOf(() => combine(few, t))).toBe(ErrorCode.InsufficientShares);
        expect(interpolateAtZero(few)).not.toBe(big(secret));
        // …while the same x-set plus one more share does.
        const oneMore = shares.find((s) => !few.includes(s))!;
        expect(interpolateAtZero([...few, oneMore])).toBe(big(secret));
      }),
      { numRuns: 150 },
    );
  });

  test('several secrets split together are independent: each reconstructs, and their shares differ', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 32, maxLength: 32 }), { minLength: 2, maxLength: 4 }), (secrets) => {
        const xs = [3, 9, 27, 81];
        const all = split(secrets, 3, xs);
        expect(all).toHaveLength(secrets.length);
        all.forEach((ys, s) => {
          const shares = xs.map((x, i) => ({ x, y: ys[i]! }));
          expect(toHex(combine(shares.slice(1), 3))).toBe(toHex(secrets[s]!));
        });
        expect(all[0]![0]).not.toBe(all[1]![0]);
      }),
      { numRuns: 50 },
    );
  });

  test('one secret split twice in one call gets two independent polynomials (no coefficient shared)', () => {
    const secret = new Uint8Array(randomBytes(32));
    const xs = Array.from({ length: 19 }, (_, i) => i + 1);
    const [a, b] = split([secret, secret], 10, xs);
    // Equal shares at any x would mean equal polynomials there; with fresh coefficients each of
    // the 19 points differs (a chance collision is 2^-256).
    xs.forEach((_, i) => expect(a![i]).not.toBe(b![i]));
    // Both still reconstruct the secret, each from its own ten shares.
    expect(toHex(combine(xs.slice(0, 10).map((x, i) => ({ x, y: a![i]! })), 10))).toBe(toHex(secret));
    expect(toHex(combine(xs.slice(9).map((x, i) => ({ x, y: b![i + 9]! })), 10))).toBe(toHex(secret));
  });
});

describe('Shamir input checks', () => {
  const secret = new Uint8Array(randomBytes(32));
  const shares = sharesOf(secret, 3, [1, 2, 3, 4, 5]);

  test('a repeated x-coordinate is refused with malformed-shares, when combining and when splitting', () => {
    const dup = [shares[0]!, shares[1]!, { x: shares[0]!.x, y: shares[0]!.y }];
    expect(codeOf(() => combine(dup, 3))).toBe(ErrorCode.MalformedShares);
    expect(codeOf(() => combine([shares[0]!, shares[1]!, { x: 1, y: shares[2]!.y }], 3))).toBe(ErrorCode.MalformedShares);
    expect(codeOf(() => split([secret], 2, [4, 5, 4]))).toBe(ErrorCode.MalformedShares);
  });

  test('x = 0, x > 10000, negative and fractional x are refused with malformed-shares', () => {
    for (const x of [0, MAX_SHARES + 1, -1, 1.5, Number.NaN]) {
      expect(codeOf(() => combine([{ x, y: 1n }, shares[1]!, shares[2]!], 3))).toBe(ErrorCode.MalformedShares);
      expect(codeOf(() => split([secret], 2, [1, x]))).toBe(ErrorCode.MalformedShares);
    }
    // The largest allowed x is accepted: the constant polynomial 5 through x = 1 and x = 10000.
    expect(toHex(combine([{ x: MAX_SHARES, y: 5n }, { x: 1, y: 5n }], 2))).toBe('00'.repeat(31) + '05');
  });

  test('share values outside the field (≥ p, negative, not a bigint) are refused with malformed-shares', () => {
    for (const y of [SHAMIR_PRIME, SHAMIR_PRIME + 1n, 2n ** 264n, -1n, 5 as unknown as bigint]) {
      expect(codeOf(() => combine([shares[0]!, shares[1]!, { x: 9, y }], 3))).toBe(ErrorCode.MalformedShares);
    }
    expect(codeOf(() => decodeShareValue(encodeShareValue(SHAMIR_PRIME)))).toBe(ErrorCode.MalformedShares);
    expect(codeOf(() => decodeShareValue(new Uint8Array(33).fill(0xff)))).toBe(ErrorCode.MalformedShares);
    expect(codeOf(() => decodeShareValue(new Uint8Array(32)))).toBe(ErrorCode.BadKeyLength);
  });

  test('fewer shares than the threshold are refused even when they are well formed, and bad thresholds too', () => {
    expect(codeOf(() => combine(shares.slice(0, 2), 3))).toBe(ErrorCode.InsufficientShares);
    expect(codeOf(() => combine([], 1))).toBe(ErrorCode.InsufficientShares);
    expect(codeOf(() => combine(shares, 0))).toBe(ErrorCode.InvalidArgument);
    expect(codeOf(() => split([secret], 6, [1, 2, 3, 4, 5]))).toBe(ErrorCode.InvalidArgument);
    expect(codeOf(() => split([secret], 0, [1, 2]))).toBe(ErrorCode.InvalidArgument);
    expect(codeOf(() => split([new Uint8Array(31)], 2, [1, 2]))).toBe(ErrorCode.BadKeyLength);
  });

  test('inconsistent shares that interpolate to a value ≥ 2^256 are refused rather than truncated', () => {
    // f(x) = (2^256 + 1) + 0·x: every share is 2^256 + 1, and f(0) does not fit 32 bytes.
    const v = (1n << 256n) + 1n;
    expect(codeOf(() => combine([{ x: 1, y: v }, { x: 2, y: v }], 2))).toBe(ErrorCode.MalformedShares);
  });

  test('share values encode as 33 big-endian bytes and decode back, for 0, 1, 2^256 and p − 1', () => {
    for (const y of [0n, 1n, 1n << 256n, SHAMIR_PRIME - 1n]) {
      const enc = encodeShareValue(y);
      expect(enc).toHaveLength(33);
      expect(decodeShareValue(enc)).toBe(y);
    }
    expect(toHex(encodeShareValue(258n))).toBe('00'.repeat(31) + '0102');
  });
});

describe('Shamir field exactness and the prime', () => {
  test('a secret of 32 bytes of 0xff, and one of 32 zero bytes, round-trip exactly', () => {
    for (const fill of [0xff, 0x00]) {
      const secret = new Uint8Array(32).fill(fill);
      const shares = sharesOf(secret, 4, [10, 20, 30, 40, 50, 60]);
      for (const s of shares) expect(s.y < SHAMIR_PRIME && s.y >= 0n).toBe(true);
      expect(toHex(combine(shares.slice(2), 4))).toBe(toHex(secret));
      expect(toHex(combine(shares.slice(0, 4), 4))).toBe(toHex(secret));
    }
  });

  /** Miller–Rabin with `rounds` random bases; false means certainly composite. */
  function millerRabin(n: bigint, rounds: number): boolean {
    if (n < 4n) return n === 2n || n === 3n;
    if (n % 2n === 0n) return false;
    const modPow = (b: bigint, e: bigint, m: bigint): bigint => {
      let r = 1n;
      b %= m;
      for (; e > 0n; e >>= 1n, b = (b * b) % m) if (e & 1n) r = (r * b) % m;
      return r;
    };
    let d = n - 1n;
    let s = 0;
    while (d % 2n === 0n) {
      d /= 2n;
      s++;
    }
    for (let i = 0; i < rounds; i++) {
      const a = 2n + (BigInt('0x' + randomBytes(40).toString('hex')) % (n - 3n));
      let x = modPow(a, d, n);
      if (x === 1n || x === n - 1n) continue;
      let witness = true;
      for (let r = 1; r < s && witness; r++) {
        x = (x * x) % n;
        if (x === n - 1n) witness = false;
      }
      if (witness) return false;
    }
    return true;
  }

  test('the Miller–Rabin check used here tells primes from composites (including Carmichael numbers)', () => {
    for (const p of [2n, 3n, 5n, 7919n, 2n ** 127n - 1n, 2n ** 255n - 19n]) expect(millerRabin(p, 20)).toBe(true);
    for (const c of [1n, 4n, 561n, 41041n, 7919n * 7927n, (2n ** 127n - 1n) * (2n ** 61n - 1n)]) expect(millerRabin(c, 20)).toBe(false);
  });

  test('p = 2^256 + 297 is prime (Miller–Rabin, 20 rounds), and is the smallest prime above 2^256', () => {
    expect(SHAMIR_PRIME).toBe(2n ** 256n + 297n);
    expect(millerRabin(SHAMIR_PRIME, 20)).toBe(true);
    const smallerPrimes: bigint[] = [];
    for (let k = 1n; k < 297n; k++) if (millerRabin(2n ** 256n + k, 4)) smallerPrimes.push(k);
    expect(smallerPrimes).toEqual([]);
  });
});

describe('Shamir at the 10,000-share limit', () => {
  test('10,000 shares can be made and any t of them — the first, the last, scattered — reconstruct the secret', () => {
    const secret = new Uint8Array(randomBytes(32));
    const xs = Array.from({ length: MAX_SHARES }, (_, i) => i + 1);
    const shares = sharesOf(secret, 3, xs);
    expect(shares).toHaveLength(MAX_SHARES);
    expect(new Set(shares.map((s) => s.y)).size).toBe(MAX_SHARES);
    expect(toHex(combine(shares, 3))).toBe(toHex(secret));
    expect(toHex(combine(shares.slice(-3), 3))).toBe(toHex(secret));
    expect(toHex(combine([shares[4999]!, shares[17]!, shares[9998]!], 3))).toBe(toHex(secret));
  });

  test('10,001 shareholders are refused', () => {
    const xs = Array.from({ length: MAX_SHARES + 1 }, (_, i) => i + 1);
    expect(codeOf(() => split([new Uint8Array(32)], 2, xs))).toBe(ErrorCode.InvalidArgument);
  });
});
