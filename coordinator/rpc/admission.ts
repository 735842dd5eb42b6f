/**
 * Admission on the main (mTLS) listener: a call is refused as soon as its headers arrive, before
 * any byte of its body is read, when its certificate is unknown, revoked or past its expiry, or
 * when it is the wrong kind of certificate for the service; every admitted call gets a cap on its
 * request size for its kind (receive-limit.ts); and every stream stays tied to its certificate:
 * it ends (UNAUTHENTICATED, `revoked` or `expired`) the moment that certificate is revoked —
 * here, on another front end, by serial — or reaches its notAfter (so does an AcquireUpload
 * still waiting for a slot).
 *
 * Why at the headers and not in the TLS handshake: a handshake refusal cannot say why (Node's TLS
 * server closes the socket without an alert), so a device revoked while offline would retry for
 * ever; refused at its first call it gets `unauthenticated` with the detail `revoked` and stops.
 * Before the body is what matters for the cost: grpc-js pauses a call's HTTP/2 stream until the
 * handler asks for the first message, so a refused call's body is never decoded nor buffered:
 * once the call has its status, grpc-js drops its DATA frames as they arrive. (Resetting the
 * stream right after the status, to stop the sender sooner, was tried: Node then kept the unread
 * DATA against the session's memory and wedged the connection, so it is not done.)
 *
 * The service handlers check the certificate again (caller.ts): this layer adds no trust, it
 * moves the refusal before the body and ends calls that are already running. It hands the
 * handler the certificate it read (by the call's metadata), and reads it from the TLS socket once
 * per connection: grpc-js's `getAuthContext` asks the socket for its whole parsed peer certificate
 * (names, fingerprints; ~140 µs) on every call, and a client makes several calls a round over one
 * connection, whose certificate cannot change (TLS 1.3 has no renegotiation).
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { ErrorCode } from '../../shared/errors.js';
import { certificateFacts, type CertificateFacts } from '../auth/peer.js';
import type { ClientRegistry, RevocationsChanged } from '../clients/client-registry.js';
import { noteAdmittedCertificate } from './caller.js';
import { capReceive, reasonMetadata } from './receive-limit.js';

/** The request cap of every call kind not listed below: 64 KiB. */
export const DEFAULT_REQUEST_CAP = 64 * 1024;
/** Streams one connection may have open at once on either listener. */
export const MAX_STREAMS_PER_CONNECTION = 32;

type Role = 'client' | 'operator' | 'any';

/** Which certificates a service takes: clients for SecAgg and Enrollment, operators for Admin. */
function roleOf(path: string): Role {
  if (path.startsWith('/aegis.v1.SecAgg/') || path.startsWith('/aegis.v1.Enrollment/')) return 'client';
  if (path.startsWith('/aegis.v1.Admin/')) return 'operator';
  return 'any'; // Trust, health, reflection
}

export interface AdmissionOptions {
  clients: ClientRegistry;
  clock: () => number;
  /** The largest message the server takes at all (the cap of Admin.LaunchRound, which carries a model). */
  maxMessageBytes: number;
  /** The largest SecAgg.Send this client may make now (its rounds' messages; a masked input with an upload slot). */
  sendLimit: (clientId: string) => number;
  log?: Logger;
}

/**
 * The TLS connection a call came on, as grpc-js holds it: its base call keeps the HTTP/2 stream as
 * `stream`, whose session shows the socket (one object per session). Not part of grpc-js's typed
 * interface: where it is missing the certificate is read per call, as grpc-js does.
 */
function connectionOf(call: grpc.ServerInterceptingCallInterface): object | undefined {
  const socket = (call as unknown as { stream?: { session?: { socket?: unknown } } }).stream?.session?.socket;
  return typeof socket === 'object' && socket !== null ? socket : undefined;
}

interface OpenCall {
  facts: CertificateFacts;
  end: (code: 'revoked' | 'expired') => void;
}

/** A serial as the registry keeps it: lower-case hex without leading zeros. */
const canonicalSerial = (serial: string): string => serial.toLowerCase().replace(/^0+(?=.)/, '');

/**
 * How long a tracked call's certificate timer waits at most before it looks again: a certificate
 * further from its expiry is re-checked every minute, and the exact expiry is armed within the
 * last minute. One fixed wait for (nearly) every call, not one per call: Node keeps a timer list
 * per distinct duration, and the list of an unref'd timer that is cleared stays until its
 * duration has passed — with one exact time-to-expiry per call (about a day for a client
 * certificate), every upload slot request and stream left one behind for a day.
 */
const RECHECK_MS = 60_000;

export class Admission {
  private readonly opts: AdmissionOptions;
  private readonly open = new Set<OpenCall>();
  private readonly unsubscribe: () => void;
  private refused = 0;
  /** Peer certificates (DER) by connection, read once each (see the file comment). */
  private readonly peerCertificates = new WeakMap<object, Uint8Array>();
  private peerCertificateReads = 0;

  constructor(opts: AdmissionOptions) {
    this.opts = opts;
    this.unsubscribe = opts.clients.onRevocationsChanged((change) => this.revoked(change));
  }

  /** Streams (and waiting AcquireUpload calls) admitted and still running. */
  get openCalls(): number {
    return this.open.size;
  }

  /** Calls refused at their headers since start. */
  get refusedCalls(): number {
    return this.refused;
  }

  /** Times a peer certificate was read from a TLS socket since start (once per connection). */
  get certificateReads(): number {
    return this.peerCertificateReads;
  }

  /** Stops following revocations and forgets the open calls (the servers are shutting down). */
  close(): void {
    this.unsubscribe();
    this.open.clear();
  }

