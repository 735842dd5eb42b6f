/**
 * Phase 3 -> 4, ConsistencyCheck to Unmasking (Bonawitz et al. §4, round 4, first half). The
 * unmasking request must carry the U3 this client signed and at least t valid signatures over
 * (session_id, U3) from distinct other clients — any client of U3 in classic SecAgg, the
 * client's own neighbours in SecAgg+ (checking all n would cost n^2 verifications per round).
 * Only then does r4-unmasking decide what, if anything, may be revealed.
 */
import { ed25519Verify } from '../../shared/crypto/ed25519.js';
import type { UnmaskRequest } from '../../shared/protocol/messages.js';
import { compareIds, consistencyTranscript } from '../../shared/protocol/session.js';
import { AbortReason } from '../../shared/protocol/vocabulary.js';
import { abort } from './aborted.js';
import { sameSession } from './checks.js';
import { reveal } from './r4-unmasking.js';
import type { ClientTransition, ConsistencyCheckState } from './types.js';

export function handle(state: ConsistencyCheckState, msg: UnmaskRequest): ClientTransition {
  const { cfg, roster, u3 } = state;
  const me = cfg.clientId;
  if (!sameSession(msg.sessionId, roster.sessionId)) return abort(state, AbortReason.SessionMismatch, 'unmasking request names another session');
  const asked = [...msg.u3].sort(compareIds);
  if (asked.length !== u3.length || asked.some((id, i) => id !== u3[i])) {
    return abort(state, AbortReason.SurvivorListMismatch, 'the unmasking request carries another U3 than the one this client signed');
  }

  const inU3 = new Set(u3);
  const allowed = roster.classic ? inU3 : new Set(roster.neighboursOf(me).filter((v) => inU3.has(v)));
  allowed.delete(me);
  const transcript = consistencyTranscript(roster.sessionId, u3);
  const valid = new Set<string>();
  for (const s of msg.signatures) {
    if (valid.size >= cfg.params.threshold) break;
    if (!allowed.has(s.clientId) || valid.has(s.clientId)) continue; // one signer never counts twice
    const key = cfg.identityOf(s.clientId);
    if (key && ed25519Verify(key, transcript, s.signature)) valid.add(s.clientId);
  }
  if (valid.size < cfg.params.threshold) {
    return abort(state, AbortReason.InsufficientSignatures, `${valid.size} valid consistency signatures, threshold is ${cfg.params.threshold}`);
  }
  return reveal(state, msg);
}
