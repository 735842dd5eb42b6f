/**
 * Client-side round states (fcp style: one state per phase, each handled in its own file).
 *
 * A transition is `handle(state, message) -> { next, outbound }`. A message of the wrong kind
 * throws `wrong-phase` and changes nothing; bad content moves the client to `aborted` with a
 * typed reason and sends nothing — in particular no share is ever revealed by a state that
 * aborts. States are plain objects; a transition never mutates the state it was given.
 */
import type { KeyObject } from 'node:crypto';
import type { VectorAccumulator } from '../../shared/crypto/vecops.js';
import type { ClientMessage, RoundRef } from '../../shared/protocol/messages.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import type { Roster } from '../../shared/protocol/roster.js';
import type { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';

export interface ClientConfig {
  clientId: string;
  /**
   * Long-term Ed25519 identity key: a 32-byte seed, or (better: a long-running client imports
   * it once) the KeyObject of it.
   */
  identityKey: Uint8Array | KeyObject;
  params: RoundParams;
  round: RoundRef;
  /** This client's view of the round (shared/protocol/view.ts), signed with its keys; every peer must share it. */
  view: Uint8Array;
  /** The members of this client's group, as the round start listed them: U1 may name no one else. */
  members?: readonly string[];
  /**
   * The PKI: the identity public key enrolled under a client id, or undefined when unknown.
   * (The transport layer answers it from enrollment certificates.)
   */
  identityOf: (clientId: string) => Uint8Array | undefined;
  /**
   * Supplies this client's quantized, weighted input (length dim + 1, see
   * shared/crypto/quantize.ts encodeWeightedInput) when masking starts — late, so a client
   * holds no O(m) vector before it needs one. It is given the round's session id (a DP round's
   * encoding is keyed by it, client/admission/training-round.ts).
   */
  input: (sessionId: Uint8Array) => Uint32Array;
  /** A reusable accumulator of length dim + 1 (one per thread); created when absent. */
  accumulator?: VectorAccumulator;
  /**
   * r: the bits of the round's sum, which the masked input is reduced to and sent at. Derived
   * from the signed manifest (shared/protocol/dp-manifest.ts `maskedSumBits`); default
   * `sumBitsOf(params)`, what a manifest without a `dp` section sets.
   */
  sumBits?: number;
}

/**
 * A round's input as local training leaves it: the vector itself, or (a DP round) a function
 * that makes it from the round's session id once the masked input is due.
 */
export type RoundInput = Uint32Array | ((sessionId: Uint8Array) => Uint32Array);

/** The vector of a round input, given the round's session id. */
export const inputFor = (input: RoundInput, sessionId: Uint8Array): Uint32Array => (typeof input === 'function' ? input(sessionId) : input);

export interface RoundKeys {
  cPk: Uint8Array;
  cSk: KeyObject;
  sPk: Uint8Array;
  /** s_sk raw (it is Shamir-shared) and as a KeyObject (for the mask agreements). */
  sSk: Uint8Array;
  sSkObject: KeyObject;
}

/** Shares this client holds of a neighbour's secrets. */
export interface HeldShare {
  b: Uint8Array;
  s: Uint8Array;
}

export interface ClientStats {
  /** Keystream words generated (mask expansion). */
  prgWords: number;
}

interface Base {
  cfg: ClientConfig;
  stats: ClientStats;
}

/** Keys advertised; awaiting U1. */
export interface AdvertiseKeysState extends Base {
  phase: typeof Phase.AdvertiseKeys;
  keys: RoundKeys;
  identity: KeyObject;
}

/** Shares sent; awaiting U2 and the shares addressed to this client. */
export interface ShareKeysState extends Base {
  phase: typeof Phase.ShareKeys;
  keys: RoundKeys;
  identity: KeyObject;
  roster: Roster;
  /** b_u: the 32-byte self-mask seed. */
  selfSeed: Uint8Array;
  /** The share-encryption key with each neighbour (same both ways), kept to open their pairs. */
  shareKeys: ReadonlyMap<string, Uint8Array>;
}

/** Masked input sent; awaiting U3. */
export interface MaskedInputState extends Base {
  phase: typeof Phase.MaskedInput;
  identity: KeyObject;
  roster: Roster;
  u2: ReadonlySet<string>;
  held: ReadonlyMap<string, HeldShare>;
}

/** U3 signed; awaiting the unmasking request. */
export interface ConsistencyCheckState extends Base {
  phase: typeof Phase.ConsistencyCheck;
  roster: Roster;
  u2: ReadonlySet<string>;
  u3: readonly string[];
  held: ReadonlyMap<string, HeldShare>;
}

/** Shares revealed once; a repeat of the same request gets the same answer, nothing else does. */
export interface UnmaskingState extends Base {
  phase: typeof Phase.Unmasking;
  sessionId: Uint8Array;
  requestDigest: Uint8Array;
  response: ClientMessage;
}

export interface CompletedState extends Base {
  phase: typeof Phase.Completed;
}

export interface AbortedState extends Base {
  phase: typeof Phase.Aborted;
  reason: AbortReason;
  /** The phase in which the client aborted. */
  at: Phase;
  detail: string;
}

export type ClientState =
  | AdvertiseKeysState
  | ShareKeysState
  | MaskedInputState
  | ConsistencyCheckState
  | UnmaskingState
  | CompletedState
  | AbortedState;

export interface ClientTransition {
  next: ClientState;
  outbound: ClientMessage[];
}