  /** The grpc-js server interceptor; it must be the first one (it caps the base call's decoder). */
  readonly interceptor: grpc.ServerInterceptor = (method, call) => {
    let tracked: OpenCall | undefined;
    let timer: NodeJS.Timeout | undefined;
    const untrack = (): void => {
      if (timer) clearTimeout(timer);
      if (tracked) this.open.delete(tracked);
      tracked = undefined;
    };
    const intercepting: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMd) => {
            const verdict = this.admit(method.path, call);
            if ('refuse' in verdict) {
              this.refused++;
              intercepting.sendStatus({ code: verdict.refuse.code, details: verdict.refuse.details, metadata: reasonMetadata(verdict.refuse.reason) });
              return;
            }
            const { facts, cap, what, der } = verdict;
            noteAdmittedCertificate(metadata, der);
            if (!capReceive(call, cap, what)) {
              this.opts.log?.error('this grpc-js has no per-call message cap: calls are refused');
              intercepting.sendStatus({ code: grpc.status.INTERNAL, details: 'internal error' });
              return;
            }
            // Streams, and the one unary call that may wait long (for an upload slot), end with
            // their certificate. Other unary calls were checked at their start and are short; a
            // Renew or ReissueOperator that supersedes its own certificate must get its answer.
            if (!method.responseStream && method.path !== '/aegis.v1.SecAgg/AcquireUpload') {
              nextMd(metadata);
              return;
            }
            tracked = {
              facts,
              end: (reason) => {
                untrack();
                intercepting.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: `${facts.operator !== undefined ? 'operator' : 'peer'} certificate refused: ${reason}`, metadata: reasonMetadata(ErrorCode.Unauthenticated) });
              },
            };
            this.open.add(tracked);
            const arm = (): void => {
              const left = facts.notAfter - this.opts.clock();
              if (left <= 0) return tracked?.end('expired');
              timer = setTimeout(arm, Math.min(left, RECHECK_MS));
              timer.unref();
            };
            arm();
            if (tracked) nextMd(metadata);
          },
          onCancel: () => untrack(),
        });
      },
      sendStatus: (status, next) => {
        untrack();
        next(status);
      },
    });
    return intercepting;
  };

  /** The verdict on a call's certificate for `path`, from its headers alone. */
  private admit(path: string, call: grpc.ServerInterceptingCallInterface): { facts: CertificateFacts; der: Uint8Array; cap: number; what: string } | { refuse: { code: grpc.status; reason: ErrorCode; details: string } } {
    const unauthenticated = (detail: string, what = 'peer certificate') => ({ refuse: { code: grpc.status.UNAUTHENTICATED, reason: ErrorCode.Unauthenticated, details: `${what} refused: ${detail}` } });
    const der = this.peerCertificate(call);
    if (der === undefined) return unauthenticated('no-identity');
    const facts = this.factsOf(der);
    if (!facts) return unauthenticated('no-identity');
    const role = roleOf(path);
    const { clients } = this.opts;
    const what = facts.operator !== undefined ? 'operator certificate' : 'peer certificate';
    if (clients.isRevoked({ serial: facts.serial }) || (facts.clientId !== undefined && clients.isRevoked({ clientId: facts.clientId }))) return unauthenticated('revoked', what);
    if (facts.notAfter <= this.opts.clock()) return unauthenticated('expired', what);
    if (role === 'operator' && facts.operator === undefined) {
      return { refuse: { code: grpc.status.PERMISSION_DENIED, reason: ErrorCode.PermissionDenied, details: 'this call needs an operator certificate' } };
    }
    if (facts.operator === undefined) {
      // A client certificate: its client must be enrolled here (an unknown id is refused).
      if (facts.clientId === undefined || !clients.get(facts.clientId)) return unauthenticated('no-identity');
    } else if (role === 'client') {
      return unauthenticated('no-identity');
    }
    const kind = path.slice(1).replace('/', '.');
    if (path === '/aegis.v1.SecAgg/Send') return { facts, der, cap: this.opts.sendLimit(facts.clientId!), what: kind };
    if (path === '/aegis.v1.Admin/LaunchRound') return { facts, der, cap: this.opts.maxMessageBytes, what: kind };
    return { facts, der, cap: DEFAULT_REQUEST_CAP, what: kind };
  }

  /** The DER of the call's peer certificate, read from its connection's socket the first time only. */
  private peerCertificate(call: grpc.ServerInterceptingCallInterface): Uint8Array | undefined {
    const connection = connectionOf(call);
    const known = connection && this.peerCertificates.get(connection);
    if (known) return known;
    this.peerCertificateReads++;
    const raw = call.getAuthContext()?.sslPeerCertificate?.raw;
    if (!raw || raw.length === 0) return undefined;
    const der = new Uint8Array(raw);
    if (connection) this.peerCertificates.set(connection, der);
    return der;
  }

  /** What the certificate names (parsed once per certificate), its serial as the registry keeps it; undefined when it names nobody. */
  private factsOf(der: Uint8Array): CertificateFacts | undefined {
    const facts = certificateFacts(der);
    if (!facts || (facts.operator === undefined && facts.clientId === undefined)) return undefined;
    return { ...facts, serial: canonicalSerial(facts.serial) };
  }

  /** Ends every open call of a client or certificate serial just revoked. */
  private revoked(change: RevocationsChanged): void {
    if (change.clients.length === 0 && change.serials.length === 0) return;
    const ids = new Set(change.clients);
    const serials = new Set(change.serials.map(canonicalSerial));
    for (const call of [...this.open]) {
      const { clientId, serial } = call.facts;
      if ((clientId !== undefined && ids.has(clientId)) || serials.has(serial)) call.end('revoked');
    }
  }
}
