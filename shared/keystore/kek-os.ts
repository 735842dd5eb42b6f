/**
 * The OS keyring KEK provider (DESIGN.md §5; lifecycle per kek.ts): KEK versions are 32-byte
 * random keys kept in the platform credential store through @napi-rs/keyring — the Secret
 * Service (gnome-keyring, KWallet) on Linux, the Keychain on macOS, the Credential Manager on
 * Windows — under the service 'aegis-kek':
 *
 *   account '<name>/v<N>'  KEK version N, its 32 bytes as base64 (one entry per version)
 *   account '<name>/meta'  JSON { "primary": N, "versions": { "<N>": { "state", "createdAt" } } }
 *                          for every version ever made; no key material
 *
 * The provider id is 'os:<name>'. Wrapped DEK = nonce (12, random) | AES-256-GCM(KEK_v, DEK) (32)
 * | tag (16), 60 bytes, computed in process memory with AAD = lengthPrefixed('aegis-os-kek-wrap-v1',
 * id, u32be(v)): a DEK wrapped under one version (or one KEK) never unwraps as another. Every
 * unwrap failure (unknown, disabled or destroyed version, any bad byte) is the one
 * `decryption-failed` error.
 *
 * Reading the keyring. The binding's `Entry.getPassword` answers `null` for "no such entry" and
 * for "the keyring is locked or unreachable" alike, and on Linux an `Entry` silently falls back
 * to the kernel keyring (keyutils: volatile, lost at reboot) when no Secret Service answers. A
 * KEK must not be stored there, nor a missing entry be mistaken for an absent one. So every read
 * goes through `findCredentials('aegis-kek')`, which talks to the Secret Service itself and fails
 * when it is unreachable or locked; and every write is read back that way before it counts (a
 * write that landed anywhere else is refused as `unavailable`).
 *
 * Crash safety: writes are ordered so that a crash never loses a key. addVersion writes the new
 * version's entry (and reads it back) before the metadata that names it; a crash in between
 * leaves an orphan entry that no metadata names and no DEK uses, and later versions skip its
 * number (an existing entry is never overwritten). destroy records 'destroyed' in the metadata
 * first and then deletes the entry; an entry left behind by a crash in between is deleted by the
 * next open. Metadata with versions but no metadata at all is never created over.
 *
 * Only primary and enabled keys are held in memory (in this object's private fields; `close()`
 * zeroes them). The keyring API is string-based, so each key also passes through a base64 JS
 * string that cannot be zeroed. Lifecycle changes are serialized in this process and refused
 * (`failed-precondition`) when the metadata changed in the keyring since this object last read
 * it (another process); one process at a time should manage a KEK. Keyring calls are
 * synchronous in the binding and block the event loop while they run (they are rare: open and
 * lifecycle changes; wrap and unwrap never touch the keyring).
 *
 * Errors never carry the native error text (it holds Rust backtraces) or key bytes: a keyring
 * that cannot be reached or used is AegisError('unavailable') naming the fallbacks.
 */
import { createHash, randomBytes } from 'node:crypto';
import { basename, resolve } from 'node:path';
import { Entry, findCredentialsAsync } from '@napi-rs/keyring';
import { lengthPrefixed, u32be } from '../bytes.js';
import { AEAD_KEY_BYTES, AEAD_OVERHEAD, decryptionFailed, open as aeadOpen, seal as aeadSeal } from '../crypto/aead.js';
import { AegisError, ErrorCode } from '../errors.js';
import type { KekVersionInfo, KekVersionState, ManagedKek } from './kek.js';

