/**
 * The HTTP side of the dashboard's sessions (coordinator/dashboard/server.ts): which cookie, how
 * a request proves it comes from the dashboard's own page (Origin, Sec-Fetch-Site), which Host
 * names a plain-HTTP dashboard answers to, and reading the sign-in form's body. No state here:
 * sessions live in coordinator/auth/dashboard-tokens.ts.
 */
import type { IncomingMessage } from 'node:http';
import { isLoopbackHost } from '../../shared/net/http-listen.js';

/** The session cookie over plain HTTP (loopback). */
export const DASHBOARD_COOKIE = 'aegis_dashboard';
/**
 * The session cookie over TLS: the `__Host-` prefix makes the browser take it only with Secure,
 * Path=/ and no Domain, so no other host (a sibling name) can plant or widen it.
 */
export const DASHBOARD_COOKIE_TLS = '__Host-aegis_dashboard';

/** host or host:port, IPv6 in brackets; nothing else (no user info, no path). */
const HOST_HEADER = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(?::(\d{1,5}))?$/;

export interface SessionHttp {
  readonly tls: boolean;
  readonly cookieName: string;
  /** The session id a request presents: `Authorization: Bearer`, else the cookie. */
  sessionOf(req: IncomingMessage): string | undefined;
  /**
   * Whether a state-changing request comes from this dashboard's own page: `Origin` equals
   * `scheme://Host` of the request (browsers send Origin with every POST, and a cross-origin page
   * cannot forge it), and `Sec-Fetch-Site`, when the browser sends it, is `same-origin`.
   */
  sameOrigin(req: IncomingMessage): boolean;
  /**
   * Whether the request's Host may be answered: over TLS any well-formed one (the certificate
   * binds the names); over plain HTTP only a loopback name, so a foreign name rebound to
   * 127.0.0.1 (DNS rebinding) gets nothing.
   */
  hostAllowed(req: IncomingMessage): boolean;
  /** The Set-Cookie value of a new session living `maxAgeMs`. */
  sessionCookie(session: string, maxAgeMs: number): string;
  /** The Set-Cookie value that removes the session cookie. */
  clearedCookie(): string;
}

function cookieOf(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (typeof header !== 'string') return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

export function sessionHttp(tls: boolean): SessionHttp {
  const scheme = tls ? 'https' : 'http';
  const cookieName = tls ? DASHBOARD_COOKIE_TLS : DASHBOARD_COOKIE;
  const attributes = `Path=/; HttpOnly; SameSite=Strict${tls ? '; Secure' : ''}`;
  return {
    tls,
    cookieName,
    sessionOf(req) {
      const auth = req.headers.authorization;
      if (typeof auth === 'string' && auth.startsWith('Bearer ')) return auth.slice(7).trim();
      return cookieOf(req, cookieName);
    },
    sameOrigin(req) {
      const site = req.headers['sec-fetch-site'];
      if (site !== undefined && site !== 'same-origin') return false;
      const origin = req.headers.origin;
      const host = req.headers.host;
      if (typeof origin !== 'string' || typeof host !== 'string' || !HOST_HEADER.test(host)) return false;
      return origin.toLowerCase() === `${scheme}://${host.toLowerCase()}`;
    },
    hostAllowed(req) {
      const host = req.headers.host;
      const m = typeof host === 'string' ? HOST_HEADER.exec(host) : null;
      if (!m) return false;
      return tls || isLoopbackHost(m[1]!.replace(/^\[|\]$/g, ''));
    },
    sessionCookie(session, maxAgeMs) {
      return `${cookieName}=${session}; ${attributes}; Max-Age=${Math.floor(maxAgeMs / 1000)}`;
    },
    clearedCookie() {
      return `${cookieName}=; ${attributes}; Max-Age=0`;
    },
  };
}

/** Whether the client asked for a page (a browser navigation) rather than JSON. */
export function wantsHtml(req: IncomingMessage): boolean {
  const accept = req.headers.accept;
  return typeof accept === 'string' && accept.includes('text/html');
}

/** Why a form body was not read. */
export type FormBodyRefusal = 'unsupported-type' | 'too-large' | 'timeout';

/**
 * Reads an `application/x-www-form-urlencoded` body of at most `maxBytes`, within `timeoutMs`
 * (a client that trickles it is cut off).
 */
export function readFormBody(req: IncomingMessage, maxBytes: number, timeoutMs: number): Promise<URLSearchParams | FormBodyRefusal> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') return Promise.resolve('unsupported-type');
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > maxBytes) return Promise.resolve('too-large');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (r: URLSearchParams | FormBodyRefusal): void => {
      clearTimeout(timer);
      req.removeAllListeners('data');
      resolve(r);
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > maxBytes) return finish('too-large');
      chunks.push(d);
    });
    req.on('end', () => finish(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('aborted', () => finish('timeout'));
  });
}
