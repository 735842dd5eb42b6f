/**
 * Time-based key rotation, so every key is replaced on a schedule and not only after an incident:
 * every key of a data dir has a version and a creation time, and is due for rotation `kekDays`
 * (the KEK) or `signingDays` (the coordinator's token key, the CA-issued keys: the operator
 * credential and the client identity key) after it was created.
 *
 * `rotateDueKeys` rotates what is due in a data dir through the same code as `aegis keys rotate`
 * (rotation.ts `rotateKeys`: a new primary KEK version, every DEK re-wrapped, journaled and
 * resumable) and the token key in the vault. The CA-issued keys need the CA (coordinator side,
 * coordinator/service/data-dir.ts) or a call to it (client side, client/agent/connection.ts); this
 * module keeps their dates and says when they are due. `aegis keys rotate --emergency` stays the
 * event-based path.
 *
 *   DATA_DIR/keys.json   public metadata, no secret: the policy last in force (so `aegis keys
 *                        status` shows due dates without flags) and, per key, its version, when it
 *                        was created and where that date came from:
 *                        `recorded` (written when the key was made), `provider` (the KEK
 *                        provider's own record), `ca-certificate` (token key of a dir from before
 *                        key dates: made with the CA at first start, so the CA certificate's
 *                        notBefore), `certificate` (operator credential: its certificate's
 *                        notBefore), `file-time` (identity key: the keyfile's mtime) or `now` (no
 *                        better source: the date the dir was first seen by this release).
 *                        The token key's replaced versions are kept as public keys only, with
 *                        when they retired, until the tokens they signed have expired.
 *
 * Every function takes a `clock` (ms) so tests move time instead of waiting.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { okpPrivateKeyObject, okpPublicKey } from '../crypto/okp.js';
import { AegisError, ErrorCode } from '../errors.js';
import { readJsonFile, writeFileAtomic } from '../fs.js';
import type { ManagedKek } from './kek.js';
import { rotateKeys, type KeyHolder } from './rotation.js';
import { SealedVault } from './vault.js';

export const KEYS_META_FILE = 'keys.json';
export const DAY_MS = 86_400_000;
/** How often a running coordinator or client checks for due keys. */
export const ROTATION_CHECK_MS = 3_600_000;
/** How long a replaced token key still verifies: the longest token lifetime (coordinator/auth/tokens.ts MAX_TOKEN_TTL_MS). */
export const TOKEN_KEY_RETENTION_MS = 15 * 60 * 1000;

export interface RotationPolicy {
  /** Days after which the KEK's primary version is rotated. */
  kekDays: number;
  /** Days after which the token key and the CA-issued keys (operator, client identity) are rotated. */
  signingDays: number;
}
export const DEFAULT_POLICY: RotationPolicy = { kekDays: 90, signingDays: 90 };
const MAX_DAYS = 3650;

export type KeyName = 'kek' | 'token' | 'identity' | 'operator';
export type DateSource = 'recorded' | 'provider' | 'ca-certificate' | 'certificate' | 'file-time' | 'now';

/** What a rotation did, for the log line and the metrics (never key material). */
export interface RotatedKey {
  key: KeyName;
  previousVersion: number;
  version: number;
  reason: 'due';
}

const IsoDate = z.string().refine((s) => Number.isFinite(Date.parse(s)), 'an ISO date');
const KeyMetaSchema = z
  .object({
    version: z.number().int().positive(),
    createdAt: IsoDate,
    dateSource: z.enum(['recorded', 'provider', 'ca-certificate', 'certificate', 'file-time', 'now']),
    /** Token key only: replaced versions still verifying tokens (public keys, base64url). */
    previous: z.array(z.object({ version: z.number().int().positive(), publicKey: z.string().regex(/^[A-Za-z0-9_-]{43}$/), retiredAt: IsoDate }).strict()).optional(),
  })
  .strict();
export type KeyMeta = z.infer<typeof KeyMetaSchema>;

const KeysFileSchema = z
  .object({
    version: z.literal(1),
    policy: z.object({ kekDays: z.number().positive().max(MAX_DAYS), signingDays: z.number().positive().max(MAX_DAYS) }).strict().optional(),
    keys: z.object({ kek: KeyMetaSchema.optional(), token: KeyMetaSchema.optional(), identity: KeyMetaSchema.optional(), operator: KeyMetaSchema.optional() }).strict(),
  })
  .strict();
export type KeysFile = z.infer<typeof KeysFileSchema>;

