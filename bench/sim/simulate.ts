/**
 * `aegis simulate`: one whole secure-aggregation round in one process — the real coordinator
 * and client state machines, clients in worker threads (or in the calling thread), synthetic
 * inputs and a dropout schedule from the seed. It checks the result against a plaintext sum it
 * computes itself: `exact` means the unmasked integer sum equals the sum of the survivors'
 * quantized inputs, word for word.
 */
import { roundViewDigest } from '../../shared/protocol/view.js';
import { cpus } from 'node:os';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { isAegisError } from '../../shared/errors.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { addInto } from '../../shared/crypto/vecops.js';
import type { ClientMessage } from '../../shared/protocol/messages.js';
import { groupRoundParams, validateRoundParams, type RoundParams } from '../../shared/protocol/params.js';
import { sha256 } from '../../shared/protocol/session.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { close, finishUnmask, isFinal, planUnmask, receive, start, type CoordinatorState } from '../../coordinator/round/index.js';
import { makeIdentities, type HostInit } from './client-host.js';
import { simulateGrpc } from './grpc-sim.js';
import { dropSchedule, type SimulateOptions } from './options.js';
import { LocalPool, WorkerPool, type ClientPool } from './pool.js';
import { compareToTruth, resultBase, type SimulateResult } from './result.js';
import { weightedBytes } from './wire-count.js';
import { planGroups } from '../../coordinator/round/groups.js';

// The options and the result live in modules every transport imports (options.ts, result.ts);
// callers take them from here, with the simulator.
export { dropSchedule, type SimulateOptions } from './options.js';
export type { GroupsReport, SimulateResult } from './result.js';

const peakRssMb = (): number => Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;

export async function simulate(opts: SimulateOptions): Promise<SimulateResult> {
  if (opts.groupSize !== undefined && opts.clients > opts.groupSize) return simulateGroups(opts, opts.groupSize);
  if (opts.transport === 'grpc') return simulateGrpc(opts);
  const tSetup = performance.now();
  const seed = opts.seed ?? 1;
  const dropout = opts.dropout ?? 0;
  const dropPhase = opts.dropPhase ?? 'any';
  if (!(dropout >= 0 && dropout <= 1)) throw new RangeError('dropout must be in [0, 1]');
  const params: RoundParams = validateRoundParams({
    dim: opts.dim,
    cohort: opts.clients,
    neighbors: opts.neighbors,
    threshold: opts.threshold,
    clip: opts.clip ?? 1,
    bits: opts.bits ?? 16,
  });
  const log = opts.progress ?? (() => undefined);
  const workers = Math.max(0, Math.min(opts.workers ?? cpus().length, opts.clients));
  const round = { manifestHash: sha256(`aegis-simulation:${seed}`), roundIndex: 0 };
  const ids = makeIdentities(opts.clients);
  const schedule = dropSchedule(opts.clients, dropout, dropPhase, seed);
  const directory: [string, Uint8Array][] = ids.map((c) => [c.id, c.publicKey]);
  const identityOf = new Map(directory);
  const init: HostInit = {
    params,
    round,
    seed,
    directory,
    clients: ids.map((c, index) => ({ id: c.id, index, identityKey: c.identityKey, dropAt: schedule[index]! })),
  };
  const pool: ClientPool = workers > 0 ? await WorkerPool.create(init, workers) : new LocalPool(init);
  const setupMs = performance.now() - tSetup;
  const mode = params.neighbors >= params.cohort - 1 ? 'secagg' : 'secagg+';
  log(`simulating ${mode}: n=${params.cohort} m=${params.dim} k=${params.neighbors} t=${params.threshold}, ${schedule.filter(Boolean).length} dropping (${dropPhase}), ${workers || 'no'} worker threads`);

  const t0 = performance.now();
  let unmaskMs = 0;
  let refused = 0;
  let state: CoordinatorState;
  try {
    state = start({ params, round, view: roundViewDigest({ round, params }), identityOf: (id) => identityOf.get(id) });
    const take = (m: ClientMessage): void => {
      try {
        state = receive(state, m).next;
      } catch (err) {
        if (!isAegisError(err)) throw err;
        refused++;
      }
    };
    const tStart = performance.now();
    await pool.start(take);
    log(`  clients advertised keys in ${(performance.now() - tStart).toFixed(0)} ms`);
    while (!isFinal(state)) {
      const phase = state.phase;
      const tPhase = performance.now();
      if (phase === Phase.Unmasking) {
        const plan = planUnmask(state);
        if ('aborted' in plan) state = plan.aborted.next;
        else {
          const partials = await pool.unmask(plan.jobs);
          state = finishUnmask(state, partials, plan.jobs.length).next;
        }
        unmaskMs = performance.now() - tPhase;
        log(`  ${phase}: ${state.phase === Phase.Completed ? 'sum unmasked' : 'aborted'} in ${unmaskMs.toFixed(0)} ms`);
        break;
      }
      // The pool returns once every client that will answer has answered: close the phase as
      // its deadline would.
      const { next, outbound } = close(state);
      state = next;
      if (isFinal(state)) break;
      const tDeliver = performance.now();
      await pool.deliver(outbound, take);
      log(`  ${phase} closed -> ${state.phase}: ${outbound.length} recipients answered in ${(performance.now() - tDeliver).toFixed(0)} ms`);
    }
  } catch (err) {
    await pool.close();
    throw err;
  }
  const totalMs = performance.now() - t0;
  const [plain, stats] = [await pool.plaintext(), await pool.stats()];
  await pool.close();

  const final = state as CoordinatorState;
  const base = resultBase({ transport: 'local', clients: params.cohort, params, schedule, seed, dropPhase, dropout, workers, final, refused, stats, setupMs, unmaskMs, totalMs });

  if (final.phase !== Phase.Completed) {
    const reason = final.phase === Phase.Aborted ? final.reason : 'incomplete';
    const detail = final.phase === Phase.Aborted ? final.detail : '';
    log(`round aborted in ${final.phase === Phase.Aborted ? final.at : final.phase}: ${reason} (${detail})`);
    return { ok: false, reason, detail, aborted_at: final.phase === Phase.Aborted ? final.at : final.phase, exact: false, max_abs_error: null, survivors: 0, total_weight: null, ...base, peak_rss_mb: peakRssMb() };
  }

  // Ground truth: the plain sums the client hosts kept for the clients whose inputs they sent.
  const qSum = new Uint32Array(params.dim + 1);
  const xSum = new Float64Array(params.dim);
  const contributors: string[] = [];
  for (const p of plain) {
    addInto(qSum, p.qSum);
    for (let i = 0; i < xSum.length; i++) xSum[i]! += p.xSum[i]!;
    contributors.push(...p.contributors);
  }
  const sameSurvivors = contributors.length === final.survivors.length && contributors.every((id) => final.survivors.includes(id));
  const { exact, maxErr } = compareToTruth(final, qSum, xSum, sameSurvivors);
  log(`round completed: ${final.survivors.length}/${params.cohort} survivors, exact=${exact}, max |error| ${maxErr.toExponential(2)}, ${totalMs.toFixed(0)} ms`);
  return {
    ok: true,
    exact,
    max_abs_error: maxErr,
    survivors: final.survivors.length,
    total_weight: final.sum[params.dim]!,
    ...base,
    peak_rss_mb: peakRssMb(),
  };
}


