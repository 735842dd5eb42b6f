/**
 * The dashboard in a real browser during a real run: the built CLI (dist/) runs `aegis demo` with
 * `--dashboard 127.0.0.1:0` (a coordinator on loopback TLS, 3 client processes training with tfjs
 * on real digits, FedAvg over secure aggregation), and playwright-core drives Debian's Chromium
 * (/usr/bin/chromium) against the login link the demo prints. The page must follow the run live
 * (Server-Sent Events: the round index and phase change, the accuracy chart gains points without
 * a reload), show no client id, and refuse every request without a session: a fresh browser, a
 * plain fetch, and the same single-use login link a second time. A screenshot goes to
 * test-artifacts/dashboard.png (and docs/dashboard.png with AEGIS_UPDATE_SCREENSHOT=1).
 *
 * The demo's shards are larger than the quickest demo run (--per-digit 500) so that a round
 * takes a second or two and there is a run to watch; nothing here asserts on wall-clock time.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { CLI } from '../support/cli.js';

const CHROMIUM = '/usr/bin/chromium';
const CLIENTS = 3;
const ROUNDS = 4;
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const ARTIFACTS = join(REPO, 'test-artifacts');
const ARTIFACT = join(ARTIFACTS, 'dashboard.png');
const DOCS_SCREENSHOT = join(REPO, 'docs', 'dashboard.png');
const LOGIN_LINE = /dashboard: (http:\/\/127\.0\.0\.1:\d+)\/login\?token=([A-Za-z0-9_-]+)/;

let out: string;
let demo: ChildProcess | undefined;
let demoStderr = '';
let demoExit: Promise<number | null>;
let browser: Browser | undefined;
let base: string;
let loginUrl: string;
/** Set by the live test once the login link was spent, which the refusal test relies on. */
let liveContext: BrowserContext | undefined;
let livePage: Page | undefined;

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
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    }),
  ]);
  browser = b;
  base = m[1]!;
  loginUrl = `${m[1]}/login?token=${m[2]}`;
}, 180_000);

afterAll(async () => {
  await browser?.close();
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

    // The login link: a session cookie and a redirect to the page.
    const res = await page.goto(loginUrl);
    expect(res?.status()).toBe(200);
    expect(new URL(page.url()).pathname).toBe('/');
    const cookies = await context.cookies();
    expect(cookies.find((c) => c.name === 'aegis_dashboard')?.httpOnly).toBe(true);
    await page.waitForSelector('[data-testid="connection"][data-state="live"]', { timeout: 30_000 });

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
  }, 300_000);

  test('refuses without a session: a fresh browser, a plain fetch, the login link a second time; the page stops on a 401', async () => {
    expect(livePage).toBeDefined(); // the live test spent the login link

    // A fresh browser context (no cookie) opening the page: 401 and how to sign in.
    const fresh = await browser!.newContext();
    const page = await fresh.newPage();
    const res = await page.goto(`${base}/`);
    expect(res?.status()).toBe(401);
    const body = await page.locator('body').innerText();
    expect(body).toContain('unauthenticated');
    expect(body).toContain('aegis dashboard token');
    // The single-use login link, a second time.
    const again = await page.goto(loginUrl);
    expect(again?.status()).toBe(401);
    expect(await fresh.cookies()).toEqual([]);
    await fresh.close();

    // From node, no cookie: the API, the event stream and the page's assets are refused.
    for (const path of ['/api/jobs', '/api/overview', '/api/events', '/']) {
      const r = await fetch(`${base}${path}`);
      expect([path, r.status]).toEqual([path, 401]);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('unauthenticated');
    }
    const reuse = await fetch(loginUrl, { redirect: 'manual' });
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
  }, 120_000);
});
