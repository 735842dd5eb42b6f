/**
 * The publisher registry as files in a directory, and the operations that change it.
 *
 *   DIR/root/1.root.json, 2.root.json, …   root envelopes (DSSE, pretty JSON), the full chain
 *   DIR/publishers.json                     the publishers envelope
 *   DIR/keys/root-<i>.key                   one sealed root seed each (label 'aegis-root-key')
 *   DIR/README.txt                          what the operator must do with the keys
 *
 * The root keys are the registry's ultimate authority: after `init` they belong OFFLINE (moved
 * to removable media or a vault, brought back only to sign). Signing uses whichever root keys
 * are in DIR/keys, all opened with one passphrase; a change needs a threshold of them present.
 * Every change verifies the current registry first, so a tampered directory is never re-signed.
 * No locking: one operator changes a registry at a time.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ed25519PublicFromSeed } from '../crypto/ed25519.js';
import { writeFileAtomic } from '../fs.js';
import { AegisError, ErrorCode } from '../errors.js';
import { readKeyfile, writeKeyfile } from '../keystore/passphrase-keyfile.js';
import { keyIdOf, parseEnvelope, type DsseEnvelope } from './dsse.js';
import {
  MAX_ROOT_KEYS,
  parsePublishersPayload,
  signPublishersDoc,
  signRootDoc,
  verifyPublishers,
  verifyRootHistory,
  type PublishersDoc,
  type RegistrySnapshot,
  type RootDoc,
} from './registry.js';

export const ROOT_KEY_LABEL = 'aegis-root-key';
export const DEFAULT_EXPIRES_DAYS = 365;
const MAX_EXPIRES_DAYS = 10 * 366;
const ROOT_FILE = /^([1-9][0-9]{0,8})\.root\.json$/;
const KEY_FILE = /^root-([1-9][0-9]{0,8})\.key$/;
/** DSSE envelopes hold at most 16 signatures. */
const MAX_SIGNATURES = 16;

const README = `This directory is an Aegis publisher registry.

  root/N.root.json   the signed root metadata (root keys and threshold), one file per version
  publishers.json    the signed list of publisher keys
  keys/root-I.key    the root keys, each sealed under the registry passphrase

MOVE THE ROOT KEYS OFFLINE. Whoever holds a threshold of them controls which publishers every
client trusts. Copy keys/ to offline media (ideally each key to a different holder or place),
check the copies, then delete keys/ from this machine. Bring back a threshold of keys only to
sign (aegis registry add-publisher | revoke-publisher | sign | rotate-root), and remove them again
afterwards. Serve root/ and publishers.json (never keys/) from the primary and the backup place:
after every change, aegis registry publish --dir THIS_DIR --to BACKUP_DIR.
The publishers list expires: re-sign it (aegis registry sign) before then, or clients freeze.
`;

/** The current state of a registry directory. */
export interface RegistryDocs {
  root: RootDoc;
  publishers: PublishersDoc;
}

export interface RootKeyFile {
  index: number;
  keyid: string;
  path: string;
}

const rootDir = (dir: string): string => join(dir, 'root');
const keysDir = (dir: string): string => join(dir, 'keys');
export const publishersPath = (dir: string): string => join(dir, 'publishers.json');
export const rootPath = (dir: string, version: number): string => join(rootDir(dir), `${version}.root.json`);
const keyPath = (dir: string, index: number): string => join(keysDir(dir), `root-${index}.key`);
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

function expiryFrom(now: Date, days: number | undefined): string {
  const d = days ?? DEFAULT_EXPIRES_DAYS;
  if (!Number.isFinite(d) || d <= 0 || d > MAX_EXPIRES_DAYS) throw new AegisError(ErrorCode.InvalidArgument, `expiry must be more than 0 and at most ${MAX_EXPIRES_DAYS} days`);
  return new Date(now.getTime() + Math.round(d * 86_400_000)).toISOString();
}

function assertPassphrase(passphrase: unknown): asserts passphrase is string {
  if (typeof passphrase !== 'string' || passphrase.length === 0) throw new AegisError(ErrorCode.InvalidArgument, 'a passphrase is needed to open the root keys');
}