/** Checks a policy's numbers (positive days, at most ten years; fractions allowed). */
export function checkPolicy(p: Partial<RotationPolicy> = {}): RotationPolicy {
  const out = { ...DEFAULT_POLICY, ...Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) } as RotationPolicy;
  for (const [k, v] of Object.entries(out)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > MAX_DAYS) throw new AegisError(ErrorCode.InvalidArgument, `rotation ${k} must be a number of days in (0, ${MAX_DAYS}]`);
  }
  return out;
}

/** Commander parser for `--rotation-kek-days` / `--rotation-signing-days` (days; fractions allowed). */
export function parseDaysOption(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+(\.\d+)?$/.test(v.trim()) || !Number.isFinite(n) || n <= 0 || n > MAX_DAYS) throw new AegisError(ErrorCode.InvalidArgument, `--${name} must be a number of days in (0, ${MAX_DAYS}]`);
    return n;
  };
}

export async function readKeysFile(dir: string): Promise<KeysFile> {
  const path = join(dir, KEYS_META_FILE);
  return (await readJsonFile(path, KeysFileSchema, path, 'not a key metadata file')) ?? { version: 1, keys: {} };
}

export const writeKeysFile = (dir: string, f: KeysFile): Promise<void> => writeFileAtomic(join(dir, KEYS_META_FILE), `${JSON.stringify(f, null, 1)}\n`, 0o644);

/** Records `meta` for `key` (read-modify-write of keys.json). */
export async function recordKey(dir: string, key: KeyName, meta: KeyMeta): Promise<void> {
  const f = await readKeysFile(dir);
  f.keys[key] = meta;
  await writeKeysFile(dir, f);
}

/** The policy recorded in DIR (by the last `coordinator start`/`client run`), else the default. */
export async function recordedPolicy(dir: string): Promise<RotationPolicy> {
  return checkPolicy((await readKeysFile(dir)).policy);
}

/** Records the policy in force, so `aegis keys status` shows the same due dates without flags. */
export async function recordPolicy(dir: string, policy: RotationPolicy): Promise<void> {
  const f = await readKeysFile(dir);
  if (f.policy?.kekDays === policy.kekDays && f.policy.signingDays === policy.signingDays) return;
  f.policy = { kekDays: policy.kekDays, signingDays: policy.signingDays };
  await writeKeysFile(dir, f);
}

/** The policy given on the command line (or config file) over the one recorded in DIR, over the default. */
export async function effectivePolicy(dir: string, o: { rotationKekDays?: number; rotationSigningDays?: number }): Promise<RotationPolicy> {
  const recorded = await recordedPolicy(dir);
  return checkPolicy({ kekDays: o.rotationKekDays ?? recorded.kekDays, signingDays: o.rotationSigningDays ?? recorded.signingDays });
}

/** When a key created at `createdAt` is due under a period of `days`. */
export function dueAt(createdAt: string | number, days: number): number {
  const t = typeof createdAt === 'number' ? createdAt : Date.parse(createdAt);
  if (!Number.isFinite(t)) throw new AegisError(ErrorCode.InvalidArgument, 'a key creation date is not a date');
  return t + days * DAY_MS;
}

export const isDue = (createdAt: string | number, days: number, now: number): boolean => now >= dueAt(createdAt, days);

/**
 * When a short-lived certificate the process renews itself (the coordinator's built-in operator
 * credential) is renewed: at 2/3 of its lifetime, so a 7-day certificate is replaced with more
 * than two days to spare.
 */
export const certificateRenewalAt = (notBefore: number, notAfter: number): number => notBefore + Math.floor(((notAfter - notBefore) * 2) / 3);

const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * The metadata of `key`; for a key of an older dir without a record, the best date there is
 * (`fallback`), recorded now so it stays the same from then on.
 */
export async function ensureKeyMeta(dir: string, key: KeyName, fallback: () => Promise<{ createdAt: number; dateSource: DateSource }>): Promise<KeyMeta> {
  const f = await readKeysFile(dir);
  const known = f.keys[key];
  if (known) return known;
  const fb = await fallback();
  const meta: KeyMeta = { version: 1, createdAt: iso(fb.createdAt), dateSource: fb.dateSource };
  f.keys[key] = meta;
  await writeKeysFile(dir, f);
  return meta;
}

/** A certificate's notBefore, or the clock when the file is missing or unreadable. */
export async function certificateDate(path: string, clock: () => number): Promise<{ createdAt: number; dateSource: DateSource }> {
  try {
    return { createdAt: Date.parse(new X509Certificate(await readFile(path)).validFrom), dateSource: 'ca-certificate' };
  } catch {
    return { createdAt: clock(), dateSource: 'now' };
  }
}

