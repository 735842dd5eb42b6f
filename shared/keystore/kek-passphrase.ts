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
 *   states      JSON { "<version>": { "state": "enabled"|"disabled"|"destroyed", "createdAt": ISO } }
 *               for every version ever made (kek.ts lifecycle); a destroyed version keeps its
 *               record here and loses its `vN` secret. (A file without it, from before the
 *               lifecycle, reads as every held version enabled.)
 *
 * Wrapped DEK = nonce (12, random) | AES-256-GCM(KEK_v, DEK) (32) | tag (16), 60 bytes, with
 * AAD = lengthPrefixed('aegis-kek-wrap-v1', u32be(v)): a DEK wrapped under one version never
 * unwraps as another. Every unwrap failure is the one `decryption-failed` error.
 *
 * The KEKs live in this object's memory (ES private fields) and in the sealed file only; the
 * passphrase is kept in memory too, because lifecycle changes re-seal the file. `close()` zeroes
 * the keys. Every lifecycle change writes the whole file atomically (write to a temp file, fsync,
 * rename), so a crash leaves either the old or the new state, never a mix.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { open as openFile, readFile, stat, unlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { lengthPrefixed, u32be, utf8 } from '../bytes.js';
import { AEAD_KEY_BYTES, AEAD_OVERHEAD, decryptionFailed, open as aeadOpen, seal as aeadSeal } from '../crypto/aead.js';
import { AegisError, ErrorCode } from '../errors.js';
import type { KekVersionInfo, KekVersionState, ManagedKek } from './kek.js';
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
/** The keyfile holds at most 64 secrets; three are `primary`, `kek-id` and `states`. */
export const MAX_KEK_VERSIONS = 61;
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

interface VersionRecord {
  state: Exclude<KekVersionState, 'primary'>;
  createdAt: string;
}

function parseStates(value: Uint8Array): Map<number, VersionRecord> {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(value).toString('utf8'));
  } catch {
    throw malformedKeyfile();
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw malformedKeyfile();
  const out = new Map<number, VersionRecord>();
  for (const [k, r] of Object.entries(json as Record<string, unknown>)) {
    const v = Number(k);
    const rec = r as Partial<VersionRecord> | null;
    if (!/^[1-9][0-9]{0,9}$/.test(k) || v > 0xffffffff || typeof rec !== 'object' || rec === null) throw malformedKeyfile();
    if (!['enabled', 'disabled', 'destroyed'].includes(rec.state as string) || typeof rec.createdAt !== 'string' || Number.isNaN(Date.parse(rec.createdAt))) throw malformedKeyfile();
    out.set(v, { state: rec.state as VersionRecord['state'], createdAt: rec.createdAt });
  }
  return out;
}

interface KekState {
  keys: Map<number, Uint8Array>;
  records: Map<number, VersionRecord>;
  primary: number;
}

export class PassphraseKek implements ManagedKek {
  readonly kind = 'passphrase' as const;
  readonly id: string;
  readonly path: string;
  #passphrase: string;
  #kdf: ScryptParams;
  #state: KekState;
  #closed = false;
  /** Serializes lifecycle changes in this process (another process changing the same file is not guarded). */
  #lock: Promise<unknown> = Promise.resolve();

