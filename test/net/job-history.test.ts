/**
 * The job history (coordinator/jobs/job-history.ts, DATA_DIR/jobs.db) with real rounds over
 * gRPC: a coordinator started again on the same data dir answers status, result and list as the
 * first did; retention erases who took part from the history too — from the database file and its
 * WAL — while counts, outcome and sum stay, and a later start reads the retired round back as such.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientRunner } from '../../client/agent/connection.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { FrozenHost } from '../../coordinator/hosts/frozen-host.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';

const DIM = 6;
const DAY = 86_400_000;
let c: Coordinator | undefined;
let runners: ClientRunner[] = [];
let dir: string | undefined;
afterEach(async () => {
  for (const r of runners) r.stop();
  runners = [];
  await c?.close();
  c = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The bytes of the history's files (the database and, if any, its WAL). */
const historyBytes = (d: string): Buffer => Buffer.concat(['jobs.db', 'jobs.db-wal'].map((f) => join(d, f)).filter((p) => existsSync(p)).map((p) => readFileSync(p)));

describe('the job history', () => {
  test('a coordinator started again on its data dir answers as before; retention erases the client ids from the history files', async () => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-history-'));
    let offset = 0;
    const clock = (): number => Date.now() + offset;
    c = await startCoordinator({ dataDir: dir, clock, roundRetentionMs: 7 * DAY });
    const clients = await enrollClients(c, 4, 'kept-client');
    runners = startRunners(c, clients, DIM);
    await waitFor(() => c!.connectedClients().length === 4, 20_000, 'all clients connected');
    await c.launch(manifest({ jobId: 'kept', round: { dim: DIM, cohort: 4, neighbors: 3 } }), { gatherMs: 5_000 });
    expect((await c.outcomeOf('kept', 0)).ok).toBe(true);
    const before = { status: c.statusOf('kept'), result: c.resultOf('kept'), list: c.listJobs() };
    const ids = clients.map((x) => x.clientId).sort();
    expect([...before.result.survivors].sort()).toEqual(ids);
    expect(statSync(join(dir, 'jobs.db')).mode & 0o777).toBe(0o600);
    // Positive control: within its retention the history names who took part.
    for (const id of ids) expect(historyBytes(dir).includes(Buffer.from(id))).toBe(true);

    for (const r of runners) r.stop();
    runners = [];
    await c.close();
    c = await startCoordinator({ dataDir: dir, clock, roundRetentionMs: 7 * DAY });
    expect({ status: c.statusOf('kept'), result: c.resultOf('kept'), list: c.listJobs() }).toEqual(before);

    // Past its retention: the round forgets who took part, here and in the history files.
    offset = c.timingOf('kept', 0).endedAt! + 7 * DAY + 1000 - Date.now();
    expect(c.retireRounds()).toBe(1);
    const retired = c.resultOf('kept');
    expect(retired.survivors).toEqual([]);
    expect(retired.survivorCount).toBe(4);
    expect(Buffer.from(retired.sum).equals(Buffer.from(expectedSum([0, 1, 2, 3], DIM).buffer))).toBe(true);
    const bytes = historyBytes(dir);
    for (const id of ids) expect(bytes.includes(Buffer.from(id))).toBe(false);
    // The job and its sum are still there.
    expect(bytes.includes(Buffer.from('"jobId":"kept"'))).toBe(true);

    // Read back by a later start: retired as it was.
    await c.close();
    c = await startCoordinator({ dataDir: dir, clock, roundRetentionMs: 7 * DAY });
    expect(c.resultOf('kept')).toEqual(retired);
    expect(c.statusOf('kept').invited).toBe(4);
    expect({ ...c.statusOf('kept'), elapsedMs: 0n }).toEqual({ ...before.status, elapsedMs: 0n });
  });

  test('a finished round the history holds is let go of in memory: a frozen host, no sum held, the sum read back exact, also after retention and a restart', async () => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-history-'));
    let offset = 0;
    const clock = (): number => Date.now() + offset;
    c = await startCoordinator({ dataDir: dir, clock, roundRetentionMs: 7 * DAY });
    const clients = await enrollClients(c, 4, 'released-client');
    // Each round a new input (a client declines to give the same plain input twice): client i's input scaled by round + 1.
    const inputOf = (i: number, round: number): Uint32Array => expectedSum([i], DIM).map((w, j) => (j === DIM ? w : w * (round + 1)));
    runners = startRunners(c, clients, DIM, undefined, (i) => ({ input: (ref) => inputOf(i, ref.roundIndex) }));
    await waitFor(() => c!.connectedClients().length === 4, 20_000, 'all clients connected');
    // Inputs scaled by up to 3 need 18 bits per value (the sum of 4 of them, 20).
    const job = manifest({ jobId: 'released', rounds: 3, round: { dim: DIM, cohort: 4, neighbors: 3, bits: 18 } });
    const exactOf = (round: number): Buffer => {
      const sum = new Uint32Array(DIM + 1);
      for (let i = 0; i < 4; i++) inputOf(i, round).forEach((w, j) => (sum[j] = (sum[j]! + w) >>> 0));
      return Buffer.from(sum.buffer);
    };
    /** True when the record holds its sum in memory (a data property) rather than reading it from the history. */
    const holdsSum = (i: number): boolean => {
      const o = c!.jobs.roundOf('released', i).outcome!;
      return Object.hasOwn(o, 'sum') || Object.hasOwn((o as { state: object }).state, 'sum');
    };
    for (let i = 0; i < 3; i++) {
      await c.launch(job, { gatherMs: 5_000 });
      const o = await c.outcomeOf('released', i);
      expect(o.ok ? 'completed' : `${i}: ${o.reason} ${o.detail}`).toBe('completed');
      // Saved with its outcome, then let go of: the live host (the cohort's keys, the protocol state) is gone.
      const r = c.jobs.roundOf('released', i);
      expect(r.released).toBe(true);
      expect(r.host).toBeInstanceOf(FrozenHost);
      expect(r.startOf.size).toBe(0);
      expect(holdsSum(i)).toBe(false);
      expect(o.ok && Buffer.from(o.sum.buffer).equals(exactOf(i))).toBe(true);
    }
    // Every round's result is served from the history, exact, and reading it keeps nothing.
    for (let i = 0; i < 3; i++) {
      expect(Buffer.from(c.resultOf('released', i).sum).equals(exactOf(i))).toBe(true);
      expect(holdsSum(i)).toBe(false);
    }
    expect(c.statusOf('released', 1).finished).toBe(true);

    // Retention rewrites a round's row (its survivors go) and lets go of it again: the sum stays.
    offset = c.timingOf('released', 0).endedAt! + 7 * DAY + 1000 - Date.now();
    expect(c.retireRounds()).toBeGreaterThanOrEqual(1);
    expect(c.jobs.roundOf('released', 0).released).toBe(true);
    expect(holdsSum(0)).toBe(false);
    expect(c.resultOf('released', 0).survivors).toEqual([]);
    expect(Buffer.from(c.resultOf('released', 0).sum).equals(exactOf(0))).toBe(true);

    // Read back by a later start: nothing held, every sum exact.
    for (const r of runners) r.stop();
    runners = [];
    await c.close();
    c = await startCoordinator({ dataDir: dir, clock, roundRetentionMs: 7 * DAY });
    for (let i = 0; i < 3; i++) {
      expect(holdsSum(i)).toBe(false);
      expect(Buffer.from(c.resultOf('released', i).sum).equals(exactOf(i))).toBe(true);
      const o = await c.outcomeOf('released', i);
      expect(o.ok && Buffer.from(o.sum.buffer).equals(exactOf(i))).toBe(true);
    }
  });

  test('without a data dir, a finished round keeps its sum in memory (nothing else holds it)', async () => {
    c = await startCoordinator({});
    const clients = await enrollClients(c, 3, 'memory-client');
    runners = startRunners(c, clients, DIM);
    await waitFor(() => c!.connectedClients().length === 3, 20_000, 'all clients connected');
    await c.launch(manifest({ jobId: 'in-memory', round: { dim: DIM, cohort: 3, threshold: 2 } }), { gatherMs: 5_000 });
    expect((await c.outcomeOf('in-memory', 0)).ok).toBe(true);
    const r = c.jobs.roundOf('in-memory', 0);
    expect(r.released).toBeUndefined();
    expect(Object.hasOwn(r.outcome!, 'sum')).toBe(true);
    expect(Buffer.from(c.resultOf('in-memory', 0).sum).equals(Buffer.from(expectedSum([0, 1, 2], DIM).buffer))).toBe(true);
  });
});
