/**
 * Phase 0, AdvertiseKeys (Bonawitz et al. §4, round 0). The client makes two fresh X25519 pairs
 * (c: share encryption, s: masks), signs them bound to the round, its view of the round
 * (shared/protocol/view.ts) and its id, and sends them. On the broadcast of U1 it checks every
 * entry — ids known to the PKI and members of its group, no id or key twice, keys of the right
 * length, the same view as its own — and its neighbours' entries in full (keys not of small order,
 * signatures by their clients' identity keys), then Shamir-shares its
 * self-mask seed b_u and its s_sk among its neighbours and sends each share pair encrypted to
 * that neighbour (phase 1's message).
 */
import { randomBytes } from 'node:crypto';
import { seal } from '../../shared/crypto/aead.js';
import { ed25519PrivateKeyObject, ed25519Sign, ed25519Verify } from '../../shared/crypto/ed25519.js';
import { encodeShareValue, split } from '../../shared/crypto/shamir.js';
import { x25519KeyPair } from '../../shared/crypto/x25519.js';
import { sameBytes } from '../../shared/bytes.js';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import { assertSumBits, validateRoundParams } from '../../shared/protocol/params.js';
import { encodeSharePair, shareEncryptionKey } from '../../shared/protocol/keys.js';
import type { AdvertiseBroadcast, AdvertiseKeys, EncryptedShare, ShareKeys } from '../../shared/protocol/messages.js';
import { Roster } from '../../shared/protocol/roster.js';
import { advertiseTranscript, assertRoundRef, isValidClientId, sameRound, shareAad } from '../../shared/protocol/session.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abort } from './aborted.js';
import { hasRepeatedKey } from './checks.js';
import type { AdvertiseKeysState, ClientConfig, ClientTransition, ShareKeysState } from './types.js';

/**
 * Joins a round. The parameters are checked first — a client refuses a round whose threshold is
 * not a majority of its neighbourhood or whose sum could overflow, whoever asks for it.
 */
export function start(input: ClientConfig): { next: AdvertiseKeysState; outbound: AdvertiseKeys[] } {
  assertRoundRef(input.round);
  if (!isValidClientId(input.clientId)) throw new AegisError(ErrorCode.InvalidArgument, 'malformed client id');
  const cfg: ClientConfig = { ...input, params: validateRoundParams(input.params) };
  if (cfg.sumBits !== undefined) assertSumBits(cfg.sumBits);
  const c = x25519KeyPair();
  const s = x25519KeyPair();
  const identity = cfg.identityKey instanceof Uint8Array ? ed25519PrivateKeyObject(cfg.identityKey) : cfg.identityKey;
  if (!(cfg.view instanceof Uint8Array) || cfg.view.length !== 32) throw new AegisError(ErrorCode.InvalidArgument, 'the round view must be 32 bytes');
  const signature = ed25519Sign(identity, advertiseTranscript(cfg.round, cfg.view, cfg.clientId, c.publicKey, s.publicKey));
  const next: AdvertiseKeysState = {
    phase: Phase.AdvertiseKeys,
    cfg,
    stats: { prgWords: 0 },
    keys: { cPk: c.publicKey, cSk: c.privateKeyObject, sPk: s.publicKey, sSk: s.privateKey, sSkObject: s.privateKeyObject },
    identity,
  };
  return { next, outbound: [{ type: 'advertise-keys', round: cfg.round, clientId: cfg.clientId, cPk: c.publicKey, sPk: s.publicKey, view: cfg.view, signature }] };
}

