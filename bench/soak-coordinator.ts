/**
 * One coordinator process of `npm run bench -- soak` (forked with an IPC channel and
 * `--expose-gc`): a real `Coordinator` (in-memory registry, loopback TLS 1.3 listeners on port 0)
 * alone in its process, so the figures it reports are its own — resident set size, V8 heap used,
 * open file descriptors (/proc/self/fd) and event-loop delay (perf_hooks.monitorEventLoopDelay) —
 * with none of the clients' memory or work mixed in. The soak runs two of them: one that runs
 * the rounds and one that only listens (the idle baseline).
 *
 * Requests come in order over IPC and are answered in order (bench/sim/grpc-sim.ts IpcChild):
 * `init`, `invite` (one-time enrollment tokens), `wait-connected`, `round` (launch the job's next
 * round and answer with its outcome and unmasked sum), `sample` (optionally writing a heap
 * snapshot after the figures are taken), `stop`.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { writeHeapSnapshot } from 'node:v8';
import { createCa } from '../coordinator/auth/ca.js';
import { TokenIssuer } from '../coordinator/auth/tokens.js';
import { Registry } from '../coordinator/clients/registry.js';
import { Coordinator } from '../coordinator/service/coordinator.js';

export interface SoakSample {
  /** Resident set size, bytes (after a full GC). */
  rss: number;
  /** V8 heap used, bytes (after a full GC). */
  heapUsed: number;
  /** Open file descriptors (entries of /proc/self/fd; NaN where there is no /proc). */
  fds: number;
  /** Event-loop delay since the previous sample: 99th percentile and maximum, ms. */
  eldP99Ms: number;
  eldMaxMs: number;
}

export type SoakCoordinatorRequest =
  | { op: 'init' }
  | { op: 'invite'; clientIds: string[] }
  | { op: 'wait-connected'; count: number; timeoutMs: number }
  | { op: 'round'; manifest: Uint8Array; gatherMs: number }
  | { op: 'sample'; heapSnapshot?: string }
  | { op: 'stop' };

export type SoakCoordinatorReply =
  | { op: 'ready'; address: string; enrollAddress: string; caPem: string }
  | { op: 'invites'; tokens: string[] }
  | { op: 'connected' }
  | { op: 'round'; ok: boolean; reason?: string; roundIndex: number; survivors: number; sum?: Uint32Array; ms: number }
  | { op: 'sample'; sample: SoakSample }
  | { op: 'stopped' }
  | { op: 'error'; message: string };

/** Event-loop delay sampling interval, ms. */
const RESOLUTION_MS = 10;

let coordinator: Coordinator | undefined;
let dataDir: string | undefined;
/** Round tokens' lifetime in the soak, ms (see `init`). */
export const SOAK_TOKEN_TTL_MS = 40_000;
const eld = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
eld.enable();

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function openFds(): number {
  try {
    // The directory listing holds one descriptor of its own while it runs: not counted.
    return readdirSync('/proc/self/fd').length - 1;
  } catch {
    return Number.NaN;
  }
}

const gc = (globalThis as { gc?: () => void }).gc;

async function sample(heapSnapshot?: string): Promise<SoakSample> {
  // The delay first: the collection below pauses the loop, and that pause is the benchmark's, not the coordinator's.
  const eldP99Ms = eld.percentile(99) / 1e6;
  const eldMaxMs = eld.max / 1e6;
  if (gc) {
    gc();
    gc();
  }
  const u = process.memoryUsage();
  const s: SoakSample = { rss: u.rss, heapUsed: u.heapUsed, fds: openFds(), eldP99Ms, eldMaxMs };
  // For finding what grows: a snapshot to compare with another (Chrome DevTools, Memory tab).
  if (heapSnapshot) writeHeapSnapshot(heapSnapshot);
  // The timer due during the collection fires late; let it, then start the next interval afresh.
  await sleep(2 * RESOLUTION_MS);
  eld.reset();
  return s;
}

const current = (): Coordinator => {
  if (!coordinator) throw new Error('not initialised');
  return coordinator;
};

async function handle(req: SoakCoordinatorRequest): Promise<SoakCoordinatorReply> {
  switch (req.op) {
    case 'init': {
      // Set up as `aegis coordinator start` runs: with a data dir, whose job history holds every
      // finished round (its sum included) so memory need not. Round tokens live 40 s instead of
      // 5 min: the soak runs its rounds back to back, a second or two each, where a deployment runs
      // a few an hour, and the replay ledger keeps each used token until it expires — bounded by
      // the tokens used in one lifetime. With 5 min the whole soak would still be filling it; with
      // 40 s it is full before the early window, and what still grows is what a round leaves.
      dataDir = mkdtempSync(join(tmpdir(), 'aegis-soak-'));
      const c = new Coordinator({ ca: await createCa({ name: 'Aegis soak CA' }), tokens: TokenIssuer.create(), registry: new Registry(), dataDir, tokenTtlMs: SOAK_TOKEN_TTL_MS });
      coordinator = c;
      await c.listen('127.0.0.1:0', '127.0.0.1:0');
      return { op: 'ready', address: c.address, enrollAddress: c.enrollAddress, caPem: c.ca.certificatePem };
    }
    case 'invite': {
      const tokens: string[] = [];
      for (const clientId of req.clientIds) tokens.push((await current().createInvite({ clientId })).token);
      return { op: 'invites', tokens };
    }
    case 'wait-connected': {
      const until = Date.now() + req.timeoutMs;
      while (current().connectedClients().length < req.count) {
        if (Date.now() > until) throw new Error(`timed out after ${req.timeoutMs} ms waiting for ${req.count} clients to subscribe`);
        await sleep(20);
      }
      return { op: 'connected' };
    }
    case 'round': {
      const c = current();
      const t0 = performance.now();
      const launched = await c.launch(req.manifest, { gatherMs: req.gatherMs });
      const o = await c.outcomeOf(launched.jobId, launched.roundIndex);
      const ms = performance.now() - t0;
      if (!o.ok) return { op: 'round', ok: false, reason: `${o.reason} in ${o.at}${o.detail ? `: ${o.detail}` : ''}`, roundIndex: launched.roundIndex, survivors: 0, ms };
      return { op: 'round', ok: true, roundIndex: launched.roundIndex, survivors: o.survivors.length, sum: o.sum, ms };
    }
    case 'sample':
      return { op: 'sample', sample: await sample(req.heapSnapshot) };
    case 'stop':
      await coordinator?.close();
      coordinator = undefined;
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
      return { op: 'stopped' };
  }
}

process.on('message', (req: SoakCoordinatorRequest) => {
  handle(req).then(
    (r) => process.send?.(r, () => (req.op === 'stop' ? process.exit(0) : undefined)),
    (err: unknown) => process.send?.({ op: 'error', message: err instanceof Error ? err.message : String(err) } satisfies SoakCoordinatorReply),
  );
});
// The parent went away: nothing left to do here.
process.on('disconnect', () => process.exit(0));
