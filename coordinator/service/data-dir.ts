/**
 * The coordinator's data directory (`aegis coordinator start --data-dir DIR`):
 *
 *   kek.json                  which KEK provider protects the dir (passphrase keyfile, OS keyring
 *                             or PKCS#11 token; shared/keystore/kek-config.ts) — no secret
 *   kek.keyfile.json          the KEK versions, sealed under the passphrase (passphrase provider only)
 *   secrets.vault.json        the CA key and certificate, the token-signing seed and the built-in
 *                             operator credential ("admin"), each sealed under its own DEK wrapped
 *                             by the KEK (shared/keystore/vault.ts) — never in clear on disk;
 *                             rotated with `aegis keys rotate --data-dir DIR` like the client's store
 *   ca.pem, operator.pem      public certificates (ca.pem is what clients pin with --ca)
 *   operators.json            every operator certificate issued or known: name, serial, issued,
 *                             expires, revocation (coordinator/auth/operators.ts) — no key
 *   tokens.log                round tokens seen (until they expire) and revoked, one line each
 *                             (coordinator/auth/seen-tokens.ts); unused with --redis
 *   registry.json             enrolled clients, revocations, key bindings, invites (as SHA-256
 *                             hashes only) — public keys and names, no secret; written merged
 *                             under registry.json.lock (`updateRegistry`); with Redis an export
 *   coordinator.json          where the running coordinator listens (for the operator commands)
 *   jobs.db                   the job history (coordinator/jobs/job-history.ts): jobs, rounds,
 *                             outcomes, sums and model versions, read back at start (no Redis only)
 *   models/<job>/             each training job's model versions, an export for operators
 *
 * The CA key is ECDSA P-256 for a data dir made now; a data dir made before P-256 keeps its
 * Ed25519 CA (its seed is sealed the same way; `importCa` reads the type from the certificate).
 * A round's protocol state stays in memory (the embedded default); what it reports is kept in jobs.db. The TLS server key (ECDSA P-256, whatever
 * the CA's type) is made fresh at each start and never written anywhere.
 */
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { writeFileAtomic } from '../../shared/fs.js';
import { readKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import { hasKek, initKek, openKek, type KekInitOptions, type KekSecrets } from '../../shared/keystore/kek-config.js';
import type { ManagedKek } from '../../shared/keystore/kek.js';
import { resumePendingRotation, VAULT_FILE } from '../../shared/keystore/keys-cli.js';
import { SealedVault } from '../../shared/keystore/vault.js';
import { coordinatorVaultHolder } from '../../shared/keystore/vault-holder.js';
import { createCa, exportCa, importCa, issueOperatorCertificate, operatorKeyPem, requireCaKey, serialOf, type CaCertificate, type IssuedCertificate } from '../auth/ca.js';
import { BUILT_IN_OPERATOR, DEFAULT_OPERATOR_TTL_MS, type BuiltInOperatorCredential } from '../auth/operators.js';
import { mergeRegistry } from '../clients/merge.js';
import { Registry } from '../clients/registry.js';
import { withFileLock } from '../../shared/fs-lock.js';
import { createOfflineCoordinatorVault, openOfflineCoordinatorVault } from '../auth/offline-ca.js';
import { TokenIssuer } from '../auth/tokens.js';
import { certificateDate, certificateRenewalAt, ensureKeyMeta, isDue, recordKey, tokenKeyState, type RotatedKey, type RotationPolicy } from '../../shared/keystore/policy.js';

export const COORDINATOR_KEYFILE = 'coordinator.keyfile.json';
export const OPERATOR_KEYFILE = 'operator.keyfile.json';
const COORDINATOR_LABEL = 'aegis/coordinator';
const OPERATOR_LABEL = 'aegis/operator';

// The registry kept in registry.json is defined in coordinator/clients/registry.ts and owned by
// coordinator/clients/client-registry.ts; this module reads and writes the file.

export interface CoordinatorSecrets {
  /** The CA: with its key (embedded default), or only its certificate (offline CA, `offline`). */
  ca: CaCertificate;
  /** True when the CA is offline (coordinator/auth/offline-ca.ts): no CA key on this host. */
  offline?: boolean;
  tokens: TokenIssuer;
  /** The data dir's KEK, open for the life of the process (the caller closes it). */
  kek: ManagedKek;
  /**
   * The deployment's queue key: seals what coordinator processes pass each other through Redis
   * (unmask parts). Every process on one data dir has the same; it never goes to Redis.
   */
  queueKey: Uint8Array;
  /** True when this call created them (first start). */
  created: boolean;
}

const VAULT_LABEL = 'aegis/coordinator';

/** True when DIR already holds the coordinator's keys (in the vault, or in the keyfiles of an older release). */
export const hasCoordinatorSecrets = (dir: string): boolean => existsSync(join(dir, VAULT_FILE)) || existsSync(join(dir, COORDINATOR_KEYFILE));

/**
 * Opens the data dir's sealed keys, creating the KEK (with `opts.kek`, default the passphrase
 * keyfile), the CA, the token key and the operator credential on first start. Keys sealed by an
 * older release in passphrase keyfiles move into the vault (the same passphrase becomes the KEK
 * keyfile's). An interrupted key rotation is finished first. A wrong passphrase or PIN fails with
 * the provider's one error.
 */
export async function openCoordinatorSecrets(dir: string, secrets: KekSecrets, opts: { kek?: KekInitOptions; offlineCaPem?: string; operatorTtlMs?: number } = {}): Promise<CoordinatorSecrets> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const vaultPath = join(dir, VAULT_FILE);
  if (existsSync(vaultPath)) {
    const kek = await openKek(dir, secrets);
    try {
      // A rotation a crash interrupted is finished first (a leak rotation also replaces the token
      // and queue keys: coordinatorVaultHolder); the vault is read after it.
      await resumePendingRotation(dir, kek, [await coordinatorVaultHolder(dir)]);
      const vault = await SealedVault.open(vaultPath);
      if (opts.offlineCaPem !== undefined || !vault.names().includes('ca-seed')) return { ...(await openOfflineCoordinatorVault(dir, kek, vault, opts.offlineCaPem)), kek, created: false, offline: true };
      const [caSeed, caCertificate, tokenSeed] = [await vault.get(kek, 'ca-seed'), await vault.get(kek, 'ca-certificate'), await vault.get(kek, 'token-seed')];
      const ca = await importCa({ seed: caSeed, certificateDer: caCertificate });
      // The token key's version and the replaced ones still verifying (shared/keystore/policy.ts).
      const tokenState = await tokenKeyState(dir);
      const tokens = TokenIssuer.fromSeed(tokenSeed, { version: tokenState.version });
      for (const p of tokenState.previous) tokens.keyring.addRetired(p.version, p.publicKey, p.retiredAt);
      caSeed.fill(0);
      tokenSeed.fill(0);
      // Data dirs from before the queue key get one now.
      if (!vault.names().includes('queue-key')) await vault.put(kek, 'queue-key', randomBytes(32));
      const queueKey = await vault.get(kek, 'queue-key');
      return { ca, tokens, kek, queueKey, created: false };
    } catch (e) {
      await kek.close();
      throw e;
    }
  }
  const legacy = join(dir, COORDINATOR_KEYFILE);
  if (existsSync(legacy)) return migrateKeyfiles(dir, secrets);

  if (await hasKek(dir)) throw new AegisError(ErrorCode.FailedPrecondition, `${dir} has a KEK but no ${VAULT_FILE}; it is not a coordinator data dir (or its secrets were removed)`);
  const kek = await initKek(dir, opts.kek ?? { kind: 'passphrase' }, secrets);
  try {
    if (opts.offlineCaPem !== undefined) return { ...(await createOfflineCoordinatorVault(dir, kek, opts.offlineCaPem)), kek, created: true, offline: true };
    const ca = await createCa({ name: 'Aegis coordinator CA' });
    const tokens = TokenIssuer.create();
    const exported = exportCa(ca);
    const op = await issueOperatorCertificate(ca, { name: BUILT_IN_OPERATOR, ttlMs: opts.operatorTtlMs ?? DEFAULT_OPERATOR_TTL_MS });
    // The CA certificate is sealed with the seed, so the seed is only ever used with the
    // certificate it was made for (ca.pem is a public copy for clients).
    await SealedVault.create(vaultPath, kek, VAULT_LABEL, {
      'ca-seed': exported.seed,
      'ca-certificate': exported.certificateDer,
      'token-seed': tokens.exportSeed(),
      'operator-seed': op.seed,
      'operator-certificate': op.certificateDer,
      'queue-key': randomBytes(32),
    });
    op.seed.fill(0);
    await writeFileAtomic(join(dir, 'ca.pem'), ca.certificatePem, 0o644);
    await writeFileAtomic(join(dir, 'operator.pem'), op.certificatePem, 0o644);
    const made = new Date().toISOString();
    await recordKey(dir, 'token', { version: 1, createdAt: made, dateSource: 'recorded' });
    await recordKey(dir, 'operator', { version: 1, createdAt: made, dateSource: 'recorded' });
    return { ca, tokens, kek, queueKey: await (await SealedVault.open(vaultPath)).get(kek, 'queue-key'), created: true };
  } catch (e) {
    await kek.close();
    throw e;
  }
}

