/**
 * AEGIS-STREAM v1: the encrypted container for client backups and exports. Chunked AEAD that
 * detects truncation, reordering, duplication and trailing data; restore works only with the
 * right passphrase or X25519 identity. Modelled on age (a random file key wrapped per recipient,
 * a header MAC, then the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, "Online
 * Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015), written here on
 * Node's crypto only: AES-256-GCM, HKDF-SHA256, HMAC-SHA256, scrypt, X25519.
 *
 * Layout, byte by byte (integers big-endian):
 *
 *   offset     size  field
 *   0          12    magic: ASCII "AEGIS-STREAM" (41 45 47 49 53 2d 53 54 52 45 41 4d)
 *   12         1     format version: 0x01
 *   13         2     M = length of the metadata, 2..4096
 *   15         M     metadata: UTF-8 JSON object, not secret (kind 'backup' | 'export',
 *                    created ISO-8601 time, anything else the caller gives)
 *   15+M       1     recipient stanza type: 0x01 scrypt, 0x02 x25519 (exactly one stanza)
 *   16+M       S     stanza body:
 *                      scrypt (S = 88): salt (16) | N (4) | r (4) | p (4) | wrapped file key (60)
 *                      x25519 (S = 92): ephemeral public key (32) | wrapped file key (60)
 *   16+M+S     32    header MAC = HMAC-SHA256(K_header, bytes [0, 16+M+S))
 *   48+M+S     16    payload nonce (random)
 *   64+M+S     ...   payload chunks
 *
 * File key: 32 random bytes per file. "Wrapped file key" is AES-256-GCM:
 *   nonce (12, random) | ciphertext of the file key (32) | tag (16),
 * with AAD = the stanza type byte and the stanza body before the wrapped key (the bytes
 * [15+M, 16+M+S-60)), under the wrap key:
 *   scrypt: wrap key = scrypt(NFC(passphrase), salt, N, r, p, 32 bytes). N, r, p read from a
 *           file are accepted only within the passphrase-keyfile bounds (assertScryptParams:
 *           N a power of two in [2^14, 2^20], r in [8, 32], p in [1, 16], memory and work caps)
 *           and are checked before scrypt runs: too weak makes the file cheap to brute-force,
 *           too large lets a planted file exhaust memory or CPU.
 *   x25519: shared = X25519(eph_priv, recipient_pub) (X25519(identity_priv, eph_pub) to open);
 *           wrap key = HKDF-SHA256(shared, salt = eph_pub | recipient_pub,
 *                                  info = "aegis-stream x25519", 32 bytes).
 *           A small-order ephemeral or recipient key, or an all-zero shared secret, is refused.
 *
 * Header key:  K_header  = HKDF-SHA256(file key, salt = empty, info = "aegis-stream header", 32)
 * Payload key: K_payload = HKDF-SHA256(file key, salt = payload nonce, info = "aegis-stream payload", 32)
 *
 * Payload (STREAM): the plaintext in chunks of 64 KiB (65536 bytes); chunk i (from 0) is sealed
 * with AES-256-GCM under K_payload, no AAD, nonce = i as an 11-byte big-endian counter | a
 * last-flag byte (0x01 on the final chunk, 0x00 on every other). Each sealed chunk is its
 * ciphertext followed by its 16-byte tag: 65552 bytes, except the final one, which is
 * 16..65552 bytes and is 16 (empty plaintext) only when the whole plaintext is empty. There is
 * no length field: the reader knows a chunk is final because the file ends inside or right
 * after it, and the last flag makes that claim authenticated — dropping the final chunk of a
 * file that ends on a chunk boundary leaves a non-final chunk at the end, which fails to open
 * as final. The header goes into no chunk's AAD: the MAC covers it, and K_payload derives from
 * the file key the MAC has checked.
 *
 * Recipients are written `aegis-x25519:` + base64url (no padding) of the 32-byte public key.
 * An identity is a passphrase keyfile (passphrase-keyfile.ts, label 'aegis/recipient-identity')
 * holding the secret 'x25519': 32 bytes from crypto.randomBytes.
 *
 * Errors. Every cryptographic failure when decrypting — wrong passphrase, wrong identity, the
 * wrong kind of key for the stanza, any changed byte after the magic (version, metadata,
 * stanza, MAC, nonce, payload), out-of-bounds scrypt parameters, truncation, reordering,
 * duplication, trailing data — is ONE error: AegisError(decryption-failed, "the encrypted file
 * could not be decrypted"). Only a file that does not start with the magic (not an
 * AEGIS-STREAM file at all) is `malformed`. `readStreamMeta`, which checks nothing
 * cryptographic, reports structure as `malformed` and out-of-bounds scrypt parameters as
 * `kdf-out-of-bounds` (invalid-argument), so a restore can say why a file is refused.
 *
 * Streaming: `decryptFile` verifies the header and its MAC before it returns, then yields
 * plaintext chunk by chunk, each authenticated before it is yielded. Truncation, reordering
 * and trailing data surface while iterating (trailing data and a missing final chunk at the
 * very end), so consumers MUST treat the output as provisional until the iteration completes
 * without error — write a restore to a temporary place and commit it only then.
 *
 * Keys are zeroed after use (file key, wrap keys, shared secrets, ephemeral private keys, the
 * payload key when the iteration ends — iterate, or break out of, the chunks of every
 * decryptFile you start). Node KeyObjects made from them cannot be zeroed.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, scrypt as scryptCb, type KeyObject } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { lstat, open as openFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { concatBytes, ctEqual, sameBytes } from '../bytes.js';
import { open as aeadOpen, seal as aeadSeal } from '../crypto/aead.js';
import { okpPrivateKeyObject, okpPublicKey } from '../crypto/okp.js';
import { isSmallOrder, x25519, x25519PublicKeyObject } from '../crypto/x25519.js';
import { AegisError, ErrorCode, fail } from '../errors.js';
import { assertScryptParams, DEFAULT_SCRYPT, readKeyfile, writeKeyfile, type ScryptParams } from './passphrase-keyfile.js';

export const STREAM_MAGIC = 'AEGIS-STREAM';
export const STREAM_VERSION = 1;
/** Plaintext bytes per chunk. */
export const STREAM_CHUNK_BYTES = 64 * 1024;
/** Largest metadata JSON, in bytes. */
export const STREAM_MAX_META_BYTES = 4096;
export const RECIPIENT_PREFIX = 'aegis-x25519:';
export const IDENTITY_LABEL = 'aegis/recipient-identity';
/** The one message of every decryption failure. */
export const STREAM_DECRYPTION_FAILED = 'the encrypted file could not be decrypted';

