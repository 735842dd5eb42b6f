/**
 * One client's outbound messages. The coordinator pushes into it whether or not the client is
 * connected; the client's current Subscribe stream drains it. A new stream from the same client
 * (a reconnect) takes over and the old one ends, so messages are never split between two
 * streams; what was queued while the client was away is delivered when it comes back (the
 * phase deadlines decide whether that is still in time).
 */

/** Most messages kept for a client that is away (a round sends at most a handful). */
const MAX_QUEUED = 1024;

export class Mailbox<T> {
  private queue: T[] = [];
  private wake: (() => void) | null = null;
  private generation = 0;
  private attachedGen = 0;
  private closedWith: Error | null = null;
  /** Messages dropped because the queue was full (oldest first). */
  dropped = 0;

  /** True while a stream is attached. */
  get attached(): boolean {
    return this.attachedGen !== 0;
  }

  get queued(): number {
    return this.queue.length;
  }

  push(m: T): void {
    if (this.queue.length >= MAX_QUEUED) {
      this.queue.shift();
      this.dropped++;
    }
    this.queue.push(m);
    this.kick();
  }

  /** Ends the attached stream with `err` (e.g. the client was revoked); later attaches get it too. */
  close(err: Error): void {
    this.closedWith = err;
    this.queue = [];
    this.kick();
  }

  /**
   * Attaches a stream: an async iterable of this mailbox's messages that ends when `detach` is
   * called or another stream attaches, and throws the `close` error if the mailbox is closed.
   */
  attach(): { messages: AsyncIterable<T>; detach: () => void } {
    const gen = ++this.generation;
    this.attachedGen = gen;
    this.kick(); // an older stream wakes, sees it is superseded, and ends
    let detached = false;
    const detach = (): void => {
      detached = true;
      if (this.attachedGen === gen) this.attachedGen = 0;
      this.kick();
    };
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the generator below outlives this call
    const self = this;
    async function* messages(): AsyncGenerator<T> {
      try {
        for (;;) {
          if (detached || self.generation !== gen) return;
          if (self.closedWith) throw self.closedWith;
          if (self.queue.length > 0) {
            yield self.queue.shift()!;
            continue;
          }
          await new Promise<void>((resolve) => {
            const prev = self.wake;
            self.wake = () => {
              prev?.();
              resolve();
            };
          });
        }
      } finally {
        if (self.attachedGen === gen) self.attachedGen = 0;
      }
    }
    return { messages: messages(), detach };
  }

  private kick(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }
}

/** Every client's mailbox, made on first use: the one owner of what waits to be sent to whom. */
export class Mailboxes<T> {
  private readonly boxes = new Map<string, Mailbox<T>>();

  of(clientId: string): Mailbox<T> {
    let mb = this.boxes.get(clientId);
    if (!mb) this.boxes.set(clientId, (mb = new Mailbox()));
    return mb;
  }

  push(clientId: string, m: T): void {
    this.of(clientId).push(m);
  }

  /** Client ids with a stream attached. */
  attached(): string[] {
    return [...this.boxes.entries()].filter(([, mb]) => mb.attached).map(([id]) => id);
  }

  /** Ends this client's stream with `err`, if it has a mailbox. */
  close(clientId: string, err: Error): void {
    this.boxes.get(clientId)?.close(err);
  }

  closeAll(err: Error): void {
    for (const mb of this.boxes.values()) mb.close(err);
  }
}