export const writeEnvelope = (path: string, env: DsseEnvelope): Promise<void> => writeFileAtomic(path, `${JSON.stringify(env, null, 2)}\n`, 0o644);

/** Reads the registry's public files (root chain and publishers); `not-found` when there is none. */
export async function readSnapshot(dir: string): Promise<RegistrySnapshot> {
  let names: string[];
  try {
    names = await readdir(rootDir(dir));
  } catch {
    throw new AegisError(ErrorCode.NotFound, `no registry in ${dir} (no root/ directory): create one with aegis registry init`);
  }
  const versions = names
    .map((n) => ROOT_FILE.exec(n)?.[1])
    .filter((v): v is string => v !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
  if (versions.length === 0) throw new AegisError(ErrorCode.NotFound, `no root metadata in ${rootDir(dir)}`);
  versions.forEach((v, i) => {
    if (v !== i + 1) throw new AegisError(ErrorCode.Malformed, `root files must be 1.root.json … ${versions.length}.root.json without gaps (found ${v}.root.json)`);
  });
  const roots = await Promise.all(versions.map(async (v) => parseEnvelope(await readFile(rootPath(dir, v)))));
  let pub: Buffer;
  try {
    pub = await readFile(publishersPath(dir));
  } catch {
    throw new AegisError(ErrorCode.NotFound, `no ${publishersPath(dir)}`);
  }
  return { roots, publishers: parseEnvelope(pub) };
}

/**
 * Loads and verifies the directory's registry — signatures, chain, strict parsing — but not
 * expiry (an expired registry must be re-signable). The publishers document is checked against
 * the root it names, so a registry left half-rotated (new root, publishers not yet re-signed)
 * can still be repaired by signing again.
 */
export async function loadVerified(dir: string): Promise<{ snapshot: RegistrySnapshot; roots: RootDoc[]; root: RootDoc; publishers: PublishersDoc }> {
  const snapshot = await readSnapshot(dir);
  const now = new Date();
  const roots = verifyRootHistory(undefined, snapshot.roots, now, { checkExpiry: false }).map((h) => h.doc);
  const root = roots[roots.length - 1]!;
  const named = parsePublishersPayload(snapshot.publishers).rootVersion;
  const signedUnder = roots[named - 1];
  if (!signedUnder) throw new AegisError(ErrorCode.RegistryMismatch, `publishers name root v${named}, the registry has roots up to v${root.version}`);
  const publishers = verifyPublishers(signedUnder, snapshot.publishers, now, undefined, { checkExpiry: false });
  return { snapshot, roots, root, publishers };
}

/** The registry's state, verified (signatures and chain; expiry is reported, not enforced). */
export async function readRegistry(dir: string): Promise<RegistryDocs> {
  const { root, publishers } = await loadVerified(dir);
  return { root, publishers };
}

/** The names in DIR/keys; none when it is absent (the keys were moved offline). */
async function keyDirNames(dir: string): Promise<string[]> {
  try {
    return await readdir(keysDir(dir));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** Opens every root keyfile in DIR/keys with the one passphrase. */
async function openRootKeys(dir: string, passphrase: string): Promise<Map<string, { seed: Uint8Array; file: RootKeyFile }>> {
  assertPassphrase(passphrase);
  const names = await keyDirNames(dir);
  const out = new Map<string, { seed: Uint8Array; file: RootKeyFile }>();
  for (const name of names) {
    const m = KEY_FILE.exec(name);
    if (!m) continue;
    const path = join(keysDir(dir), name);
    const secrets = await readKeyfile(path, passphrase, { expectedLabel: ROOT_KEY_LABEL });
    const seed = secrets.seed;
    if (!seed || seed.length !== 32) throw new AegisError(ErrorCode.Malformed, `${path} does not hold a 32-byte root seed`);
    const keyid = keyIdOf(ed25519PublicFromSeed(seed));
    out.set(keyid, { seed, file: { index: Number(m[1]), keyid, path } });
  }
  return out;
}

async function nextKeyIndex(dir: string): Promise<number> {
  const names = await keyDirNames(dir);
  return names.reduce((max, n) => Math.max(max, Number(KEY_FILE.exec(n)?.[1] ?? 0)), 0) + 1;
}

/** Seeds of `root`'s keys found in DIR/keys, `threshold` of them, or a clear error. */
function thresholdSeeds(root: RootDoc, keys: Map<string, { seed: Uint8Array }>): Uint8Array[] {
  const have = Object.keys(root.keys).filter((id) => keys.has(id));
  if (have.length < root.threshold) {
    throw new AegisError(
      ErrorCode.NotFound,
      `${have.length} of root v${root.version}'s keys are in keys/, ${root.threshold} needed: bring a threshold of the offline root keys back into keys/`,
    );
  }
  return have.slice(0, root.threshold).map((id) => keys.get(id)!.seed);
}

/** Creates 32-byte root seeds and writes each to its own sealed keyfile. */
async function createRootKeys(dir: string, passphrase: string, count: number, firstIndex: number): Promise<{ seed: Uint8Array; file: RootKeyFile }[]> {
  await mkdir(keysDir(dir), { recursive: true, mode: 0o700 });
  const out: { seed: Uint8Array; file: RootKeyFile }[] = [];
  for (let i = 0; i < count; i++) {
    const seed = new Uint8Array(randomBytes(32));
    const index = firstIndex + i;
    const path = keyPath(dir, index);
    await writeKeyfile(path, passphrase, ROOT_KEY_LABEL, { seed });
    out.push({ seed, file: { index, keyid: keyIdOf(ed25519PublicFromSeed(seed)), path } });
  }
  return out;
}

function assertInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new AegisError(ErrorCode.InvalidArgument, `${name} must be an integer in ${min}..${max}`);
  return v;
}

/**
 * Creates a registry in `dir` (absent or empty): `roots` new root keys in sealed keyfiles,
 * root v1 signed by all of them, an empty publishers v1 signed by the threshold.
 */
export async function initRegistry(
  dir: string,
  opts: { roots: number; threshold: number; passphrase: string; expiresDays?: number },
): Promise<RegistryDocs & { keyFiles: RootKeyFile[] }> {
  const n = assertInt('roots', opts.roots, 1, MAX_ROOT_KEYS);
  const t = assertInt('threshold', opts.threshold, 1, MAX_ROOT_KEYS);
  if (t > n) throw new AegisError(ErrorCode.InvalidArgument, `threshold ${t} is more than the ${n} root key(s)`);
  assertPassphrase(opts.passphrase);
  const now = new Date();
  const expires = expiryFrom(now, opts.expiresDays);
  try {
    const entries = await readdir(dir);
    if (entries.length > 0) throw new AegisError(ErrorCode.AlreadyExists, `${dir} is not empty: a registry is created in a new or empty directory`);
  } catch (e) {
    if (e instanceof AegisError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await mkdir(rootDir(dir), { recursive: true, mode: 0o755 });
  const created = await createRootKeys(dir, opts.passphrase, n, 1);
  const root: RootDoc = {
    type: 'aegis-root',
    version: 1,
    expires,
    keys: Object.fromEntries(created.map((k) => [k.file.keyid, b64(ed25519PublicFromSeed(k.seed))])),
    threshold: t,
  };
  const publishers: PublishersDoc = { type: 'aegis-publishers', version: 1, expires, rootVersion: 1, publishers: {} };
  await writeEnvelope(rootPath(dir, 1), signRootDoc(root, created.map((k) => k.seed)));
  await writeEnvelope(publishersPath(dir), signPublishersDoc(publishers, created.slice(0, t).map((k) => k.seed)));
  await writeFileAtomic(join(dir, 'README.txt'), README, 0o644);
  return { root, publishers, keyFiles: created.map((k) => k.file) };
}

/** Re-signs `next` (version bumped by the caller) under the current root. */
async function writePublishers(dir: string, root: RootDoc, next: PublishersDoc, passphrase: string): Promise<RegistryDocs> {
  const keys = await openRootKeys(dir, passphrase);
  await writeEnvelope(publishersPath(dir), signPublishersDoc(next, thresholdSeeds(root, keys)));
  return { root, publishers: next };
}

/** The next publishers document: version + 1, signed under the latest root, a fresh expiry. */
function bump(root: RootDoc, cur: PublishersDoc, expiresDays: number | undefined, publishers = cur.publishers): PublishersDoc {
  return { type: 'aegis-publishers', version: cur.version + 1, expires: expiryFrom(new Date(), expiresDays), rootVersion: root.version, publishers };
}

/** Lists a publisher key under `name`. A listed or revoked key is refused (`already-exists`). */
export async function addPublisher(dir: string, opts: { publicKey: Uint8Array; name: string; passphrase: string; expiresDays?: number }): Promise<RegistryDocs & { keyid: string }> {
  if (!(opts.publicKey instanceof Uint8Array) || opts.publicKey.length !== 32) throw new AegisError(ErrorCode.BadKeyLength, 'a publisher key is a 32-byte Ed25519 public key');
  const { root, publishers } = await loadVerified(dir);
  const keyid = keyIdOf(opts.publicKey);
  if (Object.hasOwn(publishers.publishers, keyid)) {
    const p = publishers.publishers[keyid]!;
    throw new AegisError(ErrorCode.AlreadyExists, p.revoked ? `publisher key ${keyid} was revoked; a revoked key is never listed again: use a new key` : `publisher key ${keyid} is already listed (as "${p.name}")`);
  }
  const entry = { publicKey: b64(opts.publicKey), name: opts.name };
  const next = bump(root, publishers, opts.expiresDays, { ...publishers.publishers, [keyid]: entry });
  return { ...(await writePublishers(dir, root, next, opts.passphrase)), keyid };
}

/** Marks a publisher revoked (kept in the list so that it stays refused). */
export async function revokePublisher(dir: string, opts: { keyid: string; passphrase: string; expiresDays?: number }): Promise<RegistryDocs> {
  const { root, publishers } = await loadVerified(dir);
  if (!Object.hasOwn(publishers.publishers, opts.keyid)) throw new AegisError(ErrorCode.NotFound, `no publisher with key id ${String(opts.keyid).slice(0, 64)}`);
  const p = publishers.publishers[opts.keyid]!;
  if (p.revoked) throw new AegisError(ErrorCode.AlreadyExists, `publisher ${opts.keyid} is already revoked (since ${p.revokedAt ?? 'unknown'})`);
  const next = bump(root, publishers, opts.expiresDays, { ...publishers.publishers, [opts.keyid]: { ...p, revoked: true, revokedAt: new Date().toISOString() } });
  return writePublishers(dir, root, next, opts.passphrase);
}

/** Re-signs the publishers list unchanged: a bumped version and a new expiry (unfreezes it). */
export async function signPublishers(dir: string, opts: { passphrase: string; expiresDays?: number }): Promise<RegistryDocs> {
  const { root, publishers } = await loadVerified(dir);
  return writePublishers(dir, root, bump(root, publishers, opts.expiresDays), opts.passphrase);
}

/**
 * Picks signing seeds that meet both thresholds with few signatures: keys in both roots first
 * (each counts toward both), then old-only, then new-only keys.
 */
function rotationSeeds(oldRoot: RootDoc, newRoot: RootDoc, keys: Map<string, { seed: Uint8Array }>): Uint8Array[] {
  const inOld = (id: string): boolean => Object.hasOwn(oldRoot.keys, id);
  const inNew = (id: string): boolean => Object.hasOwn(newRoot.keys, id);
  const candidates = [...keys.keys()].filter((id) => inOld(id) || inNew(id));
  const order = [...candidates.filter((id) => inOld(id) && inNew(id)), ...candidates.filter((id) => inOld(id) && !inNew(id)), ...candidates.filter((id) => !inOld(id) && inNew(id))];
  let oldCount = 0;
  let newCount = 0;
  const chosen: string[] = [];
  for (const id of order) {
    const helpsOld = inOld(id) && oldCount < oldRoot.threshold;
    const helpsNew = inNew(id) && newCount < newRoot.threshold;
    if (!helpsOld && !helpsNew) continue;
    chosen.push(id);
    if (inOld(id)) oldCount++;
    if (inNew(id)) newCount++;
  }
  if (oldCount < oldRoot.threshold) {
    throw new AegisError(ErrorCode.NotFound, `${oldCount} of root v${oldRoot.version}'s keys are in keys/, ${oldRoot.threshold} needed to rotate: bring the offline root keys back into keys/`);
  }
  if (newCount < newRoot.threshold) throw new AegisError(ErrorCode.NotFound, `${newCount} of the new root's keys are in keys/, ${newRoot.threshold} needed`);
  if (chosen.length > MAX_SIGNATURES) throw new AegisError(ErrorCode.InvalidArgument, `the rotation needs ${chosen.length} signatures, an envelope holds ${MAX_SIGNATURES}: lower a threshold or keep more keys in common`);
  return chosen.map((id) => keys.get(id)!.seed);
}

/**
 * Rotates the root: root v+1 with `add` new keys, without the `remove`d key ids, with
 * `threshold` (default: unchanged), signed by the old threshold and the new one; then the
 * publishers are re-signed under it. Also the way to renew an expiring root (no changes).
 * Keyfiles of removed keys stay in keys/ (listed in `retiredKeyFiles`): destroy them once the
 * new root is served everywhere.
 */
export async function rotateRoot(
  dir: string,
  opts: { passphrase: string; add?: number; remove?: string[]; threshold?: number; expiresDays?: number },
): Promise<RegistryDocs & { addedKeyFiles: RootKeyFile[]; retiredKeyFiles: RootKeyFile[] }> {
  assertPassphrase(opts.passphrase);
  const add = assertInt('add', opts.add ?? 0, 0, MAX_ROOT_KEYS);
  const { root: oldRoot, publishers } = await loadVerified(dir);
  const remove = new Set(opts.remove ?? []);
  for (const id of remove) {
    if (!Object.hasOwn(oldRoot.keys, id)) throw new AegisError(ErrorCode.NotFound, `key id ${String(id).slice(0, 64)} is not a key of root v${oldRoot.version}`);
  }
  const kept = Object.entries(oldRoot.keys).filter(([id]) => !remove.has(id));
  const total = kept.length + add;
  if (total < 1 || total > MAX_ROOT_KEYS) throw new AegisError(ErrorCode.InvalidArgument, `the new root would have ${total} keys; 1..${MAX_ROOT_KEYS} allowed`);
  const threshold = assertInt('threshold', opts.threshold ?? oldRoot.threshold, 1, MAX_ROOT_KEYS);
  if (threshold > total) throw new AegisError(ErrorCode.InvalidArgument, `threshold ${threshold} is more than the new root's ${total} key(s)`);
  const expires = expiryFrom(new Date(), opts.expiresDays);
  // Check the old threshold is at hand before creating any key.
  const keys = await openRootKeys(dir, opts.passphrase);
  thresholdSeeds(oldRoot, keys);
  const created = await createRootKeys(dir, opts.passphrase, add, await nextKeyIndex(dir));
  for (const k of created) keys.set(k.file.keyid, k);
  const newRoot: RootDoc = {
    type: 'aegis-root',
    version: oldRoot.version + 1,
    expires,
    keys: Object.fromEntries([...kept, ...created.map((k): [string, string] => [k.file.keyid, b64(ed25519PublicFromSeed(k.seed))])]),
    threshold,
  };
  const env = signRootDoc(newRoot, rotationSeeds(oldRoot, newRoot, keys));
  // Verify before writing: the tool never publishes a root clients would refuse.
  verifyRootHistory(oldRoot, [env], new Date());
  await writeEnvelope(rootPath(dir, newRoot.version), env);
  const next = bump(newRoot, publishers, opts.expiresDays);
  await writeEnvelope(publishersPath(dir), signPublishersDoc(next, thresholdSeeds(newRoot, keys)));
  const retiredKeyFiles = [...remove].map((id) => keys.get(id)?.file).filter((f): f is RootKeyFile => f !== undefined);
  return { root: newRoot, publishers: next, addedKeyFiles: created.map((k) => k.file), retiredKeyFiles };
}

/** The keyfiles in DIR/keys (index and path; key ids need the passphrase). */
export async function listKeyFiles(dir: string): Promise<{ index: number; path: string }[]> {
  return (await keyDirNames(dir))
    .map((n) => ({ m: KEY_FILE.exec(n), n }))
    .filter((x): x is { m: RegExpExecArray; n: string } => x.m !== null)
    .map((x) => ({ index: Number(x.m[1]), path: join(keysDir(dir), x.n) }))
    .sort((a, b) => a.index - b.index);
}
