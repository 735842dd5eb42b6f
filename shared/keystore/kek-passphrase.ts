/**
 * The fallback KEK provider (DESIGN.md §5): KEK versions are 32-byte random keys kept in a sealed
 * keyfile (passphrase-keyfile.ts: scrypt + AES-256-GCM, mode 0600, atomic writes), label
 * 'aegis-kek'. Used where neither a PKCS#11 HSM nor an OS keyring is available.
 *
 * Keyfile secrets (names are the keyfile's, all inside the sealed ciphertext):
 *   v1, v2, …   the KEK versions, 32 bytes each
 *   primary     the primary version, 4 bytes big-endian (not secret, but authenticated with the rest)
 *   kek-id      the provider id, UTF-8 (default 'passphrase:<file name at creation>'); stored so a
 *               moved or renamed file keeps the id every sealed value names
 *
 * Wrapped DEK = nonce (12, random) | AES-256-GCM(KEK_v, DEK) (32) | tag (16), 60 bytes, with
 * AAD = lengthPrefixed('aegis-kek-wrap-v1', u32be(v)): a DEK wrapped under one version never
 * unwraps as another. Every unwrap failure is the one `decryption-failed` error.
 *
 * The KEKs live in this object's memory (ES private fields) and in the sealed file only; the
 * passphrase is kept in memory too, because `rotate` re-seals the file. `close()` zeroes the keys.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { open as openFile, readFile, unlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { lengthPrefixed, u32be, utf8 } from '../bytes.js';
import { AEAD_KEY_BYTES, AEAD_OVERHEAD, decryptionFailed, open as aeadOpen, seal as aeadSeal } from '../crypto/aead.js';
import { AegisError, ErrorCode } from '../errors.js';
import type { KekProvider } from './envelope.js';
import {
  DEFAULT_SCRYPT,
  KeyfileError,
  MIN_PASSPHRASE_LENGTH,
  parseKeyfile,
  readKeyfile,
  writeKeyfile,
  type ScryptParams,
} from './passphrase-keyfile.js';

export const KEK_KEYFILE_LABEL = 'aegis-kek';
const WRAP_LABEL = 'aegis-kek-wrap-v1';
const WRAPPED_BYTES = AEAD_OVERHEAD + AEAD_KEY_BYTES;
/** The keyfile holds at most 64 secrets; two are `primary` and `kek-id`. */
export const MAX_KEK_VERSIONS = 62;
const VERSION_NAME = /^v([1-9][0-9]{0,9})$/;
const MAX_ID_BYTES = 1024;

const malformedKeyfile = (): AegisError => new AegisError(ErrorCode.Malformed, 'the KEK keyfile does not hold a valid KEK set');

const wrapAad = (version: number): Uint8Array => lengthPrefixed(WRAP_LABEL, u32be(version));

function assertStrongPassphrase(passphrase: unknown): string {
  if (typeof passphrase !== 'string' || [...passphrase].length < MIN_PASSPHRASE_LENGTH) {
    throw new KeyfileError('weak-passphrase', `the KEK passphrase must be at least ${MIN_PASSPHRASE_LENGTH} characters`);
  }
  return passphrase;
}

function assertId(id: unknown): string {
  if (typeof id !== 'string' || id.length === 0 || utf8(id).length > MAX_ID_BYTES || Buffer.from(utf8(id)).toString('utf8') !== id || /\p{Cc}/u.test(id)) {
    throw new AegisError(ErrorCode.InvalidArgument, `a KEK id must be 1..${MAX_ID_BYTES} bytes of printable UTF-8`);
  }
  return id;
}

/** The id read back from an (authenticated) keyfile; a bad one means a foreign or corrupt file. */
function storedId(value: Uint8Array): string {
  try {
    return assertId(Buffer.from(value).toString('utf8'));
  } catch {
    throw malformedKeyfile();
  }
}

export interface PassphraseKekOptions {
  /** scrypt cost for the keyfile. create: default N = 2^15; open: default the file's own. */
  kdf?: ScryptParams;
  /** create only: the provider id (default 'passphrase:<basename of path>'). */
  id?: string;
}

export class PassphraseKek implements KekProvider {
  readonly kind = 'passphrase' as const;
  readonly id: string;
  readonly path: string;
  #passphrase: string;
  #kdf: ScryptParams;
  #keys: Map<number, Uint8Array>;
  #primary: number;
  #closed = false;
  /** Serializes rotations in this process (another process rotating the same file is not guarded). */
  #lock: Promise<unknown> = Promise.resolve();

  private constructor(path: string, passphrase: string, kdf: ScryptParams, id: string, keys: Map<number, Uint8Array>, primary: number) {
    this.path = path;
    this.#passphrase = passphrase;
    this.#kdf = kdf;
    this.id = id;
    this.#keys = keys;
    this.#primary = primary;
  }

