/** The final state of a round that could not finish: nothing partial is ever published. */
import type { AbortReason } from '../../shared/protocol/vocabulary.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import type { AbortedState, CoordinatorState, CoordinatorTransition } from './types.js';

export function abortRound(from: CoordinatorState, reason: AbortReason, detail: string): CoordinatorTransition {
  const next: AbortedState = { phase: Phase.Aborted, cfg: from.cfg, stats: from.stats, reason, at: from.phase, detail };
  return { next, outbound: [] };
}
