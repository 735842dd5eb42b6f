/** Small checks shared by the client's phase handlers. */
import { bytesKey, sameBytes } from '../../shared/bytes.js';
import type { Roster } from '../../shared/protocol/roster.js';

export const sameSession = (a: Uint8Array, b: Uint8Array): boolean => a instanceof Uint8Array && sameBytes(a, b);

export type ListProblem = { kind: 'duplicate' } | { kind: 'unknown' } | null;

/** Checks a list of ids: no repeats, every id in the roster. */
export function checkIdList(ids: readonly string[], roster: Roster): ListProblem {
  const seen = new Set<string>();
  for (const id of ids) {
    if (seen.has(id)) return { kind: 'duplicate' };
    if (!roster.has(id)) return { kind: 'unknown' };
    seen.add(id);
  }
  return null;
}

/** A key's first six bytes as one number (exact: 48 bits fit a double). */
const prefixOf = (k: Uint8Array): number => (k[0]! | (k[1]! << 8) | (k[2]! << 16)) + (k[3]! | (k[4]! << 8) | (k[5]! << 16)) * 16777216;

/**
 * True when two of `keys` (32 bytes each) are the same bytes. Keys are bucketed by their first
 * six bytes, with no string or Buffer made per key; honest keys are random, so two share a prefix
 * only when they are the same key. A coordinator can craft keys that share a prefix and differ
 * after it: at the first such pair the check starts over keyed by every key's whole bytes, so
 * crafted keys cost it O(n) strings, never O(n²) comparisons.
 */
export function hasRepeatedKey(keys: readonly Uint8Array[]): boolean {
  const byPrefix = new Map<number, Uint8Array>();
  for (const k of keys) {
    const p = prefixOf(k);
    const prior = byPrefix.get(p);
    if (prior === undefined) {
      byPrefix.set(p, k);
      continue;
    }
    if (sameBytes(prior, k)) return true;
    const whole = new Set<string>();
    for (const x of keys) {
      const id = bytesKey(x);
      if (whole.has(id)) return true;
      whole.add(id);
    }
    return false;
  }
  return false;
}
