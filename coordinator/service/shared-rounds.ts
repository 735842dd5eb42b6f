/**
 * Rounds shared by several coordinator front ends on one Redis (DESIGN.md §6). The state lives in
 * Redis (coordinator/queue/round-store.ts); every front end runs the same state machines as the
 * embedded RoundHost (coordinator/round/): it checks each message against the phase with the
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
import { toBinary } from '@bufbuild/protobuf';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { sameBytes } from '../../shared/bytes.js';
import { decodeWeightedSum } from '../../shared/crypto/quantize.js';
import { addInto, VectorAccumulator } from '../../shared/crypto/vecops.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { Logger } from '../../shared/log.js';
import type { ClientMessage, RoundRef, ServerMessage } from '../../shared/protocol/messages.js';
import { assertClientMessage } from '../../shared/protocol/schemas.js';
import { AbortReason, Phase, PHASE_ORDER } from '../../shared/protocol/vocabulary.js';
import { toClientEnvelope } from '../../shared/rpc/convert.js';
import { digestHex, HEARTBEAT_TTL_SECONDS, RoundStore, type SharedRoundInfo, type SharedRoundMeta, type StoredOutcome } from '../queue/round-store.js';
import { abortRound } from '../round/aborted.js';
import { refuseResend } from '../round/checks.js';
import { applyMaskJobs, close, finishUnmask, phaseComplete, planUnmask, receive, start, type CoordinatorState, type CoordinatorTransition, type MaskJob } from '../round/index.js';
import { assertTakes, atPhaseStart, awaitedClients, deadlineOf, expectedClients, formatPhaseMark, isFinalPhase, parsePhaseMark, phaseIndex, takes, waitsOnlyForGone, type PhaseMark } from '../round/phases.js';
import type { RoundHostLike } from './grouped-host.js';
import { Outbox, type PhaseClosedEvent, type RoundOutcome, type RoundStatus } from './round-host.js';

export const PHASE_QUEUE = 'aegis-phase';

interface CloseTask {
  k: string;
  phase: Phase;
}

export interface SharedRoundsOptions {
  prefix?: string;
  /** This front end's id (default: random). */
  feId?: string;
  log?: Logger;
  /** Expands the unmasking phase's masks elsewhere (the unmask queue); default: here. */
  unmask?: (roundKey: string, jobs: readonly MaskJob[], words: number) => Promise<Uint32Array[]>;
  /** Called on the front end that closed a phase. */
  onPhaseClosed?: (meta: SharedRoundMeta, e: PhaseClosedEvent) => void;
  /** How often each front end re-reads the rounds it follows (events may be missed), ms; default 500. */
  pollMs?: number;
  /** How long a close waits for the front ends' partial sums, ms; default 15 s. */
  flushWaitMs?: number;
  /** The clients connected to this front end (its presence on Redis); see `connectedClients`. */
  connected?: () => string[];
  /** Called when this front end has taken (recorded) a client's message (tracing; the simulator's crash injection). */
  onTaken?: (phase: Phase, clientId: string) => void;
}

export class SharedRounds {
  readonly fe: string;
  readonly store: RoundStore;
  private readonly redis: Redis;
  private readonly opts: SharedRoundsOptions;
  private readonly queue: Queue<CloseTask>;
  private worker: Worker<CloseTask> | undefined;
  private workerConnection: Redis | undefined;
  private sub: Redis | undefined;
  private readonly hosts = new Map<string, SharedRoundHost>();
  private timers: NodeJS.Timeout[] = [];
  private closed = false;
  /** Called for each shared round this front end has not seen yet (started by another front end). */
  onNewRound: ((info: SharedRoundInfo) => void) | undefined;
  private readonly seenRounds = new Set<string>();
  /** Transitions this front end applied (tests, metrics). */
  applied = 0;
  /** The clients connected to this front end (its presence on Redis); the coordinator sets it. */
  connectedClients: () => string[];
  private started = false;

