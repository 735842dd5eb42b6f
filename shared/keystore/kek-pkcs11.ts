/**
 * The PKCS#11 KEK provider (DESIGN.md §5): every KEK version is an AES-256 key generated inside
 * a PKCS#11 token (an HSM, a smart card, SoftHSM2) that never leaves it. Works with any PKCS#11
 * v2.20+ module through pkcs11js; tested against SoftHSM2.
 *
 * Object layout. A KEK is identified by (token label, name); id = 'pkcs11:<token label>/<name>',
 * so several KEKs can share one token. Per version v (1..2^32-1) of KEK `name`:
 *
 *   key object   CKO_SECRET_KEY, CKK_AES, CKA_VALUE_LEN 32, CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE,
 *                CKA_EXTRACTABLE false (so CKA_VALUE is never readable and the key cannot be
 *                wrapped out), CKA_ENCRYPT/CKA_DECRYPT (its state, below), CKA_WRAP, CKA_UNWRAP,
 *                CKA_SIGN, CKA_VERIFY, CKA_DERIVE all false.
 *                CKA_ID    = 'aegis-kek/<name>/<v>/<created, ISO 8601 UTC to the second>'
 *                            (written once; CKA_START_DATE is not used: pkcs11js 2.1 mishandles dates)
 *                CKA_LABEL = 'aegis-kek/<name>/<v>', or 'aegis-kek/<name>/<v>/primary' for the primary
 *   tombstone    CKO_DATA, CKA_TOKEN, CKA_PRIVATE, CKA_MODIFIABLE false, CKA_APPLICATION 'aegis-kek',
 *                CKA_LABEL = 'aegis-kek/<name>/<v>/destroyed', CKA_VALUE = the version's CKA_ID
 *                date. Written once (data objects are read-only in SoftHSM2), never changed; it
 *                remembers a destroyed version so its number is never reused.
 *
 * States live in the key objects' own attributes, enforced by the token itself:
 *   primary    CKA_ENCRYPT and CKA_DECRYPT true, label ends in '/primary'
 *   enabled    CKA_ENCRYPT and CKA_DECRYPT true
 *   disabled   CKA_ENCRYPT and CKA_DECRYPT false: the token refuses to use the key
 *              (CKR_KEY_FUNCTION_NOT_PERMITTED), whatever this process believes
 *   destroyed  key object gone (C_DestroyObject), tombstone present
 *
 * Wrapped DEK = iv (12, random) | AES-256-GCM ciphertext of the 32-byte DEK (32) | tag (16),
 * 60 bytes, computed by C_Encrypt inside the token with
 * AAD = lengthPrefixed('aegis-pkcs11-wrap-v1', id, u32be(v)): a DEK wrapped under one version or
 * KEK never unwraps as another. Every unwrap failure (length, unknown, disabled or destroyed
 * version, token error, bad tag) is the one `decryption-failed` error of shared/crypto/aead.ts.
 *
 * Crash safety: every transition is one token write or an ordered pair whose half-done state is
 * recognised and repaired (best effort) on the next open or refresh:
 *   create / addVersion   one C_GenerateKey (v1 is generated already labelled primary). If two
 *                         processes generate the same number at once, each re-scans afterwards and
 *                         withdraws its own key when it sees another, then retries the next number.
 *   setPrimary(v)         marks v, then unmarks the old primary. Two marked → the highest enabled
 *                         one wins and the others are unmarked.
 *   disable / enable      one C_SetAttributeValue of CKA_ENCRYPT and CKA_DECRYPT together; a key
 *                         with only one of them true counts as disabled and is repaired to both false.
 *   destroy(v)            writes the tombstone, then destroys the key; a key with a tombstone is
 *                         destroyed and its destruction is finished.
 * No marked primary (only possible through edits made outside aegis) leaves the KEK usable for
 * unwrap; wrapping under the primary is then failed-precondition until setPrimary is called.
 *
 * Sessions: pkcs11js is synchronous; the async interface wraps it, and no method awaits in the
 * middle, so calls on one provider never interleave. One module instance per module path per
 * process (refcounted; C_Finalize when the last provider closes, and only when this process's
 * C_Initialize was the one that succeeded). PKCS#11 logs in the application, not the session, so
 * providers on the same token share one login: a second provider must present the same PIN
 * (compared as an HMAC under a random per-process key; the PIN itself is not kept), and the last
 * one to close logs out. The state is cached after each scan; wrap/unwrap re-scan when they meet a
 * version the cache does not allow, and lifecycle calls always re-scan first.
 *
 * Errors never carry the PIN or key bytes, and no pkcs11js error escapes: a module that cannot be
 * loaded or a missing token is `unavailable`, a refused PIN `unauthenticated`.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as Pkcs11Js from 'pkcs11js';
import { ctEqual, lengthPrefixed, u32be, utf8 } from '../bytes.js';
import { AEAD_KEY_BYTES, AEAD_NONCE_BYTES, AEAD_TAG_BYTES, decryptionFailed } from '../crypto/aead.js';
import { AegisError, ErrorCode } from '../errors.js';
import type { KekVersionInfo, KekVersionState, ManagedKek } from './kek.js';

export const PKCS11_DEFAULT_KEK_NAME = 'aegis';
export const PKCS11_WRAP_LABEL = 'aegis-pkcs11-wrap-v1';
/** iv | ciphertext | tag for a 32-byte DEK. */
export const PKCS11_WRAPPED_BYTES = AEAD_NONCE_BYTES + AEAD_KEY_BYTES + AEAD_TAG_BYTES;
const OBJECT_PREFIX = 'aegis-kek';
const TOMBSTONE_APPLICATION = 'aegis-kek';
/** The names kek-config.ts writes; never '/', the separator of the object labels. */
const NAME = /^[A-Za-z0-9._:-]{1,64}$/;
const ISO_SECOND = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
const VERSION_TEXT = /^[1-9][0-9]{0,9}$/;
const MAX_VERSION = 0xffffffff;
const ADD_ATTEMPTS = 4;

