/**
 * Phase 2 -> 3, MaskedInput to ConsistencyCheck (Bonawitz et al. §4, round 3). On U3 the client
 * checks it has no repeats, is a subset of U2, contains this client, and has at least t
 * members — then signs (session_id, U3) with its identity key. Signing commits the client to
 * exactly one survivor list per session.
 */
import { ed25519Sign } from '../../shared/crypto/ed25519.js';
import type { ConsistencyRequest, ConsistencySignature } from '../../shared/protocol/messages.js';
import { compareIds, consistencyTranscript } from '../../shared/protocol/session.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abort } from './aborted.js';
import { checkIdList, sameSession } from './checks.js';
import type { ClientTransition, ConsistencyCheckState, MaskedInputState } from './types.js';

export function handle(state: MaskedInputState, msg: ConsistencyRequest): ClientTransition {
  const { cfg, roster, u2 } = state;
  const me = cfg.clientId;
  if (!sameSession(msg.sessionId, roster.sessionId)) return abort(state, AbortReason.SessionMismatch, 'consistency request names another session');
  const problem = checkIdList(msg.u3, roster);
  if (problem?.kind === 'duplicate') return abort(state, AbortReason.DuplicateId, 'U3 lists a client twice');
  if (problem?.kind === 'unknown') return abort(state, AbortReason.UnknownId, 'U3 names a client outside U1');
  if (msg.u3.some((id) => !u2.has(id))) return abort(state, AbortReason.UnknownId, 'U3 is not a subset of U2');
  if (!msg.u3.includes(me)) return abort(state, AbortReason.ListedDeadWhileAlive, 'U3 leaves out this client, which sent its masked input');
  if (msg.u3.length < cfg.params.threshold) return abort(state, AbortReason.TooFewClients, `U3 has ${msg.u3.length} clients, threshold is ${cfg.params.threshold}`);

  const u3 = [...msg.u3].sort(compareIds);
  const signature = ed25519Sign(state.identity, consistencyTranscript(roster.sessionId, u3));
  const out: ConsistencySignature = { type: 'consistency-signature', sessionId: roster.sessionId, clientId: me, signature };
  const next: ConsistencyCheckState = { phase: Phase.ConsistencyCheck, cfg, stats: state.stats, roster, u2, u3, held: state.held };
  return { next, outbound: [out] };
}
