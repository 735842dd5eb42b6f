/**
 * The operator's side of the Admin service, for the operator commands (`aegis clients|round|
 * dashboard|operators|tokens …`): which credential, which address, and one call.
 *
 * The credential is the data dir's built-in one (sealed in its vault, opened with the data dir's
 * passphrase), or with `--credential FILE` (or AEGIS_OPERATOR_CREDENTIAL) an operator credential
 * file from `aegis operators issue|reissue` (an aegis-keyfile sealed under its own passphrase,
 * AEGIS_OPERATOR_PASSPHRASE or asked on the terminal). The coordinator checks the credential on
 * every call; when it refuses the built-in one as revoked or expired (the coordinator reissued it
 * meanwhile, e.g. under a long `round status --watch`), the command opens the data dir's
 * credential again and repeats the call once with the new one. A refused call did nothing, so
 * repeating it is safe.
 */
import { X509Certificate } from 'node:crypto';
import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { InvalidArgumentError, type Command } from 'commander';
import { reportError } from '../shared/cli/output.js';
import { channelCredentials } from '../shared/rpc/tls-credentials.js';
import { cliKekSecrets, obtainPassphrase } from '../shared/cli/passphrase.js';
import { AegisError, ErrorCode } from '../shared/errors.js';
import * as admin from '../shared/gen/aegis/v1/admin_pb.js';
import { readKeyfile } from '../shared/keystore/passphrase-keyfile.js';
import { channelOptions } from '../shared/rpc/channel.js';
import { callUnary, clientFor, type MethodsOf, type TypedClient } from '../shared/rpc/service.js';
import { reasonOf } from '../shared/rpc/status.js';
import { operatorKeyPem } from './auth/ca.js';
import { MAX_OPERATOR_TTL_MS, MIN_OPERATOR_TTL_MS } from './auth/operators.js';
import { openOperatorCredential, readEndpoint } from './service/data-dir.js';

export const DEFAULT_DIR = process.env.AEGIS_COORDINATOR_DIR ?? './aegis-coordinator';
/** The label sealed into an operator credential file. */
export const OPERATOR_CREDENTIAL_LABEL = 'aegis/operator-credential';
/** The environment variable holding the passphrase of operator credential files. */
export const OPERATOR_PASSPHRASE_ENV = 'AEGIS_OPERATOR_PASSPHRASE';

export type AdminClient = TypedClient<MethodsOf<typeof admin.Admin>>;

export interface AdminOpts {
  dataDir: string;
  coordinator?: string;
  credential?: string;
  json?: boolean;
}

interface Credential {
  keyPem: string;
  certificatePem: string;
  caPem: string;
}

/**
 * Opens an operator credential file (`aegis operators issue --out`): its key is the one its
 * certificate certifies, P-256 from the sealed seed (or Ed25519 for a file made before P-256).
 */
export async function openCredentialFile(path: string): Promise<Credential> {
  const passphrase = await obtainPassphrase({ env: OPERATOR_PASSPHRASE_ENV, what: `the operator credential ${path}` });
  let secrets: Record<string, Uint8Array>;
  try {
    secrets = await readKeyfile(path, passphrase, { expectedLabel: OPERATOR_CREDENTIAL_LABEL });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new AegisError(ErrorCode.NotFound, `--credential: no file at ${path}`);
    throw err;
  }
  const seed = secrets['operator-seed'];
  const certificate = secrets['operator-certificate'];
  const ca = secrets['ca-certificate'];
  if (!seed || seed.length !== 32 || !certificate || !ca) throw new AegisError(ErrorCode.InvalidArgument, `--credential: ${path} is not an operator credential`);
  let keyPem: string;
  try {
    keyPem = operatorKeyPem(seed, certificate);
  } catch {
    throw new AegisError(ErrorCode.InvalidArgument, `--credential: ${path} is not an operator credential`);
  } finally {
    seed.fill(0);
  }
  return { keyPem, certificatePem: new X509Certificate(Buffer.from(certificate)).toString(), caPem: new X509Certificate(Buffer.from(ca)).toString() };
}

/** An open Admin channel and how to renew its credential. */
export class AdminSession {
  client: AdminClient;
  /** The CA certificate (PEM) the channel pins. */
  readonly caPem: string;
  private serial: string;

  private constructor(
    private readonly address: string,
    credential: Credential,
    /** Opens the credential again (the data dir's built-in one); undefined for a credential file. */
    private readonly reopen: (() => Promise<Credential>) | undefined,
  ) {
    this.client = AdminSession.connect(address, credential);
    this.caPem = credential.caPem;
    this.serial = new X509Certificate(credential.certificatePem).serialNumber;
  }

