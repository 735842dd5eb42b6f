/**
 * `aegis simulate --transport grpc`: the same round as the in-process simulator, but over the
 * real network layer. This process hosts only the coordinator (`Coordinator`, in-memory
 * registry, loopback TLS 1.3, port 0); n clients enroll over the real enrollment listener
 * (one-time token + CSR) and then run as `ClientRunner`s — each with its own mTLS channel and
 * round tokens — spread over W child processes (grpc-worker.ts). The round is launched with a
 * manifest once every client has subscribed.
 *
 * Inputs and rounding are the simulator's (client-host.ts), so the ground truth is recomputed
 * here from the seed for the coordinator's survivors: `exact` means the unmasked integer sum
 * equals, word for word, the sum of the survivors' quantized inputs. Peak RSS is this
 * process's: the coordinator's alone.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { Registry } from '../../coordinator/clients/registry.js';
import type { RoundOutcome } from '../../coordinator/round/index.js';
import type { CompletedState } from '../../coordinator/round/index.js';
import { enrollWithToken } from '../../client/agent/connection.js';
import { createIdentity } from '../../client/enroll/csr.js';
import { encodeWeightedInput } from '../../shared/crypto/quantize.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { addInto } from '../../shared/crypto/vecops.js';
import type { JobManifestInput } from '../../shared/protocol/manifest.js';
import { validateRoundParams, type RoundParams } from '../../shared/protocol/params.js';
import { phaseFromProto } from '../../shared/rpc/convert.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { syntheticInput } from './client-host.js';
import type { GrpcWorkerClient, GrpcWorkerReply, GrpcWorkerRequest, GrpcWorkerStats } from './grpc-worker.js';
import { dropSchedule, type SimulateOptions } from './options.js';
import { compareToTruth, resultBase, type SimulateResult } from './result.js';

const JOB_ID = 'aegis-simulation';
const WARM_UP_JOB_ID = 'aegis-simulation-warm-up';

/**
 * Compares a completed round with the ground truth recomputed from the seed for its survivors
 * (the simulator's synthetic inputs and seeded rounding): `exact` when the integer sums agree.
 */
export function syntheticTruth(final: CompletedState, indexOf: ReadonlyMap<string, number>, seed: number, params: RoundParams): { exact: boolean; maxErr: number } {
  const qSum = new Uint32Array(params.dim + 1);
  const xSum = new Float64Array(params.dim);
  let known = true;
  for (const id of final.survivors) {
    const index = indexOf.get(id);
    if (index === undefined) {
      known = false;
      continue;
    }
    const { x, weight } = syntheticInput(seed, index, params.dim, params.clip);
    addInto(qSum, encodeWeightedInput(x, weight, params, DeterministicRng.fromSeed('aegis-sim-rounding', `${seed}:${index}`)));
    for (let i = 0; i < xSum.length; i++) xSum[i]! += x[i]!;
  }
  return compareToTruth(final, qSum, xSum, known);
}

/** Path of the compiled child-process entry (dist/bench/sim/grpc-worker.js). */
export function grpcWorkerPath(): string {
  const p = fileURLToPath(new URL('./grpc-worker.js', import.meta.url));
  if (!existsSync(p)) throw new Error(`worker entry ${p} not found: run "npm run build" (client processes need the compiled dist/)`);
  return p;
}

export interface PhaseDeadlinesMs {
  advertiseMs: number;
  shareMs: number;
  maskedMs: number;
  consistencyMs: number;
  unmaskMs: number;
}

/** The simulated round's job manifest (JSON bytes): one round of `params` over `n` clients. */
export function simulationManifest(params: RoundParams, n: number, deadlines: PhaseDeadlinesMs, jobId = JOB_ID): Uint8Array {
  const now = Date.now();
  const manifest: JobManifestInput = {
    version: 1,
    jobId,
    rounds: 1,
    round: { dim: params.dim, cohort: n, neighbors: params.neighbors, threshold: params.threshold, clip: params.clip, bits: params.bits },
    deadlines,
    issuedAt: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 24 * 3_600_000).toISOString(),
  };
  return new TextEncoder().encode(JSON.stringify(manifest));
}