const MAGIC = Buffer.from(STREAM_MAGIC, 'latin1');
const STANZA_SCRYPT = 0x01;
const STANZA_X25519 = 0x02;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
const WRAPPED_BYTES = 12 + KEY_BYTES + 16;
const MAC_BYTES = 32;
const PAYLOAD_NONCE_BYTES = 16;
const TAG_BYTES = 16;
const SEALED_CHUNK_BYTES = STREAM_CHUNK_BYTES + TAG_BYTES;
const SCRYPT_BODY_BYTES = SALT_BYTES + 12 + WRAPPED_BYTES;
const X25519_BODY_BYTES = KEY_BYTES + WRAPPED_BYTES;
const MAX_PREFIX_BYTES = 16 + STREAM_MAX_META_BYTES + Math.max(SCRYPT_BODY_BYTES, X25519_BODY_BYTES) + MAC_BYTES + PAYLOAD_NONCE_BYTES;
/** 2^48 chunks (16 EiB): the counter is written in the low 6 of its 11 bytes. */
const MAX_CHUNKS = 2 ** 48;
const INFO_HEADER = Buffer.from('aegis-stream header');
const INFO_PAYLOAD = Buffer.from('aegis-stream payload');
const INFO_X25519 = Buffer.from('aegis-stream x25519');

const streamFailed = (): AegisError => new AegisError(ErrorCode.DecryptionFailed, STREAM_DECRYPTION_FAILED);

export type StreamKind = 'backup' | 'export';
/** The cleartext metadata: not secret, bounded to 4 KiB of JSON. */
export interface StreamMeta {
  kind: StreamKind;
  /** ISO-8601; set to the time of encryption when the caller gives none. */
  created: string;
  [field: string]: unknown;
}

