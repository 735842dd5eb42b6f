/**
 * The coordinator's data directory (`aegis coordinator start --data-dir DIR`):
 *
 *   kek.json                  which KEK provider protects the dir (passphrase keyfile, OS keyring
 *                             or PKCS#11 token; shared/keystore/kek-config.ts) — no secret
 *   kek.keyfile.json          the KEK versions, sealed under the passphrase (passphrase provider only)
 *   secrets.vault.json        the CA key and certificate, the token-signing seed and the operator
 *                             credential, each sealed under its own DEK wrapped by the KEK
 *                             (shared/keystore/vault.ts) — never in clear on disk; rotated with
 *                             `aegis keys rotate --data-dir DIR` like the client's store
 *   ca.pem, operator.pem      public certificates (ca.pem is what clients pin with --ca)
 *   registry.json             enrolled clients, revocations, key bindings, pending invites (as
 *                             SHA-256 hashes only) — public keys and names, no secret
 *   coordinator.json          where the running coordinator listens (for the operator commands)
 *
 * The CA key is ECDSA P-256 for a data dir made now; a data dir made before P-256 keeps its
 * Ed25519 CA (its seed is sealed the same way; `importCa` reads the type from the certificate).
 * Round state stays in memory (the embedded default). The TLS server key (ECDSA P-256, whatever
 * the CA's type) is made fresh at each start and never written anywhere.
 */
import { randomBytes } from 'node:crypto';
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
import { createCa, exportCa, importCa, issueOperatorCertificate, type CaCertificate } from '../auth/ca.js';
import { Registry } from '../clients/registry.js';
import { createOfflineCoordinatorVault, openOfflineCoordinatorVault } from '../auth/offline-ca.js';
import { TokenIssuer } from '../auth/tokens.js';
import { certificateDate, ensureKeyMeta, isDue, recordKey, tokenKeyState, type RotatedKey, type RotationPolicy } from '../../shared/keystore/policy.js';

export const COORDINATOR_KEYFILE = 'coordinator.keyfile.json';
export const OPERATOR_KEYFILE = 'operator.keyfile.json';
const COORDINATOR_LABEL = 'aegis/coordinator';
const OPERATOR_LABEL = 'aegis/operator';

// The registry kept in registry.json is defined with the rest of enrollment's state
// (coordinator/auth/client-registry.ts); this module loads and saves it.

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
export async function openCoordinatorSecrets(dir: string, secrets: KekSecrets, opts: { kek?: KekInitOptions; offlineCaPem?: string } = {}): Promise<CoordinatorSecrets> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const vaultPath = join(dir, VAULT_FILE);
  if (existsSync(vaultPath)) {
    const kek = await openKek(dir, secrets);
    try {
      const vault = await SealedVault.open(vaultPath);
      await resumePendingRotation(dir, kek, [vault]);
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
    const op = await issueOperatorCertificate(ca, { name: 'admin' });
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

/** The operator credential (PEM key and certificate) for the Admin service, opened from DIR. */
export async function openOperatorCredential(dir: string, secrets: KekSecrets): Promise<{ keyPem: string; certificatePem: string; caPem: string }> {
  if (!hasCoordinatorSecrets(dir)) throw new AegisError(ErrorCode.NotFound, `no operator credential in ${dir}: start the coordinator there first (aegis coordinator start --data-dir ${dir})`);
  if (!existsSync(join(dir, VAULT_FILE))) (await openCoordinatorSecrets(dir, secrets)).kek.close(); // migrate an older dir first
  const kek = await openKek(dir, secrets);
  try {
    const vault = await SealedVault.open(join(dir, VAULT_FILE));
    const seed = await vault.get(kek, 'operator-seed');
    const certificate = await vault.get(kek, 'operator-certificate');
    const { ed25519PrivateKeyPem } = await import('../../shared/keystore/webcrypto-ed25519.js');
    const { X509Certificate } = await import('node:crypto');
    const certificatePem = new X509Certificate(Buffer.from(certificate)).toString();
    const keyPem = ed25519PrivateKeyPem(seed);
    seed.fill(0);
    const caPem = await readFile(join(dir, 'ca.pem'), 'utf8');
    return { keyPem, certificatePem, caPem };
  } finally {
    await kek.close();
  }
}

/**
 * Re-issues the operator credential (new key, new certificate from the embedded CA) when it is
 * older than `policy.signingDays` (time-based rotation; run at coordinator start). The old
 * certificate stays valid until it expires: operators pick up the new one from the data dir.
 */
export async function reissueOperatorIfDue(dir: string, kek: ManagedKek, ca: CaCertificate, policy: RotationPolicy, clock: () => number = Date.now): Promise<RotatedKey | undefined> {
  const meta = await ensureKeyMeta(dir, 'operator', async () => ({ ...(await certificateDate(join(dir, 'operator.pem'), clock)), dateSource: 'certificate' }));
  if (!isDue(meta.createdAt, policy.signingDays, clock())) return undefined;
  const op = await issueOperatorCertificate(ca, { name: 'admin' });
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
  return { key: 'operator', previousVersion: meta.version, version, reason: 'due' };
}

export async function loadRegistry(dir: string): Promise<Registry> {
  const path = join(dir, 'registry.json');
  if (!existsSync(path)) return new Registry();
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    throw new AegisError(ErrorCode.InvalidArgument, 'registry.json is not valid JSON');
  }
  return Registry.fromJSON(json);
}

export async function saveRegistry(dir: string, registry: Registry): Promise<void> {
  await writeFileAtomic(join(dir, 'registry.json'), `${JSON.stringify(registry.toJSON(), null, 1)}\n`);
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