  private static connect(address: string, c: Credential): AdminClient {
    const creds = channelCredentials(c.caPem, { keyPem: c.keyPem, certificatePem: c.certificatePem });
    return new (clientFor(admin.Admin))(address, creds, { ...channelOptions(address), 'grpc.max_receive_message_length': 256 * 1024 * 1024 });
  }

  static async open(o: AdminOpts): Promise<AdminSession> {
    const dir = resolve(o.dataDir);
    const address = o.coordinator ?? (await readEndpoint(dir))?.address;
    if (!address) throw new AegisError(ErrorCode.Unavailable, `no running coordinator recorded in ${dir}: start one (aegis coordinator start) or pass --coordinator HOST:PORT`);
    const file = o.credential ?? process.env.AEGIS_OPERATOR_CREDENTIAL;
    if (file !== undefined && file !== '') return new AdminSession(address, await openCredentialFile(resolve(file)), undefined);
    const secrets = cliKekSecrets(`the operator credential in ${dir}`);
    const reopen = (): Promise<Credential> => openOperatorCredential(dir, secrets);
    return new AdminSession(address, await reopen(), reopen);
  }

  /** After a refusal of the built-in credential: true when the data dir holds another one now (the channel moved to it). */
  async renew(): Promise<boolean> {
    if (!this.reopen) return false;
    const c = await this.reopen();
    const serial = new X509Certificate(c.certificatePem).serialNumber;
    if (serial === this.serial) return false;
    this.client.close();
    this.client = AdminSession.connect(this.address, c);
    this.serial = serial;
    return true;
  }

  close(): void {
    this.client.close();
  }
}

/** A refusal of the operator's own certificate (not of what the call asked for). */
export const credentialRefused = (err: unknown): boolean =>
  reasonOf(err) === ErrorCode.Unauthenticated && /operator certificate refused: (revoked|expired)/.test((err as { details?: string }).details ?? '');

/** Calls an Admin method; errors become typed AegisErrors with the coordinator's reason. */
export async function call<I, O>(session: AdminSession, method: keyof AdminClient & string, request: I): Promise<O> {
  for (let renewed = false; ; renewed = true) {
    const client = session.client;
    const fn = (client[method] as unknown as (...a: unknown[]) => grpc.ClientUnaryCall).bind(client) as Parameters<typeof callUnary<I, O>>[0];
    try {
      return await callUnary<I, O>(fn, request, new grpc.Metadata(), { deadline: Date.now() + 3_600_000 });
    } catch (err) {
      if (!renewed && credentialRefused(err) && (await session.renew().catch(() => false))) continue;
      const code = reasonOf(err);
      const details = (err as { details?: string }).details ?? String(err);
      throw new AegisError(code ?? ErrorCode.Unavailable, code ? details : `coordinator unreachable: ${details}`);
    }
  }
}

export function withAdmin(cmd: Command): Command {
  return cmd
    .option('--data-dir <dir>', 'the coordinator data dir (holds the sealed built-in operator credential)', DEFAULT_DIR)
    .option('--coordinator <host:port>', 'the coordinator address (default: the one recorded in the data dir)')
    .option('--credential <file>', `an operator credential file (aegis operators issue --out) instead of the data dir's; its passphrase from ${OPERATOR_PASSPHRASE_ENV} (default: AEGIS_OPERATOR_CREDENTIAL)`)
    .option('--json', 'print one JSON object on stdout');
}

/**
 * Runs an operator command: `first` (checks of its own flags and files, before any passphrase is
 * asked or the coordinator called), then `body` with an open session; errors are reported (exit 2).
 */
export async function run<T extends AdminOpts>(o: T, body: (client: AdminSession) => Promise<void>, first?: () => Promise<void> | void): Promise<void> {
  let session: AdminSession | undefined;
  try {
    await first?.();
    session = await AdminSession.open(o);
    await body(session);
  } catch (err) {
    reportError(err, Boolean(o.json));
  } finally {
    session?.close();
  }
}

/** Usage errors (a bad flag or value, named by commander) exit 2 like every other CLI error. */
export function usageErrorsExit2(cmd: Command): Command {
  return cmd.exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 2);
  });
}

/** An operator certificate lifetime flag (`--FLAG DAYS`): days, fractions allowed, 1 minute .. 90 days. */
export function operatorTtlDays(flag: string): (v: string) => number {
  return (v) => {
    const days = Number(v);
    const ms = days * 86_400_000;
    if (!/^\d+(\.\d+)?$/.test(v.trim()) || !Number.isFinite(ms) || ms < MIN_OPERATOR_TTL_MS || ms > MAX_OPERATOR_TTL_MS) {
      throw new InvalidArgumentError(`--${flag} is a number of days between 0.0007 (1 minute) and 90`);
    }
    return days;
  };
}
