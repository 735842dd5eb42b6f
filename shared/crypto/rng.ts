/**
 * Deterministic random streams from a 32-byte key (AES-256-CTR keystream): the seeded
 * permutation of the neighbour graph, stochastic rounding, and the simulator's synthetic
 * inputs and dropout schedules. Production rounding uses a fresh random key per client and
 * round; only the simulator and tests pass fixed seeds.
 */
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { abytes } from '../bytes.js';

const ZERO_IV = Buffer.alloc(16);
export const BLOCK_WORDS = 4096;

export class DeterministicRng {
  private readonly cipher;
  private buf = new Uint32Array(0);
  private pos = 0;
  private readonly zeros = Buffer.alloc(BLOCK_WORDS * 4);

  constructor(key: Uint8Array) {
    abytes(key, 32, 'RNG key');
    this.cipher = createCipheriv('aes-256-ctr', key, ZERO_IV);
  }

  /** A generator keyed by SHA-256 of a label and a numeric seed (simulation only). */
  static fromSeed(label: string, seed: number | bigint | string): DeterministicRng {
    return new DeterministicRng(createHash('sha256').update(`${label}\0${String(seed)}`).digest());
  }

  /** A generator with a fresh random key. */
  static secure(): DeterministicRng {
    return new DeterministicRng(randomBytes(32));
  }

  /**
   * The next `BLOCK_WORDS` (4096) fresh words at once, for bulk consumers; the returned view is
   * valid until the next call on this generator.
   */
  nextBlock(): Uint32Array {
    const b = this.cipher.update(this.zeros);
    this.pos = this.buf.length; // anything left in the word buffer stays unused, never repeated
    return new Uint32Array(b.buffer, b.byteOffset, BLOCK_WORDS);
  }

  nextU32(): number {
    if (this.pos >= this.buf.length) {
      const b = this.cipher.update(this.zeros);
      this.buf = new Uint32Array(b.buffer, b.byteOffset, BLOCK_WORDS);
      this.pos = 0;
    }
    return this.buf[this.pos++]!;
  }

  /** Uniform in [0, 1) with 53 bits. */
  nextFloat(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n), n <= 2^32, by rejection (no modulo bias). */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 2 ** 32) throw new RangeError('nextInt bound out of range');
    const limit = 2 ** 32 - (2 ** 32 % n);
    for (;;) {
      const r = this.nextU32();
      if (r < limit) return r % n;
    }
  }

  /** A uniform random permutation of 0..n-1 (Fisher–Yates with unbiased draws). */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const t = p[i]!;
      p[i] = p[j]!;
      p[j] = t;
    }
    return p;
  }

}
