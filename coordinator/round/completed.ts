/** The final state of a round that finished: the unmasked sum and its decoding. */
import { decodeWeightedSum } from '../../shared/crypto/quantize.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import type { CompletedState, UnmaskingState } from './types.js';

export function completeRound(from: UnmaskingState, sum: Uint32Array, prgWords: number): CompletedState {
  const result = decodeWeightedSum(sum, from.u3.length, from.cfg.params);
  return { phase: Phase.Completed, cfg: from.cfg, stats: { ...from.stats, prgWords: from.stats.prgWords + prgWords }, survivors: from.u3, sum, result };
}
