/**
 * Round admission: may this client join the round a coordinator just started, and with what
 * input? The runner hands each new round start to `admitRound` and gets a typed decision back:
 * admit (a plain round, or a training round whose input local training is now making) or
 * decline with a reason code, and then the client sits the round out and never advertises keys
 * for it.
 *
 * Admission does no networking itself: what it needs from the coordinator (its registry, a
 * model version's bytes) comes in as functions of the context, so it runs the same against
 * fakes in a test.
 *
 * A round start goes through these steps in order; the first that throws a typed error
 * declines the round:
 *
 *   1. the manifest: with trust configured, the payload of the signed manifest (trust.ts),
 *      else the manifest the start carries, against the round's manifest hash; a start without
 *      one is refused; then everything the start says beside it — parameters, deadlines, the
 *      group and its members — against the manifest (round-start.ts);
 *   2. the checks of the claimed round, `ROUND_CHECKS`: the contribution ledger's rules (round
 *      index in range, not joined before, model version; ledger.ts), the privacy budget (its
 *      cost would not take the client past its limit; a non-DP round is refused with a limit;
 *      privacy-budget.ts), then the operator's approval in audit mode;
 *   3. what the client contributes: its input for a plain round (not contributed to another
 *      round before, unless the client opted in to reuse it); for a training round, the global
 *      model, fetched and verified (training-round.ts), then the checks of that model,
 *      `MODEL_CHECKS` (the validation gate, validation.ts);
 *   4. the join is recorded in the contribution ledger — durably, before the runner advertises
 *      any key — and for a training round local training starts.
 *
 * A new check goes into the list whose facts it needs: `ROUND_CHECKS` for what the round start
 * and its manifest say (the round index, the model version named, each round parameter),
 * `MODEL_CHECKS` for what needs the verified global model. What a check remembers from one
 * round to the next lives in `AdmissionMemory` (this run) or the ledger (across restarts).
 */
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import { isTrainingManifest, type JobManifest, type TrainingManifest } from '../../shared/protocol/manifest.js';
import type { RoundOutcome, RoundRef, RoundStart } from '../../shared/protocol/messages.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import type { AuditBook } from '../audit/audit.js';
import type { RoundInput } from '../round/types.js';
import type { ContributionLedger, InputDigest, InputId, RoundClaim } from './ledger.js';
import { checkRoundPrivacy, UNSIGNED_PUBLISHER, type PrivacyLimit, type RoundPrivacy } from './privacy-budget.js';
import { checkRoundStart, manifestOfRoundStart } from './round-start.js';
import { roundPrivacyOf } from './round-privacy.js';
import { trainingInput, verifiedModel, type TrainedUpdate, type Trainer, type TrainingRound } from './training-round.js';
import { checkSignedManifest, type TrustSources } from './trust.js';
import { checkValidationGate, type LocalValidation, type ValidatedModel } from './validation.js';
import { roundName } from '../../shared/round-number.js';

/** What admission reports, beside its decision. */
export type AdmissionEvent =
  /** The client did not join a round (a check failed, or it has nothing to contribute). */
  | { kind: 'sat-out'; roundIndex: number; code: string; message: string }
  /** The coordinator flagged a round's model as suspected poisoning (the client enters audit mode). */
  | { kind: 'poisoning-flag'; roundIndex: number }
  /** Local training for a round finished. */
  | { kind: 'trained'; roundIndex: number; modelVersion: number; examples: number; loss: number; trainMs: number; fetchMs: number };

/** What admission keeps from one round to the next (for the client's whole run). */
export interface AdmissionMemory {
  /** Per job id: the latest model version checked against local validation, and its accuracy. */
  readonly validated: Map<string, ValidatedModel>;
}

export const newAdmissionMemory = (): AdmissionMemory => ({ validated: new Map() });

