/**
 * The dashboard's server side (coordinator/dashboard/server.ts, docs/dashboard-api.md): real HTTP
 * on loopback. First against a fixed source (auth, headers, methods, static files, traversal; the
 * sign-in flow, sessions and TLS in depth: dashboard-auth.test.ts),
 * then against a real Coordinator running a training job over real gRPC/TLS with a validation
 * set, where round 1's model is wrecked by every client and held back by the poisoning check.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { request } from 'node:http';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DashboardTokens } from '../../coordinator/auth/dashboard-tokens.js';
import { serveDashboard, type DashboardJobDetail, type DashboardServer, type DashboardSource } from '../../coordinator/dashboard/server.js';
import { weightBytes } from '../../coordinator/jobs/training.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import type { ClientRunner } from '../../client/agent/connection.js';
import type { TrainingRound } from '../../client/admission/training-round.js';
import { MemoryDataStore } from '../../client/store/memory.js';
import { trainLocally } from '../../client/trainer/index.js';
import { splitDigits, type DigitsSplit } from '../../bench/demo/mnist.js';
import { DIGITS_TRAINING, digitsModel } from '../../shared/model/digits.js';
import { loadTf } from '../../shared/model/tfjs.js';
import type { ModelSpec } from '../../shared/protocol/manifest.js';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { keyIdOf } from '../../shared/trust/dsse.js';
import { signManifest } from '../../shared/trust/manifest.js';
import { addPublisher, initRegistry } from '../../shared/trust/registry-dir.js';
import { enrollClients, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';
import { codeOfAsync } from '../support/codes.js';
import { dashLogin, dashRequest, loginRequest, type DashReply, type DashRequestOptions } from '../support/dashboard-http.js';

type Reply = DashReply;

/** One raw HTTP request to a plain (loopback) dashboard at `address`. */
const http = (address: string, path: string, opts: DashRequestOptions = {}): Promise<Reply> => dashRequest(`http://${address}`, path, opts);

/** Signs in with `token` as the page's form does; returns the session id from the cookie. */
const login = (address: string, token: string): Promise<string> => dashLogin(`http://${address}`, token);

interface SseEvent {
  event: string;
  data: unknown;
}

/** Opens /api/events; events are pushed into the returned array until close(). */
function sse(address: string, cookie: string): { events: SseEvent[]; raw: string[]; close(): void; status: Promise<number> } {
  const events: SseEvent[] = [];
  const raw: string[] = [];
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  let buf = '';
  let resolveStatus!: (n: number) => void;
  const status = new Promise<number>((r) => (resolveStatus = r));
  const req = request({ host, port, path: '/api/events', headers: { cookie: `aegis_dashboard=${cookie}` } }, (res) => {
    resolveStatus(res.statusCode ?? 0);
    res.setEncoding('utf8');
    res.on('data', (d: string) => {
      raw.push(d);
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const ev = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (ev && data) events.push({ event: ev, data: JSON.parse(data) });
      }
    });
    res.on('error', () => undefined);
  });
  req.on('error', () => undefined);
  req.end();
  return { events, raw, status, close: () => req.destroy() };
}

const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

function expectSecurityHeaders(r: Reply): void {
  expect(r.headers['content-security-policy']).toBe(CSP);
  expect(r.headers['x-content-type-options']).toBe('nosniff');
  expect(r.headers['referrer-policy']).toBe('same-origin');
}

// ---------------------------------------------------------------------------------------------

const FAKE_DETAIL: DashboardJobDetail = {
  job: { jobId: 'fake', kind: 'plain', state: 'running', signer: null, roundsDone: 0, rounds: 1, roundIndex: 0, phase: 'share-keys', startedAt: 1, elapsedMs: 2 },
  rounds: [],
  training: null,
  dp: null,
};
const fakeSource = (detail = FAKE_DETAIL): DashboardSource => ({
  overview: () => Promise.resolve({ coordinator: { startedAt: 1, connectedClients: 3, enrolledClients: 4 }, registry: null, flags: { poisoningFlaggedRounds: 0 } }),
  jobs: () => Promise.resolve([detail.job]),
  job: (id) => Promise.resolve(id === detail.job.jobId ? detail : undefined),
});

