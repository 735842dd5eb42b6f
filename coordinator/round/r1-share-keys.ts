/**
 * Phase 1, ShareKeys. Takes from each U1 member exactly one encrypted share pair per neighbour
 * (the neighbour graph is fixed by the session id: the coordinator only routes). Closing with
 * >= t senders fixes U2 and forwards to each member of U2 the pairs addressed to it by other
 * members of U2. The coordinator never sees a share in the clear.
 */
import { AEAD_OVERHEAD } from '../../shared/crypto/aead.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { SHARE_PAIR_BYTES } from '../../shared/protocol/keys.js';
import type { Addressed, EncryptedShare, ServerMessage, ShareKeys } from '../../shared/protocol/messages.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abortRound } from './aborted.js';
import { assertSession, refuseResend } from './checks.js';
import { sameBytes } from '../../shared/bytes.js';
import type { CoordinatorTransition, MaskedInputState, ShareKeysState } from './types.js';

export const SHARE_CIPHERTEXT_BYTES = SHARE_PAIR_BYTES + AEAD_OVERHEAD;

export function receive(state: ShareKeysState, msg: ShareKeys): CoordinatorTransition {
  const { roster } = state;
  assertSession(msg.sessionId, roster.sessionId);
  if (!roster.has(msg.clientId)) throw new AegisError(ErrorCode.UnknownSender, 'sender is not in U1');
  const prior = state.received.get(msg.clientId);
  if (prior) {
    const same = prior.shares.length === msg.shares.length && prior.shares.every((s, i) => s.peer === msg.shares[i]!.peer && sameBytes(s.ciphertext, msg.shares[i]!.ciphertext));
    refuseResend(msg.type, same);
  }
  const neighbours = roster.neighboursOf(msg.clientId);
  if (msg.shares.length !== neighbours.length) {
    throw new AegisError(msg.shares.length > neighbours.length ? ErrorCode.TooLarge : ErrorCode.InvalidArgument, `expected ${neighbours.length} share pairs, one per neighbour`);
  }
  const want = new Set(neighbours);
  for (const s of msg.shares) {
    if (!want.delete(s.peer)) throw new AegisError(ErrorCode.InvalidArgument, 'a share pair is addressed to a non-neighbour or twice');
    if (s.ciphertext.length !== SHARE_CIPHERTEXT_BYTES) {
      throw new AegisError(ErrorCode.InvalidArgument, `share pair ciphertexts are ${SHARE_CIPHERTEXT_BYTES} bytes`);
    }
  }
  state.received.set(msg.clientId, msg);
  return { next: state, outbound: [] };
}

/** Every member of U1 has shared. */
export const complete = (state: ShareKeysState): boolean => state.received.size >= state.roster.size;

export function close(state: ShareKeysState): CoordinatorTransition {
  const { cfg, roster } = state;
  const u2 = roster.ids.filter((id) => state.received.has(id));
  if (u2.length < cfg.params.threshold) return abortRound(state, AbortReason.TooFewClients, `${u2.length} clients shared keys, threshold is ${cfg.params.threshold}`);
  const inbox = new Map<string, EncryptedShare[]>(u2.map((id) => [id, []]));
  for (const from of u2) {
    for (const s of state.received.get(from)!.shares) inbox.get(s.peer)?.push({ peer: from, ciphertext: s.ciphertext });
  }
  const outbound: Addressed<ServerMessage>[] = u2.map((to) => ({ to, message: { type: 'share-broadcast', sessionId: roster.sessionId, u2, shares: inbox.get(to)! } }));
  const next: MaskedInputState = {
    phase: Phase.MaskedInput,
    cfg,
    stats: { ...state.stats, u2: u2.length },
    roster,
    u2,
    expected: new Set(u2),
    sum: new Uint32Array(cfg.params.dim + 1),
    received: new Map(),
  };
  return { next, outbound };
}