/** Everything admission needs, given by the runner once for its whole run. */
export interface AdmissionContext {
  /** This client's id: it must be a member of the group it is put in. */
  clientId: string;
  /** Take only publisher-signed rounds, checked against these registries; absent: unsigned rounds are taken too. */
  trust?: TrustSources;
  /**
   * Audit mode: a registry mismatch, a validation drop or a poisoning flag enters it; while in
   * it, each new job needs the operator's approval bound to its manifest hash. Every refused
   * round is logged in it.
   */
  audit?: Pick<AuditBook, 'enter' | 'admit' | 'refused'>;
  /** Whether the client has an input for plain (non-training) rounds; without one it sits them out. */
  hasPlainInput: boolean;
  /**
   * What identifies the client's plain input for a round (ledger.ts: quantizedInputId,
   * rawInputId); the ledger keeps only its HMAC. Absent: the input is not checked for reuse.
   */
  plainInput?: (round: RoundRef, params: RoundParams) => Promise<InputId>;
  /** Contribute one plain input to several rounds (`client run --input-reuse`): a coordinator may learn it as a difference of sums. */
  inputReuse?: boolean;
  /** Which rounds this client joined and what it contributed (in the data dir, or in memory). */
  ledger: ContributionLedger;
  /**
   * The client's privacy budget (`client run --privacy-budget`): a round whose cost would take
   * the client's total past it is declined `privacy-budget`, and so is every non-DP round.
   * Absent: nothing is refused for privacy, but DP rounds are still charged in the ledger.
   */
  privacyBudget?: PrivacyLimit;
  /** Local training; without it the client sits training rounds out. */
  train?: Trainer;
  /**
   * The model formats `train` can train (default: `tfjs-layers`, the built-in trainer); a round
   * of another format is declined with `trainer-unavailable`.
   */
  trainerFormats?: readonly string[];
  /**
   * Train to the end before answering phase 0 (an external trainer): a failure then declines
   * the round with its reason (`trainer-failed`, …) instead of leaving it later as a dropout.
   * The trainer and the validation evaluate get `TrainingRound.deadlineAt`: phase 0's deadline
   * less a margin, so the decline still arrives in time.
   */
  trainFirst?: boolean;
  /** Local validation of each global model (the validation gate); absent: no gate on this client. */
  validate?: LocalValidation;
  /** A model version's bytes from the coordinator, refusing more than `expectedBytes`. */
  fetchModel: (manifestHash: Uint8Array, version: number, expectedBytes: number) => Promise<Uint8Array>;
  memory: AdmissionMemory;
  /**
   * A failure of the functions above that is not a typed error, as one (the runner reads a
   * gRPC status's reason); default: `unavailable`.
   */
  asError?: (err: unknown) => AegisError;
  onEvent?: (e: AdmissionEvent) => void;
}

/** The decision on a round start. */
export type RoundAdmission =
  /** A plain round: the client's input for it is read when the masked input is due. */
  | { admitted: true; kind: 'plain'; manifest: JobManifest }
  /** A training round: `input` is the update local training is making from `modelVersion`. */
  | { admitted: true; kind: 'training'; manifest: TrainingManifest; modelVersion: number; input: Promise<RoundInput> }
  /** Sat out, with the reason code and the reason in words. */
  | { admitted: false; code: ErrorCode; message: string };

/** A round start once its manifest is established: what the checks decide on. */
export interface ClaimedRound {
  start: RoundStart;
  /** The round's manifest: the signed one's payload with trust, else the start's own (hash-checked). */
  manifest: JobManifest;
  /** The round's manifest hash in hex, as the audit book names a job's manifest. */
  manifestSha256: string;
  /** Who signed the manifest (the first verified signer's registry key id), or UNSIGNED_PUBLISHER. */
  publisher: string;
  /** The round's privacy cost, from the manifest's dp section. */
  privacy: RoundPrivacy;
}

/** A check of a claimed round: throws a typed error to decline it. */
export type RoundCheck = (ctx: AdmissionContext, round: ClaimedRound) => Promise<void>;
/** A check of a training round's verified global model: throws a typed error to decline it. */
export type ModelCheck = (ctx: AdmissionContext, round: ClaimedRound, model: TrainingRound) => Promise<void>;

/** The round as the contribution ledger's rules see it. */
function claimOf(ctx: AdmissionContext, { start, manifest, manifestSha256, publisher, privacy }: ClaimedRound): RoundClaim {
  const training = isTrainingManifest(manifest);
  return {
    ...(privacy.dp ? { charge: { publisher, rdp: privacy.rdp, ...(ctx.privacyBudget ? { limit: ctx.privacyBudget } : {}) } } : {}),
    manifestSha256,
    roundIndex: start.round.roundIndex,
    kind: training ? 'training' : 'plain',
    jobId: manifest.jobId,
    rounds: manifest.rounds,
    expiresAt: manifest.expiresAt,
    ...(training && start.model ? { modelVersion: start.model.version } : {}),
  };
}

