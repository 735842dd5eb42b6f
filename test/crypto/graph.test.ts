/**
 * The SecAgg+ neighbour graph (Bell et al. CCS'20 §3): a Harary graph H(k, n) over a
 * permutation derived from session_id. Symmetric, k-regular (one node of degree k + 1 when k
 * and n are both odd), complete for k ≥ n − 1, a function of the session alone, connected.
 */
import { describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { ErrorCode, isAegisError } from '../../shared/errors.js';
import { NeighbourGraph, sessionPermutation } from '../../shared/crypto/graph.js';
import { codeOf } from '../support/codes.js';

const session = (label: string): Uint8Array => new Uint8Array(createHash('sha256').update(label).digest());
const S = session('graph test session');


/** All adjacency lists of a graph. */
const adjacency = (g: NeighbourGraph): number[][] => Array.from({ length: g.n }, (_, i) => g.neighboursOf(i));

/** Nodes reachable from node 0 (breadth-first). */
function reachable(adj: number[][]): number {
  const seen = new Uint8Array(adj.length);
  const queue = [0];
  seen[0] = 1;
  for (let h = 0; h < queue.length; h++) {
    for (const v of adj[queue[h]!]!) {
      if (!seen[v]) {
        seen[v] = 1;
        queue.push(v);
      }
    }
  }
  return queue.length;
}

/** Every (n, k) with 4 ≤ n ≤ 40 and 2 ≤ k < n − 1 (SecAgg+), plus some larger rounds. */
const SPARSE: [number, number][] = [];
for (let n = 4; n <= 40; n++) for (let k = 2; k < n - 1; k++) SPARSE.push([n, k]);
SPARSE.push([101, 14], [257, 16], [1000, 20], [1001, 21], [4097, 25], [10000, 27]);

describe('NeighbourGraph structure', () => {
  test('is symmetric: v is a neighbour of u exactly when u is a neighbour of v, and no node neighbours itself', () => {
    const bad: string[] = [];
    for (const [n, k] of SPARSE) {
      const g = new NeighbourGraph(S, n, k);
      const adj = adjacency(g);
      const sets = adj.map((a) => new Set(a));
      adj.forEach((list, u) => {
        if (sets[u]!.has(u)) bad.push(`n=${n} k=${k}: ${u} is its own neighbour`);
        for (const v of list) if (!sets[v]!.has(u)) bad.push(`n=${n} k=${k}: ${u}→${v} only`);
      });
    }
    expect(bad).toEqual([]);
  });

  test('every node has degree k, except exactly one node of degree k + 1 when k and n are both odd', () => {
    const bad: string[] = [];
    for (const [n, k] of SPARSE) {
      const degrees = adjacency(new NeighbourGraph(S, n, k)).map((a) => a.length);
      const plusOne = degrees.filter((d) => d === k + 1).length;
      const other = degrees.filter((d) => d !== k && d !== k + 1).length;
      const expectedPlusOne = k % 2 === 1 && n % 2 === 1 ? 1 : 0;
      if (other !== 0 || plusOne !== expectedPlusOne) bad.push(`n=${n} k=${k}: degrees ${[...new Set(degrees)].join(',')}, ${plusOne} of degree k+1`);
    }
    expect(bad).toEqual([]);
  });

  test('neighbour lists are sorted ascending, hold valid distinct indices, and agree with areNeighbours', () => {
    const g = new NeighbourGraph(S, 37, 6);
    for (let u = 0; u < g.n; u++) {
      const list = g.neighboursOf(u);
      expect(list).toEqual([...list].sort((a, b) => a - b));
      expect(new Set(list).size).toBe(list.length);
      for (const v of list) expect(Number.isInteger(v) && v >= 0 && v < g.n).toBe(true);
      for (let v = 0; v < g.n; v++) expect(g.areNeighbours(u, v)).toBe(list.includes(v));
    }
  });

  test('is connected (breadth-first search reaches every node) for every SecAgg+ degree k ≥ 2 and a range of n', () => {
    const disconnected = SPARSE.filter(([n, k]) => reachable(adjacency(new NeighbourGraph(S, n, k))) !== n).map(([n, k]) => `n=${n} k=${k}`);
    expect(disconnected).toEqual([]);
  });

  test('is connected, or refused, for every degree the constructor takes — k = 1 included', () => {
    // H(1, n) as built is a perfect matching for n ≥ 4: the coordinator would learn the sum of
    // every pair instead of only the total.
    const disconnected: string[] = [];
    for (let n = 2; n <= 12; n++) {
      let g: NeighbourGraph;
      try {
        g = new NeighbourGraph(S, n, 1);
      } catch (e) {
        expect(isAegisError(e, ErrorCode.InvalidArgument)).toBe(true);
        continue;
      }
      if (reachable(adjacency(g)) !== n) disconnected.push(`n=${n} k=1`);
    }
    expect(disconnected).toEqual([]);
  });

  test('is the complete graph when k ≥ n − 1 (classic SecAgg)', () => {
    for (const [n, k] of [
      [3, 2],
      [10, 9],
      [10, 10],
      [10, 1000],
      [50, 49],
    ] as const) {
      const g = new NeighbourGraph(S, n, k);
      expect(g.complete).toBe(true);
      expect(g.k).toBe(n - 1);
      for (let u = 0; u < n; u++) expect(g.neighboursOf(u)).toEqual(Array.from({ length: n }, (_, v) => v).filter((v) => v !== u));
      expect(g.areNeighbours(0, n - 1)).toBe(true);
      expect(g.areNeighbours(1, 1)).toBe(false);
    }
    expect(new NeighbourGraph(S, 10, 8).complete).toBe(false);
  });
});

describe('NeighbourGraph and the session id', () => {
  test('is the same graph for the same session id, built independently', () => {
    const a = adjacency(new NeighbourGraph(session('round 1'), 200, 12));
    const b = adjacency(new NeighbourGraph(session('round 1'), 200, 12));
    expect(b).toEqual(a);
  });

  test('is a different graph for another session id', () => {
    const a = adjacency(new NeighbourGraph(session('round 1'), 200, 12));
    const b = adjacency(new NeighbourGraph(session('round 2'), 200, 12));
    expect(b).not.toEqual(a);
    // Not merely relabelled at the edges: most neighbourhoods change.
    const same = a.filter((list, u) => JSON.stringify(list) === JSON.stringify(b[u])).length;
    expect(same).toBeLessThan(20);
  });

  test('the session permutation is a permutation of 0..n−1, fixed by the session id', () => {
    for (const n of [1, 2, 3, 50, 1000]) {
      const p = sessionPermutation(S, n);
      expect(Array.from(p).sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i));
      expect(Array.from(sessionPermutation(S, n))).toEqual(Array.from(p));
    }
    expect(Array.from(sessionPermutation(session('x'), 1000))).not.toEqual(Array.from(sessionPermutation(session('y'), 1000)));
  });

  test('the permutation is not biased toward the identity: each position holds each node about equally often', () => {
    // 3000 sessions, n = 6: every (position, node) pair should appear 500 ± a few dozen times.
    const n = 6;
    const counts = Array.from({ length: n }, () => new Array<number>(n).fill(0));
    for (let s = 0; s < 3000; s++) {
      const p = sessionPermutation(session(`perm ${s}`), n);
      p.forEach((node, pos) => counts[pos]![node]!++);
    }
    for (const row of counts) for (const c of row) expect(Math.abs(c - 500)).toBeLessThan(90);
  });

  test('refuses a session id that is not 32 bytes, sizes outside 2..10000, degrees below 1 and node indices out of range', () => {
    expect(codeOf(() => new NeighbourGraph(new Uint8Array(31), 10, 4))).toBe(ErrorCode.BadKeyLength);
    for (const n of [1, 0, 10001, 2.5]) expect(codeOf(() => new NeighbourGraph(S, n, 4))).toBe(ErrorCode.InvalidArgument);
    for (const k of [0, -1, 1.5]) expect(codeOf(() => new NeighbourGraph(S, 10, k))).toBe(ErrorCode.InvalidArgument);
    const g = new NeighbourGraph(S, 10, 4);
    for (const i of [-1, 10, 0.5]) expect(codeOf(() => g.neighboursOf(i))).toBe(ErrorCode.InvalidArgument);
  });
});
