/**
 * RedisRounds: a coordinator front end's part in rounds whose state lives on Redis, shared by
 * every front end on it (DESIGN.md §6; the records: coordinator/queue/round-store.ts; one round
 * as a front end sees it: redis-round-host.ts). Every front end runs the same state machines as
 * the in-memory host (coordinator/round/): it checks each message against the phase with the
 * phase's own `receive`, records it with one atomic script, and any front end may close a phase.
 *
 * - Phase deadlines are BullMQ delayed jobs with idempotent ids (`<round>.<phase>.deadline`); a
 *   phase that has everything it needs gets an immediate close job (`<round>.<phase>.early`).
 *   Every front end works the queue; a close that a killed front end left half done is taken up
 *   again by another (BullMQ's stalled-job check), and a close applies its transition only if
 *   the phase is still the one it closes (WATCH/MULTI): never twice.
 * - Masked inputs never reach Redis: each front end adds the vectors it takes into its own
 *   partial running sum and records only `<front end>|<digest>` per client. When the phase
 *   closes, each front end writes its partial (sealed); the closer adds the partials of front
 *   ends whose every contributor it recorded, and U3 is exactly their contributors. A front end
 *   killed before it wrote its partial takes its clients out of U3: they count as dropouts, whose
 *   masks the unmasking phase removes — the round completes if at least t remain, or aborts with
 *   a typed reason, and its sum is never wrong.
 * - Each front end replays the phases it did not close (the recorded messages through `receive`
 *   and `close`) to know the roster and the sets; the replay is deterministic.
 */
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { addInto, VectorAccumulator } from '../../shared/crypto/vecops.js';
import type { Logger } from '../../shared/log.js';
import { AbortReason, Phase, PHASE_ORDER } from '../../shared/protocol/vocabulary.js';
import type { PhaseClosedEvent } from '../hosts/types.js';
import { abortRound } from '../round/aborted.js';
import { applyMaskJobs, cancelRound, close, declinesOf, finishUnmask, isFinal, planUnmask, type CoordinatorState, type CoordinatorStats, type CoordinatorTransition, type MaskJob } from '../round/index.js';
import { atPhaseStart, deadlineOf, formatPhaseMark, isFinalPhase, parsePhaseMark, phaseIndex, receivedCount } from '../round/phases.js';
import { RedisRoundHost, type RedisFrontEnd } from './redis-round-host.js';
import { HEARTBEAT_TTL_SECONDS, RoundStore, type RedisRoundInfo, type RedisRoundMeta } from './round-store.js';
import { dropErrors, type WatchErrors } from './redis.js';
import type { RedisHealth } from './redis-health.js';

export const PHASE_QUEUE = 'aegis-phase';

interface CloseTask {
  k: string;
  phase: Phase;
}

export interface RedisRoundsOptions {
  prefix?: string;
  /** This front end's id (default: random). */
  frontEndId?: string;
  log?: Logger;
  /** Expands the unmasking phase's masks elsewhere (the unmask queue); default: here. */
  unmask?: (roundKey: string, jobs: readonly MaskJob[], words: number) => Promise<Uint32Array[]>;
  /** Called on the front end that closed a phase. */
  onPhaseClosed?: (meta: RedisRoundMeta, e: PhaseClosedEvent) => void;
  /** How often each front end re-reads the rounds it follows (events may be missed), ms; default 500. */
  pollMs?: number;
  /** How long a close waits for the front ends' partial sums, ms; default 15 s. */
  flushWaitMs?: number;
  /** The clients connected to this front end (its presence on Redis); see `connectedClients`. */
  connected?: () => string[];
  /** Called when this front end has taken (recorded) a client's message (tracing; the simulator's crash injection). */
  onTaken?: (phase: Phase, clientId: string) => void;
  /** Takes over the 'error' events of the phase queue, its worker and every connection (RedisHealth.watch); default: dropped. */
  watch?: WatchErrors;
  /**
   * Whether Redis answers (RedisHealth): while it does not, the heartbeat and the poll pause, and
   * rounds this front end follows end with `state-unreachable` once it has been down
   * `stateUnreachableAfterMs`.
   */
  health?: Pick<RedisHealth, 'up' | 'onChange'>;
  /** How long Redis may be unreachable before the rounds followed here abort with `state-unreachable`, ms; default 30 s. */
  stateUnreachableAfterMs?: number;
}

