/**
 * RedisRoundHost: one round (one aggregation group) whose state lives on Redis, as one front end
 * sees it — the round host surface the coordinator uses (coordinator/hosts/types.ts) over the
 * records of coordinator/queue/round-store.ts. It takes messages into the Redis records, keeps
 * this front end's partial sum of masked inputs, asks for a phase's close when nothing more is
 * needed, and follows the phases any front end closes (redis-rounds.ts) to deliver their
 * messages and settle the outcome.
 */
import { toBinary } from '@bufbuild/protobuf';
import { sameBytes } from '../../shared/bytes.js';
import { addInto } from '../../shared/crypto/vecops.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { Logger } from '../../shared/log.js';
import type { ClientMessage, RoundRef, ServerMessage } from '../../shared/protocol/messages.js';
import { AbortReason, Phase, PHASE_ORDER } from '../../shared/protocol/vocabulary.js';
import { toClientEnvelope } from '../../shared/rpc/convert.js';
import { Outbox } from '../hosts/outbox.js';
import type { PhaseStart, RoundHostLike, RoundStatus } from '../hosts/types.js';
import { abortRound } from '../round/aborted.js';
import { refuseResend, refuseSecondAnswer, type Phase0Answer } from '../round/checks.js';
import { totalDeclines, type DeclineCounts } from '../round/declines.js';
import { assertMessageFrom, close, outcomeOf, phaseComplete, receive, receiveChecked, start, type CheckedMessage, type CoordinatorConfig, type CoordinatorState, type CoordinatorStats, type RoundOutcome } from '../round/index.js';
import { assertTakes, atPhaseStart, awaitedClients, expectedClients, isFinalPhase, parsePhaseMark, phaseIndex, takes, waitsOnlyForGone, type PhaseMark } from '../round/phases.js';
import { digestHex, type RedisRoundMeta, type RoundStore } from './round-store.js';

/** What a round's host needs of the front end it runs on (RedisRounds). */
export interface RedisFrontEnd {
  readonly frontEndId: string;
  readonly store: RoundStore;
  readonly log: Logger | undefined;
  /** This front end took (recorded) a client's message. */
  taken(phase: Phase, clientId: string): void;
  /** Asks any front end to close `phase` of round `k` now. */
  scheduleClose(k: string, phase: Phase): Promise<void>;
  /** Ends round `k` as cancelled. */
  cancel(k: string, detail: string): Promise<void>;
}

type Listener = (m: ServerMessage) => void;

export class RedisRoundHost implements RoundHostLike {
  readonly meta: RedisRoundMeta;
  readonly outcome: Promise<RoundOutcome>;
  readonly closeMs: Partial<Record<Phase, number>> = {};
  timeline: PhaseStart[] = [];
  settled = false;
  private readonly rounds: RedisFrontEnd;
  private readonly ref: RoundRef;
  private readonly identities: Map<string, Uint8Array>;
  private settle!: (o: RoundOutcome) => void;
  /** The round's phase as last read from Redis, open or closing. */
  private mark: PhaseMark = { phase: Phase.AdvertiseKeys, closing: false };
  private stats: Partial<CoordinatorStats> = {};
  /** Answers the current phase took (phase 0: advertisements and declines), as last read. */
  private received = 0;
  /** Phase 0's declines by reason, as last read (once phase 0 ended: `stats.declines`). */
  private declines: DeclineCounts = {};
  private refused = 0;
  private readonly startedAt: number;
  /** The state at the start of the phase this front end last reached (empty collections). */
  private ctx: CoordinatorState;
  private delivered = -1;
  private readonly outbox = new Outbox();
  /** Clients this front end took a phase-0 answer from (keys or a decline). */
  private readonly answered = new Set<string>();
  /** This front end's partial running sum of masked inputs and who is in it. */
  private partial: Uint32Array | null = null;
  private scratch: Uint32Array | null = null;
  private readonly contributors: string[] = [];
  private pending = 0;
  private flushed = false;
  private refreshing: Promise<void> | null = null;
  private again = false;

