/**
 * Phase 0, AdvertiseKeys. Takes each client's two X25519 public keys with its Ed25519
 * signature (checked against the PKI), at most one advertisement per id, at most n clients,
 * no key under two ids — or, instead, a client's decline: it sits the round out, with a reason
 * code and nothing else, and the phase waits for it no longer. One answer per client. Closing
 * with >= t clients fixes U1, derives the session id and the neighbour graph, and broadcasts
 * every signed entry so each client can check them all; the declines become counts by reason.
 */
import { ed25519AssertValid } from '../../shared/crypto/ed25519.js';
import { assertUsablePublicKey } from '../../shared/crypto/x25519.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { AdvertiseKeys, AdvertisedEntry, Decline } from '../../shared/protocol/messages.js';
import { Roster } from '../../shared/protocol/roster.js';
import { sameBytes } from '../../shared/bytes.js';
import { advertiseTranscript, assertRoundRef, isValidClientId, sameRound } from '../../shared/protocol/session.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abortRound } from './aborted.js';
import { refuseSecondAnswer } from './checks.js';
import { isDeclineReason, statsWithDeclines } from './declines.js';
import type { AdvertiseKeysState, CoordinatorConfig, CoordinatorTransition, ShareKeysState } from './types.js';

export function start(cfg: CoordinatorConfig): AdvertiseKeysState {
  return { phase: Phase.AdvertiseKeys, cfg, stats: { prgWords: 0 }, received: new Map(), keyOwners: new Map(), declined: new Map() };
}

export function receive(state: AdvertiseKeysState, msg: AdvertiseKeys | Decline): CoordinatorTransition {
  if (msg.type === 'decline') return receiveDecline(state, msg);
  const { cfg } = state;
  assertRoundRef(msg.round);
  if (!sameRound(msg.round, cfg.round)) throw new AegisError(ErrorCode.SessionMismatch, 'key advertisement for another round');
  if (!isValidClientId(msg.clientId)) throw new AegisError(ErrorCode.InvalidArgument, 'malformed client id');
  if (!sameBytes(msg.view, cfg.view)) throw new AegisError(ErrorCode.SessionMismatch, 'key advertisement for another view of the round (model, parameters or group)');
  const prior = state.received.get(msg.clientId);
  if (prior) {
    refuseSecondAnswer('advertise-keys', msg.type, sameBytes(prior.cPk, msg.cPk) && sameBytes(prior.sPk, msg.sPk) && sameBytes(prior.signature, msg.signature));
  }
  if (state.declined.has(msg.clientId)) refuseSecondAnswer('decline', msg.type, false);
  const idKey = cfg.identityOf(msg.clientId);
  if (!idKey) throw new AegisError(ErrorCode.UnknownSender, 'client is not enrolled');
  if (state.received.size >= cfg.params.cohort) throw new AegisError(ErrorCode.UnknownSender, 'the cohort is full');
  assertUsablePublicKey(msg.cPk, 'c_pk');
  assertUsablePublicKey(msg.sPk, 's_pk');
  if (sameBytes(msg.cPk, msg.sPk)) throw new AegisError(ErrorCode.InvalidArgument, 'c_pk and s_pk must differ');
  for (const k of [msg.cPk, msg.sPk]) {
    if (state.keyOwners.has(Buffer.from(k).toString('hex'))) throw new AegisError(ErrorCode.InvalidArgument, 'public key already advertised under another id');
  }
  ed25519AssertValid(idKey, advertiseTranscript(cfg.round, msg.view, msg.clientId, msg.cPk, msg.sPk), msg.signature, 'key advertisement');

  state.received.set(msg.clientId, msg);
  state.keyOwners.set(Buffer.from(msg.cPk).toString('hex'), msg.clientId);
  state.keyOwners.set(Buffer.from(msg.sPk).toString('hex'), msg.clientId);
  return { next: state, outbound: [] };
}

/**
 * A client sits the round out: recorded with its reason code, once, if it is a member of the
 * round (its identity is known) that has not advertised keys. Nothing else of it is kept.
 */
function receiveDecline(state: AdvertiseKeysState, msg: Decline): CoordinatorTransition {
  const { cfg } = state;
  assertRoundRef(msg.round);
  if (!sameRound(msg.round, cfg.round)) throw new AegisError(ErrorCode.SessionMismatch, 'decline for another round');
  if (!isValidClientId(msg.clientId)) throw new AegisError(ErrorCode.InvalidArgument, 'malformed client id');
  if (!isDeclineReason(msg.reason)) throw new AegisError(ErrorCode.InvalidArgument, 'a decline carries a known reason code');
  const prior = state.declined.get(msg.clientId);
  if (prior !== undefined) refuseSecondAnswer('decline', msg.type, prior === msg.reason);
  if (state.received.has(msg.clientId)) refuseSecondAnswer('advertise-keys', msg.type, false);
  if (!cfg.identityOf(msg.clientId)) throw new AegisError(ErrorCode.UnknownSender, 'the client is not a member of this round (not invited, or not enrolled)');
  state.declined.set(msg.clientId, msg.reason);
  return { next: state, outbound: [] };
}

/** Every invited client (n) has answered: advertised keys or declined. */
export const complete = (state: AdvertiseKeysState): boolean => state.received.size + state.declined.size >= state.cfg.params.cohort;

export function close(state: AdvertiseKeysState): CoordinatorTransition {
  const { cfg } = state;
  const n = state.received.size;
  // Phase 0's end fixes the declines as counts, whether the round goes on or aborts here.
  const stats = { ...statsWithDeclines(state), advertised: n };
  if (n < cfg.params.threshold + 1 || n < 3) {
    return abortRound({ ...state, stats }, AbortReason.TooFewClients, `${n} clients advertised keys, at least ${Math.max(cfg.params.threshold + 1, 3)} are needed`);
  }
  const entries: AdvertisedEntry[] = [...state.received.values()].map((m) => ({ clientId: m.clientId, cPk: m.cPk, sPk: m.sPk, view: m.view, signature: m.signature }));
  const roster = new Roster(cfg.round, entries, cfg.params.neighbors);
  const sorted = roster.ids.map((id) => roster.entries.get(id)!);
  const next: ShareKeysState = { phase: Phase.ShareKeys, cfg, stats: { ...stats, u1: n }, roster, received: new Map() };
  return { next, outbound: roster.ids.map((to) => ({ to, message: { type: 'advertise-broadcast', round: cfg.round, entries: sorted } })) };
}
