/**
 * A fault-injecting TCP proxy in user space, for the network fault tests (the kernel here has no
 * netem). It listens on 127.0.0.1:0 and forwards every accepted connection to one target
 * host:port. It never looks inside the bytes — TLS passes through untouched — it only decides
 * when (and whether) they move on. Every setting can be changed while connections are open:
 *
 * - `latencyMs` per direction: each chunk read is held for that long before it is forwarded;
 *   chunks leave in the order they came (a chunk never overtakes an earlier one, even when the
 *   latency is lowered meanwhile);
 * - `bytesPerSecond` per direction: a token bucket caps the rate (its burst, the bucket's size,
 *   is a tenth of a second's worth unless given); a chunk larger than the tokens at hand is
 *   split and its rest waits for the bucket to refill;
 * - `blackhole()`: a partition, not a reset. Open connections stay open and nothing moves in
 *   either direction; new connections are accepted and stay silent too. What arrives meanwhile
 *   is held (and, past a high-water mark, the proxy stops reading, so the sender's TCP buffers
 *   fill up as they would behind a real partition). `heal()` resumes forwarding: everything held
 *   is delivered, late and in order — what TCP does once a partition heals, since it
 *   retransmits until the peer answers. Nothing is dropped.
 * - `reset()`: every open connection is destroyed with a TCP RST on both sides
 *   (`socket.resetAndDestroy()`), so both peers see ECONNRESET; held bytes are discarded. New
 *   connections are accepted as usual afterwards.
 * - `stallUploadAfter(n)`: the client→server direction forwards at most `n` more bytes (summed
 *   over the open connections and any new ones) and then holds the rest; the connection stays
 *   open and the server→client direction keeps flowing. `heal()` lifts it (the held bytes go
 *   on, as after a blackhole).
 *
 * "up" is client→server (what the client uploads), "down" is server→client.
 */
import net from 'node:net';

export type Direction = 'up' | 'down';

/** Held bytes per connection and direction above which the proxy stops reading from the sender. */
const HIGH_WATER = 1 << 20;

interface Chunk {
  data: Buffer;
  /** When it may leave (ms, performance.now()). */
  dueAt: number;
}

/** One direction of one connection: bytes read from `from`, queued, written to `to`. */
class Pipe {
  readonly queue: Chunk[] = [];
  queued = 0;
  /** The latest dueAt given, so a lowered latency cannot reorder chunks. */
  private lastDue = 0;
  private timer: NodeJS.Timeout | undefined;
  private waitingDrain = false;
  private closed = false;

  constructor(
    private readonly proxy: FaultProxy,
    readonly dir: Direction,
    private readonly from: net.Socket,
    private readonly to: net.Socket,
  ) {
    from.on('data', (data: Buffer) => {
      const dueAt = Math.max(performance.now() + proxy.latencyMs[dir], this.lastDue);
      this.lastDue = dueAt;
      this.queue.push({ data, dueAt });
      this.queued += data.length;
      if (this.queued > HIGH_WATER) from.pause();
      this.pump();
    });
  }

  /** Moves what may move now; arms a timer for what is due later. */
  pump(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.closed || this.waitingDrain) return;
    if (this.to.destroyed) return this.close();
    const p = this.proxy;
    while (this.queue.length > 0) {
      // A partition (or a stalled upload) holds everything; heal() pumps again.
      if (p.blackholed) return;
      if (this.dir === 'up' && p.uploadBudget !== undefined && p.uploadBudget <= 0) return;
      const head = this.queue[0]!;
      const now = performance.now();
      if (head.dueAt > now) return this.wake(head.dueAt - now);
      let n = head.data.length;
      if (this.dir === 'up' && p.uploadBudget !== undefined) n = Math.min(n, p.uploadBudget);
      const tokens = p.takeTokens(this.dir, n, now);
      if (tokens <= 0) return this.wake(p.refillWaitMs(this.dir));
      n = tokens;
      const out = n === head.data.length ? head.data : head.data.subarray(0, n);
      if (n === head.data.length) this.queue.shift();
      else head.data = head.data.subarray(n);
      this.queued -= n;
      if (this.dir === 'up' && p.uploadBudget !== undefined) p.uploadBudget -= n;
      p.forwarded[this.dir] += n;
      if (this.queued <= HIGH_WATER / 2 && this.from.isPaused()) this.from.resume();
      if (!this.to.write(out)) {
        this.waitingDrain = true;
        this.to.once('drain', () => {
          this.waitingDrain = false;
          this.pump();
        });
        return;
      }
    }
    // Everything sent and the sender has gone: pass its FIN on.
    if (this.ended && !this.to.writableEnded && !this.to.destroyed) this.to.end();
  }

  private ended = false;

  /** The sender closed its connection: end the other one once what it sent has been forwarded. */
  senderEnded(): void {
    this.ended = true;
    this.pump();
  }

  private wake(ms: number): void {
    this.timer = setTimeout(() => this.pump(), Math.max(1, Math.ceil(ms)));
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.queue.length = 0;
    this.queued = 0;
  }
}

/** A client connection and its upstream connection to the target. */
interface Link {
  client: net.Socket;
  server: net.Socket;
  up: Pipe;
  down: Pipe;
}

export class FaultProxy {
  /** Added latency per direction, ms (applied per chunk as it is read). */
  readonly latencyMs: Record<Direction, number> = { up: 0, down: 0 };
  /** Rate cap per direction, bytes/s; 0 = none. */
  readonly bytesPerSecond: Record<Direction, number> = { up: 0, down: 0 };
  /** Bytes forwarded so far per direction (every connection). */
  readonly forwarded: Record<Direction, number> = { up: 0, down: 0 };
  /** Connections accepted so far. */
  accepted = 0;
  /** Connections ended by `reset()`. */
  resets = 0;
  blackholed = false;
  /** While stalled: how many more client→server bytes may pass (undefined: no stall). */
  uploadBudget: number | undefined;
  private readonly server: net.Server;
  private readonly links = new Set<Link>();
  /** The token bucket per direction: its size and tokens (bytes), and when it was last refilled. */
  private readonly bucket: Record<Direction, { size: number; tokens: number; at: number }> = { up: { size: 1, tokens: 0, at: 0 }, down: { size: 1, tokens: 0, at: 0 } };