export const OS_KEK_SERVICE = 'aegis-kek';
/** Service name of the short-lived entry `osKeyringAvailable` writes and deletes. */
export const OS_KEK_PROBE_SERVICE = 'aegis-kek-probe';
export const OS_KEK_WRAP_LABEL = 'aegis-os-kek-wrap-v1';
const WRAPPED_BYTES = AEAD_OVERHEAD + AEAD_KEY_BYTES;
/** A KEK name: what follows 'os:' in the id and precedes '/v<N>' and '/meta' in the accounts. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$/;
const VERSION_KEY = /^[1-9][0-9]{0,9}$/;
const MAX_VERSIONS = 4096;
const MAX_META_CHARS = 256 * 1024;

export const OS_KEYRING_UNAVAILABLE =
  'no OS keyring is reachable (the Secret Service is not running); use --kek passphrase (a passphrase-sealed keyfile) or --kek pkcs11';
export const OS_KEYRING_LOCKED =
  'the OS keyring is locked and could not be unlocked (log in to the desktop session to unlock it); use --kek passphrase (a passphrase-sealed keyfile) or --kek pkcs11';

export interface OsKeyringKekOptions {
  /** The KEK name (see `osKekNameFor`): 1..128 of [A-Za-z0-9._:@+-], starting alphanumeric. */
  name: string;
}

export interface OsKeyringKekOpenOptions {
  /** Create version 1 (primary) when the keyring holds no KEK of this name. Default false. */
  create?: boolean;
}

interface VersionRecord {
  state: KekVersionState;
  createdAt: string;
}

interface Meta {
  primary: number;
  records: Map<number, VersionRecord>;
}

/** What the keyring holds for one KEK name, read authoritatively. */
interface Snapshot {
  /** The metadata entry's text, exactly as stored (undefined: none). */
  metaText: string | undefined;
  /** Version entries by version, base64 text as stored. */
  entries: Map<number, string>;
}

const unavailable = (): AegisError => new AegisError(ErrorCode.Unavailable, OS_KEYRING_UNAVAILABLE);
const malformedMeta = (name: string): AegisError =>
  new AegisError(ErrorCode.Malformed, `the OS keyring metadata of KEK "${name}" (service ${OS_KEK_SERVICE}, account ${name}/meta) is not valid`);

/**
 * Maps any error out of the native binding to an AegisError without its text (which holds Rust
 * backtraces and platform detail). Only the category is kept.
 */
function keyringError(e: unknown): AegisError {
  if (e instanceof AegisError) return e;
  const text = e instanceof Error ? e.message : String(e);
  const first = text.split('\n', 1)[0] ?? '';
  if (/\block(ed)?\b|prompt/i.test(first)) return new AegisError(ErrorCode.Unavailable, OS_KEYRING_LOCKED);
  return unavailable();
}

function assertName(name: unknown): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new AegisError(ErrorCode.InvalidArgument, 'an OS keyring KEK name must be 1..128 characters of [A-Za-z0-9._:@+-], starting with a letter or digit');
  }
  return name;
}

/**
 * A KEK name for a data directory: its base name (reduced to the allowed characters) and the
 * first 16 hex digits of SHA-256 of its absolute path, so two data dirs never share a KEK.
 */
export function osKekNameFor(dataDir: string): string {
  const abs = resolve(dataDir);
  const base = basename(abs).replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[^A-Za-z0-9]+/, '').slice(0, 96);
  const hash = createHash('sha256').update(abs, 'utf8').digest('hex').slice(0, 16);
  return base.length > 0 ? `${base}-${hash}` : `aegis-${hash}`;
}

const wrapAad = (id: string, version: number): Uint8Array => lengthPrefixed(OS_KEK_WRAP_LABEL, id, u32be(version));

/** Strict base64 of exactly 32 bytes (the canonical encoding only), or undefined. */
function decodeKey(text: string): Uint8Array | undefined {
  if (typeof text !== 'string' || text.length !== 44) return undefined;
  const buf = Buffer.from(text, 'base64');
  if (buf.length !== AEAD_KEY_BYTES || buf.toString('base64') !== text) {
    buf.fill(0);
    return undefined;
  }
  const key = new Uint8Array(buf);
  buf.fill(0);
  return key;
}

