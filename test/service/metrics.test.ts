/** coordinator/service/metrics.ts: the coordinator's Prometheus metrics, and the /metrics server (shared/metrics/serve.ts) that serves them. */
import { afterEach, describe, expect, test } from '@jest/globals';
import { register as globalRegistry } from 'prom-client';
import { CoordinatorMetrics } from '../../coordinator/service/metrics.js';
import { serveMetrics, type MetricsServer } from '../../shared/metrics/serve.js';
import { isLoopbackHost } from '../../shared/net/http-listen.js';
import { ErrorCode, isAegisError } from '../../shared/errors.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the text exposition format (no escapes inside label values are used by these metrics). */
function parse(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) {
      types.set(t[1]!, t[2]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return { samples, types };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hit = samples.find((s) => s.name === name && Object.keys(labels).length === Object.keys(s.labels).length && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return hit?.value;
}

/** The metric family a sample belongs to (histogram samples carry a suffix). */
const family = (name: string, types: Map<string, string>): string => {
  if (types.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return types.has(base) ? base : name;
};

const isDefault = (name: string): boolean => name.startsWith('aegis_process_') || name.startsWith('aegis_nodejs_');

/** Exactly the documented metrics and their label names (histograms add `le` on buckets). */
const DOCUMENTED: Record<string, { type: string; labels: string[] }> = {
  aegis_rounds_started_total: { type: 'counter', labels: [] },
  aegis_rounds_finished_total: { type: 'counter', labels: ['outcome'] },
  aegis_round_aborts_total: { type: 'counter', labels: ['phase', 'reason'] },
  aegis_rounds_running: { type: 'gauge', labels: [] },
  aegis_round_duration_seconds: { type: 'histogram', labels: ['outcome'] },
  aegis_phase_duration_seconds: { type: 'histogram', labels: ['phase'] },
  aegis_phase_clients: { type: 'gauge', labels: ['phase'] },
  aegis_phase_expected_clients: { type: 'gauge', labels: ['phase'] },
  aegis_dropouts_total: { type: 'counter', labels: ['phase'] },
  aegis_round_declines_total: { type: 'counter', labels: ['reason'] },
  aegis_unmask_seconds: { type: 'histogram', labels: [] },
  aegis_key_rotations_total: { type: 'counter', labels: ['kind'] },
  aegis_clients_suspected_lost: { type: 'gauge', labels: [] },
  aegis_clients_flagged_lost_total: { type: 'counter', labels: [] },
  aegis_dp_epsilon_spent_max: { type: 'gauge', labels: [] },
  aegis_dp_epsilon_budget_fraction_max: { type: 'gauge', labels: [] },
  aegis_dp_jobs_running: { type: 'gauge', labels: [] },
  aegis_dp_rounds_completed_total: { type: 'counter', labels: [] },
};

const servers: MetricsServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function serve(m: CoordinatorMetrics): Promise<MetricsServer> {
  const s = await serveMetrics(m, '127.0.0.1:0');
  servers.push(s);
  return s;
}

async function scrape(s: MetricsServer): Promise<{ text: string; contentType: string | null; status: number }> {
  const res = await fetch(`http://${s.address}/metrics`);
  return { text: await res.text(), contentType: res.headers.get('content-type'), status: res.status };
}

/** One completed round and one aborted round, through the public methods. */
function drive(m: CoordinatorMetrics): void {
  m.roundStarted();
  m.phaseClosed({ phase: Phase.AdvertiseKeys, seconds: 0.2, clients: 10, expected: 10 });
  m.phaseClosed({ phase: Phase.ShareKeys, seconds: 0.4, clients: 9, expected: 10 });
  m.phaseClosed({ phase: Phase.MaskedInput, seconds: 3, clients: 7, expected: 9 });
  m.phaseClosed({ phase: Phase.ConsistencyCheck, seconds: 0.05, clients: 7, expected: 7 });
  m.phaseClosed({ phase: Phase.Unmasking, seconds: 1.5, clients: 6, expected: 7 });
  m.unmaskTime(0.75);
  m.roundFinished({ outcome: 'completed', seconds: 5.5 });

  m.roundStarted();
  // Two of eight advertised, four declined (not dropouts), two vanished.
  m.phaseClosed({ phase: Phase.AdvertiseKeys, seconds: 30, clients: 2, expected: 8, declines: { 'approval-required': 3, 'no-input': 1 } });
  m.roundFinished({ outcome: 'aborted', reason: AbortReason.TooFewClients, phase: Phase.AdvertiseKeys, seconds: 31 });

  m.roundStarted(); // still running
  m.keyRotated('kek');
}

describe('coordinator metrics', () => {
  test('counters, gauges and histograms carry the driven values and labels over real HTTP', async () => {
    const m = new CoordinatorMetrics();
    drive(m);
    const s = await serve(m);
    expect(s.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const { text, contentType, status } = await scrape(s);
    expect(status).toBe(200);
    expect(contentType).toBe(m.contentType);
    expect(contentType).toMatch(/^text\/plain/);
    const { samples, types } = parse(text);

    expect(value(samples, 'aegis_rounds_started_total')).toBe(3);
    expect(value(samples, 'aegis_rounds_running')).toBe(1);
    expect(value(samples, 'aegis_rounds_finished_total', { outcome: 'completed' })).toBe(1);
    expect(value(samples, 'aegis_rounds_finished_total', { outcome: 'aborted' })).toBe(1);
    expect(value(samples, 'aegis_rounds_finished_total', { outcome: 'cancelled' })).toBe(0);
    expect(value(samples, 'aegis_round_aborts_total', { reason: 'too-few-clients', phase: 'advertise-keys' })).toBe(1);
    expect(samples.filter((x) => x.name === 'aegis_round_aborts_total')).toHaveLength(1);

    // Dropouts accumulate over rounds (clients that declined are not dropouts); the gauges show
    // the latest closed phase of each name.
    expect(value(samples, 'aegis_dropouts_total', { phase: 'advertise-keys' })).toBe(2);
    expect(value(samples, 'aegis_round_declines_total', { reason: 'approval-required' })).toBe(3);
    expect(value(samples, 'aegis_round_declines_total', { reason: 'no-input' })).toBe(1);
    expect(samples.filter((x) => x.name === 'aegis_round_declines_total')).toHaveLength(2);
    expect(value(samples, 'aegis_dropouts_total', { phase: 'share-keys' })).toBe(1);
    expect(value(samples, 'aegis_dropouts_total', { phase: 'masked-input' })).toBe(2);
    expect(value(samples, 'aegis_dropouts_total', { phase: 'consistency-check' })).toBe(0);
    expect(value(samples, 'aegis_dropouts_total', { phase: 'unmasking' })).toBe(1);
    expect(value(samples, 'aegis_phase_clients', { phase: 'advertise-keys' })).toBe(2);
    expect(value(samples, 'aegis_phase_expected_clients', { phase: 'advertise-keys' })).toBe(8);
    expect(value(samples, 'aegis_phase_clients', { phase: 'masked-input' })).toBe(7);
    expect(value(samples, 'aegis_phase_expected_clients', { phase: 'masked-input' })).toBe(9);

    expect(types.get('aegis_phase_duration_seconds')).toBe('histogram');
    expect(value(samples, 'aegis_phase_duration_seconds_count', { phase: 'advertise-keys' })).toBe(2);
    expect(value(samples, 'aegis_phase_duration_seconds_sum', { phase: 'advertise-keys' })).toBeCloseTo(30.2);
    expect(value(samples, 'aegis_phase_duration_seconds_bucket', { phase: 'advertise-keys', le: '0.25' })).toBe(1);
    expect(value(samples, 'aegis_phase_duration_seconds_bucket', { phase: 'advertise-keys', le: '30' })).toBe(2);
    // Buckets span 10 ms .. 10 min.
    const les = samples.filter((x) => x.name === 'aegis_phase_duration_seconds_bucket' && x.labels.phase === 'share-keys').map((x) => x.labels.le);
    expect(les[0]).toBe('0.01');
    expect(les).toContain('600');
    expect(les[les.length - 1]).toBe('+Inf');

    expect(value(samples, 'aegis_unmask_seconds_count')).toBe(1);
    expect(value(samples, 'aegis_unmask_seconds_sum')).toBeCloseTo(0.75);
    expect(value(samples, 'aegis_round_duration_seconds_count', { outcome: 'completed' })).toBe(1);
    expect(value(samples, 'aegis_round_duration_seconds_sum', { outcome: 'aborted' })).toBeCloseTo(31);
    expect(value(samples, 'aegis_key_rotations_total', { kind: 'kek' })).toBe(1);

    // Default metrics land in the same registry with the prefix.
    expect(samples.some((x) => x.name.startsWith('aegis_process_'))).toBe(true);
    expect(samples.some((x) => x.name.startsWith('aegis_nodejs_'))).toBe(true);
  });

  test('a cancelled round counts under reason cancelled; the running gauge never goes negative', async () => {
    const m = new CoordinatorMetrics({ defaultMetrics: false });
    m.roundStarted();
    m.roundFinished({ outcome: 'cancelled', phase: Phase.MaskedInput, seconds: 2 });
    m.roundFinished({ outcome: 'completed', seconds: 1 }); // no matching start
    const { samples } = parse(await m.metrics());
    expect(value(samples, 'aegis_round_aborts_total', { reason: 'cancelled', phase: 'masked-input' })).toBe(1);
    expect(value(samples, 'aegis_rounds_running')).toBe(0);
  });

  test('unknown reason, phase, outcome and kind values become other; bad numbers never throw', async () => {
    const m = new CoordinatorMetrics({ defaultMetrics: false });
    const evil = 'client-7f3a; 10.0.0.5';
    m.roundStarted();
    m.phaseClosed({ phase: evil as Phase, seconds: 1, clients: 3, expected: 5 });
    m.phaseClosed({ phase: Phase.Completed, seconds: Number.NaN, clients: Number.NaN, expected: -4 });
    m.phaseClosed({ phase: Phase.AdvertiseKeys, seconds: 1, clients: 1, expected: 1, declines: { [evil]: 2, 'no-input': Number.NaN, 'replayed-round': -3 } });
    m.roundFinished({ outcome: 'aborted', reason: evil as AbortReason, phase: evil as Phase, seconds: Number.POSITIVE_INFINITY });
    m.roundFinished({ outcome: evil as 'aborted', reason: AbortReason.BadShare, phase: Phase.Unmasking, seconds: -1 });
    m.unmaskTime(Number.NaN);
    m.keyRotated(evil as 'kek');
    const text = await m.metrics();
    expect(text).not.toContain('client-7f3a');
    expect(text).not.toContain('10.0.0.5');
    const { samples } = parse(text);
    expect(value(samples, 'aegis_phase_duration_seconds_count', { phase: 'other' })).toBe(1);
    expect(value(samples, 'aegis_dropouts_total', { phase: 'other' })).toBe(2);
    expect(value(samples, 'aegis_phase_clients', { phase: 'other' })).toBe(0);
    expect(value(samples, 'aegis_phase_expected_clients', { phase: 'other' })).toBe(0);
    expect(value(samples, 'aegis_round_aborts_total', { reason: 'other', phase: 'other' })).toBe(1);
    expect(value(samples, 'aegis_round_declines_total', { reason: 'other' })).toBe(2);
    expect(samples.filter((x) => x.name === 'aegis_round_declines_total')).toHaveLength(1);
    expect(value(samples, 'aegis_round_aborts_total', { reason: 'bad-share', phase: 'unmasking' })).toBe(1);
    expect(value(samples, 'aegis_rounds_finished_total', { outcome: 'other' })).toBe(1);
    expect(value(samples, 'aegis_round_duration_seconds_count', { outcome: 'aborted' })).toBeUndefined();
    expect(value(samples, 'aegis_unmask_seconds_count')).toBe(0);
    expect(value(samples, 'aegis_key_rotations_total', { kind: 'other' })).toBe(1);
  });

  test('the DP gauges are maxima over the jobs the source lists, read at each scrape; a bad entry or a failing source reads as none', async () => {
    const m = new CoordinatorMetrics({ defaultMetrics: false });
    const read = async () => parse(await m.metrics()).samples;
    let s = await read();
    expect([value(s, 'aegis_dp_epsilon_spent_max'), value(s, 'aegis_dp_epsilon_budget_fraction_max'), value(s, 'aegis_dp_jobs_running'), value(s, 'aegis_dp_rounds_completed_total')]).toEqual([0, 0, 0, 0]);
    let jobs = [
      { spent: 2, budget: 8, running: true },
      { spent: 3, budget: 4, running: false },
      { spent: Number.NaN, budget: 1, running: true },
      { spent: 1, budget: 0, running: true },
    ];
    m.trackDp(() => jobs);
    m.dpRoundCompleted();
    s = await read();
    expect(value(s, 'aegis_dp_epsilon_spent_max')).toBe(3);
    expect(value(s, 'aegis_dp_epsilon_budget_fraction_max')).toBe(0.75);
    expect(value(s, 'aegis_dp_jobs_running')).toBe(1);
    expect(value(s, 'aegis_dp_rounds_completed_total')).toBe(1);
    jobs = [{ spent: 5, budget: 5, running: true }];
    s = await read();
    expect([value(s, 'aegis_dp_epsilon_spent_max'), value(s, 'aegis_dp_epsilon_budget_fraction_max'), value(s, 'aegis_dp_jobs_running')]).toEqual([5, 1, 1]);
    m.trackDp(() => {
      throw new Error('the jobs are gone');
    });
    s = await read();
    expect([value(s, 'aegis_dp_epsilon_spent_max'), value(s, 'aegis_dp_jobs_running')]).toEqual([0, 0]);
  });

  test('the metric names and label names are exactly the documented set, with values from the vocabularies', async () => {
    const m = new CoordinatorMetrics();
    drive(m);
    m.roundFinished({ outcome: 'cancelled', seconds: 1 });
    const { samples, types } = parse(await m.metrics());
    const own = samples.filter((x) => !isDefault(x.name));
    const seen: Record<string, { type: string; labels: Set<string> }> = {};
    for (const x of own) {
      const f = family(x.name, types);
      const entry = (seen[f] ??= { type: types.get(f) ?? '?', labels: new Set() });
      for (const k of Object.keys(x.labels)) if (k !== 'le') entry.labels.add(k);
    }
    expect(Object.fromEntries(Object.entries(seen).map(([k, v]) => [k, { type: v.type, labels: [...v.labels].sort() }]))).toEqual(DOCUMENTED);

    const vocab: Record<string, Set<string>> = {
      phase: new Set(['advertise-keys', 'share-keys', 'masked-input', 'consistency-check', 'unmasking', 'other']),
      reason: new Set([...Object.values(AbortReason), ...Object.values(ErrorCode), 'other']),
      outcome: new Set(['completed', 'aborted', 'cancelled', 'other']),
      kind: new Set(['kek', 'kek-emergency', 'other']),
    };
    for (const x of own) {
      for (const [k, v] of Object.entries(x.labels)) {
        if (k === 'le') continue;
        expect(vocab[k]?.has(v)).toBe(true);
      }
    }
    // Every line belongs to an aegis_ metric; no label anywhere names a client, job or address.
    for (const x of samples) {
      expect(x.name.startsWith('aegis_')).toBe(true);
      for (const k of Object.keys(x.labels)) expect(k).not.toMatch(/client|job|ip|addr|host|id$/i);
    }
  });

  test('two instances do not share state, and neither touches the global registry', async () => {
    const before = await globalRegistry.metrics();
    const a = new CoordinatorMetrics();
    const b = new CoordinatorMetrics();
    a.roundStarted();
    a.roundStarted();
    a.phaseClosed({ phase: Phase.ShareKeys, seconds: 1, clients: 1, expected: 4 });
    b.roundStarted();
    const [sa, sb] = [await serve(a), await serve(b)];
    expect(sa.address).not.toBe(sb.address);
    const pa = parse((await scrape(sa)).text).samples;
    const pb = parse((await scrape(sb)).text).samples;
    expect(value(pa, 'aegis_rounds_started_total')).toBe(2);
    expect(value(pb, 'aegis_rounds_started_total')).toBe(1);
    expect(value(pa, 'aegis_dropouts_total', { phase: 'share-keys' })).toBe(3);
    expect(value(pb, 'aegis_dropouts_total', { phase: 'share-keys' })).toBe(0);
    expect(value(pb, 'aegis_phase_clients', { phase: 'share-keys' })).toBeUndefined();
    expect(a.registry).not.toBe(b.registry);
    expect(a.registry).not.toBe(globalRegistry);
    expect(await globalRegistry.metrics()).toBe(before);
  });
});

describe('metrics server', () => {
  test('other paths and methods are 404; HEAD /metrics has no body; query strings are ignored', async () => {
    const s = await serve(new CoordinatorMetrics({ defaultMetrics: false }));
    for (const path of ['/', '/metrics/', '/metric', '/favicon.ico', '/metrics/../etc']) {
      const res = await fetch(`http://${s.address}${path}`);
      expect(res.status).toBe(404);
      await res.text();
    }
    const post = await fetch(`http://${s.address}/metrics`, { method: 'POST', body: 'x'.repeat(100_000) });
    expect(post.status).toBe(404);
    await post.text();
    const head = await fetch(`http://${s.address}/metrics`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    const q = await fetch(`http://${s.address}/metrics?x=1`);
    expect(q.status).toBe(200);
    expect(await q.text()).toContain('aegis_rounds_started_total 0');
  });

  test('a non-loopback host is refused without allowRemote; malformed addresses are refused', async () => {
    const m = new CoordinatorMetrics({ defaultMetrics: false });
    for (const listen of ['0.0.0.0:0', '[::]:0', '10.1.2.3:0', 'example.com:0']) {
      const err = await serveMetrics(m, listen).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isAegisError(err, 'invalid-argument')).toBe(true);
    }
    for (const listen of ['127.0.0.1', 'localhost:99999', ':9090', '']) {
      const err = await serveMetrics(m, listen).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isAegisError(err, 'invalid-argument')).toBe(true);
    }
    const remote = await serveMetrics(m, '0.0.0.0:0', { allowRemote: true });
    servers.push(remote);
    expect(remote.address).toMatch(/^0\.0\.0\.0:\d+$/);
    const port = remote.address.split(':')[1];
    expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
  });

  test('loopback detection', () => {
    for (const h of ['localhost', 'LOCALHOST', '127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '::ffff:10.0.0.1', '128.0.0.1', 'localhost.evil.com', 'example.com']) expect(isLoopbackHost(h)).toBe(false);
  });

  test('close is idempotent and frees the port', async () => {
    const m = new CoordinatorMetrics({ defaultMetrics: false });
    const s = await serveMetrics(m, '127.0.0.1:0');
    await s.close();
    await s.close();
    await expect(fetch(`http://${s.address}/metrics`)).rejects.toThrow();
    const again = await serveMetrics(m, s.address);
    servers.push(again);
    expect(again.address).toBe(s.address);
  });
});