describe('the dashboard server: auth, headers, methods, static files', () => {
  let work: string;
  let assets: string;
  let now = Date.now();
  const auth = new DashboardTokens({ clock: () => now });
  let server: DashboardServer;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'aegis-dash-'));
    assets = join(work, 'dist', 'dashboard');
    await mkdir(join(assets, 'assets'), { recursive: true });
    await writeFile(join(assets, 'index.html'), '<!doctype html><title>Aegis</title>');
    await writeFile(join(assets, 'assets', 'app.js'), 'console.log(1)');
    await writeFile(join(assets, 'assets', 'app.css'), 'body{}');
    await writeFile(join(assets, 'assets', 'logo.svg'), '<svg/>');
    await writeFile(join(work, 'dist', 'secret.txt'), 'TOP-SECRET-OUTSIDE');
    server = await serveDashboard(fakeSource(), '127.0.0.1:0', { auth, assetsDir: assets, pollMs: 50 });
  });
  afterAll(async () => {
    await server.close();
    await rm(work, { recursive: true, force: true });
  });

  it('refuses every route without a session: 401 JSON unauthenticated (HTML, asset, API, SSE), with the security headers', async () => {
    for (const path of ['/', '/index.html', '/assets/app.js', '/api/overview', '/api/jobs', '/api/jobs/fake', '/api/events', '/nope']) {
      const r = await http(server.address, path);
      expect([path, r.status]).toEqual([path, 401]);
      expect(JSON.parse(r.body)).toEqual({ error: { code: 'unauthenticated', message: expect.any(String) } });
      expectSecurityHeaders(r);
    }
    // A made-up session is no session, as cookie or as bearer.
    const fake = randomBytes(32).toString('base64url');
    expect((await http(server.address, '/api/jobs', { cookie: fake })).status).toBe(401);
    expect((await http(server.address, '/api/jobs', { bearer: fake })).status).toBe(401);
  });

  it('a token signs in once by POST /login (303 to / with the session cookie); bad, used and expired tokens are 401', async () => {
    for (const bad of ['', 'nonsense', randomBytes(32).toString('base64url')]) {
      const r = await loginRequest(`http://${server.address}`, bad);
      expect([bad, r.status, r.headers['set-cookie']]).toEqual([bad, 401, undefined]);
    }

    const { token } = auth.issue(60_000);
    const r = await loginRequest(`http://${server.address}`, token);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/');
    expectSecurityHeaders(r);
    const cookie = String(r.headers['set-cookie']);
    expect(cookie).toMatch(/^aegis_dashboard=[A-Za-z0-9_-]{43}; /);
    // Plain HTTP (loopback): no Secure, which a browser would refuse to store over http.
    expect(cookie.split('; ').slice(1).sort()).toEqual(['HttpOnly', 'Max-Age=28800', 'Path=/', 'SameSite=Strict']);
    expect(cookie).not.toContain(token);
    // Used: refused the second time.
    expect((await loginRequest(`http://${server.address}`, token)).status).toBe(401);

    const session = /aegis_dashboard=([^;]+)/.exec(cookie)![1]!;
    const jobs = await http(server.address, '/api/jobs', { cookie: session });
    expect(jobs.status).toBe(200);
    expect(jobs.headers['cache-control']).toBe('no-store');
    expectSecurityHeaders(jobs);
    expect(JSON.parse(jobs.body)).toEqual({ jobs: [FAKE_DETAIL.job] });
    expect((await http(server.address, '/api/overview', { bearer: session })).status).toBe(200);

    // Expired: the clock moves past the token's TTL.
    const late = auth.issue(1000);
    now += 1001;
    expect((await loginRequest(`http://${server.address}`, late.token)).status).toBe(401);
    // The session ends after 15 min without a request.
    now += 15 * 60_000;
    expect((await http(server.address, '/api/jobs', { cookie: session })).status).toBe(401);
  });

  it('reads are GET and HEAD only (405 otherwise); /login takes POST, /logout only POST', async () => {
    const session = await login(server.address, auth.issue().token);
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const r = await http(server.address, '/api/jobs', { method, cookie: session });
      expect([method, r.status, r.headers.allow]).toEqual([method, 405, 'GET, HEAD']);
    }
    expect((await http(server.address, '/login', { method: 'PUT' })).headers.allow).toBe('GET, HEAD, POST');
    expect((await http(server.address, '/logout', { cookie: session })).status).toBe(405);
    const head = await http(server.address, '/api/jobs', { method: 'HEAD', cookie: session });
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
  });

  it('serves the built page with content types; 404 for unknown jobs and files; refuses `..` traversal', async () => {
    const session = await login(server.address, auth.issue().token);
    const types: [string, string][] = [
      ['/', 'text/html; charset=utf-8'],
      ['/assets/app.js', 'text/javascript; charset=utf-8'],
      ['/assets/app.css', 'text/css; charset=utf-8'],
      ['/assets/logo.svg', 'image/svg+xml'],
    ];
    for (const [path, type] of types) {
      const r = await http(server.address, path, { cookie: session });
      expect([path, r.status, r.headers['content-type']]).toEqual([path, 200, type]);
      expectSecurityHeaders(r);
    }
    expect((await http(server.address, '/', { cookie: session })).body).toContain('<title>Aegis</title>');
    expect((await http(server.address, '/assets/missing.js', { cookie: session })).status).toBe(404);
    const unknown = await http(server.address, '/api/jobs/nope', { cookie: session });
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body).error.code).toBe('not-found');
    for (const path of ['/assets/../../secret.txt', '/../secret.txt', '/assets/%2e%2e/%2e%2e/secret.txt', '/%2e%2e%2fsecret.txt', '/assets/..%5c..%5csecret.txt', '/assets/app.js%00.js']) {
      const r = await http(server.address, path, { cookie: session });
      expect([path, r.status === 400 || r.status === 404]).toEqual([path, true]);
      expect(r.body).not.toContain('TOP-SECRET');
    }
  });

  it('a missing page folder gives a 503 page for / while the API works', async () => {
    const s = await serveDashboard(fakeSource(), '127.0.0.1:0', { auth, assetsDir: join(work, 'absent') });
    try {
      const session = await login(s.address, auth.issue().token);
      const r = await http(s.address, '/', { cookie: session });
      expect(r.status).toBe(503);
      expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(r.body).toMatch(/not built/);
      expect((await http(s.address, '/api/jobs', { cookie: session })).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('refuses a non-loopback listen address without allowRemote, and allowRemote without TLS', async () => {
    expect(await codeOfAsync(serveDashboard(fakeSource(), '0.0.0.0:0', { auth }))).toBe('invalid-argument');
    expect(await codeOfAsync(serveDashboard(fakeSource(), '127.0.0.1:0', { auth, allowRemote: true }))).toBe('invalid-argument');
    expect(await codeOfAsync(serveDashboard(fakeSource(), '192.0.2.1:0', { auth }))).toBe('invalid-argument');
    expect(await codeOfAsync(serveDashboard(fakeSource(), 'nonsense', { auth }))).toBe('invalid-argument');
  });

  it('SSE sends jobs, job and overview on connect, then only what changed', async () => {
    const detail = structuredClone(FAKE_DETAIL);
    const s = await serveDashboard(fakeSource(detail), '127.0.0.1:0', { auth, assetsDir: assets, pollMs: 20 });
    try {
      const session = await login(s.address, auth.issue().token);
      const stream = sse(s.address, session);
      expect(await stream.status).toBe(200);
      await waitFor(() => stream.events.length >= 3, 5000, 'the first events');
      expect(stream.events.map((e) => e.event).sort()).toEqual(['job', 'jobs', 'overview']);
      detail.job.phase = 'masked-input';
      await waitFor(() => stream.events.some((e) => e.event === 'job' && (e.data as DashboardJobDetail).job.phase === 'masked-input'), 5000, 'the change');
      expect(stream.events.filter((e) => e.event === 'overview')).toHaveLength(1);
      stream.close();
    } finally {
      await s.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------

const CLIENTS = 4;
const BITS = 24;

describe('the dashboard of a real coordinator running a training job with a validation set', () => {
  let split: DigitsSplit;
  let spec: ModelSpec;
  let initial: Float32Array;
  let c: Coordinator;
  let runners: ClientRunner[] = [];
  let work: string;
  let publisherKeyId: string;
  let signedManifest: Uint8Array;
  const bodies: string[] = [];

  beforeAll(async () => {
    const { tf } = await loadTf();
    split = splitDigits({ clients: CLIENTS, perDigitLimit: 70, seed: 5 });
    ({ spec, weights: initial } = await digitsModel(tf, { hidden: 32, seed: 11 }));
    work = await mkdtemp(join(tmpdir(), 'aegis-dash-net-'));
    const registryDir = join(work, 'registry');
    const passphrase = randomBytes(24).toString('base64url');
    await initRegistry(registryDir, { roots: 1, threshold: 1, passphrase });
    const publisher = randomBytes(32);
    publisherKeyId = keyIdOf(ed25519PublicFromSeed(publisher));
    await addPublisher(registryDir, { publicKey: ed25519PublicFromSeed(publisher), name: 'dash publisher', passphrase });
    const bytes = manifest({
      jobId: 'dash-train',
      rounds: 3,
      round: { dim: initial.length, cohort: CLIENTS, clip: 1024, bits: BITS },
      deadlines: { advertiseMs: 15_000, shareMs: 15_000, maskedMs: 60_000, consistencyMs: 15_000, unmaskMs: 15_000 },
      model: spec,
      training: { ...DIGITS_TRAINING, epochs: 3, maxAbortedRounds: 0 },
      validation: { gate: 0.05, dataset: 'digits', localFraction: 0 },
    });
    signedManifest = new TextEncoder().encode(JSON.stringify(signManifest(bytes, [publisher])));
    const validation = { count: () => Promise.resolve(split.test.count), trainingExamples: () => Promise.resolve(split.test) };
    c = await startCoordinator({ validationSets: { digits: validation }, registryDir });
    const clients = await enrollClients(c, CLIENTS, 'dashclient');
    runners = startRunners(c, clients, 4, undefined, (i) => ({
      train: async (round: TrainingRound) => {
        const u = await trainLocally({ manifest: round.manifest, globalWeights: round.globalWeights, data: new MemoryDataStore(split.shards[i]!), maxWeight: 2 ** BITS - 1 });
        // From round 1 on, every client sends a model-wrecking update (as test/net/train.test.ts).
        if (round.roundIndex >= 1) return { ...u, values: round.globalWeights.map((w) => -3 * w * u.weight) };
        return u;
      },
    }));
    await waitFor(() => c.connectedClients().length === CLIENTS, 20_000, 'clients to connect');
  });

  afterAll(async () => {
    await Promise.all(runners.map((r) => r.stop()));
    await c.close();
    await rm(work, { recursive: true, force: true });
  });

  it('without a dashboard, issueDashboardToken is failed-precondition', async () => {
    expect(await codeOfAsync(Promise.resolve().then(() => c.issueDashboardToken()))).toBe('failed-precondition');
  });

  it('reports phases and clients per phase live over SSE and the API, model accuracy and loss from version 0, the flagged round, and no client data', async () => {
    const dash = await c.startDashboard('127.0.0.1:0', { pollMs: 100 });
    expect(c.dashboardAddress).toBe(dash.address);
    const link = c.issueDashboardToken(60_000);
    expect(link.url).toBe(`http://${dash.address}/login#token=${link.token}`);
    const session = await login(dash.address, link.token);
    const get = async (path: string): Promise<unknown> => {
      const r = await http(dash.address, path, { cookie: session });
      expect([path, r.status]).toEqual([path, 200]);
      bodies.push(r.body);
      return JSON.parse(r.body);
    };
    const stream = sse(dash.address, session);
    expect(await stream.status).toBe(200);

    await c.launch(new Uint8Array(), { gatherMs: 5_000, initialWeights: weightBytes(initial), signedManifest });
    // During round 0: the list and the detail show the running job and its phase.
    const jobs = (await get('/api/jobs')) as { jobs: { jobId: string; state: string; phase: string; signer: unknown; kind: string }[] };
    expect(jobs.jobs).toHaveLength(1);
    expect(jobs.jobs[0]).toMatchObject({ jobId: 'dash-train', kind: 'training', state: 'running', signer: { keyId: publisherKeyId, publisher: 'dash publisher' } });
    expect(['advertise-keys', 'share-keys', 'masked-input', 'consistency-check', 'unmasking', 'completed']).toContain(jobs.jobs[0]!.phase);
    const during = (await get('/api/jobs/dash-train')) as DashboardJobDetail;
    expect(during.rounds[0]).toMatchObject({ index: 0, invited: CLIENTS });
    // While round 0 runs, SSE delivers a job event with its live phase and that phase's counts
    // (in-process tfjs training blocks the event loop, so which phase is sampled varies).
    const isLive = (e: SseEvent): boolean => e.event === 'job' && (e.data as DashboardJobDetail).rounds[0]?.finished === false;
    await waitFor(() => stream.events.some(isLive), 60_000, 'an SSE job event of the running round');
    const live = (stream.events.find(isLive)!.data as DashboardJobDetail).rounds[0]!;
    expect(['advertise-keys', 'share-keys', 'masked-input', 'consistency-check', 'unmasking']).toContain(live.phase);
    expect(live.clientsPerPhase.find((p) => p.phase === live.phase)).toEqual({ phase: live.phase, clients: expect.any(Number), expected: CLIENTS });
    expect(live.timeline[0]!.phase).toBe('advertise-keys');
    expect(live.invited).toBe(CLIENTS);

    expect(await c.trainingFinished('dash-train')).toBe('failed');
    // SSE delivered round 0's end and the flagged round 1.
    await waitFor(
      () => stream.events.some((e) => e.event === 'job' && (e.data as DashboardJobDetail).rounds[1]?.poisoningFlagged === true && (e.data as DashboardJobDetail).job.state === 'failed'),
      10_000,
      'an SSE job event with the flagged round',
    );
    expect(stream.events.some((e) => e.event === 'job' && (e.data as DashboardJobDetail).rounds[0]?.finished === true && (e.data as DashboardJobDetail).rounds[0]?.ok === true)).toBe(true);

    const detail = (await get('/api/jobs/dash-train')) as DashboardJobDetail;
    expect(detail.job.state).toBe('failed');
    expect(detail.rounds).toHaveLength(2);
    expect(detail.rounds[0]).toMatchObject({ index: 0, phase: 'completed', ok: true, finished: true, poisoningFlagged: false, abortReason: null, dropouts: 0 });
    expect(detail.rounds[0]!.endedAt).toBeGreaterThanOrEqual(detail.rounds[0]!.startedAt);
    expect(detail.rounds[1]).toMatchObject({ index: 1, ok: true, finished: true, poisoningFlagged: true });
    const t = detail.training!;
    expect(t).toMatchObject({ state: 'failed', roundsCompleted: 1, flaggedRounds: [1] });
    // Version 0 (round 0 of the chart) and version 1, each with accuracy and loss.
    expect(t.models.map((m) => [m.version, m.roundIndex])).toEqual([
      [0, null],
      [1, 0],
    ]);
    const models = c.modelsOf('dash-train');
    for (const m of t.models) {
      expect(m.accuracy).toBeGreaterThanOrEqual(0);
      expect(m.accuracy).toBeLessThanOrEqual(1);
      expect(m.loss).toBeGreaterThan(0);
      expect(m.sha256).toBe(Buffer.from(models[m.version]!.sha256).toString('hex'));
    }
    expect(t.models[1]!.accuracy!).toBeGreaterThan(t.models[0]!.accuracy!);
    expect(t.models[1]!.loss!).toBeLessThan(t.models[0]!.loss!);

    const overview = (await get('/api/overview')) as { coordinator: { connectedClients: number; enrolledClients: number }; registry: { version: number; publishers: number } | null; flags: { poisoningFlaggedRounds: number } };
    expect(overview.coordinator).toMatchObject({ connectedClients: CLIENTS, enrolledClients: CLIENTS });
    expect(overview.registry).toEqual({ version: expect.any(Number), publishers: 1 });
    expect(overview.flags.poisoningFlaggedRounds).toBe(1);
    stream.close();

    // Nothing in any body: no client id, no certificate serial, no long base64/hex blob other
    // than the model hashes, the manifest hash and the signer's key id.
    const all = [...bodies, stream.raw.join('')].join('\n');
    for (const [id, rec] of c.registry.clients) {
      expect(all).not.toContain(id);
      expect(all).not.toContain(rec.serial);
      expect(all).not.toContain(rec.publicKey);
    }
    expect(all).not.toContain('dashclient');
    const allowed = new Set([...models.map((m) => Buffer.from(m.sha256).toString('hex')), publisherKeyId]);
    const blobs = all.match(/[A-Za-z0-9+/_=-]{32,}/g) ?? [];
    expect(blobs.filter((b) => !allowed.has(b))).toEqual([]);
  });
});