  constructor(redis: Redis, queueKey: Uint8Array, opts: SharedRoundsOptions = {}) {
    this.redis = redis;
    this.opts = opts;
    this.fe = opts.feId ?? `fe-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    this.store = new RoundStore(redis, queueKey, opts.prefix === undefined ? {} : { prefix: opts.prefix });
    this.queue = new Queue<CloseTask>(PHASE_QUEUE, { connection: redis, prefix: this.store.prefix });
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
    this.timers.push(setInterval(() => void this.beat().catch(() => undefined), 500));
    this.sub = this.redis.duplicate({ maxRetriesPerRequest: null });
    this.sub.on('error', () => undefined);
    this.sub.on('message', (_ch: string, msg: string) => {
      const h = this.hosts.get(msg);
      if (h) void h.refresh().catch(() => undefined);
    });
    await this.sub.subscribe(this.store.channel);
    this.workerConnection = this.redis.duplicate({ maxRetriesPerRequest: null });
    this.worker = new Worker<CloseTask>(PHASE_QUEUE, async (job) => this.closePhase(job.data.k, job.data.phase), {
      connection: this.workerConnection,
      prefix: this.store.prefix,
      concurrency: 8,
      lockDuration: 10_000,
      stalledInterval: 2_000,
      maxStalledCount: 5,
    });
    this.worker.on('error', () => undefined);
    this.timers.push(setInterval(() => void this.poll().catch(() => undefined), this.opts.pollMs ?? 500));
    for (const t of this.timers) t.unref();
  }

  private async beat(): Promise<void> {
    const k = this.store.heartbeatPrefix + this.fe;
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
    if (this.closed) return;
    for (const h of this.hosts.values()) if (!h.settled) await h.refresh().catch(() => undefined);
    if (!this.onNewRound) return;
    for (const id of await this.redis.smembers(this.store.activeKey)) {
      if (this.seenRounds.has(id)) continue;
      this.seenRounds.add(id);
      const info = await this.store.info(id);
      if (info && info.owner !== this.fe) this.onNewRound(info);
    }
  }

  /**
   * Creates a round (its groups) on Redis and arms the first deadlines; a round that exists
   * already (the same launch delivered again) is attached to instead. Returns one host per group.
   */
  async create(info: SharedRoundInfo, metas: readonly SharedRoundMeta[]): Promise<{ hosts: SharedRoundHost[]; created: boolean }> {
    this.seenRounds.add(`${info.jobId}.r${info.index}`);
    const created = await this.store.create(info, metas, Phase.AdvertiseKeys);
    const existing = created ? info : ((await this.store.info(`${info.jobId}.r${info.index}`)) ?? info);
    const hosts = await Promise.all(existing.groups.map((k) => this.host(k)));
    if (created) for (const m of metas) await this.scheduleDeadline(m.key, Phase.AdvertiseKeys, m.deadlines.advertiseMs);
    return { hosts, created };
  }

  /** The host of round key `k` on this front end (created on first use). */
  async host(k: string): Promise<SharedRoundHost> {
    let h = this.hosts.get(k);
    if (!h) {
      const meta = await this.store.meta(k);
      h = this.hosts.get(k);
      if (!h) {
        h = new SharedRoundHost(this, meta);
        this.hosts.set(k, h);
        await h.refresh();
      }
    }
    return h;
  }

  /** The rounds of `jobId` recorded on Redis (finished ones for a day). */
  async roundsOf(jobId: string): Promise<SharedRoundInfo[]> {
    const out: SharedRoundInfo[] = [];
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
      answered = await host.fill(state, await st.inbox(k, phase));
    }
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
    this.opts.onPhaseClosed?.(host.meta, { phase, next: next.phase, seconds: (Date.now() - began) / 1000, clients: answered, expected: host.expectedIn(phase) });
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
  private async apply(k: string, phase: Phase, host: SharedRoundHost, { next, outbound }: CoordinatorTransition): Promise<number | undefined> {
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
        const shared = outbound.every((o) => o.message === outbound[0]!.message);
        if (shared) m.hset(ok, '*', st.sealServer(k, next.phase, '*', outbound[0]!.message));
        else for (const o of outbound) m.hset(ok, o.to, st.sealServer(k, next.phase, o.to, o.message));
      }
      if (next.phase === Phase.Completed || next.phase === Phase.Aborted) {
        const out: StoredOutcome =
          next.phase === Phase.Completed
            ? { ok: true, survivors: [...next.survivors], sum: Buffer.from(new Uint8Array(next.sum.buffer, next.sum.byteOffset, next.sum.byteLength)).toString('base64') }
            : { ok: false, reason: next.reason, at: next.at, detail: next.detail };
        m.hset(rk, 'outcome', st.seal(k, 'outcome', Buffer.from(JSON.stringify(out))));
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
    const conn = this.redis.duplicate({ maxRetriesPerRequest: null });
    conn.on('error', () => undefined);
    try {
      await conn.watch(key);
      return await f(conn);
    } finally {
      conn.disconnect();
    }
  }

  /** Waits for the partial sums of the front ends that took masked inputs and adds those that agree with the records. */
  private async collectPartials(k: string, host: SharedRoundHost): Promise<{ contributors: string[]; sum: Uint32Array }> {
    const st = this.store;
    await host.refresh(); // this front end writes its own partial
    const inbox = await st.inbox(k, Phase.MaskedInput);
    const ownerOf = new Map<string, string>();
    const fes = new Set<string>();
    for (const [id, v] of inbox) {
      const fe = v.toString().split('|')[0]!;
      ownerOf.set(id, fe);
      fes.add(fe);
    }
    const until = Date.now() + (this.opts.flushWaitMs ?? 15_000);
    let partials: Record<string, Buffer>;
    for (;;) {
      partials = await this.redis.hgetallBuffer(st.partialKey(k));
      const waiting: string[] = [];
      for (const fe of fes) if (!partials[`${fe}:ids`] && (await st.alive(fe))) waiting.push(fe);
      if (waiting.length === 0 || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const sum = new Uint32Array(host.meta.params.dim + 1);
    const contributors: string[] = [];
    for (const fe of fes) {
      const idsB = partials[`${fe}:ids`];
      const vecB = partials[fe];
      if (!idsB || !vecB) {
        this.log?.warn({ round: k, frontEnd: fe }, 'a front end did not deliver its partial sum: its clients count as dropouts');
        continue;
      }
      let ids: string[];
      let v: Uint32Array;
      try {
        ids = JSON.parse(Buffer.from(st.open(k, `partial:${fe}:ids`, idsB)).toString()) as string[];
        v = st.openVector(k, `partial:${fe}`, vecB);
      } catch {
        this.log?.warn({ round: k, frontEnd: fe }, 'a partial sum does not open: its clients count as dropouts');
        continue;
      }
      // A partial counts only if every client in it is recorded as taken by that front end.
      if (v.length !== sum.length || !ids.every((id) => ownerOf.get(id) === fe)) {
        this.log?.warn({ round: k, frontEnd: fe }, 'a partial sum disagrees with the records: its clients count as dropouts');
        continue;
      }
      addInto(sum, v);
      contributors.push(...ids);
    }
    return { contributors, sum };
  }

  /** Cancels a shared round (every group): it ends as `cancelled` wherever it is followed. */
  async cancel(k: string, detail: string): Promise<void> {
    const st = this.store;
    const rk = st.roundKey(k);
    await this.watching(rk, async (conn) => {
      const ph = await conn.hget(rk, 'phase');
      const mark = ph ? parsePhaseMark(ph) : undefined;
      if (!mark || isFinalPhase(mark.phase)) return void (await conn.unwatch());
      const out: StoredOutcome = { ok: false, reason: 'cancelled', at: mark.phase, detail };
      const m = conn.multi();
      m.hset(rk, 'phase', formatPhaseMark({ phase: Phase.Aborted, closing: false }), 'outcome', st.seal(k, 'outcome', Buffer.from(JSON.stringify(out))));
      m.hincrby(rk, 'transitions', 1);
      st.expireRound(m, k, PHASE_ORDER.slice(0, 5));
      await m.exec();
    });
    await this.publish(k);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    await this.worker?.close();
    this.workerConnection?.disconnect();
    await this.sub?.quit().catch(() => undefined);
    await this.queue.close();
    await this.redis.del(this.store.heartbeatPrefix + this.fe).catch(() => undefined);
    for (const h of this.hosts.values()) h.detach();
  }
}

function localUnmask(jobs: readonly MaskJob[], words: number): Uint32Array {
  const acc = new VectorAccumulator(words);
  applyMaskJobs(acc, jobs);
  return acc.vector;
}

type Listener = (m: ServerMessage) => void;

/**
 * One round (one aggregation group) as this front end sees it: the RoundHost surface the
 * coordinator uses, over the shared state.
 */
export class SharedRoundHost implements RoundHostLike {
  readonly meta: SharedRoundMeta;
  readonly outcome: Promise<RoundOutcome>;
  readonly closeMs: Partial<Record<Phase, number>> = {};
  timeline: { phase: Phase; at: number }[] = [];
  settled = false;
  private readonly rounds: SharedRounds;
  private readonly ref: RoundRef;
  private readonly identities: Map<string, Uint8Array>;
  private settle!: (o: RoundOutcome) => void;
  /** The round's phase as last read from Redis, open or closing. */
  private mark: PhaseMark = { phase: Phase.AdvertiseKeys, closing: false };
  private stats: RoundStatus['sets'] & { prgWords?: number } = {};
  private received = 0;
  private refused = 0;
  private readonly startedAt: number;
  /** The state at the start of the phase this front end last reached (empty collections). */
  private ctx: CoordinatorState;
  private delivered = -1;
  private readonly outbox = new Outbox();
  private readonly advertised = new Set<string>();
  /** This front end's partial running sum of masked inputs and who is in it. */
  private partial: Uint32Array | null = null;
  private scratch: Uint32Array | null = null;
  private readonly contributors: string[] = [];
  private pending = 0;
  private flushed = false;
  private refreshing: Promise<void> | null = null;
  private again = false;

  constructor(rounds: SharedRounds, meta: SharedRoundMeta) {
    this.rounds = rounds;
    this.meta = meta;
    this.ref = { manifestHash: new Uint8Array(Buffer.from(meta.manifestHash, 'hex')), roundIndex: meta.index };
    this.identities = new Map(Object.entries(meta.identities).map(([id, k]) => [id, new Uint8Array(Buffer.from(k, 'base64url'))]));
    this.startedAt = meta.createdAt;
    this.ctx = start({ params: meta.params, round: this.ref, identityOf: (id) => this.identities.get(id) });
    this.outcome = new Promise((resolve) => (this.settle = resolve));
  }

  get phase(): Phase {
    return this.mark.phase;
  }

  expectedIn(phase: Phase): number {
    return expectedClients(phase, this.stats, this.meta.cohort.length);
  }

  /** Re-reads the round from Redis: phase changes, deliveries, the partial flush, the outcome. */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.again = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.again = false;
        await this.refreshOnce();
      } while (this.again);
    })().finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  private async refreshOnce(): Promise<void> {
    if (this.settled) return;
    const st = this.rounds.store;
    const k = this.meta.key;
    const [phB, statsB, timelineB] = await st.fields(k, 'phase', 'stats', 'timeline');
    if (!phB) return;
    const mark = parsePhaseMark(phB.toString());
    if (!mark) return;
    this.mark = mark;
    if (statsB) this.stats = JSON.parse(statsB.toString()) as typeof this.stats;
    if (timelineB) this.timeline = JSON.parse(timelineB.toString()) as typeof this.timeline;
    const { phase } = mark;
    if (phase === Phase.MaskedInput && mark.closing) await this.flush();
    if (!isFinalPhase(phase)) {
      this.received = await st.inboxSize(k, phase);
      // The front end that took the last message may have died before asking for the close.
      if (!mark.closing && this.received >= this.expectedIn(phase) && this.expectedIn(phase) > 0) await this.rounds.scheduleClose(k, phase);
      // Deliver what each phase reached so far sent out (a broadcast, or one message per member).
      for (let i = this.delivered + 1; i <= phaseIndex(phase); i++) await this.deliverPhase(PHASE_ORDER[i]!);
      this.delivered = Math.max(this.delivered, phaseIndex(phase));
      return;
    }
    const [outB] = await st.fields(k, 'outcome');
    if (!outB) return;
    const out = JSON.parse(Buffer.from(st.open(k, 'outcome', outB)).toString()) as StoredOutcome;
    this.settled = true;
    this.scratch = null;
    this.partial?.fill(0);
    this.partial = null;
    const cfg = this.ctx.cfg;
    const stats = { prgWords: 0, ...this.stats };
    if (out.ok) {
      const sum = new Uint32Array(new Uint8Array(Buffer.from(out.sum ?? '', 'base64')).buffer);
      const survivors = out.survivors ?? [];
      const state: CoordinatorState = { phase: Phase.Completed, cfg, stats, survivors, sum, result: decodeWeightedSum(sum, survivors.length, cfg.params) };
      this.settle({ ok: true, survivors, sum, state });
    } else {
      const at = out.at ?? Phase.AdvertiseKeys;
      const reason = (out.reason ?? AbortReason.TooFewClients) as AbortReason | 'cancelled';
      const state: CoordinatorState = { phase: Phase.Aborted, cfg, stats, reason: reason === 'cancelled' ? AbortReason.TooFewClients : reason, at, detail: out.detail ?? '' };
      this.settle({ ok: false, reason, at, detail: out.detail ?? '', state });
    }
  }

  private async deliverPhase(phase: Phase): Promise<void> {
    if (phase === Phase.AdvertiseKeys) return; // the round start goes out from the coordinator
    const st = this.rounds.store;
    const k = this.meta.key;
    const out = await st.outbound(k, phase);
    const shared = out.get('*');
    if (shared) {
      const m = st.openServer(k, phase, '*', shared);
      if (m) for (const id of this.meta.cohort) this.outbox.deliver(id, m);
      return;
    }
    for (const [to, b] of out) {
      const m = st.openServer(k, phase, to, b);
      if (m) this.outbox.deliver(to, m);
    }
  }


  /** Writes this front end's partial sum once its masked-input phase closes (after any in-flight message). */
  private async flush(): Promise<void> {
    if (this.flushed) return;
    while (this.pending > 0) await new Promise((r) => setTimeout(r, 5));
    if (this.flushed) return;
    this.flushed = true;
    const st = this.rounds.store;
    const k = this.meta.key;
    const fe = this.rounds.fe;
    if (this.contributors.length === 0 || !this.partial) return;
    await this.rounds.store.redis.hset(st.partialKey(k), fe, st.sealVector(k, `partial:${fe}`, this.partial), `${fe}:ids`, st.seal(k, `partial:${fe}:ids`, Buffer.from(JSON.stringify(this.contributors))));
    this.partial.fill(0);
  }

  /**
   * The round's state at the start of `phase` (collections empty), replaying the phases before
   * it from their records; undefined if the round never reached it (it aborted first).
   */
  contextAt(phase: Phase): Promise<CoordinatorState | undefined> {
    // One replay at a time: concurrent messages wait for the same one.
    const run = this.ctxLock.then(() => this.replayTo(phase));
    this.ctxLock = run.catch(() => undefined);
    return run;
  }

  private ctxLock: Promise<unknown> = Promise.resolve();

  private async replayTo(phase: Phase): Promise<CoordinatorState | undefined> {
    const st = this.rounds.store;
    const k = this.meta.key;
    while (phaseIndex(this.ctx.phase) < phaseIndex(phase)) {
      const p = this.ctx.phase;
      if (isFinalPhase(p)) return undefined;
      const state = atPhaseStart(this.ctx);
      if (p === Phase.MaskedInput) {
        const [u3B] = await st.fields(k, 'u3');
        if (!u3B) return undefined;
        const s = state as Extract<CoordinatorState, { phase: 'masked-input' }>;
        for (const id of JSON.parse(u3B.toString()) as string[]) s.received.set(id, new Uint8Array(32));
      } else {
        await this.fill(state, await st.inbox(k, p));
      }
      this.ctx = atPhaseStart(close(state).next);
    }
    return this.ctx.phase === phase ? this.ctx : undefined;
  }

  /** Feeds recorded messages (sorted by client id) through the phase's `receive`; returns how many it took. */
  async fill(state: CoordinatorState, inbox: Map<string, Buffer>): Promise<number> {
    const st = this.rounds.store;
    let taken = 0;
    for (const id of [...inbox.keys()].sort()) {
      try {
        receive(state, st.openClient(this.meta.key, state.phase, id, inbox.get(id)!));
        taken++;
      } catch (err) {
        this.rounds.log?.warn({ round: this.meta.key, client: id, code: (err as { code?: string }).code }, 'a recorded message does not replay; left out');
      }
    }
    return taken;
  }

  async submit(authenticatedId: string, msg: ClientMessage): Promise<void> {
    if (this.settled) throw new AegisError(ErrorCode.WrongPhase, `the round is ${this.phase}`);
    try {
      assertClientMessage(msg);
      if (msg.clientId !== authenticatedId) throw new AegisError(ErrorCode.UnknownSender, 'the message names another client than the authenticated one');
      if (!takes(this.mark, msg.type)) await this.refresh();
      assertTakes(this.mark, msg.type);
      const phase = this.phase;
      const ctx = await this.contextAt(phase);
      if (!ctx) throw new AegisError(ErrorCode.WrongPhase, `the round is ${this.phase}`);
      await this.take(ctx, msg);
    } catch (err) {
      this.refused++;
      throw err;
    }
  }

  private async take(ctx: CoordinatorState, msg: ClientMessage): Promise<void> {
    const st = this.rounds.store;
    const k = this.meta.key;
    const phase = ctx.phase;
    const check = atPhaseStart(ctx);
    if (msg.type === 'masked-input') {
      // Checked against a scratch sum; added to this front end's partial once recorded.
      this.scratch ??= new Uint32Array(this.meta.params.dim + 1);
      (check as Extract<CoordinatorState, { phase: 'masked-input' }>).sum = this.scratch;
      receive(check, msg);
      const digest = digestHex(msg.vector);
      this.pending++;
      try {
        const r = await st.record(k, phase, msg.clientId, `${this.rounds.fe}|${digest}`, { fe: this.rounds.fe });
        if (r.kind === 'ok') {
          this.partial ??= new Uint32Array(this.meta.params.dim + 1);
          addInto(this.partial, msg.vector);
          this.contributors.push(msg.clientId);
          this.received = r.count;
          this.rounds.taken(phase, msg.clientId);
        } else this.refuse(r, msg, (existing) => existing.toString().endsWith(`|${digest}`));
      } finally {
        this.pending--;
      }
    } else {
      receive(check, msg);
      const opts = msg.type === 'advertise-keys' ? { cap: this.meta.params.cohort, keys: [Buffer.from(msg.cPk).toString('hex'), Buffer.from(msg.sPk).toString('hex')] } : {};
      const r = await st.record(k, phase, msg.clientId, st.sealClient(k, phase, msg), opts);
      if (r.kind !== 'ok') {
        const mine = toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(msg));
        this.refuse(r, msg, (existing) => {
          try {
            return sameBytes(toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(st.openClient(k, phase, msg.clientId, existing))), mine);
          } catch {
            return false;
          }
        });
      }
      this.received = r.count;
      if (msg.type === 'advertise-keys') this.advertised.add(msg.clientId);
    }
    await this.maybeClose(phase, this.received);
  }

  private refuse(r: Exclude<Awaited<ReturnType<RoundStore['record']>>, { kind: 'ok' }>, msg: ClientMessage, same: (existing: Buffer) => boolean): never {
    switch (r.kind) {
      case 'wrong-phase':
        throw new AegisError(ErrorCode.WrongPhase, `the round is in phase ${parsePhaseMark(r.phase)?.phase ?? r.phase} and does not take ${msg.type}`);
      case 'exists':
        return refuseResend(msg.type, same(r.existing));
      case 'full':
        throw new AegisError(ErrorCode.UnknownSender, 'the cohort is full');
      case 'key-taken':
        throw new AegisError(ErrorCode.InvalidArgument, 'public key already advertised under another id');
    }
  }

  /** Asks for an early close when the phase needs nothing more (everyone answered, or the rest are gone). */
  private async maybeClose(phase: Phase, count: number): Promise<void> {
    const ctx = await this.contextAt(phase);
    if (!ctx) return;
    const st = this.rounds.store;
    const k = this.meta.key;
    const awaited = awaitedClients(ctx, this.meta.cohort) ?? [];
    let complete = count >= awaited.length;
    if (!complete && phase === Phase.Unmasking && count >= this.meta.params.threshold) {
      const s = atPhaseStart(ctx);
      await this.fill(s, await st.inbox(k, phase));
      complete = phaseComplete(s);
    }
    if (!complete) {
      const gone = await st.gone(k);
      if (gone.size > 0) {
        const got = new Set(await st.redis.hkeys(st.inboxKey(k, phase)));
        complete = waitsOnlyForGone(awaited, (id) => got.has(id), gone);
      }
    }
    if (complete) await this.rounds.scheduleClose(k, phase);
  }

  lost(clientId: string): void {
    if (this.settled || !this.meta.cohort.includes(clientId)) return;
    const st = this.rounds.store;
    void st.redis
      .sadd(st.goneKey(this.meta.key), clientId)
      .then(() => (isFinalPhase(this.phase) ? undefined : this.maybeClose(this.phase, this.received)))
      .catch(() => undefined);
  }

  back(clientId: string): void {
    const st = this.rounds.store;
    void st.redis.srem(st.goneKey(this.meta.key), clientId).catch(() => undefined);
  }

  subscribe(clientId: string, listener: Listener): () => void {
    return this.outbox.subscribe(clientId, listener);
  }

  awaitsAdvertisement(clientId: string): boolean {
    return !this.settled && this.phase === Phase.AdvertiseKeys && !this.advertised.has(clientId);
  }

  status(): RoundStatus {
    const { u1, u2, u3, u4 } = this.stats;
    const sets: RoundStatus['sets'] = {};
    if (u1 !== undefined) sets.u1 = u1;
    if (u2 !== undefined) sets.u2 = u2;
    if (u3 !== undefined) sets.u3 = u3;
    if (u4 !== undefined) sets.u4 = u4;
    return { phase: this.phase, received: isFinalPhase(this.phase) ? 0 : this.received, sets, refused: this.refused, elapsedMs: Date.now() - this.startedAt };
  }

  cancel(detail = 'cancelled by an operator'): void {
    void this.rounds
      .cancel(this.meta.key, detail)
      .then(() => this.refresh())
      .catch(() => undefined);
  }

  /** Stops delivering (the front end closes); the outcome stays unsettled here. */
  detach(): void {
    this.outbox.clear();
  }
}
