/**
 * Phase 2, MaskedInput. Each masked vector from a U2 member is checked (length dim + 1, reduced
 * to the round's r sum bits) and added into one running sum on arrival, then dropped: memory
 * O(m), never O(n·m). Closing with >= t contributors fixes U3 and asks them to sign it.
 */
import { createHash } from 'node:crypto';
import { fitsBits } from '../../shared/crypto/bitpack.js';
import { addIfFits } from '../../shared/crypto/vecops.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { MaskedInput } from '../../shared/protocol/messages.js';
import { consistencyTranscript } from '../../shared/protocol/session.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abortRound } from './aborted.js';
import { assertSession, refuseResend } from './checks.js';
import { roundSumBits } from '../../shared/protocol/params.js';
import { bytesOf, sameBytes } from '../../shared/bytes.js';
import type { ConsistencyCheckState, CoordinatorTransition, MaskedInputState } from './types.js';

const digest = (v: Uint32Array): Uint8Array => new Uint8Array(createHash('sha256').update(bytesOf(v)).digest());

export function receive(state: MaskedInputState, msg: MaskedInput): CoordinatorTransition {
  assertSession(msg.sessionId, state.roster.sessionId);
  if (!state.expected.has(msg.clientId)) throw new AegisError(ErrorCode.UnknownSender, 'sender is not in U2');
  const want = state.cfg.params.dim + 1;
  if (!(msg.vector instanceof Uint32Array)) throw new AegisError(ErrorCode.InvalidArgument, 'masked input must be a vector of uint32');
  if (msg.vector.length > want) throw new AegisError(ErrorCode.TooLarge, `masked input has ${msg.vector.length} words, the round takes ${want}`);
  if (msg.vector.length !== want) throw new AegisError(ErrorCode.InvalidArgument, `masked input has ${msg.vector.length} words, the round takes ${want}`);
  const bits = roundSumBits(state.cfg);
  if (msg.bits !== bits) throw new AegisError(ErrorCode.InvalidArgument, `masked input is reduced to ${msg.bits} bits, the round's sum has ${bits}`);
  const tooWide = (): never => {
    throw new AegisError(ErrorCode.InvalidArgument, `masked input has a word of more than ${bits} bits`);
  };
  const prior = state.received.get(msg.clientId);
  if (prior) {
    if (!fitsBits(msg.vector, bits)) tooWide();
    refuseResend(msg.type, sameBytes(prior, digest(msg.vector)));
  }
  // Checked (every word below 2^r) and added in one pass; a refused vector leaves the sum as it was.
  if (!addIfFits(state.sum, msg.vector, bits)) tooWide();
  state.received.set(msg.clientId, digest(msg.vector));
  return { next: state, outbound: [] };
}

/** Every member of U2 has sent its masked input. */
export const complete = (state: MaskedInputState): boolean => state.received.size >= state.u2.length;

export function close(state: MaskedInputState): CoordinatorTransition {
  const { cfg, roster } = state;
  const u3 = state.u2.filter((id) => state.received.has(id));
  if (u3.length < cfg.params.threshold) return abortRound(state, AbortReason.TooFewClients, `${u3.length} masked inputs arrived, threshold is ${cfg.params.threshold}`);
  const next: ConsistencyCheckState = { phase: Phase.ConsistencyCheck, cfg, stats: { ...state.stats, u3: u3.length }, roster, u2: state.u2, u3, expected: new Set(u3), transcript: consistencyTranscript(roster.sessionId, u3), sum: state.sum, signatures: new Map() };
  return { next, outbound: u3.map((to) => ({ to, message: { type: 'consistency-request', sessionId: roster.sessionId, u3 } })) };
}