function parseMeta(name: string, text: string): Meta {
  if (text.length > MAX_META_CHARS) throw malformedMeta(name);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw malformedMeta(name);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw malformedMeta(name);
  const o = json as Record<string, unknown>;
  if (Object.keys(o).sort().join(',') !== 'primary,versions') throw malformedMeta(name);
  const { primary, versions } = o;
  if (!Number.isInteger(primary) || typeof versions !== 'object' || versions === null || Array.isArray(versions)) throw malformedMeta(name);
  const records = new Map<number, VersionRecord>();
  for (const [k, r] of Object.entries(versions as Record<string, unknown>)) {
    const v = Number(k);
    if (!VERSION_KEY.test(k) || v > 0xffffffff || typeof r !== 'object' || r === null || Array.isArray(r)) throw malformedMeta(name);
    const rec = r as Record<string, unknown>;
    if (Object.keys(rec).sort().join(',') !== 'createdAt,state') throw malformedMeta(name);
    if (!['primary', 'enabled', 'disabled', 'destroyed'].includes(rec.state as string)) throw malformedMeta(name);
    if (typeof rec.createdAt !== 'string' || Number.isNaN(Date.parse(rec.createdAt))) throw malformedMeta(name);
    records.set(v, { state: rec.state as KekVersionState, createdAt: rec.createdAt });
  }
  if (records.size === 0 || records.size > MAX_VERSIONS) throw malformedMeta(name);
  // Exactly one primary, and it is the one named.
  const primaries = [...records].filter(([, r]) => r.state === 'primary').map(([v]) => v);
  if (primaries.length !== 1 || primaries[0] !== primary) throw malformedMeta(name);
  return { primary: primary as number, records };
}

function encodeMeta(meta: Meta): string {
  const versions: Record<string, VersionRecord> = {};
  for (const [v, r] of [...meta.records].sort(([a], [b]) => a - b)) versions[String(v)] = { state: r.state, createdAt: r.createdAt };
  return JSON.stringify({ primary: meta.primary, versions });
}

/** Everything the keyring holds under `service` (throws AegisError when it cannot be read). */
async function listService(service: string): Promise<{ account: string; password: string }[]> {
  try {
    const found = await findCredentialsAsync(service);
    if (!Array.isArray(found)) throw unavailable();
    return found;
  } catch (e) {
    throw keyringError(e);
  }
}

/** The entries of KEK `name`, read from the platform store itself (see the header). */
async function readSnapshot(name: string): Promise<Snapshot> {
  const snap: Snapshot = { metaText: undefined, entries: new Map() };
  const prefix = `${name}/`;
  for (const { account, password } of await listService(OS_KEK_SERVICE)) {
    if (typeof account !== 'string' || !account.startsWith(prefix)) continue;
    const rest = account.slice(prefix.length);
    if (rest === 'meta') snap.metaText = password;
    else if (/^v[1-9][0-9]{0,9}$/.test(rest) && Number(rest.slice(1)) <= 0xffffffff) snap.entries.set(Number(rest.slice(1)), password);
  }
  return snap;
}

function setEntry(service: string, account: string, value: string): void {
  try {
    new Entry(service, account).setPassword(value);
  } catch (e) {
    throw keyringError(e);
  }
}

/** Best-effort delete: the binding reports failures as `false`, so callers verify by reading. */
function deleteEntry(service: string, account: string): void {
  try {
    new Entry(service, account).deletePassword();
  } catch {
    // verified by the caller
  }
}

/**
 * Writes `value` at `<name>/<suffix>` and reads it back through the platform store; a write
 * that did not land there (e.g. went to the Linux kernel keyring) is `unavailable`.
 */
async function writeVerified(name: string, suffix: string, value: string): Promise<Snapshot> {
  setEntry(OS_KEK_SERVICE, `${name}/${suffix}`, value);
  const snap = await readSnapshot(name);
  const stored = suffix === 'meta' ? snap.metaText : snap.entries.get(Number(suffix.slice(1)));
  if (stored !== value) throw unavailable();
  return snap;
}

/**
 * Whether an OS keyring is reachable and usable: writes a random probe entry under the service
 * 'aegis-kek-probe', reads it back through the platform store and deletes it. Never throws.
 */
