/**
 * The publisher registry (DESIGN.md §3), TUF-like and pure (no I/O).
 *
 * Two signed documents, each a DSSE envelope whose payload is the canonical JSON of the document:
 * - root: the root keys and their threshold. Root N+1 must be signed by a threshold of root N's
 *   keys AND a threshold of its own (TUF rotation), so neither a stolen old key set nor a set of
 *   fresh keys alone can take over the registry. Root 1 is self-signed (trust on first use, or
 *   a root the caller pins).
 * - publishers: the publisher keys (name, revoked), signed by a threshold of the current root's
 *   keys and naming the root version it was signed under.
 *
 * Payloads are parsed strictly: duplicate JSON keys, fields outside the schema and any payload
 * that is not exactly its canonical JSON are `malformed` — so the bytes that were signed have one
 * reading, and equal documents have equal bytes (which is what the primary/backup comparison
 * and the stored root hash rely on).
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { AegisError, ErrorCode } from '../errors.js';
import { keyIdOf, parseEnvelope, signEnvelope, verifyEnvelope, type DsseEnvelope } from './dsse.js';
import { canonicalJson, parseStrictJson } from './strict-json.js';

export const ROOT_PAYLOAD_TYPE = 'application/vnd.aegis.root+json';
export const PUBLISHERS_PAYLOAD_TYPE = 'application/vnd.aegis.publishers+json';
/** At most 16 root keys: a rotation's signatures (old and new thresholds) must fit one envelope. */
export const MAX_ROOT_KEYS = 16;
export const MAX_PUBLISHERS = 4096;
/** Longest root chain taken from a registry (a bound on work for a hostile snapshot). */
export const MAX_ROOT_CHAIN = 1024;

const KEYID = /^[0-9a-f]{64}$/;
const version = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const isoTime = z.iso.datetime();
/** A canonical base64 Ed25519 public key (32 bytes). */
const publicKeyB64 = z
  .string()
  .regex(/^[A-Za-z0-9+/]{43}=$/)
  .refine((s) => Buffer.from(s, 'base64').toString('base64') === s, 'not canonical base64');

export const RootDocSchema = z.strictObject({
  type: z.literal('aegis-root'),
  version,
  expires: isoTime,
  keys: z.record(z.string().regex(KEYID), publicKeyB64),
  threshold: z.number().int().min(1).max(MAX_ROOT_KEYS),
});
export type RootDoc = z.infer<typeof RootDocSchema>;

export const PublisherEntrySchema = z.strictObject({
  publicKey: publicKeyB64,
  /** Who holds the key, for people reading the registry; 1..128 printable characters. */
  name: z.string().min(1).max(128).regex(/^[^\p{Cc}]+$/u),
  revoked: z.boolean().optional(),
  revokedAt: isoTime.optional(),
});
export type PublisherEntry = z.infer<typeof PublisherEntrySchema>;

export const PublishersDocSchema = z.strictObject({
  type: z.literal('aegis-publishers'),
  version,
  expires: isoTime,
  /** The root version this document was signed under: a re-sign is needed after each rotation. */
  rootVersion: version,
  publishers: z.record(z.string().regex(KEYID), PublisherEntrySchema),
});
export type PublishersDoc = z.infer<typeof PublishersDocSchema>;

export interface RegistrySnapshot {
  /** The full root chain, from version 1 to the latest. */
  roots: DsseEnvelope[];
  publishers: DsseEnvelope;
}

/** The versions (and root hash) of one registry that a client accepted. */
export interface RegistryVersions {
  rootVersion: number;
  /** Hex SHA-256 of the accepted latest root's payload bytes. */
  rootSha256: string;
  publishersVersion: number;
}

/**
 * What a client persists between checks: the versions both registries served (the backup's,
 * when it lagged) and, while the primary was ahead of a lagging backup, the primary's own — so
 * that neither registry is ever taken back to something older.
 */
