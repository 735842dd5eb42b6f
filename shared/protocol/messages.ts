/**
 * The messages of one round, as plain typed objects. The transport layer maps them 1:1 to
 * protobuf; the state machines see only these. Byte fields are Uint8Array, vectors Uint32Array.
 * "C→S" messages go from a client to the coordinator, "S→C" the other way.
 */

/** Names a round: the manifest it runs and its index within the job. */
export interface RoundRef {
  /** SHA-256 of the signed manifest (32 bytes). */
  manifestHash: Uint8Array;
  /** 0-based index of the round within the job. */
  roundIndex: number;
}

/** C→S, phase 0. */
export interface AdvertiseKeys {
  type: 'advertise-keys';
  round: RoundRef;
  clientId: string;
  /** X25519 public key for share encryption. */
  cPk: Uint8Array;
  /** X25519 public key for pairwise masks. */
  sPk: Uint8Array;
  /** The round view this client acts on (view.ts): 32 bytes, signed with the keys. */
  view: Uint8Array;
  /** Ed25519 over advertiseTranscript(round, view, clientId, cPk, sPk) with the identity key. */
  signature: Uint8Array;
}

/**
 * C→S, instead of phase 0: the client sits the round out. A reason code and nothing else; the
 * coordinator stops waiting for it.
 */
export interface Decline {
  type: 'decline';
  round: RoundRef;
  clientId: string;
  reason: import('../errors.js').ErrorCode;
}

export interface AdvertisedEntry {
  clientId: string;
  cPk: Uint8Array;
  sPk: Uint8Array;
  /** The round view the member signed its keys for. */
  view: Uint8Array;
  signature: Uint8Array;
  /**
   * Over the network: the member's client certificate (DER), from which a client learns the
   * member's identity key after checking it against the CA it pinned at enrollment. Absent in
   * process (the simulator's directory answers `identityOf`).
   */
  certificate?: Uint8Array;
}

/** S→C, end of phase 0: U1 with every member's signed keys, sorted by client id. */
export interface AdvertiseBroadcast {
  type: 'advertise-broadcast';
  round: RoundRef;
  entries: AdvertisedEntry[];
}

export interface EncryptedShare {
  /** Sender (in ShareKeys: the recipient). */
  peer: string;
  /** AES-256-GCM nonce || ciphertext || tag of the share pair. */
  ciphertext: Uint8Array;
}

/** C→S, phase 1: one encrypted share pair per neighbour. */
export interface ShareKeys {
  type: 'share-keys';
  sessionId: Uint8Array;
  clientId: string;
  shares: EncryptedShare[];
}

/** S→C, end of phase 1: U2 and the share pairs addressed to this client. */
export interface ShareBroadcast {
  type: 'share-broadcast';
  sessionId: Uint8Array;
  /** Clients whose shares arrived (U2), sorted. */
  u2: string[];
  /** Share pairs for this client, `peer` = sender. */
  shares: EncryptedShare[];
}

/** C→S, phase 2. */
export interface MaskedInput {
  type: 'masked-input';
  sessionId: Uint8Array;
  clientId: string;
  /** y_u mod 2^bits, length dim + 1: every word below 2^bits. */
  vector: Uint32Array;
  /**
   * r: the round's sum is computed mod 2^r (params.ts `sumBitsOf`, a DP job's modulus), so only
   * the low r bits of each word are sent — on the wire, bit-packed (shared/crypto/bitpack.ts).
   */
  bits: number;
}

/** S→C, end of phase 2: the clients whose masked input arrived (U3), sorted. */
export interface ConsistencyRequest {
  type: 'consistency-request';
  sessionId: Uint8Array;
  u3: string[];
}

/** C→S, phase 3: Ed25519 over consistencyTranscript(sessionId, U3). */
export interface ConsistencySignature {
  type: 'consistency-signature';
  sessionId: Uint8Array;
  clientId: string;
  signature: Uint8Array;
}

export interface SignerSignature {
  clientId: string;
  signature: Uint8Array;
}

/** S→C, end of phase 3: the signatures, and which shares the coordinator asks this client for. */
export interface UnmaskRequest {
  type: 'unmask-request';
  sessionId: Uint8Array;
  u3: string[];
  signatures: SignerSignature[];
  /** Peers whose s_sk share is asked for (they dropped: U2 \ U3). */
  keyShareOf: string[];
  /** Peers whose b share is asked for (they survived: U3). */
  selfMaskShareOf: string[];
}

export interface RevealedShare {
  /** Whose secret this is a share of. */
  owner: string;
  /** 33-byte share value at this client's x-coordinate. */
  value: Uint8Array;
}

/** C→S, phase 4. */
export interface UnmaskResponse {
  type: 'unmask-response';
  sessionId: Uint8Array;
  clientId: string;
  keyShares: RevealedShare[];
  selfMaskShares: RevealedShare[];
}

export type ClientMessage = AdvertiseKeys | Decline | ShareKeys | MaskedInput | ConsistencySignature | UnmaskResponse;
export type ServerMessage = AdvertiseBroadcast | ShareBroadcast | ConsistencyRequest | UnmaskRequest;

/**
 * What one S→C message's content is shared by. The coordinator addresses a broadcast to each
 * member as an object of its own, but the advertise broadcast and the consistency request carry
 * one array for all of them (with one round or session): that array, so a transport can build and
 * encode such a message once per round rather than once per member. Any other message: itself.
 */
export const sharedContentOf = (m: ServerMessage): object => (m.type === 'advertise-broadcast' ? m.entries : m.type === 'consistency-request' ? m.u3 : m);

/** An outbound S→C message and its recipient. */
export interface Addressed<M> {
  to: string;
  message: M;
}

/** S→C: a round starts; the client joins it with these parameters (from the manifest). */
export interface RoundStart {
  type: 'round-start';
  round: RoundRef;
  params: import('./params.js').RoundParams;
  /** Per-phase deadlines (ms from each phase's start), so a client can give up on a silent round. */
  deadlines?: PhaseDeadlines;
  /** The manifest JSON; the client checks SHA-256(manifestJson) == round.manifestHash. */
  manifestJson?: Uint8Array;
  /** A training round: the global model version to train from. */
  model?: ModelVersionRef;
  /** The publisher-signed manifest (DSSE envelope JSON) whose payload is `manifestJson`. */
  signedManifest?: Uint8Array;
  /** The client's aggregation group and its members (a round without groups: one group of the cohort). */
  group?: RoundGroup;
}

/** An aggregation group of a round: every member is told the same list. */
export interface RoundGroup {
  /** 0-based index of the group in the round. */
  index: number;
  /** How many groups the round has. */
  count: number;
  /** The members' client ids, sorted. */
  members: string[];
}

/** A version of a training job's global model and the SHA-256 of its weights. */
export interface ModelVersionRef {
  version: number;
  sha256: Uint8Array;
}

/** How long each phase of a round may take, milliseconds (from the manifest). */
export interface PhaseDeadlines {
  advertiseMs: number;
  shareMs: number;
  maskedMs: number;
  consistencyMs: number;
  unmaskMs: number;
}

/** S→C: how a round ended (`reason` is an AbortReason when not ok). */
export interface RoundOutcome {
  type: 'round-outcome';
  round: RoundRef;
  ok: boolean;
  reason?: string;
  /** The coordinator held back the round's model: it failed the validation gate (suspected poisoning). */
  poisoningFlagged?: boolean;
}

/** Everything a client can receive on its stream. */
export type ServerEvent = ServerMessage | RoundStart | RoundOutcome;
