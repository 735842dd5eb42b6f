/**
 * safetensors (https://github.com/huggingface/safetensors, format version as of 0.4): the
 * weights file an external trainer reads and writes (docs/trainer-protocol.md).
 *
 * Layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON — one entry per tensor,
 * `{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}`, plus an optional
 * `"__metadata__"` object of string values — then the data buffer. Offsets are relative to the
 * buffer's start; the tensors' byte ranges tile the buffer exactly (contiguous, no gap, no
 * overlap), as the reference implementation requires.
 *
 * Aegis writes F32 only. It reads F32, and also F16 and F64 (converted to float32: PyTorch
 * users often save half or double tensors); every other dtype is refused. The reader is strict
 * on purpose — the file comes from a process Aegis does not control — and every refusal is a
 * `SafetensorsError` naming the tensor it concerns (never a value).
 */

import { endianness } from 'node:os';

/** One tensor as Aegis holds it: float32 values, row-major. */
export interface Tensor {
  dtype: 'F32';
  shape: number[];
  data: Float32Array;
}

/** A tensor to write, with its name. */
export interface NamedTensor extends Tensor {
  name: string;
}

/** A tensor the manifest declares: its name, its shape and its dtype (F32 only). */
export interface TensorSpec {
  name: string;
  shape: number[];
  dtype: 'F32';
}

/** A malformed or unexpected safetensors file; `tensor` names the tensor concerned, if one is. */
export class SafetensorsError extends Error {
  readonly tensor: string | undefined;
  constructor(message: string, tensor?: string) {
    super(message);
    this.name = 'SafetensorsError';
    this.tensor = tensor;
  }
}

/** Largest header accepted (the reference implementation's limit is 100 MB; a header of many tensors fits in far less). */
export const MAX_HEADER_BYTES = 1024 * 1024;
/** Largest tensor name accepted. */
const MAX_NAME_LENGTH = 256;
/** Largest rank accepted. */
const MAX_RANK = 8;

/** Float32Array views can copy file bytes as they are on a little-endian host (all Node targets in practice). */
const LITTLE_ENDIAN = endianness() === 'LE';

const BYTES_PER: Readonly<Record<string, number>> = { F16: 2, F32: 4, F64: 8 };

/** Elements of a shape (1 for a scalar, shape []). */
export const elementCount = (shape: readonly number[]): number => shape.reduce((a, d) => a * d, 1);

/** The file size `specs` need: 8 + header + data, with the header at most `MAX_HEADER_BYTES`. */
export function maxFileBytes(specs: readonly TensorSpec[], headerCap = MAX_HEADER_BYTES): number {
  return 8 + headerCap + specs.reduce((a, s) => a + elementCount(s.shape) * 8, 0);
}

/**
 * The bytes of a safetensors file holding `tensors` in the given order (F32, little-endian), and
 * `metadata` as `__metadata__`. The header is padded with spaces to a multiple of 8 bytes, as
 * the reference writer does, so the data buffer is aligned.
 */
export function encodeSafetensors(tensors: readonly NamedTensor[], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  const seen = new Set<string>();
  for (const t of tensors) {
    if (t.dtype !== 'F32') throw new SafetensorsError(`tensor '${t.name}': only F32 is written`, t.name);
    if (seen.has(t.name) || t.name === '__metadata__') throw new SafetensorsError(`tensor '${t.name}' appears twice`, t.name);
    seen.add(t.name);
    checkShape(t.shape, t.name);
    if (elementCount(t.shape) !== t.data.length) throw new SafetensorsError(`tensor '${t.name}': shape [${t.shape.join(', ')}] needs ${elementCount(t.shape)} values, got ${t.data.length}`, t.name);
    const bytes = t.data.length * 4;
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const head = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + head.length + offset);
  out.writeBigUInt64LE(BigInt(head.length), 0);
  head.copy(out, 8);
  let at = 8 + head.length;
  for (const t of tensors) {
    if (LITTLE_ENDIAN) Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, at);
    else for (let i = 0; i < t.data.length; i++) out.writeFloatLE(t.data[i]!, at + i * 4);
    at += t.data.length * 4;
  }
  return out;
}

function checkShape(shape: unknown, name: string): asserts shape is number[] {
  if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw new SafetensorsError(`tensor '${name}': shape must be a list of at most ${MAX_RANK} non-negative integers`, name);
  }
}

/**
 * Reads a safetensors file, refusing anything malformed: a header length out of bounds
 * (past `opts.maxBytes`, `MAX_HEADER_BYTES` or the file), a header that is not a JSON object,
 * an entry that is not {dtype, shape, data_offsets}, an unsupported dtype, offsets that do not
 * match the shape or do not tile the data buffer exactly, a file larger than `opts.maxBytes`.
 * F16 and F64 values are converted to float32 (an F64 beyond float32's range becomes ±Infinity,
 * which a finite check then refuses).
 */
