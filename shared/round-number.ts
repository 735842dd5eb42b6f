/**
 * One numbering of rounds for people. The protocol counts a job's rounds from 0 (the round index
 * inside manifests, round keys, ledgers and the wire); everything a person reads — CLI text,
 * errors, the dashboard, the demo — says "round N" with N counted from 1, so round 1 is index 0.
 * `--round N` on the command line takes that same N. JSON output carries both, under names that
 * say which base they use: `round_index` (from 0) and `round_number` (from 1).
 */

/** "round N" for people: index 0 is round 1. */
export const roundName = (index: number): string => `round ${index + 1}`;

/** The round's number for people (from 1). */
export const roundNumber = (index: number): number => index + 1;

/** The JSON fields of one round: its index (from 0) and its number (from 1). */
export const roundJson = (index: number): { round_index: number; round_number: number } => ({ round_index: index, round_number: index + 1 });

/** Ranges of round indexes as people read them ("1-3, 5"), or "none". */
export const roundRanges = (ranges: readonly (readonly [number, number])[]): string =>
  ranges.length === 0 ? 'none' : ranges.map(([a, b]) => (a === b ? `${a + 1}` : `${a + 1}-${b + 1}`)).join(', ');
