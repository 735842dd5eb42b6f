/**
 * The trainer process protocol, version 1 (docs/trainer-protocol.md): how Aegis hands one fit
 * or one evaluate to an external process (PyTorch, NumPy, JAX, …) and what it takes back.
 *
 * One process per call. Aegis writes the global weights as safetensors into a fresh 0700
 * directory, sends one JSON header line and then one JSON line per example on the process's
 * stdin, closes stdin, and reads exactly one JSON reply line on its stdout. A fit writes the
 * trained weights (not a delta) to the header's `output` path.
 *
 * The schemas here are the contract; the document's JSON schemas are written from them.
 */
import { z } from 'zod';
import { AegisError, ErrorCode } from '../errors.js';
import type { TensorSpec as SafetensorsSpec } from '../model/safetensors.js';

/** The protocol version every header and reply carries as `aegis_trainer`. */
export const TRAINER_PROTOCOL_VERSION = 1;

/**
 * A tensor the manifest declares (`model.tensors`): its name as the safetensors file names
 * it, its shape, and its dtype (F32 only). The flat weight vector is the declared tensors'
 * values concatenated in declared order, row-major.
 */
export const TensorSpecSchema = z
  .object({
    /** 1..128 characters of [A-Za-z0-9_.:/-] (PyTorch state-dict names like `fc1.weight` fit). */
    name: z.string().regex(/^[A-Za-z0-9_.:/-]{1,128}$/),
    /** Dimensions, outermost first; [] is a scalar. At most 8 dimensions, each 0..2^31. */
    shape: z.array(z.number().int().min(0).max(2 ** 31)).max(8),
    /** The element type in the files Aegis writes. Only F32. */
    dtype: z.literal('F32').default('F32'),
  })
  .strict();
export type TensorSpec = SafetensorsSpec;

/** A number the JSON reply may carry: finite. */
const finite = z.number().refine(Number.isFinite, 'must be a finite number');

/**
 * What the trainer learns about the round: the job, the round and model version, the
 * manifest's training hyperparameters (epochs, batchSize, learningRate, optimizer, loss, …),
 * which store fields the records come from, and the declared tensors.
 */
export const TrainerContextSchema = z
  .object({
    job: z.string(),
    /** The round index (0-based, as the protocol counts; people read round + 1). */
    round: z.number().int().min(0),
    /** The global model version the weights are (0: the manifest's initial weights). */
    model_version: z.number().int().min(0),
    /** The manifest's `training` section as it is (hyperparameters the trainer may honour). */
    training: z.record(z.string(), z.union([z.number(), z.string(), z.boolean()])),
    /** The store fields each record's `x` came from (today one field holding an array). */
    features: z.array(z.string()),
    /** The store field each record's `y` came from. */
    label: z.string(),
    /** The tensors the weights file holds and the fit's output must hold, in order. */
    tensors: z.array(TensorSpecSchema),
  })
  .strict();
export type TrainerContext = z.infer<typeof TrainerContextSchema>;

/** Stdin line 1. `output` is present for a fit only. */
export const TrainerHeaderSchema = z
  .object({
    aegis_trainer: z.literal(TRAINER_PROTOCOL_VERSION),
    kind: z.enum(['fit', 'evaluate']),
    /** Absolute path of `global.safetensors`, the global model. */
    weights: z.string(),
    /** Absolute path where a fit writes the trained weights (`update.safetensors`). */
    output: z.string().optional(),
    context: TrainerContextSchema,
  })
  .strict();
export type TrainerHeader = z.infer<typeof TrainerHeaderSchema>;

/** Stdin lines 2..: one example each. */
export const TrainerRecordSchema = z.object({ x: z.array(finite), y: finite }).strict();
export type TrainerRecord = z.infer<typeof TrainerRecordSchema>;

/** Metrics a reply carries: names of 1..64 characters to finite numbers, at most 64 of them. */
const Metrics = z
  .record(z.string().min(1).max(64), finite)
  .refine((m) => Object.keys(m).length <= 64, 'at most 64 metrics')
  .default({});

/** A fit's stdout reply: how many examples it trained on, and its metrics. */
export const FitReplySchema = z
  .object({
    aegis_trainer: z.literal(TRAINER_PROTOCOL_VERSION),
    num_examples: z.number().int().min(1),
    metrics: Metrics,
  })
  .strict();
export type FitReply = z.infer<typeof FitReplySchema>;

/** An evaluate's stdout reply: examples evaluated on, the mean loss, and metrics including `accuracy` in 0..1. */
export const EvaluateReplySchema = z
  .object({
    aegis_trainer: z.literal(TRAINER_PROTOCOL_VERSION),
    num_examples: z.number().int().min(0),
    loss: finite,
    metrics: z.object({ accuracy: z.number().min(0).max(1) }).catchall(finite),
  })
  .strict();
export type EvaluateReply = z.infer<typeof EvaluateReplySchema>;

/**
 * How a trainer call failed:
 * - `unavailable`: the command could not be started (not found, not executable);
 * - `timeout`: it ran past its time and was killed;
 * - `crashed`: it was killed by a signal it did not get from Aegis;
 * - `exit-code`: it exited with a non-zero status;
 * - `protocol`: its stdout was not exactly one valid reply line (or too much of it);
 * - `tensor`: its output weights do not match the declared tensors (`tensor` names which).
 */
export type TrainerErrorKind = 'unavailable' | 'timeout' | 'crashed' | 'exit-code' | 'protocol' | 'tensor';

/**
 * A failed trainer call. An `AegisError` with code `trainer-unavailable` (kind `unavailable`)
 * or `trainer-failed` (every other kind), so a client declines the round with that reason.
 * `stderrTail` is the redacted end of the trainer's stderr (shared/trainer/redact.ts); the
 * message never carries stderr, a record or a weight.
 */
export class TrainerError extends AegisError {
  readonly kind: TrainerErrorKind;
  readonly tensor: string | undefined;
  readonly stderrTail: string;
  constructor(kind: TrainerErrorKind, message: string, opts: { tensor?: string; stderrTail?: string } = {}) {
    super(kind === 'unavailable' ? ErrorCode.TrainerUnavailable : ErrorCode.TrainerFailed, message);
    this.kind = kind;
    this.tensor = opts.tensor;
    this.stderrTail = opts.stderrTail ?? '';
  }
}

export const isTrainerError = (err: unknown): err is TrainerError => err instanceof TrainerError;
