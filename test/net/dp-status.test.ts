/**
 * The privacy a DP job spends, visible on the coordinator: a coordinator with a real data dir
 * (its built-in operator credential) on loopback TLS 1.3, four in-process clients, a DP training
 * job of three rounds and a training job without DP. Then
 *   - `aegis round status` (the built CLI, over the Admin gRPC service) shows for the DP job its
 *     mechanism, δ, the ε spent after the completed rounds and after each of them — exactly the
 *     accountant's dpEpsilonAfter(manifest, k), rising round by round — and the job's budget (ε
 *     after all its rounds), in --json and in the text; the other job shows `dp: none` / `dp: null`;
 *   - between the rounds the Admin status already shows the ε of the rounds done so far;
 *   - `/metrics` has the label-free DP series: the largest ε spent, the largest fraction of a
 *     budget spent, DP rounds completed, DP jobs running — equal to the accountant's values, and
 *     no job id anywhere in the exposition.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from '../../coordinator/clients/registry.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { builtInOperator, openCoordinatorSecrets, writeEndpoint, type CoordinatorSecrets } from '../../coordinator/service/data-dir.js';
import { CoordinatorMetrics } from '../../coordinator/service/metrics.js';
import type { ClientRunner } from '../../client/agent/connection.js';
import type * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import { serveMetrics, type MetricsServer } from '../../shared/metrics/serve.js';
import { dpEpsilonAfter } from '../../shared/protocol/dp-manifest.js';
import { cliJson, runCliAsync } from '../support/cli.js';
import { DP_JOB, DP_ROUNDS, DP_VIEW, PLAIN_JOB, runJob, startDpClients } from '../support/dp-jobs.js';

const PASS = 'dp status test passphrase';
const env = { ...process.env, AEGIS_PASSPHRASE: PASS, AEGIS_LOG_LEVEL: 'warn' };
let dir: string;
let secrets: CoordinatorSecrets;
let c: Coordinator;
let metricsServer: MetricsServer;
let runners: ClientRunner[] = [];
/** The DP job's Admin status between its rounds (after round k completed, before round k + 1 gathers). */
const between: (admin.DpStatus | undefined)[] = [];
/**
 * The /metrics exposition asked for at the same moments (the registry reads the DP gauges as the
 * call is made, before the next round can complete).
 */
const betweenMetrics: Promise<string>[] = [];

/** ε after k rounds of the DP job, from the accountant. */
const epsAfter = (k: number): number => dpEpsilonAfter(DP_VIEW, k);

const status = (...args: string[]) => runCliAsync(['round', 'status', ...args, '--data-dir', dir], env);

/** The value of an unlabelled series in a /metrics exposition. */
function series(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`${name} is not in /metrics`);
  return Number(m[1]);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'aegis-dp-status-'));
  secrets = await openCoordinatorSecrets(dir, { passphrase: async () => PASS, pin: async () => '' });
  const metrics = new CoordinatorMetrics({ defaultMetrics: false });
  c = new Coordinator({
    ca: secrets.ca,
    tokens: secrets.tokens,
    registry: new Registry(),
    dataDir: dir,
    metrics,
    builtInOperator: builtInOperator(dir, secrets.kek, secrets.ca, Date.now),
    onBetweenRounds: (jobId) => {
      if (jobId !== DP_JOB) return;
      between.push(c.statusOf(DP_JOB).dp);
      betweenMetrics.push(metrics.metrics());
    },
  });
  const { address, enrollAddress } = await c.listen('127.0.0.1:0', '127.0.0.1:0');
  await writeEndpoint(dir, { address, enrollAddress, pid: process.pid });
  metricsServer = await serveMetrics(metrics, '127.0.0.1:0');
  runners = await startDpClients(c);
  await runJob(c, true);
  await runJob(c, false);
});

