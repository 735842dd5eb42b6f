/**
 * Raw HTTP(S) requests to the coordinator's dashboard for tests: the path is sent as given (no
 * normalisation of `..`), headers exactly as set (a browser's Origin, Sec-Fetch-Site, Host), and
 * the sign-in a browser's form does (`POST /login`, form body, Origin of the dashboard).
 */
import { expect } from '@jest/globals';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface DashReply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface DashRequestOptions {
  method?: string;
  /** The session id, sent as the cookie named `cookieName` (default aegis_dashboard). */
  cookie?: string;
  cookieName?: string;
  bearer?: string;
  headers?: Record<string, string>;
  body?: string;
  /** HTTPS: the CA to verify the server with (default: no verification, the test checks what it needs). */
  ca?: string;
}

/** One request to `base` (`http://host:port` or `https://host:port`). */
export function dashRequest(base: string, path: string, opts: DashRequestOptions = {}): Promise<DashReply> {
  const url = new URL(base);
  const tls = url.protocol === 'https:';
  const headers: Record<string, string> = {
    ...(opts.cookie ? { cookie: `${opts.cookieName ?? 'aegis_dashboard'}=${opts.cookie}` } : {}),
    ...(opts.bearer ? { authorization: `Bearer ${opts.bearer}` } : {}),
    ...(opts.body !== undefined ? { 'content-length': String(Buffer.byteLength(opts.body)) } : {}),
    ...opts.headers,
  };
  const common = { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port), path, method: opts.method ?? 'GET', headers };
  return new Promise((resolve, reject) => {
    const onResponse = (res: import('node:http').IncomingMessage): void => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    };
    const req = tls
      ? httpsRequest({ ...common, ...(opts.ca ? { ca: opts.ca, servername: url.hostname } : { rejectUnauthorized: false }) }, onResponse)
      : httpRequest(common, onResponse);
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** What a browser's sign-in form sends: a form body, and Origin = the dashboard's origin. */
export function loginRequest(base: string, token: string, extra: DashRequestOptions = {}): Promise<DashReply> {
  return dashRequest(base, '/login', {
    ...extra,
    method: 'POST',
    body: new URLSearchParams({ token }).toString(),
    headers: { origin: new URL(base).origin, 'content-type': 'application/x-www-form-urlencoded', 'sec-fetch-site': 'same-origin', ...extra.headers },
  });
}

/** Signs in with `token`; returns the session id from the cookie (expects 303 to /). */
export async function dashLogin(base: string, token: string, extra: DashRequestOptions = {}): Promise<string> {
  const r = await loginRequest(base, token, extra);
  expect([r.status, r.headers.location]).toEqual([303, '/']);
  return /aegis_dashboard=([A-Za-z0-9_-]+)/.exec(String(r.headers['set-cookie']))![1]!;
}