export interface Pkcs11KekOptions {
  /** Path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so). */
  module: string;
  /** Label of the token that holds the KEK. */
  token: string;
  /** The token's user PIN. Used to log in, never stored or put in a message. */
  pin: string;
  /** KEK name inside the token (default 'aegis'): 1..64 of A-Z a-z 0-9 . _ : - */
  name?: string;
}

export interface Pkcs11OpenOptions {
  /** Generate version 1 (primary) when the token holds no version of this KEK yet. */
  create?: boolean;
}

type Api = typeof Pkcs11Js;
type Handle = Buffer;

interface LoadedModule {
  api: Api;
  lib: Pkcs11Js.PKCS11;
  key: string;
  refs: number;
  /** Whether our C_Initialize succeeded (otherwise someone else in the process owns it). */
  ownsInit: boolean;
  /** Per slot (hex): providers logged in through this module and the PIN's HMAC. */
  logins: Map<string, { count: number; pinMac: Buffer }>;
}

/** Module instances of this process, by canonical module path. */
const modules = new Map<string, LoadedModule>();
/** Random per-process key for comparing PINs without keeping them. */
const PIN_MAC_KEY = randomBytes(32);
const pinMac = (slot: string, pin: string): Buffer => createHmac('sha256', PIN_MAC_KEY).update(lengthPrefixed(slot, pin)).digest();

const invalid = (message: string): AegisError => new AegisError(ErrorCode.InvalidArgument, message);
const unavailable = (message: string): AegisError => new AegisError(ErrorCode.Unavailable, message);
const moduleUnavailable = (path: string): AegisError =>
  unavailable(`the PKCS#11 module ${path} could not be loaded; install softhsm2 (or your HSM vendor's module) or pass --pkcs11-module`);

/** The CKR_* name of a pkcs11js error, when it is one (never anything else from its message). */
function ckrName(e: unknown): string | undefined {
  const m = e instanceof Error ? /^(CKR_[A-Z0-9_]+)$/.exec(e.message) : null;
  return m?.[1];
}