/**
 * Phase deadlines for a simulated round. A phase closes as soon as every client still in it has
 * answered, so a deadline only costs time when somebody drops in that phase: short, but long
 * enough that no live client misses it. `fixedMs` sets every phase; otherwise 2 s plus 20 ms per
 * client; the advertise phase adds the input each client makes and hashes for its ledger before
 * it advertises (m + 1 float64 values) at a pessimistic 0.05 GB/s per client process, and the
 * masked-input phase the keystream the clients generate (k + 2 vectors of m + 1 words each) at
 * 0.1 GB/s, each capped by the cores. (With m left out of the one and 0.25 GB/s in the other, 100
 * clients at m = 10^6 on two slow cores here ran past the deadlines, and the coordinator dropped
 * clients that were only late.)
 */
export function simulationDeadlines(p: RoundParams, processes: number, fixedMs?: number): PhaseDeadlinesMs {
  if (fixedMs !== undefined) return { advertiseMs: fixedMs, shareMs: fixedMs, maskedMs: fixedMs, consistencyMs: fixedMs, unmaskMs: fixedMs };
  const parallel = Math.max(1, Math.min(processes, cpus().length));
  const base = 2000 + 20 * p.cohort;
  const advertise = base + Math.ceil(((p.cohort * (p.dim + 1) * 8) / 0.05e9 / parallel) * 1000);
  const share = base + Math.ceil((p.cohort * p.neighbors * 0.5) / parallel);
  const keystreamBytes = p.cohort * (p.neighbors + 2) * (p.dim + 1) * 4;
  const masked = base + Math.ceil((keystreamBytes / 0.1e9 / parallel) * 1000);
  return { advertiseMs: advertise, shareMs: share, maskedMs: masked, consistencyMs: base, unmaskMs: base };
}

/** Runs `f` over `items` with at most `limit` in flight; results in order. */
export async function mapLimit<T, R>(items: T[], limit: number, f: (x: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}

/**
 * A child process driven over IPC: requests go out, replies come back in order of the requests
 * (an `error` reply rejects); every pending request fails when the child exits. The client
 * processes here and the front-end processes of frontends-sim.ts.
 */
export class IpcChild<Req extends { op: string }, Rep extends { op: string }> {
  private readonly waiting: { resolve: (r: Rep) => void; reject: (e: Error) => void }[] = [];
  exited = false;
  readonly exit: Promise<void>;

  constructor(
    readonly child: ChildProcess,
    private readonly what: string,
  ) {
    child.on('message', (r: Rep) => {
      const w = this.waiting.shift();
      if (!w) return;
      if (r.op === 'error') w.reject(new Error(`${what}: ${(r as unknown as { message: string }).message}`));
      else w.resolve(r);
    });
    this.exit = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        this.exited = true;
        for (const w of this.waiting.splice(0)) w.reject(new Error(`${what} exited (${signal ?? code})`));
        resolve();
      }),
    );
  }

  /** Forks `path` with stdout ignored (it stays the parent's JSON document) and stderr passed through. */
  static fork<Req extends { op: string }, Rep extends { op: string }>(path: string, what: string, env?: NodeJS.ProcessEnv): IpcChild<Req, Rep> {
    return new IpcChild<Req, Rep>(fork(path, [], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'], ...(env ? { env } : {}) }), what);
  }

  request(req: Req): Promise<Rep> {
    if (this.exited) return Promise.reject(new Error(`${this.what} has exited`));
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.child.send(req);
    });
  }

  /** Asks the child to stop (`{op: 'stop'}`), killing it after 5 s. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.request({ op: 'stop' } as Req).catch(() => undefined);
    await this.exit;
    clearTimeout(timer);
  }
}

/** One client process (grpc-worker.ts). */
export type ClientProcess = IpcChild<GrpcWorkerRequest, GrpcWorkerReply>;
export const startClientProcess = (): ClientProcess => IpcChild.fork<GrpcWorkerRequest, GrpcWorkerReply>(grpcWorkerPath(), 'client process');

const peakRssMb = (): number => Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;

