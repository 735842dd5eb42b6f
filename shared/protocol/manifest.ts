/**
 * The job manifest: what a round (or a job of rounds) runs, validated by one zod schema. A
 * publisher signs it in a DSSE envelope (shared/trust/manifest.ts); the fields here stay the
 * same. Every round parameter is documented where it is defined (shared/protocol/params.ts).
 */
import { z } from 'zod';
import { AegisError, ErrorCode } from '../errors.js';
import { RoundParamsSchema, validateRoundParams, type RoundParams } from './params.js';
import { sha256 } from './session.js';
import { parseStrictJson } from '../trust/strict-json.js';
import { TensorSpecSchema } from '../trainer/protocol.js';
import { DpSpecSchema, checkDpSpec } from './dp-manifest.js';

const ms = (min: number, max: number) => z.number().int().min(min).max(max);

/** Per-phase deadlines: how long the coordinator waits in each phase before closing it. */
export const DeadlinesSchema = z
  .object({
    /** Phase 0: clients advertising keys (also the time a cohort has to gather). Default 60 s. */
    advertiseMs: ms(100, 3_600_000).default(60_000),
    /** Phase 1: encrypted share pairs. Default 30 s. */
    shareMs: ms(100, 3_600_000).default(30_000),
    /** Phase 2: masked inputs (includes local training when the job trains). Default 10 min. */
    maskedMs: ms(100, 86_400_000).default(600_000),
    /** Phase 3: consistency signatures. Default 30 s. */
    consistencyMs: ms(100, 3_600_000).default(30_000),
    /** Phase 4: unmasking shares. Default 30 s. */
    unmaskMs: ms(100, 3_600_000).default(30_000),
  })
  .strict();

/**
 * The model of a training job in tfjs format. Weights travel as the tfjs `weights.bin` layout:
 * float32 little-endian, every weight of `model.getWeights()` in order, concatenated — so the
 * flat vector has exactly `round.dim` values.
 */
export const TfjsModelSpecSchema = z
  .object({
    /** A tfjs layers model, trained by the client's built-in tfjs trainer. */
    format: z.literal('tfjs-layers'),
    /** The model topology: what tfjs `model.toJSON(null, false)` returns (a layers model JSON). */
    architecture: z.record(z.string(), z.unknown()),
    /** SHA-256 (64 hex digits) of the initial weights in the layout above. */
    initialWeightsSha256: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();

/**
 * The model of a training job trained by an external trainer (`client run --trainer-cmd`,
 * docs/trainer-protocol.md): a list of named F32 tensors and no topology — the trainer knows its
 * model. The flat weight vector is the tensors' values concatenated in declared order
 * (row-major, float32 little-endian); their element counts sum to `round.dim`.
 */
export const SafetensorsModelSpecSchema = z
  .object({
    /** Weights exchanged with the trainer as safetensors files. */
    format: z.literal('safetensors'),
    /** The tensors, in order: name (unique), shape, dtype F32. 1..4096 of them. */
    tensors: z.array(TensorSpecSchema).min(1).max(4096),
    /** SHA-256 (64 hex digits) of the initial weights as the flat vector above. */
    initialWeightsSha256: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();

/** The model a training job starts from: `tfjs-layers` (the built-in trainer) or `safetensors` (an external trainer). */
export const ModelSpecSchema = z.discriminatedUnion('format', [TfjsModelSpecSchema, SafetensorsModelSpecSchema]);

/** How each client trains locally in a round of a training job. */
export const TrainingSchema = z
  .object({
    /** Local epochs over the client's examples per round. Default 1. */
    epochs: z.number().int().min(1).max(1000).default(1),
    /** Mini-batch size. Default 32. */
    batchSize: z.number().int().min(1).max(65_536).default(32),
    /** Optimizer learning rate, 0 < lr <= 10. Default 0.01. */
    learningRate: z.number().positive().max(10).default(0.01),
    /** Local optimizer, created fresh each round. Default sgd. */
    optimizer: z.enum(['sgd', 'momentum', 'adam', 'rmsprop']).default('sgd'),
    /** Loss: integer labels are one-hot encoded for the categorical losses. */
    loss: z.enum(['categoricalCrossentropy', 'sparseCategoricalCrossentropy', 'meanSquaredError', 'binaryCrossentropy']).default('categoricalCrossentropy'),
    /** The local-store field holding each example's features (an array of numbers). */
    features: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).default('features'),
    /** The local-store field holding each example's label (a number). */
    label: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).default('label'),
    /**
     * How many rounds in a row may abort (too few clients, ...) before the job fails. An
     * aborted round changes nothing; the next one starts from the same model. Default 3.
     */
    maxAbortedRounds: z.number().int().min(0).max(100).default(3),
  })
  .strict();

/**
 * The validation gate: how much test accuracy a new global model may lose before it is held
 * back (by the coordinator, on its validation set) or makes a client enter audit mode (on the
 * client's own held-out examples).
 */
export const ValidationSchema = z
  .object({
    /** Largest accepted drop in accuracy from one model version to the next, 0..1. Default 0.05. */
    gate: z.number().min(0).max(1).default(0.05),
    /** The coordinator's validation set this job is checked on (a name it was started with). */
    dataset: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).optional(),
    /** Fraction of a client's local examples it holds out to check each new model, 0..0.5. Default 0.1. */
    localFraction: z.number().min(0).max(0.5).default(0.1),
  })
  .strict();

export const JobManifestSchema = z
  .object({
    /** Manifest format version. */
    version: z.literal(1),
    /** The job's id: 1..64 characters of [A-Za-z0-9._-]; rounds are named (job id, index). */
    jobId: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/),
    /**
     * The manifest's version within its job (1, 2, …): a publisher re-issues a job with a higher
     * revision, and a client never accepts a lower revision of a job than one it has seen.
     */
    revision: z.number().int().min(1).max(2 ** 31).default(1),
    /** How many rounds the job runs. Default 1. */
    rounds: z.number().int().min(1).max(10_000).default(1),
    /** The secure-aggregation parameters of every round. */
    round: RoundParamsSchema,
    deadlines: DeadlinesSchema.default({ advertiseMs: 60_000, shareMs: 30_000, maskedMs: 600_000, consistencyMs: 30_000, unmaskMs: 30_000 }),
    /**
     * A training job names its model and local training; each round's masked vector is then a
     * client's weighted model update (new − global weights, times its example count) and the
     * coordinator applies the weighted mean after each round (FedAvg). Without them a job
     * aggregates whatever vectors its clients supply.
     */
    model: ModelSpecSchema.optional(),
    training: TrainingSchema.optional(),
    /** The validation gate of a training job. */
    validation: ValidationSchema.optional(),
    /**
     * Distributed differential privacy inside the secure sum (shared/protocol/dp-manifest.ts,
     * docs/differential-privacy.md). Only for a training job: each client clips, rotates, rounds
     * and noises its unweighted update; the released sum carries the calibrated noise.
     */
    dp: DpSpecSchema.optional(),
    /** When the manifest was issued and when it stops being valid (ISO 8601). */
    issuedAt: z.iso.datetime(),
    expiresAt: z.iso.datetime(),
  })
  .strict();

