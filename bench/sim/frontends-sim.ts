/**
 * `aegis simulate --redis URL --frontends F`: the gRPC simulation with the coordinator split into
 * F front-end processes (bench/sim/frontend-worker.ts) that share their round state on Redis
 * (coordinator/queue/redis-rounds.ts), optional unmask worker processes, and the clients in
 * W client processes (bench/sim/grpc-worker.ts) — client process w starts on front end w mod F
 * and fails over to the others in turn.
 *
 * `--kill-frontend-at PHASE` kills the last front end — the one the round is launched on — with
 * SIGKILL (no cleanup, no goodbye) just as it hands its clients the message that opens PHASE
 * (advertise: the round start). Its clients
 * reconnect to another front end; the round must then complete with the exact sum of its
 * survivors, or abort with a typed reason.
 *
 * This process enrolls the clients (an in-process coordinator with the deployment's CA and token
 * key), then follows the round on Redis; its peak RSS is not the front ends'.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createCa, exportCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { connectRedis } from '../../coordinator/queue/redis.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { RedisRounds } from '../../coordinator/queue/redis-rounds.js';
import type { RoundOutcome } from '../../coordinator/round/index.js';
import { enrollWithToken } from '../../client/agent/connection.js';
import { createIdentity } from '../../client/enroll/csr.js';
import { validateRoundParams, type RoundParams } from '../../shared/protocol/params.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { DROP_PHASES } from './client-host.js';
import type { FrontEndReply, FrontEndRequest } from './frontend-worker.js';
import type { GrpcWorkerClient, GrpcWorkerStats } from './grpc-worker.js';
import { IpcChild, startClientProcess, type ClientProcess, mapLimit, simulationDeadlines, simulationManifest, syntheticTruth, waitUntil } from './grpc-sim.js';
import { resultBase } from './result.js';
import { dropSchedule, type SimulateOptions, type SimulateResult } from './simulate.js';

const JOB_ID = 'aegis-simulation';

/** The event that opens each phase for a client. */
export const KILL_POINTS = [...DROP_PHASES, 'masked-taken'] as const;
export type KillPoint = (typeof KILL_POINTS)[number];

/** The event that opens each phase for a client (`masked-taken`: right after taking a masked input). */
export const OPENS: Record<KillPoint, string> = {
  'masked-taken': 'masked-taken',
  advertise: 'round-start',
  share: 'advertise-broadcast',
  masked: 'share-broadcast',
  consistency: 'consistency-request',
  unmask: 'unmask-request',
};

export interface FrontendsOptions extends SimulateOptions {
  redisUrl: string;
  frontends: number;
  /** Kill the last front end (SIGKILL) as it opens this phase for its clients. */
  killFrontendAt?: KillPoint;
  /** Unmask worker processes on the Redis (0: the front ends expand the masks themselves). */
  unmaskWorkers?: number;
}

export interface FrontendsReport {
  count: number;
  /** The phase in which a front end was killed, when one was. */
  killed_at?: KillPoint;
  unmask_workers: number;
}

function workerPath(name: string): string {
  const p = fileURLToPath(new URL(`./${name}`, import.meta.url));
  if (!existsSync(p)) throw new Error(`worker entry ${p} not found: run "npm run build" (front ends need the compiled dist/)`);
  return p;
}

/** One front-end (or unmask worker) process. */
const startFrontEnd = (env: NodeJS.ProcessEnv): IpcChild<FrontEndRequest, FrontEndReply> => IpcChild.fork<FrontEndRequest, FrontEndReply>(workerPath('frontend-worker.js'), 'front end', env);

