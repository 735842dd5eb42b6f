/**
 * Phase 1 -> 2, ShareKeys to MaskedInput (Bonawitz et al. §4, rounds 1-2). On U2 and the share
 * pairs addressed to it, the client checks the list (no repeats, only U1 members, itself
 * included, at least t), decrypts one share pair from each neighbour in U2 (any failure or
 * anything extra aborts), and sends y_u = x_u + PRG(b_u) + sum over neighbours v in U2 of
 * ±PRG(s_uv) (+ if u < v), mod 2^32, then reduced mod 2^r (the round's sum bits). Its own
 * round secrets (b_u, s_sk, c_sk) are dropped from the state here: from now on it only holds
 * shares of its neighbours' secrets.
 */
import { open } from '../../shared/crypto/aead.js';
import { expandInto } from '../../shared/crypto/prg.js';
import { decodeShareValue } from '../../shared/crypto/shamir.js';
import { VectorAccumulator } from '../../shared/crypto/vecops.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { pairwiseMaskKey, selfMaskKey, SHARE_PAIR_BYTES, SHARE_PAIR_VERSION } from '../../shared/protocol/keys.js';
import type { MaskedInput, ShareBroadcast } from '../../shared/protocol/messages.js';
import { roundSumBits } from '../../shared/protocol/params.js';
import { maskSign, shareAad } from '../../shared/protocol/session.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abort } from './aborted.js';
import { sameSession } from './checks.js';
import type { ClientTransition, HeldShare, MaskedInputState, ShareKeysState } from './types.js';

export function handle(state: ShareKeysState, msg: ShareBroadcast): ClientTransition {
  const { cfg, roster, keys } = state;
  const me = cfg.clientId;
  const { threshold, dim } = cfg.params;
  if (!sameSession(msg.sessionId, roster.sessionId)) return abort(state, AbortReason.SessionMismatch, 'share broadcast names another session');

  const u2 = new Set<string>();
  for (const id of msg.u2) {
    if (u2.has(id)) return abort(state, AbortReason.DuplicateId, 'U2 lists a client twice');
    if (!roster.has(id)) return abort(state, AbortReason.UnknownId, 'U2 names a client outside U1');
    u2.add(id);
  }
  if (!u2.has(me)) return abort(state, AbortReason.ListedDeadWhileAlive, 'U2 leaves out this client');
  if (u2.size < threshold) return abort(state, AbortReason.TooFewClients, `U2 has ${u2.size} clients, threshold is ${threshold}`);

  const expected = new Set(roster.neighboursOf(me).filter((v) => u2.has(v)));
  // Only neighbours in U2 hold shares of this client's secrets, and only they mask with it. With
  // fewer than t of them the round can never unmask this client — and with none, y_u would be
  // x_u + PRG(b_u) alone, which honest neighbours would then help unmask. Refuse.
  if (expected.size < threshold) {
    return abort(state, AbortReason.TooFewClients, `only ${expected.size} neighbours in U2, threshold is ${threshold}`);
  }
  const held = new Map<string, HeldShare>();
  for (const s of msg.shares) {
    if (held.has(s.peer)) return abort(state, AbortReason.DuplicateId, 'two share pairs from one sender');
    if (!expected.has(s.peer)) return abort(state, AbortReason.UnknownId, 'a share pair from a sender that is not a neighbour in U2');
    let pair: Uint8Array;
    try {
      pair = open(state.shareKeys.get(s.peer)!, s.ciphertext, shareAad(roster.sessionId, s.peer, me));
      if (pair.length !== SHARE_PAIR_BYTES || pair[0] !== SHARE_PAIR_VERSION) throw new AegisError(ErrorCode.MalformedShares, 'share pair');
      decodeShareValue(pair.subarray(1, 34));
      decodeShareValue(pair.subarray(34, 67));
    } catch (err) {
      if (err instanceof AegisError) return abort(state, AbortReason.BadShare, 'a share pair does not decrypt or is malformed');
      throw err;
    }
    held.set(s.peer, { b: pair.slice(1, 34), s: pair.slice(34, 67) });
  }
  if (held.size !== expected.size) return abort(state, AbortReason.BadShare, 'a neighbour in U2 sent no share pair');

  const input = cfg.input(roster.sessionId);
  if (!(input instanceof Uint32Array) || input.length !== dim + 1) {
    throw new AegisError(ErrorCode.InvalidArgument, `input must be a Uint32Array of length dim + 1 = ${dim + 1}`);
  }
  const acc = cfg.accumulator ?? new VectorAccumulator(dim + 1);
  if (acc.length !== dim + 1) throw new AegisError(ErrorCode.InvalidArgument, 'accumulator length must be dim + 1');
  acc.reset(input);
  expandInto(acc, selfMaskKey(roster.sessionId, state.selfSeed, me), 1);
  for (const v of expected) {
    expandInto(acc, pairwiseMaskKey(roster.sessionId, keys.sSkObject, roster.publicKey(v, 's'), me, v), maskSign(me, v));
  }
  const stats = { prgWords: state.stats.prgWords + (expected.size + 1) * (dim + 1) };
  // Only the low r bits of each word matter to the sum (mod 2^r), and only they are sent.
  const bits = roundSumBits(cfg);
  acc.reduce(bits);
  const vector = acc.snapshot();
  const out: MaskedInput = { type: 'masked-input', sessionId: roster.sessionId, clientId: me, vector, bits };
  const next: MaskedInputState = { phase: Phase.MaskedInput, cfg, stats, identity: state.identity, roster, u2, held };
  return { next, outbound: [out] };
}
