/**
 * The coordinator's web dashboard, server side (docs/dashboard-api.md is the contract with the
 * page in dashboard/): a small node:http server that serves the built page (dist/dashboard/), a
 * read-only JSON API and Server-Sent Events. On loopback it may speak plain HTTP; with `tls` (and
 * always when `allowRemote`) it serves HTTPS only, TLS 1.3 with the 256-bit suites
 * (shared/net/tls-policy.ts).
 *
 * Auth: a single-use login token (coordinator/auth/dashboard-tokens.ts, minted by `aegis
 * dashboard token` over the operator's mTLS Admin credential) is traded for a session only by
 * `POST /login` with the token in a form body, from the dashboard's own origin (the browser's
 * Origin header must be this server's origin; Sec-Fetch-Site, when sent, `same-origin`). The
 * login link `…/login#token=T` opens the sign-in page (login-page.ts) whose script posts the
 * fragment's token; a token in a URL query signs nobody in. The session cookie is HttpOnly,
 * SameSite=Strict, Path=/, and over TLS `Secure` with the `__Host-` name prefix. A session ends
 * after the idle timeout, at its absolute lifetime, or by `POST /logout` (same-origin check too).
 * Every other path needs the session (cookie or `Authorization: Bearer`); without it: 401.
 * Reads are GET/HEAD only. Plain HTTP answers only requests whose Host names a loopback address
 * (another name pointing at 127.0.0.1 — DNS rebinding — is refused).
 *
 * What it shows is what secure aggregation allows to be known about a round: job ids, phases,
 * counts (declines by reason too), timings, reason codes, hashes and the coordinator's own validation accuracy/loss of
 * each model version. Every response is built field by field from the source's values
 * (`project*` below), so nothing else — no client id, IP, certificate, key, share, vector or
 * weights — can ride along even if a source handed it over.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { realpath, readFile, stat } from 'node:fs/promises';
import { extname, resolve as resolvePath, sep } from 'node:path';
import { createSecureContext } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { DashboardTokens } from '../auth/dashboard-tokens.js';
import { listenLocalHttp } from '../../shared/net/http-listen.js';
import { TLS_SERVER_POLICY } from '../../shared/net/tls-policy.js';
import { LOGIN_SCRIPT, loginPage, type LoginMessage } from './login-page.js';
import { readFormBody, sessionHttp, wantsHtml } from './session-http.js';

export { DASHBOARD_COOKIE, DASHBOARD_COOKIE_TLS } from './session-http.js';

// ---------------------------------------------------------------------------------------------
// The API's shapes (docs/dashboard-api.md).

export type DashboardJobState = 'running' | 'completed' | 'failed' | 'cancelled' | 'aborted';

export interface DashboardOverview {
  coordinator: { startedAt: number; connectedClients: number; enrolledClients: number };
  registry: { version: number; publishers: number } | null;
  flags: { poisoningFlaggedRounds: number };
}

export interface DashboardJobSummary {
  jobId: string;
  kind: 'training' | 'plain';
  state: DashboardJobState;
  signer: { keyId: string; publisher: string | null } | null;
  roundsDone: number;
  rounds: number;
  roundIndex: number;
  phase: string;
  startedAt: number;
  elapsedMs: number;
}

export interface DashboardRound {
  index: number;
  phase: string;
  ok: boolean;
  finished: boolean;
  startedAt: number;
  endedAt: number | null;
  elapsedMs: number;
  timeline: { phase: string; at: number }[];
  clientsPerPhase: { phase: string; clients: number; expected: number }[];
  invited: number;
  dropouts: number;
  refused: number;
  /** Clients that sat the round out, by the reason code they sent (counts only). */
  declines: { reason: string; clients: number }[];
  abortReason: string | null;
  detail: string;
  poisoningFlagged: boolean;
}

export interface DashboardModel {
  version: number;
  roundIndex: number | null;
  clients: number;
  accuracy: number | null;
  loss: number | null;
  /** Hex SHA-256 of the weights. */
  sha256: string;
}

export interface DashboardTraining {
  state: string;
  roundsCompleted: number;
  roundsAborted: number;
  flaggedRounds: number[];
  models: DashboardModel[];
}

