/**
 * A client's data directory (`aegis client enroll|run --data-dir DIR`):
 *
 *   identity.keyfile.json  the identity seed, sealed under the passphrase (scrypt +
 *                          AES-256-GCM, mode 0600): the only secret, never in clear on disk;
 *                          it makes the Ed25519 round key and the P-256 TLS key (client/enroll/csr.ts)
 *   client.pem             the current client certificate (public; renewed before expiry)
 *   ca.pem                 the coordinator CA this client trusts (pinned at enrollment)
 *   client.json            the client id and the coordinator's addresses
 *   keys.json              key versions and dates (shared/keystore/policy.ts; no secret)
 *   ledger.json            the contribution ledger: rounds joined, inputs contributed, sealed with
 *                          an HMAC under a key derived from the identity seed (client/admission/
 *                          ledger-file.ts)
 *   identity.next.keyfile.json  only during an identity key rotation: the new key, sealed like
 *                          the current one, until the coordinator has certified it
 *
 * Identity key rotation (`rekeyIfDue`, run by `client run` when the key is older than the
 * policy's signing_days): a new key is made and sealed beside the current one, the coordinator
 * certifies it (Renew with `rekey`, authenticated by the current certificate over mTLS, which it
 * then revokes), the certificate is saved and the new keyfile replaces the old one. A crash in
 * between is settled at the next load: the pending key is kept when client.pem certifies it,
 * dropped otherwise.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { writeFileAtomic } from '../../shared/fs.js';
import { readKeyfile, writeKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import { certificateKeys } from '../../shared/keystore/round-key.js';
import { settlePassphraseChange } from '../../shared/keystore/passphrase-change.js';
import { createIdentity, type ClientIdentity } from '../enroll/csr.js';
import { ensureKeyMeta, fileDate, isDue, recordKey, type RotatedKey, type RotationPolicy } from '../../shared/keystore/policy.js';

export const IDENTITY_KEYFILE = 'identity.keyfile.json';
export const NEXT_IDENTITY_KEYFILE = 'identity.next.keyfile.json';
const IDENTITY_LABEL = 'aegis/client-identity';

const ClientConfigSchema = z
  .object({
    version: z.literal(1),
    clientId: z.string().regex(/^[A-Za-z0-9._:@-]{1,128}$/),
    coordinator: z.string().min(3).max(300),
    enrollAddress: z.string().min(3).max(300),
  })
  .strict();
export type ClientConfig = z.infer<typeof ClientConfigSchema>;

export interface LoadedClient {
  config: ClientConfig;
  identity: ClientIdentity;
  certificateDer: Uint8Array;
  caPem: string;
}

export const derToPem = (der: Uint8Array): string => new X509Certificate(Buffer.from(der)).toString();
export const pemToDer = (pem: string): Uint8Array => new Uint8Array(new X509Certificate(pem).raw);

/**
 * The client's identity: opened from DIR when it exists, otherwise made (32 random bytes) and
 * sealed there. A data dir that already holds an enrolled client is refused for a new enrollment
 * under another id (one key, one id).
 */
export async function openOrCreateIdentity(dir: string, passphrase: string): Promise<{ identity: ClientIdentity; created: boolean }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await settlePassphraseChange(dir); // an interrupted passphrase change is finished first
  const path = join(dir, IDENTITY_KEYFILE);
  if (existsSync(path)) {
    const s = await readKeyfile(path, passphrase, { expectedLabel: IDENTITY_LABEL });
    if (!s.seed) throw new AegisError(ErrorCode.InsecureKeyfile, `${IDENTITY_KEYFILE} lacks the identity key`);
    return { identity: await createIdentity(s.seed), created: false };
  }
  const identity = await createIdentity();
  await writeKeyfile(path, passphrase, IDENTITY_LABEL, { seed: identity.seed });
  return { identity, created: true };
}

export async function readClientConfig(dir: string): Promise<ClientConfig | undefined> {
  const path = join(dir, 'client.json');
  if (!existsSync(path)) return undefined;
  const r = ClientConfigSchema.safeParse(JSON.parse(await readFile(path, 'utf8')));
  if (!r.success) throw new AegisError(ErrorCode.InvalidArgument, `${path} is malformed`);
  return r.data;
}

