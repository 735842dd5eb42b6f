/**
 * The coordinator's data directory (`aegis coordinator start --data-dir DIR`):
 *
 *   coordinator.keyfile.json  CA and token-signing seeds, sealed under the passphrase (scrypt +
 *                             AES-256-GCM, mode 0600) — the only secrets, never in clear on disk
 *   operator.keyfile.json     the operator credential's seed, sealed the same way (used by the
 *                             `aegis clients` / `aegis round` commands on this host)
 *   ca.pem, operator.pem      public certificates (ca.pem is what clients pin with --ca)
 *   registry.json             enrolled clients, revocations, key bindings, pending invites (as
 *                             SHA-256 hashes only) — public keys and names, no secret
 *   coordinator.json          where the running coordinator listens (for the operator commands)
 *
 * Round state stays in memory (the embedded default). The TLS server key is made fresh at each
 * start and never written anywhere.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { writeFileAtomic } from '../../shared/fs.js';
import { readKeyfile, writeKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import { createCa, exportCa, importCa, issueOperatorCertificate, KeyBindings, type CertificateAuthority } from '../auth/ca.js';
import { Invites, Revocations } from '../auth/enrollment.js';
import { TokenIssuer } from '../auth/tokens.js';

export const COORDINATOR_KEYFILE = 'coordinator.keyfile.json';
export const OPERATOR_KEYFILE = 'operator.keyfile.json';
const COORDINATOR_LABEL = 'aegis/coordinator';
const OPERATOR_LABEL = 'aegis/operator';

export interface ClientRecord {
  clientId: string;
  /** Raw Ed25519 public key, base64url. */
  publicKey: string;
  enrolledAt: number;
  serial: string;
  certificateExpiresAt: number;
  /** The current certificate, DER as base64 (public; sent to round peers). */
  certificate: string;
  revokedAt?: number;
  revocationReason?: string;
}

const ClientRecordSchema = z
  .object({
    clientId: z.string(),
    publicKey: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
    enrolledAt: z.number().int(),
    serial: z.string().regex(/^[0-9a-f]{1,40}$/),
    certificateExpiresAt: z.number().int(),
    certificate: z.string().max(8192),
    revokedAt: z.number().int().optional(),
    revocationReason: z.string().max(200).optional(),
  })
  .strict();

const RegistrySchema = z
  .object({
    version: z.literal(1),
    clients: z.array(ClientRecordSchema),
    invites: z.unknown(),
    revocations: z.unknown(),
    bindings: z.unknown(),
  })
  .strict();

/** The coordinator's persistent registry (everything but round state). */
export class Registry {
  readonly clients = new Map<string, ClientRecord>();
  invites: Invites;
  revocations: Revocations;
  bindings: KeyBindings;

  constructor(parts?: { clients?: ClientRecord[]; invites?: Invites; revocations?: Revocations; bindings?: KeyBindings }) {
    for (const c of parts?.clients ?? []) this.clients.set(c.clientId, c);
    this.invites = parts?.invites ?? new Invites();
    this.revocations = parts?.revocations ?? new Revocations();
    this.bindings = parts?.bindings ?? new KeyBindings();
  }

  toJSON(): unknown {
    return {
      version: 1,
      clients: [...this.clients.values()].sort((a, b) => (a.clientId < b.clientId ? -1 : 1)),
      invites: this.invites.toJSON(),
      revocations: this.revocations.toJSON(),
      bindings: this.bindings.toJSON(),
    };
  }

  static fromJSON(json: unknown): Registry {
    const r = RegistrySchema.safeParse(json);
    if (!r.success) throw new AegisError(ErrorCode.InvalidArgument, 'registry.json is malformed');
    return new Registry({
      clients: r.data.clients as ClientRecord[],
      invites: Invites.fromJSON(r.data.invites),
      revocations: Revocations.fromJSON(r.data.revocations),
      bindings: KeyBindings.fromJSON(r.data.bindings),
    });
  }
}

export interface CoordinatorSecrets {
  ca: CertificateAuthority;
  tokens: TokenIssuer;
  /** True when this call created them (first start). */
  created: boolean;
}

/**
 * Opens the data dir's sealed keys, creating the CA, the token key and the operator credential
 * on first start. A wrong passphrase fails with the keyfile's one decryption error.
 */
export async function openCoordinatorSecrets(dir: string, passphrase: string): Promise<CoordinatorSecrets> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keyfile = join(dir, COORDINATOR_KEYFILE);
  if (existsSync(keyfile)) {
    const s = await readKeyfile(keyfile, passphrase, { expectedLabel: COORDINATOR_LABEL });
    if (!s.caSeed || !s.caCertificate || !s.tokenSeed) throw new AegisError(ErrorCode.InsecureKeyfile, `${COORDINATOR_KEYFILE} lacks the CA or token key`);
    const ca = await importCa({ seed: s.caSeed, certificateDer: s.caCertificate });
    return { ca, tokens: TokenIssuer.fromSeed(s.tokenSeed), created: false };
  }
  const ca = await createCa({ name: 'Aegis coordinator CA' });
  const tokens = TokenIssuer.create();
  const exported = exportCa(ca);
  // The CA certificate rides inside the sealed file too, so the seed is only ever used with the
  // certificate it was made for (ca.pem is a public copy for clients).
  await writeKeyfile(keyfile, passphrase, COORDINATOR_LABEL, { caSeed: exported.seed, caCertificate: exported.certificateDer, tokenSeed: tokens.exportSeed() });
  await writeFileAtomic(join(dir, 'ca.pem'), ca.certificatePem, 0o644);
  const op = await issueOperatorCertificate(ca, { name: 'admin' });
  await writeKeyfile(join(dir, OPERATOR_KEYFILE), passphrase, OPERATOR_LABEL, { seed: op.seed, certificate: op.certificateDer });
  await writeFileAtomic(join(dir, 'operator.pem'), op.certificatePem, 0o644);
  op.seed.fill(0);
  return { ca, tokens, created: true };
}

/** The operator credential (PEM key and certificate) for the Admin service, opened from DIR. */
export async function openOperatorCredential(dir: string, passphrase: string): Promise<{ keyPem: string; certificatePem: string; caPem: string }> {
  const path = join(dir, OPERATOR_KEYFILE);
  if (!existsSync(path)) throw new AegisError(ErrorCode.NotFound, `no operator credential in ${dir}: start the coordinator there first (aegis coordinator start --data-dir ${dir})`);
  const s = await readKeyfile(path, passphrase, { expectedLabel: OPERATOR_LABEL });
  if (!s.seed || !s.certificate) throw new AegisError(ErrorCode.InsecureKeyfile, `${OPERATOR_KEYFILE} lacks the operator key`);
  const { ed25519PrivateKeyPem } = await import('../../shared/keystore/webcrypto-ed25519.js');
  const { X509Certificate } = await import('node:crypto');
  const certificatePem = new X509Certificate(Buffer.from(s.certificate)).toString();
  const keyPem = ed25519PrivateKeyPem(s.seed);
  s.seed.fill(0);
  const caPem = await readFile(join(dir, 'ca.pem'), 'utf8');
  return { keyPem, certificatePem, caPem };
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
  await unlink(join(dir, 'coordinator.json')).catch(() => undefined);
}