export interface TrustState extends RegistryVersions {
  primary?: RegistryVersions;
}

/** A root of a verified chain, with its hash. */
export interface VerifiedRoot {
  doc: RootDoc;
  /** Hex SHA-256 of the payload bytes (= of the canonical JSON). */
  sha256: string;
}

const malformed = (what: string): never => {
  throw new AegisError(ErrorCode.Malformed, what);
};

const sha256Hex = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

/** Hex SHA-256 of a root document's canonical bytes (the payload it is signed as). */
export function rootSha256(doc: RootDoc): string {
  return sha256Hex(canonicalJson(doc));
}

function decodeStrictPayload(env: DsseEnvelope, what: string): unknown {
  const bytes = Buffer.from(env.payload, 'base64');
  if (bytes.toString('base64') !== env.payload) malformed(`${what}: payload is not canonical base64`);
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes)) malformed(`${what}: payload is not UTF-8`);
  const value = parseStrictJson(text, what);
  // One reading per signed byte string: only the canonical form is taken.
  if (canonicalJson(value) !== text) malformed(`${what}: payload is not canonical JSON`);
  return value;
}

function schemaParse<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    return malformed(`${what}: ${issue ? `${issue.path.join('.') || '(top)'}: ${issue.message}` : 'invalid'}`);
  }
  return r.data;
}

/** Checks what the schema cannot: key ids match their keys, no key twice, threshold reachable. */
function checkRootKeys(doc: RootDoc): void {
  const entries = Object.entries(doc.keys);
  if (entries.length === 0 || entries.length > MAX_ROOT_KEYS) malformed(`root v${doc.version}: 1..${MAX_ROOT_KEYS} keys needed, got ${entries.length}`);
  const seen = new Set<string>();
  for (const [, pk] of entries) {
    // One key under two ids would count twice toward the threshold of anything that trusted
    // ids alone; refuse the document outright.
    if (seen.has(pk)) malformed(`root v${doc.version} lists the same key under two key ids`);
    seen.add(pk);
  }
  for (const [id, pk] of entries) {
    if (keyIdOf(Buffer.from(pk, 'base64')) !== id) malformed(`root v${doc.version}: key id ${id.slice(0, 16)}… is not the SHA-256 of its key`);
  }
  if (doc.threshold > entries.length) malformed(`root v${doc.version}: threshold ${doc.threshold} exceeds its ${entries.length} key(s)`);
}

/** Parses a root envelope's payload (no signature check). */
export function parseRootPayload(env: DsseEnvelope): RootDoc {
  if (env.payloadType !== ROOT_PAYLOAD_TYPE) malformed(`root: payload type ${env.payloadType.slice(0, 80)}`);
  const doc = schemaParse(RootDocSchema, decodeStrictPayload(env, 'root'), 'root');
  checkRootKeys(doc);
  return doc;
}

/** Parses a publishers envelope's payload (no signature check). */
export function parsePublishersPayload(env: DsseEnvelope): PublishersDoc {
  if (env.payloadType !== PUBLISHERS_PAYLOAD_TYPE) malformed(`publishers: payload type ${env.payloadType.slice(0, 80)}`);
  const doc = schemaParse(PublishersDocSchema, decodeStrictPayload(env, 'publishers'), 'publishers');
  const entries = Object.entries(doc.publishers);
  if (entries.length > MAX_PUBLISHERS) malformed(`publishers: more than ${MAX_PUBLISHERS}`);
  for (const [id, p] of entries) {
    if (keyIdOf(Buffer.from(p.publicKey, 'base64')) !== id) malformed(`publishers: key id ${id.slice(0, 16)}… is not the SHA-256 of its key`);
    if (p.revokedAt !== undefined && p.revoked !== true) malformed(`publishers: ${id.slice(0, 16)}… has revokedAt but is not revoked`);
  }
  return doc;
}

