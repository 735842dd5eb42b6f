/** The final state of a round that could not finish: nothing partial is ever published. */
import type { ErrorCode } from '../../shared/errors.js';
import { AbortReason } from '../../shared/protocol/vocabulary.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { statsWithDeclines } from './declines.js';
import type { AbortedState, PhaseBase } from './types.js';

/** The round aborts in `from`'s phase with `reason`. */
export function abortRound(from: PhaseBase, reason: AbortReason, detail: string): { next: AbortedState; outbound: [] } {
  const next: AbortedState = { phase: Phase.Aborted, cfg: from.cfg, stats: from.stats, reason, at: from.phase, detail };
  return { next, outbound: [] };
}

/** An operator ends a running round now: it aborts in its current phase with reason `cancelled` (phase 0's declines counted). */
export function cancelRound(from: PhaseBase & { declined?: ReadonlyMap<string, ErrorCode> }, detail: string): { next: AbortedState; outbound: [] } {
  return abortRound({ ...from, stats: statsWithDeclines(from) }, AbortReason.Cancelled, detail);
}
