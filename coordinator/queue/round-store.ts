/**
 * Round state on Redis (DESIGN.md §6): what several coordinator front ends need to run one round
 * together. Every value that carries protocol material is sealed with AES-256-GCM under the
 * deployment's queue key (from each coordinator's KEK-wrapped vault, never in Redis), with AAD
 * naming the round, the field and the client, so a value cannot be moved to another place.
 *
 * Keys, for a round key K (`<job>.r<index>[.g<group>]`) under the prefix P:
 * - `P:round:K` (hash): `meta` (JSON: parameters, round ref, deadlines, cohort, identity keys —
 *   all public), `phase` (the phase open or closing: coordinator/round/phases.ts, `formatPhaseMark`), `stats` and `timeline`
 *   (JSON), `u3` (JSON ids), `sum` (sealed masked sum, once the masked-input phase closed),
 *   `outcome` (sealed), `transitions` (a counter: each phase change adds one, exactly once).
 * - `P:round:K:in:<phase>` (hash): client id → the client's sealed message of that phase; for
 *   masked inputs only `<front end>|<sha-256>`: the vector itself stays in the front end's
 *   running sum and never reaches Redis.
 * - `P:round:K:keys` (hash): advertised public key → client id (no key under two ids).
 * - `P:round:K:out:<phase>` (hash): client id (or `*` for a broadcast) → sealed server message.
 * - `P:round:K:partial` (hash): front end → its sealed partial sum and contributor list.
 * - `P:round:K:gone` (set): clients whose connection is gone (phases stop waiting for them).
 * - `P:round:K:declines` (hash): reason code → how many clients declined the round with it
 *   (counts only; who declined is in phase 0's inbox, with the advertisements, as the round's
 *   own protocol state).
 * - Phase 0's inbox takes a client's keys or its decline, one of the two per client: a decline
 *   counts as the client's answer, so the phase stops waiting for it.
 * - `P:fe:<id>` (hash, 5 s TTL): a live front end's heartbeat and connected clients.
 * - `P:model:<manifest hash>` (hash, kept a day): model version `v<N>` → its sealed weights, the
 *   global model a training round of that job starts from, for clients on any front end.
 *
 * Recording a message is one Lua script: it checks the phase (no message is taken once its
 * phase closes), the cohort cap and key ownership, and sets the value only if the client has
 * none — two front ends cannot both take one client's message — counting a decline under its
 * reason in the same step.
 */
import { createHash } from 'node:crypto';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import type { Redis } from 'ioredis';
import { bytesOf, lengthPrefixed } from '../../shared/bytes.js';
import { open as aeadOpen, seal as aeadSeal } from '../../shared/crypto/aead.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { ClientMessage, PhaseDeadlines, ServerMessage } from '../../shared/protocol/messages.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import { fromClientEnvelope, fromServerEnvelope, toClientEnvelope, toServerEnvelope, vectorFromBytes, vectorToBytes } from '../../shared/rpc/convert.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abortRound } from '../round/aborted.js';
import { completedState } from '../round/completed.js';
import { addDeclines, type DeclineCounts } from '../round/declines.js';
import { formatPhaseMark } from '../round/phases.js';
import type { FinalState, StateBase } from '../round/types.js';

/** Public facts of one round (one aggregation group), fixed when it starts. */
export interface RedisRoundMeta {
  v: 1;
  key: string;
  jobId: string;
  index: number;
  group: number;
  groups: number;
  params: RoundParams;
  /** r: the bits of the round's sum, from the signed manifest (dp-manifest.ts `maskedSumBits`); absent: `sumBitsOf(params)`. */
  sumBits?: number;
  /** The round ref: manifest hash (hex) and round index. */
  manifestHash: string;
  /** The group's round view (shared/protocol/view.ts), hex. */
  view: string;
  deadlines: PhaseDeadlines;
  /** This group's members, sorted. */
  cohort: string[];
  /** Identity public keys (base64url) of the members: any front end checks signatures with them. */
  identities: Record<string, string>;
  /** The front end that started the round. */
  owner: string;
  createdAt: number;
}

/** A whole round (all its groups), for front ends that did not start it. */
export interface RedisRoundInfo {
  v: 1;
  jobId: string;
  index: number;
  manifestHash: string;
  /** The round keys of its groups, in group order. */
  groups: string[];
  /** Each group's RoundStart envelope (base64 of the protobuf). */
  starts: string[];
  owner: string;
  createdAt: number;
}

