/**
 * The dashboard in a real browser. First during a real run: the built CLI (dist/) runs `aegis
 * demo` with `--dashboard 127.0.0.1:0` (a coordinator on loopback TLS, 3 client processes
 * training with tfjs on real digits, FedAvg over secure aggregation), and playwright-core drives
 * Debian's Chromium (/usr/bin/chromium) to the login link the demo prints (`/login#token=…`):
 * the sign-in page posts the fragment's token and lands on the dashboard, the token in no URL the
 * browser requested. The page must follow the run live (Server-Sent Events: the round index and
 * phase change, the accuracy chart gains points without a reload), show no client id, and refuse
 * every request without a session: a fresh browser, a plain fetch, and the same single-use login
 * link a second time. A screenshot goes to test-artifacts/dashboard.png (and docs/dashboard.png
 * with AEGIS_UPDATE_SCREENSHOT=1).
 *
 * Then against `aegis coordinator start --dashboard` processes, with tokens from `aegis dashboard
 * token`: a page on another origin (a second HTTP server: another port, and `localhost` for
 * another site) auto-submitting a form POST to /login with a valid token gets no session, nor
 * does GET /login?token=, nor a login link followed from another site without the operator's
 * click; the token still works from the sign-in form afterwards; "Sign out" ends the session
 * (the API refuses the old cookie); and over HTTPS (an ECDSA certificate of the operator's, the
 * browser trusting exactly that key) the cookie is Secure with the __Host- prefix.
 *
 * The demo's shards are larger than the quickest demo run (--per-digit 500) so that a round
 * takes a second or two and there is a run to watch; nothing here asserts on wall-clock time.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { CLI, cliJson, runCli } from '../support/cli.js';
import { waitFor } from '../support/cluster.js';

const CHROMIUM = '/usr/bin/chromium';
const CLIENTS = 3;
const ROUNDS = 4;
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const ARTIFACTS = join(REPO, 'test-artifacts');
const ARTIFACT = join(ARTIFACTS, 'dashboard.png');
const DOCS_SCREENSHOT = join(REPO, 'docs', 'dashboard.png');
const LOGIN_LINE = /dashboard: (http:\/\/127\.0\.0\.1:\d+)\/login#token=([A-Za-z0-9_-]+)/;

let out: string;
let demo: ChildProcess | undefined;
let demoStderr = '';
let demoExit: Promise<number | null>;
let browser: Browser | undefined;
let base: string;
let loginUrl: string;
let demoToken: string;
/** The operator's own dashboard certificate (ECDSA P-256 by openssl), which the browser trusts by its key. */
let certFile: string;
let keyFile: string;
/** Set by the live test once the login link was spent, which the refusal test relies on. */
let liveContext: BrowserContext | undefined;
let livePage: Page | undefined;
/** `aegis coordinator start` processes of the second part. */
const coordinators: ChildProcess[] = [];
/** The other origin's HTTP server (the cross-site pages). */
let evil: Server | undefined;

