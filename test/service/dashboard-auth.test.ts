/**
 * The dashboard's sign-in, sessions and transport (coordinator/dashboard/server.ts,
 * session-http.ts, login-page.ts; coordinator/auth/dashboard-tokens.ts), over real HTTP and real
 * TLS on loopback with the headers a browser sends: sign-in only by a same-origin POST (a
 * cross-origin or query-string attempt gets no cookie and spends no token), logout, the idle
 * timeout and the absolute lifetime on an injected clock, the cookie's flags, plain HTTP only
 * under loopback names, and HTTPS with TLS 1.3 and the 256-bit suites only.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { request, type IncomingMessage } from 'node:http';
import { hostname } from 'node:os';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { createCa, issueServerCertificate, caCertificateFromPem, type CertificateAuthority } from '../../coordinator/auth/ca.js';
import { DashboardTokens } from '../../coordinator/auth/dashboard-tokens.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { serveDashboard, type DashboardServer, type DashboardSource } from '../../coordinator/dashboard/server.js';
import { dashboardHosts } from '../../coordinator/dashboard/certificate.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { codeOf, codeOfAsync } from '../support/codes.js';
import { dashLogin, dashRequest, loginRequest } from '../support/dashboard-http.js';

const source: DashboardSource = {
  overview: () => Promise.resolve({ coordinator: { startedAt: 1, connectedClients: 0, enrolledClients: 0 }, registry: null, flags: { poisoningFlaggedRounds: 0 } }),
  jobs: () => Promise.resolve([]),
  job: () => Promise.resolve(undefined),
};

const cookieParts = (r: { headers: { 'set-cookie'?: string[] | undefined } }): string[] => String(r.headers['set-cookie']).split('; ');

/** Opens /api/events with `session`; resolves `ended` when the server closes the stream. */
function openEvents(base: string, session: string): Promise<{ status: number; ended: Promise<void>; close(): void }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: Number(url.port), path: '/api/events', headers: { cookie: `aegis_dashboard=${session}` } }, (res: IncomingMessage) => {
      res.resume();
      const ended = new Promise<void>((done) => {
        res.on('end', () => done());
        res.on('close', () => done());
      });
      resolve({ status: res.statusCode ?? 0, ended, close: () => req.destroy() });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('sign-in: only a same-origin POST with the token in the body', () => {
  const auth = new DashboardTokens();
  let server: DashboardServer;
  let base: string;

  beforeAll(async () => {
    server = await serveDashboard(source, '127.0.0.1:0', { auth });
    base = server.url;
  });
  afterAll(() => server.close());

  it('GET /login is the public sign-in page (a form that POSTs to /login, its script /login.js); it submits a fragment token by itself only when the operator opened it', async () => {
    const opened = await dashRequest(base, '/login', { headers: { 'sec-fetch-site': 'none', accept: 'text/html' } });
    expect(opened.status).toBe(200);
    expect(opened.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(opened.headers['content-security-policy']).toContain("form-action 'self'");
    expect(opened.headers['set-cookie']).toBeUndefined();
    expect(opened.body).toContain('<form id="login" method="post" action="/login" data-auto="1"');
    expect(opened.body).toContain('<script src="/login.js" defer></script>');
    expect(opened.body).not.toMatch(/<script>/); // no inline script (the CSP would refuse it)
    // Followed from another site (or a client that does not say): the form waits for a click.
    for (const site of ['cross-site', 'same-site', undefined]) {
      const r = await dashRequest(base, '/login', site ? { headers: { 'sec-fetch-site': site } } : {});
      expect([site, r.status, /data-auto="(\d)"/.exec(r.body)?.[1]]).toEqual([site, 200, '0']);
    }
    const script = await dashRequest(base, '/login.js');
    expect(script.status).toBe(200);
    expect(script.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(script.body).toContain('history.replaceState');
    expect(script.body).toContain('#token=');
  });

  it('a token in a URL query signs nobody in and is not spent; the page says the link format changed', async () => {
    const { token } = auth.issue(60_000);
    for (const method of ['GET', 'HEAD']) {
      const r = await dashRequest(base, `/login?token=${token}`, { method, headers: { 'sec-fetch-site': 'none' } });
      expect([method, r.status, r.headers['set-cookie'], r.headers.location]).toEqual([method, 200, undefined, undefined]);
    }
    expect((await dashRequest(base, `/login?token=${token}`)).body).toContain('data-message="query-token"');
    expect(auth.size.sessions).toBe(0);
    // The token still works the proper way.
    expect((await loginRequest(base, token)).status).toBe(303);
  });

  it('refuses a cross-origin sign-in with 403 and no cookie, before the token is read: other origins, other ports, another scheme, no Origin, Sec-Fetch-Site not same-origin', async () => {
    const { token } = auth.issue(60_000);
    const port = new URL(base).port;
    const sessionsBefore = auth.size.sessions;
    const attempts: Record<string, string | undefined>[] = [
      { origin: 'http://evil.example' },
      { origin: `http://127.0.0.1:${Number(port) + 1}` }, // same site, another origin
      { origin: `http://localhost:${port}` }, // another name of the same server is another origin
      { origin: `https://127.0.0.1:${port}` },
      { origin: 'null' },
      { origin: undefined },
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site' },
    ];
    for (const a of attempts) {
      const headers = Object.fromEntries(Object.entries({ origin: base, 'sec-fetch-site': 'same-origin', ...a }).filter((e): e is [string, string] => e[1] !== undefined));
      const r = await dashRequest(base, '/login', { method: 'POST', body: `token=${token}`, headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers } });
      expect([a, r.status, r.headers['set-cookie']]).toEqual([a, 403, undefined]);
      expect(JSON.parse(r.body).error.code).toBe('permission-denied');
    }
    // A browser is shown the sign-in page with the reason.
    const page = await loginRequest(base, token, { headers: { origin: 'http://evil.example', accept: 'text/html' } });
    expect(page.status).toBe(403);
    expect(page.body).toContain('data-message="cross-origin"');
    expect(page.headers['set-cookie']).toBeUndefined();
    expect(auth.size.sessions).toBe(sessionsBefore);
    // None of them spent the token.
    expect((await loginRequest(base, token)).status).toBe(303);
  });

  it('takes only a small form body', async () => {
    const { token } = auth.issue(60_000);
    const json = await dashRequest(base, '/login', { method: 'POST', body: JSON.stringify({ token }), headers: { origin: base, 'content-type': 'application/json' } });
    expect(json.status).toBe(415);
    const big = await dashRequest(base, '/login', { method: 'POST', body: `token=${token}&pad=${'x'.repeat(4096)}`, headers: { origin: base, 'content-type': 'application/x-www-form-urlencoded' } });
    expect(big.status).toBe(413);
    expect(big.headers['set-cookie']).toBeUndefined();
    // A failed sign-in shows the page to a browser.
    const invalid = await loginRequest(base, randomBytes(32).toString('base64url'), { headers: { accept: 'text/html' } });
    expect(invalid.status).toBe(401);
    expect(invalid.body).toContain('data-message="invalid"');
    expect((await loginRequest(base, token)).status).toBe(303);
  });

  it('plain HTTP answers only under a loopback Host name (DNS rebinding gets nothing)', async () => {
    const session = await dashLogin(base, auth.issue().token);
    const port = new URL(base).port;
    for (const host of [`evil.example:${port}`, `10.0.0.1:${port}`, `evil.example@127.0.0.1:${port}`]) {
      const r = await dashRequest(base, '/api/jobs', { cookie: session, headers: { host } });
      expect([host, r.status]).toEqual([host, 421]);
    }
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`]) {
      expect((await dashRequest(base, '/api/jobs', { cookie: session, headers: { host } })).status).toBe(200);
    }
    // The sign-in page too.
    expect((await dashRequest(base, '/login', { headers: { host: `evil.example:${port}` } })).status).toBe(421);
  });
});

describe('sessions: logout, idle timeout, absolute lifetime (injected clock)', () => {
  let now = 1_700_000_000_000;
  const auth = new DashboardTokens({ clock: () => now, idleMs: 10 * 60_000, lifetimeMs: 60 * 60_000 });
  let server: DashboardServer;
  let base: string;

  beforeAll(async () => {
    server = await serveDashboard(source, '127.0.0.1:0', { auth, pollMs: 20 });
    base = server.url;
  });
  afterAll(() => server.close());

  it('POST /logout from the page ends the session (server side), clears the cookie and its event stream; a cross-origin one changes nothing', async () => {
    const session = await dashLogin(base, auth.issue().token);
    const other = await dashLogin(base, auth.issue().token);
    const events = await openEvents(base, session);
    expect(events.status).toBe(200);

    const forged = await dashRequest(base, '/logout', { method: 'POST', cookie: session, headers: { origin: 'http://evil.example' } });
    expect([forged.status, forged.headers['set-cookie']]).toEqual([403, undefined]);
    expect((await dashRequest(base, '/api/jobs', { cookie: session })).status).toBe(200);

    const out = await dashRequest(base, '/logout', { method: 'POST', cookie: session, headers: { origin: base, 'sec-fetch-site': 'same-origin' } });
    expect(out.status).toBe(303);
    expect(out.headers.location).toBe('/login?m=signed-out');
    expect(cookieParts(out).sort()).toEqual(['HttpOnly', 'Max-Age=0', 'Path=/', 'SameSite=Strict', 'aegis_dashboard=']);
    await events.ended;
    for (const path of ['/api/jobs', '/api/session', '/api/events']) expect((await dashRequest(base, path, { cookie: session })).status).toBe(401);
    // Presenting the old cookie again does not bring it back; another session is untouched.
    expect((await dashRequest(base, '/api/jobs', { bearer: session })).status).toBe(401);
    expect((await dashRequest(base, '/api/jobs', { cookie: other })).status).toBe(200);
    expect((await dashRequest(base, '/login?m=signed-out')).body).toContain('data-message="signed-out"');
  });

  it('a session ends after the idle timeout without a request; each request starts it again; /api/session tells both ends', async () => {
    const loginAt = now;
    const session = await dashLogin(base, auth.issue().token);
    const info = JSON.parse((await dashRequest(base, '/api/session', { cookie: session })).body);
    expect(info).toEqual({ expiresAt: loginAt + 60 * 60_000, idleExpiresAt: loginAt + 10 * 60_000, idleTimeoutMs: 10 * 60_000 });

    now += 9 * 60_000;
    expect((await dashRequest(base, '/api/jobs', { cookie: session })).status).toBe(200);
    now += 9 * 60_000; // 18 min after the login, 9 after the last request
    const again = JSON.parse((await dashRequest(base, '/api/session', { cookie: session })).body);
    expect(again.idleExpiresAt).toBe(now + 10 * 60_000);
    // An open event stream is no activity: it ends when the session idles out.
    const events = await openEvents(base, session);
    expect(events.status).toBe(200);
    now += 10 * 60_000;
    await events.ended;
    expect((await dashRequest(base, '/api/jobs', { cookie: session })).status).toBe(401);
    expect(auth.size.sessions).toBe(0);
  });

  it('a session ends at its absolute lifetime however active it is', async () => {
    const session = await dashLogin(base, auth.issue().token);
    for (let t = 0; t < 55; t += 5) {
      now += 5 * 60_000;
      expect([t, (await dashRequest(base, '/api/overview', { cookie: session })).status]).toEqual([t, 200]);
    }
    now += 5 * 60_000; // 60 min after the login, 5 after the last request
    expect((await dashRequest(base, '/api/overview', { cookie: session })).status).toBe(401);
  });

  it('idle timeout and lifetime are bounded (1 min .. 24 h)', () => {
    expect(codeOf(() => new DashboardTokens({ idleMs: 1000 }))).toBe('invalid-argument');
    expect(codeOf(() => new DashboardTokens({ lifetimeMs: 25 * 3_600_000 }))).toBe('invalid-argument');
  });
});

// ---------------------------------------------------------------------------------------------

type Probe = { protocol: string | null; cipher: string; authorized: boolean } | { error: string };

/** A TLS handshake with the dashboard; what was agreed, or why it failed. */
function probe(port: number, opts: ConnectionOptions): Promise<Probe> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ...opts });
    socket.once('secureConnect', () => {
      resolve({ protocol: socket.getProtocol(), cipher: socket.getCipher().standardName, authorized: socket.authorized });
      socket.end();
    });
    socket.once('error', (err) => resolve({ error: err.message }));
  });
}

describe('HTTPS: TLS 1.3 with the 256-bit suites only; Secure __Host- cookie', () => {
  let ca: CertificateAuthority;
  let server: DashboardServer;
  let port: number;
  const auth = new DashboardTokens();

  beforeAll(async () => {
    ca = await createCa({ name: 'dashboard test CA' });
    const cert = await issueServerCertificate(ca, { hosts: ['127.0.0.1'] });
    server = await serveDashboard(source, '127.0.0.1:0', { auth, allowRemote: true, tls: { keyPem: cert.privateKeyPem, certPem: cert.certificatePem } });
    port = Number(server.address.split(':')[1]);
  });
  afterAll(() => server.close());

  it('negotiates TLS 1.3 with AES-256-GCM or ChaCha20-Poly1305 and a certificate from the CA; refuses AES-128-GCM and TLS 1.2', async () => {
    expect(server.url).toBe(`https://${server.address}`);
    expect(server.tls).toBe(true);
    expect(await probe(port, { ca: ca.certificatePem })).toEqual({ protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', authorized: true });
    expect(await probe(port, { ca: ca.certificatePem, ciphers: 'TLS_CHACHA20_POLY1305_SHA256' })).toEqual({ protocol: 'TLSv1.3', cipher: 'TLS_CHACHA20_POLY1305_SHA256', authorized: true });
    expect(await probe(port, { ca: ca.certificatePem, ciphers: 'TLS_AES_128_GCM_SHA256' })).toEqual({ error: expect.stringMatching(/handshake failure|no shared cipher/i) });
    expect(await probe(port, { ca: ca.certificatePem, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' })).toEqual({ error: expect.stringMatching(/protocol version|version/i) });
  });

  it('gives a plain-HTTP request no answer', async () => {
    await expect(dashRequest(`http://127.0.0.1:${port}`, '/login')).rejects.toThrow(/socket hang up|ECONNRESET/);
  });

  it('signs in over HTTPS with a Secure, __Host- cookie; the Origin must be the https origin', async () => {
    const base = server.url;
    const { token } = auth.issue(60_000);
    const plainOrigin = await loginRequest(base, token, { ca: ca.certificatePem, headers: { origin: `http://${server.address}` } });
    expect([plainOrigin.status, plainOrigin.headers['set-cookie']]).toEqual([403, undefined]);
    const r = await loginRequest(base, token, { ca: ca.certificatePem });
    expect(r.status).toBe(303);
    const parts = cookieParts(r);
    expect(parts[0]).toMatch(/^__Host-aegis_dashboard=[A-Za-z0-9_-]{43}$/);
    expect(parts.slice(1).sort()).toEqual(['HttpOnly', 'Max-Age=28800', 'Path=/', 'SameSite=Strict', 'Secure']);
    const session = parts[0]!.split('=')[1]!;
    expect((await dashRequest(base, '/api/jobs', { ca: ca.certificatePem, cookie: session, cookieName: '__Host-aegis_dashboard' })).status).toBe(200);
    // The plain-HTTP cookie name means nothing here.
    expect((await dashRequest(base, '/api/jobs', { ca: ca.certificatePem, cookie: session, cookieName: 'aegis_dashboard' })).status).toBe(401);
  });

  it('refuses TLS material that does not load (a key of another certificate)', async () => {
    const a = await issueServerCertificate(ca, { hosts: ['127.0.0.1'] });
    const b = await issueServerCertificate(ca, { hosts: ['127.0.0.1'] });
    expect(await codeOfAsync(serveDashboard(source, '127.0.0.1:0', { auth, tls: { keyPem: a.privateKeyPem, certPem: b.certificatePem } }))).toBe('invalid-argument');
    expect(await codeOfAsync(serveDashboard(source, '127.0.0.1:0', { auth, tls: { keyPem: 'not a key', certPem: 'not a certificate' } }))).toBe('invalid-argument');
  });
});

describe('Coordinator.startDashboard: the TLS credential for remote exposure', () => {
  it("with allowRemote and no certificate, serves HTTPS with a certificate from the coordinator's CA; a login link carries the token in the fragment", async () => {
    const ca = await createCa({ name: 'dashboard coordinator CA' });
    const c = new Coordinator({ ca, tokens: TokenIssuer.create(), registry: new Registry() });
    try {
      const dash = await c.startDashboard('127.0.0.1:0', { allowRemote: true });
      expect(dash.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const port = Number(dash.address.split(':')[1]);
      expect(await probe(port, { ca: ca.certificatePem })).toEqual({ protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', authorized: true });
      const link = c.issueDashboardToken(60_000);
      expect(link.url).toBe(`${dash.url}/login#token=${link.token}`);
      const r = await loginRequest(dash.url, link.token, { ca: ca.certificatePem });
      expect(r.status).toBe(303);
    } finally {
      await c.close();
    }
  });

  it("the CA certificate's names: the listen host, or for a wildcard address this machine's name and addresses; loopback names always", () => {
    expect(dashboardHosts('10.1.2.3:8443')).toEqual(['10.1.2.3', '127.0.0.1', 'localhost']);
    expect(dashboardHosts('[2001:db8::5]:8443')).toEqual(['2001:db8::5', '127.0.0.1', 'localhost']);
    const wildcard = dashboardHosts('0.0.0.0:8443');
    expect(wildcard).not.toContain('0.0.0.0');
    expect(wildcard).toEqual(expect.arrayContaining(['127.0.0.1', 'localhost', ...(/^[A-Za-z0-9.-]+$/.test(hostname()) ? [hostname()] : [])]));
    expect(wildcard.length).toBeLessThanOrEqual(32);
  });

  it('without a CA key or a server credential on this host, refuses allowRemote without a certificate, naming the flags', async () => {
    const ca = await caCertificateFromPem((await createCa({ name: 'offline' })).certificatePem);
    const c = new Coordinator({ ca, tokens: TokenIssuer.create(), registry: new Registry() });
    try {
      const err = await c.startDashboard('127.0.0.1:0', { allowRemote: true }).catch((e: unknown) => e as Error);
      expect(err).toBeInstanceOf(Error);
      expect((err as { code?: string }).code).toBe('invalid-argument');
      expect((err as Error).message).toContain('--dashboard-tls-cert');
      expect(c.dashboardAddress).toBeUndefined();
    } finally {
      await c.close();
    }
  });
});
