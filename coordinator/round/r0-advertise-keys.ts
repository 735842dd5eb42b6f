/**
 * Phase 0, AdvertiseKeys. Takes each client's two X25519 public keys with its Ed25519
 * signature (checked against the PKI), at most one advertisement per id, at most n clients,
 * no key under two ids. Closing with >= t clients fixes U1, derives the session id and the
 * neighbour graph, and broadcasts every signed entry so each client can check them all.
 */
import { ed25519AssertValid } from '../../shared/crypto/ed25519.js';
import { assertUsablePublicKey } from '../../shared/crypto/x25519.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { AdvertiseKeys, AdvertisedEntry } from '../../shared/protocol/messages.js';
import { Roster } from '../../shared/protocol/roster.js';
import { sameBytes } from '../../shared/bytes.js';
import { advertiseTranscript, assertRoundRef, isValidClientId, sameRound } from '../../shared/protocol/session.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abortRound } from './aborted.js';
import { refuseResend } from './checks.js';
import type { AdvertiseKeysState, CoordinatorConfig, CoordinatorTransition, ShareKeysState } from './types.js';

export function start(cfg: CoordinatorConfig): AdvertiseKeysState {
  return { phase: Phase.AdvertiseKeys, cfg, stats: { prgWords: 0 }, received: new Map(), keyOwners: new Map() };
}


export function receive(state: AdvertiseKeysState, msg: AdvertiseKeys): CoordinatorTransition {
  const { cfg } = state;
  assertRoundRef(msg.round);
  if (!sameRound(msg.round, cfg.round)) throw new AegisError(ErrorCode.SessionMismatch, 'key advertisement for another round');
  if (!isValidClientId(msg.clientId)) throw new AegisError(ErrorCode.InvalidArgument, 'malformed client id');
  if (!sameBytes(msg.view, cfg.view)) throw new AegisError(ErrorCode.SessionMismatch, 'key advertisement for another view of the round (model, parameters or group)');
  const prior = state.received.get(msg.clientId);
  if (prior) {
    refuseResend(msg.type, sameBytes(prior.cPk, msg.cPk) && sameBytes(prior.sPk, msg.sPk) && sameBytes(prior.signature, msg.signature));
  }
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

/** Every invited client (n) has advertised. */
export const complete = (state: AdvertiseKeysState): boolean => state.received.size >= state.cfg.params.cohort;

export function close(state: AdvertiseKeysState): CoordinatorTransition {
  const { cfg } = state;
  const n = state.received.size;
  if (n < cfg.params.threshold + 1 || n < 3) {
    return abortRound(state, AbortReason.TooFewClients, `${n} clients advertised keys, at least ${Math.max(cfg.params.threshold + 1, 3)} are needed`);
  }
  const entries: AdvertisedEntry[] = [...state.received.values()].map((m) => ({ clientId: m.clientId, cPk: m.cPk, sPk: m.sPk, view: m.view, signature: m.signature }));
  const roster = new Roster(cfg.round, entries, cfg.params.neighbors);
  const sorted = roster.ids.map((id) => roster.entries.get(id)!);
  const next: ShareKeysState = { phase: Phase.ShareKeys, cfg, stats: { ...state.stats, u1: n }, roster, received: new Map() };
  return { next, outbound: roster.ids.map((to) => ({ to, message: { type: 'advertise-broadcast', round: cfg.round, entries: sorted } })) };
}
