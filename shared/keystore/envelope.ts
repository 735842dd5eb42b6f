/**
 * Envelope encryption of sensitive field values (DESIGN.md §5 "Data at rest"): one fresh DEK per
 * value, AES-256-GCM (NIST SP 800-38D) under the DEK, the DEK wrapped by a KEK version that never
 * leaves its provider (passphrase keyfile, OS keyring, PKCS#11 HSM).
 *
 * Sealed value, format versions 1 and 2 (the same layout; all integers big-endian):
 *
 *   offset  size  field
 *   0       4     magic 'AEF1' (0x41 0x45 0x46 0x31)
 *   4       1     format version: 1 (no record version) or 2 (record version in the AAD)
 *   5       2     L_id: KEK id length (1..1024)
 *   7       L_id  KEK id, UTF-8 (e.g. 'passphrase:kek.json')
 *   .       4     KEK version
 *   .       2     L_w: wrapped DEK length (1..65535)
 *   .       L_w   wrapped DEK (opaque to this module: the provider's format)
 *   .       12    GCM nonce (random)
 *   .       32    key commitment = HMAC-SHA256(DEK, 'aegis-dek-commit-v1')
 *   .       n+16  GCM ciphertext of the n-byte plaintext, then the 16-byte tag
 *
 * GCM AAD, format 1 = lengthPrefixed('AEF1', [1], asset_uuid, field_name, decimal(schema_version)),
 *          format 2 = lengthPrefixed('AEF1', [2], asset_uuid, field_name, decimal(schema_version),
 *                                    decimal(record_version)),
 * each item a u32 big-endian length and its UTF-8 bytes, so a value moved to another asset, field or
 * schema version, or read as another format, fails authentication.
 *
 * The record version (format 2): the store counts the writes of a record, and a value sealed for
 * version 3 does not open as version 4 — a stale ciphertext copied back over a newer one fails.
 * The caller's context picks the format, never the stored byte: a context with `recordVersion`
 * opens only format 2, one without only format 1, so a version-2 value cannot be passed off as
 * a version-less one (or the reverse). Format 1 values (sealed before record versions, and the
 * committed test vectors) keep opening with a context that has no record version.
 *
 * Why the KEK id and version are NOT in the GCM AAD: rotation must re-wrap DEKs without touching
 * data (`rewrapField` keeps nonce, commitment and ciphertext byte-identical), and a re-wrap changes
 * the KEK version (and, when migrating providers, the KEK id). They are authenticated another way:
 * a changed id selects another provider (refused, or its KEK fails to unwrap), a changed version
 * unwraps under another KEK version (providers bind the version in their wrap AAD, see
 * kek-passphrase.ts), and a changed wrapped DEK yields no DEK or another DEK, which the key
 * commitment rejects before GCM runs.
 *
 * Why the key commitment: GCM is not key-committing — one ciphertext can be crafted to open under
 * two keys (partitioning-oracle / "invisible salamander" attacks). The commitment pins the one DEK.
 *
 * Every failure to open — wrong context, any flipped, missing or extra byte, wrong KEK, bad
 * commitment, unknown KEK id — is the one AegisError('decryption-failed', 'field could not be
 * decrypted'), so the error says nothing about which check failed.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { concatBytes, ctEqual, lengthPrefixed, utf8 } from '../bytes.js';
import { AEAD_KEY_BYTES, AEAD_NONCE_BYTES, AEAD_TAG_BYTES, gcmDecrypt, gcmEncrypt } from '../crypto/aead.js';
import { AegisError, ErrorCode } from '../errors.js';

/**
 * A key-encryption key that never leaves its provider: callers hand it DEKs to wrap and unwrap.
 * `unwrap` must bind `version` (e.g. in its AAD) so a wrapped DEK cannot be replayed as another
 * version, and must throw for anything it did not wrap.
 */
export interface KekProvider {
  /** Stable identifier written into every sealed value, e.g. 'passphrase:<file>'. */
  readonly id: string;
  readonly kind: 'passphrase' | 'os' | 'pkcs11';
  /** The version new DEKs are wrapped under. */
  primaryVersion(): Promise<number>;
  /** Wraps `dek` under `version` (default: the primary version). */
  wrap(dek: Uint8Array, version?: number): Promise<{ version: number; wrapped: Uint8Array }>;
  unwrap(wrapped: Uint8Array, version: number): Promise<Uint8Array>;
}

