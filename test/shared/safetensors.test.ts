import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, test } from '@jest/globals';
import { decodeSafetensors, encodeSafetensors, flatToTensors, maxFileBytes, SafetensorsError, tensorsToFlat, type TensorSpec } from '../../shared/model/safetensors.js';

const SPECS: TensorSpec[] = [
  { name: 'fc.weight', shape: [3, 2], dtype: 'F32' },
  { name: 'fc.bias', shape: [3], dtype: 'F32' },
];
const FLAT = Float32Array.from([0.5, -1, 2.25, 3, -0.125, 7, 1e-3, -2, 65504]);
const EXAMPLES = resolve('examples');

/** A file with a hand-written header and data (to build every malformed case). */
function raw(header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Buffer {
  const head = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const out = Buffer.alloc(8 + head.length + data.length);
  out.writeBigUInt64LE(headerLength ?? BigInt(head.length), 0);
  head.copy(out, 8);
  Buffer.from(data).copy(out, 8 + head.length);
  return out;
}
const f32 = (...v: number[]): Uint8Array => new Uint8Array(Float32Array.from(v).buffer);

/** The refusal of decoding then checking `bytes` against SPECS. */
function refusal(bytes: Uint8Array): SafetensorsError {
  try {
    tensorsToFlat(decodeSafetensors(bytes, { maxBytes: maxFileBytes(SPECS) }), SPECS);
  } catch (err) {
    if (err instanceof SafetensorsError) return err;
    throw err;
  }
  throw new Error('accepted');
}

describe('safetensors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-st-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('a flat vector cut into the declared tensors, written and read back, is the same vector', () => {
    const bytes = encodeSafetensors(flatToTensors(FLAT, SPECS), { format: 'pt' });
    expect(Number(bytes.readBigUInt64LE(0)) % 8).toBe(0); // the header is padded: the data is aligned
    const map = decodeSafetensors(bytes);
    expect([...map.keys()]).toEqual(['fc.weight', 'fc.bias']);
    expect(map.get('fc.weight')!.shape).toEqual([3, 2]);
    expect(Array.from(tensorsToFlat(map, SPECS))).toEqual(Array.from(FLAT));
  });

  test('the declared order makes the flat vector, whatever the order in the file', () => {
    const tensors = flatToTensors(FLAT, SPECS).reverse();
    expect(Array.from(tensorsToFlat(decodeSafetensors(encodeSafetensors(tensors)), SPECS))).toEqual(Array.from(FLAT));
  });

  test('F16 and F64 tensors are read as float32', () => {
    const half = new Uint8Array(Uint16Array.from([0x3c00, 0xc000, 0x3555, 0x0001, 0x7bff, 0x0000]).buffer); // 1, -2, ~0.333, 2^-24, 65504, 0
    const dbl = new Uint8Array(Float64Array.from([0.1, -3, 1e30]).buffer);
    const bytes = raw({ 'fc.weight': { dtype: 'F16', shape: [3, 2], data_offsets: [0, 12] }, 'fc.bias': { dtype: 'F64', shape: [3], data_offsets: [12, 36] } }, Buffer.concat([half, dbl]));
    const flat = tensorsToFlat(decodeSafetensors(bytes), SPECS);
    expect(Array.from(flat.subarray(0, 6))).toEqual([1, -2, Math.fround(0.333251953125), Math.fround(2 ** -24), 65504, 0]);
    expect(Array.from(flat.subarray(6))).toEqual([Math.fround(0.1), -3, Math.fround(1e30)]);
  });

  describe('a malformed or unexpected file is refused, naming the tensor', () => {
    const good = (name = 'fc.weight', extra: Record<string, unknown> = {}) => ({ [name]: { dtype: 'F32', shape: [3, 2], data_offsets: [0, 24] }, 'fc.bias': { dtype: 'F32', shape: [3], data_offsets: [24, 36] }, ...extra });
    const data = f32(1, 2, 3, 4, 5, 6, 7, 8, 9);

    test.each([
      ['a missing tensor', raw({ 'fc.weight': { dtype: 'F32', shape: [3, 2], data_offsets: [0, 24] } }, f32(1, 2, 3, 4, 5, 6)), 'fc.bias', /missing/],
      ['an extra tensor', raw({ ...good(), extra: { dtype: 'F32', shape: [1], data_offsets: [36, 40] } }, Buffer.concat([data, f32(0)])), 'extra', /not declared/],
      ['a mis-shaped tensor', raw({ 'fc.weight': { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] }, 'fc.bias': { dtype: 'F32', shape: [3], data_offsets: [24, 36] } }, data), 'fc.weight', /shape \[2, 3\].*declares \[3, 2\]/],
      ['a wrong dtype', raw({ 'fc.weight': { dtype: 'I32', shape: [3, 2], data_offsets: [0, 24] }, 'fc.bias': { dtype: 'F32', shape: [3], data_offsets: [24, 36] } }, data), 'fc.weight', /dtype/],
      ['a NaN', raw(good(), f32(1, 2, 3, 4, 5, 6, 7, Number.NaN, 9)), 'fc.bias', /non-finite/],
      ['an infinity', raw(good(), f32(1, 2, Infinity, 4, 5, 6, 7, 8, 9)), 'fc.weight', /non-finite/],
      ['offsets that do not match the shape', raw({ 'fc.weight': { dtype: 'F32', shape: [3, 2], data_offsets: [0, 20] }, 'fc.bias': { dtype: 'F32', shape: [3], data_offsets: [20, 36] } }, data), 'fc.weight', /needs 24 bytes/],
      ['overlapping tensors', raw({ 'fc.weight': { dtype: 'F32', shape: [3, 2], data_offsets: [0, 24] }, 'fc.bias': { dtype: 'F32', shape: [3], data_offsets: [12, 24] } }, f32(1, 2, 3, 4, 5, 6)), 'fc.bias', /overlaps/],
      ['a gap between tensors', raw({ 'fc.weight': { dtype: 'F32', shape: [3, 2], data_offsets: [0, 24] }, 'fc.bias': { dtype: 'F32', shape: [3], data_offsets: [28, 40] } }, Buffer.concat([data, f32(0)])), 'fc.bias', /gap/],
      ['offsets past the data', raw(good(), f32(1, 2, 3, 4, 5, 6, 7, 8)), 'fc.bias', /outside/],
      ['a negative shape', raw({ 'fc.weight': { dtype: 'F32', shape: [-3, 2], data_offsets: [0, 24] } }, data), 'fc.weight', /shape/],
      ['an unknown field', raw({ ...good('fc.weight'), 'fc.bias': { dtype: 'F32', shape: [3], data_offsets: [24, 36], extra: 1 } }, data), 'fc.bias', /unknown field/],
    ])('%s', (_what, bytes, tensor, message) => {
      const err = refusal(bytes);
      expect(err.tensor).toBe(tensor);
      expect(err.message).toContain(`'${tensor}'`);
      expect(err.message).toMatch(message);
    });

    test.each([
      ['a file shorter than the length prefix', Buffer.alloc(5), /too short/],
      ['a header length past the file', raw(good(), data, 1_000_000n), /out of bounds/],
      ['a header length past the cap', raw(good(), data, 2n ** 40n), /out of bounds/],
      ['a header that is not JSON', raw('{"fc.weight": ', data), /not valid UTF-8 JSON/],
      ['a header that is a JSON array', raw('[1, 2, 3]   ', data), /not a JSON object/],
      ['bytes after the last tensor', raw(good(), Buffer.concat([data, f32(1)])), /after the last tensor/],
      ['a file larger than the declared tensors can need', Buffer.concat([raw(good(), data), Buffer.alloc(maxFileBytes(SPECS))]), /more than/],
    ])('%s', (_what, bytes, message) => {
      expect(refusal(bytes).message).toMatch(message);
    });

    test('a refusal never shows a value', () => {
      const err = refusal(raw(good(), f32(1, 2, 3, 4, 5, 6, 7, 8, Number.NaN)));
      expect(err.message).not.toMatch(/\b[1-9]\b/);
    });
  });

  test('Python interop: aegis_trainer.py reads what Aegis writes, and Aegis reads what it writes', () => {
    const ours = join(dir, 'ours.safetensors');
    const theirs = join(dir, 'theirs.safetensors');
    writeFileSync(ours, encodeSafetensors(flatToTensors(FLAT, SPECS)));
    // Python reads ours, doubles every value, writes them back with its own writer, with and without NumPy.
    for (const numpy of [true, false]) {
      const script = [
        'import sys, json',
        `sys.path.insert(0, ${JSON.stringify(EXAMPLES)})`,
        'import aegis_trainer as t',
        ...(numpy ? [] : ['t.np = None']),
        `w = t.load_safetensors(${JSON.stringify(ours)})`,
        'out = {}',
        'for k, v in w.items():',
        '    out[k] = v * 2 if t.np is not None else t.Tensor(v.shape, [x * 2 for x in v.data])',
        `t.save_safetensors(${JSON.stringify(theirs)}, out)`,
        'print(json.dumps({k: list(v.shape) for k, v in w.items()}))',
      ].join('\n');
      const shapes = JSON.parse(execFileSync('/usr/bin/python3', ['-c', script], { encoding: 'utf8' })) as Record<string, number[]>;
      expect(shapes).toEqual({ 'fc.weight': [3, 2], 'fc.bias': [3] });
      const back = tensorsToFlat(decodeSafetensors(readFileSync(theirs)), SPECS);
      expect(Array.from(back)).toEqual(Array.from(FLAT, (v) => Math.fround(v * 2)));
    }
  });
});
