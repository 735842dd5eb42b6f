/**
 * The client registry in the data dir's registry.json, for coordinators without Redis (and any
 * process sharing the data dir). Every write is a merge under the file's lock
 * (coordinator/service/data-dir.ts `updateRegistry`): read the file, merge this process's cache
 * into it (coordinator/clients/merge.ts), run the operation's checks against that union, merge
 * what it writes, write the file atomically (temp file, fsync, rename). The cache then takes the
 * merged result, so a process learns other writers' facts — revocations first of all — whenever
 * it writes, and `tick` (every minute) re-reads the file so that a process that never writes
 * learns them within a minute too. A writer with a stale cache cannot drop what another wrote:
 * nothing in a merge removes a revocation, an enrollment or a redeemed invite.
 */
import type { Logger } from 'pino';
import { loadRegistry, updateRegistry } from '../service/data-dir.js';
import { applyDelta, deltaOf } from './merge.js';
import { syncOp, type RegistryOp } from './registry-ops.js';
import type { RegistrySink, RegistryStore } from './registry-store.js';

export class FileRegistryStore implements RegistryStore {
  readonly kind = 'file';
  readonly dir: string;
  private readonly log: Logger | undefined;
  private sink: RegistrySink | undefined;
  /** One write at a time from this process (the lock orders processes). */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(dir: string, opts: { log?: Logger } = {}) {
    this.dir = dir;
    this.log = opts.log;
  }

  async start(sink: RegistrySink): Promise<void> {
    this.sink = sink;
    await this.refresh();
  }

  run<T>(op: RegistryOp<T>): Promise<T> {
    const next = this.chain.then(() => this.runNow(op));
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async runNow<T>(op: RegistryOp<T>): Promise<T> {
    const sink = this.sink!;
    if (op.readOnly) {
      // Checks only: the file as it is (written whole by rename, so never half), with this
      // process's facts merged in, and no lock.
      const disk = await loadRegistry(this.dir);
      applyDelta(disk, deltaOf(sink.cache));
      sink.absorb(deltaOf(disk), 'resync');
      return op.apply(disk).result;
    }
    let refusal: { err: unknown } | undefined;
    const { registry, result } = await updateRegistry(this.dir, (disk) => {
      applyDelta(disk, deltaOf(sink.cache));
      let out: ReturnType<RegistryOp<T>['apply']>;
      try {
        out = op.apply(disk);
      } catch (err) {
        // Refused: nothing of the operation is written (the merge with this process's facts is).
        refusal = { err };
        return undefined;
      }
      applyDelta(disk, out.delta);
      disk.invites.prune();
      return out.result;
    });
    sink.absorb(deltaOf(registry), 'write');
    if (refusal) throw refusal.err;
    return result as T;
  }

  /** Re-reads registry.json into the cache (every minute, from the lost-device sweep). */
  async tick(): Promise<void> {
    try {
      await this.refresh();
    } catch (err) {
      this.log?.warn({ code: (err as { code?: string }).code ?? 'io' }, 'could not re-read registry.json');
    }
  }

  private async refresh(): Promise<void> {
    const disk = await loadRegistry(this.dir);
    this.sink!.absorb(deltaOf(disk), 'resync');
  }

  async sync(): Promise<void> {
    await this.run(syncOp());
  }

  async close(): Promise<void> {
    await this.chain;
  }
}