export function decodeSafetensors(bytes: Uint8Array, opts: { maxBytes?: number } = {}): Map<string, Tensor> {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (opts.maxBytes !== undefined && buf.length > opts.maxBytes) throw new SafetensorsError(`the file has ${buf.length} bytes, more than the ${opts.maxBytes} the declared tensors can need`);
  if (buf.length < 8) throw new SafetensorsError(`the file has ${buf.length} bytes, too short for a safetensors header`);
  const n = buf.readBigUInt64LE(0);
  if (n < 2n || n > BigInt(MAX_HEADER_BYTES) || n > BigInt(buf.length - 8)) {
    throw new SafetensorsError(`header length ${n} is out of bounds (2..${Math.min(MAX_HEADER_BYTES, buf.length - 8)})`);
  }
  const headLen = Number(n);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + headLen)));
  } catch {
    throw new SafetensorsError('the header is not valid UTF-8 JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new SafetensorsError('the header is not a JSON object');
  const data = buf.subarray(8 + headLen);
  const entries: { name: string; dtype: string; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
        throw new SafetensorsError('__metadata__ must be an object of strings');
      }
      continue;
    }
    const shown = name.length > MAX_NAME_LENGTH ? `${name.slice(0, 40)}…` : name;
    if (name.length === 0 || name.length > MAX_NAME_LENGTH) throw new SafetensorsError(`a tensor name must have 1..${MAX_NAME_LENGTH} characters`, shown);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new SafetensorsError(`tensor '${name}': its entry is not an object`, name);
    const e = raw as Record<string, unknown>;
    const extra = Object.keys(e).filter((k) => k !== 'dtype' && k !== 'shape' && k !== 'data_offsets');
    if (extra.length > 0) throw new SafetensorsError(`tensor '${name}': unknown field '${extra[0]!.slice(0, 40)}'`, name);
    if (typeof e.dtype !== 'string' || !(e.dtype in BYTES_PER)) throw new SafetensorsError(`tensor '${name}': dtype ${JSON.stringify(e.dtype)?.slice(0, 20)} is not supported (F32, F16 or F64)`, name);
    checkShape(e.shape, name);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
      throw new SafetensorsError(`tensor '${name}': data_offsets must be two non-negative integers`, name);
    }
    const [begin, end] = off as [number, number];
    if (end < begin || end > data.length) throw new SafetensorsError(`tensor '${name}': data_offsets [${begin}, ${end}] are outside the ${data.length}-byte data buffer`, name);
    const need = elementCount(e.shape) * BYTES_PER[e.dtype]!;
    if (end - begin !== need) throw new SafetensorsError(`tensor '${name}': shape [${e.shape.join(', ')}] as ${e.dtype} needs ${need} bytes, data_offsets span ${end - begin}`, name);
    entries.push({ name, dtype: e.dtype, shape: e.shape, begin, end });
  }
  // The ranges must tile the buffer: sorted by offset, each starts where the previous ended.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const e of sorted) {
    if (e.begin < at) throw new SafetensorsError(`tensor '${e.name}' overlaps another tensor's data`, e.name);
    if (e.begin > at) throw new SafetensorsError(`tensor '${e.name}': a gap of ${e.begin - at} bytes before its data`, e.name);
    at = e.end;
  }
  if (at !== data.length) throw new SafetensorsError(`${data.length - at} bytes after the last tensor's data`);

  const out = new Map<string, Tensor>();
  for (const e of entries) {
    const count = elementCount(e.shape);
    const values = new Float32Array(count);
    const base = e.begin;
    if (e.dtype === 'F32' && LITTLE_ENDIAN) new Uint8Array(values.buffer).set(data.subarray(e.begin, e.end));
    else if (e.dtype === 'F32') for (let i = 0; i < count; i++) values[i] = data.readFloatLE(base + i * 4);
    else if (e.dtype === 'F64') for (let i = 0; i < count; i++) values[i] = data.readDoubleLE(base + i * 8);
    else for (let i = 0; i < count; i++) values[i] = halfToFloat(data.readUInt16LE(base + i * 2));
    out.set(e.name, { dtype: 'F32', shape: e.shape, data: values });
  }
  return out;
}

/** IEEE 754 binary16 to a number. */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : Number.NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/**
 * The manifest's flat weight vector (float32, the declared tensors concatenated in declared
 * order) cut into its tensors.
 */
export function flatToTensors(flat: Float32Array, specs: readonly TensorSpec[]): NamedTensor[] {
  const total = specs.reduce((a, s) => a + elementCount(s.shape), 0);
  if (total !== flat.length) throw new SafetensorsError(`the declared tensors hold ${total} values, the weight vector has ${flat.length}`);
  let at = 0;
  return specs.map((s) => {
    const n = elementCount(s.shape);
    const data = flat.slice(at, at + n);
    at += n;
    return { name: s.name, dtype: 'F32', shape: [...s.shape], data };
  });
}

/**
 * The flat weight vector of decoded tensors, checked against the declared ones: every declared
 * tensor present with its exact shape, no other tensor, every value finite. A refusal names
 * the tensor (never a value).
 */
export function tensorsToFlat(map: ReadonlyMap<string, Tensor>, specs: readonly TensorSpec[]): Float32Array {
  const declared = new Set(specs.map((s) => s.name));
  for (const name of map.keys()) if (!declared.has(name)) throw new SafetensorsError(`tensor '${name}' is not declared by the manifest`, name);
  const total = specs.reduce((a, s) => a + elementCount(s.shape), 0);
  const flat = new Float32Array(total);
  let at = 0;
  for (const s of specs) {
    const t = map.get(s.name);
    if (!t) throw new SafetensorsError(`tensor '${s.name}' is missing`, s.name);
    if (t.shape.length !== s.shape.length || t.shape.some((d, i) => d !== s.shape[i])) {
      throw new SafetensorsError(`tensor '${s.name}' has shape [${t.shape.join(', ')}], the manifest declares [${s.shape.join(', ')}]`, s.name);
    }
    for (let i = 0; i < t.data.length; i++) {
      if (!Number.isFinite(t.data[i]!)) throw new SafetensorsError(`tensor '${s.name}' has a non-finite value (NaN or ±Infinity)`, s.name);
    }
    flat.set(t.data, at);
    at += t.data.length;
  }
  return flat;
}