  private constructor(path: string, passphrase: string, kdf: ScryptParams, id: string, state: KekState) {
    this.path = path;
    this.#passphrase = passphrase;
    this.#kdf = kdf;
    this.id = id;
    this.#state = state;
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
    const state: KekState = {
      keys: new Map([[1, new Uint8Array(randomBytes(AEAD_KEY_BYTES))]]),
      records: new Map([[1, { state: 'enabled', createdAt: new Date().toISOString() }]]),
      primary: 1,
    };
    const kek = new PassphraseKek(path, passphrase, kdf, id, state);
    try {
      await kek.#persist(state);
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
      let records: Map<number, VersionRecord> | undefined;
      for (const [name, value] of Object.entries(secrets)) {
        const m = VERSION_NAME.exec(name);
        if (name === 'primary' && value.length === 4) primary = new DataView(value.buffer, value.byteOffset, 4).getUint32(0, false);
        else if (name === 'kek-id') id = storedId(value);
        else if (name === 'states') records = parseStates(value);
        else if (m !== null && Number(m[1]) <= 0xffffffff && value.length === AEAD_KEY_BYTES) keys.set(Number(m[1]), value);
        else throw malformedKeyfile();
      }
      if (primary === undefined || id === undefined || !keys.has(primary)) throw malformedKeyfile();
      if (records === undefined) {
        const made = (await stat(path)).mtime.toISOString();
        records = new Map([...keys.keys()].map((v) => [v, { state: 'enabled' as const, createdAt: made }]));
      }
      // Every held key has a live record, every live record a key, and the primary is enabled.
      for (const v of keys.keys()) if (records.get(v)?.state === 'destroyed' || !records.has(v)) throw malformedKeyfile();
      for (const [v, r] of records) if (r.state !== 'destroyed' && !keys.has(v)) throw malformedKeyfile();
      if (records.get(primary)?.state !== 'enabled') throw malformedKeyfile();
      // Re-seal with the file's own cost unless told otherwise (the file was just
      // authenticated; parseKeyfile bounds the parameters again).
      const kdf = opts.kdf ?? (({ N, r, p }) => ({ N, r, p }))(parseKeyfile(new Uint8Array(await readFile(path))).kdf);
      return new PassphraseKek(path, passphrase, kdf, id, { keys, records, primary });
    } catch (e) {
      for (const k of keys.values()) k.fill(0);
      throw e;
    }
  }

  async primaryVersion(): Promise<number> {
    this.#assertOpen();
    return this.#state.primary;
  }

  async versions(): Promise<KekVersionInfo[]> {
    this.#assertOpen();
    const { records, primary } = this.#state;
    return [...records.entries()]
      .sort(([a], [b]) => a - b)
      .map(([version, r]) => ({ version, state: version === primary ? 'primary' : r.state, createdAt: r.createdAt }));
  }

