/**
 * The offline CA (`aegis ca init|sign-csr`, `aegis coordinator start --offline-ca ca.pem`).
 *
 * The CA's private key lives in its own directory (CADIR), sealed under a KEK with the same
 * machinery as a coordinator data dir (kek.json, the provider's keyfile / keyring / token, and
 * `secrets.vault.json`), on a host the coordinator cannot reach. The coordinator holds only the
 * CA certificate (`caCertificateFromPem`: no key; every issuing function fails closed with
 * `CaKeyUnavailableError`) and the signed CRL. It writes signing requests as files into
 * `DATA_DIR/ca-requests/`; ops carry them to the CA host, run `aegis ca sign-csr`, and carry the
 * certificates back into `DATA_DIR/ca-signed/`. A compromised coordinator can then ask for
 * certificates, but ops see every request (kind, id, key fingerprint, invite) before signing, and
 * it cannot mint one itself.
 *
 *   CADIR/
 *     kek.json, kek.keyfile.json   the CA dir's KEK (shared/keystore/kek-config.ts)
 *     secrets.vault.json           the CA seed and certificate, sealed (shared/keystore/vault.ts)
 *     ca.pem                       the CA certificate (public: the coordinator and clients pin it)
 *     ca-state.json                what was signed (serial, kind, subject, request id) and the CRL number
 *
 *   DATA_DIR/ (coordinator, offline mode)
 *     ca-mode.json                 {"mode": "offline", "ca": sha-256 of the CA certificate}
 *     ca-requests/<id>.json        signing requests (public: a CSR and what it is for)
 *     ca-requests/revocations.json the revocation list to sign as a CRL
 *     ca-signed/<id>.pem           certificates returned by the CA (checked before use)
 *     ca-signed/crl-<n>.pem        signed CRLs
 *     ca-pending.json              client requests waiting for their certificate (token hash, CSR hash, id)
 *
 * A request file's id is the SHA-256 of its content (first 16 bytes, hex), so a request edited
 * after it was written (kind, subject, hosts, CSR, invite) no longer matches its id and is refused;
 * the CSR's self-signature and its subject (CN) are checked against the declared kind and subject.
 */
