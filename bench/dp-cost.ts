/**
 * The client's cost of the distributed discrete Gaussian mechanism per update, next to its cost
 * of masking the same update (part a of `npm run bench -- dp`).
 *
 * DP steps: the four stages of `dpEncode` (shared/dp/encode.ts), timed one by one —
 *   clip + rotate   the norm, the clip, the public signs ξ (HKDF + AES-CTR) and the
 *                   Walsh–Hadamard transform of the padded vector;
 *   rounding        conditional randomized rounding, redrawn until ||ỹ||² <= B (exact check);
 *   noise           D exact discrete Gaussian samples (CKS20);
 *   wrap            each coordinate plus its noise into Z_{2^bits}.
 * The stages are run here from the same building blocks encode.ts uses (hadamard.ts, the
 * sampler, squaredNormExact, wrapToModulus), in the same order, with the client's production
 * randomness (`cryptoSource()`). The whole `dpEncode` is timed too, as the check that the split
 * adds up to the real function.
 *
 * Masking, the baseline: the real client state machine's share-broadcast step
 * (client/round/r1-share-keys.ts — the step whose time `aegis demo` reports as mask_max and
 * `aegis simulate` counts in a client's compute): decrypt the neighbours' share pairs, derive
 * the self mask and k pairwise mask keys (X25519), and expand k + 1 AES-CTR masks over the m + 1
 * words. It runs in a real round of k + 1 clients driven through the coordinator's state
 * machine, so every client has k neighbours: the mask count of a SecAgg+ client in a cohort of
 * 100 (k = 15). The input is quantized beforehand and handed over ready, so the figure is the
 * masking alone (the quantization is reported on its own).
 */
import { randomBytes } from 'node:crypto';
import { encodeWeightedInput } from '../shared/crypto/quantize.js';
import { DeterministicRng } from '../shared/crypto/rng.js';
import { ed25519PrivateKeyObject } from '../shared/crypto/ed25519.js';
import { dpParamsOf, type Calibration } from '../shared/dp/calibrate.js';
import { dpEncode, squaredNormExact, wrapToModulus, type DpParams } from '../shared/dp/encode.js';
import { paddedDim, rotate, rotationSigns } from '../shared/dp/hadamard.js';
import { cryptoSource, DiscreteGaussian, type UniformSource } from '../shared/dp/sampler.js';
import type { ClientMessage, ServerMessage, Addressed } from '../shared/protocol/messages.js';
import { validateRoundParams } from '../shared/protocol/params.js';
import { sha256 } from '../shared/protocol/session.js';
import { roundViewDigest } from '../shared/protocol/view.js';
import { VectorAccumulator } from '../shared/crypto/vecops.js';
import { handle as clientHandle, start as clientStart, type ClientState } from '../client/round/index.js';
import { close, receive, start as coordinatorStart, type CoordinatorState } from '../coordinator/round/index.js';
import { makeIdentities } from './sim/client-host.js';
import { median } from './table.js';

/** Milliseconds of each DP stage for one update (medians over the repetitions). */
export interface DpStageTimes {
  clip_rotate_ms: number;
  rounding_ms: number;
  noise_ms: number;
  wrap_ms: number;
  /** The four stages added up. */
  dp_total_ms: number;
  /** The real `dpEncode`, timed whole. */
  dp_encode_ms: number;
  /** How many times rounding was drawn (1 when the first draw met the bound), summed over repetitions. */
  rounding_draws: number;
}

/** A uniform double in [0, 1) with 53 random bits, as encode.ts draws its rounding. */
function uniform01(rng: UniformSource): number {
  return ((rng.nextU32() >>> 5) * 67108864 + (rng.nextU32() >>> 6)) / 9007199254740992;
}

/** A client's update of `m` values (a training delta's shape: mostly small, some large), L2 norm 2·clip. */
export function syntheticUpdate(m: number, clip: number, seed = 1): Float64Array {
  const rng = DeterministicRng.fromSeed('aegis-bench-dp-update', seed);
  const v = new Float64Array(m);
  let n2 = 0;
  for (let i = 0; i < m; i++) {
    const u = rng.nextFloat() * 2 - 1;
    v[i] = u * u * u;
    n2 += v[i]! * v[i]!;
  }
  const s = (2 * clip) / Math.sqrt(n2);
  for (let i = 0; i < m; i++) v[i]! *= s;
  return v;
}

/** One update through the four stages, each timed; returns the words and the times. */
function stagedEncode(update: Float64Array, p: DpParams, seed: Uint8Array, rng: UniformSource): { words: Uint32Array; t: number[]; draws: number } {
  const t0 = performance.now();
  let norm2 = 0;
  for (let i = 0; i < update.length; i++) norm2 += update[i]! * update[i]!;
  const norm = Math.sqrt(norm2);
  const clipScale = norm > p.clip * (1 - 1e-12) ? (p.clip * (1 - 1e-12)) / norm : 1;
  const signs = rotationSigns(seed, paddedDim(p.dim));
  const scale = clipScale / p.gamma;
  const scaled = new Float64Array(update.length);
  for (let i = 0; i < update.length; i++) scaled[i] = update[i]! * scale;
  const y = rotate(scaled, signs);
  const t1 = performance.now();
  const rounded = new Float64Array(y.length);
  let draws = 0;
  for (;;) {
    draws++;
    for (let i = 0; i < y.length; i++) {
      const f = Math.floor(y[i]!);
      rounded[i] = uniform01(rng) < y[i]! - f ? f + 1 : f;
    }
    if (squaredNormExact(rounded) <= p.normBound2) break;
    if (draws >= 1000) throw new Error('conditional rounding did not meet the bound');
  }
  const t2 = performance.now();
  const sampler = new DiscreteGaussian(p.sigma2);
  const noise = new Float64Array(y.length);
  for (let i = 0; i < noise.length; i++) noise[i] = sampler.sample(rng);
  const t3 = performance.now();
  const words = new Uint32Array(y.length);
  for (let i = 0; i < words.length; i++) words[i] = wrapToModulus(rounded[i]! + noise[i]!, p.bits);
  const t4 = performance.now();
  return { words, t: [t1 - t0, t2 - t1, t3 - t2, t4 - t3], draws };
}

