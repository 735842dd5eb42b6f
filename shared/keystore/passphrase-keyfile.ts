/**
 * Small secrets sealed under a passphrase: scrypt (RFC 7914) -> 32-byte key -> AES-256-GCM
 * (NIST SP 800-38D) with a random 12-byte nonce. DESIGN.md §5: never a plain key on disk.
 *
 * File format (JSON, binary fields base64):
 *   { format: 'aegis-keyfile', version: 1,
 *     kdf: { name: 'scrypt', N, r, p, salt }, label, nonce, ciphertext }
 * `ciphertext` is the GCM ciphertext followed by its 16-byte tag. The AAD is the canonical,
 * length-prefixed header (format, version, kdf name, N, r, p, salt, label), so changing any
 * header field — a weaker N, another label — fails authentication like a flipped bit does.
 * The plaintext is the length-prefixed list of (name, value) pairs.
 *
 * scrypt parameters read from a file are accepted only within bounds, both ways: too low makes a
 * stolen file cheap to brute-force; too high lets a planted file exhaust memory or CPU at start.
 * N in [2^14, 2^20] (power of two), r in [8, 32], p in [1, 16], and on top memory 128·N·r ≤ 1 GiB
 * and work N·r·p ≤ 2^24 (so N = 2^20 needs r = 8, p ≤ 2). Default N = 2^15, r = 8, p = 1
 * (32 MiB, ~0.1 s).
 *
 * Failures: a wrong passphrase and any tampering give ONE error (`decryption-failed`,
 * "decryption failed"). Everything that is not the sealed format — a PEM or DER private key, a
 * JSON with cleartext key fields, loose file permissions, out-of-bounds KDF parameters — is a
 * `KeyfileError` with a `reason`. No message ever carries the passphrase or key bytes.
 */
import { randomBytes, scrypt as scryptCb, type ScryptOptions } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { writeFileAtomic } from '../fs.js';
import { lengthPrefixed, u32be } from '../bytes.js';
import { decryptionFailed, gcmDecrypt, gcmEncrypt, AEAD_NONCE_BYTES, AEAD_TAG_BYTES } from '../crypto/aead.js';
import { AegisError, ErrorCode } from '../errors.js';

export const KEYFILE_FORMAT = 'aegis-keyfile';
export const KEYFILE_VERSION = 1;
/** Minimum passphrase length (characters). */
export const MIN_PASSPHRASE_LENGTH = 12;
/** The environment variable the coordinator reads its passphrase from. */
export const PASSPHRASE_ENV = 'AEGIS_PASSPHRASE';

export interface ScryptParams {
  /** CPU/memory cost, a power of two in [2^14, 2^20]. Default 2^15. */
  N: number;
  /** Block size in [8, 32]. Default 8. */
  r: number;
  /** Parallelism in [1, 16]. Default 1. */
  p: number;
}
export const DEFAULT_SCRYPT: Readonly<ScryptParams> = Object.freeze({ N: 2 ** 15, r: 8, p: 1 });
export const SCRYPT_BOUNDS = Object.freeze({
  N: [2 ** 14, 2 ** 20],
  r: [8, 32],
  p: [1, 16],
  maxMemoryBytes: 2 ** 30,
  maxWork: 2 ** 24,
} as const);
const SALT_BYTES = 16;
const MAX_FILE_BYTES = 1 << 20;
const MAX_SECRETS = 64;
const MAX_SECRET_BYTES = 64 * 1024;
const LABEL_PATTERN = /^[A-Za-z0-9._:/-]{1,128}$/;
const NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export type KeyfileRefusal =
  | 'loose-permissions'
  | 'plain-key'
  | 'cleartext-key-fields'
  | 'not-sealed'
  | 'kdf-out-of-bounds'
  | 'weak-passphrase'
  | 'bad-input';