/** Moves the keys of an older release (two passphrase keyfiles) into a KEK-wrapped vault. */
async function migrateKeyfiles(dir: string, secrets: KekSecrets): Promise<CoordinatorSecrets> {
  const passphrase = await secrets.passphrase();
  const s = await readKeyfile(join(dir, COORDINATOR_KEYFILE), passphrase, { expectedLabel: COORDINATOR_LABEL });
  const op = await readKeyfile(join(dir, OPERATOR_KEYFILE), passphrase, { expectedLabel: OPERATOR_LABEL });
  if (!s.caSeed || !s.caCertificate || !s.tokenSeed || !op.seed || !op.certificate) throw new AegisError(ErrorCode.InsecureKeyfile, `${COORDINATOR_KEYFILE} lacks the CA or token key`);
  const kek = (await hasKek(dir)) ? await openKek(dir, secrets) : await initKek(dir, { kind: 'passphrase' }, { ...secrets, passphrase: async () => passphrase });
  try {
    await SealedVault.create(join(dir, VAULT_FILE), kek, VAULT_LABEL, {
      'ca-seed': s.caSeed,
      'ca-certificate': s.caCertificate,
      'token-seed': s.tokenSeed,
      'operator-seed': op.seed,
      'operator-certificate': op.certificate,
      'queue-key': randomBytes(32),
    });
    const ca = await importCa({ seed: s.caSeed, certificateDer: s.caCertificate });
    const tokens = TokenIssuer.fromSeed(s.tokenSeed);
    for (const v of [s.caSeed, s.tokenSeed, op.seed]) v.fill(0);
    await unlink(join(dir, COORDINATOR_KEYFILE));
    await unlink(join(dir, OPERATOR_KEYFILE));
    return { ca, tokens, kek, queueKey: await (await SealedVault.open(join(dir, VAULT_FILE))).get(kek, 'queue-key'), created: false };
  } catch (e) {
    await kek.close();
    throw e;
  }
}