export type StreamRecipient = { passphrase: string; kdf?: ScryptParams } | { x25519: string };
export type StreamRecipientInfo = { type: 'scrypt'; N: number; r: number; p: number } | { type: 'x25519' };

// ---------------------------------------------------------------------------------------------
// Small helpers

function hkdf32(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', ikm, salt, info, KEY_BYTES));
}

function scryptKey(passphrase: string, salt: Uint8Array, params: ScryptParams): Promise<Uint8Array> {
  const opts = { N: params.N, r: params.r, p: params.p, maxmem: 128 * params.N * params.r + 2 * 1024 * 1024 };
  return new Promise((resolve, reject) => {
    // NFC as in passphrase-keyfile.ts: the same passphrase typed elsewhere gives the same key.
    scryptCb(Buffer.from(passphrase.normalize('NFC'), 'utf8'), salt, KEY_BYTES, opts, (err, key) => {
      if (err) return reject(new AegisError(ErrorCode.InvalidArgument, 'scrypt failed'));
      const out = new Uint8Array(key);
      key.fill(0);
      resolve(out);
    });
  });
}

function chunkNonce(counter: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeUIntBE(counter, 5, 6);
  n[11] = last ? 1 : 0;
  return n;
}

function sealChunk(key: Uint8Array, counter: number, last: boolean, pt: Uint8Array): Buffer {
  const c = createCipheriv('aes-256-gcm', key, chunkNonce(counter, last), { authTagLength: TAG_BYTES });
  return Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
}

/** Opens one sealed chunk; returns plaintext only once its tag has verified. */
function openChunk(key: Uint8Array, counter: number, last: boolean, sealed: Uint8Array): Uint8Array {
  if (sealed.length < TAG_BYTES || counter >= MAX_CHUNKS) throw streamFailed();
  // The final chunk is empty only when the whole plaintext is: an empty chunk 0.
  if (last && sealed.length === TAG_BYTES && counter !== 0) throw streamFailed();
  try {
    const d = createDecipheriv('aes-256-gcm', key, chunkNonce(counter, last), { authTagLength: TAG_BYTES });
    d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    const head = d.update(sealed.subarray(0, sealed.length - TAG_BYTES));
    const tail = d.final();
    return new Uint8Array(tail.length === 0 ? head : Buffer.concat([head, tail]));
  } catch {
    throw streamFailed();
  }
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

const b64u = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('base64url');

// ---------------------------------------------------------------------------------------------
// Recipients and identities

/** `aegis-x25519:` + base64url (no padding) of a 32-byte X25519 public key. */
export function formatRecipient(publicKey: Uint8Array): string {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== KEY_BYTES) fail(ErrorCode.InvalidArgument, 'an X25519 public key is 32 bytes');
  return RECIPIENT_PREFIX + b64u(publicKey);
}

/**
 * The 32-byte public key of an `aegis-x25519:` recipient. Anything else — another prefix,
 * padding, a non-canonical or wrong-length encoding — is invalid-argument; a small-order key
 * (which would make the shared secret known to anyone) is low-order-point.
 */
export function parseRecipient(s: string): Uint8Array {
  const bad = (): never =>
    fail(ErrorCode.InvalidArgument, `not an X25519 recipient: expected ${RECIPIENT_PREFIX} followed by 43 base64url characters (a 32-byte public key)`);
  if (typeof s !== 'string' || !s.startsWith(RECIPIENT_PREFIX)) return bad();
  const body = s.slice(RECIPIENT_PREFIX.length);
  if (!/^[A-Za-z0-9_-]{43}$/.test(body)) return bad();
  const pk = new Uint8Array(Buffer.from(body, 'base64url'));
  if (pk.length !== KEY_BYTES || b64u(pk) !== body) return bad();
  if (isSmallOrder(pk)) fail(ErrorCode.LowOrderPoint, 'the X25519 recipient is a point of small order');
  return pk;
}

/** A recipient's private key, opened from its identity file. `close()` zeroes it. */
export interface Identity {
  /** The `aegis-x25519:` string to encrypt to this identity. */
  readonly recipient: string;
  close(): void;
}

const IDENTITY_SECRETS = new WeakMap<Identity, { sk: Uint8Array; pk: Uint8Array }>();