/** Anything that is not a well-formed sealed keyfile, or a passphrase too weak to use. */
export class KeyfileError extends AegisError {
  readonly reason: KeyfileRefusal;
  constructor(reason: KeyfileRefusal, message: string) {
    super(
      reason === 'weak-passphrase' || reason === 'bad-input' || reason === 'kdf-out-of-bounds' ? ErrorCode.InvalidArgument : ErrorCode.InsecureKeyfile,
      message,
      reason === 'weak-passphrase' ? `set ${PASSPHRASE_ENV} (or type the passphrase when asked): at least ${MIN_PASSPHRASE_LENGTH} characters` : undefined,
    );
    this.reason = reason;
  }
}

export interface SealedKeyfile {
  format: typeof KEYFILE_FORMAT;
  version: typeof KEYFILE_VERSION;
  kdf: { name: 'scrypt'; N: number; r: number; p: number; salt: string };
  label: string;
  nonce: string;
  ciphertext: string;
}

/** Throws `kdf-out-of-bounds` unless N, r, p are within SCRYPT_BOUNDS. */
export function assertScryptParams(params: ScryptParams): void {
  const { N, r, p } = params;
  const ok =
    Number.isSafeInteger(N) && Number.isSafeInteger(r) && Number.isSafeInteger(p) &&
    N >= SCRYPT_BOUNDS.N[0] && N <= SCRYPT_BOUNDS.N[1] && (N & (N - 1)) === 0 &&
    r >= SCRYPT_BOUNDS.r[0] && r <= SCRYPT_BOUNDS.r[1] &&
    p >= SCRYPT_BOUNDS.p[0] && p <= SCRYPT_BOUNDS.p[1] &&
    128 * N * r <= SCRYPT_BOUNDS.maxMemoryBytes &&
    N * r * p <= SCRYPT_BOUNDS.maxWork;
  if (!ok) {
    throw new KeyfileError(
      'kdf-out-of-bounds',
      'scrypt parameters out of bounds: N must be a power of two in [2^14, 2^20], r in [8, 32], p in [1, 16], 128*N*r <= 1 GiB, N*r*p <= 2^24',
    );
  }
}

function assertPassphrase(passphrase: unknown): string {
  if (typeof passphrase !== 'string' || passphrase.length === 0) {
    throw new KeyfileError('weak-passphrase', 'the passphrase is empty');
  }
  return passphrase;
}

function assertLabel(label: unknown): string {
  if (typeof label !== 'string' || !LABEL_PATTERN.test(label)) {
    throw new KeyfileError('bad-input', 'keyfile label must be 1..128 characters of [A-Za-z0-9._:/-]');
  }
  return label;
}

function deriveKey(passphrase: string, salt: Uint8Array, params: ScryptParams): Promise<Uint8Array> {
  const opts: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 128 * params.N * params.r + 2 * 1024 * 1024 };
  return new Promise((resolve, reject) => {
    // NFC: the same passphrase typed on another system must give the same key.
    scryptCb(Buffer.from(passphrase.normalize('NFC'), 'utf8'), salt, 32, opts, (err, key) => {
      if (err) reject(new AegisError(ErrorCode.InvalidArgument, 'scrypt failed'));
      else resolve(new Uint8Array(key));
    });
  });
}

function headerAad(kdf: ScryptParams, salt: Uint8Array, label: string): Uint8Array {
  return lengthPrefixed(KEYFILE_FORMAT, u32be(KEYFILE_VERSION), 'scrypt', u32be(kdf.N), u32be(kdf.r), u32be(kdf.p), salt, label);
}

