/**
 * Retention of round records (`coordinator start --retention-round-days N`, config
 * `{"retention": {"round_days": N}}`): once a round ended longer ago than that, the coordinator
 * forgets which clients took part — its cohort, who answered in each phase, the survivors, and
 * the protocol state the round's host kept (the members' advertised keys and encrypted shares).
 * What stays is what an ML engineer reads: the counts per phase, the declines by reason (counts
 * only), the timeline, the outcome and reason, and the unmasked sum. A retired round's host is a
 * FrozenHost (frozen-host.ts) whose outcome names no client.
 */
import type { RoundOutcome } from '../round/index.js';
import { FrozenHost } from './frozen-host.js';
import type { RoundHostLike } from './types.js';

/** The default: 30 days. */
export const DEFAULT_ROUND_RETENTION_MS = 30 * 86_400_000;

/**
 * The outcome without the client ids in it (a completed round's survivors; the sum stays — read
 * through its property, so a sum the job history serves on demand stays there).
 */
export function withoutClients(o: RoundOutcome): RoundOutcome {
  if (!o.ok) return o;
  return copyWith(o, { survivors: [], state: copyWith(o.state, { survivors: [] }) });
}

/**
 * `o` with `changes`, copied with its prototype and property descriptors rather than spread: an
 * outcome whose sum the job history holds reads it through a getter, which a spread would either
 * call (holding the sum in memory again) or drop.
 */
function copyWith<T extends object>(o: T, changes: Partial<T>): T {
  return Object.assign(Object.create(Object.getPrototypeOf(o) as object | null, Object.getOwnPropertyDescriptors(o)) as T, changes);
}

/** A finished round's host once its participants are forgotten: counts, timeline and outcome only. */
export function retiredHost(from: RoundHostLike, outcome: RoundOutcome): FrozenHost {
  return FrozenHost.of(from, withoutClients(outcome));
}