/** A DP job's privacy: ε (at `delta`) after each charged round, against the job's budget. */
export interface DashboardDp {
  mechanism: string;
  delta: number;
  /** ε after all the manifest's rounds, from the accountant. */
  epsilonBudget: number;
  /** ε spent so far (after the last charged round; 0 before the first). */
  epsilonSpent: number;
  /** The manifest's rounds. */
  roundsTotal: number;
  /** ε after each round whose noisy sum was released, in round order. */
  rounds: { index: number; epsilon: number }[];
}

export interface DashboardJobDetail {
  job: DashboardJobSummary;
  rounds: DashboardRound[];
  training: DashboardTraining | null;
  /** null for a job without differential privacy. */
  dp: DashboardDp | null;
}

/** Where the dashboard's data comes from (the Coordinator; a fake in tests). */
export interface DashboardSource {
  overview(): Promise<DashboardOverview>;
  jobs(): Promise<DashboardJobSummary[]>;
  /** undefined for an unknown job. */
  /** `summary`: the job's entry from `jobs()` when the caller has it (spares listing every job again). */
  job(jobId: string, summary?: DashboardJobSummary): Promise<DashboardJobDetail | undefined>;
}

export interface ServeDashboardOptions {
  /** Login tokens and sessions. */
  auth: DashboardTokens;
  /** Allow a non-loopback listen address (needs `tls`); default false. */
  allowRemote?: boolean;
  /**
   * Serve HTTPS only (TLS 1.3, TLS_AES_256_GCM_SHA384 / TLS_CHACHA20_POLY1305_SHA256) with this
   * key and certificate chain (PEM). Required with `allowRemote`; without it (loopback) plain HTTP.
   */
  tls?: { keyPem: string; certPem: string };
  /** The built page (index.html, assets/); default dist/dashboard/ next to the built code. */
  assetsDir?: string | URL;
  /** How often SSE checks for changes; default 500 ms. */
  pollMs?: number;
  /** SSE keep-alive comment interval; default 15 s. */
  keepAliveMs?: number;
  /** Most SSE streams open at once; default 32. */
  maxStreams?: number;
}

export interface DashboardServer {
  /** `host:port` actually bound. */
  address: string;
  /** `https://host:port` (TLS) or `http://host:port` (plain, loopback only). */
  url: string;
  /** Whether it serves HTTPS. */
  tls: boolean;
  close(): Promise<void>;
}

export const DEFAULT_DASHBOARD_ASSETS = new URL('../../dashboard/', import.meta.url);

const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/** The sign-in form's body: `token=` and 43 characters, with room to spare. */
const MAX_FORM_BYTES = 1024;
const FORM_TIMEOUT_MS = 10_000;
const BASE_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CSP,
  'X-Content-Type-Options': 'nosniff',
  // Nothing leaves for another origin in a Referer; same-origin requests keep it, which is what
  // makes a browser send the real Origin (not "null") with the sign-in and sign-out POSTs.
  'Referrer-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};
const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
  '.json': 'application/json; charset=utf-8',
};
const JOB_ID_PATH = /^\/api\/jobs\/([^/]{1,256})$/;

// ---------------------------------------------------------------------------------------------
// Projection: every response is rebuilt from known fields of known types.

const num = (x: unknown): number => (typeof x === 'number' && Number.isFinite(x) ? x : 0);
const numOrNull = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);
const str = (x: unknown, max = 256): string => (typeof x === 'string' ? x.slice(0, max) : '');
const strOrNull = (x: unknown, max = 256): string | null => (typeof x === 'string' ? x.slice(0, max) : null);
const HEX64 = /^[0-9a-f]{64}$/;

export function projectOverview(o: DashboardOverview): DashboardOverview {
  return {
    coordinator: { startedAt: num(o.coordinator?.startedAt), connectedClients: num(o.coordinator?.connectedClients), enrolledClients: num(o.coordinator?.enrolledClients) },
    registry: o.registry ? { version: num(o.registry.version), publishers: num(o.registry.publishers) } : null,
    flags: { poisoningFlaggedRounds: num(o.flags?.poisoningFlaggedRounds) },
  };
}

