/**
 * The client registry on Redis (`coordinator start --redis`): the one source of truth for every
 * front end of a deployment. Each front end keeps a cache (the per-call checks read it
 * synchronously); every change is written here atomically first, then announced, and every front
 * end merges it into its cache (coordinator/clients/merge.ts) — within a Redis round trip of the
 * announcement, without polling.
 *
 * Keys, under P = `<prefix>:registry` (the deployment's `--redis-prefix`; registry-keys.ts):
 * one record per client (public: key, certificate, serials, revocation) and the set of enrolled
 * ids; the revoked client ids and serials (add-only; of two revocations of a serial the earlier
 * stays); key bindings; invites (by the SHA-256 of the token); last seen (the later kept);
 * `P:seq`, one more for every write that changes anything but last seen; and the channel
 * `P:events`: after each write, `{"from","q","c","s","i"}` — the writer, its `seq`, the client
 * ids, serials and invites it touched. Only a hint: a front end reads those facts from the keys.
 *
 * Operations (coordinator/clients/registry-ops.ts) run under WATCH on the keys they read, on a
 * connection of their own, one at a time per process; a conflicting write by another front end
 * makes EXEC fail and the operation runs again on the new facts. Invites are redeemed in the same
 * transaction that records the enrollment: single-use across front ends.
 *
 * Missed announcements (a front end killed between its write and its publish, a subscriber
 * reconnecting): every front end knows the last `seq` it has fully taken in; a `seq` on Redis
 * ahead of it for two checks in a row (`checkMs`, default 2 s) makes it re-read everything, and
 * so does a reconnect of its subscription and the periodic resync (`resyncMs`, default 1 min).
 * A resync also writes back whatever the cache holds that Redis lacks (Redis restarted without
 * its data): no revocation a front end knows is lost while one is running. At start, the cache
 * holds registry.json, so the first start on a prefix imports it.
 *
 * registry.json is still written, as an export merged under its lock (never dropping what it
 * holds), after each change and each resync: a backup, and what a later start without Redis
 * reads. With Redis it is read only at start.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import { Invites, normalizeSerial } from '../auth/enrollment.js';
import { applyDelta, canonicalRecord, deltaOf, factsMissing, isEmptyDelta, mergeRecord, type RegistryDelta, type RevokedSerialFact } from '../clients/merge.js';
import type { RegistryOp, RegistryReads } from '../clients/registry-ops.js';
import type { RegistrySink, RegistryStore } from '../clients/registry-store.js';
import { Registry, type ClientRecord } from '../clients/registry.js';
import { certificateSerialsOf, revocationCodeOf } from '../clients/serials.js';
import { loadRegistry, saveRegistry } from '../service/data-dir.js';
import { dropErrors, type WatchErrors } from './redis.js';
import { isClientId, isHash, isKey, isSerial, LAST_SEEN_SCRIPT, parseInviteValue, parseRecordValue, parseSerialValue, RegistryKeys, SERIAL_SCRIPT, serialValue, type Announcement } from './registry-keys.js';

export interface RedisRegistryOptions {
  /** The deployment's key prefix (`--redis-prefix`, default 'aegis'); the registry's keys are under `<prefix>:registry:`. */
  prefix?: string;
  /** The data dir: its registry.json is imported at start and written as an export. */
  dataDir?: string;
  /** How often everything is re-read (covers what no announcement told), ms; default 60 s. */
  resyncMs?: number;
  /** How often the write counter is compared with what this front end took in, ms; default 2 s. */
  checkMs?: number;
  log?: Logger;
  clock?: () => number;
  /** Takes over the 'error' events of its connections (RedisHealth.watch); default: dropped. */
  watch?: WatchErrors;
}

/** A transaction that keeps meeting other writers gives up after this many attempts (`unavailable`). */
const MAX_ATTEMPTS = 50;
/** An announcement names at most this many ids, serials and invites; a larger write announces a resync. */
const MAX_ANNOUNCED = 1000;
const BATCH = 500;