/** A trust function for verifyEnvelope over a root's keys. */
function rootKeys(root: RootDoc): (keyid: string) => Uint8Array | undefined {
  return (keyid) => (Object.hasOwn(root.keys, keyid) ? new Uint8Array(Buffer.from(root.keys[keyid]!, 'base64')) : undefined);
}

const isExpired = (expires: string, now: Date): boolean => Date.parse(expires) <= now.getTime();

/** Signs a root document with the given seeds (the caller picks which thresholds they meet). */
export function signRootDoc(doc: RootDoc, seeds: readonly Uint8Array[]): DsseEnvelope {
  const parsed = schemaParse(RootDocSchema, doc, 'root');
  checkRootKeys(parsed);
  return signEnvelope(ROOT_PAYLOAD_TYPE, Buffer.from(canonicalJson(parsed), 'utf8'), seeds);
}

/** Signs a publishers document with the given seeds. */
export function signPublishersDoc(doc: PublishersDoc, seeds: readonly Uint8Array[]): DsseEnvelope {
  const parsed = schemaParse(PublishersDocSchema, doc, 'publishers');
  return signEnvelope(PUBLISHERS_PAYLOAD_TYPE, Buffer.from(canonicalJson(parsed), 'utf8'), seeds);
}

/**
 * Verifies a root chain and returns every root it accepted, oldest first (from `trusted`, or
 * from the chain's first root). `checkExpiry: false` is for the registry's own tools, which
 * must be able to load an expired registry in order to re-sign it; clients always check.
 *
 * - `trusted` undefined: the chain must start at version 1, self-signed by its threshold (TOFU).
 * - `trusted` given: chain entries older than it are skipped, an entry of its version must be
 *   the same document (else `registry-mismatch`: a forked history), a chain ending below it is
 *   `rollback`; each later root needs a threshold of its predecessor's keys and of its own.
 * - Versions go up by exactly 1. Only the final root's expiry counts (as in TUF).
 */
export function verifyRootHistory(trusted: RootDoc | undefined, chain: readonly DsseEnvelope[], now: Date, opts: { checkExpiry?: boolean } = {}): VerifiedRoot[] {
  const checkExpiry = opts.checkExpiry ?? true;
  if (chain.length > MAX_ROOT_CHAIN) malformed(`root chain longer than ${MAX_ROOT_CHAIN}`);
  const docs = chain.map(parseRootPayload);
  for (let i = 1; i < docs.length; i++) {
    if (docs[i]!.version !== docs[i - 1]!.version + 1) malformed(`root chain: version ${docs[i]!.version} follows ${docs[i - 1]!.version}`);
  }
  const out: VerifiedRoot[] = [];
  let prev: RootDoc;
  let start: number;
  if (trusted === undefined) {
    const first = docs[0];
    const env = chain[0];
    if (!first || !env) return malformed('empty root chain');
    if (first.version !== 1) malformed(`root chain starts at version ${first.version}, not 1`);
    verifyEnvelope(env, ROOT_PAYLOAD_TYPE, rootKeys(first), first.threshold);
    out.push({ doc: first, sha256: rootSha256(first) });
    prev = first;
    start = 1;
  } else {
    const anchor = schemaParse(RootDocSchema, trusted, 'trusted root');
    checkRootKeys(anchor);
    const last = docs[docs.length - 1];
    if (last && last.version < anchor.version) {
      throw new AegisError(ErrorCode.Rollback, `the registry's latest root is v${last.version}, older than the trusted v${anchor.version}`);
    }
    const idx = docs.findIndex((d) => d.version === anchor.version);
    if (idx >= 0 && canonicalJson(docs[idx]) !== canonicalJson(anchor)) {
      throw new AegisError(ErrorCode.RegistryMismatch, `the registry's root v${anchor.version} is not the trusted one (a forked root history)`);
    }
    out.push({ doc: anchor, sha256: rootSha256(anchor) });
    if (idx < 0 && docs.length > 0 && docs[0]!.version !== anchor.version + 1) {
      malformed(`root chain starts at v${docs[0]!.version}, the trusted root is v${anchor.version}`);
    }
    prev = anchor;
    start = idx >= 0 ? idx + 1 : 0;
  }
  for (let i = start; i < docs.length; i++) {
    const doc = docs[i]!;
    const env = chain[i]!;
    // Both thresholds: the old keys vouch for the new set, the new set proves it holds its keys.
    verifyEnvelope(env, ROOT_PAYLOAD_TYPE, rootKeys(prev), prev.threshold);
    verifyEnvelope(env, ROOT_PAYLOAD_TYPE, rootKeys(doc), doc.threshold);
    out.push({ doc, sha256: rootSha256(doc) });
    prev = doc;
  }
  if (checkExpiry && isExpired(prev.expires, now)) throw new AegisError(ErrorCode.Expired, `root v${prev.version} expired at ${prev.expires}`);
  return out;
}

