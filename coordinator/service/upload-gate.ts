/**
 * Back-pressure for masked inputs. A unary Send carries a whole vector (4(m+1) bytes), which
 * grpc-js buffers in full before the handler adds it into the running sum; if every client of a
 * cohort uploaded at once, the coordinator would hold n vectors (O(n·m)). Clients therefore ask
 * for a slot first (SecAgg.AcquireUpload) and the coordinator grants at most `slots` at a time,
 * sized from a memory budget, so peak memory stays O(m) whatever n is. A slot is released when
 * the client's masked input is taken or refused, when the client's call is cancelled while it
 * waits, or when its lease runs out (a client that takes a slot and never uploads).
 */
export class UploadGate {
  readonly slots: number;
  private readonly holders = new Map<string, NodeJS.Timeout>();
  private readonly waiting: { clientId: string; grant: () => void }[] = [];
  private readonly leaseMs: number;

  constructor(slots: number, leaseMs = 60_000) {
    this.slots = Math.max(1, Math.floor(slots));
    this.leaseMs = leaseMs;
  }

  /** Slots for vectors of `dim + 1` words within `budgetBytes` (three transient copies each). */
  static forDim(dim: number, budgetBytes: number): UploadGate {
    return new UploadGate(Math.min(1024, Math.floor(budgetBytes / (3 * 4 * (dim + 1)))));
  }

  /** The most slots ever held at once. */
  peak = 0;

  get inUse(): number {
    return this.holders.size;
  }

  /**
   * Resolves when `clientId` holds a slot (at once if it already does). `onCancel` registers a
   * callback for a caller that gives up while waiting.
   */
  acquire(clientId: string, onCancel: (cb: () => void) => void): Promise<void> {
    if (this.holders.has(clientId)) return Promise.resolve();
    if (this.holders.size < this.slots) {
      this.grant(clientId);
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const entry = { clientId, grant: resolve };
      this.waiting.push(entry);
      onCancel(() => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) this.waiting.splice(i, 1);
      });
    });
  }

  /** True while `clientId` holds a slot. */
  holds(clientId: string): boolean {
    return this.holders.has(clientId);
  }

  release(clientId: string): void {
    const t = this.holders.get(clientId);
    if (t === undefined) return;
    clearTimeout(t);
    this.holders.delete(clientId);
    this.next();
  }

  /** Frees every slot and lets every waiter through (the phase is over). */
  open(): void {
    for (const t of this.holders.values()) clearTimeout(t);
    this.holders.clear();
    for (const w of this.waiting.splice(0)) w.grant();
  }

  private grant(clientId: string): void {
    const t = setTimeout(() => this.release(clientId), this.leaseMs);
    t.unref();
    this.holders.set(clientId, t);
    this.peak = Math.max(this.peak, this.holders.size);
  }

  private next(): void {
    while (this.holders.size < this.slots && this.waiting.length > 0) {
      const w = this.waiting.shift()!;
      if (this.holders.has(w.clientId)) continue;
      this.grant(w.clientId);
      w.grant();
    }
  }
}