class RecipientIdentity implements Identity {
  readonly recipient: string;
  constructor(recipient: string) {
    this.recipient = recipient;
  }
  close(): void {
    const s = IDENTITY_SECRETS.get(this);
    if (s) s.sk.fill(0);
    IDENTITY_SECRETS.delete(this);
  }
}

function identitySecret(identity: Identity): { sk: Uint8Array; pk: Uint8Array } {
  const s = identity instanceof RecipientIdentity ? IDENTITY_SECRETS.get(identity) : undefined;
  if (!s) fail(ErrorCode.FailedPrecondition, 'the identity is closed or was not opened by openRecipientIdentity');
  return s;
}

/**
 * Creates an identity file (a passphrase keyfile, mode 0600) holding a fresh X25519 private
 * key; returns the recipient string to encrypt to. Refuses to replace an existing file: that
 * would lose the key to every backup made for it.
 */
export async function createRecipientIdentity(path: string, passphrase: string, kdf: ScryptParams = DEFAULT_SCRYPT): Promise<{ recipient: string }> {
  const exists = await lstat(path).then(
    () => true,
    () => false,
  );
  if (exists) fail(ErrorCode.AlreadyExists, 'refusing to overwrite an existing identity file');
  const sk = new Uint8Array(randomBytes(KEY_BYTES));
  try {
    const pk = okpPublicKey(okpPrivateKeyObject('X25519', sk));
    const recipient = formatRecipient(pk);
    await writeKeyfile(path, passphrase, IDENTITY_LABEL, { x25519: sk }, kdf);
    return { recipient };
  } finally {
    sk.fill(0);
  }
}

/** Opens an identity file (see readKeyfile for what it refuses). Close the identity when done. */
export async function openRecipientIdentity(path: string, passphrase: string): Promise<Identity> {
  const secrets = await readKeyfile(path, passphrase, { expectedLabel: IDENTITY_LABEL });
  try {
    const sk = secrets.x25519;
    if (!(sk instanceof Uint8Array) || sk.length !== KEY_BYTES || Object.keys(secrets).length !== 1) {
      fail(ErrorCode.Malformed, 'the identity file does not hold exactly one X25519 private key');
    }
    const pk = okpPublicKey(okpPrivateKeyObject('X25519', sk));
    const identity = new RecipientIdentity(formatRecipient(pk));
    IDENTITY_SECRETS.set(identity, { sk: sk.slice(), pk });
    return identity;
  } finally {
    for (const v of Object.values(secrets)) v.fill(0);
  }
}

// ---------------------------------------------------------------------------------------------
// Header

function encodeMeta(meta: Record<string, unknown>): Uint8Array {
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) fail(ErrorCode.InvalidArgument, 'stream metadata must be a JSON object');
  const proto = Object.getPrototypeOf(meta) as unknown;
  if (proto !== Object.prototype && proto !== null) fail(ErrorCode.InvalidArgument, 'stream metadata must be a plain object');
  const m: Record<string, unknown> = { ...meta };
  if (m.kind !== 'backup' && m.kind !== 'export') fail(ErrorCode.InvalidArgument, "stream metadata kind must be 'backup' or 'export'");
  if (m.created === undefined) m.created = new Date().toISOString();
  if (typeof m.created !== 'string') fail(ErrorCode.InvalidArgument, 'stream metadata created must be an ISO-8601 string');
  let json: string;
  try {
    json = JSON.stringify(m);
  } catch {
    return fail(ErrorCode.InvalidArgument, 'stream metadata must be serializable as JSON');
  }
  const bytes = Buffer.from(json, 'utf8');
  if (bytes.length > STREAM_MAX_META_BYTES) fail(ErrorCode.TooLarge, `stream metadata is larger than ${STREAM_MAX_META_BYTES} bytes of JSON`);
  return new Uint8Array(bytes);
}

/** Parses metadata bytes; undefined when they are not a valid metadata object. */
function decodeMeta(bytes: Uint8Array): StreamMeta | undefined {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const m = v as Record<string, unknown>;
  if ((m.kind !== 'backup' && m.kind !== 'export') || typeof m.created !== 'string') return undefined;
  return m as StreamMeta;
}

