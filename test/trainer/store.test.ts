import { describe, expect, test } from '@jest/globals';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryDataStore, readJsonlRecords } from '../../client/store/memory.js';
import type { DataRecord } from '../../client/store/types.js';
import { messageOf } from './fixtures.js';
import { codeOfAsync } from '../support/codes.js';

const fields = { features: 'x', label: 'y' };

describe('the in-memory data store', () => {
  test('packs the records that have both fields, row-major', async () => {
    const store = new MemoryDataStore([{ x: [1, 2], y: 0 }, { note: 'no fields' }, { x: new Float64Array([3, 4]), y: 1 }, { x: [5, 6] }, { y: 2 }]);
    expect(await store.count()).toBe(5);
    const ex = await store.trainingExamples(fields);
    expect(ex.count).toBe(2);
    expect(ex.featureDim).toBe(2);
    expect(Array.from(ex.features)).toEqual([1, 2, 3, 4]);
    expect(Array.from(ex.labels)).toEqual([0, 1]);
  });

  test('no matching records: zero examples', async () => {
    const ex = await new MemoryDataStore([{ a: 1 }]).trainingExamples(fields);
    expect(ex).toEqual({ features: new Float32Array(0), featureDim: 0, labels: new Float32Array(0), count: 0 });
  });

  test.each<[string, DataRecord[], RegExp]>([
    ['a wrong feature length', [{ x: [123.456, 2], y: 0 }, { x: [987.654], y: 1 }], /record 1: field 'x' has 1 values, earlier records have 2/],
    ['a NaN feature', [{ x: [123.456, Number.NaN], y: 0 }], /record 0: field 'x' value 1 is not a finite number/],
    ['a feature beyond float32', [{ x: [123.456, 1e39], y: 0 }], /record 0: field 'x' value 1 is not a finite number/],
    ['a string feature value', [{ x: ['secret-42'] as unknown as number[], y: 0 }], /record 0: field 'x' value 0 is not a finite number/],
    ['features that are not an array', [{ x: 'secret-42', y: 0 }], /record 0: field 'x' is not an array of numbers/],
    ['empty features', [{ x: [], y: 0 }], /record 0: field 'x' is empty/],
    ['an infinite label', [{ x: [123.456], y: Number.POSITIVE_INFINITY }], /record 0: field 'y' is not a finite number/],
    ['a string label', [{ x: [1] , y: 2 }, { x: [123.456], y: 'secret-42' }], /record 1: field 'y' is not a finite number/],
  ])('%s is invalid-argument naming the field and record, never a value', async (_name, records, message) => {
    const p = (): Promise<unknown> => new MemoryDataStore(records).trainingExamples(fields);
    expect(await codeOfAsync(p())).toBe('invalid-argument');
    const msg = await messageOf(p());
    expect(msg).toMatch(message);
    for (const secret of ['123', '987', 'secret', 'NaN', 'Infinity', '1e+39']) expect(msg).not.toContain(secret);
  });
});

describe('JSON Lines records', () => {
  test('one object per line, blank lines and CRLF fine; a bad line is named, not quoted', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'aegis-jsonl-'));
    try {
      const good = join(dir, 'good.jsonl');
      await writeFile(good, '{"x":[1,2],"y":0}\r\n\n   \n{"x":[3,4],"y":1,"id":"a"}\n');
      const records = await readJsonlRecords(good);
      expect(records).toEqual([{ x: [1, 2], y: 0 }, { x: [3, 4], y: 1, id: 'a' }]);
      expect((await new MemoryDataStore(records).trainingExamples(fields)).count).toBe(2);

      for (const [content, line] of [
        ['{"x":[1],"y":0}\n\n{"x": secret-777\n', 3],
        ['[1,2,3]\n', 1],
        ['{"x":[1],"y":0}\n"secret-777"\n', 2],
        ['null\n', 1],
      ] as const) {
        const bad = join(dir, 'bad.jsonl');
        await writeFile(bad, content);
        expect(await codeOfAsync(readJsonlRecords(bad))).toBe('invalid-argument');
        const msg = await messageOf(readJsonlRecords(bad));
        expect(msg).toBe(`${bad} line ${line}: not a JSON object`);
      }
      expect(await codeOfAsync(readJsonlRecords(join(dir, 'missing.jsonl')))).toBe('not-found');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
