/** Small checks shared by the client's phase handlers. */
import { sameBytes } from '../../shared/bytes.js';
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
