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
  }, 120_000);
});