  async wrap(dek: Uint8Array, version?: number): Promise<{ version: number; wrapped: Uint8Array }> {
    this.#assertOpen();
    if (!(dek instanceof Uint8Array) || dek.length !== AEAD_KEY_BYTES) {
      throw new AegisError(ErrorCode.BadKeyLength, `a DEK must be ${AEAD_KEY_BYTES} bytes`);
    }
    const v = version ?? this.#state.primary;
    const key = this.#usable(v);
    if (key === undefined) {
      if (this.#state.records.has(v)) throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${String(v)} of ${this.id} is ${this.#state.records.get(v)!.state}`);
      throw new AegisError(ErrorCode.NotFound, `no KEK version ${String(v)} in ${this.id}`);
    }
    return { version: v, wrapped: aeadSeal(key, dek, wrapAad(v)) };
  }

  async unwrap(wrapped: Uint8Array, version: number): Promise<Uint8Array> {
    this.#assertOpen();
    const key = this.#usable(version);
    if (key === undefined || !(wrapped instanceof Uint8Array) || wrapped.length !== WRAPPED_BYTES) throw decryptionFailed();
    const dek = aeadOpen(key, wrapped, wrapAad(version)); // throws the one decryption-failed error
    if (dek.length !== AEAD_KEY_BYTES) {
      dek.fill(0);
      throw decryptionFailed();
    }
    return dek;
  }

  /** Adds version N+1 (N = the highest ever made), enabled but not primary. */
  addVersion(): Promise<number> {
    return this.#change((s) => {
      const next = Math.max(...s.records.keys()) + 1;
      if (s.keys.size >= MAX_KEK_VERSIONS || s.records.size >= 512 || next > 0xffffffff) {
        throw new AegisError(ErrorCode.TooLarge, `a passphrase KEK keyfile holds at most ${MAX_KEK_VERSIONS} live versions; destroy old ones (aegis keys destroy)`);
      }
      s.keys.set(next, new Uint8Array(randomBytes(AEAD_KEY_BYTES)));
      s.records.set(next, { state: 'enabled', createdAt: new Date().toISOString() });
      return next;
    });
  }

  setPrimary(version: number): Promise<void> {
    return this.#change((s) => {
      const r = this.#record(s, version);
      if (r.state !== 'enabled') throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${version} is ${r.state}; only an enabled version can become primary`);
      s.primary = version;
    });
  }

  /**
   * Adds KEK version N+1, makes it primary and re-seals the file atomically (one write); returns
   * the new version. Old versions stay enabled, so existing values still open until they are
   * re-wrapped (envelope.ts `rewrapField`).
   */
  async rotate(): Promise<number> {
    const v = await this.addVersion();
    await this.setPrimary(v);
    return v;
  }

  disable(version: number): Promise<void> {
    return this.#transition(version, 'disabled', ['enabled']);
  }

  enable(version: number): Promise<void> {
    return this.#transition(version, 'enabled', ['disabled']);
  }

  /** Drops the version's key from the file (the record stays, marked destroyed). */
  destroy(version: number): Promise<void> {
    return this.#transition(version, 'destroyed', ['enabled', 'disabled']);
  }

  /**
   * Takes `passphrase` as the one the file is sealed under from now on: called once the file has
   * been re-sealed under it (passphrase-change.ts), so later lifecycle changes (a new version, a
   * destroyed one) are written under the new passphrase, never under the old one.
   */
  adoptPassphrase(passphrase: string): Promise<void> {
    assertStrongPassphrase(passphrase);
    const run = this.#lock.then(() => {
      this.#assertOpen();
      this.#passphrase = passphrase;
    });
    this.#lock = run.catch(() => undefined);
    return run;
  }

  /** Zeroes the KEKs held in memory; the object is unusable afterwards. */
  close(): void {
    for (const k of this.#state.keys.values()) k.fill(0);
    this.#state.keys.clear();
    this.#passphrase = '';
    this.#closed = true;
  }

  #transition(version: number, to: VersionRecord['state'], from: VersionRecord['state'][]): Promise<void> {
    return this.#change((s) => {
      const r = this.#record(s, version);
      if (version === s.primary) throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${version} is the primary; make another version primary first (aegis keys rotate)`);
      if (r.state === to) return;
      if (!from.includes(r.state)) throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${version} is ${r.state}; it cannot become ${to}`);
      s.records.set(version, { ...r, state: to });
      if (to === 'destroyed') {
        s.keys.get(version)?.fill(0);
        s.keys.delete(version);
      }
    });
  }

  #record(s: KekState, version: number): VersionRecord {
    const r = Number.isInteger(version) ? s.records.get(version) : undefined;
    if (r === undefined) throw new AegisError(ErrorCode.NotFound, `no KEK version ${String(version)} in ${this.id}`);
    return r;
  }

  /** The key of an enabled (or primary) version. */
  #usable(version: number): Uint8Array | undefined {
    const r = this.#state.records.get(version);
    return r?.state === 'enabled' ? this.#state.keys.get(version) : undefined;
  }

  /**
   * Applies `fn` to a copy of the state, writes the file, and only then adopts the copy: a failed
   * write leaves memory and file as they were. Serialized within this process.
   */
  #change<T>(fn: (s: KekState) => T): Promise<T> {
    const run = this.#lock.then(async () => {
      this.#assertOpen();
      const next: KekState = { keys: new Map(this.#state.keys), records: new Map(this.#state.records), primary: this.#state.primary };
      const before = new Set(next.keys.values());
      const result = fn(next);
      try {
        await this.#persist(next);
      } catch (e) {
        for (const k of next.keys.values()) if (!before.has(k)) k.fill(0);
        throw e;
      }
      for (const k of before) if (![...next.keys.values()].includes(k)) k.fill(0);
      this.#state = next;
      return result;
    });
    this.#lock = run.catch(() => undefined);
    return run;
  }

  async #persist(s: KekState): Promise<void> {
    const states: Record<string, VersionRecord> = {};
    for (const [v, r] of s.records) states[String(v)] = r;
    const secrets: Record<string, Uint8Array> = { primary: u32be(s.primary), 'kek-id': utf8(this.id), states: utf8(JSON.stringify(states)) };
    for (const [v, k] of s.keys) secrets[`v${v}`] = k;
    await writeKeyfile(this.path, this.#passphrase, KEK_KEYFILE_LABEL, secrets, this.#kdf);
  }

  #assertOpen(): void {
    if (this.#closed) throw new AegisError(ErrorCode.InvalidArgument, `the KEK provider ${this.id} is closed`);
  }
}