import { createHash, createPublicKey, randomBytes, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { create } from '@bufbuild/protobuf';
import type { Logger } from 'pino';
import { z } from 'zod';
import { ctEqual } from '../../shared/bytes.js';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { readJsonFile, writeFileAtomic } from '../../shared/fs.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import { hasKek, initKek, openKek, type KekInitOptions, type KekSecrets } from '../../shared/keystore/kek-config.js';
import type { ManagedKek } from '../../shared/keystore/kek.js';
import { VAULT_FILE } from '../../shared/keystore/keys-cli.js';
import { SealedVault } from '../../shared/keystore/vault.js';
import { loadX509 } from '../../shared/keystore/webcrypto-ed25519.js';
import { p256Spki, P256Purpose } from '../../shared/keystore/webcrypto-p256.js';
import { ed25519PrivateKeyObject } from '../../shared/crypto/ed25519.js';
import { certificateKeyType } from '../../shared/keystore/round-key.js';
import {
  assertClientId,
  caCertificateFromPem,
  certificateKeys,
  certificateSpki,
  clientIdOf,
  createCa,
  csrForSeed,
  expectedCsrCn,
  exportCa,
  importCa,
  inspectCsr,
  issueFromCsr,
  KeyAlreadyBoundError,
  operatorOf,
  serverKeyPem,
  verifyCsr,
  type CaCertificate,
  type CertificateAuthority,
  type CertificateKind,
  type TlsKeyType,
} from './ca.js';
import { signCrl, verifyCrl } from './crl.js';
import { EnrollmentError } from './enrollment.js';
import { TokenIssuer } from './tokens.js';
import type { Registry } from '../clients/registry.js';

export const CA_REQUESTS_DIR = 'ca-requests';
export const CA_SIGNED_DIR = 'ca-signed';
export const CA_MODE_FILE = 'ca-mode.json';
export const CA_PENDING_FILE = 'ca-pending.json';
export const CA_STATE_FILE = 'ca-state.json';
export const REVOCATIONS_REQUEST = 'revocations.json';
/** Default lifetime of what the offline CA signs: 90 days (there is no online renewal). */
export const OFFLINE_CERT_TTL_MS = 90 * 24 * 3600 * 1000;
const CA_VAULT_LABEL = 'aegis/offline-ca';
const COORDINATOR_VAULT_LABEL = 'aegis/coordinator';
const KINDS: readonly CertificateKind[] = ['client', 'server', 'operator'];
/** The operator credential the coordinator asks for at first start. */
export const OPERATOR_NAME = 'admin';

const sha256 = (b: Uint8Array | string): Buffer => createHash('sha256').update(b).digest();
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

/**
 * `sha256:<hex>` of a raw public key: what ops compare with the device's own. A client request
 * shows its Ed25519 round key's (the device's identity, whatever its TLS key type); a server or
 * operator request the key it certifies.
 */
export const keyFingerprint = (publicKey: Uint8Array): string => `sha256:${sha256(publicKey).toString('hex')}`;
/** `sha256:<hex>` of a certificate (DER). */
export const certificateFingerprint = (der: Uint8Array): string => `sha256:${sha256(der).toString('hex')}`;

// ---------------------------------------------------------------------------------------------
// Request files.

const RequestFileSchema = z
  .object({
    version: z.literal(1),
    id: z.string().regex(/^[0-9a-f]{32}$/),
    kind: z.string().max(32),
    subject: z.string().max(256),
    hosts: z.array(z.string().max(253)).max(32).optional(),
    csr: z.string().max(8192).regex(/^[A-Za-z0-9+/]+=*$/),
    invite: z.string().regex(/^[0-9a-f]{16}$/).optional(),
    createdAt: z.number().int().nonnegative(),
  })
  .strict();

export interface RequestBody {
  kind: CertificateKind;
  subject: string;
  hosts?: string[];
  csrDer: Uint8Array;
  /** The first 8 bytes (hex) of the SHA-256 of the invite token's hash: names the invite, grants nothing. */
  invite?: string;
  createdAt: number;
}

export interface ValidRequest extends RequestBody {
  id: string;
  /** Client: the Ed25519 round key; server, operator: the raw key the certificate certifies. */
  publicKey: Uint8Array;
  fingerprint: string;
  /** The type of the key the certificate certifies. */
  keyType: TlsKeyType;
}

function requestId(b: { kind: string; subject: string; hosts?: string[] | undefined; csr: string; invite?: string | undefined; createdAt: number }): string {
  return sha256(JSON.stringify(['aegis-ca-request/v1', b.kind, b.subject, b.hosts ?? null, b.csr, b.invite ?? null, b.createdAt])).subarray(0, 16).toString('hex');
}

/** The request file's JSON for `body` (id = hash of the content). */
export function encodeRequest(body: RequestBody): { id: string; json: string } {
  const csr = b64(body.csrDer);
  const id = requestId({ ...body, csr });
  const doc = { version: 1, id, kind: body.kind, subject: body.subject, ...(body.hosts ? { hosts: body.hosts } : {}), csr, ...(body.invite ? { invite: body.invite } : {}), createdAt: body.createdAt };
  return { id, json: `${JSON.stringify(doc, null, 1)}\n` };
}

/**
 * Parses and checks one request file's content, before anything is signed: the schema, a kind
 * of client/server/operator, a well-formed subject, an id that matches the content (a request
 * edited after the coordinator wrote it is refused), and the CSR's self-signature and subject.
 */
export async function validateRequest(text: string): Promise<ValidRequest> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new AegisError(ErrorCode.Malformed, 'the request is not JSON');
  }
  const r = RequestFileSchema.safeParse(json);
  if (!r.success) throw new AegisError(ErrorCode.Malformed, 'the request is not in the signing-request format');
  const d = r.data;
  if (!KINDS.includes(d.kind as CertificateKind)) throw new AegisError(ErrorCode.InvalidArgument, 'the request kind is not client, server or operator');
  const kind = d.kind as CertificateKind;
  if (kind === 'server') {
    if (!d.hosts || d.hosts.length === 0) throw new AegisError(ErrorCode.InvalidArgument, 'a server request must name its hosts');
    for (const h of d.hosts) if (!/^[A-Za-z0-9.:-]{1,253}$/.test(h)) throw new AegisError(ErrorCode.InvalidArgument, 'a server request names a malformed host');
    if (d.subject !== d.hosts[0]) throw new AegisError(ErrorCode.InvalidArgument, 'a server request subject must be its first host');
  } else {
    if (d.hosts !== undefined) throw new AegisError(ErrorCode.InvalidArgument, `a ${kind} request names no hosts`);
    assertClientId(d.subject);
  }
  if (d.invite !== undefined && kind !== 'client') throw new AegisError(ErrorCode.InvalidArgument, 'only a client request comes from an invite');
  if (requestId(d) !== d.id) throw new AegisError(ErrorCode.Malformed, 'the request was altered after it was written (its id does not match its content)');
  const csrDer = new Uint8Array(Buffer.from(d.csr, 'base64'));
  const v = await verifyCsr(csrDer, kind, expectedCsrCn(kind, d.subject, d.hosts ?? []));
  const publicKey = v.roundKey ?? v.publicKey;
  return {
    id: d.id,
    kind,
    subject: d.subject,
    ...(d.hosts ? { hosts: d.hosts } : {}),
    csrDer,
    ...(d.invite ? { invite: d.invite } : {}),
    createdAt: d.createdAt,
    publicKey,
    fingerprint: keyFingerprint(publicKey),
    keyType: v.keyType,
  };
}

/** Writes a request into DIR/ca-requests (mode 0644: it is public) and returns its id. */
export async function writeRequest(dataDir: string, body: RequestBody): Promise<string> {
  const dir = join(dataDir, CA_REQUESTS_DIR);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const { id, json } = encodeRequest(body);
  await writeFileAtomic(join(dir, `${id}.json`), json, 0o644);
  return id;
}

/**
 * True when `der` is a leaf certificate of this CA, valid at `now`, for the key whose
 * SubjectPublicKeyInfo is one of `spki` (DER, as `certificateSpki` / `verifyCsr` give it).
 * Public-key operations only: this is what the coordinator checks on every certificate it gets back.
 */