/**
 * Verifies a root chain (TUF rotation) and returns the latest root. See verifyRootHistory.
 * Throws `malformed`, `unknown-key` / `bad-signature`, `rollback`, `registry-mismatch`, `expired`.
 */
export function verifyRootChain(trusted: RootDoc | undefined, chain: DsseEnvelope[], now: Date): RootDoc {
  const history = verifyRootHistory(trusted, chain, now);
  return history[history.length - 1]!.doc;
}

/**
 * Verifies the publishers document under `root`: a threshold of its keys, signed under this
 * root version, not older than `seenVersion` (`rollback`), not expired (`expired`: a registry
 * nobody re-signs freezes rather than staying valid forever). A document naming an older root
 * is `rollback` (stale: re-sign after a rotation), a newer one `registry-mismatch`.
 */
export function verifyPublishers(root: RootDoc, env: DsseEnvelope, now: Date, seenVersion?: number, opts: { checkExpiry?: boolean } = {}): PublishersDoc {
  verifyEnvelope(env, PUBLISHERS_PAYLOAD_TYPE, rootKeys(root), root.threshold);
  const doc = parsePublishersPayload(env);
  if (doc.rootVersion < root.version) {
    throw new AegisError(ErrorCode.Rollback, `publishers v${doc.version} were signed under root v${doc.rootVersion}, the current root is v${root.version}: re-sign them`);
  }
  if (doc.rootVersion > root.version) {
    throw new AegisError(ErrorCode.RegistryMismatch, `publishers v${doc.version} name root v${doc.rootVersion}, the registry serves root v${root.version}`);
  }
  if (seenVersion !== undefined && doc.version < seenVersion) {
    throw new AegisError(ErrorCode.Rollback, `publishers v${doc.version} is older than the v${seenVersion} already accepted`);
  }
  if ((opts.checkExpiry ?? true) && isExpired(doc.expires, now)) {
    throw new AegisError(ErrorCode.Expired, `publishers v${doc.version} expired at ${doc.expires} (the registry is frozen until re-signed)`);
  }
  return doc;
}

/** The canonical bytes of a snapshot (what a registry serves and a backup mirrors). */
export function snapshotBytes(s: RegistrySnapshot): Uint8Array {
  return new Uint8Array(Buffer.from(canonicalJson({ roots: s.roots, publishers: s.publishers }), 'utf8'));
}

/** Parses snapshot bytes strictly (`malformed`); signatures are checked by checkRegistries. */
export function parseSnapshot(bytes: Uint8Array | string): RegistrySnapshot {
  const text = typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8');
  const v = parseStrictJson(text, 'registry snapshot');
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return malformed('registry snapshot: not an object');
  const o = v as Record<string, unknown>;
  if (Object.keys(o).sort().join(',') !== 'publishers,roots') malformed('registry snapshot: fields must be roots and publishers');
  if (!Array.isArray(o.roots) || o.roots.length === 0 || o.roots.length > MAX_ROOT_CHAIN) malformed(`registry snapshot: roots must hold 1..${MAX_ROOT_CHAIN} envelopes`);
  const roots = (o.roots as unknown[]).map((r) => parseEnvelope(JSON.stringify(r)));
  return { roots, publishers: parseEnvelope(JSON.stringify(o.publishers)) };
}

