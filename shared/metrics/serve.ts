/**
 * Serves a metrics registry on `GET /metrics` (Prometheus text exposition format), for the
 * coordinator (`aegis coordinator start --metrics`) and a client (`aegis client run --metrics`).
 * It listens through the loopback HTTP listener (shared/net/http-listen.ts): loopback unless told
 * `{ allowRemote: true }`, no request body read, only `GET`/`HEAD /metrics` answered (everything
 * else is a 404), and no error ever escapes into the process.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { listenLocalHttp } from '../net/http-listen.js';

/** What `serveMetrics` serves: the coordinator's metrics, or a client's. */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export interface ServeMetricsOptions {
  /** Allow a non-loopback listen address (e.g. 0.0.0.0); default false. */
  allowRemote?: boolean;
}

export interface MetricsServer {
  /** `host:port` actually bound (the port resolved when 0 was asked). */
  address: string;
  close(): Promise<void>;
}

/**
 * Serves `metrics` on `GET /metrics` at `listen` (`HOST:PORT`, IPv6 as `[::1]:PORT`; port 0 picks
 * a free one). Refuses a non-loopback host unless `opts.allowRemote`. Any other path or method
 * is a 404; no request body is read.
 */
export async function serveMetrics(metrics: MetricsSource, listen: string, opts: ServeMetricsOptions = {}): Promise<MetricsServer> {
  const reply = (res: ServerResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8', head = false): void => {
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
    res.end(head ? undefined : body);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '').split('?', 1)[0];
    const head = req.method === 'HEAD';
    if ((req.method !== 'GET' && !head) || path !== '/metrics') return reply(res, 404, 'not found\n');
    const text = await metrics.metrics();
    reply(res, 200, text, metrics.contentType, head);
  };

  const s = await listenLocalHttp(listen, 'metrics', handle, (_req, res) => reply(res, 500, 'metrics unavailable\n'), {
    ...(opts.allowRemote === undefined ? {} : { allowRemote: opts.allowRemote }),
    remoteHint: 'pass allowRemote to expose metrics beyond this host',
  });
  return { address: s.address, close: s.close };
}