export async function simulateFrontends(opts: FrontendsOptions): Promise<SimulateResult & { frontends: FrontendsReport }> {
  const tSetup = performance.now();
  const seed = opts.seed ?? 1;
  const dropout = opts.dropout ?? 0;
  const dropPhase = opts.dropPhase ?? 'any';
  const F = opts.frontends;
  if (!Number.isInteger(F) || F < 1) throw new RangeError('--frontends takes a whole number of at least 1');
  if (opts.killFrontendAt !== undefined && F < 2) throw new RangeError('--kill-frontend-at needs at least 2 front ends (the others carry the round on)');
  if (opts.killFrontendAt !== undefined && !KILL_POINTS.includes(opts.killFrontendAt)) throw new RangeError(`--kill-frontend-at takes one of ${KILL_POINTS.join(', ')}`);
  const params: RoundParams = validateRoundParams({ dim: opts.dim, cohort: opts.clients, neighbors: opts.neighbors, threshold: opts.threshold, clip: opts.clip ?? 1, bits: opts.bits ?? 16 });
  const log = opts.progress ?? (() => undefined);
  const n = params.cohort;
  const workers = Math.max(1, Math.min(opts.workers ?? Math.max(F, Math.min(4, cpus().length)), n));
  const unmaskWorkers = opts.unmaskWorkers ?? 0;
  const schedule = dropSchedule(n, dropout, dropPhase, seed);
  // A killed front end costs its clients a reconnect, and a masked-input close waits for its heartbeat to lapse.
  const deadlines = simulationDeadlines(params, workers, opts.phaseTimeoutMs ?? (opts.killFrontendAt ? 20_000 : undefined));

  const redis = await connectRedis(opts.redisUrl);
  const prefix = `aegis-sim-${randomBytes(4).toString('hex')}`;
  const queueKey = randomBytes(32);
  const ca = await createCa({ name: 'Aegis simulation CA' });
  const tokens = TokenIssuer.create();
  const registry = new Registry();
  const follower = new RedisRounds(redis, queueKey, { prefix, frontEndId: `sim-${process.pid}` });
  const fes: IpcChild<FrontEndRequest, FrontEndReply>[] = [];
  const unmaskers: IpcChild<FrontEndRequest, FrontEndReply>[] = [];
  const procs: ClientProcess[] = [];
  const enroller = new Coordinator({ ca, tokens, registry });
  try {
    await enroller.listen('127.0.0.1:0', '127.0.0.1:0');
    const width = String(n - 1).length;
    const enrolled = await mapLimit(Array.from({ length: n }, (_, i) => i), 16, async (i): Promise<GrpcWorkerClient> => {
      const clientId = `client-${String(i).padStart(width, '0')}`;
      const identity = await createIdentity();
      const { token } = await enroller.createInvite({ clientId });
      const r = await enrollWithToken({ enrollAddress: enroller.enrollAddress, caPem: ca.certificatePem, token, identity, clientId });
      return { clientId: r.clientId, index: i, identitySeed: identity.seed, certificateDer: r.certificateDer, dropAt: schedule[i]! };
    });
    await enroller.close();
    const indexOf = new Map(enrolled.map((c) => [c.clientId, c.index]));
    const { seed: caSeed, certificateDer: caCertificateDer } = exportCa(ca);
    const registryJson = JSON.stringify(registry.toJSON());
    const initOf = (feId: string, unmaskLocal: number) => ({ op: 'init' as const, feId, redisUrl: opts.redisUrl, prefix, caSeed, caCertificateDer, tokenSeed: tokens.exportSeed(), queueKey, registryJson, unmaskWorkers: unmaskLocal, unmaskParts: Math.max(2, unmaskWorkers) });
    const addresses: string[] = [];
    for (let f = 0; f < F; f++) {
      const killed = opts.killFrontendAt !== undefined && f === F - 1;
      const p = startFrontEnd({ ...process.env, ...(killed ? { AEGIS_SIM_DIE_ON: OPENS[opts.killFrontendAt!] } : {}) });
      fes.push(p);
      const r = await p.request(initOf(`fe-${f}`, unmaskWorkers > 0 ? 0 : 1));
      if (r.op !== 'ready') throw new Error('a front end did not start');
      addresses.push(r.address);
    }
    // Unmask workers: front-end processes that take no clients, only unmask parts.
    for (let u = 0; u < unmaskWorkers; u++) {
      const p = startFrontEnd(process.env);
      unmaskers.push(p);
      await p.request({ ...initOf(`unmask-${u}`, 1), role: 'unmask' });
    }
    log(`${F} front end${F === 1 ? '' : 's'} on ${addresses.join(', ')} sharing Redis prefix ${prefix}${unmaskWorkers ? `, ${unmaskWorkers} unmask worker processes` : ''}; ${n} clients in ${workers} processes`);
    for (let w = 0; w < workers; w++) procs.push(startClientProcess());
    await Promise.all(
      procs.map((p, w) => {
        const list = addresses.map((_, i) => addresses[(w + i) % F]!).join(',');
        return p.request({ op: 'init', address: list, caPem: ca.certificatePem, seed, uploadsInFlight: opts.uploadsInFlight ?? 0, clients: enrolled.filter((_, i) => i % workers === w) });
      }),
    );
    let present = 0;
    const poll = setInterval(() => void follower.presence().then((p) => (present = p.length), () => undefined), 100);
    try {
      await waitUntil(() => present >= n, 30_000 + 200 * n, `${n} clients to subscribe`);
    } finally {
      clearInterval(poll);
    }
    const setupMs = performance.now() - tSetup;
    const t0 = performance.now();
    // The round is launched on the last front end: with --kill-frontend-at, the one killed is
    // the one that started the round (nothing about a round belongs to its launcher).
    const launcher = fes[F - 1]!;
    await launcher.request({ op: 'launch', manifestJson: simulationManifest(params, n, deadlines), gatherMs: 10_000 }).catch((err: unknown) => {
      if (!launcher.exited) throw err;
    });
    let host: Awaited<ReturnType<RedisRounds['host']>> | undefined;
    for (const until = Date.now() + 30_000; !host; ) {
      host = await follower.host(`${JOB_ID}.r0`).catch((err: unknown) => {
        if (Date.now() > until) throw err;
        return undefined;
      });
      if (!host) await new Promise((r) => setTimeout(r, 50));
    }
    let settled: RoundOutcome | undefined;
    void host.outcome.then((o) => (settled = o));
    let phase: string = Phase.AdvertiseKeys;
    let tPhase = t0;
    let unmaskStart: number | undefined;
    while (!settled) {
      await host.refresh();
      const current = settled ? 'final' : host.phase;
      if (current !== phase) {
        const t = performance.now();
        if (current !== Phase.Completed && current !== Phase.Aborted) log(`  ${phase} closed -> ${current} after ${(t - tPhase).toFixed(0)} ms`);
        if (current === Phase.Unmasking) unmaskStart = t;
        phase = current;
        tPhase = t;
      }
      if (!settled) await new Promise((r) => setTimeout(r, 10));
    }
    const o = settled;
    const tEnd = performance.now();
    const killed = fes[F - 1]!.exited && opts.killFrontendAt !== undefined ? opts.killFrontendAt : undefined;
    if (opts.killFrontendAt !== undefined) log(killed ? `  front end ${F - 1} was killed (SIGKILL) as ${opts.killFrontendAt} opened` : `  front end ${F - 1} was not killed: the round never opened ${opts.killFrontendAt} for its clients`);
    const stats = (await Promise.all(procs.map((p) => p.request({ op: 'stats' })))).map((r) => (r as { stats: GrpcWorkerStats }).stats);
    const final = o.state;
    const base = resultBase({ transport: 'grpc', clients: n, params, schedule, seed, dropPhase, dropout, workers, final, refused: 0, stats, setupMs, unmaskMs: unmaskStart === undefined ? 0 : tEnd - unmaskStart, totalMs: tEnd - t0, certificateChecks: stats.reduce((a, s) => a + s.certificateChecks, 0) });
    const frontends: FrontendsReport = { count: F, ...(killed ? { killed_at: killed } : {}), unmask_workers: unmaskWorkers };
    const peak = Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;
    if (!o.ok || final.phase !== Phase.Completed) {
      const reason = o.ok ? 'incomplete' : o.reason;
      log(`round aborted in ${o.ok ? final.phase : o.at}: ${reason}`);
      return { ok: false, reason, detail: o.ok ? '' : o.detail, aborted_at: o.ok ? final.phase : o.at, exact: false, max_abs_error: null, survivors: 0, total_weight: null, ...base, peak_rss_mb: peak, frontends };
    }
    const { exact, maxErr } = syntheticTruth(final, indexOf, seed, params);
    log(`round completed: ${final.survivors.length}/${n} survivors, exact=${exact}, max |error| ${maxErr.toExponential(2)}, ${(tEnd - t0).toFixed(0)} ms`);
    return { ok: true, exact, max_abs_error: maxErr, survivors: final.survivors.length, total_weight: final.sum[params.dim]!, ...base, peak_rss_mb: peak, frontends };
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await Promise.all([...fes, ...unmaskers].map((p) => p.stop()));
    await enroller.close().catch(() => undefined);
    const keys = await redis.keys(`${prefix}:*`).catch(() => [] as string[]);
    if (keys.length > 0) await redis.del(...keys).catch(() => undefined);
    await follower.close().catch(() => undefined);
    await redis.quit().catch(() => undefined);
  }
}