interface ParsedHeader {
  /** Bytes [0, MAC): what the MAC covers. */
  macInput: Uint8Array;
  mac: Uint8Array;
  payloadNonce: Uint8Array;
  /** magic .. payload nonce: everything before the first chunk. */
  prefix: Uint8Array;
  metaBytes: Uint8Array;
  stanza:
    | { type: 'scrypt'; aad: Uint8Array; salt: Uint8Array; params: ScryptParams; wrapped: Uint8Array }
    | { type: 'x25519'; aad: Uint8Array; eph: Uint8Array; wrapped: Uint8Array };
}

/** Why a header did not parse: not this format at all, or a broken one. */
class HeaderProblem {
  constructor(readonly notStream: boolean, readonly detail: string) {}
}

/** Structural parse only; scrypt bounds are checked by the callers. */
function parseHeader(b: Buffer): ParsedHeader {
  if (b.length < MAGIC.length || !b.subarray(0, MAGIC.length).equals(MAGIC)) throw new HeaderProblem(true, 'not an AEGIS-STREAM file');
  const need = (n: number): void => {
    if (b.length < n) throw new HeaderProblem(false, 'the header is truncated');
  };
  need(15);
  if (b[12] !== STREAM_VERSION) throw new HeaderProblem(false, `unsupported AEGIS-STREAM version (this build reads version ${STREAM_VERSION})`);
  const m = b.readUInt16BE(13);
  if (m < 2 || m > STREAM_MAX_META_BYTES) throw new HeaderProblem(false, 'the metadata length is out of range');
  need(16 + m);
  const metaBytes = new Uint8Array(b.subarray(15, 15 + m));
  const type = b[15 + m];
  const s = 16 + m;
  let stanza: ParsedHeader['stanza'];
  let end: number;
  if (type === STANZA_SCRYPT) {
    end = s + SCRYPT_BODY_BYTES;
    need(end);
    stanza = {
      type: 'scrypt',
      aad: new Uint8Array(b.subarray(15 + m, end - WRAPPED_BYTES)),
      salt: new Uint8Array(b.subarray(s, s + SALT_BYTES)),
      params: { N: b.readUInt32BE(s + 16), r: b.readUInt32BE(s + 20), p: b.readUInt32BE(s + 24) },
      wrapped: new Uint8Array(b.subarray(end - WRAPPED_BYTES, end)),
    };
  } else if (type === STANZA_X25519) {
    end = s + X25519_BODY_BYTES;
    need(end);
    stanza = {
      type: 'x25519',
      aad: new Uint8Array(b.subarray(15 + m, end - WRAPPED_BYTES)),
      eph: new Uint8Array(b.subarray(s, s + KEY_BYTES)),
      wrapped: new Uint8Array(b.subarray(end - WRAPPED_BYTES, end)),
    };
  } else {
    throw new HeaderProblem(false, 'unknown recipient stanza type');
  }
  need(end + MAC_BYTES + PAYLOAD_NONCE_BYTES);
  return {
    macInput: new Uint8Array(b.subarray(0, end)),
    mac: new Uint8Array(b.subarray(end, end + MAC_BYTES)),
    payloadNonce: new Uint8Array(b.subarray(end + MAC_BYTES, end + MAC_BYTES + PAYLOAD_NONCE_BYTES)),
    prefix: new Uint8Array(b.subarray(0, end + MAC_BYTES + PAYLOAD_NONCE_BYTES)),
    metaBytes,
    stanza,
  };
}