export function handle(state: AdvertiseKeysState, msg: AdvertiseBroadcast): ClientTransition {
  const { cfg, keys } = state;
  const { threshold, cohort, neighbors } = cfg.params;
  if (!sameRound(msg.round, cfg.round)) return abort(state, AbortReason.SessionMismatch, 'key broadcast names another round');
  const entries = msg.entries;
  if (entries.length < threshold) return abort(state, AbortReason.TooFewClients, `U1 has ${entries.length} clients, threshold is ${threshold}`);
  if (entries.length > cohort) return abort(state, AbortReason.UnknownId, `U1 has ${entries.length} clients, the cohort is ${cohort}`);

  // Cheap checks on every entry: ids well-formed and unique; keys 32 bytes and never under two
  // ids.
  const ids = new Set<string>();
  const members = cfg.members ? new Set(cfg.members) : undefined;
  const advertised: Uint8Array[] = [];
  for (const e of entries) {
    if (!isValidClientId(e.clientId)) return abort(state, AbortReason.UnknownId, 'U1 names a malformed client id');
    if (ids.has(e.clientId)) return abort(state, AbortReason.DuplicateId, 'U1 lists a client id twice');
    ids.add(e.clientId);
    if (members && !members.has(e.clientId)) return abort(state, AbortReason.UnknownId, 'U1 names a client outside this client’s group');
    if (!(e.view instanceof Uint8Array) || !sameBytes(e.view, cfg.view)) return abort(state, AbortReason.ViewMismatch, 'a peer advertised keys for another view of the round (model, parameters or group)');
    for (const k of [e.cPk, e.sPk]) {
      if (!(k instanceof Uint8Array) || k.length !== 32) return abort(state, AbortReason.BadKey, 'a key in U1 is not 32 bytes');
      advertised.push(k);
    }
  }
  if (hasRepeatedKey(advertised)) return abort(state, AbortReason.BadKey, 'one public key appears twice in U1');
  const self = entries.find((e) => e.clientId === cfg.clientId);
  if (!self) return abort(state, AbortReason.ListedDeadWhileAlive, 'U1 leaves out this client');
  if (Buffer.compare(self.cPk, keys.cPk) !== 0 || Buffer.compare(self.sPk, keys.sPk) !== 0) {
    return abort(state, AbortReason.SelfMismatch, 'U1 carries keys for this client that it did not advertise');
  }

  const roster = new Roster(cfg.round, entries, neighbors);
  const me = cfg.clientId;
  const neighbours = roster.neighboursOf(me);
  if (neighbours.length < threshold) return abort(state, AbortReason.TooFewClients, `only ${neighbours.length} neighbours, threshold is ${threshold}`);
  // Full checks — identity known to the PKI, small order, signature — on the entries this client
  // will use: its neighbours' (everyone's in classic SecAgg). Other entries only enter the
  // session id, and their own neighbours check them. This keeps a SecAgg+ client at O(k)
  // public-key work. Checking a stranger's certificate would add nothing: the coordinator relays
  // every enrolled client's certificate, and a stranger's signature is not checked, so it could
  // list any enrolled id under keys of its own making whatever this client checked of it.
  for (const v of neighbours) {
    const e = roster.entries.get(v)!;
    const identity = cfg.identityOf(v);
    if (!identity) return abort(state, AbortReason.UnknownId, 'U1 names a neighbour the PKI does not know');
    try {
      roster.publicKey(v, 'c');
      roster.publicKey(v, 's');
    } catch (err) {
      if (isAegisError(err)) return abort(state, AbortReason.BadKey, `a neighbour's key is unusable (${err.code})`);
      throw err;
    }
    if (!ed25519Verify(identity, advertiseTranscript(cfg.round, cfg.view, v, e.cPk, e.sPk), e.signature)) {
      return abort(state, AbortReason.BadSignature, 'a key advertisement in U1 is not signed by its client');
    }
  }

  const selfSeed = new Uint8Array(randomBytes(32));
  const [bShares, sShares] = split([selfSeed, keys.sSk], threshold, neighbours.map((v) => roster.xOf(v))) as [bigint[], bigint[]];
  const shareKeys = new Map<string, Uint8Array>();
  const shares: EncryptedShare[] = neighbours.map((v, i) => {
    const key = shareEncryptionKey(roster.sessionId, keys.cSk, roster.publicKey(v, 'c'), me, v);
    shareKeys.set(v, key);
    const pair = encodeSharePair(encodeShareValue(bShares[i]!), encodeShareValue(sShares[i]!));
    return { peer: v, ciphertext: seal(key, pair, shareAad(roster.sessionId, me, v)) };
  });
  const next: ShareKeysState = { phase: Phase.ShareKeys, cfg, stats: state.stats, keys, identity: state.identity, roster, selfSeed, shareKeys };
  const out: ShareKeys = { type: 'share-keys', sessionId: roster.sessionId, clientId: me, shares };
  return { next, outbound: [out] };
}