function encodeSecrets(secrets: Record<string, Uint8Array>): Uint8Array {
  if (secrets === null || typeof secrets !== 'object') throw new KeyfileError('bad-input', 'secrets must be a record of byte strings');
  const names = Object.keys(secrets).sort();
  if (names.length === 0 || names.length > MAX_SECRETS) throw new KeyfileError('bad-input', `a keyfile holds 1..${MAX_SECRETS} secrets`);
  const items: (string | Uint8Array)[] = [];
  for (const name of names) {
    const value = secrets[name];
    if (!NAME_PATTERN.test(name)) throw new KeyfileError('bad-input', 'secret names must be 1..64 characters of [A-Za-z0-9._-]');
    if (!(value instanceof Uint8Array) || value.length > MAX_SECRET_BYTES) {
      throw new KeyfileError('bad-input', `secret ${name} must be at most ${MAX_SECRET_BYTES} bytes`);
    }
    items.push(name, value);
  }
  return lengthPrefixed(...items);
}

/** Parses what `encodeSecrets` wrote; only ever runs on authenticated plaintext. */
function decodeSecrets(pt: Uint8Array): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = Object.create(null) as Record<string, Uint8Array>;
  const view = new DataView(pt.buffer, pt.byteOffset, pt.byteLength);
  let o = 0;
  const take = (): Uint8Array => {
    if (o + 4 > pt.length) throw decryptionFailed();
    const n = view.getUint32(o, false);
    if (o + 4 + n > pt.length) throw decryptionFailed();
    const v = pt.slice(o + 4, o + 4 + n);
    o += 4 + n;
    return v;
  };
  while (o < pt.length) {
    const name = Buffer.from(take()).toString('utf8');
    out[name] = take();
  }
  return out;
}

/** Seals `secrets` under `passphrase`; `label` names what the file is for (bound as AAD). */
export async function sealSecrets(
  passphrase: string,
  label: string,
  secrets: Record<string, Uint8Array>,
  kdf: ScryptParams = DEFAULT_SCRYPT,
): Promise<SealedKeyfile> {
  assertPassphrase(passphrase);
  assertLabel(label);
  assertScryptParams(kdf);
  const plaintext = encodeSecrets(secrets);
  const salt = new Uint8Array(randomBytes(SALT_BYTES));
  const nonce = new Uint8Array(randomBytes(AEAD_NONCE_BYTES));
  const key = await deriveKey(passphrase, salt, kdf);
  try {
    const { ciphertext, tag } = gcmEncrypt(key, nonce, plaintext, headerAad(kdf, salt, label));
    return {
      format: KEYFILE_FORMAT,
      version: KEYFILE_VERSION,
      kdf: { name: 'scrypt', N: kdf.N, r: kdf.r, p: kdf.p, salt: Buffer.from(salt).toString('base64') },
      label,
      nonce: Buffer.from(nonce).toString('base64'),
      ciphertext: Buffer.concat([ciphertext, tag]).toString('base64'),
    };
  } finally {
    key.fill(0);
    plaintext.fill(0);
  }
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;
function b64(v: unknown, what: string): Uint8Array {
  if (typeof v !== 'string' || v.length % 4 !== 0 || !B64.test(v)) throw new KeyfileError('not-sealed', `keyfile field ${what} is not base64`);
  return new Uint8Array(Buffer.from(v, 'base64'));
}

// Field names that hold key material in common formats (JWK d/k, PKCS#8 wrappers, ad-hoc JSON).
const CLEARTEXT_FIELD = /^(d|k|p|q|dp|dq|qi|seed|secret|secrets|key|keys|privatekey|private_key|private|priv|privkey|signingkey|secretkey)$/i;

function hasCleartextKey(v: unknown, depth = 0): boolean {
  if (depth > 8 || v === null) return false;
  if (typeof v === 'string') return /PRIVATE KEY-----/.test(v);
  if (typeof v !== 'object') return false;
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (CLEARTEXT_FIELD.test(k.replace(/[-\s]/g, ''))) return true;
    if (hasCleartextKey(x, depth + 1)) return true;
  }
  return false;
}