function ckrCode(e: unknown): number | undefined {
  if (ckrName(e) === undefined) return undefined;
  const code = (e as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

const tokenFailed = (what: string, e: unknown): AegisError =>
  unavailable(`the PKCS#11 token failed to ${what} (${ckrName(e) ?? 'module error'})`);

function loadApi(): Api {
  return createRequire(import.meta.url)('pkcs11js') as Api;
}

function acquireModule(path: string): LoadedModule {
  let key = path;
  if (path.includes('/')) {
    try {
      key = realpathSync(path);
    } catch {
      throw moduleUnavailable(path);
    }
  }
  const have = modules.get(key);
  if (have !== undefined) {
    have.refs++;
    return have;
  }
  let api: Api;
  let lib: Pkcs11Js.PKCS11;
  try {
    api = loadApi();
    lib = new api.PKCS11();
    lib.load(key);
  } catch {
    throw moduleUnavailable(path);
  }
  let ownsInit = true;
  try {
    lib.C_Initialize();
  } catch (e) {
    if (ckrCode(e) === api.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      ownsInit = false;
    } else {
      try {
        lib.close();
      } catch {
        // nothing more to release
      }
      throw unavailable(`the PKCS#11 module ${path} failed to initialize (${ckrName(e) ?? 'module error'})`);
    }
  }
  const m: LoadedModule = { api, lib, key, refs: 1, ownsInit, logins: new Map() };
  modules.set(key, m);
  return m;
}

function releaseModule(m: LoadedModule): void {
  if (--m.refs > 0) return;
  modules.delete(m.key);
  try {
    if (m.ownsInit) m.lib.C_Finalize();
  } catch {
    // finalizing is best effort
  }
  try {
    m.lib.close();
  } catch {
    // unloading is best effort
  }
}

interface KeyObject {
  handle: Handle;
  created: string;
  primaryMark: boolean;
  encrypt: boolean;
  decrypt: boolean;
}

interface VersionRecord {
  version: number;
  state: KekVersionState;
  createdAt: string;
  /** Live key objects (normally one; two only after a concurrent addVersion crashed). */
  handles: Handle[];
}

interface Scan {
  keys: Map<number, KeyObject[]>;
  tombstones: Map<number, { handles: Handle[]; created: string }>;
}

const bool = (b: Buffer | undefined): boolean => b !== undefined && b.length > 0 && b[0] !== 0;
const text = (b: Buffer | undefined): string => (b === undefined ? '' : b.toString('utf8'));
const isoNow = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

export class Pkcs11Kek implements ManagedKek {
  readonly kind = 'pkcs11' as const;
  readonly id: string;
  readonly name: string;
  readonly token: string;
  readonly module: string;
  #m: LoadedModule | undefined;
  #slot: Handle;
  #slotKey: string;
  #session: Handle;
  #versions = new Map<number, VersionRecord>();
  #primary: number | undefined;
  #closed = false;

  private constructor(opts: { module: string; token: string; name: string }, m: LoadedModule, slot: Handle, session: Handle) {
    this.module = opts.module;
    this.token = opts.token;
    this.name = opts.name;
    this.id = `pkcs11:${opts.token}/${opts.name}`;
    this.#m = m;
    this.#slot = slot;
    this.#slotKey = slot.toString('hex');
    this.#session = session;
  }

  /**
   * Opens KEK `name` in the token labelled `token`. With `create`, generates version 1 (primary)
   * when the token holds no version of it yet (existing versions are opened, never replaced).
   * Errors: `invalid-argument` (options), `unavailable` (module or token missing),
   * `unauthenticated` (PIN refused), `not-found` (no such KEK and no `create`).
   */
  static async open(opts: Pkcs11KekOptions, openOpts: Pkcs11OpenOptions = {}): Promise<Pkcs11Kek> {
    if (opts === null || typeof opts !== 'object') throw invalid('PKCS#11 KEK options must be { module, token, pin, name? }');
    const { module, token, pin } = opts;
    const name = opts.name ?? PKCS11_DEFAULT_KEK_NAME;
    if (typeof module !== 'string' || module.length === 0) throw invalid('the PKCS#11 module path must be a non-empty string');
    if (typeof token !== 'string' || token.length === 0 || utf8(token).length > 32 || token !== token.trim()) {
      throw invalid('the PKCS#11 token label must be 1..32 bytes without leading or trailing blanks');
    }
    if (typeof pin !== 'string' || pin.length === 0) throw invalid('the PKCS#11 PIN must be a non-empty string');
    if (typeof name !== 'string' || !NAME.test(name)) throw invalid('a PKCS#11 KEK name must be 1..64 of A-Z a-z 0-9 . _ : -');

    const m = acquireModule(module);
    let session: Handle | undefined;
    let kek: Pkcs11Kek | undefined;
    try {
      const slot = findSlot(m, module, token);
      try {
        session = m.lib.C_OpenSession(slot, m.api.CKF_SERIAL_SESSION | m.api.CKF_RW_SESSION);
      } catch (e) {
        throw tokenFailed('open a session', e);
      }
      login(m, slot, session, pin, token);
      kek = new Pkcs11Kek({ module, token, name }, m, slot, session);
      kek.#refresh();
      if (kek.#versions.size === 0) {
        if (openOpts.create !== true) {
          throw new AegisError(ErrorCode.NotFound, `the PKCS#11 token "${token}" holds no KEK "${name}"; run init with --kek pkcs11 to create it`);
        }
        kek.#generate(1, true);
        kek.#refresh();
      }
      return kek;
    } catch (e) {
      if (kek !== undefined) kek.close();
      else {
        if (session !== undefined) {
          try {
            m.lib.C_CloseSession(session);
          } catch {
            // closing is best effort
          }
        }
        releaseModule(m);
      }
      throw e instanceof AegisError ? e : unavailable(`the PKCS#11 token "${token}" could not be opened`);
    }
  }

  async primaryVersion(): Promise<number> {
    this.#assertOpen();
    return this.#requirePrimary();
  }

  async wrap(dek: Uint8Array, version?: number): Promise<{ version: number; wrapped: Uint8Array }> {
    this.#assertOpen();
    if (!(dek instanceof Uint8Array) || dek.length !== AEAD_KEY_BYTES) throw new AegisError(ErrorCode.BadKeyLength, `a DEK must be ${AEAD_KEY_BYTES} bytes`);
    const v = version === undefined ? this.#requirePrimary() : assertVersion(version);
    let rec = this.#versions.get(v);
    if (rec === undefined || !usable(rec.state)) {
      this.#refresh();
      rec = this.#versions.get(v);
    }
    if (rec === undefined) throw new AegisError(ErrorCode.NotFound, `no KEK version ${v} in ${this.id}`);
    if (!usable(rec.state)) throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${v} of ${this.id} is ${rec.state}; it does not wrap`);
    const handle = rec.handles[0]!;
    const { api, lib } = this.#mod();
    const iv = randomBytes(AEAD_NONCE_BYTES);
    const input = Buffer.from(dek);
    const out = Buffer.alloc(AEAD_KEY_BYTES + AEAD_TAG_BYTES + 32);
    try {
      const ct = this.#withSession(() => {
        lib.C_EncryptInit(this.#session, this.#gcm(iv, v), handle);
        return lib.C_Encrypt(this.#session, input, out);
      });
      if (ct.length !== AEAD_KEY_BYTES + AEAD_TAG_BYTES) throw unavailable('the PKCS#11 token returned a malformed AES-GCM ciphertext');
      return { version: v, wrapped: new Uint8Array(Buffer.concat([iv, ct])) };
    } catch (e) {
      if (e instanceof AegisError) throw e;
      const code = ckrCode(e);
      if (code === api.CKR_KEY_FUNCTION_NOT_PERMITTED) {
        throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${v} of ${this.id} is disabled in the token; it does not wrap`);
      }
      if (code === api.CKR_KEY_HANDLE_INVALID || code === api.CKR_OBJECT_HANDLE_INVALID) {
        throw new AegisError(ErrorCode.NotFound, `KEK version ${v} of ${this.id} is no longer in the token`);
      }
      throw tokenFailed('wrap a DEK', e);
    } finally {
      input.fill(0);
      out.fill(0);
    }
  }

  async unwrap(wrapped: Uint8Array, version: number): Promise<Uint8Array> {
    this.#assertOpen();
    try {
      if (!(wrapped instanceof Uint8Array) || wrapped.length !== PKCS11_WRAPPED_BYTES) throw decryptionFailed();
      if (!Number.isInteger(version) || version < 1 || version > MAX_VERSION) throw decryptionFailed();
      let rec = this.#versions.get(version);
      if (rec === undefined || !usable(rec.state)) {
        this.#refresh();
        rec = this.#versions.get(version);
      }
      if (rec === undefined || !usable(rec.state)) throw decryptionFailed();
      const { lib } = this.#mod();
      const iv = Buffer.from(wrapped.subarray(0, AEAD_NONCE_BYTES));
      const ct = Buffer.from(wrapped.subarray(AEAD_NONCE_BYTES));
      for (const handle of rec.handles) {
        const out = Buffer.alloc(ct.length);
        try {
          const pt = this.#withSession(() => {
            lib.C_DecryptInit(this.#session, this.#gcm(iv, version), handle);
            return lib.C_Decrypt(this.#session, ct, out);
          });
          if (pt.length === AEAD_KEY_BYTES) return new Uint8Array(pt);
        } catch {
          // try the next key object of this version, if any
        } finally {
          out.fill(0);
        }
      }
      throw decryptionFailed();
    } catch {
      throw decryptionFailed();
    }
  }

  async versions(): Promise<KekVersionInfo[]> {
    this.#assertOpen();
    this.#refresh();
    return [...this.#versions.values()]
      .sort((a, b) => a.version - b.version)
      .map(({ version, state, createdAt }) => ({ version, state, createdAt }));
  }

  async addVersion(): Promise<number> {
    this.#assertOpen();
    for (let attempt = 0; attempt < ADD_ATTEMPTS; attempt++) {
      this.#refresh();
      const next = Math.max(0, ...this.#versions.keys()) + 1;
      if (next > MAX_VERSION) throw new AegisError(ErrorCode.TooLarge, `${this.id} has used every KEK version number`);
      const handle = this.#generate(next, false);
      // Another process may have generated the same number at the same moment: the one that sees
      // a rival withdraws (both may, then both retry); at most one keeps the number.
      const after = this.#scan();
      const rivals = (after.keys.get(next) ?? []).filter((k) => !k.handle.equals(handle));
      if (rivals.length === 0 && !after.tombstones.has(next)) {
        this.#refresh();
        return next;
      }
      this.#destroyHandle(handle);
    }
    throw new AegisError(ErrorCode.Unavailable, `could not add a KEK version to ${this.id}: other processes keep adding versions at the same time`);
  }

  async setPrimary(version: number): Promise<void> {
    this.#assertOpen();
    const v = assertVersion(version);
    const rec = this.#known(v);
    if (rec.state === 'primary') return;
    if (rec.state !== 'enabled') throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${v} of ${this.id} is ${rec.state}; only an enabled version can become primary`);
    const old = this.#primary === undefined ? undefined : this.#versions.get(this.#primary);
    // Mark the new one first: a crash in between leaves two marks, and the highest wins on open.
    for (const h of rec.handles) this.#setLabel(h, v, true);
    if (old !== undefined) for (const h of old.handles) this.#setLabel(h, old.version, false);
    this.#refresh();
  }

  async rotate(): Promise<number> {
    const v = await this.addVersion();
    await this.setPrimary(v);
    return v;
  }

  async disable(version: number): Promise<void> {
    this.#assertOpen();
    const v = assertVersion(version);
    const rec = this.#known(v);
    if (rec.state === 'disabled') return;
    if (rec.state === 'primary') throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${v} is the primary; make another version primary first (aegis keys rotate)`);
    if (rec.state === 'destroyed') throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${v} of ${this.id} is destroyed`);
    for (const h of rec.handles) this.#setUsage(h, false);
    this.#refresh();
  }

  async enable(version: number): Promise<void> {
    this.#assertOpen();
    const v = assertVersion(version);
    const rec = this.#known(v);
    if (rec.state === 'destroyed') throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${v} of ${this.id} is destroyed; it cannot be enabled`);
    if (rec.state !== 'disabled') return;
    for (const h of rec.handles) this.#setUsage(h, true);
    this.#refresh();
  }

  async destroy(version: number): Promise<void> {
    this.#assertOpen();
    const v = assertVersion(version);
    const rec = this.#known(v);
    if (rec.state === 'destroyed') return;
    if (rec.state === 'primary') throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${v} is the primary; make another version primary first (aegis keys rotate)`);
    // Tombstone first: a crash in between leaves a tombstoned key, which open destroys.
    this.#writeTombstone(v, rec.createdAt);
    for (const h of rec.handles) this.#destroyHandle(h);
    this.#refresh();
  }

  /** Closes the session (logging out when it is the token's last provider in this process). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#versions.clear();
    const m = this.#m;
    this.#m = undefined;
    if (m === undefined) return;
    const login = m.logins.get(this.#slotKey);
    if (login !== undefined && --login.count <= 0) {
      m.logins.delete(this.#slotKey);
      try {
        m.lib.C_Logout(this.#session);
      } catch {
        // already logged out
      }
    }
    try {
      m.lib.C_CloseSession(this.#session);
    } catch {
      // already closed
    }
    releaseModule(m);
  }

  // ---- internals (all synchronous) ----

  #assertOpen(): void {
    if (this.#closed) throw invalid(`the KEK provider ${this.id} is closed`);
  }

  #mod(): LoadedModule {
    if (this.#m === undefined) throw invalid(`the KEK provider ${this.id} is closed`);
    return this.#m;
  }

  #requirePrimary(): number {
    if (this.#primary === undefined) {
      throw new AegisError(ErrorCode.FailedPrecondition, `${this.id} has no primary version; make one primary (aegis keys rotate)`);
    }
    return this.#primary;
  }

  #known(v: number): VersionRecord {
    this.#refresh();
    const rec = this.#versions.get(v);
    if (rec === undefined) throw new AegisError(ErrorCode.NotFound, `no KEK version ${v} in ${this.id}`);
    return rec;
  }

  #gcm(iv: Buffer, version: number): Pkcs11Js.Mechanism {
    const { api } = this.#mod();
    const aad = Buffer.from(lengthPrefixed(PKCS11_WRAP_LABEL, this.id, u32be(version)));
    const parameter: Pkcs11Js.AesGCM = { type: api.CK_PARAMS_AES_GCM, iv, aad, ivBits: AEAD_NONCE_BYTES * 8, tagBits: AEAD_TAG_BYTES * 8 };
    return { mechanism: api.CKM_AES_GCM, parameter };
  }

  /**
   * Runs `fn` on the session; when the session is unusable (closed under us, or an operation
   * left active by a failed call), opens a fresh one — before closing the old, so the token stays
   * logged in — and runs `fn` once more.
   */
  #withSession<T>(fn: () => T): T {
    const { api, lib } = this.#mod();
    try {
      return fn();
    } catch (e) {
      const code = ckrCode(e);
      if (code !== api.CKR_OPERATION_ACTIVE && code !== api.CKR_SESSION_HANDLE_INVALID && code !== api.CKR_SESSION_CLOSED) throw e;
      const fresh = lib.C_OpenSession(this.#slot, api.CKF_SERIAL_SESSION | api.CKF_RW_SESSION);
      try {
        lib.C_CloseSession(this.#session);
      } catch {
        // it was already gone
      }
      this.#session = fresh;
      return fn();
    }
  }

  #findAll(template: Pkcs11Js.Template): Handle[] {
    const { lib } = this.#mod();
    return this.#withSession(() => {
      lib.C_FindObjectsInit(this.#session, template);
      try {
        const out: Handle[] = [];
        for (;;) {
          const batch = lib.C_FindObjects(this.#session, 64);
          if (batch.length === 0) return out;
          out.push(...batch);
        }
      } finally {
        lib.C_FindObjectsFinal(this.#session);
      }
    });
  }

  /** Reads this KEK's key objects and tombstones from the token (no writes). */
  #scan(): Scan {
    const { api, lib } = this.#mod();
    const prefix = `${OBJECT_PREFIX}/${this.name}/`;
    const scan: Scan = { keys: new Map(), tombstones: new Map() };
    try {
      const keyHandles = this.#findAll([
        { type: api.CKA_CLASS, value: api.CKO_SECRET_KEY },
        { type: api.CKA_KEY_TYPE, value: api.CKK_AES },
        { type: api.CKA_TOKEN, value: true },
      ]);
      for (const handle of keyHandles) {
        const [id, label, enc, dec] = lib
          .C_GetAttributeValue(this.#session, handle, [{ type: api.CKA_ID }, { type: api.CKA_LABEL }, { type: api.CKA_ENCRYPT }, { type: api.CKA_DECRYPT }])
          .map((a) => a.value);
        const idText = text(id);
        if (!idText.startsWith(prefix)) continue;
        const parts = idText.slice(prefix.length).split('/');
        if (parts.length !== 2 || !VERSION_TEXT.test(parts[0]!) || !ISO_SECOND.test(parts[1]!)) continue;
        const version = Number(parts[0]);
        if (version > MAX_VERSION) continue;
        const list = scan.keys.get(version) ?? [];
        list.push({ handle, created: parts[1]!, primaryMark: text(label) === `${prefix}${version}/primary`, encrypt: bool(enc), decrypt: bool(dec) });
        scan.keys.set(version, list);
      }
      const dataHandles = this.#findAll([
        { type: api.CKA_CLASS, value: api.CKO_DATA },
        { type: api.CKA_TOKEN, value: true },
        { type: api.CKA_APPLICATION, value: TOMBSTONE_APPLICATION },
      ]);
      for (const handle of dataHandles) {
        const [label, value] = lib.C_GetAttributeValue(this.#session, handle, [{ type: api.CKA_LABEL }, { type: api.CKA_VALUE }]).map((a) => a.value);
        const m = /^(\d+)\/destroyed$/.exec(text(label).startsWith(prefix) ? text(label).slice(prefix.length) : '');
        if (m === null || !VERSION_TEXT.test(m[1]!) || Number(m[1]) > MAX_VERSION) continue;
        const version = Number(m[1]);
        const created = ISO_SECOND.test(text(value)) ? text(value) : '1970-01-01T00:00:00Z';
        const t = scan.tombstones.get(version) ?? { handles: [], created };
        t.handles.push(handle);
        scan.tombstones.set(version, t);
      }
    } catch (e) {
      if (e instanceof AegisError) throw e;
      throw tokenFailed('list the KEK objects', e);
    }
    return scan;
  }

  /** Re-reads the token, finishes half-done transitions (best effort) and rebuilds the cache. */
  #refresh(): void {
    const scan = this.#scan();
    const versions = new Map<number, VersionRecord>();
    for (const [version, t] of scan.tombstones) {
      for (const k of scan.keys.get(version) ?? []) this.#tryRepair(() => this.#destroyHandle(k.handle)); // destroy crashed half-way
      versions.set(version, { version, state: 'destroyed', createdAt: t.created, handles: [] });
    }
    const marked: number[] = [];
    for (const [version, keys] of scan.keys) {
      if (versions.has(version)) continue;
      let enabled = true;
      for (const k of keys) {
        if (k.encrypt && k.decrypt) continue;
        enabled = false;
        if (k.encrypt || k.decrypt) this.#tryRepair(() => this.#setUsage(k.handle, false)); // half-done enable/disable
      }
      if (!enabled) for (const k of keys) if (k.encrypt && k.decrypt) this.#tryRepair(() => this.#setUsage(k.handle, false));
      const created = keys.map((k) => k.created).sort()[0]!;
      versions.set(version, { version, state: enabled ? 'enabled' : 'disabled', createdAt: created, handles: keys.map((k) => k.handle) });
      if (keys.some((k) => k.primaryMark)) marked.push(version);
    }
    // Two marks (setPrimary crashed between its writes): the highest enabled one wins.
    const winners = marked.filter((v) => versions.get(v)!.state === 'enabled');
    const primary = winners.length === 0 ? undefined : Math.max(...winners);
    for (const v of marked) {
      if (v === primary) continue;
      for (const k of scan.keys.get(v)!) if (k.primaryMark) this.#tryRepair(() => this.#setLabel(k.handle, v, false));
    }
    if (primary !== undefined) versions.get(primary)!.state = 'primary';
    this.#versions = versions;
    this.#primary = primary;
  }

  #tryRepair(fn: () => void): void {
    try {
      fn();
    } catch {
      // a read-only token keeps the half-done state; the cache already reads it the safe way
    }
  }

  #generate(version: number, primary: boolean): Handle {
    const { api, lib } = this.#mod();
    const base = `${OBJECT_PREFIX}/${this.name}/${version}`;
    try {
      return this.#withSession(() =>
        lib.C_GenerateKey(this.#session, { mechanism: api.CKM_AES_KEY_GEN }, [
          { type: api.CKA_CLASS, value: api.CKO_SECRET_KEY },
          { type: api.CKA_KEY_TYPE, value: api.CKK_AES },
          { type: api.CKA_VALUE_LEN, value: AEAD_KEY_BYTES },
          { type: api.CKA_TOKEN, value: true },
          { type: api.CKA_PRIVATE, value: true },
          { type: api.CKA_SENSITIVE, value: true },
          { type: api.CKA_EXTRACTABLE, value: false },
          { type: api.CKA_MODIFIABLE, value: true },
          { type: api.CKA_ENCRYPT, value: true },
          { type: api.CKA_DECRYPT, value: true },
          { type: api.CKA_WRAP, value: false },
          { type: api.CKA_UNWRAP, value: false },
          { type: api.CKA_SIGN, value: false },
          { type: api.CKA_VERIFY, value: false },
          { type: api.CKA_DERIVE, value: false },
          { type: api.CKA_ID, value: Buffer.from(`${base}/${isoNow()}`, 'utf8') },
          { type: api.CKA_LABEL, value: primary ? `${base}/primary` : base },
        ]),
      );
    } catch (e) {
      throw tokenFailed('generate an AES-256 key', e);
    }
  }

  #setLabel(handle: Handle, version: number, primary: boolean): void {
    const { api, lib } = this.#mod();
    const base = `${OBJECT_PREFIX}/${this.name}/${version}`;
    try {
      this.#withSession(() => lib.C_SetAttributeValue(this.#session, handle, [{ type: api.CKA_LABEL, value: primary ? `${base}/primary` : base }]));
    } catch (e) {
      throw tokenFailed('relabel a KEK version', e);
    }
  }

  #setUsage(handle: Handle, on: boolean): void {
    const { api, lib } = this.#mod();
    try {
      this.#withSession(() =>
        lib.C_SetAttributeValue(this.#session, handle, [
          { type: api.CKA_ENCRYPT, value: on },
          { type: api.CKA_DECRYPT, value: on },
        ]),
      );
    } catch (e) {
      throw tokenFailed(on ? 'enable a KEK version' : 'disable a KEK version', e);
    }
  }

  #writeTombstone(version: number, created: string): void {
    const { api, lib } = this.#mod();
    try {
      this.#withSession(() =>
        lib.C_CreateObject(this.#session, [
          { type: api.CKA_CLASS, value: api.CKO_DATA },
          { type: api.CKA_TOKEN, value: true },
          { type: api.CKA_PRIVATE, value: true },
          { type: api.CKA_MODIFIABLE, value: false },
          { type: api.CKA_APPLICATION, value: TOMBSTONE_APPLICATION },
          { type: api.CKA_LABEL, value: `${OBJECT_PREFIX}/${this.name}/${version}/destroyed` },
          { type: api.CKA_VALUE, value: Buffer.from(created, 'utf8') },
        ]),
      );
    } catch (e) {
      throw tokenFailed('record a destroyed KEK version', e);
    }
  }

  #destroyHandle(handle: Handle): void {
    const { api, lib } = this.#mod();
    try {
      this.#withSession(() => lib.C_DestroyObject(this.#session, handle));
    } catch (e) {
      const code = ckrCode(e);
      if (code === api.CKR_OBJECT_HANDLE_INVALID) return; // already gone
      throw tokenFailed('destroy a KEK version', e);
    }
  }
}

const usable = (state: KekVersionState): boolean => state === 'primary' || state === 'enabled';

function assertVersion(version: number): number {
  if (!Number.isInteger(version) || version < 1 || version > MAX_VERSION) throw invalid('a KEK version must be an integer in 1..2^32-1');
  return version;
}

function findSlot(m: LoadedModule, module: string, token: string): Handle {
  let matches: Handle[];
  try {
    matches = m.lib.C_GetSlotList(true).filter((slot) => m.lib.C_GetTokenInfo(slot).label.trimEnd() === token);
  } catch (e) {
    throw unavailable(`the PKCS#11 module ${module} could not list its tokens (${ckrName(e) ?? 'module error'})`);
  }
  if (matches.length === 0) {
    throw unavailable(`no PKCS#11 token labelled "${token}" in ${module}; initialize one (e.g. softhsm2-util --init-token --free --label ${token}) or pass --pkcs11-token`);
  }
  if (matches.length > 1) throw unavailable(`${matches.length} PKCS#11 tokens are labelled "${token}" in ${module}; relabel all but one`);
  return matches[0]!;
}