export function projectJob(j: DashboardJobSummary): DashboardJobSummary {
  return {
    jobId: str(j.jobId),
    kind: j.kind === 'training' ? 'training' : 'plain',
    state: (['running', 'completed', 'failed', 'cancelled', 'aborted'] as const).find((s) => s === j.state) ?? 'running',
    signer: j.signer ? { keyId: str(j.signer.keyId, 128), publisher: strOrNull(j.signer.publisher, 128) } : null,
    roundsDone: num(j.roundsDone),
    rounds: num(j.rounds),
    roundIndex: num(j.roundIndex),
    phase: str(j.phase, 64),
    startedAt: num(j.startedAt),
    elapsedMs: num(j.elapsedMs),
  };
}

function projectRound(r: DashboardRound): DashboardRound {
  return {
    index: num(r.index),
    phase: str(r.phase, 64),
    ok: r.ok === true,
    finished: r.finished === true,
    startedAt: num(r.startedAt),
    endedAt: numOrNull(r.endedAt),
    elapsedMs: num(r.elapsedMs),
    timeline: (r.timeline ?? []).map((t) => ({ phase: str(t.phase, 64), at: num(t.at) })),
    clientsPerPhase: (r.clientsPerPhase ?? []).map((c) => ({ phase: str(c.phase, 64), clients: num(c.clients), expected: num(c.expected) })),
    invited: num(r.invited),
    dropouts: num(r.dropouts),
    refused: num(r.refused),
    declines: (r.declines ?? []).slice(0, 64).map((d) => ({ reason: str(d.reason, 64), clients: num(d.clients) })),
    abortReason: strOrNull(r.abortReason, 64),
    detail: str(r.detail, 500),
    poisoningFlagged: r.poisoningFlagged === true,
  };
}

function projectDp(p: DashboardDp | null | undefined): DashboardDp | null {
  if (!p) return null;
  return {
    mechanism: str(p.mechanism, 64),
    delta: num(p.delta),
    epsilonBudget: num(p.epsilonBudget),
    epsilonSpent: num(p.epsilonSpent),
    roundsTotal: num(p.roundsTotal),
    rounds: (p.rounds ?? []).map((r) => ({ index: num(r.index), epsilon: num(r.epsilon) })),
  };
}

export function projectJobDetail(d: DashboardJobDetail): DashboardJobDetail {
  const t = d.training;
  return {
    dp: projectDp(d.dp),
    job: projectJob(d.job),
    rounds: (d.rounds ?? []).map(projectRound),
    training: t
      ? {
          state: str(t.state, 32),
          roundsCompleted: num(t.roundsCompleted),
          roundsAborted: num(t.roundsAborted),
          flaggedRounds: (t.flaggedRounds ?? []).map(num),
          models: (t.models ?? []).map((m) => ({
            version: num(m.version),
            roundIndex: numOrNull(m.roundIndex),
            clients: num(m.clients),
            accuracy: numOrNull(m.accuracy),
            loss: numOrNull(m.loss),
            sha256: HEX64.test(m.sha256) ? m.sha256 : '',
          })),
        }
      : null,
  };
}

// ---------------------------------------------------------------------------------------------
// The server.

function dirPath(dir: string | URL): string {
  return typeof dir === 'string' ? resolvePath(dir) : fileURLToPath(dir);
}

/** `invalid-argument` unless `tls` holds a PEM key and certificate chain that belong together. */
function checkTlsMaterial(tls: { keyPem: string; certPem: string }): void {
  try {
    createSecureContext({ ...TLS_SERVER_POLICY, key: tls.keyPem, cert: tls.certPem });
  } catch (err) {
    // OpenSSL's reason ("key values mismatch", "no start line") names no key material.
    const reason = err instanceof Error ? err.message.slice(0, 120) : 'unreadable';
    throw new AegisError(ErrorCode.InvalidArgument, `the dashboard's TLS key and certificate do not load (a PEM private key and the certificate chain of that key are needed): ${reason}`);
  }
}

/**
 * Serves the dashboard at `listen` (`HOST:PORT`, IPv6 as `[::1]:PORT`; port 0 picks a free one).
 * Refuses a non-loopback host unless `opts.allowRemote`, and `allowRemote` without `opts.tls`.
 */
