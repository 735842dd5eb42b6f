/**
 * Where the client registry's shared facts live, and how a process's cache (the `Registry` its
 * ClientRegistry reads synchronously on every call) stays current with them:
 *
 * - `MemoryRegistryStore`: no sharing, the cache is the registry (tests, the simulator);
 * - `FileRegistryStore` (coordinator/clients/file-store.ts): registry.json in the data dir, every
 *   write a merge under a lock, the cache refreshed from the merged result and every minute;
 * - `RedisRegistryStore` (coordinator/queue/redis-registry.ts): keys on Redis under the
 *   deployment's prefix, writes atomic there, changes pushed to every front end (pub/sub).
 *
 * A store runs `RegistryOp`s (registry-ops.ts) atomically and merges what they wrote, and what it
 * learns from other writers, into the cache through its `RegistrySink`.
 */
import type { RegistryDelta } from './merge.js';
import type { RegistryOp } from './registry-ops.js';
import type { Registry } from './registry.js';

/** Where a store merges the facts it writes or learns. */
export interface RegistrySink {
  /** The process's cache (read synchronously by the per-call checks). */
  readonly cache: Registry;
  /** Merges `delta` into the cache (and tells whoever listens what it newly revoked). */
  absorb(delta: RegistryDelta, source: 'write' | 'push' | 'resync'): void;
}

export interface RegistryStore {
  readonly kind: 'memory' | 'file' | 'redis';
  /** Reads the shared facts into the sink's cache and starts following changes. */
  start(sink: RegistrySink): Promise<void>;
  /**
   * Runs `op` atomically against the shared facts. When it resolves, what it wrote is durable (and,
   * on Redis, announced to the other front ends) and merged into the cache; when it throws,
   * nothing was written.
   */
  run<T>(op: RegistryOp<T>): Promise<T>;
  /** The registry's one-minute tick (the lost-device sweep): re-reads what a store without pushes cannot learn otherwise. */
  tick(): Promise<void>;
  /** Writes every fact of the cache the shared copy lacks. */
  sync(): Promise<void>;
  /** Stops following changes; leaves the shared facts as they are. */
  close(): Promise<void>;
}

/** The cache is the registry: nothing shared, nothing persisted. */
export class MemoryRegistryStore implements RegistryStore {
  readonly kind = 'memory';
  private sink: RegistrySink | undefined;

  start(sink: RegistrySink): Promise<void> {
    this.sink = sink;
    return Promise.resolve();
  }

  run<T>(op: RegistryOp<T>): Promise<T> {
    try {
      const sink = this.sink!;
      const { delta, result } = op.apply(sink.cache);
      sink.absorb(delta, 'write');
      return Promise.resolve(result);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  tick(): Promise<void> {
    return Promise.resolve();
  }

  sync(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