/** Verifies one snapshot against the anchors; returns its latest root, hash and publishers. */
function checkOne(s: RegistrySnapshot, state: RegistryVersions | undefined, now: Date, pinnedRoot: RootDoc | undefined, which: string) {
  try {
    const history = verifyRootHistory(pinnedRoot, s.roots, now);
    const latest = history[history.length - 1]!;
    if (state) {
      if (latest.doc.version < state.rootVersion) {
        throw new AegisError(ErrorCode.Rollback, `root v${latest.doc.version} is older than the v${state.rootVersion} already accepted`);
      }
      // The served history must extend the root accepted before, not fork from it.
      const seen = history.find((h) => h.doc.version === state.rootVersion);
      if (seen && seen.sha256 !== state.rootSha256) {
        throw new AegisError(ErrorCode.RegistryMismatch, `root v${state.rootVersion} is not the one accepted before (a forked root history)`);
      }
    }
    const publishers = verifyPublishers(latest.doc, s.publishers, now, state?.publishersVersion);
    return { root: latest.doc, rootSha256: latest.sha256, history, publishers, publishersPayload: s.publishers.payload };
  } catch (e) {
    if (e instanceof AegisError) throw new AegisError(e.code, `${which} registry: ${e.message}`);
    throw e;
  }
}

/** What checkRegistries accepted. */
export interface CheckedRegistries {
  /** The latest root both registries hold (the backup's, when it lags). */
  root: RootDoc;
  /** The publishers jobs are verified against: the backup's (equal to the primary's unless it lags). */
  publishers: PublishersDoc;
  /** Present only while the backup lags: the primary's newer publishers list. */
  primaryPublishers?: PublishersDoc;
  /** The state to persist. */
  state: TrustState;
}

function mismatch(what: string): never {
  throw new AegisError(ErrorCode.RegistryMismatch, what);
}

/**
 * A newer primary publishers list must extend the backup's older one the way the registry tools
 * change it: every publisher the backup lists is still listed, under the same name, and one the
 * backup revoked stays revoked (a revocation is never undone). It may add publishers and revoke
 * more.
 */
function checkExtends(older: PublishersDoc, newer: PublishersDoc): void {
  for (const [id, p] of Object.entries(older.publishers)) {
    const n = Object.hasOwn(newer.publishers, id) ? newer.publishers[id] : undefined;
    if (!n) mismatch(`the primary's publishers v${newer.version} drop publisher ${id.slice(0, 16)}…, listed in the backup's v${older.version}`);
    if (n.publicKey !== p.publicKey || n.name !== p.name) mismatch(`publisher ${id.slice(0, 16)}… differs between the backup's v${older.version} and the primary's v${newer.version}`);
    if (p.revoked === true && (n.revoked !== true || n.revokedAt !== p.revokedAt)) {
      mismatch(`publisher ${id.slice(0, 16)}… is revoked in the backup's v${older.version} but listed in the primary's v${newer.version}`);
    }
  }
}

/**
 * Verifies the primary and the backup registry and requires them to agree, or the backup only
 * to lag. They agree when they serve the same latest root (version and hash) and the same
 * publishers (version and payload bytes). The backup lags when the primary is a newer version
 * validly chained from what the backup holds: the backup's latest root is in the primary's
 * verified chain (same version, same hash), the primary's publishers version is higher, and its
 * list extends the backup's (checkExtends). Jobs are then verified against the backup's list
 * less anything the primary revoked (`trustedPublisherKey`), so a lag only ever narrows trust.
 * Anything else — another root at the backup's version (a foreign or forked root), the same
 * publishers version with other bytes, a backup newer than the primary, a revocation undone —
 * is `registry-mismatch`. Versions below `state` are `rollback`; expired metadata `expired`.
 * Returns the new state to persist (the caller writes it only after this returns).
 */
