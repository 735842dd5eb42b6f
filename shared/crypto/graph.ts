/**
 * The neighbour graph of SecAgg+ (Bell et al., CCS'20, §3): a Harary graph H(k, n) laid over a
 * permutation of the n clients that every party derives from `session_id`. The coordinator
 * cannot choose who neighbours whom: the permutation is a function of the session alone.
 *
 * H(k, n) (Harary 1962) is k-connected with minimum degree k: place nodes on a ring, join each
 * to the floor(k/2) nearest on either side; for odd k also join "opposite" nodes (i, i + n/2)
 * for even n, or i to i + (n+1)/2 for 0 <= i <= (n-1)/2 for odd n (one node then has k+1).
 * k >= n - 1 is the complete graph: classic SecAgg.
 */
import { abytes } from '../bytes.js';
import { ErrorCode, fail } from '../errors.js';
import { deriveKey, Purpose } from './hkdf.js';
import { DeterministicRng } from './rng.js';

/** Fisher–Yates with an unbiased draw from the session's keystream. */
export function sessionPermutation(sessionId: Uint8Array, n: number): Uint32Array {
  abytes(sessionId, 32, 'session id');
  const rng = new DeterministicRng(deriveKey(new Uint8Array(32), sessionId, Purpose.NeighbourGraph));
  const perm = rng.permutation(n);
  return perm;
}

/** Ring positions adjacent to position `p` in H(k, n). */
function hararyNeighbours(p: number, k: number, n: number): number[] {
  const out = new Set<number>();
  const r = Math.floor(k / 2);
  for (let d = 1; d <= r; d++) {
    out.add((p + d) % n);
    out.add((p - d + n) % n);
  }
  if (k % 2 === 1) {
    if (n % 2 === 0) out.add((p + n / 2) % n);
    else {
      const h = (n + 1) / 2;
      if (p <= (n - 1) / 2) out.add((p + h) % n);
      if (p >= h || p === 0) out.add((p - h + n) % n);
    }
  }
  out.delete(p);
  return [...out];
}

/**
 * The neighbour graph over client indices 0..n-1 (indices into the sorted U1 list).
 * `neighboursOf(i)` is sorted ascending.
 */
export class NeighbourGraph {
  readonly n: number;
  readonly k: number;
  readonly complete: boolean;
  private readonly perm: Uint32Array;
  private readonly pos: Uint32Array;

  constructor(sessionId: Uint8Array, n: number, k: number) {
    if (!Number.isInteger(n) || n < 2 || n > 10000) fail(ErrorCode.InvalidArgument, 'graph size must be 2..10000');
    // k = 1 would be a perfect matching: the coordinator would learn the sum of each pair.
    if (!Number.isInteger(k) || k < 2) fail(ErrorCode.InvalidArgument, 'neighbour degree must be >= 2');
    this.n = n;
    this.k = Math.min(k, n - 1);
    this.complete = this.k >= n - 1;
    this.perm = this.complete ? new Uint32Array(0) : sessionPermutation(sessionId, n);
    this.pos = new Uint32Array(this.complete ? 0 : n);
    for (let p = 0; p < this.perm.length; p++) this.pos[this.perm[p]!] = p;
  }

  neighboursOf(i: number): number[] {
    if (!Number.isInteger(i) || i < 0 || i >= this.n) fail(ErrorCode.InvalidArgument, 'node index out of range');
    if (this.complete) {
      const out: number[] = [];
      for (let j = 0; j < this.n; j++) if (j !== i) out.push(j);
      return out;
    }
    return hararyNeighbours(this.pos[i]!, this.k, this.n)
      .map((p) => this.perm[p]!)
      .sort((a, b) => a - b);
  }

  areNeighbours(i: number, j: number): boolean {
    for (const x of [i, j]) if (!Number.isInteger(x) || x < 0 || x >= this.n) fail(ErrorCode.InvalidArgument, 'node index out of range');
    if (i === j) return false;
    if (this.complete) return true;
    return this.neighboursOf(i).includes(j);
  }
}
