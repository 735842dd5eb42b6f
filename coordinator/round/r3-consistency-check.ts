/**
 * Phase 3, ConsistencyCheck. Each U3 member signs (session_id, U3); a signature that does not
 * verify is refused. Closing with >= t signers fixes U4 and sends each of them the signatures
 * it will check (all of U4 in classic SecAgg; its neighbours' in SecAgg+) and exactly what to
 * reveal: key shares of its neighbours that dropped after sharing (U2 \ U3), self-mask shares
 * of its neighbours in U3 — never both for one peer. When some secret could not get t shares
 * from the clients able to answer, the round aborts here (`insufficient-shares`).
 */
import { ed25519AssertValid } from '../../shared/crypto/ed25519.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { Addressed, ConsistencySignature, ServerMessage, UnmaskRequest } from '../../shared/protocol/messages.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abortRound } from './aborted.js';
import { assertSession, refuseResend } from './checks.js';
import { sameBytes } from '../../shared/bytes.js';
import type { ConsistencyCheckState, CoordinatorTransition, UnmaskingState } from './types.js';

export function receive(state: ConsistencyCheckState, msg: ConsistencySignature): CoordinatorTransition {
  const { roster, cfg } = state;
  assertSession(msg.sessionId, roster.sessionId);
  if (!state.expected.has(msg.clientId)) throw new AegisError(ErrorCode.UnknownSender, 'sender is not in U3');
  const prior = state.signatures.get(msg.clientId);
  if (prior) refuseResend(msg.type, sameBytes(prior, msg.signature));
  const key = cfg.identityOf(msg.clientId);
  if (!key) throw new AegisError(ErrorCode.UnknownSender, 'client is not enrolled');
  ed25519AssertValid(key, state.transcript, msg.signature, 'consistency signature');
  state.signatures.set(msg.clientId, msg.signature);
  return { next: state, outbound: [] };
}

/** Every member of U3 has signed. */
export const complete = (state: ConsistencyCheckState): boolean => state.signatures.size >= state.u3.length;

/**
 * The members of U4 that will be able to answer: each needs t valid signatures from others it
 * accepts (any member of U4 in classic SecAgg, its neighbours in SecAgg+), or it aborts.
 */
function answerers(state: ConsistencyCheckState, u4: readonly string[]): string[] {
  const t = state.cfg.params.threshold;
  if (state.roster.classic) return u4.length - 1 >= t ? [...u4] : [];
  const in4 = new Set(u4);
  return u4.filter((u) => state.roster.neighboursOf(u).filter((v) => in4.has(v)).length >= t);
}

export function close(state: ConsistencyCheckState): CoordinatorTransition {
  const { cfg, roster } = state;
  const t = cfg.params.threshold;
  const u4 = state.u3.filter((id) => state.signatures.has(id));
  if (u4.length < t) return abortRound(state, AbortReason.TooFewClients, `${u4.length} consistency signatures, threshold is ${t}`);
  const inU3 = new Set(state.u3);
  const dropped = new Set(state.u2.filter((id) => !inU3.has(id)));
  // Abort now, rather than after asking, when some secret cannot get t shares: its holders are
  // its neighbours among the clients able to answer.
  const able = new Set(answerers(state, u4));
  for (const v of [...state.u3, ...dropped]) {
    const holders = roster.neighboursOf(v).filter((w) => able.has(w)).length;
    if (holders < t) return abortRound(state, AbortReason.InsufficientShares, `a secret has ${holders} share holders left, threshold is ${t}`);
  }
  const all = u4.map((clientId) => ({ clientId, signature: state.signatures.get(clientId)! }));
  const requests = new Map<string, UnmaskRequest>();
  const outbound: Addressed<ServerMessage>[] = [];
  for (const u of u4) {
    if (!able.has(u)) continue;
    const neighbours = roster.neighboursOf(u);
    const nset = new Set(neighbours);
    const signatures = roster.classic ? all : all.filter((s) => nset.has(s.clientId));
    const req: UnmaskRequest = {
      type: 'unmask-request',
      sessionId: roster.sessionId,
      u3: [...state.u3],
      signatures,
      keyShareOf: neighbours.filter((v) => dropped.has(v)),
      selfMaskShareOf: neighbours.filter((v) => inU3.has(v)),
    };
    requests.set(u, req);
    outbound.push({ to: u, message: req });
  }
  const asked = [...requests.keys()];
  const next: UnmaskingState = {
    phase: Phase.Unmasking,
    cfg,
    stats: { ...state.stats, u4: u4.length },
    roster,
    u2: state.u2,
    u3: state.u3,
    u4: asked,
    expected: new Set(asked),
    sum: state.sum,
    requests,
    responses: new Map(),
  };
  return { next, outbound };
}