  private constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {
    this.server = net.createServer((client) => this.accept(client));
  }

  /** A proxy on 127.0.0.1 (a free port) forwarding to `target` (`host:port`). */
  static async start(target: string): Promise<FaultProxy> {
    const m = /^(.*):(\d+)$/.exec(target);
    if (!m) throw new Error(`not a host:port: ${target}`);
    const p = new FaultProxy(m[1]!.replace(/^\[|\]$/g, ''), Number(m[2]));
    await new Promise<void>((resolve) => p.server.listen(0, '127.0.0.1', resolve));
    return p;
  }

  /** Where clients connect: `127.0.0.1:PORT`. */
  get address(): string {
    return `127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  /** Open connections. */
  get connections(): number {
    return this.links.size;
  }

  /** Bytes read and not yet forwarded in `dir` (held by latency, a cap, a blackhole or a stall). */
  held(dir: Direction): number {
    let n = 0;
    for (const l of this.links) n += l[dir].queued;
    return n;
  }

  setLatency(ms: number | Partial<Record<Direction, number>>): this {
    Object.assign(this.latencyMs, typeof ms === 'number' ? { up: ms, down: ms } : ms);
    return this;
  }

  /**
   * Caps the rate (bytes/s, 0 = no cap). The bucket holds `burstBytes` (default a tenth of a
   * second's worth) and starts full.
   */
  setBandwidth(bps: number | Partial<Record<Direction, number>>, burstBytes?: number): this {
    Object.assign(this.bytesPerSecond, typeof bps === 'number' ? { up: bps, down: bps } : bps);
    for (const d of ['up', 'down'] as const) {
      const size = Math.max(1, Math.floor(burstBytes ?? this.bytesPerSecond[d] / 10));
      this.bucket[d] = { size, tokens: size, at: performance.now() };
    }
    this.pumpAll();
    return this;
  }

  /** The bucket size (burst) of `dir`, bytes. */
  burst(dir: Direction): number {
    return this.bucket[dir].size;
  }

  /** A partition: every connection, open or new, goes silent both ways (see the file comment). */
  blackhole(): this {
    this.blackholed = true;
    return this;
  }

  /** Client→server forwards `n` more bytes, then holds the rest (connections stay open). */
  stallUploadAfter(n: number): this {
    this.uploadBudget = n;
    return this;
  }

  /** Ends a blackhole and a stall: what was held is forwarded, in order. */
  heal(): this {
    this.blackholed = false;
    this.uploadBudget = undefined;
    this.pumpAll();
    return this;
  }

  /** Destroys every open connection with a TCP RST on both sides; held bytes are dropped. */
  reset(): this {
    for (const l of [...this.links]) this.drop(l, true);
    return this;
  }

  /** Stops listening and destroys every connection. */
  async close(): Promise<void> {
    for (const l of [...this.links]) this.drop(l, false);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Takes up to `want` tokens of `dir`'s bucket (all of `want` when the direction is not capped). */
  takeTokens(dir: Direction, want: number, now: number): number {
    const rate = this.bytesPerSecond[dir];
    if (!(rate > 0)) return want;
    const b = this.bucket[dir];
    b.tokens = Math.min(b.size, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    const n = Math.min(want, Math.floor(b.tokens));
    b.tokens -= n;
    return n;
  }

  /** How long until `dir`'s bucket holds a chunk worth sending (up to 16 KiB, at most its size), ms. */
  refillWaitMs(dir: Direction): number {
    const rate = this.bytesPerSecond[dir];
    return Math.max(1, (1000 * Math.min(16_384, this.bucket[dir].size)) / rate);
  }

  private pumpAll(): void {
    for (const l of this.links) {
      l.up.pump();
      l.down.pump();
    }
  }

  private accept(client: net.Socket): void {
    this.accepted++;
    client.setNoDelay(true);
    const server = net.connect({ host: this.targetHost, port: this.targetPort });
    server.setNoDelay(true);
    const link: Link = { client, server, up: new Pipe(this, 'up', client, server), down: new Pipe(this, 'down', server, client) };
    this.links.add(link);
    // A side that closes cleanly: the other side is ended once the bytes it sent have been
    // forwarded (latency and caps still apply to them). An error on either side ends both.
    client.on('close', (hadError) => (hadError ? this.drop(link, false) : link.up.senderEnded()));
    server.on('close', (hadError) => (hadError ? this.drop(link, false) : link.down.senderEnded()));
    client.on('error', () => this.drop(link, false));
    server.on('error', () => this.drop(link, false));
    // The link is forgotten once both sides are closed.
    const forget = (): void => void (client.destroyed && server.destroyed && this.links.delete(link));
    client.on('close', forget);
    server.on('close', forget);
  }

  /** Ends both sockets of a link: with an RST (`reset`) or by destroying them (a peer closed). */
  private drop(l: Link, rst: boolean): void {
    if (!this.links.delete(l)) return;
    l.up.close();
    l.down.close();
    if (rst) this.resets++;
    for (const s of [l.client, l.server]) {
      if (s.destroyed) continue;
      // resetAndDestroy needs a connected TCP handle; a socket still connecting is just destroyed.
      if (rst && !s.connecting) s.resetAndDestroy();
      else s.destroy();
    }
  }
}
