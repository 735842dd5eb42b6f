/**
 * `npm run bench -- soak` in small: a real coordinator in its own process (dist/bench/
 * soak-coordinator.js: run "npm run build" first) and a second, idle one; real ClientRunners over
 * loopback gRPC with mTLS; a few rounds. Checks the shape of what the benchmark reports and that
 * every round's sum was checked and exact — no timing is asserted.
 */
import { describe, expect, test } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GROWTH_KEYS, median, runSoak, soakInput, windowsOf, type SoakFigures } from '../../bench/soak.js';
import { sparkline } from '../../bench/soak-chart.js';

const positive = (f: SoakFigures): void => {
  expect(f.rss_mb).toBeGreaterThan(0);
  expect(f.heap_used_mb).toBeGreaterThan(0);
  expect(f.fds).toBeGreaterThan(0);
  expect(f.eld_p99_ms).toBeGreaterThan(0);
  expect(f.eld_max_ms).toBeGreaterThanOrEqual(f.eld_p99_ms);
};

describe('soak benchmark', () => {
  test('six rounds with five clients: every round exact, every figure sampled, growth reported as numbers', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-soak-test-'));
    const chartPath = join(dir, 'soak.svg');
    const r = await runSoak({ rounds: 6, clients: 5, dim: 200, warmup: 2, window: 2, chartPath });
    expect(r.bench).toBe('soak');
    expect(r.rounds_run).toBe(6);
    expect(r.windows).toEqual({ early: [2, 3], late: [5, 6] });
    expect(r.rounds.map((x) => x.round)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const x of r.rounds) {
      expect(x.problem).toBeUndefined();
      expect(x.exact).toBe(true);
      expect(x.survivors).toBe(5);
      expect(x.round_ms).toBeGreaterThan(0);
      // Every round, each client sends the same messages: the same bytes, but for the round index
      // (0, the first round's, takes no bytes in protobuf; 1..5 take two).
      expect(x.sent_bytes_per_client).toBe(r.rounds[1]!.sent_bytes_per_client - (x.round === 1 ? 2 : 0));
      positive(x);
      positive(x.idle);
    }
    expect(r.all_exact).toBe(true);
    // Five clients of 16-bit values: the sum needs 19 bits, and the masked upload is about 201 · 19 / 8 bytes.
    expect(r.bytes.sum_bits).toBe(19);
    expect(r.bytes.masked_floor_bytes).toBe(Math.ceil((200 * 19) / 8));
    expect(r.bytes.bytes_per_client.masked).toBeGreaterThan(r.bytes.masked_floor_bytes);
    expect(r.bytes.bytes_per_client.masked).toBeLessThan(r.bytes.masked_floor_bytes + 120);
    expect(r.rounds[5]!.sent_bytes_per_client).toBe(r.bytes.bytes_per_client.total);
    for (const key of GROWTH_KEYS) {
      expect(typeof r.growth[key]).toBe('number');
      expect(Number.isFinite(r.growth[key])).toBe(true);
      expect(typeof r.idle_growth[key]).toBe('number');
      expect(typeof r.met[key]).toBe('boolean');
      expect(r.met[key]).toBe(r.growth[key] < r.target);
      expect(r.vs_idle[key]).toBeGreaterThan(0);
    }
    expect(Number.isFinite(r.growth.round_ms)).toBe(true);
    // The idle coordinator ran no round: the one that did holds more (its clients' streams, its rounds).
    expect(r.rounds[5]!.fds).toBeGreaterThan(r.rounds[5]!.idle.fds);
    // The chart: one panel per figure, the soak and the idle coordinator as lines over the six rounds.
    expect(r.chart).toBe(chartPath);
    const svg = readFileSync(chartPath, 'utf8');
    rmSync(dir, { recursive: true, force: true });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/<polyline /g)).toHaveLength(8);
    expect(svg).toContain('RSS after GC (MB)');
    // The JSON document is what --json prints.
    expect(JSON.parse(JSON.stringify(r))).toMatchObject({ growth: r.growth, rounds: expect.any(Array) });
  });

  test('the inputs differ per client and per round, so a stale or partial sum cannot pass as exact', () => {
    const a = soakInput(0, 0, 16);
    expect(a).toHaveLength(17);
    expect(a[16]).toBe(1);
    expect(Buffer.from(soakInput(0, 1, 16).buffer).equals(Buffer.from(a.buffer))).toBe(false);
    expect(Buffer.from(soakInput(1, 0, 16).buffer).equals(Buffer.from(a.buffer))).toBe(false);
  });

  test('growth windows and medians', () => {
    expect(windowsOf({ rounds: 200, warmup: 20, window: 10 })).toEqual({ early: [20, 29], late: [191, 200] });
    expect(windowsOf({ rounds: 40, warmup: 10, window: 5 })).toEqual({ early: [10, 14], late: [36, 40] });
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(sparkline([1, 1, 1])).toBe('▁▁▁');
    expect(sparkline([0, 1])).toBe('▁█');
  });

  test('refuses a run too short for its windows', async () => {
    await expect(runSoak({ rounds: 3, clients: 5, dim: 10, warmup: 2, window: 2 })).rejects.toThrow(RangeError);
  });
});
