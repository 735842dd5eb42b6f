/** The final state of a round that finished: the unmasked sum; and the sum's decoding, made when it is read. */
import { decodeWeightedSum, type WeightedSum } from '../../shared/crypto/quantize.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import type { CompletedState, StateBase, UnmaskingState } from './types.js';

/** The decoding of an unmasked sum of `contributors` clients' inputs: float sum, total weight, mean. */
export function decodeRoundSum(sum: Uint32Array, contributors: number, params: RoundParams): WeightedSum {
  return decodeWeightedSum(sum, contributors, params);
}

/** A completed round: `survivors` (U3) and their unmasked `sum` (decoded by its readers: `decodeRoundSum`). */
export function completedState(base: StateBase, survivors: readonly string[], sum: Uint32Array, sessionId?: Uint8Array): CompletedState {
  return { phase: Phase.Completed, cfg: base.cfg, stats: base.stats, survivors, sum, ...(sessionId ? { sessionId } : {}) };
}

export function completeRound(from: UnmaskingState, sum: Uint32Array, prgWords: number): CompletedState {
  return completedState({ cfg: from.cfg, stats: { ...from.stats, prgWords: from.stats.prgWords + prgWords } }, from.u3, sum, from.roster.sessionId);
}
