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

/** A key's first 30 bits as one small integer (a V8 Smi: a Set of them hashes without boxing). */
const prefixOf = (k: Uint8Array): number => k[0]! | (k[1]! << 8) | (k[2]! << 16) | ((k[3]! & 0x3f) << 24);

/**
 * True when two of `keys` (32 bytes each) are the same bytes. Keys are first told apart by their
 * first 30 bits, with no string or Buffer made per key; honest keys are random, so among a
 * thousand two share those bits about once in two thousand lists. At the first shared prefix —
 * by chance, a repeat, or keys a coordinator crafted to share a prefix and differ after it — the
 * check starts over keyed by every key's whole bytes: O(n) strings, never O(n²) comparisons.
 */
export function hasRepeatedKey(keys: readonly Uint8Array[]): boolean {
  const prefixes = new Set<number>();
  for (const k of keys) {
    const p = prefixOf(k);
    if (!prefixes.has(p)) {
      prefixes.add(p);
      continue;
    }
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
