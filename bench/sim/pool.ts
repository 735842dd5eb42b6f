/**
 * Where the simulated clients run: `LocalPool` in the calling thread, `WorkerPool` spread over
 * worker threads (one ClientHost per worker). Both stream every client message back as soon as
 * it exists, so the coordinator adds masked inputs into its running sum on arrival and no
 * thread ever holds n vectors.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Addressed, ClientMessage, ServerMessage } from '../../shared/protocol/messages.js';
import type { MaskJob } from '../../coordinator/round/index.js';
import { ClientHost, type Emit, type HostInit, type Plaintext } from './client-host.js';
import type { WireCounts } from './wire-count.js';

export interface PoolStats {
  clientMs: number[];
  prgWords: number;
  aborted: { id: string; reason: string }[];
  wire: WireCounts;
}

export interface ClientPool {
  start(emit: Emit): Promise<void>;
  deliver(messages: Addressed<ServerMessage>[], emit: Emit): Promise<void>;
  plaintext(): Promise<Plaintext[]>;
  unmask(jobs: MaskJob[]): Promise<Uint32Array[]>;
  stats(): Promise<PoolStats[]>;
  close(): Promise<void>;
}

export class LocalPool implements ClientPool {
  private readonly host: ClientHost;
  constructor(init: HostInit) {
    this.host = new ClientHost(init);
  }
  async start(emit: Emit): Promise<void> {
    this.host.startAll(emit);
  }
  async deliver(messages: Addressed<ServerMessage>[], emit: Emit): Promise<void> {
    this.host.deliver(messages, emit);
  }
  async plaintext(): Promise<Plaintext[]> {
    return [this.host.plaintext()];
  }
  async unmask(jobs: MaskJob[]): Promise<Uint32Array[]> {
    return [this.host.unmask(jobs)];
  }
  async stats(): Promise<PoolStats[]> {
    return [this.host.stats()];
  }
  async close(): Promise<void> {}
}

type Reply =
  | { kind: 'msg'; m: ClientMessage }
  | { kind: 'done'; value?: unknown }
  | { kind: 'error'; message: string };

/** Path of the compiled worker entry (dist/bench/sim/worker.js). */
export function workerPath(): string {
  const p = fileURLToPath(new URL('./worker.js', import.meta.url));
  if (!existsSync(p)) throw new Error(`worker entry ${p} not found: run "npm run build" (worker threads need the compiled dist/)`);
  return p;
}

export class WorkerPool implements ClientPool {
  private readonly workers: Worker[];
  private constructor(workers: Worker[]) {
    this.workers = workers;
  }

  static async create(init: HostInit, count: number): Promise<WorkerPool> {
    const path = workerPath();
    const workers: Worker[] = [];
    for (let w = 0; w < count; w++) {
      const clients = init.clients.filter((_, i) => i % count === w);
      workers.push(new Worker(path, { workerData: { ...init, clients } }));
    }
    const pool = new WorkerPool(workers);
    await pool.all(() => ({ op: 'ready' }), () => undefined);
    return pool;
  }

  /** Sends one request to every worker; streams 'msg' replies to `emit`; resolves with each 'done' value. */
  private all(request: (w: number) => unknown, emit: Emit): Promise<unknown[]> {
    return Promise.all(
      this.workers.map(
        (worker, w) =>
          new Promise<unknown>((resolve, reject) => {
            const onMessage = (r: Reply): void => {
              if (r.kind === 'msg') emit(r.m);
              else {
                worker.off('message', onMessage);
                worker.off('error', onError);
                if (r.kind === 'done') resolve(r.value);
                else reject(new Error(r.message));
              }
            };
            const onError = (e: Error): void => {
              worker.off('message', onMessage);
              reject(e);
            };
            worker.on('message', onMessage);
            worker.once('error', onError);
            worker.postMessage(request(w));
          }),
      ),
    );
  }

  async start(emit: Emit): Promise<void> {
    await this.all(() => ({ op: 'start' }), emit);
  }

  async deliver(messages: Addressed<ServerMessage>[], emit: Emit): Promise<void> {
    // Clients are spread round-robin by their position in the identity list; route by id.
    const shards: Addressed<ServerMessage>[][] = this.workers.map(() => []);
    for (const m of messages) shards[this.shardOf(m.to)]!.push(m);
    await this.all((w) => ({ op: 'deliver', messages: shards[w] }), emit);
  }

  private shardOf(id: string): number {
    const n = Number(id.slice(id.lastIndexOf('-') + 1));
    return Number.isInteger(n) ? n % this.workers.length : 0;
  }

  async plaintext(): Promise<Plaintext[]> {
    return (await this.all(() => ({ op: 'plaintext' }), () => undefined)) as Plaintext[];
  }

  async unmask(jobs: MaskJob[]): Promise<Uint32Array[]> {
    const W = this.workers.length;
    return (await this.all((w) => ({ op: 'unmask', jobs: jobs.filter((_, i) => i % W === w) }), () => undefined)) as Uint32Array[];
  }

  async stats(): Promise<PoolStats[]> {
    return (await this.all(() => ({ op: 'stats' }), () => undefined)) as PoolStats[];
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
