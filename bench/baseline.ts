/**
 * Baselines every benchmark measures in the same run, so its figures read as ratios on this
 * machine: raw AES-256-CTR keystream speed, mask expansion (keystream added into a vector, the
 * protocol's hot loop), and plain unmasked summation of vectors.
 */
import { randomBytes } from 'node:crypto';
import { expandInto, keystreamOnly } from '../shared/crypto/prg.js';
import { addInto, simdAvailable, VectorAccumulator } from '../shared/crypto/vecops.js';

export interface Baselines {
  /** Raw AES-256-CTR keystream, GB/s, one thread. */
  aesCtrGBps: number;
  /** Mask expansion (keystream added mod 2^32 into a vector), GB/s of keystream, one thread. */
  expansionGBps: number;
  /** expansion / raw keystream. */
  expansionRatio: number;
  /** Plain summation of uint32 vectors (what an unmasked FedAvg sum costs), GB/s, one thread. */
  plainSumGBps: number;
  simd: boolean;
}

function rate(bytesPerIter: number, minMs: number, f: () => void): number {
  for (let i = 0; i < 3; i++) f(); // warm-up
  let iters = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < minMs) {
    f();
    iters++;
    t = performance.now();
  }
  return (bytesPerIter * iters) / ((t - t0) / 1000) / 1e9;
}

export function measureBaselines(minMs = 1000, words = 100_001): Baselines {
  const key = new Uint8Array(randomBytes(32));
  const bytes = words * 4;
  const aesCtrGBps = rate(bytes, minMs, () => keystreamOnly(key, bytes));
  const acc = new VectorAccumulator(words);
  const expansionGBps = rate(bytes, minMs, () => expandInto(acc, key, 1));
  const a = new Uint32Array(words);
  const b = new Uint32Array(randomBytes(bytes).buffer);
  const plainSumGBps = rate(bytes, minMs, () => addInto(a, b));
  return { aesCtrGBps, expansionGBps, expansionRatio: expansionGBps / aesCtrGBps, plainSumGBps, simd: simdAvailable() };
}