/** The default of `stateUnreachableAfterMs`. */
export const DEFAULT_STATE_UNREACHABLE_AFTER_MS = 30_000;

export class RedisRounds implements RedisFrontEnd {
  /** This front end's id: its heartbeat, and whose partial sum is whose. */
  readonly frontEndId: string;
  readonly store: RoundStore;
  private readonly redis: Redis;
  private readonly opts: RedisRoundsOptions;
  private readonly queue: Queue<CloseTask>;
  private worker: Worker<CloseTask> | undefined;
  private workerConnection: Redis | undefined;
  private sub: Redis | undefined;
  private readonly hosts = new Map<string, RedisRoundHost>();
  private timers: NodeJS.Timeout[] = [];
  private closed = false;
  /** Called for each round on the Redis this front end has not seen yet (started by another front end). */
  onNewRound: ((info: RedisRoundInfo) => void) | undefined;
  private readonly seenRounds = new Set<string>();
  /** Transitions this front end applied (tests, metrics). */
  applied = 0;
  /** The clients connected to this front end (its presence on Redis); the coordinator sets it. */
  connectedClients: () => string[];
  private started = false;
  private readonly watch: WatchErrors;
  private unreachableTimer: NodeJS.Timeout | undefined;
  /** Rounds this front end ended with `state-unreachable` while Redis was down: recorded on Redis once it is back. */
  private readonly abandoned = new Map<string, string>();
  private polling = false;