export function chainsTo(ca: CaCertificate, der: Uint8Array, spki: Uint8Array | readonly Uint8Array[], now = Date.now()): boolean {
  try {
    const cert = new NodeX509Certificate(Buffer.from(der));
    const caCert = new NodeX509Certificate(Buffer.from(ca.certificateDer));
    if (cert.ca || !cert.checkIssued(caCert) || !cert.verify(caCert.publicKey)) return false;
    if (!(Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo))) return false;
    const mine = Buffer.from(certificateSpki(der));
    return (spki instanceof Uint8Array ? [spki] : spki).some((k) => mine.equals(Buffer.from(k)));
  } catch {
    return false;
  }
}

/** The SubjectPublicKeyInfo (DER) of the Ed25519 key of `seed`. */
const ed25519Spki = (seed: Uint8Array): Uint8Array => new Uint8Array(createPublicKey(ed25519PrivateKeyObject(seed)).export({ format: 'der', type: 'spki' }));

// ---------------------------------------------------------------------------------------------
// The CA directory (on the CA host).

const IssuedSchema = z
  .object({ serial: z.string().regex(/^[0-9a-f]{1,40}$/), kind: z.enum(['client', 'server', 'operator']), subject: z.string(), request: z.string(), notAfter: z.number().int(), signedAt: z.number().int() })
  .strict();
const CaStateSchema = z.object({ version: z.literal(1), crlNumber: z.number().int().nonnegative(), issued: z.array(IssuedSchema) }).strict();
type CaState = z.infer<typeof CaStateSchema>;

async function readCaState(dir: string): Promise<CaState> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(join(dir, CA_STATE_FILE), 'utf8'));
  } catch {
    throw new AegisError(ErrorCode.Malformed, `${join(dir, CA_STATE_FILE)} is missing or not JSON`);
  }
  const r = CaStateSchema.safeParse(json);
  if (!r.success) throw new AegisError(ErrorCode.Malformed, `${join(dir, CA_STATE_FILE)} is malformed`);
  return r.data;
}

const writeCaState = (dir: string, s: CaState): Promise<void> => writeFileAtomic(join(dir, CA_STATE_FILE), `${JSON.stringify(s, null, 1)}\n`, 0o600);

/** True when DIR holds an offline CA. */
export const isOfflineCaDir = (dir: string): boolean => existsSync(join(dir, VAULT_FILE)) && existsSync(join(dir, CA_STATE_FILE));

/**
 * `aegis ca init`: a new CA (an ECDSA P-256 key from a 32-byte random seed) whose seed is sealed
 * in DIR under a new KEK; writes DIR/ca.pem and the state file. Refuses a DIR that already has a
 * KEK. An offline CA made before P-256 (Ed25519) keeps working (`openOfflineCa`).
 */
export async function initOfflineCa(dir: string, opts: { name: string; kek: KekInitOptions; secrets: KekSecrets }): Promise<{ caPem: string; fingerprint: string; dir: string }> {
  const abs = resolve(dir);
  if (existsSync(join(abs, VAULT_FILE)) || (await hasKek(abs))) throw new AegisError(ErrorCode.AlreadyExists, `${abs} already holds keys; an offline CA is made in a new directory`);
  const ca = await createCa({ name: opts.name });
  const kek = await initKek(abs, opts.kek, opts.secrets);
  try {
    const exported = exportCa(ca);
    await SealedVault.create(join(abs, VAULT_FILE), kek, CA_VAULT_LABEL, { 'ca-seed': exported.seed, 'ca-certificate': exported.certificateDer });
    exported.seed.fill(0);
    await writeFileAtomic(join(abs, 'ca.pem'), ca.certificatePem, 0o644);
    await writeCaState(abs, { version: 1, crlNumber: 0, issued: [] });
  } finally {
    await kek.close();
  }
  return { caPem: ca.certificatePem, fingerprint: certificateFingerprint(ca.certificateDer), dir: abs };
}

/** The CA of an offline CA directory, with its key (opened under DIR's KEK). */
export async function openOfflineCa(dir: string, secrets: KekSecrets): Promise<CertificateAuthority> {
  const abs = resolve(dir);
  if (!isOfflineCaDir(abs)) throw new AegisError(ErrorCode.NotFound, `${abs} is not an offline CA directory (make one with aegis ca init --dir ${abs})`);
  const kek = await openKek(abs, secrets);
  try {
    const vault = await SealedVault.open(join(abs, VAULT_FILE));
    if (!vault.names().includes('ca-seed')) throw new AegisError(ErrorCode.NotFound, `${abs} holds no CA key`);
    const seed = await vault.get(kek, 'ca-seed');
    try {
      return await importCa({ seed, certificateDer: await vault.get(kek, 'ca-certificate') });
    } finally {
      seed.fill(0);
    }
  } finally {
    await kek.close();
  }
}

/** The revocation list the coordinator asks the CA to sign. */
const RevocationsSchema = z
  .object({
    version: z.literal(1),
    kind: z.literal('revocations'),
    entries: z.array(z.object({ serial: z.string().regex(/^[0-9a-f]{1,40}$/), revokedAt: z.number().int(), reason: z.string().max(200) }).strict()).max(100_000),
    createdAt: z.number().int(),
  })
  .strict();