export async function saveEnrollment(dir: string, e: { config: ClientConfig; certificateDer: Uint8Array; caDer: Uint8Array }): Promise<void> {
  await writeFileAtomic(join(dir, 'ca.pem'), derToPem(e.caDer), 0o644);
  await writeFileAtomic(join(dir, 'client.pem'), derToPem(e.certificateDer), 0o644);
  await writeFileAtomic(join(dir, 'client.json'), `${JSON.stringify(e.config, null, 1)}\n`, 0o644);
}

export async function saveCertificate(dir: string, certificateDer: Uint8Array): Promise<void> {
  await writeFileAtomic(join(dir, 'client.pem'), derToPem(certificateDer), 0o644);
}

/** Everything `aegis client run` needs, opened from DIR. */
export async function loadClient(dir: string, passphrase: string): Promise<LoadedClient> {
  const config = await readClientConfig(dir);
  if (!config || !existsSync(join(dir, 'client.pem'))) {
    throw new AegisError(ErrorCode.NotFound, `${dir} holds no enrolled client: run aegis client enroll --data-dir ${dir} first`);
  }
  await settlePassphraseChange(dir);
  await settlePendingRekey(dir, passphrase);
  const { identity } = await openOrCreateIdentity(dir, passphrase);
  const certificateDer = pemToDer(await readFile(join(dir, 'client.pem'), 'utf8'));
  const caPem = await readFile(join(dir, 'ca.pem'), 'utf8');
  return { config, identity, certificateDer, caPem };
}

/** The Ed25519 round key a client certificate (DER or PEM) certifies, whatever its TLS key type. */
function certifiedKey(cert: string | Uint8Array): Buffer {
  const x = typeof cert === 'string' ? new X509Certificate(cert) : new X509Certificate(Buffer.from(cert));
  return Buffer.from(certificateKeys(x).roundKey);
}

/** Finishes or drops an identity rotation a crash interrupted (see the header). */
async function settlePendingRekey(dir: string, passphrase: string): Promise<void> {
  const next = join(dir, NEXT_IDENTITY_KEYFILE);
  if (!existsSync(next)) return;
  const s = await readKeyfile(next, passphrase, { expectedLabel: IDENTITY_LABEL });
  if (!s.seed) throw new AegisError(ErrorCode.InsecureKeyfile, `${NEXT_IDENTITY_KEYFILE} lacks the identity key`);
  const pending = await createIdentity(s.seed);
  s.seed.fill(0);
  if (certifiedKey(await readFile(join(dir, 'client.pem'), 'utf8')).equals(Buffer.from(pending.publicKey))) {
    await rename(next, join(dir, IDENTITY_KEYFILE));
    const meta = await ensureKeyMeta(dir, 'identity', () => fileDate(join(dir, IDENTITY_KEYFILE), Date.now));
    await recordKey(dir, 'identity', { version: meta.version + 1, createdAt: new Date().toISOString(), dateSource: 'recorded' });
  } else {
    await unlink(next);
  }
}

/** What renews the certificate for a new identity key: the running `ClientRunner`. */
export interface Rekeyer {
  /** Has the coordinator certify `identity` (Renew with rekey) and switches to it; returns the new certificate. */
  rekey(identity: ClientIdentity): Promise<Uint8Array>;
}

/**
 * Rotates the identity key when it is older than `policy.signingDays` (see the header). Returns
 * what it rotated, or undefined when nothing was due.
 */
export async function rekeyIfDue(dir: string, passphrase: string, policy: RotationPolicy, runner: Rekeyer, clock: () => number = Date.now): Promise<RotatedKey | undefined> {
  const meta = await ensureKeyMeta(dir, 'identity', () => fileDate(join(dir, IDENTITY_KEYFILE), clock));
  if (!isDue(meta.createdAt, policy.signingDays, clock())) return undefined;
  const next = join(dir, NEXT_IDENTITY_KEYFILE);
  if (existsSync(next)) await unlink(next);
  const identity = await createIdentity();
  await writeKeyfile(next, passphrase, IDENTITY_LABEL, { seed: identity.seed });
  let certificateDer: Uint8Array;
  try {
    certificateDer = await runner.rekey(identity);
  } catch (e) {
    await unlink(next).catch(() => undefined);
    throw e;
  }
  await saveCertificate(dir, certificateDer);
  await rename(next, join(dir, IDENTITY_KEYFILE));
  const version = meta.version + 1;
  await recordKey(dir, 'identity', { version, createdAt: new Date(clock()).toISOString(), dateSource: 'recorded' });
  return { key: 'identity', previousVersion: meta.version, version, reason: 'due' };
}