/** The DP stages and the whole dpEncode for an update of `cal.dim` values, `reps` times each (median). */
export function measureDpStages(cal: Calibration, reps: number): DpStageTimes {
  const p = dpParamsOf(cal);
  const update = syntheticUpdate(cal.dim, cal.clip);
  const rng = cryptoSource();
  const stages: number[][] = [[], [], [], []];
  const whole: number[] = [];
  let draws = 0;
  // One untimed pass of each first: the first call pays for compilation and the sampler's set-up.
  stagedEncode(update, p, new Uint8Array(32), rng);
  dpEncode(update, p, new Uint8Array(32), rng);
  for (let r = 0; r < reps; r++) {
    const seed = new Uint8Array(randomBytes(32));
    const s = stagedEncode(update, p, seed, rng);
    s.t.forEach((ms, i) => stages[i]!.push(ms));
    draws += s.draws;
    const t = performance.now();
    const words = dpEncode(update, p, seed, rng);
    whole.push(performance.now() - t);
    if (words.length !== s.words.length) throw new Error('the staged encode and dpEncode disagree on the length');
  }
  const [clip_rotate_ms, rounding_ms, noise_ms, wrap_ms] = stages.map(median) as [number, number, number, number];
  return { clip_rotate_ms, rounding_ms, noise_ms, wrap_ms, dp_total_ms: clip_rotate_ms + rounding_ms + noise_ms + wrap_ms, dp_encode_ms: median(whole), rounding_draws: draws };
}

export interface MaskingTimes {
  /** k: each client's neighbours (so k + 1 masks). */
  neighbors: number;
  /** Words masked (m + 1, the weight word included). */
  words: number;
  /** Median over the round's clients of the share-broadcast step (the masking). */
  masking_ms: number;
  /** Median time to quantize the update into m + 1 words (encodeWeightedInput), for reference. */
  quantize_ms: number;
}

/**
 * A real round of `neighbors + 1` clients over the client and coordinator state machines, up to
 * every client's masked input; each client's share-broadcast step is timed (see the header).
 */
export function measureMasking(m: number, neighbors = 15, clip = 1): MaskingTimes {
  const n = neighbors + 1;
  const params = validateRoundParams({ dim: m, cohort: n, neighbors, clip, bits: 16 });
  const round = { manifestHash: sha256(`aegis-bench-dp:${m}`), roundIndex: 0 };
  const view = roundViewDigest({ round, params });
  const ids = makeIdentities(n);
  const directory = new Map(ids.map((c) => [c.id, c.publicKey]));
  const update = syntheticUpdate(m, clip);
  const quantizeTimes: number[] = [];
  let input: Uint32Array = new Uint32Array(0);
  for (let r = 0; r < 3; r++) {
    const t = performance.now();
    input = encodeWeightedInput(update, 1, params, DeterministicRng.fromSeed('aegis-bench-dp-rounding', r));
    quantizeTimes.push(performance.now() - t);
  }
  const acc = new VectorAccumulator(m + 1);
  let coordinator: CoordinatorState = coordinatorStart({ params, round, view, identityOf: (id) => directory.get(id) });
  const take = (msg: ClientMessage): void => void (coordinator = receive(coordinator, msg).next);
  const clients = new Map<string, ClientState>();
  for (const c of ids) {
    const { next, outbound } = clientStart({ clientId: c.id, identityKey: ed25519PrivateKeyObject(c.identityKey), params, round, view, identityOf: (id) => directory.get(id), accumulator: acc, input: () => input });
    clients.set(c.id, next);
    outbound.forEach(take);
  }
  const maskMs: number[] = [];
  // Phase 0 closes with the advertise broadcast, phase 1 with the share broadcast (the masking).
  for (let phase = 0; phase < 2; phase++) {
    const { next, outbound } = close(coordinator);
    coordinator = next;
    for (const { to, message } of outbound as Addressed<ServerMessage>[]) {
      const t = performance.now();
      const r = clientHandle(clients.get(to)!, message);
      if (message.type === 'share-broadcast') maskMs.push(performance.now() - t);
      if (r.next.phase === 'aborted') throw new Error(`client ${to} aborted: ${r.next.reason}`);
      clients.set(to, r.next);
      r.outbound.forEach(take);
    }
  }
  if (maskMs.length !== n) throw new Error(`only ${maskMs.length} of ${n} clients masked`);
  return { neighbors, words: m + 1, masking_ms: median(maskMs), quantize_ms: median(quantizeTimes) };
}