export type RevocationEntry = z.infer<typeof RevocationsSchema>['entries'][number];

/** Writes DATA_DIR/ca-requests/revocations.json (the coordinator's revocations, for the next CRL). */
export async function writeRevocationsRequest(dataDir: string, entries: RevocationEntry[], now = Date.now()): Promise<void> {
  const dir = join(dataDir, CA_REQUESTS_DIR);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await writeFileAtomic(join(dir, REVOCATIONS_REQUEST), `${JSON.stringify({ version: 1, kind: 'revocations', entries, createdAt: now }, null, 1)}\n`, 0o644);
}

export interface RequestSummary {
  file: string;
  id: string;
  kind: CertificateKind;
  subject: string;
  hosts?: string[];
  fingerprint: string;
  /** The type of the key the certificate certifies: p256, or ed25519 (a client enrolled before P-256, the operator key). */
  keyType: TlsKeyType;
  invite?: string;
}

export interface Refusal {
  file: string;
  code: string;
  message: string;
}

/** Reads every request under REQUESTS (a directory or one file): the valid ones and the refused ones. */
export async function readRequests(requests: string, opts: { skipSignedIn?: string } = {}): Promise<{ valid: (ValidRequest & { file: string })[]; refused: Refusal[]; skipped: string[]; revocations?: RevocationEntry[] }> {
  const abs = resolve(requests);
  let files: string[];
  let st;
  try {
    st = await stat(abs);
  } catch {
    throw new AegisError(ErrorCode.NotFound, `no signing requests at ${abs}`);
  }
  if (st.isDirectory()) files = (await readdir(abs)).filter((f) => f.endsWith('.json')).sort().map((f) => join(abs, f));
  else files = [abs];
  const valid: (ValidRequest & { file: string })[] = [];
  const refused: Refusal[] = [];
  const skipped: string[] = [];
  let revocations: RevocationEntry[] | undefined;
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) {
      refused.push({ file, code: ErrorCode.NotFound, message: 'cannot read the request' });
      continue;
    }
    if (basename(file) === REVOCATIONS_REQUEST) {
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      const r = RevocationsSchema.safeParse(json);
      if (r.success) revocations = r.data.entries;
      else refused.push({ file, code: ErrorCode.Malformed, message: 'the revocation list is not in the revocations format' });
      continue;
    }
    try {
      const req = await validateRequest(text);
      if (opts.skipSignedIn && existsSync(join(opts.skipSignedIn, `${req.id}.pem`))) {
        skipped.push(req.id);
        continue;
      }
      valid.push({ ...req, file });
    } catch (e) {
      refused.push({ file, code: e instanceof AegisError ? e.code : 'internal', message: e instanceof Error ? e.message : 'refused' });
    }
  }
  return { valid, refused, skipped, ...(revocations ? { revocations } : {}) };
}

export const summarize = (r: ValidRequest & { file: string }): RequestSummary => ({
  file: r.file,
  id: r.id,
  kind: r.kind,
  subject: r.subject,
  ...(r.hosts ? { hosts: r.hosts } : {}),
  fingerprint: r.fingerprint,
  keyType: r.keyType,
  ...(r.invite ? { invite: r.invite } : {}),
});

/** CRL validity when the CA signs one: 30 days (ops sign a new one before). */
export const CRL_TTL_MS = 30 * 24 * 3600 * 1000;

/**
 * `aegis ca sign-csr`: signs every valid request in `requests` with the CA of `caDir`, writing
 * `<id>.pem` into `out`. Signs nothing when any request is refused (a bad CSR signature, another
 * kind, a malformed id, a file altered after it was written): a request dir with a forged entry
 * is a reason to stop and look. `approve` sees the summaries first and can decline.
 */