/** How a round ended, as stored (sealed) on Redis: `sealOutcome` writes it from the final state, `openOutcome` reads the state back. */
export interface StoredOutcome {
  ok: boolean;
  survivors?: string[];
  /** base64 of the unmasked sum's bytes. */
  sum?: string;
  /** base64 of the round's session id (a DP round's sum is decoded with it). */
  sessionId?: string;
  reason?: string;
  at?: Phase;
  detail?: string;
}

export type RecordResult = { kind: 'ok'; count: number } | { kind: 'wrong-phase'; phase: string } | { kind: 'exists'; existing: Buffer } | { kind: 'full' } | { kind: 'key-taken' };

const RECORD = `
local ph = redis.call('HGET', KEYS[1], 'phase')
if ph ~= ARGV[1] then return {'wrong-phase', ph or ''} end
local cur = redis.call('HGET', KEYS[2], ARGV[2])
if cur then
  if ARGV[6] ~= '' then
    local frontEnd = string.match(cur, '^([^|]*)|')
    if frontEnd == ARGV[6] or redis.call('EXISTS', ARGV[7] .. frontEnd) == 1 then return {'exists', cur} end
  else
    return {'exists', cur}
  end
end
local cap = tonumber(ARGV[4])
if (not cur) and cap > 0 and redis.call('HLEN', KEYS[2]) >= cap then return {'full', ''} end
if ARGV[5] ~= '' then
  for pk in string.gmatch(ARGV[5], '[^,]+') do
    local o = redis.call('HGET', KEYS[3], pk)
    if o and o ~= ARGV[2] then return {'key-taken', ''} end
  end
  for pk in string.gmatch(ARGV[5], '[^,]+') do redis.call('HSET', KEYS[3], pk, ARGV[2]) end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[8] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[8], 1) end
return {'ok', tostring(redis.call('HLEN', KEYS[2]))}
`;

/** The open phase ARGV[1] becomes its closing mark ARGV[2] (the close starts); returns the phase mark found. */
const MARK_CLOSING = `
local ph = redis.call('HGET', KEYS[1], 'phase')
if ph == ARGV[1] then redis.call('HSET', KEYS[1], 'phase', ARGV[2]) end
return ph or ''
`;

const ROUND_TTL_SECONDS = 86_400;
export const HEARTBEAT_TTL_SECONDS = 5;

export class RoundStore {
  readonly redis: Redis;
  readonly prefix: string;
  readonly #key: Uint8Array;

  constructor(redis: Redis, queueKey: Uint8Array, opts: { prefix?: string } = {}) {
    if (!(queueKey instanceof Uint8Array) || queueKey.length !== 32) throw new AegisError(ErrorCode.BadKeyLength, 'the queue key must be 32 bytes');
    this.redis = redis;
    this.prefix = opts.prefix ?? 'aegis';
    this.#key = new Uint8Array(queueKey);
    redis.defineCommand('aegisRecord', { numberOfKeys: 4, lua: RECORD });
    redis.defineCommand('aegisMarkClosing', { numberOfKeys: 1, lua: MARK_CLOSING });
  }

  roundKey(k: string): string {
    return `${this.prefix}:round:${k}`;
  }
  inboxKey(k: string, phase: Phase): string {
    return `${this.prefix}:round:${k}:in:${phase}`;
  }
  outKey(k: string, phase: Phase): string {
    return `${this.prefix}:round:${k}:out:${phase}`;
  }
  partialKey(k: string): string {
    return `${this.prefix}:round:${k}:partial`;
  }
  goneKey(k: string): string {
    return `${this.prefix}:round:${k}:gone`;
  }
  keysKey(k: string): string {
    return `${this.prefix}:round:${k}:keys`;
  }
  declinesKey(k: string): string {
    return `${this.prefix}:round:${k}:declines`;
  }
  infoKey(roundId: string): string {
    return `${this.prefix}:shared-round:${roundId}`;
  }
  modelKey(manifestHashHex: string): string {
    return `${this.prefix}:model:${manifestHashHex}`;
  }
  get activeKey(): string {
    return `${this.prefix}:shared-rounds`;
  }
  get heartbeatPrefix(): string {
    return `${this.prefix}:fe:`;
  }
  get channel(): string {
    return `${this.prefix}:round-events`;
  }