afterAll(async () => {
  await Promise.all(runners.map((r) => r.stop()));
  await metricsServer?.close();
  await c?.close();
  await secrets?.kek.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the privacy a DP job spent, on the coordinator', () => {
  test('between rounds, the status already shows the ε of the rounds completed so far', () => {
    // Two gaps between three rounds; each shows the rounds before it, rising.
    expect(between).toHaveLength(DP_ROUNDS - 1);
    between.forEach((d, i) => {
      expect(d?.roundsCharged).toBe(i + 1);
      expect(d?.epsilonSpent).toBe(epsAfter(i + 1));
      expect(d?.epsilonBudget).toBe(epsAfter(DP_ROUNDS));
      expect(d?.rounds.map((r) => r.epsilon)).toEqual(Array.from({ length: i + 1 }, (_, k) => epsAfter(k + 1)));
    });
    expect(between[1]!.epsilonSpent).toBeGreaterThan(between[0]!.epsilonSpent);
  });

  test('round status --json: mechanism, δ, ε spent and after each round (the accountant\'s, rising), the budget; null without DP', async () => {
    const r = await status(DP_JOB, '--json');
    expect(r.status).toBe(0);
    const s = cliJson(r);
    expect(s.state).toBe('completed');
    const dp = DP_VIEW.dp!;
    expect(s.dp).toEqual({
      mechanism: 'distributed-discrete-gaussian',
      delta: dp.delta,
      epsilon_spent: epsAfter(DP_ROUNDS),
      epsilon_budget: epsAfter(DP_ROUNDS),
      epsilon_claimed: dp.epsilon,
      rounds_charged: DP_ROUNDS,
      rounds_total: DP_ROUNDS,
      noise_multiplier: dp.noiseMultiplier,
      clip: dp.clip,
      min_clients: dp.minClients,
      per_round: [1, 2, 3].map((k) => ({ round_index: k - 1, round_number: k, epsilon: epsAfter(k) })),
    });
    const per = (s.dp.per_round as { epsilon: number }[]).map((x) => x.epsilon);
    for (let k = 1; k < per.length; k++) expect(per[k]!).toBeGreaterThan(per[k - 1]!);
    // The budget is the accountant's over the manifest's rounds; the claimed ε is not below it.
    expect(s.dp.epsilon_claimed).toBeGreaterThanOrEqual(s.dp.epsilon_budget * (1 - 1e-9));

    // The job's privacy whichever round is asked for.
    const first = cliJson(await status(DP_JOB, '--round', '1', '--json'));
    expect(first.round_number).toBe(1);
    expect(first.dp.epsilon_spent).toBe(epsAfter(DP_ROUNDS));

    const none = await status(PLAIN_JOB, '--json');
    expect(none.status).toBe(0);
    const n = cliJson(none);
    expect(n.state).toBe('completed');
    expect(n.training.rounds_completed).toBe(DP_ROUNDS);
    expect(n).toHaveProperty('dp', null);
  });

  test('round status (text): a dp line with ε spent of the budget and ε after each round; `dp: none` without DP', async () => {
    const r = await status(DP_JOB);
    expect(r.status).toBe(0);
    const fmt = (x: number): string => Number(x.toPrecision(4)).toString();
    expect(r.stdout).toContain(`dp: distributed-discrete-gaussian (noise multiplier 1, clip 1, min clients 3): ε spent ${fmt(epsAfter(3))} of ${fmt(epsAfter(3))} (δ 0.00001) after 3 of 3 rounds`);
    expect(r.stdout).toContain(`ε after each round: round 1 ${fmt(epsAfter(1))}, round 2 ${fmt(epsAfter(2))}, round 3 ${fmt(epsAfter(3))}`);
    const none = await status(PLAIN_JOB);
    expect(none.status).toBe(0);
    expect(none.stdout).toMatch(/^ {2}dp: none$/m);
    expect(none.stdout).not.toContain('ε');
  });

  test('/metrics: the largest ε spent and budget fraction, DP rounds and running DP jobs, label-free, equal to the accountant', async () => {
    const text = await (await fetch(`http://${metricsServer.address}/metrics`)).text();
    expect(series(text, 'aegis_dp_epsilon_spent_max')).toBe(epsAfter(DP_ROUNDS));
    expect(series(text, 'aegis_dp_epsilon_budget_fraction_max')).toBe(1);
    // The job without DP released three sums too: only the DP job's rounds count.
    expect(series(text, 'aegis_dp_rounds_completed_total')).toBe(DP_ROUNDS);
    expect(series(text, 'aegis_dp_jobs_running')).toBe(0);
    expect(text).toMatch(new RegExp(`^aegis_rounds_finished_total\\{outcome="completed"\\} ${2 * DP_ROUNDS}$`, 'm'));
    for (const id of [DP_JOB, PLAIN_JOB]) expect(text).not.toContain(id);
    expect(text).not.toMatch(/^aegis_dp_\w+\{/m);

    // Between the rounds: k of 3 rounds spent, the job running.
    const mid = await Promise.all(betweenMetrics);
    expect(mid).toHaveLength(DP_ROUNDS - 1);
    mid.forEach((m, i) => {
      const k = i + 1;
      expect(series(m, 'aegis_dp_epsilon_spent_max')).toBe(epsAfter(k));
      expect(series(m, 'aegis_dp_epsilon_budget_fraction_max')).toBeCloseTo(epsAfter(k) / epsAfter(DP_ROUNDS), 12);
      expect(series(m, 'aegis_dp_epsilon_budget_fraction_max')).toBeLessThan(1);
      expect(series(m, 'aegis_dp_rounds_completed_total')).toBe(k);
      expect(series(m, 'aegis_dp_jobs_running')).toBe(1);
    });
  });
});