export async function signRequests(opts: {
  caDir: string;
  requests: string;
  out: string;
  secrets: KekSecrets;
  ttlMs: number;
  approve: (summaries: RequestSummary[], crl: RevocationEntry[] | undefined) => Promise<boolean>;
  now?: number;
}): Promise<{ signed: (RequestSummary & { serial: string; certificate: string })[]; skipped: string[]; crl?: { file: string; crlNumber: number; entries: number } }> {
  const caDir = resolve(opts.caDir);
  const out = resolve(opts.out);
  if (!isOfflineCaDir(caDir)) throw new AegisError(ErrorCode.NotFound, `${caDir} is not an offline CA directory (make one with aegis ca init --dir ${caDir})`);
  const { valid, refused, skipped, revocations } = await readRequests(opts.requests, { skipSignedIn: out });
  if (refused.length > 0) {
    const lines = refused.map((r) => `${basename(r.file)}: [${r.code}] ${r.message}`).join('; ');
    throw new AegisError(ErrorCode.FailedPrecondition, `refused ${refused.length} request(s), signed nothing: ${lines}`);
  }
  const summaries = valid.map(summarize);
  if (summaries.length === 0 && !revocations) return { signed: [], skipped };
  if (!(await opts.approve(summaries, revocations))) throw new AegisError(ErrorCode.FailedPrecondition, 'not approved: nothing was signed');
  const ca = await openOfflineCa(caDir, opts.secrets);
  const state = await readCaState(caDir);
  await mkdir(out, { recursive: true, mode: 0o755 });
  const now = opts.now ?? Date.now();
  const signed: (RequestSummary & { serial: string; certificate: string })[] = [];
  for (const req of valid) {
    const cert = await issueFromCsr(ca, req, { ttlMs: opts.ttlMs, now });
    const file = join(out, `${req.id}.pem`);
    await writeFileAtomic(file, cert.certificatePem, 0o644);
    state.issued.push({ serial: cert.serial, kind: req.kind, subject: req.subject, request: req.id, notAfter: cert.notAfter.getTime(), signedAt: now });
    await writeCaState(caDir, state);
    signed.push({ ...summarize(req), serial: cert.serial, certificate: file });
  }
  let crl: { file: string; crlNumber: number; entries: number } | undefined;
  if (revocations) {
    const crlNumber = state.crlNumber + 1;
    const r = await signCrl(ca, revocations, { thisUpdate: now, nextUpdate: now + CRL_TTL_MS, crlNumber });
    const file = join(out, `crl-${crlNumber}.pem`);
    await writeFileAtomic(file, r.pem, 0o644);
    state.crlNumber = crlNumber;
    await writeCaState(caDir, state);
    crl = { file, crlNumber, entries: revocations.length };
  }
  return { signed, skipped, ...(crl ? { crl } : {}) };
}

// ---------------------------------------------------------------------------------------------
// The coordinator's side: its data dir in offline mode.

const CaModeSchema = z.object({ version: z.literal(1), mode: z.enum(['embedded', 'offline']), ca: z.string().regex(/^sha256:[0-9a-f]{64}$/) }).strict();

/** The CA mode recorded in a coordinator data dir: 'offline', or 'embedded' (also when nothing is recorded). */
export async function readCaMode(dataDir: string): Promise<'embedded' | 'offline'> {
  return (await readJsonFile(join(dataDir, CA_MODE_FILE), CaModeSchema))?.mode ?? 'embedded';
}

export interface OfflineCoordinatorKeys {
  ca: CaCertificate;
  tokens: TokenIssuer;
  queueKey: Uint8Array;
}

/**
 * First start in offline mode: seals the token key, the queue key, a long-lived TLS server key
 * and the operator key in DATA_DIR's vault — no CA key — and records the mode and the CA.
 */
export async function createOfflineCoordinatorVault(dataDir: string, kek: ManagedKek, caPem: string): Promise<OfflineCoordinatorKeys> {
  const ca = await caCertificateFromPem(caPem);
  const tokens = TokenIssuer.create();
  const queueKey = new Uint8Array(randomBytes(32));
  await SealedVault.create(join(dataDir, VAULT_FILE), kek, COORDINATOR_VAULT_LABEL, {
    'token-seed': tokens.exportSeed(),
    'operator-seed': randomBytes(32),
    'server-seed': randomBytes(32),
    'queue-key': queueKey,
  });
  await writeFileAtomic(join(dataDir, 'ca.pem'), ca.certificatePem, 0o644);
  await writeFileAtomic(join(dataDir, CA_MODE_FILE), `${JSON.stringify({ version: 1, mode: 'offline', ca: certificateFingerprint(ca.certificateDer) })}\n`, 0o644);
  return { ca, tokens, queueKey };
}

/**
 * Later starts in offline mode (the vault has no CA seed): the public CA from DATA_DIR/ca.pem,
 * checked against the recorded mode, and against `offlineCaPem` when given again. An embedded
 * data dir (CA seed in the vault) is never switched to offline mode.
 */
export async function openOfflineCoordinatorVault(dataDir: string, kek: ManagedKek, vault: SealedVault, offlineCaPem?: string): Promise<OfflineCoordinatorKeys> {
  if (vault.names().includes('ca-seed')) {
    throw new AegisError(ErrorCode.FailedPrecondition, `${dataDir} runs the embedded CA (its CA key is in its vault); an offline CA is set up on a new data dir`);
  }
  const modePath = join(dataDir, CA_MODE_FILE);
  if ((await readCaMode(dataDir)) !== 'offline') throw new AegisError(ErrorCode.FailedPrecondition, `${dataDir} holds no CA key and no offline CA record (${CA_MODE_FILE})`);
  const mode = CaModeSchema.parse(JSON.parse(await readFile(modePath, 'utf8')));
  const ca = await caCertificateFromPem(await readFile(join(dataDir, 'ca.pem'), 'utf8'));
  if (certificateFingerprint(ca.certificateDer) !== mode.ca) throw new AegisError(ErrorCode.HashMismatch, `${join(dataDir, 'ca.pem')} is not the CA this data dir was set up with`);
  if (offlineCaPem !== undefined) {
    const given = await caCertificateFromPem(offlineCaPem);
    if (!Buffer.from(given.certificateDer).equals(Buffer.from(ca.certificateDer))) throw new AegisError(ErrorCode.FailedPrecondition, 'the data dir was set up with another offline CA than --offline-ca names');
  }
  const tokenSeed = await vault.get(kek, 'token-seed');
  const tokens = TokenIssuer.fromSeed(tokenSeed);
  tokenSeed.fill(0);
  const queueKey = await vault.get(kek, 'queue-key');
  return { ca, tokens, queueKey };
}

