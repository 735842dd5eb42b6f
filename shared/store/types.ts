/**
 * The client's local data store, as the trainer sees it. Training reads its examples only
 * through this interface; the data-at-rest work puts an encrypted SQLite store behind it (the
 * in-memory store here serves the demo, the simulator and tests).
 */

/** One stored record: named fields. Features are arrays of numbers, labels numbers. */
export type DataRecord = Readonly<Record<string, number | string | ArrayLike<number>>>;

/** Which fields training reads (from the job manifest's `training` section). */
export interface ExampleFields {
  /** The field holding each example's features (an array of numbers, same length for all). */
  features: string;
  /** The field holding each example's label (a number). */
  label: string;
}

/** Examples packed for training (defined with the evaluation code both sides share). */
export type { TrainingExamples } from '../model/evaluate.js';
import type { TrainingExamples } from '../model/evaluate.js';

export interface LocalDataStore {
  /** How many records the store holds. */
  count(): Promise<number>;
  /**
   * Every record that has both fields, packed. Throws `invalid-argument` (naming the field,
   * never a value) when a record's features have the wrong length or a value is not finite.
   */
  trainingExamples(fields: ExampleFields): Promise<TrainingExamples>;
}