  constructor(rounds: RedisFrontEnd, meta: RedisRoundMeta) {
    this.rounds = rounds;
    this.meta = meta;
    this.ref = { manifestHash: new Uint8Array(Buffer.from(meta.manifestHash, 'hex')), roundIndex: meta.index };
    this.identities = new Map(Object.entries(meta.identities).map(([id, k]) => [id, new Uint8Array(Buffer.from(k, 'base64url'))]));
    this.startedAt = meta.createdAt;
    this.ctx = start({ params: meta.params, ...(meta.sumBits !== undefined ? { sumBits: meta.sumBits } : {}), round: this.ref, view: new Uint8Array(Buffer.from(meta.view, 'hex')), identityOf: (id) => this.identities.get(id) });
    this.outcome = new Promise((resolve) => (this.settle = resolve));
  }

  get phase(): Phase {
    return this.mark.phase;
  }

  /** The round's configuration: parameters, round ref and the members' identity keys. */
  get config(): CoordinatorConfig {
    return this.ctx.cfg;
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
    // The round's records are gone (a Redis restarted without its data): it cannot go on.
    if (!phB) return this.abandon('Redis answers but holds no record of the round (restarted without its data?)');
    const mark = parsePhaseMark(phB.toString());
    if (!mark) return;
    this.mark = mark;
    if (statsB) this.stats = JSON.parse(statsB.toString()) as typeof this.stats;
    if (timelineB) this.timeline = JSON.parse(timelineB.toString()) as typeof this.timeline;
    const { phase } = mark;
    if (phase === Phase.MaskedInput && mark.closing) await this.flush();
    if (!isFinalPhase(phase)) {
      this.received = await st.inboxSize(k, phase);
      if (phase === Phase.AdvertiseKeys) this.declines = await st.declineCounts(k);
      // The front end that took the last message may have died before asking for the close.
      if (!mark.closing && this.received >= this.expectedIn(phase) && this.expectedIn(phase) > 0) await this.rounds.scheduleClose(k, phase);
      // Deliver what each phase reached so far sent out (a broadcast, or one message per member).
      for (let i = this.delivered + 1; i <= phaseIndex(phase); i++) await this.deliverPhase(PHASE_ORDER[i]!);
      this.delivered = Math.max(this.delivered, phaseIndex(phase));
      return;
    }
    const [outB] = await st.fields(k, 'outcome');
    if (!outB) return;
    const final = st.openOutcome(k, outB, { cfg: this.ctx.cfg, stats: { prgWords: 0, ...this.stats } });
    this.settled = true;
    this.scratch = null;
    this.partial?.fill(0);
    this.partial = null;
    this.settle(outcomeOf(final));
  }