/** Logs the session's application in as the user, or checks the PIN against the login this process already holds. */
function login(m: LoadedModule, slot: Handle, session: Handle, pin: string, token: string): void {
  const slotKey = slot.toString('hex');
  const mac = pinMac(slotKey, pin);
  const refused = (why = ''): AegisError => new AegisError(ErrorCode.Unauthenticated, `the PKCS#11 token "${token}" refused the PIN${why}`);
  try {
    m.lib.C_Login(session, m.api.CKU_USER, pin);
  } catch (e) {
    const code = ckrCode(e);
    const { api } = m;
    if (code === api.CKR_USER_ALREADY_LOGGED_IN) {
      const held = m.logins.get(slotKey);
      if (held !== undefined && !ctEqual(held.pinMac, mac)) throw refused();
    } else if (code === api.CKR_PIN_INCORRECT || code === api.CKR_PIN_INVALID || code === api.CKR_PIN_LEN_RANGE) {
      throw refused();
    } else if (code === api.CKR_PIN_LOCKED) {
      throw refused(' (the PIN is locked; the security officer must reset it)');
    } else if (code === api.CKR_PIN_EXPIRED) {
      throw refused(' (the PIN has expired; set a new one)');
    } else if (code === api.CKR_USER_PIN_NOT_INITIALIZED) {
      throw refused(' (the token has no user PIN yet)');
    } else {
      throw unavailable(`the PKCS#11 token "${token}" could not log in (${ckrName(e) ?? 'module error'})`);
    }
  }
  const held = m.logins.get(slotKey);
  if (held === undefined) m.logins.set(slotKey, { count: 1, pinMac: mac });
  else held.count++;
}