/** Each round is joined once, within the manifest's rounds, from a model version that moves forward (ledger.ts). */
const contributionLedger: RoundCheck = async (ctx, round) => {
  ctx.ledger.check(claimOf(ctx, round));
};

/** Joining must not take the client past its privacy budget; with one, only DP rounds are joined (privacy-budget.ts). */
const privacyBudget: RoundCheck = async (ctx, { start, manifest, manifestSha256, publisher, privacy }) => {
  checkRoundPrivacy(ctx.ledger.privacyCharges(), ctx.privacyBudget, { publisher, manifestSha256, jobId: manifest.jobId, roundIndex: start.round.roundIndex, privacy });
};

/** In audit mode, a job runs only with the operator's approval of its exact manifest hash. */
const operatorApproval: RoundCheck = async (ctx, { manifest, manifestSha256 }) => {
  if (ctx.audit) await ctx.audit.admit(manifest.jobId, manifestSha256);
};

/** A new global model that loses too much local validation accuracy puts the client in audit mode. */
const validationGate: ModelCheck = async (ctx, { manifestSha256 }, model) => {
  await checkValidationGate(model, manifestSha256, { validate: ctx.validate, validated: ctx.memory.validated, audit: ctx.audit });
};

// The ledger first: a round it refuses does not use up an operator's approval.
const ROUND_CHECKS: readonly RoundCheck[] = [contributionLedger, privacyBudget, operatorApproval];
const MODEL_CHECKS: readonly ModelCheck[] = [validationGate];

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * Decides whether the client joins the round `start` begins, and prepares its input. Never
 * throws: a failed check, or a failure of the context's I/O, declines the round — reported as
 * a `sat-out` event and, with an audit book, logged as refused.
 */
export async function admitRound(ctx: AdmissionContext, start: RoundStart): Promise<RoundAdmission> {
  const startedAt = Date.now();
  try {
    const round = await claimedRound(ctx, start);
    for (const check of ROUND_CHECKS) await check(ctx, round);
    const { manifest } = round;
    if (!isTrainingManifest(manifest)) {
      if (!ctx.hasPlainInput) throw new AegisError(ErrorCode.NoInput, 'this client has no input for a plain round (aegis client run --input)');
      const input = await plainInputDigest(ctx, start);
      await ctx.ledger.join(claimOf(ctx, round), input);
      return { admitted: true, kind: 'plain', manifest };
    }
    return await admitTraining(ctx, round, manifest, startedAt);
  } catch (err) {
    return decline(ctx, start, isAegisError(err) ? err : (ctx.asError ?? unavailable)(err));
  }
}

/**
 * Step 1: the round's manifest — the signed manifest's payload (with trust), else the one the
 * start carries — and the start checked against it.
 */
async function claimedRound(ctx: AdmissionContext, start: RoundStart): Promise<ClaimedRound> {
  const signed = ctx.trust ? await checkSignedManifest(start, ctx.trust, ctx.audit) : undefined;
  const manifest = signed ? signed.manifest : manifestOfRoundStart(start);
  checkRoundStart(start, manifest, ctx.clientId);
  const publisher = signed?.signers[0] ?? UNSIGNED_PUBLISHER;
  return { start, manifest, manifestSha256: hex(start.round.manifestHash), publisher, privacy: roundPrivacyOf(manifest) };
}