export async function serveDashboard(source: DashboardSource, listen: string, opts: ServeDashboardOptions): Promise<DashboardServer> {
  const auth = opts.auth;
  if (opts.allowRemote === true && !opts.tls) {
    throw new AegisError(ErrorCode.InvalidArgument, 'a dashboard reachable from other hosts (--dashboard-allow-remote) is served over TLS only, and no TLS certificate is available: pass --dashboard-tls-cert FILE and --dashboard-tls-key FILE');
  }
  if (opts.tls) checkTlsMaterial(opts.tls);
  const http = sessionHttp(opts.tls !== undefined);
  const assets = dirPath(opts.assetsDir ?? DEFAULT_DASHBOARD_ASSETS);
  const pollMs = opts.pollMs ?? 500;
  const keepAliveMs = opts.keepAliveMs ?? 15_000;
  const maxStreams = opts.maxStreams ?? 32;

  const send = (res: ServerResponse, status: number, body: string | Buffer, contentType: string, head: boolean, extra: Record<string, string | string[]> = {}): void => {
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, { ...BASE_HEADERS, 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body), ...extra });
    res.end(head ? undefined : body);
  };
  const json = (res: ServerResponse, status: number, body: unknown, head: boolean, extra: Record<string, string | string[]> = {}): void =>
    send(res, status, JSON.stringify(body), 'application/json; charset=utf-8', head, extra);
  const error = (res: ServerResponse, status: number, code: string, message: string, head: boolean, extra: Record<string, string | string[]> = {}): void =>
    json(res, status, { error: { code, message } }, head, extra);

  /** A file under the assets folder, or undefined (missing, outside, not a regular file, unknown type). */
  const assetFile = async (urlPath: string): Promise<{ body: Buffer; type: string } | undefined> => {
    const rel = urlPath === '/' ? 'index.html' : urlPath.slice(1);
    const type = CONTENT_TYPES[extname(rel).toLowerCase()];
    if (!type) return undefined;
    const root = await realpath(assets).catch(() => undefined);
    if (root === undefined) return undefined;
    const real = await realpath(resolvePath(root, rel)).catch(() => undefined);
    if (real === undefined || !real.startsWith(root + sep)) return undefined;
    const st = await stat(real).catch(() => undefined);
    if (!st?.isFile()) return undefined;
    return { body: await readFile(real), type };
  };

  // ----- SSE: one poller for every open stream.
  interface Stream {
    res: ServerResponse;
    session: string;
    last: { jobs?: string; overview?: string; jobsById: Map<string, string> };
  }
  const streams = new Set<Stream>();
  let poller: NodeJS.Timeout | undefined;
  let keepAlive: NodeJS.Timeout | undefined;
  let polling = false;

  const snapshot = async (): Promise<{ jobs: string; overview: string; details: Map<string, string> }> => {
    const jobs = (await source.jobs()).map(projectJob);
    const overview = JSON.stringify(projectOverview(await source.overview()));
    const details = new Map<string, string>();
    for (const j of jobs) {
      const d = await source.job(j.jobId, j);
      if (d) details.set(j.jobId, JSON.stringify(projectJobDetail(d)));
    }
    return { jobs: JSON.stringify({ jobs }), overview, details };
  };
  const push = (s: Stream, snap: { jobs: string; overview: string; details: Map<string, string> }): void => {
    if (s.res.destroyed) return;
    let out = '';
    if (s.last.jobs !== snap.jobs) out += `event: jobs\ndata: ${snap.jobs}\n\n`;
    for (const [id, d] of snap.details) if (s.last.jobsById.get(id) !== d) out += `event: job\ndata: ${d}\n\n`;
    if (s.last.overview !== snap.overview) out += `event: overview\ndata: ${snap.overview}\n\n`;
    s.last = { jobs: snap.jobs, overview: snap.overview, jobsById: new Map(snap.details) };
    if (out) s.res.write(out);
  };
  const endStream = (s: Stream): void => {
    streams.delete(s);
    if (!s.res.destroyed) s.res.end();
    if (streams.size === 0) {
      clearInterval(poller);
      clearInterval(keepAlive);
      poller = keepAlive = undefined;
    }
  };
  const tick = async (): Promise<void> => {
    if (polling || streams.size === 0) return;
    polling = true;
    try {
      // A stream whose session ended (expired, pruned) is closed.
      for (const s of streams) if (!auth.validSession(s.session)) endStream(s);
      if (streams.size === 0) return;
      const snap = await snapshot();
      for (const s of streams) push(s, snap);
    } catch {
      // The next tick tries again; nothing from the error goes to the page.
    } finally {
      polling = false;
    }
  };
  const openStream = async (req: IncomingMessage, res: ServerResponse, session: string): Promise<void> => {
    if (streams.size >= maxStreams) return error(res, 503, ErrorCode.Unavailable, 'too many live streams', false, { 'Retry-After': '5' });
    const snap = await snapshot();
    res.writeHead(200, { ...BASE_HEADERS, 'Content-Type': 'text/event-stream; charset=utf-8', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    res.write(`retry: 2000\n\n`);
    const s: Stream = { res, session, last: { jobsById: new Map() } };
    streams.add(s);
    push(s, snap);
    req.on('close', () => endStream(s));
    res.on('close', () => endStream(s));
    poller ??= setInterval(() => void tick(), pollMs);
    keepAlive ??= setInterval(() => {
      for (const x of streams) if (!x.res.destroyed) x.res.write(': keep-alive\n\n');
    }, keepAliveMs);
  };

  // ----- Sign-in, sign-out.
  const page = (res: ServerResponse, status: number, req: IncomingMessage, message: LoginMessage | undefined, head: boolean, extra: Record<string, string | string[]> = {}): void => {
    // Only a page the operator opened (typed, pasted, from the terminal or a bookmark) or one of
    // ours submits a fragment's token by itself; a link followed from another site asks first.
    const site = req.headers['sec-fetch-site'];
    const auto = site === 'none' || site === 'same-origin';
    send(res, status, loginPage({ auto, ...(message ? { message } : {}) }), 'text/html; charset=utf-8', head, { Vary: 'Sec-Fetch-Site', ...extra });
  };
  /** A refusal: the sign-in page with `message` for a browser, JSON otherwise. */
  const refuse = (req: IncomingMessage, res: ServerResponse, status: number, code: string, text: string, message: LoginMessage, extra: Record<string, string | string[]> = {}): void => {
    if (wantsHtml(req)) return page(res, status, req, message, false, extra);
    error(res, status, code, text, false, extra);
  };

  const login = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // The origin first: a cross-site attempt reads no body and spends no token.
    if (!http.sameOrigin(req)) {
      return refuse(req, res, 403, ErrorCode.PermissionDenied, "sign-in refused: it must come from this dashboard's own page (Origin)", 'cross-origin');
    }
    const form = await readFormBody(req, MAX_FORM_BYTES, FORM_TIMEOUT_MS);
    if (form === 'unsupported-type') return error(res, 415, ErrorCode.InvalidArgument, 'sign in with a form body (application/x-www-form-urlencoded) holding token=…', false);
    if (form === 'too-large' || form === 'timeout') return error(res, 413, ErrorCode.TooLarge, 'the sign-in body is too large or too slow', false, { Connection: 'close' });
    const token = form.get('token')?.trim();
    const s = token ? auth.redeem(token) : undefined;
    if (!s) return refuse(req, res, 401, ErrorCode.Unauthenticated, 'this login token is not valid (unknown, used or expired): get a new one with `aegis dashboard token`', 'invalid');
    res.writeHead(303, { ...BASE_HEADERS, Location: '/', 'Set-Cookie': http.sessionCookie(s.session, auth.lifetimeMs), 'Content-Length': 0 });
    res.end();
  };

  const logout = (req: IncomingMessage, res: ServerResponse): void => {
    if (!http.sameOrigin(req)) {
      return refuse(req, res, 403, ErrorCode.PermissionDenied, "sign-out refused: it must come from this dashboard's own page (Origin)", 'cross-origin');
    }
    auth.end(http.sessionOf(req));
    // The session's open event streams end with it.
    for (const x of [...streams]) if (!auth.validSession(x.session)) endStream(x);
    res.writeHead(303, { ...BASE_HEADERS, Location: '/login?m=signed-out', 'Set-Cookie': http.clearedCookie(), 'Content-Length': 0 });
    res.end();
  };

  // ----- Routes.
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? '';
    const head = method === 'HEAD';
    const read = method === 'GET' || head;
    if (!http.hostAllowed(req)) return error(res, 421, ErrorCode.InvalidArgument, 'this dashboard does not answer to that Host (over plain HTTP only to a loopback name)', head);
    const raw = req.url ?? '/';
    const q = raw.indexOf('?');
    const rawPath = q < 0 ? raw : raw.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
    let path: string;
    try {
      path = decodeURIComponent(rawPath);
    } catch {
      return error(res, 400, ErrorCode.InvalidArgument, 'bad path', head);
    }

    if (path === '/login') {
      if (method === 'POST') return login(req, res);
      if (!read) return error(res, 405, 'method-not-allowed', 'GET, HEAD or POST', head, { Allow: 'GET, HEAD, POST' });
      // A token in the query signs nobody in (it has been in a URL); the page says how to sign in.
      const message: LoginMessage | undefined = query.has('token') ? 'query-token' : query.get('m') === 'signed-out' ? 'signed-out' : undefined;
      return page(res, 200, req, message, head);
    }
    if (path === '/login.js') {
      if (!read) return error(res, 405, 'method-not-allowed', 'only GET and HEAD', head, { Allow: 'GET, HEAD' });
      return send(res, 200, LOGIN_SCRIPT, 'text/javascript; charset=utf-8', head);
    }
    if (path === '/logout') {
      if (method !== 'POST') return error(res, 405, 'method-not-allowed', 'only POST', head, { Allow: 'POST' });
      return logout(req, res);
    }
    if (!read) return error(res, 405, 'method-not-allowed', 'only GET and HEAD', head, { Allow: 'GET, HEAD' });

    const session = http.sessionOf(req);
    const info = auth.use(session);
    if (!info) {
      if ((path === '/' || path === '/index.html') && wantsHtml(req)) return page(res, 401, req, 'required', head);
      return error(res, 401, ErrorCode.Unauthenticated, 'sign in at /login with a token from `aegis dashboard token`', head);
    }

    if (path === '/api/session') return json(res, 200, info, head);
    if (path === '/api/overview') return json(res, 200, projectOverview(await source.overview()), head);
    if (path === '/api/jobs') return json(res, 200, { jobs: (await source.jobs()).map(projectJob) }, head);
    const m = JOB_ID_PATH.exec(path);
    if (m) {
      const d = await source.job(m[1]!);
      if (!d) return error(res, 404, ErrorCode.NotFound, 'no such job', head);
      return json(res, 200, projectJobDetail(d), head);
    }
    if (path === '/api/events') {
      if (head) return send(res, 200, '', 'text/event-stream; charset=utf-8', true);
      return openStream(req, res, session!);
    }
    if (path.startsWith('/api/')) return error(res, 404, ErrorCode.NotFound, 'no such API', head);

    // Static files: refuse anything with a dot-dot segment, a backslash or a NUL before touching the disk.
    if (path.includes('\0') || path.includes('\\') || path.split('/').some((seg) => seg === '..' || seg === '.')) {
      return error(res, 400, ErrorCode.InvalidArgument, 'bad path', head);
    }
    if (path === '/' || path === '/index.html') {
      const f = await assetFile('/');
      if (!f) {
        const notBuilt = '<!doctype html><meta charset="utf-8"><title>Aegis dashboard unavailable</title><h1>Dashboard not built</h1><p>The dashboard page is not built on this host (run <code>npm run build</code>). The JSON API under /api/ works.</p>\n';
        return send(res, 503, notBuilt, 'text/html; charset=utf-8', head);
      }
      return send(res, 200, f.body, f.type, head);
    }
    const f = await assetFile(path);
    if (!f) return error(res, 404, ErrorCode.NotFound, 'not found', head);
    return send(res, 200, f.body, f.type, head);
  };

  const s = await listenLocalHttp(listen, 'dashboard', handle, (req, res) => error(res, 500, 'internal', 'dashboard data unavailable', req.method === 'HEAD'), {
    ...(opts.allowRemote === undefined ? {} : { allowRemote: opts.allowRemote }),
    ...(opts.tls ? { tls: opts.tls } : {}),
    remoteHint: 'pass --dashboard-allow-remote to expose it beyond this host (served over TLS)',
    // SSE streams outlive any request timeout.
    requestTimeoutMs: 0,
    beforeClose: () => {
      for (const x of [...streams]) endStream(x);
    },
  });
  return { address: s.address, url: `${opts.tls ? 'https' : 'http'}://${s.address}`, tls: opts.tls !== undefined, close: s.close };
}