export async function osKeyringAvailable(): Promise<boolean> {
  const account = `probe-${randomBytes(8).toString('hex')}`;
  const value = randomBytes(16).toString('base64');
  let wrote = false;
  try {
    await listService(OS_KEK_PROBE_SERVICE); // the store itself answers (no silent fallback)
    setEntry(OS_KEK_PROBE_SERVICE, account, value);
    wrote = true;
    const found = await listService(OS_KEK_PROBE_SERVICE);
    return found.some((c) => c.account === account && c.password === value);
  } catch {
    return false;
  } finally {
    if (wrote) deleteEntry(OS_KEK_PROBE_SERVICE, account);
  }
}

interface KekState {
  meta: Meta;
  /** The text of the metadata entry this state was read from or written as. */
  metaText: string;
  /** Keys of the primary and enabled versions. */
  keys: Map<number, Uint8Array>;
}

export class OsKeyringKek implements ManagedKek {
  readonly kind = 'os' as const;
  readonly id: string;
  readonly name: string;
  #state: KekState;
  #closed = false;
  #lock: Promise<unknown> = Promise.resolve();

  private constructor(name: string, state: KekState) {
    this.name = name;
    this.id = `os:${name}`;
    this.#state = state;
  }

  /**
   * Opens the KEK `name` in the OS keyring; with `create`, creates it (version 1, primary) when
   * the keyring holds none. `unavailable` when no keyring is reachable or it is locked;
   * `not-found` when there is no such KEK and `create` is not set; `failed-precondition` when
   * version entries exist without metadata (never created over); `malformed` when the metadata
   * is invalid or names a key the keyring no longer holds.
   */
  static async open(opts: OsKeyringKekOptions, openOpts: OsKeyringKekOpenOptions = {}): Promise<OsKeyringKek> {
    const name = assertName(opts?.name);
    const snap = await readSnapshot(name);
    if (snap.metaText === undefined) {
      if (snap.entries.size > 0) {
        throw new AegisError(
          ErrorCode.FailedPrecondition,
          `the OS keyring holds KEK versions of "${name}" (service ${OS_KEK_SERVICE}) but no metadata entry ${name}/meta; refusing to create a KEK over them (restore the metadata or remove the entries)`,
        );
      }
      if (openOpts.create !== true) throw new AegisError(ErrorCode.NotFound, `no KEK "${name}" in the OS keyring (service ${OS_KEK_SERVICE})`);
      return OsKeyringKek.#create(name);
    }
    const meta = parseMeta(name, snap.metaText);
    const keys = new Map<number, Uint8Array>();
    try {
      for (const [v, r] of meta.records) {
        if (r.state === 'destroyed') continue;
        const text = snap.entries.get(v);
        const key = text === undefined ? undefined : decodeKey(text);
        if (key === undefined) {
          throw new AegisError(ErrorCode.Malformed, `the OS keyring metadata of KEK "${name}" names version ${v}, but its entry ${name}/v${v} is missing or not a 32-byte key`);
        }
        if (r.state === 'disabled') key.fill(0);
        else keys.set(v, key);
      }
    } catch (e) {
      for (const k of keys.values()) k.fill(0);
      throw e;
    }
    // Finish a destroy interrupted between its metadata write and its delete.
    for (const [v, r] of meta.records) if (r.state === 'destroyed' && snap.entries.has(v)) deleteEntry(OS_KEK_SERVICE, `${name}/v${v}`);
    return new OsKeyringKek(name, { meta, metaText: snap.metaText, keys });
  }

