/** The final state of a client that stopped taking part; it answers nothing from then on. */
import { Phase, type AbortReason } from '../../shared/protocol/vocabulary.js';
import type { AbortedState, ClientState, ClientTransition } from './types.js';

export function abort(from: ClientState, reason: AbortReason, detail: string): ClientTransition {
  const next: AbortedState = { phase: Phase.Aborted, cfg: from.cfg, stats: from.stats, reason, at: from.phase, detail };
  return { next, outbound: [] };
}
