/**
 * The validation gate, the client's check against a poisoned server: each new global model of a
 * job is measured on the client's local validation holdout, and one that loses more accuracy
 * than the manifest's gate puts the client in audit mode before it trains on the model.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { AuditBook } from '../audit/audit.js';
import type { TrainingRound } from './training-round.js';

/**
 * How much an accuracy measured on `n` examples can move by chance: two standard errors at
 * the worst case p = 1/2. A drop counts against the gate only beyond it, so a small holdout does
 * not put an honest client in audit mode.
 */
export const samplingNoise = (n: number): number => (n > 0 ? 2 * Math.sqrt(0.25 / n) : 1);

/** The accuracy of a training round's global model on the local holdout (undefined: none). */
export type LocalValidation = (round: TrainingRound) => Promise<{ accuracy: number; examples: number } | undefined>;

/** The latest model version of a job this client checked, and its local validation accuracy. */
export interface ValidatedModel {
  version: number;
  accuracy: number;
}

/**
 * Measures the round's global model when the manifest has a gate: one that loses more local
 * validation accuracy than the gate (beyond sampling noise), compared with the last version
 * this client checked, puts the client in audit mode (`validation-drop`); it then does not
 * train on the model unless the operator approved this job and hash (without an audit book:
 * `approval-required`). `validated` (per job id) is updated with the measurement.
 */
export async function checkValidationGate(
  r: TrainingRound,
  manifestSha256: string,
  opts: { validate?: LocalValidation; validated: Map<string, ValidatedModel>; audit?: Pick<AuditBook, 'enter' | 'admit'> },
): Promise<void> {
  const gate = r.manifest.validation?.gate;
  if (!opts.validate || gate === undefined) return;
  const measured = await opts.validate(r);
  if (measured === undefined) return;
  const { accuracy } = measured;
  const prev = opts.validated.get(r.manifest.jobId);
  if (prev && prev.version < r.modelVersion && prev.accuracy - accuracy > gate + samplingNoise(measured.examples)) {
    const detail = `model version ${r.modelVersion} of job ${r.manifest.jobId} lost ${((prev.accuracy - accuracy) * 100).toFixed(1)} points of local validation accuracy (gate ${(gate * 100).toFixed(1)})`;
    await opts.audit?.enter('validation-drop', detail);
    // In audit mode now: this job, too, runs only with the operator's approval.
    if (opts.audit) await opts.audit.admit(r.manifest.jobId, manifestSha256);
    else throw new AegisError(ErrorCode.ApprovalRequired, detail);
  }
  if (!prev || prev.version <= r.modelVersion) opts.validated.set(r.manifest.jobId, { version: r.modelVersion, accuracy });
}