export async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function simulateGrpc(opts: SimulateOptions): Promise<SimulateResult> {
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
  const n = params.cohort;
  // The clients always run in other processes than the coordinator: at least one.
  const workers = Math.max(1, Math.min(opts.workers ?? Math.min(4, cpus().length), n));
  const schedule = dropSchedule(n, dropout, dropPhase, seed);
  const uploadsInFlight = opts.uploadsInFlight ?? 0;
  const deadlines = simulationDeadlines(params, workers, opts.phaseTimeoutMs);
  const mode: SimulateResult['mode'] = params.neighbors >= params.cohort - 1 ? 'secagg' : 'secagg+';

  const coordinator = new Coordinator({ ca: await createCa({ name: 'Aegis simulation CA' }), tokens: TokenIssuer.create(), registry: new Registry() });
  const procs: ClientProcess[] = [];
  let closed = false;
  try {
    await coordinator.listen('127.0.0.1:0', '127.0.0.1:0');
    log(`coordinator on ${coordinator.address} (enrollment ${coordinator.enrollAddress}); enrolling ${n} clients`);
    const width = String(n - 1).length;
    const enrolled = await mapLimit(Array.from({ length: n }, (_, i) => i), 16, async (i): Promise<GrpcWorkerClient> => {
      const clientId = `client-${String(i).padStart(width, '0')}`;
      const identity = await createIdentity();
      const { token } = await coordinator.createInvite({ clientId });
      const r = await enrollWithToken({ enrollAddress: coordinator.enrollAddress, caPem: coordinator.ca.certificatePem, token, identity, clientId });
      return { clientId: r.clientId, index: i, identitySeed: identity.seed, certificateDer: r.certificateDer, dropAt: schedule[i]! };
    });
    const indexOf = new Map(enrolled.map((c) => [c.clientId, c.index]));

    for (let w = 0; w < workers; w++) procs.push(startClientProcess());
    await Promise.all(
      procs.map((p, w) =>
        p.request({ op: 'init', address: coordinator.address, caPem: coordinator.ca.certificatePem, seed, uploadsInFlight, warmUp: opts.warmUp === true, clients: enrolled.filter((_, i) => i % workers === w) }),
      ),
    );
    await waitUntil(() => coordinator.connectedClients().length >= n, 30_000 + 200 * n, `${n} clients to subscribe`);
    const setupMs = performance.now() - tSetup;
    if (opts.warmUp) {
      // A round of another job first, so the measured round runs as a job's later rounds do.
      const tWarm = performance.now();
      await coordinator.launch(simulationManifest(params, n, deadlines, WARM_UP_JOB_ID), { gatherMs: 10_000 });
      const warm = await coordinator.outcomeOf(WARM_UP_JOB_ID, 0);
      if (!warm.ok) throw new Error(`the warm-up round aborted: ${warm.reason} (${warm.detail})`);
      await Promise.all(procs.map((p) => p.request({ op: 'measure' })));
      log(`warm-up round completed in ${(performance.now() - tWarm).toFixed(0)} ms`);
    }
    log(
      `simulating ${mode} over gRPC: n=${n} m=${params.dim} k=${params.neighbors} t=${params.threshold}, ${schedule.filter(Boolean).length} dropping (${dropPhase}), ` +
        `${workers} client processes (${uploadsInFlight || 'unlimited'} upload${uploadsInFlight === 1 ? '' : 's'} in flight each); setup ${setupMs.toFixed(0)} ms; phase deadlines ${deadlines.advertiseMs}/${deadlines.shareMs}/${deadlines.maskedMs}/${deadlines.consistencyMs}/${deadlines.unmaskMs} ms`,
    );

    const t0 = performance.now();
    // This process hosts the coordinator alone (the clients run in others): its CPU time over
    // the round is the coordinator's (with this loop's status polls, a small part of it).
    const cpu0 = process.cpuUsage();
    await coordinator.launch(simulationManifest(params, n, deadlines), { gatherMs: 10_000 });

    // Follow the phases (for progress and the unmasking time) until the outcome.
    let settled: RoundOutcome | undefined;
    const outcome = coordinator.outcomeOf(JOB_ID, 0).then((o) => (settled = o));
    let phase: string = Phase.AdvertiseKeys;
    let tPhase = t0;
    let unmaskStart: number | undefined;
    // Where the coordinator's memory goes (sampled; the peak RSS itself is the kernel's figure).
    const mem = { heapUsed: 0, external: 0, arrayBuffers: 0 };
    let polls = 0;
    while (!settled) {
      // Every 20 ms: the phase times are known to that much, and the polls (a status view of
      // the round each) stay a small part of the coordinator CPU this process reports.
      await Promise.race([outcome, new Promise((r) => setTimeout(r, 20))]);
      if (polls++ % 3 === 0) {
        const u = process.memoryUsage();
        mem.heapUsed = Math.max(mem.heapUsed, u.heapUsed);
        mem.external = Math.max(mem.external, u.external);
        mem.arrayBuffers = Math.max(mem.arrayBuffers, u.arrayBuffers);
      }
      const s = coordinator.statusOf(JOB_ID, 0);
      const current = settled ? 'final' : phaseFromProto(s.phase);
      if (current !== phase) {
        const t = performance.now();
        if (current !== 'final') log(`  ${phase} closed -> ${current} after ${(t - tPhase).toFixed(0)} ms`);
        if (current === Phase.Unmasking) unmaskStart = t;
        phase = current;
        tPhase = t;
      }
    }
    const o = settled;
    const tEnd = performance.now();
    const cpu = process.cpuUsage(cpu0);
    const coordinatorCpuMs = (cpu.user + cpu.system) / 1000;
    const totalMs = tEnd - t0;
    const unmaskMs = unmaskStart === undefined ? 0 : tEnd - unmaskStart;
    const refused = coordinator.statusOf(JOB_ID, 0).refused;
    const peak = peakRssMb(); // the coordinator's, before the ground truth below is computed

    const stats = (await Promise.all(procs.map((p) => p.request({ op: 'stats' })))).map((r) => (r as { stats: GrpcWorkerStats }).stats);
    await Promise.all(procs.splice(0).map((p) => p.stop()));
    await coordinator.close();
    closed = true;
    const mb = (x: number): string => `${(x / 2 ** 20).toFixed(0)} MB`;
    log(`  coordinator: peak RSS ${peak} MB; sampled peaks: JS heap ${mb(mem.heapUsed)}, external ${mb(mem.external)} (array buffers ${mb(mem.arrayBuffers)})`);
    log(`  client processes: peak RSS ${stats.map((s) => `${s.peakRssMb} MB`).join(', ')}`);

    const final = o.state;
    const base = resultBase({ transport: 'grpc', clients: n, params, schedule, seed, dropPhase, dropout, workers, final, refused, stats, setupMs, unmaskMs, totalMs, coordinatorCpuMs, warmUp: opts.warmUp === true, certificateChecks: stats.reduce((a, s) => a + s.certificateChecks, 0) });

    if (!o.ok || final.phase !== Phase.Completed) {
      const reason = o.ok ? 'incomplete' : o.reason;
      const detail = o.ok ? '' : o.detail;
      const at = o.ok ? final.phase : o.at;
      log(`round aborted in ${at}: ${reason} (${detail})`);
      return { ok: false, reason, detail, aborted_at: at, exact: false, max_abs_error: null, survivors: 0, total_weight: null, ...base, peak_rss_mb: peak };
    }

    const { exact, maxErr } = syntheticTruth(final, indexOf, seed, params);
    const expected = schedule.filter((d) => d === null || d === 'consistency' || d === 'unmask').length;
    if (final.survivors.length !== expected) log(`  note: ${final.survivors.length} survivors, the drop schedule expected ${expected} (a phase deadline cut some client off?)`);
    log(`round completed: ${final.survivors.length}/${n} survivors, exact=${exact}, max |error| ${maxErr.toExponential(2)}, ${totalMs.toFixed(0)} ms`);
    return { ok: true, exact, max_abs_error: maxErr, survivors: final.survivors.length, total_weight: final.sum[params.dim]!, ...base, peak_rss_mb: peak };
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    if (!closed) await coordinator.close();
  }
}