/**
 * A grouped round: the cohort split by planGroups, each group simulated as its own instance (its
 * own identities, session, inputs and dropout draw from a per-group seed), then combined as the
 * coordinator combines them. `exact` holds when every completed group's sum is exact, so the
 * total is too; `ok` when at least one group completed.
 */
async function simulateGroups(opts: SimulateOptions, groupSize: number): Promise<SimulateResult> {
  if (opts.transport === 'grpc') throw new RangeError('grouped rounds are simulated with --transport local');
  const bits = opts.bits ?? 16;
  if (opts.clients * 2 ** bits >= 2 ** 32) throw new RangeError(`n * 2^b must stay below 2^32 over the whole cohort (the group sums add): ${opts.clients} clients at ${bits} bits do not fit`);
  const t0 = performance.now();
  const seed = opts.seed ?? 1;
  const log = opts.progress ?? (() => undefined);
  const groups = planGroups(Array.from({ length: opts.clients }, (_, i) => `client-${i}`), groupSize, seed);
  log(`grouped round: ${opts.clients} clients in ${groups.length} groups of ${Math.min(...groups.map((g) => g.length))}..${Math.max(...groups.map((g) => g.length))}`);
  const whole = validateRoundParams({ dim: opts.dim, cohort: opts.clients, groupSize, neighbors: opts.neighbors, threshold: opts.threshold, clip: opts.clip ?? 1, bits });
  const groupParams = (size: number): RoundParams => groupRoundParams(whole, size);
  const failing = new Set(Array.from(DeterministicRng.fromSeed('aegis-sim-failing-groups', seed).permutation(groups.length)).slice(0, opts.failGroups ?? 0));
  const { progress: _progress, ...plain } = opts;
  const optionsFor = (g: number, members: string[]): SimulateOptions => ({
    ...plain,
    groupSize: undefined,
    ...(failing.has(g) ? { dropout: 1, dropPhase: opts.dropPhase === undefined || opts.dropPhase === 'any' ? 'advertise' : opts.dropPhase } : {}),
    clients: members.length,
    seed: seed * 7919 + g,
    // The coordinator's rule for a group's k and t (shared/protocol/params.ts groupRoundParams).
    neighbors: groupParams(members.length).neighbors,
    threshold: groupParams(members.length).threshold,
  });
  const report = (g: number, r: SimulateResult): void =>
    log(`  group ${g + 1}/${groups.length}: ${r.ok ? `${r.survivors}/${r.clients} survivors${r.exact ? '' : ' NOT EXACT'}` : `aborted in ${r.aborted_at}: ${r.reason}`} (${r.timings_ms.total} ms)`);
  // Groups are independent rounds: with worker threads, each thread runs whole groups, so the
  // cores work on different groups at once; without, one group after the other here.
  const lanes = Math.max(0, Math.min(opts.workers ?? cpus().length, groups.length));
  const results: SimulateResult[] = new Array(groups.length);
  if (lanes >= 2) {
    // Compiled beside this module in dist/; from the sources (tests), the built copy in dist/.
    const beside = fileURLToPath(new URL('./group-worker.js', import.meta.url));
    const path = existsSync(beside) ? beside : fileURLToPath(new URL('../../dist/bench/sim/group-worker.js', import.meta.url));
    if (!existsSync(path)) throw new Error(`${path} not found: run "npm run build" (worker threads need the compiled dist/)`);
    const threads = Array.from({ length: lanes }, () => new Worker(path));
    let next = 0;
    try {
      await Promise.all(
        threads.map(async (w) => {
          for (let g = next++; g < groups.length; g = next++) {
            const reply = await new Promise<{ ok: true; r: SimulateResult } | { ok: false; message: string }>((resolve, reject) => {
              w.once('message', resolve);
              w.once('error', reject);
              w.postMessage(optionsFor(g, groups[g]!));
            });
            if (!reply.ok) throw new Error(reply.message);
            results[g] = reply.r;
            report(g, reply.r);
          }
        }),
      );
    } finally {
      await Promise.all(threads.map((w) => w.terminate()));
    }
  } else {
    for (const [g, members] of groups.entries()) {
      results[g] = await simulate({ ...optionsFor(g, members), progress: () => undefined });
      report(g, results[g]!);
    }
  }
  const done = results.filter((r) => r.ok);
  const failed = results.flatMap((r, group) => (r.ok ? [] : [{ group, reason: r.reason ?? 'aborted', at: r.aborted_at ?? '', members: r.clients }]));
  const sum = (f: (r: SimulateResult) => number): number => results.reduce((a, r) => a + f(r), 0);
  const setSum = (k: 'u1' | 'u2' | 'u3' | 'u4'): number | undefined => (results.some((r) => r.sets[k] !== undefined) ? sum((r) => r.sets[k] ?? 0) : undefined);
  const first = results[0]!;
  const totalMs = Math.round(performance.now() - t0);
  const sets: SimulateResult['sets'] = {};
  for (const k of ['u1', 'u2', 'u3', 'u4'] as const) {
    const v = setSum(k);
    if (v !== undefined) sets[k] = v;
  }
  return {
    ...first,
    ok: done.length > 0,
    exact: done.length > 0 && done.every((r) => r.exact),
    max_abs_error: done.length > 0 ? Math.max(...done.map((r) => r.max_abs_error ?? 0)) : null,
    ...(done.length === 0 ? { reason: 'all-groups-aborted', detail: `${failed.length} groups aborted` } : {}),
    clients: opts.clients,
    survivors: sum((r) => (r.ok ? r.survivors : 0)),
    dropped: sum((r) => r.dropped),
    neighbors: Math.max(...results.map((r) => r.neighbors)),
    threshold: Math.max(...results.map((r) => r.threshold)),
    seed,
    sets,
    total_weight: done.length > 0 ? sum((r) => r.total_weight ?? 0) : null,
    refused_messages: sum((r) => r.refused_messages),
    client_aborts: sum((r) => r.client_aborts),
    timings_ms: {
      setup: sum((r) => r.timings_ms.setup),
      client_mean: Math.round((sum((r) => r.timings_ms.client_mean * r.clients) / opts.clients) * 10) / 10,
      client_max: Math.max(...results.map((r) => r.timings_ms.client_max)),
      server_unmask: Math.round(sum((r) => r.timings_ms.server_unmask) * 10) / 10,
      total: totalMs,
    },
    prg_bytes: sum((r) => r.prg_bytes),
    // Per client: the groups' means weighted by their clients.
    bytes_per_client: weightedBytes(results.map((r) => [r.bytes_per_client, r.clients])),
    bytes_down_per_client: weightedBytes(results.map((r) => [r.bytes_down_per_client, r.clients])),
    sum_bits: Math.max(...results.map((r) => r.sum_bits)),
    masked_floor_bytes: Math.max(...results.map((r) => r.masked_floor_bytes)),
    peak_rss_mb: Math.max(...results.map((r) => r.peak_rss_mb)),
    groups: { group_size: groupSize, count: groups.length, completed: done.length, failed, sizes: groups.map((g) => g.length) },
  };
}
