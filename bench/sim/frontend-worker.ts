/**
 * Child-process entry of `aegis simulate --redis URL --frontends F`: one coordinator front end
 * (a `Coordinator` with its round state on Redis, coordinator/queue/redis-rounds.ts) in a
 * process of its own, so the simulator can kill it with SIGKILL mid-round. The parent sends the
 * deployment's keys (as a data dir's vault would hold them: the CA, the token key, the queue
 * key) and the registry over IPC; the front end listens on a loopback port and answers `ready`.
 */
import { importCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { connectRedis } from '../../coordinator/queue/redis.js';
import { UnmaskQueue } from '../../coordinator/queue/unmask-queue.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { RedisRounds } from '../../coordinator/queue/redis-rounds.js';

export interface FrontEndInit {
  op: 'init';
  feId: string;
  redisUrl: string;
  prefix: string;
  caSeed: Uint8Array;
  caCertificateDer: Uint8Array;
  tokenSeed: Uint8Array;
  queueKey: Uint8Array;
  registryJson: string;
  /** Unmask parts this front end expands itself (0: leave them to unmask worker processes). */
  unmaskWorkers: number;
  unmaskParts: number;
  /** `unmask`: only expand unmask parts (an `aegis coordinator unmask-worker`), no front end. */
  role?: 'frontend' | 'unmask';
}

export type FrontEndRequest = FrontEndInit | { op: 'launch'; manifestJson: Uint8Array; gatherMs: number } | { op: 'stop' };
export type FrontEndReply = { op: 'ready'; address: string } | { op: 'launched'; cohort: number } | { op: 'stopped' } | { op: 'error'; message: string };

let coordinator: Coordinator | undefined;
let unmask: UnmaskQueue | undefined;

async function init(req: FrontEndInit): Promise<FrontEndReply> {
  const redis = await connectRedis(req.redisUrl);
  const queue = new UnmaskQueue(redis, req.queueKey, { prefix: req.prefix });
  unmask = queue;
  if (req.unmaskWorkers > 0) queue.work({ concurrency: req.unmaskWorkers });
  if (req.role === 'unmask') return { op: 'ready', address: '' };
  // Crash injection for --kill-frontend-at: SIGKILL this process as it hands a client the event
  // that opens the phase (no cleanup: as `kill -9`).
  const dieOn = process.env.AEGIS_SIM_DIE_ON === 'masked-taken' ? undefined : process.env.AEGIS_SIM_DIE_ON;
  const shared = new RedisRounds(redis, req.queueKey, {
    prefix: req.prefix,
    frontEndId: req.feId,
    pollMs: 200,
    unmask: (key, jobs, words) => queue.dispatch(key, jobs, words, req.unmaskParts),
    // Crash injection (--kill-frontend-at masked-taken): SIGKILL right after taking a masked input,
    // before this front end writes its partial sum.
    ...(process.env.AEGIS_SIM_DIE_ON === 'masked-taken' ? { onTaken: (phase: string) => void (phase === 'masked-input' && process.kill(process.pid, 'SIGKILL')) } : {}),
  });
  coordinator = new Coordinator({
    ca: await importCa({ seed: req.caSeed, certificateDer: req.caCertificateDer }),
    tokens: TokenIssuer.fromSeed(req.tokenSeed),
    registry: Registry.fromJSON(JSON.parse(req.registryJson)),
    redisRounds: shared,
    unmaskQueue: queue,
    unmaskParts: req.unmaskParts,
    lostAfterMs: 1_000,
    ...(dieOn ? { tap: (_id: string, event: string) => void (event === dieOn && process.kill(process.pid, 'SIGKILL')) } : {}),
  });
  const { address } = await coordinator.listen('127.0.0.1:0', '127.0.0.1:0');
  return { op: 'ready', address };
}

async function handle(req: FrontEndRequest): Promise<FrontEndReply> {
  switch (req.op) {
    case 'init':
      return init(req);
    case 'launch': {
      const r = await coordinator!.launch(req.manifestJson, { gatherMs: req.gatherMs });
      return { op: 'launched', cohort: r.cohort.length };
    }
    case 'stop':
      await coordinator?.close();
      await unmask?.close();
      return { op: 'stopped' };
  }
}

process.on('message', (req: FrontEndRequest) => {
  handle(req).then(
    (r) => {
      process.send?.(r);
      if (r.op === 'stopped') setImmediate(() => process.exit(0));
    },
    (err: unknown) => process.send?.({ op: 'error', message: err instanceof Error ? err.message : String(err) }),
  );
});
process.on('disconnect', () => process.exit(0));
