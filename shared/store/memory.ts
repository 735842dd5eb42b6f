/**
 * An in-memory `LocalDataStore` for the demo, the simulator and tests, and a JSON Lines reader
 * to fill it. Errors name fields, record indexes, line numbers and lengths — never a value from
 * the data, which is exactly what federated learning keeps local.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { AegisError, ErrorCode, fail } from '../errors.js';
import type { DataRecord, ExampleFields, LocalDataStore, TrainingExamples } from './types.js';

export class MemoryDataStore implements LocalDataStore {
  private readonly records: readonly DataRecord[];

  /** Keeps the records by reference (only the array of references is copied). */
  constructor(records: readonly DataRecord[]) {
    this.records = records.slice();
  }

  async count(): Promise<number> {
    return this.records.length;
  }

  /** Packs every record holding both fields; see `LocalDataStore.trainingExamples`. */
  async trainingExamples(fields: ExampleFields): Promise<TrainingExamples> {
    const rows: { index: number; features: ArrayLike<unknown>; label: number }[] = [];
    let featureDim = -1;
    this.records.forEach((r, index) => {
      const f = r[fields.features];
      const l = r[fields.label];
      if (f === undefined || l === undefined) return;
      if (typeof f !== 'object' || f === null || !Number.isInteger(f.length) || f.length < 0) {
        fail(ErrorCode.InvalidArgument, `record ${index}: field '${fields.features}' is not an array of numbers`);
      }
      if (featureDim < 0) {
        if (f.length === 0) fail(ErrorCode.InvalidArgument, `record ${index}: field '${fields.features}' is empty`);
        featureDim = f.length;
      } else if (f.length !== featureDim) {
        fail(ErrorCode.InvalidArgument, `record ${index}: field '${fields.features}' has ${f.length} values, earlier records have ${featureDim}`);
      }
      if (typeof l !== 'number' || !Number.isFinite(l) || !Number.isFinite(Math.fround(l))) {
        fail(ErrorCode.InvalidArgument, `record ${index}: field '${fields.label}' is not a finite number`);
      }
      rows.push({ index, features: f, label: l });
    });
    const count = rows.length;
    const dim = Math.max(featureDim, 0);
    const features = new Float32Array(count * dim);
    const labels = new Float32Array(count);
    rows.forEach((row, i) => {
      const o = i * dim;
      for (let j = 0; j < dim; j++) {
        const v = row.features[j];
        // Math.fround: a finite double beyond the float32 range would become Infinity
        if (typeof v !== 'number' || !Number.isFinite(Math.fround(v))) {
          fail(ErrorCode.InvalidArgument, `record ${row.index}: field '${fields.features}' value ${j} is not a finite number`);
        }
        features[o + j] = v;
      }
      labels[i] = row.label;
    });
    return { features, featureDim: dim, labels, count };
  }
}

/**
 * Reads a JSON Lines file: one JSON object per line, blank lines skipped. Streams, so a large
 * file never sits in memory as one string. A line that is not a JSON object is
 * `invalid-argument` naming the file and the line (1-based), never its content.
 */
export async function readJsonlRecords(path: string): Promise<DataRecord[]> {
  return (await readJsonlLines(path)).records;
}

/**
 * Reads a file of training or validation examples (JSON Lines, `--train-data`,
 * `--validation-data`) and checks every record when the file is given, so that a bad value is
 * reported at start naming the file, the line and the field — not rounds later as a sum that
 * could not be applied. A field must hold a finite number, a string, a boolean, or an array of
 * finite numbers whose length is the same on every line; `null`, NaN and nested objects are
 * refused. Messages never quote a value.
 */
export async function readExampleFile(path: string): Promise<DataRecord[]> {
  const { records, lines } = await readJsonlLines(path);
  const lengths = new Map<string, { length: number; line: number }>();
  records.forEach((record, i) => {
    const at = `${path} line ${lines[i]!}`;
    for (const [field, v] of Object.entries(record as Record<string, unknown>)) {
      if (v === null) fail(ErrorCode.InvalidArgument, `${at}: field '${field}' holds null`, EXAMPLE_HINT);
      if (typeof v === 'number') {
        if (!Number.isFinite(v)) fail(ErrorCode.InvalidArgument, `${at}: field '${field}' is not a finite number`, EXAMPLE_HINT);
      } else if (Array.isArray(v)) {
        v.forEach((x: unknown, j) => {
          if (x === null) fail(ErrorCode.InvalidArgument, `${at}: field '${field}' value ${j} holds null`, EXAMPLE_HINT);
          if (typeof x !== 'number' || !Number.isFinite(Math.fround(x))) fail(ErrorCode.InvalidArgument, `${at}: field '${field}' value ${j} is not a finite number`, EXAMPLE_HINT);
        });
        const seen = lengths.get(field);
        if (seen === undefined) lengths.set(field, { length: v.length, line: lines[i]! });
        else if (seen.length !== v.length) fail(ErrorCode.InvalidArgument, `${at}: field '${field}' has ${v.length} values, line ${seen.line} has ${seen.length}`, EXAMPLE_HINT);
      } else if (typeof v !== 'string' && typeof v !== 'boolean') {
        fail(ErrorCode.InvalidArgument, `${at}: field '${field}' holds an object; fields hold numbers, strings, booleans or arrays of numbers`, EXAMPLE_HINT);
      }
    }
  });
  return records;
}

const EXAMPLE_HINT = 'fix or drop that line: every example holds finite numbers (arrays of one length per field), strings or booleans';

/** The records of a JSON Lines file with the line (1-based) each came from. */
export async function readJsonlLines(path: string): Promise<{ records: DataRecord[]; lines: number[] }> {
  const out: DataRecord[] = [];
  const at: number[] = [];
  const input = createReadStream(path, { encoding: 'utf8' });
  const opened = new Promise<void>((resolve, reject) => {
    input.once('open', () => resolve());
    input.once('error', reject);
  });
  try {
    await opened;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new AegisError(ErrorCode.NotFound, `no such file: ${path}`, 'check the path');
    throw e;
  }
  const lines = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  try {
    for await (const line of lines) {
      n++;
      if (line.trim() === '') continue;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        v = undefined;
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(ErrorCode.InvalidArgument, `${path} line ${n}: not a JSON object`, 'JSON Lines: one JSON object per line');
      out.push(v as DataRecord);
      at.push(n);
    }
  } finally {
    lines.close();
    input.destroy();
  }
  return { records: out, lines: at };
}