/** The host names the coordinator's TLS server certificate covers for `--listen HOST:PORT` (as the embedded CA's). */
export function serverHostsFor(listen: string): string[] {
  const m = /^(\[[^\]]+\]|[^:]+|[0-9a-fA-F:]+):(\d{1,5})$/.exec(listen);
  if (!m) throw new AegisError(ErrorCode.InvalidArgument, `address must be HOST:PORT, got '${listen}'`);
  const host = m[1]!.replace(/^\[|\]$/g, '');
  const reachable = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  return [...new Set([reachable, '127.0.0.1', 'localhost'])];
}

function sanHosts(der: Uint8Array): string[] {
  const cert = new NodeX509Certificate(Buffer.from(der));
  return (cert.subjectAltName ?? '')
    .split(', ')
    .map((n) => /^(?:DNS|IP Address):(.+)$/.exec(n)?.[1])
    .filter((h): h is string => h !== undefined);
}

async function findRequest(dataDir: string, kind: CertificateKind, csrDer: Uint8Array): Promise<string | undefined> {
  const dir = join(dataDir, CA_REQUESTS_DIR);
  if (!existsSync(dir)) return undefined;
  for (const f of await readdir(dir)) {
    if (!f.endsWith('.json') || f === REVOCATIONS_REQUEST) continue;
    try {
      const r = await validateRequest(await readFile(join(dir, f), 'utf8'));
      if (r.kind === kind && Buffer.from(r.csrDer).equals(Buffer.from(csrDer))) return r.id;
    } catch {
      // not ours to judge here; the CA host refuses it
    }
  }
  return undefined;
}

const readSigned = async (dataDir: string, id: string): Promise<Uint8Array | undefined> => {
  const path = join(dataDir, CA_SIGNED_DIR, `${id}.pem`);
  if (!existsSync(path)) return undefined;
  try {
    return new Uint8Array(new NodeX509Certificate(await readFile(path, 'utf8')).raw);
  } catch {
    return undefined;
  }
};

/**
 * Before an offline-mode coordinator serves: its TLS server certificate (for `hosts`) and the
 * operator certificate, signed by the offline CA. What the vault already holds and still
 * fits is used; anything missing is asked for in DATA_DIR/ca-requests/, and DATA_DIR/ca-signed/
 * is polled (every `pollMs`) until each certificate is there, chains to the CA and matches its
 * key. Certificates are kept in the vault (and operator.pem) for later starts.
 */
export async function awaitOfflineCredentials(
  dataDir: string,
  kek: ManagedKek,
  ca: CaCertificate,
  opts: { hosts: string[]; log?: Logger; announce?: (line: string) => void; pollMs?: number; isStopped?: () => boolean },
): Promise<{ privateKeyPem: string; certificatePem: string }> {
  const vault = await SealedVault.open(join(dataDir, VAULT_FILE));
  const serverSeed = await vault.get(kek, 'server-seed');
  const operatorSeed = await vault.get(kek, 'operator-seed');
  // The server key is P-256; a server certificate signed before P-256 (for the Ed25519 key of the
  // same seed) is used until it no longer fits, then a P-256 one is asked for.
  const serverKeys = [p256Spki(serverSeed, P256Purpose.Server), ed25519Spki(serverSeed)];
  // The operator key is P-256 too; an operator certificate signed before P-256 (for the Ed25519
  // key of the same seed) is used until it no longer fits, then a P-256 one is asked for.
  const operatorKeys = [p256Spki(operatorSeed, P256Purpose.Operator), ed25519Spki(operatorSeed)];
  const fitsServer = (der: Uint8Array): boolean => chainsTo(ca, der, serverKeys) && opts.hosts.every((h) => sanHosts(der).includes(h));
  const fitsOperator = (der: Uint8Array): boolean => chainsTo(ca, der, operatorKeys) && operatorOf(der) === OPERATOR_NAME;
  const have = async (name: string, fits: (der: Uint8Array) => boolean): Promise<Uint8Array | undefined> => {
    if (!vault.names().includes(name)) return undefined;
    const der = await vault.get(kek, name);
    return fits(der) ? der : undefined;
  };
  let server = await have('server-certificate', fitsServer);
  let operator = await have('operator-certificate', fitsOperator);
  const wanted: { name: string; id: string; fits: (der: Uint8Array) => boolean }[] = [];
  const ask = async (kind: CertificateKind, name: string, subject: string, seed: Uint8Array, fits: (der: Uint8Array) => boolean, hosts?: string[]): Promise<void> => {
    const csrDer = await csrForSeed(seed, expectedCsrCn(kind, subject, hosts ?? []), kind === 'server' ? P256Purpose.Server : P256Purpose.Operator);
    const id = (await findRequest(dataDir, kind, csrDer)) ?? (await writeRequest(dataDir, { kind, subject, ...(hosts ? { hosts } : {}), csrDer, createdAt: Date.now() }));
    wanted.push({ name, id, fits });
  };
  if (!server) await ask('server', 'server-certificate', opts.hosts[0]!, serverSeed, fitsServer, opts.hosts);
  if (!operator) await ask('operator', 'operator-certificate', OPERATOR_NAME, operatorSeed, fitsOperator);
  if (wanted.length > 0) {
    const requests = join(dataDir, CA_REQUESTS_DIR);
    const signedDir = join(dataDir, CA_SIGNED_DIR);
    await mkdir(signedDir, { recursive: true, mode: 0o755 });
    opts.log?.info({ requests: wanted.map((w) => w.id) }, 'waiting for the offline CA to sign');
    opts.announce?.(`waiting for the offline CA: ${wanted.length} signing request(s) in ${requests}; on the CA host run:\n  aegis ca sign-csr --dir CADIR ${requests} --out ${signedDir}\n(then bring ${signedDir} back here; checked every ${Math.round((opts.pollMs ?? 1000) / 1000)} s)`);
    const warned = new Set<string>();
    while (wanted.length > 0) {
      if (opts.isStopped?.()) throw new AegisError(ErrorCode.Unavailable, 'stopped while waiting for the offline CA');
      for (let i = wanted.length - 1; i >= 0; i--) {
        const w = wanted[i]!;
        const der = await readSigned(dataDir, w.id);
        if (der === undefined) continue;
        if (!w.fits(der)) {
          if (!warned.has(w.id)) opts.log?.error({ request: w.id }, 'the signed certificate does not chain to the offline CA or does not match the request; ignored');
          warned.add(w.id);
          continue;
        }
        await vault.put(kek, w.name, der);
        if (w.name === 'server-certificate') server = der;
        else operator = der;
        await unlink(join(requests, `${w.id}.json`)).catch(() => undefined);
        wanted.splice(i, 1);
      }
      if (wanted.length > 0) await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
    }
    opts.log?.info('offline CA certificates received');
  }
  await writeFileAtomic(join(dataDir, 'operator.pem'), new NodeX509Certificate(Buffer.from(operator!)).toString(), 0o644);
  const privateKeyPem = serverKeyPem(serverSeed, certificateKeyType(server!));
  serverSeed.fill(0);
  operatorSeed.fill(0);
  return { privateKeyPem, certificatePem: new NodeX509Certificate(Buffer.from(server!)).toString() };
}