/** Reads up to `n` bytes at `pos` (fewer only at end of file). */
async function readAt(fh: FileHandle, pos: number, n: number): Promise<Buffer> {
  const buf = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    const { bytesRead } = await fh.read(buf, got, n - got, pos + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

async function readPrefix(path: string): Promise<Buffer> {
  const fh = await openFile(path, fsc.O_RDONLY);
  try {
    return await readAt(fh, 0, MAX_PREFIX_BYTES);
  } finally {
    await fh.close();
  }
}

function headerMac(fileKey: Uint8Array, macInput: Uint8Array): Uint8Array {
  const k = hkdf32(fileKey, new Uint8Array(0), INFO_HEADER);
  try {
    return new Uint8Array(createHmac('sha256', k).update(macInput).digest());
  } finally {
    k.fill(0);
  }
}

// ---------------------------------------------------------------------------------------------
// Encrypt

async function buildStanza(recipient: StreamRecipient, fileKey: Uint8Array): Promise<Uint8Array> {
  if (recipient === null || typeof recipient !== 'object') fail(ErrorCode.InvalidArgument, 'recipient must be { passphrase } or { x25519 }');
  if ('passphrase' in recipient) {
    const { passphrase } = recipient;
    if (typeof passphrase !== 'string' || passphrase.length === 0) fail(ErrorCode.InvalidArgument, 'the passphrase is empty');
    const kdf = recipient.kdf ?? DEFAULT_SCRYPT;
    assertScryptParams(kdf);
    const salt = new Uint8Array(randomBytes(SALT_BYTES));
    const aad = concatBytes(Uint8Array.of(STANZA_SCRYPT), salt, u32(kdf.N), u32(kdf.r), u32(kdf.p));
    const wrapKey = await scryptKey(passphrase, salt, kdf);
    try {
      return concatBytes(aad, aeadSeal(wrapKey, fileKey, aad));
    } finally {
      wrapKey.fill(0);
    }
  }
  if ('x25519' in recipient) {
    const pk = parseRecipient(recipient.x25519);
    const ephSk = new Uint8Array(randomBytes(KEY_BYTES));
    let shared: Uint8Array | undefined;
    let wrapKey: Uint8Array | undefined;
    try {
      const ephKo = okpPrivateKeyObject('X25519', ephSk);
      const eph = okpPublicKey(ephKo);
      shared = x25519(ephKo, x25519PublicKeyObject(pk));
      wrapKey = hkdf32(shared, concatBytes(eph, pk), INFO_X25519);
      const aad = concatBytes(Uint8Array.of(STANZA_X25519), eph);
      return concatBytes(aad, aeadSeal(wrapKey, fileKey, aad));
    } finally {
      ephSk.fill(0);
      shared?.fill(0);
      wrapKey?.fill(0);
    }
  }
  return fail(ErrorCode.InvalidArgument, 'recipient must be { passphrase } or { x25519 }');
}

function isIterable(x: unknown): x is AsyncIterable<Uint8Array> | Iterable<Uint8Array> {
  return x !== null && typeof x === 'object' && (Symbol.asyncIterator in x || Symbol.iterator in x);
}

/**
 * Encrypts the plaintext (any split into pieces; re-chunked to 64 KiB here, never held whole)
 * to one recipient and writes it to `path` with mode 0600: to a temp file in the same folder,
 * fsynced, then renamed over `path` — a failure (of the source iterator too) leaves nothing
 * under `path` and removes the temp file. `meta` is stored in clear (see StreamMeta).
 * Returns the file's size and the SHA-256 (hex) of the whole file, for the audit log.
 */
export async function encryptToFile(
  path: string,
  plaintextChunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  recipient: StreamRecipient,
  meta: Record<string, unknown>,
): Promise<{ bytes: number; sha256: string }> {
  if (typeof path !== 'string' || path.length === 0) fail(ErrorCode.InvalidArgument, 'path must be a non-empty string');
  if (!isIterable(plaintextChunks)) fail(ErrorCode.InvalidArgument, 'plaintext must be an iterable of byte chunks');
  const metaBytes = encodeMeta(meta);
  const fileKey = new Uint8Array(randomBytes(KEY_BYTES));
  let payloadKey: Uint8Array | undefined;
  const buf = Buffer.alloc(STREAM_CHUNK_BYTES);
  try {
    const stanza = await buildStanza(recipient, fileKey);
    const lenField = Buffer.alloc(2);
    lenField.writeUInt16BE(metaBytes.length);
    const macInput = concatBytes(MAGIC, Uint8Array.of(STREAM_VERSION), lenField, metaBytes, stanza);
    const payloadNonce = new Uint8Array(randomBytes(PAYLOAD_NONCE_BYTES));
    const prefix = concatBytes(macInput, headerMac(fileKey, macInput), payloadNonce);
    payloadKey = hkdf32(fileKey, payloadNonce, INFO_PAYLOAD);
    const key = payloadKey;

    const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
    const fh = await openFile(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    const hash = createHash('sha256');
    let bytes = 0;
    const write = async (data: Uint8Array): Promise<void> => {
      let o = 0;
      while (o < data.length) {
        const { bytesWritten } = await fh.write(data, o, data.length - o);
        o += bytesWritten;
      }
      hash.update(data);
      bytes += data.length;
    };
    try {
      await fh.chmod(0o600); // the umask can only narrow it; be explicit either way
      await write(prefix);
      let fill = 0;
      let counter = 0;
      for await (const piece of plaintextChunks) {
        if (!(piece instanceof Uint8Array)) fail(ErrorCode.InvalidArgument, 'plaintext chunks must be bytes');
        let o = 0;
        while (o < piece.length) {
          if (fill === STREAM_CHUNK_BYTES) {
            // More plaintext follows, so this full chunk is not the final one.
            if (counter + 1 >= MAX_CHUNKS) fail(ErrorCode.TooLarge, 'the plaintext is too large for one AEGIS-STREAM file');
            await write(sealChunk(key, counter++, false, buf));
            fill = 0;
          }
          const n = Math.min(STREAM_CHUNK_BYTES - fill, piece.length - o);
          buf.set(piece.subarray(o, o + n), fill);
          fill += n;
          o += n;
        }
      }
      await write(sealChunk(key, counter, true, buf.subarray(0, fill)));
      await fh.sync();
    } catch (e) {
      await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
    await fh.close();
    try {
      await rename(tmp, path);
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
    const dir = await openFile(dirname(path), fsc.O_RDONLY).catch(() => undefined);
    if (dir) {
      await dir.sync().catch(() => undefined);
      await dir.close();
    }
    return { bytes, sha256: hash.digest('hex') };
  } finally {
    fileKey.fill(0);
    payloadKey?.fill(0);
    buf.fill(0);
  }
}

// ---------------------------------------------------------------------------------------------
// Decrypt

export type StreamKey = { passphrase: string } | { identity: Identity };

/** Unwraps the file key; every failure is the one error. */
async function unwrapFileKey(h: ParsedHeader, key: StreamKey): Promise<Uint8Array> {
  const st = h.stanza;
  if (st.type === 'scrypt') {
    if (!('passphrase' in key)) throw streamFailed();
    try {
      assertScryptParams(st.params); // before scrypt runs: never derive with weak or huge parameters
    } catch {
      throw streamFailed();
    }
    const wrapKey = await scryptKey(key.passphrase, st.salt, st.params);
    try {
      return aeadOpen(wrapKey, st.wrapped, st.aad);
    } catch {
      throw streamFailed();
    } finally {
      wrapKey.fill(0);
    }
  }
  if (!('identity' in key)) throw streamFailed();
  const { sk, pk } = identitySecret(key.identity);
  if (isSmallOrder(st.eph)) throw streamFailed();
  let shared: Uint8Array | undefined;
  let wrapKey: Uint8Array | undefined;
  try {
    let skKo: KeyObject;
    try {
      skKo = okpPrivateKeyObject('X25519', sk);
      shared = x25519(skKo, x25519PublicKeyObject(st.eph));
    } catch {
      throw streamFailed();
    }
    wrapKey = hkdf32(shared, concatBytes(st.eph, pk), INFO_X25519);
    try {
      return aeadOpen(wrapKey, st.wrapped, st.aad);
    } catch {
      throw streamFailed();
    }
  } finally {
    shared?.fill(0);
    wrapKey?.fill(0);
  }
}

async function* payloadChunks(path: string, prefix: Uint8Array, payloadKey: Uint8Array): AsyncGenerator<Uint8Array, void, undefined> {
  let fh: FileHandle | undefined;
  const win = Buffer.alloc(SEALED_CHUNK_BYTES + 1);
  try {
    fh = await openFile(path, fsc.O_RDONLY);
    // The file may have changed since the header was checked: it must still be that header.
    if (!sameBytes(await readAt(fh, 0, prefix.length), prefix)) throw streamFailed();
    let pos = prefix.length;
    let len = 0;
    let eof = false;
    for (let counter = 0; ; counter++) {
      // Hold one byte more than a sealed chunk: a chunk is final iff the file ends within it.
      while (len < win.length && !eof) {
        const { bytesRead } = await fh.read(win, len, win.length - len, pos);
        if (bytesRead === 0) eof = true;
        len += bytesRead;
        pos += bytesRead;
      }
      if (len === win.length) {
        const pt = openChunk(payloadKey, counter, false, win.subarray(0, SEALED_CHUNK_BYTES));
        win[0] = win[SEALED_CHUNK_BYTES]!;
        len = 1;
        yield pt;
      } else {
        const pt = openChunk(payloadKey, counter, true, win.subarray(0, len));
        yield pt;
        return;
      }
    }
  } finally {
    payloadKey.fill(0);
    win.fill(0);
    await fh?.close();
  }
}

/**
 * Opens an AEGIS-STREAM file. Verifies the header and its MAC before returning (a wrong key or
 * any change to the header fails here), then `chunks` yields the authenticated plaintext chunk
 * by chunk; it can be iterated once. Truncation, reordering, duplication and trailing data
 * throw while iterating, a missing final chunk and trailing data only at the very end: treat
 * the output as provisional until the iteration completes. Every failure is the one
 * `decryption-failed` error (see the top comment); a file without the magic is `malformed`.
 * `meta` is returned only once the MAC has authenticated it.
 */
export async function decryptFile(path: string, key: StreamKey): Promise<{ meta: StreamMeta; chunks: AsyncIterable<Uint8Array> }> {
  if (key === null || typeof key !== 'object' || !('passphrase' in key || 'identity' in key)) {
    fail(ErrorCode.InvalidArgument, 'decryptFile needs { passphrase } or { identity }');
  }
  if ('passphrase' in key && (typeof key.passphrase !== 'string' || key.passphrase.length === 0)) {
    fail(ErrorCode.InvalidArgument, 'the passphrase is empty');
  }
  if ('identity' in key) identitySecret(key.identity);
  let h: ParsedHeader;
  try {
    h = parseHeader(await readPrefix(path));
  } catch (e) {
    if (e instanceof HeaderProblem) {
      if (e.notStream) fail(ErrorCode.Malformed, 'not an AEGIS-STREAM file');
      throw streamFailed();
    }
    throw e;
  }
  const fileKey = await unwrapFileKey(h, key);
  let payloadKey: Uint8Array | undefined;
  try {
    const mac = headerMac(fileKey, h.macInput);
    if (!ctEqual(mac, h.mac)) throw streamFailed();
    const meta = decodeMeta(h.metaBytes);
    if (!meta) throw streamFailed();
    payloadKey = hkdf32(fileKey, h.payloadNonce, INFO_PAYLOAD);
    const k = payloadKey;
    let used = false;
    const chunks: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => {
        if (used) fail(ErrorCode.FailedPrecondition, 'the decrypted chunks can be iterated only once');
        used = true;
        return payloadChunks(path, h.prefix, k);
      },
    };
    payloadKey = undefined; // owned by the iteration now, zeroed when it ends
    return { meta, chunks };
  } finally {
    fileKey.fill(0);
    payloadKey?.fill(0);
  }
}

/**
 * The cleartext metadata and the recipient type of an AEGIS-STREAM file, without any key —
 * for a restore to say what it restores and which key it needs. Nothing here is
 * authenticated: trust `meta` only as returned by `decryptFile`. A file that is not
 * AEGIS-STREAM, or whose header does not parse, is `malformed`; scrypt parameters out of
 * bounds are `kdf-out-of-bounds` (invalid-argument) — decryptFile would refuse the file.
 */
export async function readStreamMeta(path: string): Promise<{ version: number; meta: StreamMeta; recipient: StreamRecipientInfo }> {
  let h: ParsedHeader;
  try {
    h = parseHeader(await readPrefix(path));
  } catch (e) {
    if (e instanceof HeaderProblem) fail(ErrorCode.Malformed, e.notStream ? 'not an AEGIS-STREAM file' : `malformed AEGIS-STREAM header: ${e.detail}`);
    throw e;
  }
  const meta = decodeMeta(h.metaBytes);
  if (!meta) fail(ErrorCode.Malformed, 'malformed AEGIS-STREAM header: the metadata is not a valid JSON object');
  if (h.stanza.type === 'scrypt') {
    assertScryptParams(h.stanza.params);
    return { version: STREAM_VERSION, meta, recipient: { type: 'scrypt', ...h.stanza.params } };
  }
  return { version: STREAM_VERSION, meta, recipient: { type: 'x25519' } };
}