const SEALED_KEYS = ['ciphertext', 'format', 'kdf', 'label', 'nonce', 'version'];
const KDF_KEYS = ['N', 'name', 'p', 'r', 'salt'];
const sameKeys = (o: object, keys: string[]): boolean => JSON.stringify(Object.keys(o).sort()) === JSON.stringify(keys);

/**
 * Validates the shape of a sealed keyfile, refusing — with a `KeyfileError` — anything else:
 * a PEM or DER key, a JSON with cleartext key fields, unknown versions, out-of-bounds KDF.
 */
export function parseKeyfile(input: string | Uint8Array | object): SealedKeyfile {
  let obj: unknown = input;
  if (typeof input === 'string' || input instanceof Uint8Array) {
    const text = typeof input === 'string' ? input : Buffer.from(input).toString('utf8');
    const json = text.trimStart().startsWith('{');
    if (!json && /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(text)) {
      throw new KeyfileError('plain-key', 'refusing a plain (unencrypted) private key: keys must be sealed in an aegis-keyfile');
    }
    if (!json && typeof input !== 'string' && input.length > 0 && input[0] === 0x30) {
      throw new KeyfileError('plain-key', 'refusing a DER key file: keys must be sealed in an aegis-keyfile');
    }
    try {
      obj = JSON.parse(text);
    } catch {
      throw new KeyfileError('not-sealed', 'not an aegis-keyfile (not JSON)');
    }
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new KeyfileError('not-sealed', 'not an aegis-keyfile');
  const o = obj as Record<string, unknown>;
  const extra = Object.fromEntries(Object.entries(o).filter(([k]) => !SEALED_KEYS.includes(k)));
  if (hasCleartextKey(extra) || (o.format !== KEYFILE_FORMAT && hasCleartextKey(o))) {
    throw new KeyfileError('cleartext-key-fields', 'refusing a keyfile with cleartext key fields: keys must be sealed in an aegis-keyfile');
  }
  if (o.format !== KEYFILE_FORMAT || !sameKeys(o, SEALED_KEYS)) throw new KeyfileError('not-sealed', 'not an aegis-keyfile');
  if (o.version !== KEYFILE_VERSION) throw new KeyfileError('not-sealed', `unsupported aegis-keyfile version (this build reads version ${KEYFILE_VERSION})`);
  const kdf = o.kdf as Record<string, unknown> | null;
  if (kdf === null || typeof kdf !== 'object' || !sameKeys(kdf, KDF_KEYS) || kdf.name !== 'scrypt') {
    throw new KeyfileError('not-sealed', 'aegis-keyfile kdf must be scrypt { N, r, p, salt }');
  }
  assertScryptParams({ N: kdf.N as number, r: kdf.r as number, p: kdf.p as number });
  if (b64(kdf.salt, 'kdf.salt').length < SALT_BYTES) throw new KeyfileError('not-sealed', `keyfile salt must be at least ${SALT_BYTES} bytes`);
  assertLabel(o.label);
  b64(o.nonce, 'nonce');
  b64(o.ciphertext, 'ciphertext');
  return o as unknown as SealedKeyfile;
}

/**
 * Opens a sealed keyfile. A wrong passphrase, any change to the header or the ciphertext, and
 * (when given) a label other than `expectedLabel` all give the one `decryption failed` error.
 */
export async function openSecrets(
  passphrase: string,
  sealed: SealedKeyfile | string,
  opts: { expectedLabel?: string } = {},
): Promise<Record<string, Uint8Array>> {
  assertPassphrase(passphrase);
  const f = parseKeyfile(sealed);
  const salt = b64(f.kdf.salt, 'kdf.salt');
  const nonce = b64(f.nonce, 'nonce');
  const body = b64(f.ciphertext, 'ciphertext');
  if (opts.expectedLabel !== undefined && opts.expectedLabel !== f.label) throw decryptionFailed();
  if (nonce.length !== AEAD_NONCE_BYTES || body.length < AEAD_TAG_BYTES) throw decryptionFailed();
  const kdf = { N: f.kdf.N, r: f.kdf.r, p: f.kdf.p };
  const key = await deriveKey(passphrase, salt, kdf);
  try {
    const ct = body.subarray(0, body.length - AEAD_TAG_BYTES);
    const tag = body.subarray(body.length - AEAD_TAG_BYTES);
    const pt = gcmDecrypt(key, nonce, ct, tag, headerAad(kdf, salt, f.label));
    try {
      return decodeSecrets(pt);
    } finally {
      pt.fill(0);
    }
  } finally {
    key.fill(0);
  }
}

/** Seals and writes atomically (temp file with mode 0600, fsync, rename). */
export async function writeKeyfile(
  path: string,
  passphrase: string,
  label: string,
  secrets: Record<string, Uint8Array>,
  kdf: ScryptParams = DEFAULT_SCRYPT,
): Promise<void> {
  const sealed = await sealSecrets(passphrase, label, secrets, kdf);
  await writeFileAtomic(path, JSON.stringify(sealed, null, 2) + '\n', 0o600);
}

/**
 * Reads and opens a keyfile. Refuses, before deriving anything: a file others can read or
 * write (mode & 0o077), a symlink or non-regular file, a file over 1 MiB, and anything that is
 * not the sealed format (see `parseKeyfile`).
 */
export async function readKeyfile(path: string, passphrase: string, opts: { expectedLabel?: string } = {}): Promise<Record<string, Uint8Array>> {
  assertPassphrase(passphrase);
  const fh = await openFile(path, fsc.O_RDONLY | fsc.O_NOFOLLOW).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new AegisError(ErrorCode.NotFound, `the keyfile ${path} does not exist`, 'check the path (or the --data-dir it is in)');
    throw e;
  });
  let data: Buffer;
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new KeyfileError('not-sealed', 'the keyfile is not a regular file');
    if ((st.mode & 0o077) !== 0) {
      throw new KeyfileError(
        'loose-permissions',
        `refusing keyfile with mode ${(st.mode & 0o777).toString(8)}: it must not be accessible to group or others (chmod 600)`,
      );
    }
    if (st.size > MAX_FILE_BYTES) throw new KeyfileError('not-sealed', 'the keyfile is larger than 1 MiB');
    data = await fh.readFile();
  } finally {
    await fh.close();
  }
  try {
    return await openSecrets(passphrase, parseKeyfile(new Uint8Array(data)), opts);
  } catch (e) {
    // The AEAD says only that it failed (one failure for every cause); around it, the CLI can say
    // which file did not open and the two things the operator can check, without telling them apart.
    if (e instanceof AegisError && e.code === ErrorCode.DecryptionFailed) {
      throw new AegisError(
        ErrorCode.DecryptionFailed,
        `decryption failed: ${path} does not open: the passphrase is wrong or the file was altered`,
        `check the passphrase (${PASSPHRASE_ENV}, or the one typed when asked); if it is right, restore the file from a backup`,
      );
    }
    throw e;
  }
}

/**
 * The passphrase from AEGIS_PASSPHRASE. Refuses an unset or empty variable and one shorter than
 * MIN_PASSPHRASE_LENGTH characters; the message names the variable, never its value.
 */
export function passphraseFromEnv(env: Record<string, string | undefined> = process.env): string {
  const v = env[PASSPHRASE_ENV];
  if (v === undefined || v.length === 0) {
    throw new KeyfileError('weak-passphrase', `${PASSPHRASE_ENV} is not set or empty: set it to a passphrase of at least ${MIN_PASSPHRASE_LENGTH} characters`);
  }
  if ([...v].length < MIN_PASSPHRASE_LENGTH) {
    throw new KeyfileError('weak-passphrase', `${PASSPHRASE_ENV} is shorter than ${MIN_PASSPHRASE_LENGTH} characters`);
  }
  return v;
}