/**
 * The built-in operator credential (PEM key and certificate) for the Admin service, opened from
 * DIR. The key is the one the certificate certifies (`operatorKeyPem`): P-256 from the sealed
 * `operator-seed`, or Ed25519 from it for a credential made before P-256. The key and certificate are two vault entries replaced one after the other when the
 * coordinator reissues the credential: a pair that does not match is read again.
 */
export async function openOperatorCredential(dir: string, secrets: KekSecrets): Promise<{ keyPem: string; certificatePem: string; caPem: string }> {
  if (!hasCoordinatorSecrets(dir)) throw new AegisError(ErrorCode.NotFound, `no operator credential in ${dir}: start the coordinator there first (aegis coordinator start --data-dir ${dir})`);
  if (!existsSync(join(dir, VAULT_FILE))) (await openCoordinatorSecrets(dir, secrets)).kek.close(); // migrate an older dir first
  const kek = await openKek(dir, secrets);
  try {
    for (let attempt = 0; ; attempt++) {
      const vault = await SealedVault.open(join(dir, VAULT_FILE));
      const seed = await vault.get(kek, 'operator-seed');
      const certificateDer = await vault.get(kek, 'operator-certificate');
      const certificate = new X509Certificate(Buffer.from(certificateDer));
      const keyPem = operatorKeyPem(seed, certificateDer);
      seed.fill(0);
      if (!certificate.checkPrivateKey(createPrivateKey(keyPem)) && attempt < 5) {
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      const caPem = await readFile(join(dir, 'ca.pem'), 'utf8');
      return { keyPem, certificatePem: certificate.toString(), caPem };
    }
  } finally {
    await kek.close();
  }
}

/** The built-in operator certificate (DIR/operator.pem, DER), if there is one. */
export async function builtInOperatorCertificate(dir: string): Promise<Uint8Array | undefined> {
  try {
    return new Uint8Array(new X509Certificate(await readFile(join(dir, 'operator.pem'))).raw);
  } catch {
    return undefined;
  }
}

/** One writer of the built-in credential at a time (front ends sharing the data dir, an operator's reissue). */
const withOperatorLock = <T>(dir: string, fn: () => Promise<T>): Promise<T> => withFileLock(join(dir, 'operator.lock'), 'another coordinator on this data dir', fn);

/** Replaces the built-in credential: new key and certificate in the vault, operator.pem, keys.json's version + 1. */
async function replaceBuiltInOperator(dir: string, kek: ManagedKek, ca: CaCertificate, ttlMs: number, clock: () => number): Promise<IssuedCertificate & { previousVersion: number; version: number }> {
  const meta = await ensureKeyMeta(dir, 'operator', async () => ({ ...(await certificateDate(join(dir, 'operator.pem'), clock)), dateSource: 'certificate' }));
  const op = await issueOperatorCertificate(requireCaKey(ca), { name: BUILT_IN_OPERATOR, ttlMs, now: clock() });
  try {
    const vault = await SealedVault.open(join(dir, VAULT_FILE));
    await vault.put(kek, 'operator-seed', op.seed);
    await vault.put(kek, 'operator-certificate', op.certificateDer);
  } finally {
    op.seed.fill(0);
  }
  await writeFileAtomic(join(dir, 'operator.pem'), op.certificatePem, 0o644);
  const version = meta.version + 1;
  await recordKey(dir, 'operator', { version, createdAt: new Date(clock()).toISOString(), dateSource: 'recorded' });
  return { ...op, previousVersion: meta.version, version };
}

/**
 * Why the built-in credential must be reissued now, if it must: it is revoked, past 2/3 of its
 * lifetime (so it is replaced days before it expires), longer-lived than `ttlMs` allows (a
 * credential of an older release, or a lifetime shortened since), or older than the rotation
 * policy's `signingDays`.
 */
export function builtInOperatorDue(certificateDer: Uint8Array, o: { createdAt: string; policy: RotationPolicy; ttlMs: number; now: number; isRevoked?: (serial: string) => boolean }): string | undefined {
  if (o.isRevoked?.(serialOf(certificateDer)) === true) return 'revoked';
  const cert = new X509Certificate(Buffer.from(certificateDer));
  const notBefore = Date.parse(cert.validFrom);
  const notAfter = Date.parse(cert.validTo);
  if (o.now >= certificateRenewalAt(notBefore, notAfter)) return 'renewal';
  if (notAfter > o.now + o.ttlMs + 60_000) return 'lifetime';
  if (isDue(o.createdAt, o.policy.signingDays, o.now)) return 'policy';
  return undefined;
}

/**
 * The key check's part for the built-in operator credential (at coordinator start, then every
 * hour): reissues it when `builtInOperatorDue` says so, under DATA_DIR/operator.lock (front ends
 * sharing the data dir reissue it once), and hands the new certificate to `onReplaced` (the
 * coordinator records it and revokes the old serial as superseded).
 */
export async function reissueOperatorIfDue(
  dir: string,
  kek: ManagedKek,
  ca: CaCertificate,
  policy: RotationPolicy,
  opts: { ttlMs?: number; clock?: () => number; isRevoked?: (serial: string) => boolean; onReplaced?: (certificateDer: Uint8Array) => Promise<unknown> } = {},
): Promise<RotatedKey | undefined> {
  const clock = opts.clock ?? Date.now;
  const ttlMs = opts.ttlMs ?? DEFAULT_OPERATOR_TTL_MS;
  const replaced = await withOperatorLock(dir, async () => {
    const meta = await ensureKeyMeta(dir, 'operator', async () => ({ ...(await certificateDate(join(dir, 'operator.pem'), clock)), dateSource: 'certificate' }));
    const current = await builtInOperatorCertificate(dir);
    const why = current === undefined ? 'missing' : builtInOperatorDue(current, { createdAt: meta.createdAt, policy, ttlMs, now: clock(), ...(opts.isRevoked ? { isRevoked: opts.isRevoked } : {}) });
    if (why === undefined) return undefined;
    return replaceBuiltInOperator(dir, kek, ca, ttlMs, clock);
  });
  if (!replaced) return undefined;
  await opts.onReplaced?.(replaced.certificateDer);
  return { key: 'operator', previousVersion: replaced.previousVersion, version: replaced.version, reason: 'due' };
}

/** The built-in credential as the coordinator's operators see it (current certificate, reissue on request). */
export function builtInOperator(dir: string, kek: ManagedKek, ca: CaCertificate, clock: () => number = Date.now): BuiltInOperatorCredential {
  return {
    current: () => builtInOperatorCertificate(dir),
    reissue: (ttlMs) => withOperatorLock(dir, () => replaceBuiltInOperator(dir, kek, ca, ttlMs, clock)),
  };
}

const REGISTRY_FILE = 'registry.json';

/** registry.json as it is now (an empty registry when there is none); `invalid-argument` when it is not a registry. */
export async function loadRegistry(dir: string): Promise<Registry> {
  const path = join(dir, REGISTRY_FILE);
  if (!existsSync(path)) return new Registry();
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    throw new AegisError(ErrorCode.InvalidArgument, 'registry.json is not valid JSON');
  }
  return Registry.fromJSON(json);
}