/** The demo's client ids: how run.ts names them, plus any `client-…` the run wrote anywhere. */
function clientIds(): string[] {
  const ids = new Set<string>();
  const width = String(CLIENTS - 1).length;
  for (let i = 0; i < CLIENTS; i++) ids.add(`client-${String(i).padStart(width, '0')}`);
  const scan = (text: string): void => {
    for (const m of text.matchAll(/\bclient-[0-9a-z]+\b/g)) ids.add(m[0]);
  };
  scan(demoStderr);
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.(json|txt|svg)$/.test(name)) scan(readFileSync(p, 'utf8'));
    }
  };
  walk(out);
  return [...ids];
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  if (!existsSync(join(REPO, 'dist', 'dashboard', 'index.html'))) throw new Error('dist/dashboard/ is missing: run "npm run build" first');
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (Debian package chromium; .ci/run installs it)`);
  out = mkdtempSync(join(tmpdir(), 'aegis-dashboard-'));
  certFile = join(out, 'dashboard-cert.pem');
  keyFile = join(out, 'dashboard-key.pem');
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`openssl req failed: ${made.stderr}`);
  const spki = createHash('sha256').update(new X509Certificate(readFileSync(certFile)).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  const args = ['demo', '--clients', String(CLIENTS), '--rounds', String(ROUNDS), '--per-digit', '500', '--workers', '1', '--out', out];
  // The hold keeps the dashboard up after the last round for the refusal checks; afterAll stops the demo.
  args.push('--dashboard', '127.0.0.1:0', '--dashboard-hold', '60s');
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, AEGIS_LOG_LEVEL: 'warn' } });
  demo = child;
  demoExit = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const link = new Promise<RegExpExecArray>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      demoStderr += d.toString();
      const m = LOGIN_LINE.exec(demoStderr);
      if (m) resolve(m);
    });
    child.on('exit', (code) => reject(new Error(`the demo exited (${code}) before printing its dashboard link: ${demoStderr.slice(-1000)}`)));
  });
  // Start the browser while the demo enrolls its clients: the page should be open before round 1.
  const [m, b] = await Promise.all([
    link,
    chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--ignore-certificate-errors-spki-list=${spki}`],
    }),
  ]);
  browser = b;
  base = m[1]!;
  demoToken = m[2]!;
  loginUrl = `${m[1]}/login#token=${m[2]}`;
});

afterAll(async () => {
  await browser?.close();
  for (const c of coordinators) if (c.exitCode === null) c.kill('SIGKILL');
  await new Promise<void>((resolve) => (evil ? evil.close(() => resolve()) : resolve()));
  if (demo && demo.exitCode === null) {
    demo.kill('SIGTERM');
    await demoExit;
  }
  if (out) rmSync(out, { recursive: true, force: true });
});

/** Runs in the page (as a string: the test's own types have no DOM): records every change of what the test reads. */
const RECORDER = `(() => {
  window.__aegisMarker = 'same document';
  const seen = (window.__aegisSeen = []);
  const read = () => {
    const q = (id) => document.querySelector('[data-testid="' + id + '"]');
    return {
      round: q('round-index')?.getAttribute('data-value') ?? '',
      phase: q('phase')?.getAttribute('data-value') ?? '',
      points: Number(q('accuracy-chart')?.getAttribute('data-points') ?? -1),
      lossPoints: Number(q('loss-chart')?.getAttribute('data-points') ?? -1),
      state: document.querySelector('[data-testid="job-view"] [data-testid="job-state"]')?.textContent ?? '',
    };
  };
  const record = () => {
    const now = read();
    const last = seen[seen.length - 1];
    if (!last || Object.keys(now).some((k) => now[k] !== last[k])) seen.push(now);
  };
  new MutationObserver(record).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  record();
})()`;

/**
 * Polls a page expression until it is true (page.waitForFunction would eval a string in the
 * page, which the dashboard's CSP — no 'unsafe-eval' — rightly refuses; page.evaluate does not).
 */
async function waitUntil(page: Page, expr: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await page.evaluate(expr))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${expr}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface Seen {
  round: string;
  phase: string;
  points: number;
  lossPoints: number;
  state: string;
}

