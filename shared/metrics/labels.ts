/**
 * Label values and observations for Prometheus metrics, on either side: a label value outside
 * its fixed vocabulary is reported as `other` (checked at runtime, not only by the types), so
 * nothing user-controlled ever becomes a label value; a duration is observed only when it is a
 * finite, non-negative number, so a bad clock reading never breaks the caller.
 */

/** The value every label takes when the caller's value is not in its vocabulary. */
export const OTHER = 'other';

/** `value` when it is a string in `vocabulary`, otherwise `other`. */
export function label(vocabulary: ReadonlySet<string>, value: unknown): string {
  return typeof value === 'string' && vocabulary.has(value) ? value : OTHER;
}

/** A duration fit to observe: finite and not negative. */
export const isDuration = (s: unknown): s is number => typeof s === 'number' && Number.isFinite(s) && s >= 0;