const registryText = (registry: Registry): string => `${JSON.stringify(registry.toJSON(), null, 1)}\n`;

/**
 * Changes registry.json under its lock file (registry.json.lock, shared/fs-lock.ts; every
 * coordinator process on the data dir takes it): reads the file (empty when missing), lets `fn`
 * change that copy, and writes it back atomically (temp file, fsync, rename) if it changed.
 * Returns the copy as written and `fn`'s result. A file that cannot be read, or an `fn` that
 * throws, leaves the file untouched.
 */
export async function updateRegistry<T>(dir: string, fn: (disk: Registry) => T): Promise<{ registry: Registry; result: T }> {
  const path = join(dir, REGISTRY_FILE);
  return withFileLock(`${path}.lock`, 'the coordinator processes on this data dir', async () => {
    const disk = await loadRegistry(dir);
    const before = registryText(disk);
    const result = fn(disk);
    const after = registryText(disk);
    if (after !== before) await writeFileAtomic(path, after);
    return { registry: disk, result };
  });
}

/**
 * Merges `registry` into registry.json (coordinator/clients/merge.ts: what the file holds is
 * kept — no revocation, enrollment or redeemed invite of another writer is dropped; only invites
 * expired or used more than 7 days ago go) and returns the merged registry.
 */
export async function saveRegistry(dir: string, registry: Registry): Promise<Registry> {
  return (
    await updateRegistry(dir, (disk) => {
      mergeRegistry(disk, registry);
      disk.invites.prune();
    })
  ).registry;
}

export interface Endpoint {
  /** The mTLS address (SecAgg, Admin, Renew). */
  address: string;
  /** The enrollment address (server-authenticated TLS; Enroll only). */
  enrollAddress: string;
  pid: number;
  /** Where /metrics is served, when it is. */
  metrics?: string;
  /** Where the web dashboard is served (host:port), when it is. */
  dashboard?: string;
}

export async function writeEndpoint(dir: string, e: Endpoint): Promise<void> {
  await writeFileAtomic(join(dir, 'coordinator.json'), `${JSON.stringify(e)}\n`, 0o644);
}

export async function readEndpoint(dir: string): Promise<Endpoint | undefined> {
  try {
    const j = JSON.parse(await readFile(join(dir, 'coordinator.json'), 'utf8')) as Endpoint;
    return typeof j.address === 'string' ? j : undefined;
  } catch {
    return undefined;
  }
}

export async function removeEndpoint(dir: string): Promise<void> {
  // Several front ends may share the data dir: only the process that wrote it removes it.
  const current = await readEndpoint(dir).catch(() => undefined);
  if (current && current.pid !== undefined && current.pid !== process.pid) return;
  await unlink(join(dir, 'coordinator.json')).catch(() => undefined);
}