  constructor(redis: Redis, queueKey: Uint8Array, opts: RedisRoundsOptions = {}) {
    this.redis = redis;
    this.opts = opts;
    this.frontEndId = opts.frontEndId ?? `fe-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    this.store = new RoundStore(redis, queueKey, opts.prefix === undefined ? {} : { prefix: opts.prefix });
    this.watch = opts.watch ?? dropErrors;
    this.queue = this.watch(new Queue<CloseTask>(PHASE_QUEUE, { connection: redis, prefix: this.store.prefix }));
    this.connectedClients = () => opts.connected?.() ?? [];
  }

  get log(): Logger | undefined {
    return this.opts.log;
  }

  /** Heartbeat, presence, events, the phase queue's worker, and the poll. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.beat();
    this.opts.health?.onChange((up) => (up ? this.redisBack() : this.redisLost()));
    this.timers.push(setInterval(() => void this.beat().catch(() => undefined), 500));
    this.sub = this.watch(this.redis.duplicate({ maxRetriesPerRequest: null }));
    this.sub.on('message', (_ch: string, msg: string) => {
      const h = this.hosts.get(msg);
      if (h) void h.refresh().catch(() => undefined);
    });
    await this.sub.subscribe(this.store.channel);
    this.workerConnection = this.watch(this.redis.duplicate({ maxRetriesPerRequest: null }));
    this.worker = new Worker<CloseTask>(PHASE_QUEUE, async (job) => this.closePhase(job.data.k, job.data.phase), {
      connection: this.workerConnection,
      prefix: this.store.prefix,
      concurrency: 8,
      lockDuration: 10_000,
      stalledInterval: 2_000,
      maxStalledCount: 5,
    });
    this.watch(this.worker);
    this.timers.push(setInterval(() => void this.poll().catch(() => undefined), this.opts.pollMs ?? 500));
    for (const t of this.timers) t.unref();
  }

  private get redisDown(): boolean {
    return this.opts.health !== undefined && !this.opts.health.up;
  }

  /** Redis stopped answering: the rounds followed here end with `state-unreachable` if it stays so. */
  private redisLost(): void {
    if (this.closed || this.unreachableTimer) return;
    const after = this.opts.stateUnreachableAfterMs ?? DEFAULT_STATE_UNREACHABLE_AFTER_MS;
    this.unreachableTimer = setTimeout(() => {
      this.unreachableTimer = undefined;
      if (this.closed || !this.redisDown) return;
      const detail = `Redis did not answer for ${Math.round(after / 1000)} s`;
      for (const [k, h] of this.hosts) {
        if (h.settled) continue;
        h.abandon(detail);
        this.abandoned.set(k, detail);
      }
    }, after);
    this.unreachableTimer.unref();
  }

  /** Redis answers again: the rounds ended meanwhile are ended on Redis too (every front end agrees), the others re-read. */
  private redisBack(): void {
    clearTimeout(this.unreachableTimer);
    this.unreachableTimer = undefined;
    if (this.closed) return;
    for (const [k, detail] of this.abandoned) {
      this.abandoned.delete(k);
      void this.end(k, AbortReason.StateUnreachable, detail).catch(() => undefined);
    }
    for (const h of this.hosts.values()) if (!h.settled) void h.refresh().catch(() => undefined);
  }

  private async beat(): Promise<void> {
    if (this.redisDown) return;
    const k = this.store.heartbeatPrefix + this.frontEndId;
    await this.redis
      .multi()
      .hset(k, 'at', Date.now(), 'clients', JSON.stringify(this.connectedClients()))
      .expire(k, HEARTBEAT_TTL_SECONDS)
      .exec();
  }

  /** Client ids connected to any live front end on this Redis. */
  async presence(): Promise<string[]> {
    const out = new Set(this.connectedClients());
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.store.heartbeatPrefix}*`, 'COUNT', 200);
      cursor = next;
      for (const k of keys) {
        const s = await this.redis.hget(k, 'clients');
        if (s) for (const id of JSON.parse(s) as string[]) out.add(id);
      }
    } while (cursor !== '0');
    return [...out];
  }

  private async poll(): Promise<void> {
    // Nothing piles up on the connection while Redis is down, and one poll at a time.
    if (this.closed || this.redisDown || this.polling) return;
    this.polling = true;
    try {
      for (const h of this.hosts.values()) if (!h.settled) await h.refresh().catch(() => undefined);
      if (!this.onNewRound) return;
      for (const id of await this.redis.smembers(this.store.activeKey)) {
        if (this.seenRounds.has(id)) continue;
        this.seenRounds.add(id);
        const info = await this.store.info(id);
        if (info && info.owner !== this.frontEndId) this.onNewRound(info);
      }
    } finally {
      this.polling = false;
    }
  }

  /**
   * Creates a round (its groups) on Redis and arms the first deadlines; a round that exists
   * already (the same launch delivered again) is attached to instead. Returns one host per group.
   */
  async create(info: RedisRoundInfo, metas: readonly RedisRoundMeta[]): Promise<{ hosts: RedisRoundHost[]; created: boolean }> {
    this.seenRounds.add(`${info.jobId}.r${info.index}`);
    const created = await this.store.create(info, metas, Phase.AdvertiseKeys);
    const existing = created ? info : ((await this.store.info(`${info.jobId}.r${info.index}`)) ?? info);
    const hosts = await Promise.all(existing.groups.map((k) => this.host(k)));
    if (created) for (const m of metas) await this.scheduleDeadline(m.key, Phase.AdvertiseKeys, m.deadlines.advertiseMs);
    return { hosts, created };
  }

  /** The host of round key `k` on this front end (created on first use). */
  async host(k: string): Promise<RedisRoundHost> {
    let h = this.hosts.get(k);
    if (!h) {
      const meta = await this.store.meta(k);
      h = this.hosts.get(k);
      if (!h) {
        h = new RedisRoundHost(this, meta);
        this.hosts.set(k, h);
        await h.refresh();
      }
    }
    return h;
  }

  /** The rounds of `jobId` recorded on Redis (finished ones for a day). */
  async roundsOf(jobId: string): Promise<RedisRoundInfo[]> {
    const out: RedisRoundInfo[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.store.infoKey(jobId)}.r*`, 'COUNT', 200);
      cursor = next;
      for (const k of keys) {
        const info = await this.store.info(k.slice(this.store.infoKey('').length));
        if (info && info.jobId === jobId) out.push(info);
      }
    } while (cursor !== '0');
    return out;
  }

  /** Forgets a finished round's host (its outcome was taken). */
  release(k: string): void {
    const h = this.hosts.get(k);
    if (h?.settled) this.hosts.delete(k);
  }

  async scheduleDeadline(k: string, phase: Phase, delayMs: number): Promise<void> {
    await this.queue.add('close', { k, phase }, { jobId: `${k}.${phaseIndex(phase)}.deadline`, delay: Math.max(0, delayMs), attempts: 5, backoff: { type: 'fixed', delay: 500 }, removeOnComplete: { age: 3600 }, removeOnFail: { age: 86_400 } });
  }

  async scheduleClose(k: string, phase: Phase): Promise<void> {
    await this.queue.add('close', { k, phase }, { jobId: `${k}.${phaseIndex(phase)}.early`, attempts: 5, backoff: { type: 'fixed', delay: 500 }, removeOnComplete: { age: 3600 }, removeOnFail: { age: 86_400 } });
  }

  /** The queue, for tests and operators (`getJob`, `getDelayed`). */
  get phaseQueue(): Queue<CloseTask> {
    return this.queue;
  }

  /** This front end took a message. */
  taken(phase: Phase, clientId: string): void {
    this.opts.onTaken?.(phase, clientId);
  }

  async publish(k: string): Promise<void> {
    await this.redis.publish(this.store.channel, k);
  }

  /**
   * Closes `phase` of round `k` if it is still open (or was left half-closed): the job every
   * deadline and early close runs, on whichever front end takes it. Returns whether this call
   * applied the transition.
   */
  async closePhase(k: string, phase: Phase): Promise<boolean> {
    const st = this.store;
    const found = parsePhaseMark(await st.markClosing(k, phase));
    if (found?.phase !== phase) return false;
    await this.publish(k);
    const host = await this.host(k);
    const t0 = performance.now();
    const ctx = await host.contextAt(phase);
    if (!ctx) return false;
    const state = atPhaseStart(ctx);
    let answered: number;
    if (phase === Phase.MaskedInput) {
      const { contributors, sum } = await this.collectPartials(k, host);
      const s = state as Extract<CoordinatorState, { phase: 'masked-input' }>;
      for (const id of contributors) s.received.set(id, new Uint8Array(32));
      s.sum = sum;
      answered = contributors.length;
    } else {
      await host.fill(state, await st.inbox(k, phase));
      // Phase 0's inbox holds declines too: the clients it heard from are those whose keys it took.
      answered = receivedCount(state);
    }
    const declines = phase === Phase.AdvertiseKeys ? declinesOf(state) : undefined;
    let transition: CoordinatorTransition;
    if (phase === Phase.Unmasking) {
      const s = state as Extract<CoordinatorState, { phase: 'unmasking' }>;
      const [sumB] = await st.fields(k, 'sum');
      s.sum = sumB ? st.openVector(k, 'sum', sumB) : s.sum;
      const p = planUnmask(s);
      if ('aborted' in p) transition = p.aborted;
      else {
        const words = s.cfg.params.dim + 1;
        try {
          const partials = this.opts.unmask ? await this.opts.unmask(k, p.jobs, words) : [localUnmask(p.jobs, words)];
          transition = finishUnmask(s, partials, p.jobs.length);
        } catch {
          transition = abortRound(s, AbortReason.UnmaskFailed, 'the unmask workers failed or did not answer in time');
        }
      }
    } else {
      transition = close(state);
    }
    const began = await this.apply(k, phase, host, transition);
    if (began === undefined) return false;
    this.applied++;
    const next = transition.next;
    this.opts.onPhaseClosed?.(host.meta, { phase, next: next.phase, seconds: (Date.now() - began) / 1000, clients: answered, expected: host.expectedIn(phase), ...(declines ? { declines } : {}) });
    host.closeMs[phase] = performance.now() - t0;
    const deadline = deadlineOf(next.phase, host.meta.deadlines);
    if (deadline !== undefined) await this.scheduleDeadline(k, next.phase, deadline);
    await this.publish(k);
    await host.refresh();
    return true;
  }

  /**
   * Writes a transition, once: only while the phase is still marked closing. Returns when the
   * closed phase began (ms since the epoch), or undefined when the transition was not applied.
   */
  private async apply(k: string, phase: Phase, host: RedisRoundHost, { next, outbound }: CoordinatorTransition): Promise<number | undefined> {
    const st = this.store;
    const rk = st.roundKey(k);
    return this.watching(rk, async (conn) => {
      const [ph, timelineB] = await conn.hmget(rk, 'phase', 'timeline');
      if (ph !== formatPhaseMark({ phase, closing: true })) {
        await conn.unwatch();
        return undefined;
      }
      const timeline = JSON.parse(timelineB ?? '[]') as { phase: Phase; at: number }[];
      const began = timeline.filter((e) => e.phase === phase).pop()?.at ?? Date.now();
      timeline.push({ phase: next.phase, at: Date.now() });
      const m = conn.multi();
      m.hset(rk, 'phase', formatPhaseMark({ phase: next.phase, closing: false }), 'stats', JSON.stringify(next.stats), 'timeline', JSON.stringify(timeline));
      m.hincrby(rk, 'transitions', 1);
      if (phase === Phase.MaskedInput && next.phase === Phase.ConsistencyCheck) {
        m.hset(rk, 'u3', JSON.stringify(next.u3), 'sum', st.sealVector(k, 'sum', next.sum));
      }
      if (outbound.length > 0) {
        const ok = st.outKey(k, next.phase);
        const broadcast = outbound.every((o) => o.message === outbound[0]!.message);
        if (broadcast) m.hset(ok, '*', st.sealServer(k, next.phase, '*', outbound[0]!.message));
        else for (const o of outbound) m.hset(ok, o.to, st.sealServer(k, next.phase, o.to, o.message));
      }
      if (isFinal(next)) {
        m.hset(rk, 'outcome', st.sealOutcome(k, next));
        st.expireRound(m, k, PHASE_ORDER.slice(0, 5));
        m.expire(st.infoKey(`${host.meta.jobId}.r${host.meta.index}`), 86_400);
        m.srem(st.activeKey, `${host.meta.jobId}.r${host.meta.index}`);
      }
      const res = await m.exec();
      return res === null ? undefined : began;
    });
  }

  /**
   * Runs `f` on a connection of its own that WATCHes `key` (a MULTI it executes fails if anybody
   * changed the key meanwhile); the connection is closed afterwards.
   */
  private async watching<T>(key: string, f: (conn: Redis) => Promise<T>): Promise<T> {
    const conn = this.watch(this.redis.duplicate({ maxRetriesPerRequest: null }));
    try {
      await conn.watch(key);
      return await f(conn);
    } finally {
      conn.disconnect();
    }
  }

  /** Waits for the partial sums of the front ends that took masked inputs and adds those that agree with the records. */
  private async collectPartials(k: string, host: RedisRoundHost): Promise<{ contributors: string[]; sum: Uint32Array }> {
    const st = this.store;
    await host.refresh(); // this front end writes its own partial
    const inbox = await st.inbox(k, Phase.MaskedInput);
    const ownerOf = new Map<string, string>();
    const frontEnds = new Set<string>();
    for (const [id, v] of inbox) {
      const frontEnd = v.toString().split('|')[0]!;
      ownerOf.set(id, frontEnd);
      frontEnds.add(frontEnd);
    }
    const until = Date.now() + (this.opts.flushWaitMs ?? 15_000);
    let partials: Record<string, Buffer>;
    for (;;) {
      partials = await this.redis.hgetallBuffer(st.partialKey(k));
      const waiting: string[] = [];
      for (const frontEnd of frontEnds) if (!partials[`${frontEnd}:ids`] && (await st.alive(frontEnd))) waiting.push(frontEnd);
      if (waiting.length === 0 || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const sum = new Uint32Array(host.meta.params.dim + 1);
    const contributors: string[] = [];
    for (const frontEnd of frontEnds) {
      const idsB = partials[`${frontEnd}:ids`];
      const vecB = partials[frontEnd];
      if (!idsB || !vecB) {
        this.log?.warn({ round: k, frontEnd }, 'a front end did not deliver its partial sum: its clients count as dropouts');
        continue;
      }
      let ids: string[];
      let v: Uint32Array;
      try {
        ids = JSON.parse(Buffer.from(st.open(k, `partial:${frontEnd}:ids`, idsB)).toString()) as string[];
        v = st.openVector(k, `partial:${frontEnd}`, vecB);
      } catch {
        this.log?.warn({ round: k, frontEnd }, 'a partial sum does not open: its clients count as dropouts');
        continue;
      }
      // A partial counts only if every client in it is recorded as taken by that front end.
      if (v.length !== sum.length || !ids.every((id) => ownerOf.get(id) === frontEnd)) {
        this.log?.warn({ round: k, frontEnd }, 'a partial sum disagrees with the records: its clients count as dropouts');
        continue;
      }
      addInto(sum, v);
      contributors.push(...ids);
    }
    return { contributors, sum };
  }

  /** Cancels a round (one group) on the Redis: it ends as `cancelled` wherever it is followed. */
  cancel(k: string, detail: string): Promise<void> {
    return this.end(k, AbortReason.Cancelled, detail);
  }

  /** Ends a round (one group) on the Redis, unless it has ended already: aborted with `reason` wherever it is followed. */
  private async end(k: string, reason: AbortReason, detail: string): Promise<void> {
    const st = this.store;
    const rk = st.roundKey(k);
    await this.watching(rk, async (conn) => {
      const [ph, statsB] = await conn.hmget(rk, 'phase', 'stats');
      const mark = ph ? parsePhaseMark(ph) : undefined;
      if (!mark || isFinalPhase(mark.phase)) return void (await conn.unwatch());
      const { config } = await this.host(k);
      const stats: CoordinatorStats = { prgWords: 0, ...(JSON.parse(statsB ?? '{}') as Partial<CoordinatorStats>) };
      // Cancelled in phase 0: the declines taken so far are the round's.
      if (mark.phase === Phase.AdvertiseKeys) stats.declines = await st.declineCounts(k);
      const from = { phase: mark.phase, cfg: config, stats };
      const { next } = reason === AbortReason.Cancelled ? cancelRound(from, detail) : abortRound(from, reason, detail);
      const m = conn.multi();
      m.hset(rk, 'phase', formatPhaseMark({ phase: next.phase, closing: false }), 'outcome', st.sealOutcome(k, next), 'stats', JSON.stringify(next.stats));
      m.hincrby(rk, 'transitions', 1);
      st.expireRound(m, k, PHASE_ORDER.slice(0, 5));
      await m.exec();
    });
    await this.publish(k);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.unreachableTimer);
    for (const t of this.timers) clearInterval(t);
    // Each step goes on whatever the one before met, and waits for it at most CLOSE_STEP_MS: a
    // connection dropped under it (shut down while Redis went away, or by
    // `RedisHealth.disconnectAll`) fails its pending commands or leaves them waiting for ever
    // (BullMQ's graceful close waits for its blocking connection), and the rest must still be let go.
    if (!(await settled(this.worker?.close()))) void this.worker?.close(true).catch(() => undefined);
    this.workerConnection?.disconnect();
    if (!(await settled(this.sub?.quit()))) this.sub?.disconnect();
    await settled(this.queue.close());
    await settled(this.redis.del(this.store.heartbeatPrefix + this.frontEndId));
    for (const h of this.hosts.values()) h.detach();
  }

  /** Stops at once without waiting for Redis (it is unreachable: BullMQ's graceful close would wait for it forever). */
  closeNow(): void {
    this.closed = true;
    clearTimeout(this.unreachableTimer);
    for (const t of this.timers) clearInterval(t);
    void this.worker?.close(true).catch(() => undefined);
    this.workerConnection?.disconnect();
    this.sub?.disconnect();
    void this.queue.close().catch(() => undefined);
    for (const h of this.hosts.values()) h.detach();
  }
}

/** How long closing waits for one graceful step (a BullMQ close, a QUIT) before going on, ms. */
const CLOSE_STEP_MS = 5000;

/** Waits for `p` (ignoring its failure) at most CLOSE_STEP_MS; true when it settled in that time. */
async function settled(p: Promise<unknown> | undefined): Promise<boolean> {
  if (!p) return true;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), CLOSE_STEP_MS)));
  try {
    return await Promise.race([p.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

function localUnmask(jobs: readonly MaskJob[], words: number): Uint32Array {
  const acc = new VectorAccumulator(words);
  applyMaskJobs(acc, jobs);
  return acc.vector;
}