/** Step 3 of a training round: the verified global model, its checks, and local training started. */
async function admitTraining(ctx: AdmissionContext, round: ClaimedRound, manifest: TrainingManifest, startedAt: number): Promise<RoundAdmission> {
  const { train } = ctx;
  if (!train) throw new AegisError(ErrorCode.NoInput, 'this client has no training data for a training round (aegis client run --train-data)');
  const formats = ctx.trainerFormats ?? ['tfjs-layers'];
  if (!formats.includes(manifest.model.format)) {
    throw new AegisError(
      ErrorCode.TrainerUnavailable,
      manifest.model.format === 'safetensors'
        ? "this job's model is safetensors: it needs an external trainer (aegis client run --trainer-cmd)"
        : `this client's trainer takes ${formats.join(', ')} models, this job's model is ${manifest.model.format}`,
    );
  }
  const { start } = round;
  if (!start.model) throw new AegisError(ErrorCode.HashMismatch, 'a training round start names no model version');
  const fetchStart = Date.now();
  const bytes = await ctx.fetchModel(start.round.manifestHash, start.model.version, manifest.round.dim * 4);
  const model: TrainingRound = {
    roundIndex: start.round.roundIndex,
    manifest,
    globalWeights: verifiedModel(bytes, start.model, manifest),
    modelVersion: start.model.version,
    ...(ctx.trainFirst ? { deadlineAt: trainFirstDeadline(startedAt, start.deadlines?.advertiseMs ?? manifest.deadlines.advertiseMs) } : {}),
  };
  const fetchMs = Date.now() - fetchStart;
  for (const check of MODEL_CHECKS) await check(ctx, round, model);
  const onTrained = (u: TrainedUpdate): void =>
    ctx.onEvent?.({ kind: 'trained', roundIndex: model.roundIndex, modelVersion: model.modelVersion, examples: u.examples ?? u.weight, loss: u.loss ?? Number.NaN, trainMs: u.trainMs ?? 0, fetchMs });
  if (ctx.trainFirst) {
    // Trained before the join is recorded and before any key is advertised: a failure declines.
    const values = await trainingInput(train, model, onTrained);
    await ctx.ledger.join(claimOf(ctx, round));
    return { admitted: true, kind: 'training', manifest, modelVersion: model.modelVersion, input: Promise.resolve(values) };
  }
  await ctx.ledger.join(claimOf(ctx, round));
  const input = trainingInput(train, model, onTrained);
  return { admitted: true, kind: 'training', manifest, modelVersion: model.modelVersion, input };
}

/**
 * When a trainer that runs before phase 0's answer must be done: phase 0's deadline, counted
 * from when the client got the round start, less 10 % of it (at least 1 s) for the decline or
 * the keys to reach the coordinator in time.
 */
export const trainFirstDeadline = (startedAt: number, advertiseMs: number): number => startedAt + advertiseMs - Math.max(1_000, advertiseMs * 0.1);

/** Step 3 of a plain round: the input's digest, refused when it went to another round before (`input-reused`). */
async function plainInputDigest(ctx: AdmissionContext, start: RoundStart): Promise<InputDigest | undefined> {
  if (!ctx.plainInput) return undefined;
  return ctx.ledger.inputDigest(await ctx.plainInput(start.round, start.params), start.round, { reuse: ctx.inputReuse === true });
}

async function decline(ctx: AdmissionContext, start: RoundStart, e: AegisError): Promise<RoundAdmission> {
  ctx.onEvent?.({ kind: 'sat-out', roundIndex: start.round.roundIndex, code: e.code, message: e.message });
  // Every refusal goes to the audit log (an approval refusal is logged by the book itself).
  if (ctx.audit && e.code !== ErrorCode.ApprovalRequired) await ctx.audit.refused(e.code, claimedJob(start)).catch(() => undefined);
  return { admitted: false, code: e.code, message: e.message };
}

const unavailable = (err: unknown): AegisError => new AegisError(ErrorCode.Unavailable, err instanceof Error ? err.message : String(err));

/** The job a round start claims to be (for the audit log only: it may be the refused lie). */
function claimedJob(start: RoundStart): { jobId: string; manifestSha256: string } | undefined {
  try {
    const jobId = start.manifestJson ? (JSON.parse(Buffer.from(start.manifestJson).toString('utf8')) as { jobId?: unknown }).jobId : undefined;
    return typeof jobId === 'string' ? { jobId, manifestSha256: hex(start.round.manifestHash) } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What admission learns from a round's outcome: the ledger records how a round this client
 * joined ended (the next round of a training job must then start from the model that round
 * published); a round whose model the coordinator held back (it failed the validation gate on
 * the coordinator's validation set) puts the client in audit mode, so the next jobs need the
 * operator's approval.
 */
export async function recordRoundOutcome(ctx: AdmissionContext, outcome: RoundOutcome): Promise<void> {
  // An outcome only tightens the next round's rules; one that cannot be recorded loosens none.
  await ctx.ledger.outcome(outcome.round, { ok: outcome.ok, poisoningFlagged: outcome.poisoningFlagged === true }).catch(() => undefined);
  if (!outcome.poisoningFlagged) return;
  ctx.onEvent?.({ kind: 'poisoning-flag', roundIndex: outcome.round.roundIndex });
  await ctx.audit?.enter('poisoning-flag', `the coordinator held back the model of ${roundName(outcome.round.roundIndex)} (validation gate)`);
}