/** Where a value lives; bound into the AAD so a ciphertext cannot be moved or re-labelled. */
export interface FieldContext {
  /** Canonical lowercase UUID (8-4-4-4-12 hex), so one asset never has two spellings. */
  assetUuid: string;
  fieldName: string;
  /** Non-negative safe integer, bound as its decimal string. */
  schemaVersion: number;
  /**
   * The write count of the value's record (non-negative safe integer, bound as its decimal
   * string). Present: the value is sealed (and must have been sealed) in format 2; absent: format 1.
   */
  recordVersion?: number;
}

export interface SealedHeader {
  formatVersion: number;
  kekId: string;
  kekVersion: number;
  wrappedDek: Uint8Array;
}

export const FIELD_MAGIC = 'AEF1';
/** The format of values sealed without a record version (and of every value sealed before it existed). */
export const FIELD_FORMAT_VERSION = 1;
/** The format of values sealed with a record version in their AAD. */
export const FIELD_FORMAT_VERSION_RECORD = 2;
export const DEK_BYTES = AEAD_KEY_BYTES;
export const COMMITMENT_BYTES = 32;
const COMMIT_LABEL = 'aegis-dek-commit-v1';
const MAGIC_BYTES = utf8(FIELD_MAGIC);
const MAX_KEK_ID_BYTES = 1024;
const MAX_WRAPPED_BYTES = 0xffff;
const MAX_CONTEXT_BYTES = 1024;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** nonce + commitment + tag: what follows the header even for an empty plaintext. */
const BODY_MIN = AEAD_NONCE_BYTES + COMMITMENT_BYTES + AEAD_TAG_BYTES;

/** The one error for every failure to open a field (or re-wrap it). */
const fieldFailed = (): AegisError => new AegisError(ErrorCode.DecryptionFailed, 'field could not be decrypted');
const malformed = (): AegisError => new AegisError(ErrorCode.Malformed, 'not a sealed field value (AEF1)');
const invalid = (message: string): AegisError => new AegisError(ErrorCode.InvalidArgument, message);

/** A string whose UTF-8 encoding is lossless (no lone surrogates) and bounded: two strings never share an encoding. */
function textBytes(s: unknown, max: number): Uint8Array | undefined {
  if (typeof s !== 'string' || s.length === 0) return undefined;
  const b = utf8(s);
  if (b.length > max || Buffer.from(b).toString('utf8') !== s) return undefined;
  return b;
}

function assertContext(ctx: FieldContext): void {
  if (ctx === null || typeof ctx !== 'object') throw invalid('field context must be { assetUuid, fieldName, schemaVersion }');
  if (typeof ctx.assetUuid !== 'string' || !UUID.test(ctx.assetUuid)) throw invalid('assetUuid must be a lowercase UUID');
  if (textBytes(ctx.fieldName, MAX_CONTEXT_BYTES) === undefined) throw invalid(`fieldName must be 1..${MAX_CONTEXT_BYTES} bytes of well-formed UTF-8`);
  if (!Number.isSafeInteger(ctx.schemaVersion) || ctx.schemaVersion < 0) throw invalid('schemaVersion must be a non-negative integer');
  if (ctx.recordVersion !== undefined && (!Number.isSafeInteger(ctx.recordVersion) || ctx.recordVersion < 0)) throw invalid('recordVersion must be a non-negative integer');
}

/** The format a context seals to and must open from. */
const formatFor = (ctx: FieldContext): number => (ctx.recordVersion === undefined ? FIELD_FORMAT_VERSION : FIELD_FORMAT_VERSION_RECORD);

function fieldAad(formatVersion: number, ctx: FieldContext): Uint8Array {
  if (formatVersion === FIELD_FORMAT_VERSION) return lengthPrefixed(FIELD_MAGIC, Uint8Array.of(formatVersion), ctx.assetUuid, ctx.fieldName, String(ctx.schemaVersion));
  return lengthPrefixed(FIELD_MAGIC, Uint8Array.of(formatVersion), ctx.assetUuid, ctx.fieldName, String(ctx.schemaVersion), String(ctx.recordVersion));
}