/** A file's mtime, or the clock when it is missing. */
export async function fileDate(path: string, clock: () => number): Promise<{ createdAt: number; dateSource: DateSource }> {
  try {
    return { createdAt: (await stat(path)).mtimeMs, dateSource: 'file-time' };
  } catch {
    return { createdAt: clock(), dateSource: 'now' };
  }
}

/** The KEK's primary version and when it was made (the later of the provider's record and ours). */
export async function kekAge(dir: string, kek: ManagedKek): Promise<{ version: number; createdAt: string; dateSource: DateSource }> {
  const primary = await kek.primaryVersion();
  const info = (await kek.versions()).find((v) => v.version === primary);
  const recorded = (await readKeysFile(dir)).keys.kek;
  if (recorded && recorded.version === primary && (!info?.createdAt || Date.parse(recorded.createdAt) >= Date.parse(info.createdAt))) {
    return { version: primary, createdAt: recorded.createdAt, dateSource: 'recorded' };
  }
  return { version: primary, createdAt: info?.createdAt || iso(Date.now()), dateSource: info?.createdAt ? 'provider' : 'now' };
}

// ---------------------------------------------------------------------------------------------
// The token-signing key (coordinator dirs: `token-seed` in secrets.vault.json).

export const VAULT_FILE_NAME = 'secrets.vault.json';
const TOKEN_SEED = 'token-seed';

/** The token key's version and the replaced versions still verifying, for the coordinator's issuer. */
export async function tokenKeyState(dir: string, clock: () => number = Date.now): Promise<{ version: number; createdAt: string; previous: { version: number; publicKey: Uint8Array; retiredAt: number }[] }> {
  const meta = await ensureKeyMeta(dir, 'token', () => certificateDate(join(dir, 'ca.pem'), clock));
  return {
    version: meta.version,
    createdAt: meta.createdAt,
    previous: (meta.previous ?? [])
      .map((p) => ({ version: p.version, publicKey: new Uint8Array(Buffer.from(p.publicKey, 'base64url')), retiredAt: Date.parse(p.retiredAt) }))
      .filter((p) => p.retiredAt + TOKEN_KEY_RETENTION_MS > clock()),
  };
}

const ed25519Public = (seed: Uint8Array): Uint8Array => okpPublicKey(okpPrivateKeyObject('Ed25519', seed));

/**
 * Replaces the vault's token key with a fresh one (version + 1). The replaced key's public half
 * stays in keys.json until its tokens have expired; its seed is gone. Returns the new seed (the
 * caller hands it to the running issuer and zeroes it) and versions.
 */
export async function rotateTokenKey(dir: string, kek: ManagedKek, clock: () => number, opts: { retainOld?: boolean } = {}): Promise<{ seed: Uint8Array; previousVersion: number; version: number }> {
  const vault = await SealedVault.open(join(dir, VAULT_FILE_NAME));
  const state = await tokenKeyState(dir, clock);
  const old = await vault.get(kek, TOKEN_SEED);
  const oldPublic = ed25519Public(old);
  old.fill(0);
  const seed = new Uint8Array(randomBytes(32));
  const now = clock();
  const version = state.version + 1;
  // The public key goes on record first: a crash after the vault write still lets the old
  // key's tokens verify (and a crash before leaves the old key in place, still current).
  const f = await readKeysFile(dir);
  // retainOld: false (a leak rotation): the replaced keys may be known to someone else, so none
  // of them verifies anything from now on; tokens they signed are refused and fetched again.
  const previous =
    opts.retainOld === false
      ? []
      : [
          { version: state.version, publicKey: Buffer.from(oldPublic).toString('base64url'), retiredAt: iso(now) },
          ...state.previous.map((p) => ({ version: p.version, publicKey: Buffer.from(p.publicKey).toString('base64url'), retiredAt: iso(p.retiredAt) })),
        ];
  f.keys.token = { ...(f.keys.token ?? { version: state.version, createdAt: state.createdAt, dateSource: 'now' }), previous };
  await writeKeysFile(dir, f);
  await vault.put(kek, TOKEN_SEED, seed);
  f.keys.token = { version, createdAt: iso(now), dateSource: 'recorded', previous };
  await writeKeysFile(dir, f);
  return { seed, previousVersion: state.version, version };
}

