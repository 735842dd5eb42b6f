/** The final state of a client whose round finished: it holds no round secret any more. */
import { Phase } from '../../shared/protocol/vocabulary.js';
import type { CompletedState, UnmaskingState } from './types.js';

export function complete(from: UnmaskingState): CompletedState {
  return { phase: Phase.Completed, cfg: from.cfg, stats: from.stats };
}