describe('dashboard in Chromium during a real demo run', () => {
  test('follows the run live: job row, round and phase changes, the accuracy chart grows without a reload; no client id on the page', async () => {
    const context = await browser!.newContext({ viewport: { width: 1280, height: 1000 } });
    liveContext = context;
    const page = await context.newPage();
    livePage = page;
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
    });

    // The login link: the sign-in page posts the fragment's token (same origin, token in the
    // body), gets the session cookie and a redirect to the page. No URL the browser asked for
    // and no Referer carries the token (the script took the fragment out before posting).
    const requests: { url: string; method: string; referer: string | undefined; body: string | null }[] = [];
    page.on('request', (r) => requests.push({ url: r.url(), method: r.method(), referer: r.headers()['referer'], body: r.postData() }));
    await page.goto(loginUrl, { waitUntil: 'commit' });
    await page.waitForURL(`${base}/`);
    const cookies = await context.cookies();
    const cookie = cookies.find((c) => c.name === 'aegis_dashboard');
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/', secure: false });
    await page.waitForSelector('[data-testid="connection"][data-state="live"]', { timeout: 30_000 });
    expect(requests.map((r) => `${r.method} ${new URL(r.url).pathname}`).slice(0, 3)).toEqual(['GET /login', 'GET /login.js', 'POST /login']);
    expect(requests.find((r) => r.method === 'POST')!.body).toBe(`token=${demoToken}`);
    for (const r of requests) {
      expect(r.url).not.toContain(demoToken);
      // Referrer-Policy same-origin: a Referer only within the dashboard, without the fragment.
      if (r.referer !== undefined) expect(new URL(r.referer).origin).toBe(base);
      expect(r.referer ?? '').not.toContain(demoToken);
    }
    expect(requests.find((r) => r.method === 'POST')!.referer).toBe(`${base}/login`);
    expect(page.url()).toBe(`${base}/`);

    // The job appears in the jobs table (pushed over SSE) with its signer and rounds; open it.
    const row = page.locator('[data-testid^="job-row-"]').first();
    await row.waitFor({ timeout: 120_000 });
    const jobId = (await row.getAttribute('data-testid'))!.slice('job-row-'.length);
    expect(jobId).not.toBe('');
    expect(await row.textContent()).toContain('demo publisher');
    expect(await row.locator('[data-testid="job-rounds"]').textContent()).toMatch(new RegExp(`^\\d+/${ROUNDS}$`));
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-jobs.png') });
    await row.locator('a').click();
    await page.waitForSelector('[data-testid="job-view"]');
    expect(await page.locator('[data-testid="job-id"]').textContent()).toBe(jobId);
    await page.evaluate(RECORDER);

    // Watch the run to its end, then until the last model's accuracy is drawn.
    const view = '[data-testid="job-view"] [data-testid="job-state"]';
    await waitUntil(page, `document.querySelector('${view}')?.textContent === 'completed'`, 240_000);
    await waitUntil(page, `document.querySelector('[data-testid="accuracy-chart"]')?.getAttribute('data-points') === '${ROUNDS + 1}'`, 30_000);
    const seen = (await page.evaluate('window.__aegisSeen')) as Seen[];
    writeFileSync(join(ARTIFACTS, 'dashboard-seen.json'), `${JSON.stringify(seen, null, 1)}\n`);
    expect(await page.evaluate('window.__aegisMarker')).toBe('same document'); // never reloaded

    // The round index and the phase changed while the page was open.
    const rounds = new Set(seen.map((s) => s.round).filter((r) => r !== ''));
    const phases = new Set(seen.map((s) => s.phase).filter((p) => p !== ''));
    expect(rounds.size).toBeGreaterThanOrEqual(2);
    expect(phases.size).toBeGreaterThanOrEqual(2);
    expect(seen.some((s) => s.state === 'running')).toBe(true);
    // The accuracy chart grew in place: fewer points when first seen than at the end (round 0
    // is the initial model, then one point per round), never shrinking on the way.
    const points = seen.map((s) => s.points);
    expect(points[0]!).toBeLessThan(ROUNDS + 1);
    expect(points[points.length - 1]).toBe(ROUNDS + 1);
    expect(new Set(points).size).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < points.length; i++) expect(points[i]!).toBeGreaterThanOrEqual(points[i - 1]!);
    expect(seen[seen.length - 1]!.lossPoints).toBe(ROUNDS + 1);
    // The chart is drawn (uPlot renders to a canvas).
    expect(await page.locator('[data-testid="accuracy-chart"] canvas').count()).toBeGreaterThan(0);

    // The finished run: every round completed with all clients, the registry version shown.
    const roundRows = page.locator('[data-testid="rounds-table"] tbody tr');
    expect(await roundRows.count()).toBeGreaterThanOrEqual(ROUNDS);
    expect(await page.locator('[data-testid="rounds-done"]').textContent()).toBe(`${ROUNDS}/${ROUNDS}`);
    expect(await page.locator('[data-testid^="step-"][data-state="done"]').count()).toBe(5);
    expect(await page.locator('[data-testid="step-masked-input"] [data-testid="step-clients"]').textContent()).toBe(`${CLIENTS}/${CLIENTS} clients`);
    expect(await page.locator('[data-testid="registry-version"]').getAttribute('data-value')).toMatch(/^\d+$/);
    expect(await page.locator('[data-testid="poisoning-badge"]').isHidden()).toBe(true);

    // Nothing on the page names a client (text or markup).
    const ids = clientIds();
    expect(ids.length).toBeGreaterThanOrEqual(CLIENTS);
    const text = await page.locator('body').innerText();
    const html = await page.content();
    for (const id of ids) {
      expect(text).not.toContain(id);
      expect(html).not.toContain(id);
    }
    expect(html).not.toMatch(/client-\d/);

    await page.screenshot({ path: ARTIFACT, fullPage: true });
    if (process.env.AEGIS_UPDATE_SCREENSHOT === '1') copyFileSync(ARTIFACT, DOCS_SCREENSHOT);

    expect(problems).toEqual([]);
  });

  test('refuses without a session: a fresh browser, a plain fetch, the login link a second time; the page stops on a 401', async () => {
    expect(livePage).toBeDefined(); // the live test spent the login link

    // A fresh browser context (no cookie) opening the page: 401 and the sign-in form.
    const fresh = await browser!.newContext();
    const page = await fresh.newPage();
    const res = await page.goto(`${base}/`);
    expect(res?.status()).toBe(401);
    expect(await page.locator('[data-testid="login-message"]').getAttribute('data-message')).toBe('required');
    expect(await page.locator('body').innerText()).toContain('aegis dashboard token');
    // The single-use login link, a second time: the page posts it and is refused.
    const refused = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/login');
    await page.goto(loginUrl, { waitUntil: 'commit' });
    expect((await refused).status()).toBe(401);
    await page.waitForSelector('[data-testid="login-message"][data-message="invalid"]');
    expect(await fresh.cookies()).toEqual([]);
    await fresh.close();

    // From node, no cookie: the API, the event stream and the page's assets are refused.
    for (const path of ['/api/jobs', '/api/overview', '/api/events', '/']) {
      const r = await fetch(`${base}${path}`);
      expect([path, r.status]).toEqual([path, 401]);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('unauthenticated');
    }
    const reuse = await fetch(`${base}/login`, { method: 'POST', redirect: 'manual', headers: { origin: base, 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${demoToken}` });
    expect(reuse.status).toBe(401);
    expect(reuse.headers.get('set-cookie')).toBeNull();
    await reuse.body?.cancel();

    // The open page loses its session: the next API call gets 401, the page says how to sign in
    // again and stops (no retry loop).
    const live = livePage!;
    const apiRequests: string[] = [];
    live.on('request', (r) => {
      if (new URL(r.url()).pathname.startsWith('/api/')) apiRequests.push(r.url());
    });
    await liveContext!.clearCookies();
    await live.evaluate(`location.hash = '#/job/' + encodeURIComponent('no-such-job')`);
    const notice = live.locator('[data-testid="unauthenticated"]');
    await notice.waitFor({ timeout: 30_000 });
    expect(await notice.innerText()).toContain('Not signed in: run aegis dashboard token');
    expect(await live.locator('[data-testid="connection"]').getAttribute('data-state')).toBe('signed-out');
    const after = apiRequests.length;
    await live.waitForTimeout(5_000); // longer than the page's polling interval (2 s)
    expect(apiRequests.length).toBe(after);
    await liveContext!.close();
  });
});

// ---------------------------------------------------------------------------------------------

const cliEnv = { ...process.env, AEGIS_PASSPHRASE: 'operator passphrase for tests', AEGIS_LOG_LEVEL: 'warn' };

/** Starts `aegis coordinator start --dashboard 127.0.0.1:0 …`; resolves with its data dir and dashboard address. */
async function startCoordinator(name: string, flags: string[]): Promise<{ dir: string; address: string }> {
  const dir = join(out, name);
  const child = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', dir, '--allow-unsigned', '--dashboard', '127.0.0.1:0', ...flags], { env: cliEnv, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  coordinators.push(child);
  await waitFor(() => existsSync(join(dir, 'coordinator.json')) || child.exitCode !== null, 90_000, `the ${name} coordinator to listen`);
  if (child.exitCode !== null) throw new Error(`the ${name} coordinator exited (${child.exitCode}): ${stderr.slice(-800)}`);
  const endpoint = JSON.parse(readFileSync(join(dir, 'coordinator.json'), 'utf8')) as { dashboard: string };
  return { dir, address: endpoint.dashboard };
}

/** A fresh login token from `aegis dashboard token` (the operator's Admin call). */
function token(dir: string): string {
  const r = cliJson(runCli(['dashboard', 'token', '--json', '--data-dir', dir], cliEnv));
  return r.token as string;
}

/**
 * Another origin's pages, as an attacker would host them: `/post?…` auto-submits a form POST to
 * the dashboard's /login with a token; `/link?…` holds a link to the dashboard. Every value put
 * into the markup is checked to be URL- or token-shaped first.
 */
function evilPage(path: string, q: URLSearchParams): string {
  const target = q.get('target') ?? '';
  if (!/^https?:\/\/127\.0\.0\.1:\d+$/.test(target)) return 'bad target';
  if (path === '/post') {
    const t = q.get('token') ?? '';
    if (!/^[A-Za-z0-9_-]{43}$/.test(t)) return 'bad token';
    return `<!doctype html><title>cute cats</title><form method="post" action="${target}/login"><input type="hidden" name="token" value="${t}"></form><script>document.forms[0].submit()</script>`;
  }
  const hash = q.get('hash') ?? '';
  if (!/^[A-Za-z0-9_=#-]*$/.test(hash)) return 'bad hash';
  return `<!doctype html><title>cute cats</title><a id="go" href="${target}/login${hash}">more cats</a>`;
}

describe('sign-in and sign-out in Chromium against `aegis coordinator start --dashboard`', () => {
  let plain: { dir: string; address: string };
  let dash: string;
  let evilPort: number;

  beforeAll(async () => {
    evil = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(evilPage(u.pathname, u.searchParams));
    });
    await new Promise<void>((resolve) => evil!.listen(0, '127.0.0.1', () => resolve()));
    evilPort = (evil.address() as { port: number }).port;
    plain = await startCoordinator('plain', []);
    dash = `http://${plain.address}`;
  });

  /** The dashboard's cookies in `context`. */
  const dashCookies = async (context: BrowserContext, url: string): Promise<string[]> => (await context.cookies(url)).map((c) => c.name);

  test('another origin auto-submitting a form POST to /login with a valid token gets 403 and no session (another port, another site); GET /login?token= and a link followed from another site sign nobody in; the token then works from the sign-in form', async () => {
    const t = token(plain.dir);
    const context = await browser!.newContext();
    const page = await context.newPage();
    const loginPost = (): Promise<import('playwright-core').Response> => page.waitForResponse((r) => r.request().method() === 'POST' && r.url() === `${dash}/login`);

    // The attacker's page on another port of the same host (same site, another origin), then on
    // `localhost` (another site): the form POST arrives with the attacker's Origin and is refused.
    for (const attacker of [`http://127.0.0.1:${evilPort}`, `http://localhost:${evilPort}`]) {
      const refused = loginPost();
      await page.goto(`${attacker}/post?target=${encodeURIComponent(dash)}&token=${t}`, { waitUntil: 'commit' });
      const r = await refused;
      expect([attacker, r.status()]).toEqual([attacker, 403]);
      expect(await r.request().headerValue('origin')).toBe(attacker);
      expect(await r.headerValue('set-cookie')).toBeNull();
      await page.waitForSelector('[data-testid="login-message"][data-message="cross-origin"]');
      expect(await dashCookies(context, dash)).toEqual([]);
    }

    // A token in the query (the old link format): the sign-in page and no session; the script
    // takes the query out of the address bar.
    await page.goto(`${dash}/login?token=${t}`);
    await page.waitForSelector('[data-testid="login-message"][data-message="query-token"]');
    expect(page.url()).toBe(`${dash}/login`);
    expect(await dashCookies(context, dash)).toEqual([]);

    // A login link followed from another site: the form is filled but waits for the operator.
    const posts: string[] = [];
    page.on('request', (r) => {
      if (r.method() === 'POST') posts.push(r.url());
    });
    const t2 = token(plain.dir);
    await page.goto(`http://localhost:${evilPort}/link?target=${encodeURIComponent(dash)}&hash=${encodeURIComponent(`#token=${t2}`)}`);
    await page.click('#go');
    await page.waitForSelector('[data-testid="login-cross-site"]:not([hidden])');
    expect(page.url()).toBe(`${dash}/login`); // the fragment is gone from the address bar
    expect(await page.inputValue('[data-testid="login-token"]')).toBe(t2);
    await page.waitForTimeout(1000); // nothing is submitted meanwhile
    expect(posts).toEqual([]);
    expect(await dashCookies(context, dash)).toEqual([]);

    // None of the refused attempts spent the first token: pasted into the sign-in form, it works.
    await page.goto(`${dash}/login`);
    await page.fill('[data-testid="login-token"]', t);
    await page.click('[data-testid="sign-in"]');
    await page.waitForURL(`${dash}/`);
    await page.waitForSelector('[data-testid="connection"][data-state="live"]', { timeout: 30_000 });
    expect(await dashCookies(context, dash)).toEqual(['aegis_dashboard']);
    await context.close();
  });

  test('"Sign out" ends the session on the server: the page goes to the sign-in page, the API refuses the old cookie', async () => {
    const context = await browser!.newContext();
    const page = await context.newPage();
    await page.goto(`${dash}/login#token=${token(plain.dir)}`, { waitUntil: 'commit' });
    await page.waitForURL(`${dash}/`);
    await page.waitForSelector('[data-testid="connection"][data-state="live"]', { timeout: 30_000 });
    const session = (await context.cookies(dash)).find((c) => c.name === 'aegis_dashboard')!.value;
    expect((await fetch(`${dash}/api/jobs`, { headers: { cookie: `aegis_dashboard=${session}` } })).status).toBe(200);

    await page.click('[data-testid="sign-out"]');
    await page.waitForURL(`${dash}/login`); // the script drops ?m=signed-out from the address bar
    await page.waitForSelector('[data-testid="login-message"][data-message="signed-out"]');
    expect(await dashCookies(context, dash)).toEqual([]);
    // Server side: the old session id is refused even when presented again.
    for (const path of ['/api/jobs', '/api/overview', '/api/session']) {
      const r = await fetch(`${dash}${path}`, { headers: { cookie: `aegis_dashboard=${session}` } });
      expect([path, r.status]).toEqual([path, 401]);
      await r.body?.cancel();
    }
    const back = await page.goto(`${dash}/`);
    expect(back?.status()).toBe(401);
    await context.close();
  });

  test('over HTTPS (the operator\'s ECDSA certificate, --dashboard-allow-remote): the login link signs in with a Secure, HttpOnly, SameSite=Strict __Host- cookie', async () => {
    const secure = await startCoordinator('tls', ['--dashboard-allow-remote', '--dashboard-tls-cert', certFile, '--dashboard-tls-key', keyFile]);
    const origin = `https://${secure.address}`;
    const context = await browser!.newContext();
    const page = await context.newPage();
    await page.goto(`${origin}/login#token=${token(secure.dir)}`, { waitUntil: 'commit' });
    await page.waitForURL(`${origin}/`);
    await page.waitForSelector('[data-testid="connection"][data-state="live"]', { timeout: 30_000 });
    const cookies = await context.cookies(origin);
    expect(cookies).toHaveLength(1);
    expect(cookies[0]).toMatchObject({ name: '__Host-aegis_dashboard', secure: true, httpOnly: true, sameSite: 'Strict', path: '/' });
    // The same-origin check holds over HTTPS too: another origin's form POST gets nothing.
    const other = await browser!.newContext();
    const attacker = await other.newPage();
    const refused = attacker.waitForResponse((r) => r.request().method() === 'POST' && r.url() === `${origin}/login`);
    await attacker.goto(`http://127.0.0.1:${evilPort}/post?target=${encodeURIComponent(origin)}&token=${token(secure.dir)}`, { waitUntil: 'commit' });
    expect((await refused).status()).toBe(403);
    expect(await other.cookies(origin)).toEqual([]);
    await other.close();
    await context.close();
  });
});