/** Forgets replaced token keys whose tokens have all expired. Returns how many were dropped. */
export async function pruneTokenKeys(dir: string, clock: () => number): Promise<number> {
  const f = await readKeysFile(dir);
  const t = f.keys.token;
  if (!t?.previous?.length) return 0;
  const keep = t.previous.filter((p) => Date.parse(p.retiredAt) + TOKEN_KEY_RETENTION_MS > clock());
  const dropped = t.previous.length - keep.length;
  if (dropped > 0) {
    f.keys.token = { ...t, previous: keep };
    await writeKeysFile(dir, f);
  }
  return dropped;
}

// ---------------------------------------------------------------------------------------------
// One pass over a data dir.

export interface RotateDueOptions {
  dir: string;
  kek: ManagedKek;
  /** Everything sealed under the KEK (the client's store, the coordinator's vault). */
  holders: readonly KeyHolder[];
  policy: RotationPolicy;
  clock?: () => number;
  /** Coordinator dirs: called with a new token seed (the running issuer signs with it from now on; it zeroes it). */
  onTokenKey?: (seed: Uint8Array, version: number) => void;
}

/**
 * Rotates the KEK and (in a coordinator dir) the token key when due, through the same code as
 * `aegis keys rotate`. Returns what it rotated, for the log and the metrics.
 */