export type JobManifestInput = z.input<typeof JobManifestSchema>;
export interface JobManifest extends Omit<z.output<typeof JobManifestSchema>, 'round'> {
  round: RoundParams;
}
/** A tfjs layers model spec (what the built-in trainer, the demo and tfjs export use). */
export type ModelSpec = z.output<typeof TfjsModelSpecSchema>;
export type SafetensorsModelSpec = z.output<typeof SafetensorsModelSpecSchema>;
/** Any model a manifest may declare. */
export type AnyModelSpec = z.output<typeof ModelSpecSchema>;
export type TrainingSpec = z.output<typeof TrainingSchema>;
/** A manifest of a training job (model and training present). */
export type TrainingManifest = JobManifest & { model: AnyModelSpec; training: TrainingSpec };
/** True when the manifest's model is in tfjs format (the built-in trainer can train it). */
export const isTfjsModel = (m: AnyModelSpec): m is ModelSpec => m.format === 'tfjs-layers';
export const isTrainingManifest = (m: JobManifest): m is TrainingManifest => m.model !== undefined && m.training !== undefined;

/**
 * Parses manifest bytes (UTF-8 JSON): shape, ranges, parameter relations, and the validity
 * window. Returns the manifest and its SHA-256 (the hash that binds a round's session id).
 */
export function parseManifest(bytes: Uint8Array, now = new Date()): { manifest: JobManifest; hash: Uint8Array } {
  // Strict: a key twice in one object is refused, so no two readers see different manifests.
  const json = parseStrictJson(Buffer.from(bytes).toString('utf8'), 'manifest');
  const r = JobManifestSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new AegisError(ErrorCode.InvalidArgument, `manifest: ${issue?.path.join('.') || '(root)'} ${issue?.message ?? 'invalid'}`);
  }
  const m = r.data;
  const round = validateRoundParams(m.round);
  const issued = Date.parse(m.issuedAt);
  const expires = Date.parse(m.expiresAt);
  if (expires <= issued) throw new AegisError(ErrorCode.InvalidArgument, 'manifest: expiresAt must be after issuedAt');
  if ((m.model === undefined) !== (m.training === undefined)) {
    throw new AegisError(ErrorCode.InvalidArgument, 'manifest: a training job needs both model and training');
  }
  if (m.model?.format === 'safetensors') checkTensors(m.model.tensors, round.dim);
  if (m.dp) {
    if (m.model === undefined) throw new AegisError(ErrorCode.InvalidArgument, 'manifest: dp needs a training job (model and training)');
    checkDpSpec(m.dp, { rounds: m.rounds, dim: round.dim, cohort: round.cohort, threshold: round.threshold, ...(round.groupSize !== undefined ? { groupSize: round.groupSize } : {}) });
  }
  if (now.getTime() >= expires) throw new AegisError(ErrorCode.Expired, `manifest expired at ${m.expiresAt}`);
  return { manifest: { ...m, round }, hash: sha256(bytes) };
}

/** A safetensors model's tensors: unique names, and element counts that sum to `round.dim`. */
function checkTensors(tensors: readonly { name: string; shape: number[] }[], dim: number): void {
  const names = new Set<string>();
  let total = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw new AegisError(ErrorCode.InvalidArgument, `manifest: model.tensors names '${t.name}' twice`);
    names.add(t.name);
    total += t.shape.reduce((a, d) => a * d, 1);
  }
  if (total !== dim) {
    throw new AegisError(ErrorCode.InvalidArgument, `manifest: model.tensors hold ${total} values in all, but round.dim is ${dim}; they must be equal (the flat weight vector is the tensors concatenated)`);
  }
}
