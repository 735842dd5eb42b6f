/**
 * Phase 4, Unmasking (Bonawitz et al. §4, round 4, second half). The client reveals, for each
 * neighbour that dropped after sharing (U2 \ U3), its share of that neighbour's s_sk, and for
 * each neighbour in U3 its share of b — and never both for one peer in one session, whatever it
 * is asked: a request that asks for both, for a key share of a survivor, for a self-mask share of
 * a dropped client, for its own key, or for anything it does not hold, aborts with nothing sent.
 * The first valid request is final: an identical repeat gets the identical answer (a lost
 * response can be re-fetched), a different one aborts.
 */
import { createHash } from 'node:crypto';
import { lengthPrefixed, u32be } from '../../shared/bytes.js';
import type { RevealedShare, UnmaskRequest, UnmaskResponse } from '../../shared/protocol/messages.js';
import { compareIds } from '../../shared/protocol/session.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abort } from './aborted.js';
import { checkIdList, sameSession } from './checks.js';
import type { ClientTransition, ConsistencyCheckState, UnmaskingState } from './types.js';

/** Digest of what a request asks to reveal (signatures aside: they change nothing revealed). */
function requestDigest(msg: UnmaskRequest): Uint8Array {
  const key = [...msg.keyShareOf].sort(compareIds);
  const self = [...msg.selfMaskShareOf].sort(compareIds);
  const u3 = [...msg.u3].sort(compareIds);
  const enc = lengthPrefixed(msg.sessionId, u32be(u3.length), ...u3, u32be(key.length), ...key, u32be(self.length), ...self);
  return new Uint8Array(createHash('sha256').update(enc).digest());
}

export function reveal(state: ConsistencyCheckState, msg: UnmaskRequest): ClientTransition {
  const { cfg, roster, u2, held } = state;
  const me = cfg.clientId;
  const inU3 = new Set(state.u3);
  for (const [list, name] of [[msg.keyShareOf, 'key shares'], [msg.selfMaskShareOf, 'self-mask shares']] as const) {
    const problem = checkIdList(list, roster);
    if (problem?.kind === 'duplicate') return abort(state, AbortReason.DuplicateId, `the request for ${name} repeats a client`);
    if (problem?.kind === 'unknown') return abort(state, AbortReason.UnknownId, `the request for ${name} names a client outside U1`);
  }
  if (msg.keyShareOf.includes(me)) return abort(state, AbortReason.ListedDeadWhileAlive, "the coordinator asks for this client's own mask key");
  const keyAsked = new Set(msg.keyShareOf);
  for (const id of msg.selfMaskShareOf) {
    if (keyAsked.has(id)) return abort(state, AbortReason.BothSharesRequested, 'asked for both shares of one peer');
  }
  for (const id of msg.keyShareOf) {
    if (inU3.has(id)) return abort(state, AbortReason.BothSharesRequested, 'asked for the key share of a survivor, whose self-mask share is revealed too');
    if (!u2.has(id) || !held.has(id)) return abort(state, AbortReason.UnknownId, 'asked for a key share this client does not hold');
  }
  for (const id of msg.selfMaskShareOf) {
    if (id === me) return abort(state, AbortReason.UnknownId, 'asked for a share of its own secret');
    if (!inU3.has(id)) return abort(state, AbortReason.BothSharesRequested, 'asked for the self-mask share of a client listed as dropped');
    if (!held.has(id)) return abort(state, AbortReason.UnknownId, 'asked for a self-mask share this client does not hold');
  }
  const keyShares: RevealedShare[] = msg.keyShareOf.map((owner) => ({ owner, value: held.get(owner)!.s }));
  const selfMaskShares: RevealedShare[] = msg.selfMaskShareOf.map((owner) => ({ owner, value: held.get(owner)!.b }));
  const response: UnmaskResponse = { type: 'unmask-response', sessionId: roster.sessionId, clientId: me, keyShares, selfMaskShares };
  const next: UnmaskingState = { phase: Phase.Unmasking, cfg, stats: state.stats, sessionId: roster.sessionId, requestDigest: requestDigest(msg), response };
  return { next, outbound: [response] };
}

/** A further unmasking request after the first answer. */
export function handle(state: UnmaskingState, msg: UnmaskRequest): ClientTransition {
  if (!sameSession(msg.sessionId, state.sessionId)) return abort(state, AbortReason.SessionMismatch, 'unmasking request names another session');
  if (Buffer.compare(requestDigest(msg), state.requestDigest) !== 0) {
    return abort(state, AbortReason.ConflictingUnmaskRequest, 'a second, different unmasking request in one session');
  }
  return { next: state, outbound: [state.response] };
}