export async function rotateDueKeys(o: RotateDueOptions): Promise<RotatedKey[]> {
  const clock = o.clock ?? Date.now;
  const out: RotatedKey[] = [];
  const now = clock();
  const kekNow = await kekAge(o.dir, o.kek);
  if (isDue(kekNow.createdAt, o.policy.kekDays, now)) {
    const r = await rotateKeys(o.dir, o.kek, o.holders);
    // Our own record of when it was made (by the same clock that decided it was due).
    await recordKey(o.dir, 'kek', { version: r.primary, createdAt: iso(now), dateSource: 'recorded' });
    out.push({ key: 'kek', previousVersion: kekNow.version, version: r.primary, reason: 'due' });
  }
  if (existsSync(join(o.dir, VAULT_FILE_NAME)) && (await SealedVault.open(join(o.dir, VAULT_FILE_NAME))).names().includes(TOKEN_SEED)) {
    const t = await tokenKeyState(o.dir, clock);
    if (isDue(t.createdAt, o.policy.signingDays, now)) {
      const r = await rotateTokenKey(o.dir, o.kek, clock);
      try {
        o.onTokenKey?.(r.seed, r.version);
      } finally {
        r.seed.fill(0);
      }
      out.push({ key: 'token', previousVersion: r.previousVersion, version: r.version, reason: 'due' });
    }
    await pruneTokenKeys(o.dir, clock);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Status: every key's version, age and due date.

export interface KeyAgeStatus {
  key: KeyName | 'ca' | 'client-certificate';
  version?: number;
  createdAt: string;
  dateSource: DateSource;
  ageDays: number;
  /** When the policy rotates it next; absent for keys the policy does not rotate (the CA). */
  dueAt?: string;
  due?: boolean;
  /** Certificates: when they expire. */
  expiresAt?: string;
  /** Why it has no due date, or how it is rotated. */
  note?: string;
  /** Token key: replaced versions still verifying tokens. */
  previousVersions?: number[];
}

const days = (ms: number): number => Math.floor((ms / DAY_MS) * 10) / 10;

/** Ages and due dates of every key in DIR (no key is opened but the KEK's versions are listed). */
export async function keyAges(dir: string, kek: ManagedKek, policy: RotationPolicy, clock: () => number = Date.now): Promise<KeyAgeStatus[]> {
  const now = clock();
  const row = (key: KeyAgeStatus['key'], created: string, source: DateSource, period?: number, extra: Partial<KeyAgeStatus> = {}): KeyAgeStatus => ({
    key,
    ...(extra.version !== undefined ? { version: extra.version } : {}),
    createdAt: created,
    dateSource: source,
    ageDays: days(now - Date.parse(created)),
    ...(period !== undefined ? { dueAt: iso(dueAt(created, period)), due: isDue(created, period, now) } : {}),
    ...extra,
  });
  const out: KeyAgeStatus[] = [];
  const k = await kekAge(dir, kek);
  out.push(row('kek', k.createdAt, k.dateSource, policy.kekDays, { version: k.version }));
  const isCoordinator = existsSync(join(dir, VAULT_FILE_NAME));
  if (isCoordinator) {
    const t = await tokenKeyState(dir, clock);
    const meta = (await readKeysFile(dir)).keys.token!;
    out.push(row('token', t.createdAt, meta.dateSource, policy.signingDays, { version: t.version, ...(t.previous.length ? { previousVersions: t.previous.map((p) => p.version) } : {}) }));
    const op = await ensureKeyMeta(dir, 'operator', async () => ({ ...(await certificateDate(join(dir, 'operator.pem'), clock)), dateSource: 'certificate' }));
    const opRow = row('operator', op.createdAt, op.dateSource, policy.signingDays, { version: op.version, ...(await certExpiry(join(dir, 'operator.pem'))), note: 'reissued by the running coordinator (embedded CA) at 2/3 of its lifetime, or when the policy says so' });
    // Due at the earlier of the policy's date and its renewal, well before it expires.
    const renewal = await certRenewal(join(dir, 'operator.pem'));
    if (renewal !== undefined && renewal < Date.parse(opRow.dueAt!)) Object.assign(opRow, { dueAt: iso(renewal), due: now >= renewal });
    out.push(opRow);
    const ca = await certificateDate(join(dir, 'ca.pem'), clock);
    out.push(row('ca', iso(ca.createdAt), 'certificate', undefined, { ...(await certExpiry(join(dir, 'ca.pem'))), note: 'not rotated by this policy (clients pin it); replace it by re-enrolling' }));
  }
  if (existsSync(join(dir, 'identity.keyfile.json'))) {
    const id = await ensureKeyMeta(dir, 'identity', () => fileDate(join(dir, 'identity.keyfile.json'), clock));
    out.push(row('identity', id.createdAt, id.dateSource, policy.signingDays, { version: id.version, note: 'rotated by a running client run: new key, certificate renewed for it over mTLS' }));
    if (existsSync(join(dir, 'client.pem'))) {
      const c = await certificateDate(join(dir, 'client.pem'), clock);
      out.push(row('client-certificate', iso(c.createdAt), 'certificate', undefined, { ...(await certExpiry(join(dir, 'client.pem'))), note: 'renewed by client run before it expires' }));
    }
  }
  return out;
}

async function certRenewal(path: string): Promise<number | undefined> {
  try {
    const c = new X509Certificate(await readFile(path));
    return certificateRenewalAt(Date.parse(c.validFrom), Date.parse(c.validTo));
  } catch {
    return undefined;
  }
}

async function certExpiry(path: string): Promise<{ expiresAt?: string }> {
  try {
    return { expiresAt: iso(Date.parse(new X509Certificate(await readFile(path)).validTo)) };
  } catch {
    return {};
  }
}

/** The public key of an Ed25519 seed, base64url (for records; never the seed). */
export const publicKeyOfSeed = (seed: Uint8Array): string => Buffer.from(ed25519Public(seed)).toString('base64url');

// ---------------------------------------------------------------------------------------------
// Running processes: a check at start and every hour.

/** Where a running process reports rotations and key ages (its metrics, when it has any). */
export interface RotationSink {
  rotated?(r: RotatedKey): void;
  age?(key: KeyName, seconds: number): void;
}

interface InfoLog {
  info(obj: object, msg: string): void;
}

/**
 * One check of a running process: rotates what is due (`rotateDueKeys`, then `extra`, e.g. the
 * operator credential or the client identity key), logs one line per rotation (names and
 * versions, never key material) and reports ages to `sink`.
 */
export async function runKeyCheck(o: RotateDueOptions & { extra?: readonly (() => Promise<RotatedKey | undefined>)[]; log?: InfoLog; sink?: RotationSink }): Promise<RotatedKey[]> {
  const rotated = await rotateDueKeys(o);
  for (const f of o.extra ?? []) {
    const r = await f();
    if (r) rotated.push(r);
  }
  for (const r of rotated) {
    // `keyName`, not `key`: the log redaction (shared/log.ts) blanks any field named `key`.
    o.log?.info({ keyName: r.key, version: r.version, previousVersion: r.previousVersion, reason: r.reason }, 'key rotated');
    o.sink?.rotated?.(r);
  }
  if (o.sink?.age) {
    const now = (o.clock ?? Date.now)();
    for (const a of await keyAges(o.dir, o.kek, o.policy, o.clock)) {
      if (a.key === 'kek' || a.key === 'token' || a.key === 'identity' || a.key === 'operator') o.sink.age(a.key, Math.max(0, (now - Date.parse(a.createdAt)) / 1000));
    }
  }
  return rotated;
}

/** Runs `check` every `intervalMs` (default one hour) on an unref'd timer; `stop` ends it. */
export function scheduleKeyChecks(check: () => Promise<unknown>, intervalMs = ROTATION_CHECK_MS): { stop(): void } {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    void check().finally(() => (running = false));
  }, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