/** What a write touched, for its announcement. */
interface Touched {
  clients: string[];
  serials: string[];
  invites: string[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Redis could not be reached (or kept failing) for the registry. */
function unavailable(): AegisError {
  return new AegisError(ErrorCode.Unavailable, 'the client registry on Redis is not reachable; retry');
}

export class RedisRegistryStore implements RegistryStore {
  readonly kind = 'redis';
  /** This front end's id in announcements (its own are not read back). */
  readonly id = randomBytes(6).toString('hex');
  /** The registry's keys. */
  readonly keys: RegistryKeys;
  /** What happened so far (tests and logs): announcements taken in, full re-reads, writes announced, facts written back. */
  readonly stats = { pushes: 0, resyncs: 0, published: 0, healed: 0 };
  private readonly redis: Redis;
  private readonly opts: RedisRegistryOptions;
  private readonly log: Logger | undefined;
  private readonly clock: () => number;
  private sink: RegistrySink | undefined;
  private tx: Redis | undefined;
  private sub: Redis | undefined;
  private timers: NodeJS.Timeout[] = [];
  private closed = false;
  private txChain: Promise<unknown> = Promise.resolve();
  private pushChain: Promise<unknown> = Promise.resolve();
  private resyncing: Promise<void> | undefined;
  private resyncAgain = false;
  /** Every write with a `seq` up to this one is in the cache. */
  private lastSeq = 0;
  private readonly taken = new Set<number>();
  private behindSince: number | undefined;
  private checking = false;
  private exportChain: Promise<unknown> = Promise.resolve();
  private exportQueued = false;

  constructor(redis: Redis, opts: RedisRegistryOptions = {}) {
    this.redis = redis;
    this.opts = opts;
    this.log = opts.log;
    this.clock = opts.clock ?? Date.now;
    this.keys = new RegistryKeys(opts.prefix ?? 'aegis');
  }

  // -------------------------------------------------------------------------------------------
  // Start and stop.

  async start(sink: RegistrySink): Promise<void> {
    this.sink = sink;
    const watch = this.opts.watch ?? dropErrors;
    this.tx = watch(this.redis.duplicate({ maxRetriesPerRequest: 2 }));
    const sub = (this.sub = this.redis.duplicate({ maxRetriesPerRequest: null, connectionName: `aegis-registry-${this.id}` }));
    watch(sub);
    let connected = false;
    sub.on('ready', () => {
      // A reconnect: announcements sent meanwhile were lost.
      if (connected && !this.closed) void this.resync('reconnect');
      connected = true;
    });
    sub.on('message', (channel: string, message: string) => {
      if (channel === this.keys.channel) this.onAnnouncement(message);
    });
    // Subscribed before the first read, so no change falls between the two.
    await sub.subscribe(this.keys.channel);
    if (this.opts.dataDir !== undefined) {
      // The import: what registry.json holds goes into the cache, and the first resync writes to
      // Redis whatever of it Redis lacks.
      sink.absorb(deltaOf(await loadRegistry(this.opts.dataDir)), 'resync');
    }
    await this.resync('start');
    this.every(this.opts.resyncMs ?? 60_000, () => void this.resync('periodic'));
    this.every(this.opts.checkMs ?? 2_000, () => void this.check().catch(() => undefined));
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.push(t);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.sub?.quit().catch(() => this.sub?.disconnect());
    await this.txChain.catch(() => undefined);
    await this.pushChain.catch(() => undefined);
    await this.resyncing?.catch(() => undefined);
    this.scheduleExport();
    await this.exportChain;
    await this.tx?.quit().catch(() => this.tx?.disconnect());
  }

  // -------------------------------------------------------------------------------------------
  // Writes.

  run<T>(op: RegistryOp<T>): Promise<T> {
    if (this.closed) return Promise.reject(new AegisError(ErrorCode.Unavailable, 'the coordinator is shutting down'));
    const next = this.txChain.then(() => this.transact(op));
    this.txChain = next.catch(() => undefined);
    return next.then(async (out) => {
      this.sink!.absorb(out.written, 'write');
      if (out.seq !== undefined) {
        this.took(out.seq);
        await this.announce(out.seq, out.touched);
        this.scheduleExport();
      }
      return out.result;
    });
  }

  /** Runs `op` under WATCH on what it reads; again on a conflicting write. */
  private async transact<T>(op: RegistryOp<T>): Promise<{ result: T; written: RegistryDelta; seq?: number; touched: Touched }> {
    const tx = this.tx!;
    const reads = op.reads;
    const watched = op.readOnly ? [] : this.keysOf(reads);
    for (let attempt = 1; ; attempt++) {
      let state: Registry;
      try {
        if (watched.length > 0) await tx.watch(...watched);
        state = await this.readSome(tx, reads);
      } catch (err) {
        await tx.unwatch().catch(() => undefined);
        throw isAegisError(err) ? err : unavailable();
      }
      let out: ReturnType<RegistryOp<T>['apply']>;
      try {
        out = op.apply(state);
      } catch (err) {
        if (watched.length > 0) await tx.unwatch().catch(() => undefined);
        throw err;
      }
      if (op.readOnly || isEmptyDelta(out.delta)) {
        if (watched.length > 0) await tx.unwatch().catch(() => undefined);
        return { result: out.result, written: deltaOf(state), touched: { clients: [], serials: [], invites: [] } };
      }
      const m = tx.multi();
      let w: ReturnType<RedisRegistryStore['queueWrites']>;
      try {
        w = this.queueWrites(m, state, out.delta, reads);
      } catch (err) {
        await tx.unwatch().catch(() => undefined);
        throw err;
      }
      if (w.counted) m.incr(this.keys.seq);
      let res: [Error | null, unknown][] | null;
      try {
        res = await m.exec();
      } catch {
        throw unavailable();
      }
      if (res === null) {
        // Another writer changed what this operation read: run it again on the new facts.
        if (attempt >= MAX_ATTEMPTS) throw new AegisError(ErrorCode.Unavailable, 'the client registry on Redis is busy; retry');
        await sleep(2 + Math.floor(Math.random() * 10 * Math.min(attempt, 5)));
        continue;
      }
      if (res.some(([e]) => e !== null)) throw unavailable();
      const seq = w.counted ? Number(res[res.length - 1]![1]) : undefined;
      return { result: out.result, written: w.written, ...(seq !== undefined ? { seq } : {}), touched: w.touched };
    }
  }

  private keysOf(reads: RegistryReads): string[] {
    return [
      ...(reads.clients ?? []).map((id) => this.keys.client(id)),
      ...(reads.invites?.length ? [this.keys.invites] : []),
      ...(reads.bindings?.length ? [this.keys.bindings] : []),
      ...(reads.revokedClients?.length ? [this.keys.revokedClients] : []),
      ...(reads.serials?.length ? [this.keys.revokedSerials] : []),
    ];
  }

  /** The facts `reads` names, as a registry. */
  private async readSome(conn: Redis, reads: RegistryReads): Promise<Registry> {
    const p = conn.pipeline();
    const clients = reads.clients ?? [];
    const invites = reads.invites ?? [];
    const bindings = reads.bindings ?? [];
    const revoked = reads.revokedClients ?? [];
    const serials = (reads.serials ?? []).map((s) => normalizeSerial(s));
    for (const id of clients) p.get(this.keys.client(id)).hget(this.keys.lastSeen, id);
    for (const h of invites) p.hget(this.keys.invites, h);
    for (const key of bindings) p.hget(this.keys.bindings, key);
    for (const id of revoked) p.sismember(this.keys.revokedClients, id);
    if (serials.length > 0) p.hmget(this.keys.revokedSerials, ...serials);
    const res = await p.exec();
    if (!res || res.some(([e]) => e !== null)) throw unavailable();
    const vals = res.map(([, v]) => v);
    let i = 0;
    const delta: RegistryDelta = { clients: [], invites: [], bindings: [], revokedClients: [], revokedSerials: [], lastSeen: [] };
    for (const id of clients) {
      const rec = this.parseRecord(vals[i++] as string | null, id);
      const seen = vals[i++] as string | null;
      if (rec) delta.clients!.push(rec);
      if (seen !== null && Number.isSafeInteger(Number(seen))) delta.lastSeen!.push([id, Number(seen)]);
    }
    for (const h of invites) {
      const inv = parseInviteValue(vals[i++] as string | null, h);
      if (inv) delta.invites!.push(inv);
    }
    for (const key of bindings) {
      const owner = vals[i++] as string | null;
      if (owner !== null && isClientId(owner)) delta.bindings!.push([key, owner]);
    }
    for (const id of revoked) if (Number(vals[i++]) === 1) delta.revokedClients!.push(id);
    if (serials.length > 0) {
      const got = vals[i] as (string | null)[];
      serials.forEach((s, j) => {
        if (got[j] !== null && got[j] !== undefined) delta.revokedSerials!.push(parseSerialValue(s, got[j]!));
      });
    }
    const state = new Registry();
    applyDelta(state, delta);
    return state;
  }

  /** Queues the writes of `delta` on `m`, each merged with what was read (`state`). */
  private queueWrites(m: ReturnType<Redis['multi']>, state: Registry, delta: RegistryDelta, reads: RegistryReads): { written: RegistryDelta; counted: boolean; touched: Touched } {
    const written: RegistryDelta = { clients: [], invites: [], bindings: [], revokedClients: [], revokedSerials: [], lastSeen: [] };
    const clients = new Set<string>();
    const serialArgs = new Map<string, RevokedSerialFact>();
    const lastSeenArgs: string[] = [];
    const revokeSerial = (f: RevokedSerialFact): void => {
      const s = normalizeSerial(f.serial);
      const known = serialArgs.get(s);
      if (!known || (f.revokedAt !== undefined && (known.revokedAt === undefined || f.revokedAt < known.revokedAt))) serialArgs.set(s, { ...f, serial: s });
    };
    let counted = false;
    for (const rec of delta.clients ?? []) {
      // A record is only ever written merged with the one read under WATCH.
      if (!(reads.clients ?? []).includes(rec.clientId)) throw new AegisError(ErrorCode.FailedPrecondition, 'a registry operation wrote a client record it did not read');
      const stored = state.clients.get(rec.clientId);
      const merged = stored ? mergeRecord(stored, rec) : canonicalRecord(rec);
      const { lastSeenAt, ...plain } = merged;
      m.set(this.keys.client(rec.clientId), JSON.stringify(plain)).sadd(this.keys.clients, rec.clientId);
      if (merged.revokedAt !== undefined) {
        m.sadd(this.keys.revokedClients, rec.clientId);
        written.revokedClients!.push(rec.clientId);
        const info = { revokedAt: merged.revokedAt, reason: revocationCodeOf(merged) };
        for (const serial of certificateSerialsOf(merged, merged.revokedAt)) revokeSerial({ serial, ...info });
      }
      if (lastSeenAt !== undefined) lastSeenArgs.push(rec.clientId, String(lastSeenAt));
      written.clients!.push(merged);
      clients.add(rec.clientId);
      counted = true;
    }
    for (const inv of delta.invites ?? []) {
      if ((reads.invites ?? []).includes(inv.hash)) {
        const both = new Invites();
        both.absorb([...(state.invites.byHash(inv.hash) ? [state.invites.byHash(inv.hash)!] : []), inv]);
        const merged = both.list()[0]!;
        m.hset(this.keys.invites, inv.hash, JSON.stringify(merged));
        written.invites!.push(merged);
      } else {
        m.hsetnx(this.keys.invites, inv.hash, JSON.stringify(inv));
        written.invites!.push(inv);
      }
      counted = true;
    }
    for (const [key, id] of delta.bindings ?? []) {
      m.hsetnx(this.keys.bindings, key, id);
      written.bindings!.push([key, id]);
      counted = true;
    }
    for (const id of delta.revokedClients ?? []) {
      m.sadd(this.keys.revokedClients, id);
      written.revokedClients!.push(id);
      clients.add(id);
      counted = true;
    }
    for (const f of delta.revokedSerials ?? []) revokeSerial(f);
    if (serialArgs.size > 0) {
      m.eval(SERIAL_SCRIPT, 1, this.keys.revokedSerials, ...[...serialArgs.values()].flatMap((f) => [f.serial, serialValue(f)]));
      written.revokedSerials!.push(...serialArgs.values());
      counted = true;
    }
    for (const [id, at] of delta.lastSeen ?? []) lastSeenArgs.push(id, String(at));
    if (lastSeenArgs.length > 0) {
      m.eval(LAST_SEEN_SCRIPT, 1, this.keys.lastSeen, ...lastSeenArgs);
      for (let j = 0; j < lastSeenArgs.length; j += 2) written.lastSeen!.push([lastSeenArgs[j]!, Number(lastSeenArgs[j + 1])]);
    }
    return { written, counted, touched: { clients: [...clients], serials: [...serialArgs.keys()], invites: written.invites!.map((i) => i.hash) } };
  }

  // -------------------------------------------------------------------------------------------
  // Announcements (pushed to every front end).

  private async announce(seq: number, t: Touched): Promise<void> {
    const big = t.clients.length + t.serials.length + t.invites.length > MAX_ANNOUNCED;
    const msg = big ? { from: this.id, q: seq, resync: true } : { from: this.id, q: seq, c: t.clients, s: t.serials, i: t.invites };
    try {
      await this.tx!.publish(this.keys.channel, JSON.stringify(msg));
      this.stats.published++;
    } catch {
      // Written but not announced: the other front ends' sequence check finds the write.
      this.log?.warn({ seq }, 'could not announce a client registry change; other front ends take it in at their next check');
    }
  }

  private onAnnouncement(raw: string): void {
    let msg: Announcement;
    try {
      msg = JSON.parse(raw) as Announcement;
    } catch {
      return;
    }
    if (msg === null || typeof msg !== 'object' || msg.from === this.id) return;
    const seq = Number.isSafeInteger(msg.q) ? (msg.q as number) : undefined;
    const ids = Array.isArray(msg.c) ? msg.c : [];
    const serials = Array.isArray(msg.s) ? msg.s : [];
    const invites = Array.isArray(msg.i) ? msg.i : [];
    if (msg.resync === true || ids.length + serials.length + invites.length > MAX_ANNOUNCED || !ids.every(isClientId) || !serials.every(isSerial) || !invites.every(isHash)) {
      void this.resync('announced');
      return;
    }
    // In order of arrival; the facts are read from the keys (the message only names them).
    this.pushChain = this.pushChain
      .then(() => this.takeIn({ clients: ids, serials, invites }, seq))
      .catch(() => void this.resync('push failed'));
  }

  private async takeIn(t: Touched, seq: number | undefined): Promise<void> {
    if (this.closed) return;
    const state = await this.readSome(this.redis, { clients: t.clients, revokedClients: t.clients, serials: t.serials, invites: t.invites });
    this.stats.pushes++;
    this.sink!.absorb(deltaOf(state), 'push');
    // Last seen is not in deltaOf (it rides on the records).
    if (seq !== undefined) this.took(seq);
  }

  /** Notes that the write numbered `seq` is in the cache. */
  private took(seq: number): void {
    if (seq <= this.lastSeq) return;
    this.taken.add(seq);
    while (this.taken.delete(this.lastSeq + 1)) this.lastSeq++;
  }

  /** Every write up to `seq` is in the cache (a full read). */
  private caughtUpTo(seq: number): void {
    if (seq > this.lastSeq) this.lastSeq = seq;
    for (const s of this.taken) if (s <= this.lastSeq) this.taken.delete(s);
    while (this.taken.delete(this.lastSeq + 1)) this.lastSeq++;
  }

  /** A write counter ahead of this front end at two checks in a row: an announcement was missed. */
  private async check(): Promise<void> {
    if (this.closed || this.checking) return;
    this.checking = true;
    let seq: number;
    try {
      seq = Number((await this.redis.get(this.keys.seq)) ?? 0);
    } finally {
      this.checking = false;
    }
    if (seq <= this.lastSeq) {
      this.behindSince = undefined;
      return;
    }
    const now = Date.now();
    if (this.behindSince === undefined) {
      this.behindSince = now;
      return;
    }
    this.behindSince = undefined;
    this.log?.info({ seq, have: this.lastSeq }, 'a client registry change was not announced here; reading the registry again');
    await this.resync('missed');
  }

  // -------------------------------------------------------------------------------------------
  // Full re-reads.

  /**
   * Re-reads everything (one at a time; a request during one runs once more after it). Only the
   * first, at start, rejects when Redis cannot be read; later ones log and leave it to the next.
   */
  resync(why: string): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (!this.resyncing) {
      const run = async (): Promise<void> => {
        try {
          do {
            this.resyncAgain = false;
            await this.resyncNow(why);
          } while (this.resyncAgain && !this.closed);
        } finally {
          this.resyncing = undefined;
        }
      };
      this.resyncing = run();
      if (why === 'start') return this.resyncing;
    } else {
      this.resyncAgain = true;
    }
    return this.resyncing.catch((err: unknown) => {
      this.log?.warn({ code: isAegisError(err) ? err.code : 'unavailable', why }, 'could not re-read the client registry on Redis; retrying at the next check');
      this.behindSince = undefined;
    });
  }

  private async resyncNow(why: string): Promise<void> {
    // A read while other front ends write may miss what they are writing: the write counter
    // before and after tells; such a read is taken in, but writes nothing back (unless it is the
    // third in a row).
    for (let attempt = 1; ; attempt++) {
      let before: number;
      let after: number;
      let snap: Registry;
      try {
        before = Number((await this.redis.get(this.keys.seq)) ?? 0);
        snap = await this.readAll();
        after = Number((await this.redis.get(this.keys.seq)) ?? 0);
      } catch (err) {
        throw isAegisError(err) ? err : unavailable();
      }
      this.sink!.absorb(deltaOf(snap), 'resync');
      this.stats.resyncs++;
      this.caughtUpTo(before);
      if (after !== before && attempt < 3 && !this.closed) continue;
      await this.heal(snap, why);
      await this.pruneInvites(snap);
      this.scheduleExport();
      return;
    }
  }

  /** Everything on Redis, as a registry (entries that do not parse are left out and logged). */
  private async readAll(): Promise<Registry> {
    const r = this.redis;
    const [ids, revokedClients, serials, bindings, invites, lastSeen] = await Promise.all([
      r.smembers(this.keys.clients),
      r.smembers(this.keys.revokedClients),
      r.hgetall(this.keys.revokedSerials),
      r.hgetall(this.keys.bindings),
      r.hgetall(this.keys.invites),
      r.hgetall(this.keys.lastSeen),
    ]);
    const delta: RegistryDelta = { clients: [], invites: [], bindings: [], revokedClients: revokedClients.filter(isClientId), revokedSerials: [], lastSeen: [] };
    for (let i = 0; i < ids.length; i += BATCH) {
      const batch = ids.slice(i, i + BATCH).filter(isClientId);
      if (batch.length === 0) continue;
      const vals = await r.mget(...batch.map((id) => this.keys.client(id)));
      batch.forEach((id, j) => {
        const rec = this.parseRecord(vals[j] ?? null, id);
        if (rec) delta.clients!.push(rec);
      });
    }
    for (const [s, v] of Object.entries(serials)) if (isSerial(s)) delta.revokedSerials!.push(parseSerialValue(s, v));
    for (const [key, id] of Object.entries(bindings)) if (isKey(key) && isClientId(id)) delta.bindings!.push([key, id]);
    for (const [h, v] of Object.entries(invites)) {
      const inv = parseInviteValue(v, h);
      if (inv) delta.invites!.push(inv);
    }
    for (const [id, at] of Object.entries(lastSeen)) if (Number.isSafeInteger(Number(at))) delta.lastSeen!.push([id, Number(at)]);
    const snap = new Registry();
    applyDelta(snap, delta);
    return snap;
  }

  /**
   * Writes to Redis whatever the cache holds that `snap` (Redis, just read) lacks: at the first
   * start on a prefix, registry.json (the import); later, facts Redis lost (restarted without its
   * data) while this front end kept them.
   */
  private async heal(snap: Registry, why: string): Promise<void> {
    const missing = factsMissing(this.sink!.cache, snap, this.clock());
    const security = missing.clients.length + missing.invites.length + missing.bindings.length + missing.revokedClients.length + missing.revokedSerials.length;
    if (security + missing.lastSeen.length === 0) return;
    const op: RegistryOp<void> = {
      name: 'write back',
      reads: { clients: missing.clients.map((r) => r.clientId), invites: missing.invites.map((i) => i.hash) },
      apply: () => ({ delta: missing, result: undefined }),
    };
    await this.run(op);
    this.stats.healed += security;
    if (security === 0) return;
    const facts = { clients: missing.clients.length, revokedClients: missing.revokedClients.length, revokedSerials: missing.revokedSerials.length, bindings: missing.bindings.length, invites: missing.invites.length };
    if (why === 'start') this.log?.info(facts, 'client registry: wrote to Redis what registry.json (or this front end) held and Redis did not (the import)');
    else this.log?.warn(facts, 'client registry: Redis lacked facts this front end holds (was it restarted without its data?); written back');
  }

  /** Drops invites expired or used more than 7 days ago. */
  private async pruneInvites(snap: Registry): Promise<void> {
    const now = this.clock();
    const stale = snap.invites.list().filter((i) => Invites.isStale(i, now)).map((i) => i.hash);
    if (stale.length > 0) await this.redis.hdel(this.keys.invites, ...stale).catch(() => undefined);
  }

  // -------------------------------------------------------------------------------------------

  /** Writes the cache merged into registry.json (coalesced; never drops what the file holds). */
  private scheduleExport(): void {
    const dir = this.opts.dataDir;
    if (dir === undefined || this.exportQueued) return;
    this.exportQueued = true;
    this.exportChain = this.exportChain
      .then(() => {
        this.exportQueued = false;
        return saveRegistry(dir, this.sink!.cache);
      })
      .catch((err: unknown) => this.log?.warn({ code: isAegisError(err) ? err.code : 'io' }, 'could not write the registry.json export'));
  }

  /** The store's own timers re-read it: nothing to do on the sweep. */
  tick(): Promise<void> {
    return Promise.resolve();
  }

  /** Writes back what the cache holds that Redis lacks (a resync does). */
  sync(): Promise<void> {
    return this.resync('sync');
  }

  private parseRecord(v: string | null, id: string): ClientRecord | undefined {
    const rec = parseRecordValue(v, id);
    if (v !== null && rec === undefined) this.log?.error({ client: id }, 'a client record on Redis is malformed; left out');
    return rec;
  }
}

