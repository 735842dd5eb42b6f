/**
 * Typed errors with stable string codes (libsignal / js-libp2p style).
 *
 * Every error Aegis raises on purpose is an `AegisError` with a `code` from `ErrorCode`. The
 * code is the contract: logs, CLI output, and (from the transport layer on) gRPC statuses speak
 * it. Messages never carry key material or plaintext — only names, counts and lengths.
 */

export const ErrorCode = {
  /** A parameter is outside its documented range. */
  InvalidArgument: 'invalid-argument',
  /** A key has the wrong length or encoding. */
  BadKeyLength: 'bad-key-length',
  /** An X25519 public key of small order (or an all-zero shared secret). */
  LowOrderPoint: 'low-order-point',
  /** A signature failed strict verification. */
  BadSignature: 'bad-signature',
  /** Authenticated decryption failed. One code and one message for every cause. */
  DecryptionFailed: 'decryption-failed',
  /** A vector element is NaN or +-Infinity. */
  NonFiniteValue: 'non-finite-value',
  /** n * 2^b >= 2^32: the sum of the cohort's quantized inputs could wrap. */
  OverflowRisk: 'overflow-risk',
  /** Fewer Shamir shares than the threshold. */
  InsufficientShares: 'insufficient-shares',
  /** Shamir shares that repeat an x-coordinate, use x = 0, or hold values outside the field. */
  MalformedShares: 'malformed-shares',
  /** A message arrived in a phase that does not take it. */
  WrongPhase: 'wrong-phase',
  /** The same sender already sent this message (an identical resend changes nothing). */
  AlreadyExists: 'already-exists',
  /** The sender is not expected in this phase (not in the current survivor set). */
  UnknownSender: 'unknown-sender',
  /** The message names another session or round. */
  SessionMismatch: 'session-mismatch',
  /** A vector or list larger than the round allows. */
  TooLarge: 'too-large',
  /** The call's credentials (certificate identity or round token) were refused. */
  Unauthenticated: 'unauthenticated',
  /** The caller is authenticated but not allowed this call (a client calling an admin method). */
  PermissionDenied: 'permission-denied',
  /** An Ed25519 public key already enrolled under another client id (or an id under another key). */
  KeyAlreadyBound: 'key-already-bound',
  /** A keyfile that is readable by others, not sealed, or holds a plain key. */
  InsecureKeyfile: 'insecure-keyfile',
  /** An enrollment token that is unknown, expired, already used or malformed. */
  EnrollmentRefused: 'enrollment-refused',
  /** No such job, round or client. */
  NotFound: 'not-found',
  /** Fewer clients than the threshold are connected to start a round. */
  TooFewClients: 'too-few-clients',
  /** The coordinator could not be reached (after retries). */
  Unavailable: 'unavailable',
  /** A model or manifest does not match the hash it was announced with (manifest, round start). */
  HashMismatch: 'hash-mismatch',
  /** A signature by a key no trusted registry lists (or a revoked publisher). */
  UnknownKey: 'unknown-key',
  /** Signed metadata or a manifest past its expiry (or a frozen registry). */
  Expired: 'expired',
  /** Signed metadata or a manifest older than a version already seen. */
  Rollback: 'rollback',
  /** The registry and the backup registry do not serve the same signed metadata. */
  RegistryMismatch: 'registry-mismatch',
  /**
   * The backup registry lags the primary (an older version the primary validly extends) and does
   * not list the job's publisher yet: the job is refused, the client does not enter audit mode.
   */
  BackupBehind: 'backup-behind',
  /** Signed data that does not parse strictly (duplicate keys, bad encoding, extra fields). */
  Malformed: 'malformed',
  /** In audit mode: a job that needs the operator’s approval bound to its manifest hash. */
  ApprovalRequired: 'approval-required',
  /** The operation is not allowed in the current state (destroying a key still in use, disabling the primary). */
  FailedPrecondition: 'failed-precondition',
  /**
   * A round this client already joined (the same manifest hash and round index), or a training
   * round from a model version it already contributed from: a coordinator replaying a round
   * could learn one client's input as the difference of two sums.
   */
  ReplayedRound: 'replayed-round',
  /** A round index at or past the manifest's number of rounds. */
  RoundOutOfRange: 'round-out-of-range',
  /** A training round's model version older than one this client trained from, or not the one the job's previous round published. */
  ModelRollback: 'model-rollback',
  /** This client's plain input was already contributed to a round (client run --input-reuse allows it). */
  InputReused: 'input-reused',
  /** A round start without a verifiable publisher-signed manifest, to a client that takes only those. */
  ManifestRequired: 'manifest-required',
  /** Round parameters, deadlines or the group differ from the signed manifest and the rules both sides use. */
  ParametersMismatch: 'parameters-mismatch',
  /** The client has nothing to contribute to the round (no input for a plain round, no training data). */
  NoInput: 'no-input',
  /** A masked input sent without an upload slot of its round (SecAgg.AcquireUpload first). */
  UploadSlotRequired: 'upload-slot-required',
  /**
   * The client's external trainer (client run --trainer-cmd) failed for a round: it timed out,
   * crashed, exited non-zero, broke the trainer protocol, or wrote weights that do not match the
   * manifest's tensors. The client declines the round and takes part in the next ones.
   */
  TrainerFailed: 'trainer-failed',
  /** The client's external trainer command could not be started (not found, not executable). */
  TrainerUnavailable: 'trainer-unavailable',
  /**
   * The client declines a round for its privacy budget (client run --privacy-budget): the
   * round's privacy cost would take the client's total past the limit, or the round is not
   * differentially private (its cost is unbounded). The client takes part in later rounds that fit.
   */
  PrivacyBudget: 'privacy-budget',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * A short, actionable hint per code, shown by the CLI under the message when the error carries
 * no hint of its own (see `AegisError`).
 */
const HINTS: Record<ErrorCode, string> = {
  'invalid-argument': "check the flags and values against the command's --help (aegis COMMAND --help)",
  'bad-key-length': 'keys are 32 bytes (X25519, Ed25519 public keys and seeds)',
  'low-order-point': 'the peer sent a degenerate X25519 key; it cannot take part',
  'bad-signature': 'the signature does not verify under the expected key',
  'decryption-failed': 'the ciphertext or its context is not the one that was sealed',
  'non-finite-value': 'inputs must be finite numbers; clean NaN/Infinity before aggregation',
  'overflow-risk': 'lower the quantization bits b or the cohort size n so that n * 2^b < 2^32',
  'insufficient-shares': 'too few clients answered to reconstruct; lower dropout or raise the cohort',
  'malformed-shares': 'shares must have distinct x-coordinates in 1..10000 and values in the field',
  'wrong-phase': 'the round is in another phase; resend in the phase that takes this message',
  'already-exists': 'this message was already received; an identical resend changes nothing',
  'unknown-sender': 'the sender is not part of this phase of the round',
  'session-mismatch': 'the message belongs to another round or session',
  'too-large': 'the message is larger than the round parameters allow',
  unauthenticated: 'the certificate or round token was refused (revoked, expired, replayed); re-enroll if revoked',
  'permission-denied': 'this call needs an operator credential (aegis clients/round commands on the coordinator host)',
  'key-already-bound': 'each identity key enrolls under one client id; create a new data dir to enroll another client',
  'insecure-keyfile': 'keyfiles must be sealed and mode 0600 (chmod 600 FILE)',
  'enrollment-refused': 'ask the operator for a fresh one-time token: aegis clients invite',
  'not-found': 'check the id, path or directory the message names (ids: aegis clients list, aegis round status)',
  'too-few-clients': 'wait for more clients to connect (aegis client run) or lower the threshold',
  unavailable: 'a service this needs could not be reached (the message names it: the coordinator, the OS keyring, an HSM); check it is running and the address or path is right',
  'hash-mismatch': 'the model or manifest is not the one that was signed; do not train on it (see aegis round status)',
  'unknown-key': 'the signer is not in the trusted registry: add the publisher (aegis registry add-publisher) or check the registries',
  'expired': 're-sign with a later expiry (aegis registry sign / aegis manifest sign)',
  'rollback': 'a newer version was already accepted; an older one is never taken back',
  'registry-mismatch': 'the registries disagree: check both; the client stays in audit mode until they agree',
  'backup-behind': 'the backup registry is an older version that does not list this publisher yet: publish the registry to it (aegis registry publish --dir REGISTRY --to BACKUP_DIR)',
  'malformed': 'the envelope or metadata is not in the signed format',
  'approval-required': 'approve it on the client: aegis client approve JOB --manifest-sha256 H',
  'failed-precondition': 'the current state does not allow this (see the status command: aegis keys status, aegis round status)',
  'replayed-round': 'each round of a job is joined once; the coordinator must start a new round (aegis client ledger shows what this client joined)',
  'round-out-of-range': 'the job has run all the rounds its signed manifest allows; publish a new manifest to run more',
  'model-rollback': 'the coordinator offered an older global model than this client already trained from; check the coordinator',
  'input-reused': 'this input was already summed in a round; give a new --input, or accept the risk with client run --input-reuse',
  'manifest-required': 'this client takes only rounds with a publisher-signed manifest it can verify; check the coordinator',
  'parameters-mismatch': 'the coordinator sent round parameters, deadlines or a group that the signed manifest does not allow; check the coordinator',
  'no-input': 'give --input (plain rounds) or --train-data (training jobs) to aegis client run',
  'upload-slot-required': 'ask for an upload slot (SecAgg.AcquireUpload) and send the masked input once it is granted',
  'trainer-failed': "test the trainer alone: aegis trainer check --trainer-cmd CMD --manifest MANIFEST (the client's log has the trainer's redacted stderr)",
  'trainer-unavailable': 'check the --trainer-cmd program exists and is executable (an absolute path avoids PATH surprises)',
  'privacy-budget': 'see what this client spent: aegis client privacy status --data-dir DIR',
};

/**
 * `hint` is what the CLI prints under the message: by default the code's hint (HINTS); an error
 * raised where the situation is known passes its own (a string), or `null` when no hint helps.
 */
export class AegisError extends Error {
  override readonly name = 'AegisError';
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  constructor(code: ErrorCode, message: string, hint?: string | null) {
    super(message);
    this.code = code;
    this.hint = hint === null ? undefined : (hint ?? HINTS[code]);
  }
}

/** Guard: `isAegisError(e, ErrorCode.BadSignature)`. */
export function isAegisError(err: unknown, code?: ErrorCode): err is AegisError {
  return err instanceof AegisError && (code === undefined || err.code === code);
}

export function fail(code: ErrorCode, message: string, hint?: string | null): never {
  throw new AegisError(code, message, hint);
}