function commitment(dek: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac('sha256', dek).update(COMMIT_LABEL).digest());
}

function encodeHeader(formatVersion: number, kekId: string, kekVersion: number, wrapped: Uint8Array): Uint8Array {
  const id = textBytes(kekId, MAX_KEK_ID_BYTES);
  if (id === undefined) throw invalid(`KEK id must be 1..${MAX_KEK_ID_BYTES} bytes of well-formed UTF-8`);
  if (!Number.isInteger(kekVersion) || kekVersion < 0 || kekVersion > 0xffffffff) throw invalid('KEK version must be a u32');
  if (!(wrapped instanceof Uint8Array) || wrapped.length === 0 || wrapped.length > MAX_WRAPPED_BYTES) {
    throw invalid(`wrapped DEK must be 1..${MAX_WRAPPED_BYTES} bytes`);
  }
  const out = new Uint8Array(4 + 1 + 2 + id.length + 4 + 2 + wrapped.length);
  const v = new DataView(out.buffer);
  out.set(MAGIC_BYTES, 0);
  out[4] = formatVersion;
  v.setUint16(5, id.length, false);
  out.set(id, 7);
  const o = 7 + id.length;
  v.setUint32(o, kekVersion, false);
  v.setUint16(o + 4, wrapped.length, false);
  out.set(wrapped, o + 6);
  return out;
}

