/**
 * A DP job's privacy on the dashboard, in Debian's Chromium (playwright-core): an in-process
 * coordinator (real gRPC, mTLS, SecAgg) runs a DP training job of three rounds and a training job
 * without DP with four in-process clients, then serves the built page (dist/dashboard/). The
 * DP job's view has the ε chart beside the accuracy chart: one point per round, the accountant's
 * dpEpsilonAfter(manifest, k) for round k, and the job's budget (ε after all its rounds) as its
 * horizontal line; the API's job detail carries the same per-round ε. The job without DP has no ε
 * chart (the API says `dp: null`). A screenshot goes to test-artifacts/dashboard-dp.png.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import type { ClientRunner } from '../../client/agent/connection.js';
import { dpEpsilonAfter } from '../../shared/protocol/dp-manifest.js';
import { startCoordinator } from '../support/cluster.js';
import { DP_JOB, DP_ROUNDS, DP_VIEW, PLAIN_JOB, runJob, startDpClients } from '../support/dp-jobs.js';

const CHROMIUM = '/usr/bin/chromium';
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const ASSETS = join(REPO, 'dist', 'dashboard');
const ARTIFACTS = join(REPO, 'test-artifacts');

let c: Coordinator;
let runners: ClientRunner[] = [];
let browser: Browser | undefined;

const epsAfter = (k: number): number => dpEpsilonAfter(DP_VIEW, k);

/** Polls a page expression until it is true (the dashboard's CSP refuses waitForFunction's eval). */
async function waitUntil(page: Page, expr: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await page.evaluate(expr))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${expr}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  if (!existsSync(join(ASSETS, 'index.html'))) throw new Error('dist/dashboard/ is missing: run "npm run build" first');
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (Debian package chromium; .ci/run installs it)`);
  c = await startCoordinator();
  runners = await startDpClients(c);
  await runJob(c, true);
  await runJob(c, false);
  await c.startDashboard('127.0.0.1:0', { assetsDir: ASSETS });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
});

afterAll(async () => {
  await browser?.close();
  await Promise.all(runners.map((r) => r.stop()));
  await c?.close();
});

describe("a DP job's ε on the dashboard", () => {
  test('the DP job has an ε-per-round chart beside its accuracy chart, with its budget line; the job without DP has none', async () => {
    const context = await browser!.newContext({ viewport: { width: 1280, height: 1000 } });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    const { url } = c.issueDashboardToken(60_000);
    const base = new URL(url).origin;
    await page.goto(url, { waitUntil: 'commit' });
    await page.waitForURL(`${base}/`);

    // The API: the DP job's detail carries ε per round and the budget; the other job's dp is null.
    const api = async (jobId: string): Promise<{ dp: { epsilonBudget: number; epsilonSpent: number; delta: number; mechanism: string; rounds: { index: number; epsilon: number }[] } | null }> =>
      (await (await context.request.get(`${base}/api/jobs/${jobId}`)).json()) as never;
    const detail = await api(DP_JOB);
    expect(detail.dp).toEqual({
      mechanism: 'distributed-discrete-gaussian',
      delta: DP_VIEW.dp!.delta,
      epsilonBudget: epsAfter(DP_ROUNDS),
      epsilonSpent: epsAfter(DP_ROUNDS),
      roundsTotal: DP_ROUNDS,
      rounds: [0, 1, 2].map((index) => ({ index, epsilon: epsAfter(index + 1) })),
    });
    expect((await api(PLAIN_JOB)).dp).toBeNull();

    await page.goto(`${base}/#/job/${DP_JOB}`);
    await page.waitForSelector('[data-testid="job-view"]');
    const chart = page.locator('[data-testid="dp-epsilon-chart"]');
    await waitUntil(page, `document.querySelector('[data-testid="dp-epsilon-chart"]')?.getAttribute('data-points') === '${DP_ROUNDS}'`, 60_000);
    expect(await chart.isVisible()).toBe(true);
    expect(Number(await chart.getAttribute('data-budget'))).toBe(epsAfter(DP_ROUNDS));
    expect((await chart.getAttribute('data-epsilons'))!.split(',').map(Number)).toEqual([1, 2, 3].map(epsAfter));
    // uPlot draws it on a canvas; the caption says what was spent of the budget.
    expect(await chart.locator('canvas').count()).toBeGreaterThan(0);
    const fmt = (x: number): string => Number(x.toPrecision(4)).toString();
    expect(await chart.locator('figcaption').textContent()).toContain(`${fmt(epsAfter(DP_ROUNDS))} of ${fmt(epsAfter(DP_ROUNDS))}`);
    expect(await chart.locator('[data-testid="dp-budget-key"]').textContent()).toContain(`budget, ε ${fmt(epsAfter(DP_ROUNDS))} after all ${DP_ROUNDS} rounds`);
    // Beside the accuracy chart: the next chart in the grid, on the same row.
    const order = await page.evaluate(`[...document.querySelectorAll('.charts > figure')].map((f) => f.getAttribute('data-testid'))`);
    expect(order).toEqual(['accuracy-chart', 'dp-epsilon-chart', 'loss-chart']);
    const acc = (await page.locator('[data-testid="accuracy-chart"]').boundingBox())!;
    const eps = (await chart.boundingBox())!;
    expect(eps.y).toBe(acc.y);
    expect(eps.x).toBeGreaterThan(acc.x + acc.width - 1);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-dp.png') });

    // The job without DP: its accuracy chart, and no ε chart.
    await page.goto(`${base}/#/job/${PLAIN_JOB}`);
    await page.waitForSelector('[data-testid="job-view"]');
    // Its detail has arrived (its rounds are listed) before the chart's absence is checked.
    await waitUntil(page, `document.querySelector('[data-testid="job-id"]')?.textContent === '${PLAIN_JOB}' && document.querySelector('[data-testid="round-row-${DP_ROUNDS - 1}"]') !== null`, 60_000);
    expect(await page.locator('[data-testid="dp-epsilon-chart"]').isVisible()).toBe(false);
    expect(await page.locator('[data-testid="accuracy-chart"]').isVisible()).toBe(true);
    expect(problems).toEqual([]);
    await context.close();
  });
});