// ---------------------------------------------------------------------------------------------
// Enrollment through the offline CA.

const PendingSchema = z
  .object({
    version: z.literal(1),
    pending: z.array(z.object({ request: z.string().regex(/^[0-9a-f]{32}$/), token: z.string().regex(/^[0-9a-f]{64}$/), csr: z.string().regex(/^[0-9a-f]{64}$/), clientId: z.string(), createdAt: z.number().int() }).strict()),
  })
  .strict();
type Pending = z.infer<typeof PendingSchema>['pending'][number];

const tokenHash = (token: string): Buffer => {
  if (typeof token !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(token)) throw new EnrollmentError('malformed');
  return sha256(Buffer.from(token, 'base64url'));
};

/**
 * Enroll for a coordinator with an offline CA. The first call redeems the invite, checks the CSR
 * fully, queues it as a client request and answers `pending_request_id`; the client calls again
 * with the same token and CSR and gets pending until the certificate is in ca-signed/ (checked:
 * it chains to the CA, names the client id and carries the CSR's key), then the certificate.
 * The token is bound to that one CSR: another CSR with it is refused as a used token.
 */
export class OfflineEnrollment {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    readonly dataDir: string,
    readonly ca: CaCertificate,
    private readonly log?: Logger,
  ) {}

  private async load(): Promise<Pending[]> {
    return (await readJsonFile(join(this.dataDir, CA_PENDING_FILE), PendingSchema, CA_PENDING_FILE))?.pending ?? [];
  }

  private save(pending: Pending[]): Promise<void> {
    return writeFileAtomic(join(this.dataDir, CA_PENDING_FILE), `${JSON.stringify({ version: 1, pending }, null, 1)}\n`, 0o644);
  }

  /** One Enroll call (serialized: the pending file is read and written whole). */
  enroll(req: { token: string; csrDer: Uint8Array }, ctx: { registry: Registry; persist: () => Promise<void>; clock: () => number }): Promise<enroll.EnrollReply> {
    const run = this.chain.then(() => this.enrollNow(req, ctx));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async enrollNow(req: { token: string; csrDer: Uint8Array }, ctx: { registry: Registry; persist: () => Promise<void>; clock: () => number }): Promise<enroll.EnrollReply> {
    const { clientId, publicKey } = await inspectCsr(req.csrDer);
    const th = tokenHash(req.token);
    const csrHash = sha256(req.csrDer).toString('hex');
    const pending = await this.load();
    let found: Pending | undefined;
    for (const p of pending) if (ctEqual(new Uint8Array(th), new Uint8Array(Buffer.from(p.token, 'hex'))) && found === undefined) found = p;
    const reply = (fields: { certificateDer?: Uint8Array; pendingRequestId?: string }): enroll.EnrollReply =>
      create(enroll.EnrollReplySchema, { ...fields, caCertificateDer: this.ca.certificateDer, clientId });
    const keyB64 = Buffer.from(publicKey).toString('base64url');
    const checkRegistry = (): void => {
      const existing = ctx.registry.clients.get(clientId);
      if (existing && existing.publicKey !== keyB64) throw new AegisError(ErrorCode.KeyAlreadyBound, `client id '${clientId}' is already enrolled under another key`);
      if (ctx.registry.revocations.isRevoked({ clientId })) throw new AegisError(ErrorCode.EnrollmentRefused, `client id '${clientId}' is revoked; enroll under a new id`);
      const owner = ctx.registry.bindings.owner(publicKey);
      if (owner !== undefined && owner !== clientId) throw new KeyAlreadyBoundError();
    };

    if (found) {
      if (found.csr !== csrHash || found.clientId !== clientId) throw new EnrollmentError('used');
      const der = await readSigned(this.dataDir, found.request);
      if (der === undefined) return reply({ pendingRequestId: found.request });
      // The certificate must certify the CSR's key and name the client id and its round key.
      const { spki } = await verifyCsr(req.csrDer, 'client', clientId);
      let ok = chainsTo(this.ca, der, spki, ctx.clock());
      try {
        ok = ok && clientIdOf(der) === clientId && Buffer.from(certificateKeys(der).roundKey).equals(Buffer.from(publicKey));
      } catch {
        ok = false;
      }
      if (!ok) {
        this.log?.error({ request: found.request }, 'the signed certificate does not chain to the offline CA or does not match the request; ignored');
        return reply({ pendingRequestId: found.request });
      }
      checkRegistry();
      ctx.registry.bindings.bind(publicKey, clientId);
      const cert = new NodeX509Certificate(Buffer.from(der));
      const serial = cert.serialNumber.toLowerCase();
      const now = ctx.clock();
      ctx.registry.clients.set(clientId, {
        clientId,
        publicKey: keyB64,
        enrolledAt: ctx.registry.clients.get(clientId)?.enrolledAt ?? now,
        serial,
        certificateExpiresAt: Date.parse(cert.validTo),
        certificate: Buffer.from(der).toString('base64'),
      });
      await ctx.persist();
      await this.save(pending.filter((p) => p !== found));
      await unlink(join(this.dataDir, CA_REQUESTS_DIR, `${found.request}.json`)).catch(() => undefined);
      this.log?.info({ client: clientId, request: found.request }, 'client enrolled (offline CA)');
      return reply({ certificateDer: der });
    }

    const invite = ctx.registry.invites.redeem(req.token);
    try {
      if (invite.clientId !== undefined && invite.clientId !== clientId) throw new EnrollmentError('malformed');
      checkRegistry();
      if (pending.some((p) => p.clientId === clientId)) throw new AegisError(ErrorCode.KeyAlreadyBound, `client id '${clientId}' already waits for the offline CA under another invite`);
      await verifyCsr(req.csrDer, 'client', clientId);
      const now = ctx.clock();
      const id = await writeRequest(this.dataDir, { kind: 'client', subject: clientId, csrDer: req.csrDer, invite: sha256(th).subarray(0, 8).toString('hex'), createdAt: now });
      await this.save([...pending, { request: id, token: th.toString('hex'), csr: csrHash, clientId, createdAt: now }]);
      await ctx.persist();
      this.log?.info({ client: clientId, request: id }, 'enrollment queued for the offline CA');
      return reply({ pendingRequestId: id });
    } catch (err) {
      ctx.registry.invites.release(req.token);
      throw err;
    }
  }
}