  private async deliverPhase(phase: Phase): Promise<void> {
    if (phase === Phase.AdvertiseKeys) return; // the round start goes out from the coordinator
    const st = this.rounds.store;
    const k = this.meta.key;
    const out = await st.outbound(k, phase);
    const broadcast = out.get('*');
    if (broadcast) {
      const m = st.openServer(k, phase, '*', broadcast);
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
    const frontEnd = this.rounds.frontEndId;
    if (this.contributors.length === 0 || !this.partial) return;
    await st.redis.hset(st.partialKey(k), frontEnd, st.sealVector(k, `partial:${frontEnd}`, this.partial), `${frontEnd}:ids`, st.seal(k, `partial:${frontEnd}:ids`, Buffer.from(JSON.stringify(this.contributors))));
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
      assertMessageFrom(authenticatedId, msg);
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

  private async take(ctx: CoordinatorState, msg: CheckedMessage): Promise<void> {
    const st = this.rounds.store;
    const k = this.meta.key;
    const phase = ctx.phase;
    const check = atPhaseStart(ctx);
    if (msg.type === 'masked-input') {
      // Checked against a scratch sum; added to this front end's partial once recorded.
      this.scratch ??= new Uint32Array(this.meta.params.dim + 1);
      (check as Extract<CoordinatorState, { phase: 'masked-input' }>).sum = this.scratch;
      receiveChecked(check, msg);
      const digest = digestHex(msg.vector);
      this.pending++;
      try {
        const r = await st.record(k, phase, msg.clientId, `${this.rounds.frontEndId}|${digest}`, { frontEndId: this.rounds.frontEndId });
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
      receiveChecked(check, msg);
      const opts =
        msg.type === 'advertise-keys'
          ? { cap: this.meta.params.cohort, keys: [Buffer.from(msg.cPk).toString('hex'), Buffer.from(msg.sPk).toString('hex')] }
          : msg.type === 'decline'
            ? { decline: msg.reason }
            : {};
      const r = await st.record(k, phase, msg.clientId, st.sealClient(k, phase, msg), opts);
      if (r.kind !== 'ok') {
        const mine = toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(msg));
        const recorded = (existing: Buffer): ClientMessage | undefined => {
          try {
            return st.openClient(k, phase, msg.clientId, existing);
          } catch {
            return undefined;
          }
        };
        // Phase 0 takes keys or a decline, one per client: the other kind is refused as such.
        if (r.kind === 'exists' && (msg.type === 'advertise-keys' || msg.type === 'decline')) {
          const prior = recorded(r.existing)?.type;
          if (prior !== undefined && prior !== msg.type) refuseSecondAnswer(prior as Phase0Answer, msg.type, false);
        }
        this.refuse(r, msg, (existing) => {
          const prior = recorded(existing);
          return prior !== undefined && sameBytes(toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(prior)), mine);
        });
      }
      this.received = r.count;
      if (msg.type === 'advertise-keys' || msg.type === 'decline') this.answered.add(msg.clientId);
      if (msg.type === 'decline') this.declines = await st.declineCounts(k);
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
    return !this.settled && this.phase === Phase.AdvertiseKeys && !this.answered.has(clientId);
  }

  status(): RoundStatus {
    const { u1, u2, u3, u4 } = this.stats;
    const sets: RoundStatus['sets'] = {};
    if (u1 !== undefined) sets.u1 = u1;
    if (u2 !== undefined) sets.u2 = u2;
    if (u3 !== undefined) sets.u3 = u3;
    if (u4 !== undefined) sets.u4 = u4;
    const declines = this.stats.declines ?? this.declines;
    // Phase 0's inbox holds the declines too; `received` counts the keys taken.
    const taken = this.phase === Phase.AdvertiseKeys ? Math.max(0, this.received - totalDeclines(declines)) : this.received;
    return { phase: this.phase, received: isFinalPhase(this.phase) ? 0 : taken, sets, refused: this.refused, elapsedMs: Date.now() - this.startedAt, declines: { ...declines } };
  }

  cancel(detail = 'cancelled by an operator'): void {
    void this.rounds
      .cancel(this.meta.key, detail)
      .then(() => this.refresh())
      .catch(() => undefined);
  }

  /**
   * Ends the round here as aborted with `state-unreachable` (its records on Redis cannot be read:
   * Redis down too long, or back without them); nothing partial is published.
   */
  abandon(detail: string): void {
    if (this.settled) return;
    const phase = isFinalPhase(this.mark.phase) ? Phase.AdvertiseKeys : this.mark.phase;
    const stats: CoordinatorStats = { prgWords: 0, ...this.stats, ...(phase === Phase.AdvertiseKeys ? { declines: { ...this.declines } } : {}) };
    const { next } = abortRound({ phase, cfg: this.ctx.cfg, stats }, AbortReason.StateUnreachable, detail);
    this.settled = true;
    this.scratch = null;
    this.partial?.fill(0);
    this.partial = null;
    this.rounds.log?.warn({ round: this.meta.key, phase, reason: AbortReason.StateUnreachable }, 'round aborted: its state on Redis is unreachable');
    this.settle(outcomeOf(next));
  }

  /** Stops delivering (the front end closes); the outcome stays unsettled here. */
  detach(): void {
    this.outbox.clear();
  }
}