  static async #create(name: string): Promise<OsKeyringKek> {
    const key = new Uint8Array(randomBytes(AEAD_KEY_BYTES));
    try {
      await writeVerified(name, 'v1', Buffer.from(key).toString('base64'));
      const meta: Meta = { primary: 1, records: new Map([[1, { state: 'primary', createdAt: new Date().toISOString() }]]) };
      const metaText = encodeMeta(meta);
      await writeVerified(name, 'meta', metaText);
      return new OsKeyringKek(name, { meta, metaText, keys: new Map([[1, key]]) });
    } catch (e) {
      key.fill(0);
      throw e;
    }
  }

  async primaryVersion(): Promise<number> {
    this.#assertOpen();
    return this.#state.meta.primary;
  }

  async versions(): Promise<KekVersionInfo[]> {
    this.#assertOpen();
    return [...this.#state.meta.records]
      .sort(([a], [b]) => a - b)
      .map(([version, r]) => ({ version, state: r.state, createdAt: r.createdAt }));
  }

  async wrap(dek: Uint8Array, version?: number): Promise<{ version: number; wrapped: Uint8Array }> {
    this.#assertOpen();
    if (!(dek instanceof Uint8Array) || dek.length !== AEAD_KEY_BYTES) {
      throw new AegisError(ErrorCode.BadKeyLength, `a DEK must be ${AEAD_KEY_BYTES} bytes`);
    }
    const v = version ?? this.#state.meta.primary;
    const key = this.#usable(v);
    if (key === undefined) {
      const r = Number.isInteger(v) ? this.#state.meta.records.get(v) : undefined;
      if (r !== undefined) throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${String(v)} of ${this.id} is ${r.state}`);
      throw new AegisError(ErrorCode.NotFound, `no KEK version ${String(v)} in ${this.id}`);
    }
    return { version: v, wrapped: aeadSeal(key, dek, wrapAad(this.id, v)) };
  }

  async unwrap(wrapped: Uint8Array, version: number): Promise<Uint8Array> {
    this.#assertOpen();
    const key = Number.isInteger(version) && version >= 0 && version <= 0xffffffff ? this.#usable(version) : undefined;
    if (key === undefined || !(wrapped instanceof Uint8Array) || wrapped.length !== WRAPPED_BYTES) throw decryptionFailed();
    const dek = aeadOpen(key, wrapped, wrapAad(this.id, version)); // throws the one decryption-failed error
    if (dek.length !== AEAD_KEY_BYTES) {
      dek.fill(0);
      throw decryptionFailed();
    }
    return dek;
  }

  /**
   * Adds version N+1 (N = the highest ever made, or held by an orphan entry), enabled: its entry
   * is written and read back before the metadata names it.
   */
  addVersion(): Promise<number> {
    return this.#change(async (meta, snap, keys) => {
      const next = Math.max(...meta.records.keys(), ...snap.entries.keys()) + 1;
      if (meta.records.size >= MAX_VERSIONS || next > 0xffffffff) {
        throw new AegisError(ErrorCode.TooLarge, `an OS keyring KEK holds at most ${MAX_VERSIONS} versions`);
      }
      const key = new Uint8Array(randomBytes(AEAD_KEY_BYTES));
      try {
        await writeVerified(this.name, `v${next}`, Buffer.from(key).toString('base64'));
      } catch (e) {
        key.fill(0);
        throw e;
      }
      keys.set(next, key);
      meta.records.set(next, { state: 'enabled', createdAt: new Date().toISOString() });
      return next;
    });
  }

  setPrimary(version: number): Promise<void> {
    return this.#change(async (meta) => {
      const r = this.#record(meta, version);
      if (r.state === 'primary') return;
      if (r.state !== 'enabled') throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${version} is ${r.state}; only an enabled version can become primary`);
      const old = meta.records.get(meta.primary)!;
      meta.records.set(meta.primary, { ...old, state: 'enabled' });
      meta.records.set(version, { ...r, state: 'primary' });
      meta.primary = version;
    });
  }

  /** addVersion() then setPrimary() on it; returns the new primary version. */
  async rotate(): Promise<number> {
    const v = await this.addVersion();
    await this.setPrimary(v);
    return v;
  }

  /** Keeps the entry but refuses the version for wrap and unwrap; its key leaves this process's memory. */
  disable(version: number): Promise<void> {
    return this.#transition(version, 'disabled', ['enabled']);
  }

  enable(version: number): Promise<void> {
    return this.#transition(version, 'enabled', ['disabled']);
  }

  /** Records 'destroyed' in the metadata, then deletes the version's entry from the keyring. */
  async destroy(version: number): Promise<void> {
    await this.#transition(version, 'destroyed', ['enabled', 'disabled']);
    await this.#lockedRun(async () => {
      const snap = await readSnapshot(this.name);
      if (!snap.entries.has(version)) return;
      deleteEntry(OS_KEK_SERVICE, `${this.name}/v${version}`);
      if ((await readSnapshot(this.name)).entries.has(version)) {
        throw new AegisError(
          ErrorCode.Unavailable,
          `KEK version ${version} of ${this.id} is recorded as destroyed, but the OS keyring did not delete its entry; the next open retries`,
        );
      }
    });
  }

  /** Zeroes the KEKs held in memory; the object is unusable afterwards. */
  close(): void {
    for (const k of this.#state.keys.values()) k.fill(0);
    this.#state.keys.clear();
    this.#closed = true;
  }

  #transition(version: number, to: 'enabled' | 'disabled' | 'destroyed', from: KekVersionState[]): Promise<void> {
    return this.#change(async (meta, snap, keys) => {
      const r = this.#record(meta, version);
      if (version === meta.primary) {
        throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${version} is the primary; make another version primary first (aegis keys rotate)`);
      }
      if (r.state === to) return;
      if (!from.includes(r.state)) throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${version} is ${r.state}; it cannot become ${to}`);
      if (to === 'enabled') {
        const text = snap.entries.get(version);
        const key = text === undefined ? undefined : decodeKey(text);
        if (key === undefined) {
          throw new AegisError(ErrorCode.Malformed, `the entry ${this.name}/v${version} of KEK version ${version} is missing from the OS keyring or not a 32-byte key`);
        }
        keys.set(version, key);
      } else {
        keys.delete(version); // zeroed once the change is committed
      }
      meta.records.set(version, { ...r, state: to });
    });
  }

  #record(meta: Meta, version: number): VersionRecord {
    const r = Number.isInteger(version) ? meta.records.get(version) : undefined;
    if (r === undefined) throw new AegisError(ErrorCode.NotFound, `no KEK version ${String(version)} in ${this.id}`);
    return r;
  }

  /** The key of the primary or an enabled version. */
  #usable(version: number): Uint8Array | undefined {
    const r = this.#state.meta.records.get(version);
    return r?.state === 'primary' || r?.state === 'enabled' ? this.#state.keys.get(version) : undefined;
  }

  #lockedRun<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(async () => {
      this.#assertOpen();
      return fn();
    });
    this.#lock = run.catch(() => undefined);
    return run;
  }

  /**
   * Re-reads the keyring (refusing if the metadata changed under us), applies `fn` to a copy of
   * the state (it may write version entries), writes the metadata if it changed, and only then
   * adopts the copy. Serialized within this process.
   */
  #change<T>(fn: (meta: Meta, snap: Snapshot, keys: Map<number, Uint8Array>) => Promise<T>): Promise<T> {
    return this.#lockedRun(async () => {
      const snap = await readSnapshot(this.name);
      if (snap.metaText !== this.#state.metaText) {
        throw new AegisError(ErrorCode.FailedPrecondition, `the OS keyring metadata of ${this.id} changed since it was read (another process?); open it again`);
      }
      const meta: Meta = { primary: this.#state.meta.primary, records: new Map(this.#state.meta.records) };
      const keys = new Map(this.#state.keys);
      const before = new Set(this.#state.keys.values());
      let result: T;
      let metaText = this.#state.metaText;
      try {
        result = await fn(meta, snap, keys);
        const text = encodeMeta(meta);
        if (text !== metaText) {
          await writeVerified(this.name, 'meta', text);
          metaText = text;
        }
      } catch (e) {
        for (const k of keys.values()) if (!before.has(k)) k.fill(0);
        throw e;
      }
      const kept = new Set(keys.values());
      for (const k of before) if (!kept.has(k)) k.fill(0);
      this.#state = { meta, metaText, keys };
      return result;
    });
  }

  #assertOpen(): void {
    if (this.#closed) throw new AegisError(ErrorCode.InvalidArgument, `the KEK provider ${this.id} is closed`);
  }
}