/**
 * The latest CRL signed by the offline CA in DATA_DIR/ca-signed/ (`crl-<n>.pem`, highest n whose
 * signature verifies under DATA_DIR/ca.pem), or undefined. For Admin GetCrl in offline mode.
 */
export async function latestSignedCrl(dataDir: string): Promise<{ der: Uint8Array; pem: string; crlNumber: number } | undefined> {
  const dir = join(dataDir, CA_SIGNED_DIR);
  if (!existsSync(dir)) return undefined;
  const numbered = (await readdir(dir))
    .map((f) => ({ f, n: /^crl-(\d{1,9})\.pem$/.exec(f)?.[1] }))
    .filter((x): x is { f: string; n: string } => x.n !== undefined)
    .map((x) => ({ f: x.f, n: Number(x.n) }))
    .sort((a, b) => b.n - a.n);
  if (numbered.length === 0) return undefined;
  const x509 = await loadX509();
  const ca = await caCertificateFromPem(await readFile(join(dataDir, 'ca.pem'), 'utf8'));
  for (const { f, n } of numbered) {
    try {
      const pem = await readFile(join(dir, f), 'utf8');
      if (!(await verifyCrl(pem, ca))) continue;
      return { der: new Uint8Array(new x509.X509Crl(pem).rawData), pem, crlNumber: n };
    } catch {
      continue;
    }
  }
  return undefined;
}

/** Refuses a CADIR path that is (or is inside) a coordinator data dir: the CA key must not live there. */
export function assertNotCoordinatorDir(dir: string): void {
  if (existsSync(join(dir, 'registry.json')) || existsSync(join(dir, CA_MODE_FILE)) || existsSync(join(dir, 'coordinator.json'))) {
    fail(ErrorCode.FailedPrecondition, `${dir} looks like a coordinator data dir; keep the offline CA in its own directory on another host`);
  }
}