/** Header plus where the body (nonce | commitment | ciphertext+tag) starts. */
function parse(sealed: Uint8Array): SealedHeader & { bodyOffset: number } {
  if (!(sealed instanceof Uint8Array) || sealed.length < 7) throw malformed();
  for (let i = 0; i < 4; i++) if (sealed[i] !== MAGIC_BYTES[i]) throw malformed();
  const formatVersion = sealed[4]!;
  if (formatVersion !== FIELD_FORMAT_VERSION && formatVersion !== FIELD_FORMAT_VERSION_RECORD) throw malformed();
  const v = new DataView(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  const idLen = v.getUint16(5, false);
  if (idLen === 0 || idLen > MAX_KEK_ID_BYTES || 7 + idLen + 6 > sealed.length) throw malformed();
  const idBytes = sealed.subarray(7, 7 + idLen);
  const kekId = Buffer.from(idBytes).toString('utf8');
  if (!Buffer.from(utf8(kekId)).equals(idBytes)) throw malformed(); // invalid UTF-8
  let o = 7 + idLen;
  const kekVersion = v.getUint32(o, false);
  const wLen = v.getUint16(o + 4, false);
  o += 6;
  if (wLen === 0 || o + wLen + BODY_MIN > sealed.length) throw malformed();
  const wrappedDek = new Uint8Array(sealed.subarray(o, o + wLen)); // a copy, even of a Buffer
  return { formatVersion, kekId, kekVersion, wrappedDek, bodyOffset: o + wLen };
}

/**
 * Reads the cleartext header of a sealed value — what a rotation job needs to find the KEK
 * version to re-wrap under — without decrypting anything. Throws `malformed` on a value that is
 * not AEF1; the header is not authenticated here (openField and rewrapField authenticate it).
 */
export function parseSealedHeader(sealed: Uint8Array): SealedHeader {
  const { formatVersion, kekId, kekVersion, wrappedDek } = parse(sealed);
  return { formatVersion, kekId, kekVersion, wrappedDek };
}

/**
 * Seals `plaintext` for the field `ctx` under a fresh DEK wrapped by `kek`'s primary version:
 * format 2 when `ctx` has a record version, else format 1.
 */
export async function sealField(kek: KekProvider, ctx: FieldContext, plaintext: Uint8Array): Promise<Uint8Array> {
  assertContext(ctx);
  if (!(plaintext instanceof Uint8Array)) throw invalid('plaintext must be bytes');
  const dek = randomBytes(DEK_BYTES);
  try {
    const { version, wrapped } = await kek.wrap(dek);
    const format = formatFor(ctx);
    const header = encodeHeader(format, kek.id, version, wrapped);
    const nonce = randomBytes(AEAD_NONCE_BYTES);
    const { ciphertext, tag } = gcmEncrypt(dek, nonce, plaintext, fieldAad(format, ctx));
    return concatBytes(header, nonce, commitment(dek), ciphertext, tag);
  } finally {
    dek.fill(0);
  }
}

/** The provider for `kekId`, or a throw (mapped to the one error by the caller). */
function providerFor(kek: KekProvider | ((kekId: string) => KekProvider), kekId: string): KekProvider {
  const p = typeof kek === 'function' ? kek(kekId) : kek;
  if (p === null || typeof p !== 'object' || p.id !== kekId) throw fieldFailed();
  return p;
}

/** Unwraps the DEK named by `h` and checks it against `commitmentBytes`; the caller zeroes it. */
async function unwrapCommitted(p: KekProvider, h: SealedHeader, commitmentBytes: Uint8Array): Promise<Uint8Array> {
  const dek = await p.unwrap(h.wrappedDek, h.kekVersion);
  if (!(dek instanceof Uint8Array) || dek.length !== DEK_BYTES || !ctEqual(commitment(dek), commitmentBytes)) {
    if (dek instanceof Uint8Array) dek.fill(0);
    throw fieldFailed();
  }
  return dek;
}

/**
 * Opens a value sealed by `sealField` for the same `ctx`. `kek` is one provider (a value sealed
 * under another KEK id fails) or a resolver from KEK id to provider (throw for unknown ids).
 * Context errors (a malformed `ctx`) are `invalid-argument`; everything about the sealed value
 * is the one `decryption-failed` error.
 */
export async function openField(
  kek: KekProvider | ((kekId: string) => KekProvider),
  ctx: FieldContext,
  sealed: Uint8Array,
): Promise<Uint8Array> {
  assertContext(ctx);
  let dek: Uint8Array | undefined;
  try {
    const h = parse(sealed);
    // The context decides the format: a format-1 value never opens where a record version is expected.
    if (h.formatVersion !== formatFor(ctx)) throw fieldFailed();
    const nonce = sealed.subarray(h.bodyOffset, h.bodyOffset + AEAD_NONCE_BYTES);
    const commit = sealed.subarray(h.bodyOffset + AEAD_NONCE_BYTES, h.bodyOffset + AEAD_NONCE_BYTES + COMMITMENT_BYTES);
    const ct = sealed.subarray(h.bodyOffset + AEAD_NONCE_BYTES + COMMITMENT_BYTES, sealed.length - AEAD_TAG_BYTES);
    const tag = sealed.subarray(sealed.length - AEAD_TAG_BYTES);
    dek = await unwrapCommitted(providerFor(kek, h.kekId), h, commit);
    return gcmDecrypt(dek, nonce, ct, tag, fieldAad(formatFor(ctx), ctx));
  } catch {
    throw fieldFailed();
  } finally {
    dek?.fill(0);
  }
}

/**
 * Key rotation without touching data: unwraps the DEK with `from` (checking it against the key
 * commitment, so garbage is never re-wrapped), wraps it with `to` under `toVersion` (default:
 * `to`'s primary) and returns the value with a new header; nonce, commitment and ciphertext are
 * byte-identical. Failures about the sealed value are the one `decryption-failed` error; errors
 * from `to.wrap` (e.g. an unknown target version) pass through.
 */
export async function rewrapField(from: KekProvider, to: KekProvider, sealed: Uint8Array, toVersion?: number): Promise<Uint8Array> {
  let dek: Uint8Array | undefined;
  let body: Uint8Array;
  let format: number;
  try {
    const h = parse(sealed);
    format = h.formatVersion;
    body = sealed.subarray(h.bodyOffset);
    dek = await unwrapCommitted(providerFor(from, h.kekId), h, body.subarray(AEAD_NONCE_BYTES, AEAD_NONCE_BYTES + COMMITMENT_BYTES));
  } catch {
    dek?.fill(0);
    throw fieldFailed();
  }
  try {
    const { version, wrapped } = await to.wrap(dek, toVersion);
    // The format byte is in the AAD: a re-wrap keeps it.
    return concatBytes(encodeHeader(format, to.id, version, wrapped), body);
  } finally {
    dek.fill(0);
  }
}