  /**
   * Creates a keyfile at `path` holding KEK version 1. Refuses an existing file (overwriting it
   * would destroy the KEKs every sealed value depends on) and a passphrase under 12 characters.
   */
  static async create(path: string, passphrase: string, opts: PassphraseKekOptions = {}): Promise<PassphraseKek> {
    assertStrongPassphrase(passphrase);
    const id = assertId(opts.id ?? `passphrase:${basename(path)}`);
    const kdf = { ...(opts.kdf ?? DEFAULT_SCRYPT) };
    // Reserve the name with O_EXCL so two creators cannot both win; the atomic write replaces it.
    const fh = await openFile(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'EEXIST') throw new AegisError(ErrorCode.InvalidArgument, 'a file already exists at the KEK keyfile path; refusing to overwrite it');
      throw e;
    });
    await fh.close();
    const kek = new PassphraseKek(path, passphrase, kdf, id, new Map([[1, new Uint8Array(randomBytes(AEAD_KEY_BYTES))]]), 1);
    try {
      await kek.#persist(kek.#keys, 1);
    } catch (e) {
      kek.close();
      await unlink(path).catch(() => undefined);
      throw e;
    }
    return kek;
  }

  /**
   * Opens an existing keyfile. A wrong passphrase or a tampered file is `decryption-failed`; a
   * loose mode, a plain key or a non-keyfile is a `KeyfileError` (see readKeyfile).
   */
  static async open(path: string, passphrase: string, opts: Pick<PassphraseKekOptions, 'kdf'> = {}): Promise<PassphraseKek> {
    const secrets = await readKeyfile(path, passphrase, { expectedLabel: KEK_KEYFILE_LABEL });
    const keys = new Map<number, Uint8Array>();
    try {
      let primary: number | undefined;
      let id: string | undefined;
      for (const [name, value] of Object.entries(secrets)) {
        const m = VERSION_NAME.exec(name);
        if (name === 'primary' && value.length === 4) primary = new DataView(value.buffer, value.byteOffset, 4).getUint32(0, false);
        else if (name === 'kek-id') id = storedId(value);
        else if (m !== null && Number(m[1]) <= 0xffffffff && value.length === AEAD_KEY_BYTES) keys.set(Number(m[1]), value);
        else throw malformedKeyfile();
      }
      if (primary === undefined || id === undefined || !keys.has(primary)) throw malformedKeyfile();
      // Re-seal on rotate with the file's own cost unless told otherwise (the file was just
      // authenticated; parseKeyfile bounds the parameters again).
      const kdf = opts.kdf ?? (({ N, r, p }) => ({ N, r, p }))(parseKeyfile(new Uint8Array(await readFile(path))).kdf);
      return new PassphraseKek(path, passphrase, kdf, id, keys, primary);
    } catch (e) {
      for (const k of keys.values()) k.fill(0);
      throw e;
    }
  }

  async primaryVersion(): Promise<number> {
    this.#assertOpen();
    return this.#primary;
  }

  /** The versions held, ascending (for rotation tooling: which versions sealed values may name). */
  versions(): number[] {
    this.#assertOpen();
    return [...this.#keys.keys()].sort((a, b) => a - b);
  }

  async wrap(dek: Uint8Array, version?: number): Promise<{ version: number; wrapped: Uint8Array }> {
    this.#assertOpen();
    if (!(dek instanceof Uint8Array) || dek.length !== AEAD_KEY_BYTES) {
      throw new AegisError(ErrorCode.BadKeyLength, `a DEK must be ${AEAD_KEY_BYTES} bytes`);
    }
    const v = version ?? this.#primary;
    const key = this.#keys.get(v);
    if (key === undefined) throw new AegisError(ErrorCode.NotFound, `no KEK version ${String(v)} in ${this.id}`);
    return { version: v, wrapped: aeadSeal(key, dek, wrapAad(v)) };
  }

  async unwrap(wrapped: Uint8Array, version: number): Promise<Uint8Array> {
    this.#assertOpen();
    const key = this.#keys.get(version);
    if (key === undefined || !(wrapped instanceof Uint8Array) || wrapped.length !== WRAPPED_BYTES) throw decryptionFailed();
    const dek = aeadOpen(key, wrapped, wrapAad(version)); // throws the one decryption-failed error
    if (dek.length !== AEAD_KEY_BYTES) {
      dek.fill(0);
      throw decryptionFailed();
    }
    return dek;
  }

  /**
   * Adds KEK version N+1 (N = the highest held), makes it primary and re-seals the file
   * atomically; returns the new version. Old versions stay, so existing values still open until
   * they are re-wrapped (envelope.ts `rewrapField`). The in-memory state changes only once the
   * file is written.
   */
  rotate(): Promise<number> {
    const run = this.#lock.then(async () => {
      this.#assertOpen();
      const next = Math.max(...this.#keys.keys()) + 1;
      if (this.#keys.size >= MAX_KEK_VERSIONS || next > 0xffffffff) {
        throw new AegisError(ErrorCode.TooLarge, `a passphrase KEK keyfile holds at most ${MAX_KEK_VERSIONS} versions`);
      }
      const key = new Uint8Array(randomBytes(AEAD_KEY_BYTES));
      const keys = new Map(this.#keys).set(next, key);
      try {
        await this.#persist(keys, next);
      } catch (e) {
        key.fill(0);
        throw e;
      }
      this.#keys = keys;
      this.#primary = next;
      return next;
    });
    this.#lock = run.catch(() => undefined);
    return run;
  }

  /** Zeroes the KEKs held in memory; the object is unusable afterwards. */
  close(): void {
    for (const k of this.#keys.values()) k.fill(0);
    this.#keys.clear();
    this.#passphrase = '';
    this.#closed = true;
  }

  async #persist(keys: Map<number, Uint8Array>, primary: number): Promise<void> {
    const secrets: Record<string, Uint8Array> = { primary: u32be(primary), 'kek-id': utf8(this.id) };
    for (const [v, k] of keys) secrets[`v${v}`] = k;
    await writeKeyfile(this.path, this.#passphrase, KEK_KEYFILE_LABEL, secrets, this.#kdf);
  }

  #assertOpen(): void {
    if (this.#closed) throw new AegisError(ErrorCode.InvalidArgument, `the KEK provider ${this.id} is closed`);
  }
}
