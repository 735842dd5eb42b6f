/**
 * The coordinator's two TLS 1.3 listeners (the suites of shared/net/tls-policy.ts):
 * - the main address requires a client certificate issued by the coordinator CA
 *   (`checkClientCertificate`): SecAgg (clients), Enrollment.Renew (clients), Admin (operators),
 *   Trust;
 * - the enrollment address authenticates only the server: Enrollment.Enroll, where a device that
 *   has no certificate yet trades a one-time token and a CSR for one, and Trust.
 * Both serve gRPC health and reflection, and take at most 32 streams per connection. The main
 * listener's calls pass admission first (admission.ts: refused at their headers, capped in size
 * per call kind, ended with their certificate); the enrollment listener takes 64 KiB messages.
 */
import * as grpc from '@grpc/grpc-js';
import type { HealthImplementation } from 'grpc-health-check';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import * as trust from '../../shared/gen/aegis/v1/trust_pb.js';
import { addHealthAndReflection } from '../../shared/rpc/server.js';
import { addService, type MethodsOf, type ServerImpl } from '../../shared/rpc/service.js';
import { PolicyServerCredentials } from '../../shared/rpc/tls-credentials.js';
import { issueServerCertificate, type CaCertificate } from '../auth/ca.js';
import { DEFAULT_REQUEST_CAP, MAX_STREAMS_PER_CONNECTION } from './admission.js';

export interface ServiceImpls {
  secAgg: ServerImpl<MethodsOf<typeof pb.SecAgg>>;
  enrollment: ServerImpl<MethodsOf<typeof enroll.Enrollment>>;
  admin: ServerImpl<MethodsOf<typeof admin.Admin>>;
  trust: ServerImpl<MethodsOf<typeof trust.Trust>>;
}

export interface ListenOptions {
  ca: CaCertificate;
  /** Offline CA: the TLS server key and certificate (signed on the CA host) instead of one issued at each start. */
  serverCredential?: { privateKeyPem: string; certificatePem: string };
  /** Largest message the server takes, bytes; default 64 MiB (m = 10^7 fits). */
  maxMessageBytes?: number;
}

/** The largest message the main listener takes by default (Admin.LaunchRound with a model; a masked input of m = 10^7). */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

export interface Listening {
  servers: grpc.Server[];
  /**
   * Each listener's health service and the services on it that need the coordinator's state (all
   * but Trust): `setStateReachable` turns them NOT_SERVING and back.
   */
  health: { service: HealthImplementation; stateful: string[] }[];
  address: string;
  enrollAddress: string;
}

/**
 * Listens on `listen` (mTLS) and `enrollListen` (server TLS; default: the next port). Port 0
 * picks free ports. Resolves with the servers and the bound addresses.
 */
export async function listenTls(opts: ListenOptions, services: ServiceImpls, listen: string, enrollListen?: string, admission?: grpc.ServerInterceptor): Promise<Listening> {
  const [host, portText] = splitHostPort(listen);
  const hosts = [...new Set([reachable(host), '127.0.0.1', 'localhost'])];
  const server = opts.serverCredential ?? (await issueServerCertificate(opts.ca, { hosts }));
  const material = { keyPem: server.privateKeyPem, certificatePem: server.certificatePem };
  const maxBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const options: grpc.ServerOptions = {
    'grpc.max_receive_message_length': maxBytes,
    'grpc.max_send_message_length': maxBytes,
    'grpc.keepalive_time_ms': 20_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.http2.min_ping_interval_without_data_ms': 5_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.max_concurrent_streams': MAX_STREAMS_PER_CONNECTION,
  };

  const main = new grpc.Server({ ...options, ...(admission ? { interceptors: [admission] } : {}) });
  addService(main, pb.SecAgg, services.secAgg);
  addService(main, enroll.Enrollment, services.enrollment);
  addService(main, admin.Admin, services.admin);
  addService(main, trust.Trust, services.trust);
  const mainHealth = addHealthAndReflection(main, [pb.SecAgg, enroll.Enrollment, admin.Admin, trust.Trust]);
  const mainCreds = new PolicyServerCredentials({ ...material, clientCaPem: opts.ca.certificatePem });
  const mainPort = await bind(main, `${host}:${portText}`, mainCreds);

  const enrollServer = new grpc.Server({ 'grpc.max_receive_message_length': DEFAULT_REQUEST_CAP, 'grpc.max_concurrent_streams': MAX_STREAMS_PER_CONNECTION });
  addService(enrollServer, enroll.Enrollment, services.enrollment);
  addService(enrollServer, trust.Trust, services.trust);
  const enrollHealth = addHealthAndReflection(enrollServer, [enroll.Enrollment, trust.Trust]);
  const enrollCreds = new PolicyServerCredentials(material);
  const enrollTarget = enrollListen ?? `${host}:${portText === '0' ? 0 : Number(portText) + 1}`;
  const [enrollHost] = splitHostPort(enrollTarget);
  const enrollPort = await bind(enrollServer, enrollTarget, enrollCreds);
  const health = [
    { service: mainHealth, stateful: ['', pb.SecAgg.typeName, enroll.Enrollment.typeName, admin.Admin.typeName] },
    { service: enrollHealth, stateful: ['', enroll.Enrollment.typeName] },
  ];
  return { servers: [main, enrollServer], health, address: `${reachable(host)}:${mainPort}`, enrollAddress: `${reachable(enrollHost)}:${enrollPort}` };
}

/**
 * The health status of every service that needs the coordinator's state (and of each server as a
 * whole, the empty name): SERVING while it is reachable, NOT_SERVING while not (Redis down).
 * Trust needs no state and stays SERVING.
 */
export function setStateReachable(health: Listening['health'], reachable: boolean): void {
  for (const h of health) for (const name of h.stateful) h.service.setStatus(name, reachable ? 'SERVING' : 'NOT_SERVING');
}

/** Stops each server: calls in flight may finish for up to 2 s, then the rest are cut. */
export async function shutdown(servers: readonly grpc.Server[]): Promise<void> {
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            s.forceShutdown();
            resolve();
          }, 2000);
          s.tryShutdown(() => {
            clearTimeout(t);
            resolve();
          });
        }),
    ),
  );
}

/** The address to dial for a listen host: a wildcard listener is reached on loopback. */
const reachable = (host: string): string => (host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host);

function splitHostPort(hp: string): [string, string] {
  const m = /^(\[[^\]]+\]|[^:]+|[0-9a-fA-F:]+):(\d{1,5})$/.exec(hp);
  if (!m) throw new AegisError(ErrorCode.InvalidArgument, `address must be HOST:PORT, got '${hp}'`);
  const port = Number(m[2]);
  if (port > 65535) throw new AegisError(ErrorCode.InvalidArgument, `port out of range in '${hp}'`);
  return [m[1]!.replace(/^\[|\]$/g, ''), m[2]!];
}

function bind(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, creds, (err, port) => (err ? reject(new AegisError(ErrorCode.Unavailable, `cannot listen on ${address}: ${err.message}`)) : resolve(port))),
  );
}
