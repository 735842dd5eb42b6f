/**
 * The loopback HTTP listener under the small node:http servers of either side (`/metrics` on the
 * coordinator and the client, the coordinator's dashboard): an address parsed the same way,
 * loopback only unless allowed, request errors that never crash the process, and a close that
 * ends every connection. With `tls` it serves HTTPS under TLS_SERVER_POLICY (TLS 1.3, 256-bit
 * suites only); a plain-HTTP request to it fails the handshake and gets no answer.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP } from 'node:net';
import { AegisError, ErrorCode } from '../errors.js';
import { TLS_SERVER_POLICY } from './tls-policy.js';

/** localhost, 127.0.0.0/8, ::1 and ::ffff:127.x.y.z. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) !== 6) return false;
  // The URL parser writes IPv6 in its canonical compressed form (0:0:0:0:0:0:0:1 -> ::1,
  // ::ffff:127.0.0.1 -> ::ffff:7f00:1).
  const canonical = new URL(`http://[${h}]/`).hostname.slice(1, -1);
  return canonical === '::1' || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(canonical);
}

function splitHostPort(hp: string, what: string): [string, number] {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(hp);
  if (!m) throw new AegisError(ErrorCode.InvalidArgument, `${what} address must be HOST:PORT, got '${hp.slice(0, 100)}'`);
  const port = Number(m[2]);
  if (port > 65535) throw new AegisError(ErrorCode.InvalidArgument, `port out of range in ${what} address '${hp.slice(0, 100)}'`);
  return [m[1]!.replace(/^\[|\]$/g, ''), port];
}

export interface LocalHttpServer {
  server: Server;
  /** `host:port` actually bound (the port resolved when 0 was asked). */
  address: string;
  /** Stops listening and ends every connection (once; later calls return the same promise). */
  close(): Promise<void>;
}

/**
 * Listens on `listen` (`HOST:PORT`, IPv6 as `[::1]:PORT`; port 0 picks a free one) with
 * `handle`; refuses a non-loopback host unless `opts.allowRemote` (`opts.remoteHint` says how to
 * allow it). A handler that throws gets `onFailure` (or the socket is destroyed).
 */
export async function listenLocalHttp(
  listen: string,
  what: string,
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  onFailure: (req: IncomingMessage, res: ServerResponse) => void,
  opts: {
    allowRemote?: boolean;
    remoteHint: string;
    beforeClose?: () => void;
    /** 0: none (long-lived streams); default 10 s. */
    requestTimeoutMs?: number;
    /** Serve HTTPS with this key and certificate chain (PEM). */
    tls?: { keyPem: string; certPem: string };
  },
): Promise<LocalHttpServer> {
  const [host, port] = splitHostPort(listen, what);
  if (!isLoopbackHost(host) && opts.allowRemote !== true) {
    throw new AegisError(ErrorCode.InvalidArgument, `${what} listen address '${listen.slice(0, 100)}' is not loopback; ${opts.remoteHint}`);
  }
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    handle(req, res).catch(() => {
      try {
        onFailure(req, res);
      } catch {
        res.destroy();
      }
    });
  };
  const httpOptions = { requestTimeout: 10_000, headersTimeout: 5_000, maxHeaderSize: 8 * 1024 };
  const server: Server = opts.tls
    ? createHttpsServer({ ...httpOptions, ...TLS_SERVER_POLICY, key: opts.tls.keyPem, cert: opts.tls.certPem }, onRequest)
    : createServer(httpOptions, onRequest);
  if (opts.requestTimeoutMs !== undefined) server.requestTimeout = opts.requestTimeoutMs;
  server.on('clientError', (_err, socket) => socket.destroy());
  // A failed TLS handshake (plain HTTP, an old protocol or a refused suite) only ends that socket.
  server.on('tlsClientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(new AegisError(ErrorCode.Unavailable, `cannot listen on ${listen} for ${what}: ${err.message}`));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  // After listening, an error must not crash the process (no 'error' listener would throw).
  server.on('error', () => undefined);
  const bound = server.address();
  const boundPort = typeof bound === 'object' && bound !== null ? bound.port : port;
  let closed: Promise<void> | undefined;
  return {
    server,
    address: `${host.includes(':') ? `[${host}]` : host}:${boundPort}`,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        opts.beforeClose?.();
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
}
