/**
 * The shared vocabulary of a round (fcp style): phase names and abort reasons that logs,
 * metrics, errors and (from the transport layer on) the protos all use. String values are
 * stable: they appear in JSON output and are part of the CLI's contract.
 */

export const Phase = {
  AdvertiseKeys: 'advertise-keys',
  ShareKeys: 'share-keys',
  MaskedInput: 'masked-input',
  ConsistencyCheck: 'consistency-check',
  Unmasking: 'unmasking',
  Completed: 'completed',
  Aborted: 'aborted',
} as const;
export type Phase = (typeof Phase)[keyof typeof Phase];

/** The phases in protocol order (the two final states last). */
export const PHASE_ORDER: readonly Phase[] = [
  Phase.AdvertiseKeys,
  Phase.ShareKeys,
  Phase.MaskedInput,
  Phase.ConsistencyCheck,
  Phase.Unmasking,
  Phase.Completed,
  Phase.Aborted,
];

/** Why a round (coordinator side) or a client's participation ended without a result. */
export const AbortReason = {
  /** Fewer than t clients remained at some phase. */
  TooFewClients: 'too-few-clients',
  /** Not enough unmasking shares arrived to reconstruct some client's secret. */
  InsufficientShares: 'insufficient-shares',
  /** A reconstructed mask key does not match the public key its owner advertised. */
  ReconstructionMismatch: 'reconstruction-mismatch',
  /** Invalid round parameters (e.g. n * 2^b >= 2^32, t > k). */
  InvalidParameters: 'invalid-parameters',
  /** A survivor list repeats an id. */
  DuplicateId: 'duplicate-id',
  /** A list names an id that is not part of the round (or not where it may be). */
  UnknownId: 'unknown-id',
  /** The coordinator listed this client as dropped while it is alive. */
  ListedDeadWhileAlive: 'listed-dead-while-alive',
  /** The coordinator asked for both the self-mask share and the key share of one peer. */
  BothSharesRequested: 'both-shares-requested',
  /** A second, different unmasking request in one session. */
  ConflictingUnmaskRequest: 'conflicting-unmask-request',
  /** Fewer than t valid consistency signatures over the survivor list. */
  InsufficientSignatures: 'insufficient-signatures',
  /** The survivor list changed between consistency check and unmasking. */
  SurvivorListMismatch: 'survivor-list-mismatch',
  /** A key of the wrong length or of small order. */
  BadKey: 'bad-key',
  /** A signature on an advertised key set does not verify. */
  BadSignature: 'bad-signature',
  /** A share ciphertext failed to decrypt, or its plaintext is malformed. */
  BadShare: 'bad-share',
  /** A message from another session or round. */
  SessionMismatch: 'session-mismatch',
  /** This client's own advertised keys are missing or altered in the broadcast. */
  SelfMismatch: 'self-mismatch',
  /** The round was cancelled by an operator. */
  Cancelled: 'cancelled',
  /** The coordinator could not take the masks out (its unmask workers failed or timed out). */
  UnmaskFailed: 'unmask-failed',
  /** A peer advertised keys for another view of the round (another model, other parameters, another group). */
  ViewMismatch: 'view-mismatch',
  /** The coordinator stopped (killed or crashed) during the round; recorded so when it started again. */
  Interrupted: 'interrupted',
  /** The round's shared state (on Redis) could not be reached: Redis down or hung for too long, or back without the round's records. */
  StateUnreachable: 'state-unreachable',
  /**
   * A hold reason rather than a SecAgg abort: the round's sum was unmasked, but the
   * coordinator's evaluator (`coordinator start --evaluator-cmd`) could not check the new model
   * (timeout, crash, garbage reply), so it was held back, never published — fail closed: an
   * unchecked model must never reach clients. The job keeps its previous model version; clients
   * hear the round as not ok with this reason.
   */
  ModelUnchecked: 'model-unchecked',
} as const;
export type AbortReason = (typeof AbortReason)[keyof typeof AbortReason];