  seal(k: string, field: string, plain: Uint8Array): Buffer {
    return Buffer.from(aeadSeal(this.#key, plain, lengthPrefixed('aegis-round', k, field)));
  }

  open(k: string, field: string, sealed: Uint8Array): Uint8Array {
    return aeadOpen(this.#key, new Uint8Array(sealed), lengthPrefixed('aegis-round', k, field));
  }

  sealClient(k: string, phase: Phase, m: ClientMessage): Buffer {
    return this.seal(k, `in:${phase}:${m.clientId}`, toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(m)));
  }

  openClient(k: string, phase: Phase, clientId: string, sealed: Uint8Array): ClientMessage {
    return fromClientEnvelope(fromBinary(pb.ClientEnvelopeSchema, this.open(k, `in:${phase}:${clientId}`, sealed)));
  }

  sealServer(k: string, phase: Phase, to: string, m: ServerMessage): Buffer {
    return this.seal(k, `out:${phase}:${to}`, toBinary(pb.ServerEnvelopeSchema, toServerEnvelope(m)));
  }

  openServer(k: string, phase: Phase, to: string, sealed: Uint8Array): ServerMessage | undefined {
    return fromServerEnvelope(fromBinary(pb.ServerEnvelopeSchema, this.open(k, `out:${phase}:${to}`, sealed)));
  }

  /** A round's final state as its sealed outcome record. */
  sealOutcome(k: string, final: FinalState): Buffer {
    const out: StoredOutcome =
      final.phase === Phase.Completed
        ? { ok: true, survivors: [...final.survivors], sum: Buffer.from(bytesOf(final.sum)).toString('base64'), ...(final.sessionId ? { sessionId: Buffer.from(final.sessionId).toString('base64') } : {}) }
        : { ok: false, reason: final.reason, at: final.at, detail: final.detail };
    return this.seal(k, 'outcome', Buffer.from(JSON.stringify(out)));
  }

  /** The final state a sealed outcome record stands for, rebuilt by the state machine's own constructors over `base`. */
  openOutcome(k: string, sealed: Uint8Array, base: StateBase): FinalState {
    const out = JSON.parse(Buffer.from(this.open(k, 'outcome', sealed)).toString()) as StoredOutcome;
    if (out.ok) {
      const sessionId = out.sessionId !== undefined ? new Uint8Array(Buffer.from(out.sessionId, 'base64')) : undefined;
      return completedState(base, out.survivors ?? [], new Uint32Array(new Uint8Array(Buffer.from(out.sum ?? '', 'base64')).buffer), sessionId);
    }
    return abortRound({ ...base, phase: out.at ?? Phase.AdvertiseKeys }, (out.reason ?? AbortReason.TooFewClients) as AbortReason, out.detail ?? '').next;
  }

  /** Records a training job's model version (its weights' bytes, sealed) for the front ends that serve its clients. */
  async putModel(manifestHashHex: string, version: number, weights: Uint8Array): Promise<void> {
    const key = this.modelKey(manifestHashHex);
    await this.redis.multi().hset(key, `v${version}`, this.seal(`model:${manifestHashHex}`, `v${version}`, weights)).expire(key, ROUND_TTL_SECONDS).exec();
  }

  /** A model version's weights recorded by `putModel`, if any. */
  async model(manifestHashHex: string, version: number): Promise<Uint8Array | undefined> {
    const sealed = await this.redis.hgetBuffer(this.modelKey(manifestHashHex), `v${version}`);
    return sealed ? this.open(`model:${manifestHashHex}`, `v${version}`, sealed) : undefined;
  }

  sealVector(k: string, field: string, v: Uint32Array): Buffer {
    return this.seal(k, field, vectorToBytes(v));
  }

  openVector(k: string, field: string, sealed: Uint8Array): Uint32Array {
    return vectorFromBytes(this.open(k, field, sealed));
  }

  /** Creates a round's records (nothing if they exist: a second start of one round is a no-op). Returns true when created. */
  async create(info: RedisRoundInfo, metas: readonly RedisRoundMeta[], first: Phase): Promise<boolean> {
    const created = await this.redis.hsetnx(this.infoKey(`${info.jobId}.r${info.index}`), 'info', JSON.stringify(info));
    if (created === 0) return false;
    const m = this.redis.multi();
    for (const meta of metas) {
      m.hset(this.roundKey(meta.key), 'meta', JSON.stringify(meta), 'phase', formatPhaseMark({ phase: first, closing: false }), 'stats', JSON.stringify({ prgWords: 0 }), 'timeline', JSON.stringify([{ phase: first, at: Date.now() }]), 'transitions', 0);
    }
    m.sadd(this.activeKey, `${info.jobId}.r${info.index}`);
    await m.exec();
    return true;
  }

  async info(roundId: string): Promise<RedisRoundInfo | undefined> {
    const s = await this.redis.hget(this.infoKey(roundId), 'info');
    return s ? (JSON.parse(s) as RedisRoundInfo) : undefined;
  }

  async meta(k: string): Promise<RedisRoundMeta> {
    const s = await this.redis.hget(this.roundKey(k), 'meta');
    if (!s) throw new AegisError(ErrorCode.NotFound, `no round ${k} on the Redis`);
    return JSON.parse(s) as RedisRoundMeta;
  }

  async phase(k: string): Promise<string> {
    return (await this.redis.hget(this.roundKey(k), 'phase')) ?? '';
  }

  /**
   * Records a client's message of `phase` (atomically: see RECORD). `decline`: the message is a
   * decline with this reason, which the round's decline counts take as well.
   */
  async record(k: string, phase: Phase, clientId: string, value: Buffer | string, opts: { cap?: number; keys?: string[]; frontEndId?: string; decline?: ErrorCode } = {}): Promise<RecordResult> {
    const r = (await (this.redis as unknown as { aegisRecordBuffer: (...a: unknown[]) => Promise<[Buffer, Buffer]> }).aegisRecordBuffer(
      this.roundKey(k),
      this.inboxKey(k, phase),
      this.keysKey(k),
      this.declinesKey(k),
      formatPhaseMark({ phase, closing: false }),
      clientId,
      value,
      String(opts.cap ?? 0),
      (opts.keys ?? []).join(','),
      opts.frontEndId ?? '',
      this.heartbeatPrefix,
      opts.decline ?? '',
    )) as [Buffer, Buffer];
    const kind = r[0].toString();
    if (kind === 'ok') return { kind, count: Number(r[1].toString()) };
    if (kind === 'wrong-phase') return { kind, phase: r[1].toString() };
    if (kind === 'exists') return { kind, existing: r[1] };
    if (kind === 'full') return { kind };
    return { kind: 'key-taken' };
  }

  /** Starts closing `phase`; returns the phase mark found (`phase` open when this call marked it closing). */
  async markClosing(k: string, phase: Phase): Promise<string> {
    const mark = this.redis as unknown as { aegisMarkClosing: (...a: unknown[]) => Promise<string> };
    return String(await mark.aegisMarkClosing(this.roundKey(k), formatPhaseMark({ phase, closing: false }), formatPhaseMark({ phase, closing: true })));
  }

  async inbox(k: string, phase: Phase): Promise<Map<string, Buffer>> {
    const h = await this.redis.hgetallBuffer(this.inboxKey(k, phase));
    return new Map(Object.entries(h));
  }

  async inboxSize(k: string, phase: Phase): Promise<number> {
    return this.redis.hlen(this.inboxKey(k, phase));
  }

  /** How many clients declined round `k` so far, by reason. */
  async declineCounts(k: string): Promise<DeclineCounts> {
    const h = await this.redis.hgetall(this.declinesKey(k));
    return addDeclines(Object.fromEntries(Object.entries(h).map(([reason, n]) => [reason, Number(n)])) as DeclineCounts);
  }

  async gone(k: string): Promise<Set<string>> {
    return new Set(await this.redis.smembers(this.goneKey(k)));
  }

  async outbound(k: string, phase: Phase): Promise<Map<string, Buffer>> {
    return new Map(Object.entries(await this.redis.hgetallBuffer(this.outKey(k, phase))));
  }

  async fields(k: string, ...names: string[]): Promise<(Buffer | null)[]> {
    return this.redis.hmgetBuffer(this.roundKey(k), ...names);
  }

  /** Front ends with a live heartbeat. */
  async alive(frontEndId: string): Promise<boolean> {
    return (await this.redis.exists(this.heartbeatPrefix + frontEndId)) === 1;
  }

  expireRound(m: ReturnType<Redis['multi']>, k: string, phases: readonly Phase[]): void {
    for (const key of [this.roundKey(k), this.partialKey(k), this.goneKey(k), this.keysKey(k), this.declinesKey(k), ...phases.flatMap((p) => [this.inboxKey(k, p), this.outKey(k, p)])]) m.expire(key, ROUND_TTL_SECONDS);
  }
}

export const digestHex = (v: Uint32Array): string => createHash('sha256').update(bytesOf(v)).digest('hex');