export function checkRegistries(primary: RegistrySnapshot, backup: RegistrySnapshot, state: TrustState | undefined, now: Date, pinnedRoot?: RootDoc): CheckedRegistries {
  const a = checkOne(primary, state?.primary ?? state, now, pinnedRoot, 'primary');
  const b = checkOne(backup, state, now, pinnedRoot, 'backup');
  const versions = (x: typeof a): RegistryVersions => ({ rootVersion: x.root.version, rootSha256: x.rootSha256, publishersVersion: x.publishers.version });
  const sameRoot = a.root.version === b.root.version && a.rootSha256 === b.rootSha256;
  if (sameRoot && a.publishers.version === b.publishers.version) {
    if (a.publishersPayload !== b.publishersPayload) mismatch(`the registries serve different publishers under one version (v${a.publishers.version})`);
    return { root: a.root, publishers: a.publishers, state: versions(a) };
  }
  if (!sameRoot) {
    if (a.root.version < b.root.version) mismatch(`the registries serve different roots (primary v${a.root.version}, backup v${b.root.version})`);
    const at = a.history.find((h) => h.doc.version === b.root.version);
    // The primary's history is verified from the same anchor: its root at the backup's version
    // must be the backup's root, else the two are not one registry.
    if (!at || at.sha256 !== b.rootSha256) mismatch(`the primary's root chain does not extend the backup's root v${b.root.version} (a foreign or forked root)`);
  }
  if (a.publishers.version <= b.publishers.version) {
    mismatch(`the registries serve different publishers (primary v${a.publishers.version}, backup v${b.publishers.version})`);
  }
  checkExtends(b.publishers, a.publishers);
  return { root: b.root, publishers: b.publishers, primaryPublishers: a.publishers, state: { ...versions(b), primary: versions(a) } };
}

/**
 * The key of a publisher the client trusts: listed and unrevoked in the registries' agreed
 * list (the backup's), and not revoked in a newer primary's.
 */
export function trustedPublisherKey(checked: Pick<CheckedRegistries, 'publishers' | 'primaryPublishers'>, keyid: string): Uint8Array | undefined {
  if (checked.primaryPublishers && publisherKey(checked.primaryPublishers, keyid) === undefined) return undefined;
  return publisherKey(checked.publishers, keyid);
}

/**
 * Runs `verify` (a signature check taking a key lookup) against the trusted publishers. When it
 * fails with `unknown-key` while the backup lags, and the signature verifies against the
 * primary's newer list, the job's publisher is one the backup does not list yet: `backup-behind`
 * (refused, but no sign of a rogue coordinator), not `unknown-key`.
 */
export function verifyWithPublishers<T>(checked: Pick<CheckedRegistries, 'publishers' | 'primaryPublishers'>, verify: (key: (keyid: string) => Uint8Array | undefined) => T): T {
  try {
    return verify((id) => trustedPublisherKey(checked, id));
  } catch (err) {
    const newer = checked.primaryPublishers;
    if (!newer || !(err instanceof AegisError) || err.code !== ErrorCode.UnknownKey) throw err;
    try {
      verify((id) => publisherKey(newer, id));
    } catch {
      throw err;
    }
    throw new AegisError(
      ErrorCode.BackupBehind,
      `the job's publisher is listed in the primary registry (publishers v${newer.version}) but not in the backup registry (publishers v${checked.publishers.version}), which lags behind`,
    );
  }
}

/** A publisher's public key, or undefined when the registry does not list it or it is revoked. */
export function publisherKey(publishers: PublishersDoc, keyid: string): Uint8Array | undefined {
  if (!Object.hasOwn(publishers.publishers, keyid)) return undefined;
  const p = publishers.publishers[keyid];
  if (!p || p.revoked === true) return undefined;
  return new Uint8Array(Buffer.from(p.publicKey, 'base64'));
}
