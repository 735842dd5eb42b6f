/**
 * The contribution ledger: which rounds this client joined and what it contributed to them, so
 * that a coordinator lying across rounds cannot make it contribute twice to sums it could
 * difference. Admission consults it before the client joins a round, and records the join
 * before any key is advertised; the runner records each contribution before its masked input
 * leaves.
 *
 * The rules, per job (a job is one manifest, named by its hash):
 *
 *   - a round index at or past the manifest's `rounds` is refused (`round-out-of-range`);
 *   - each round index is joined at most once (`replayed-round`);
 *   - a training round's model version must be above every version this client contributed
 *     from in the job (the same version: `replayed-round`, an older one: `model-rollback`),
 *     and when the client saw the outcome of the job's previous round index, it must be the
 *     version that round published: one more than that round's when it completed and was not
 *     flagged as poisoned, the same one otherwise (`model-rollback`). A retry of an aborted or
 *     flagged round from a version this client contributed from is therefore sat out: the
 *     coordinator may have learned the first sum;
 *   - a plain input (identified by its HMAC under a key of this ledger, never by its values) is
 *     contributed to one round only, in any job, unless the client opted in to reuse it
 *     (`input-reused`).
 *
 * What is kept is bounded (see the limits below): per job, the round indexes joined (as
 * ranges), the highest model version contributed from and the last few rounds in detail; the
 * last inputs' digests. Where a bound is reached the ledger errs towards refusing: ranges are
 * merged over their smallest gap (the client then sits those rounds out too), and a ledger full
 * of live jobs refuses new ones. Only jobs whose manifest expired long ago are dropped (a
 * client never takes an expired manifest), and the oldest input digests beyond the bound.
 *
 * `memoryLedger()` keeps all this for one process (in-process runners, tests, the simulator);
 * `openLedger()` (ledger-file.ts) keeps it in the data dir.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { bytesOf } from '../../shared/bytes.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { RoundRef } from '../../shared/protocol/messages.js';
import { roundName } from '../../shared/round-number.js';
import { addCharge, checkRoundPrivacy, mergeCharges, type PrivacyCharge, type PrivacyLimit } from './privacy-budget.js';

/** Per job, how many of the latest rounds joined are kept in detail (the rules need the previous one). */
export const RECENT_ROUNDS = 8;
/** Per job, how many ranges of joined round indexes are kept before the smallest gap is closed. */
export const MAX_RANGES = 64;
/** How many jobs the ledger holds; past it, a new job is refused until old manifests expire. */
export const MAX_JOBS = 512;
/** How many plain inputs' digests are kept (the oldest are dropped). */
export const MAX_INPUTS = 4096;
/** A job is dropped this long after its manifest expired (a margin for clock corrections). */
export const EXPIRED_JOB_KEPT_MS = 30 * 86_400_000;

export type JobKind = 'plain' | 'training';
/** How a joined round ended, as the coordinator announced it. */
export type RoundEnd = 'ok' | 'aborted' | 'flagged';

/** A round a coordinator started, as the ledger's rules see it. */
export interface RoundClaim {
  /** The round's manifest hash, hex. */
  manifestSha256: string;
  roundIndex: number;
  kind: JobKind;
  /** From the manifest, when the round start carries one. */
  jobId?: string;
  rounds?: number;
  expiresAt?: string;
  /** A training round: the model version it trains from. */
  modelVersion?: number;
  /**
   * A differentially private round: what the client is charged when its masked input is
   * recorded as sent (privacy-budget.ts), and the limit checked again then.
   */
  charge?: PendingCharge;
}

/** A DP round's cost, charged with its contribution. */
export interface PendingCharge {
  publisher: string;
  /** RDP on privacy-budget.ts's RDP_ORDERS. */
  rdp: number[];
  limit?: PrivacyLimit;
}

/** A round joined, kept in detail. */
export interface RoundEntry {
  roundIndex: number;
  modelVersion?: number;
  joinedAt: string;
  /** When its masked input was recorded, just before it left. */
  contributedAt?: string;
  outcome?: RoundEnd;
}

/** What the ledger keeps of one job. */
export interface JobEntry {
  manifestSha256: string;
  jobId?: string;
  kind: JobKind;
  rounds?: number;
  expiresAt?: string;
  /** Round indexes joined, as sorted disjoint closed ranges [from, to]. */
  joined: [number, number][];
  /** The highest model version a masked input was sent from (training jobs). */
  contributedFrom?: number;
  /** How many rounds of the job a masked input was sent to. */
  contributions: number;
  /** The latest rounds joined, oldest first (at most RECENT_ROUNDS). */
  recent: RoundEntry[];
}

/** A plain input contributed: its HMAC under the input key `key` (an id), and where it went. */
export interface InputEntry {
  digest: string;
  key: string;
  manifestSha256: string;
  roundIndex: number;
  at: string;
}

/** Everything a ledger holds: what it records, and the keys its input digests are under. */
export interface LedgerData {
  jobs: JobEntry[];
  inputs: InputEntry[];
  /** Input-digest keys by id (32 bytes each); the first is the one new digests use. */
  inputKeys: Map<string, Uint8Array>;
  /** The DP rounds contributed to and their privacy cost (privacy-budget.ts); never pruned. */
  privacy: PrivacyCharge[];
}

/** A plain input's digest for one round, from `inputDigest`, recorded with its contribution. */
export interface InputDigest {
  digest: string;
  key: string;
}

/** What `aegis client ledger` shows: ids, hashes, indexes, versions and times; never an input. */
export interface LedgerView {
  jobs: (Omit<JobEntry, 'recent'> & { recent: (RoundEntry & { input?: string })[] })[];
  inputs: number;
}

/** The ledger as admission and the runner use it; in memory or in the data dir. */
export interface ContributionLedger {
  /** Throws the refusal a claimed round deserves (`round-out-of-range`, `replayed-round`, `model-rollback`); records nothing. */
  check(claim: RoundClaim): void;
  /**
   * The digest of a plain input (`id`: bytes that identify it, see quantizedInputId) for
   * `round`; throws `input-reused` when it went to another round before, unless `reuse`.
   */
  inputDigest(id: InputId, round: RoundRef, opts: { reuse: boolean }): InputDigest;
  /** Checks the claim again and records the join, durably before it returns. */
  join(claim: RoundClaim, input?: InputDigest): Promise<void>;
  /**
   * Records that the client sends its masked input to `round` (with the round's input digest),
   * durably before it returns; throws when it may not (a round not joined, an input reused).
   */
  contribute(round: RoundRef, opts: { reuse: boolean }): Promise<void>;
  /** Records how a round ended that this ledger joined and has not heard the outcome of (others are ignored). */
  outcome(round: RoundRef, o: { ok: boolean; poisoningFlagged?: boolean }): Promise<void>;
  view(): LedgerView;
  /** The privacy charges recorded (privacy-budget.ts). */
  privacyCharges(): readonly PrivacyCharge[];
}

/** Where a ledger keeps its data: `sync` writes it, merged with what is there, and returns the merge. */
export interface LedgerStore {
  sync(data: LedgerData): Promise<LedgerData>;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const short = (h: string): string => `${h.slice(0, 12)}…`;

/** The id of an input-digest key (so a digest names the key it is under, never the key). */
export const inputKeyId = (key: Uint8Array): string => createHmac('sha256', key).update('aegis/v1/ledger-input-key-id').digest('hex').slice(0, 16);

/**
 * What identifies an input: bytes, given as the parts they are the concatenation of, so that a
 * vector is hashed where it lies instead of being copied after a tag byte first (for m = 10^5
 * values, 0.8 MB per round).
 */
export type InputId = readonly Uint8Array[];

/** What identifies a quantized input vector (the default for in-process runners): 0x01, then its words. */
export function quantizedInputId(v: Uint32Array): InputId {
  return [Uint8Array.of(1), bytesOf(v)];
}

/**
 * What identifies an input read as numbers (`aegis client run --input`): 0x02, then its values
 * and weight as float64. Quantization draws fresh randomness at each round, so one input never
 * quantizes to the same vector twice; its values are what must not be summed twice.
 */
export function rawInputId(values: ArrayLike<number>, weight: number): InputId {
  const f = values instanceof Float64Array ? values : Float64Array.from(values);
  return [Uint8Array.of(2), bytesOf(f), bytesOf(Float64Array.of(weight))];
}

/** The HMAC-SHA256 of an input id under `key`, hex. */
function inputHmac(key: Uint8Array, id: InputId): string {
  const h = createHmac('sha256', key);
  for (const part of id) h.update(part);
  return h.digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Ranges of round indexes.

export const inRanges = (ranges: readonly [number, number][], i: number): boolean => ranges.some(([a, b]) => a <= i && i <= b);

/** The union of sorted disjoint ranges with more, merged where they touch, then capped. */
export function addRanges(ranges: readonly [number, number][], more: readonly [number, number][]): [number, number][] {
  const all = [...ranges, ...more].map(([a, b]): [number, number] => [a, b]).sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const r of all) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push(r);
  }
  // Past the bound, close the smallest gap: the rounds in it then count as joined (sat out).
  while (out.length > MAX_RANGES) {
    let best = 0;
    for (let i = 1; i < out.length - 1; i++) if (out[i + 1]![0] - out[i]![1] < out[best + 1]![0] - out[best]![1]) best = i;
    out.splice(best, 2, [out[best]![0], out[best + 1]![1]]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The rules.

const jobName = (j: { jobId?: string; manifestSha256: string }): string => (j.jobId ? `job '${j.jobId}'` : `the job of manifest ${short(j.manifestSha256)}`);

/** Throws the refusal `claim` deserves given `job` (what the ledger holds of its job, if anything). */
export function checkClaim(job: JobEntry | undefined, claim: RoundClaim): void {
  const { roundIndex: i } = claim;
  const name = jobName(claim);
  if (claim.rounds !== undefined && i >= claim.rounds) {
    throw new AegisError(ErrorCode.RoundOutOfRange, `${roundName(i)} of ${name} is past the ${claim.rounds} rounds its manifest allows`);
  }
  if (!job) return;
  if (inRanges(job.joined, i)) throw new AegisError(ErrorCode.ReplayedRound, `this client already joined ${roundName(i)} of ${name}`);
  if (claim.kind !== 'training' || claim.modelVersion === undefined) return;
  const v = claim.modelVersion;
  if (job.contributedFrom !== undefined && v <= job.contributedFrom) {
    if (v === job.contributedFrom) throw new AegisError(ErrorCode.ReplayedRound, `this client already contributed from model version ${v} of ${name}`);
    throw new AegisError(ErrorCode.ModelRollback, `model version ${v} of ${name} is older than version ${job.contributedFrom}, which this client already contributed from`);
  }
  const previous = job.recent.find((r) => r.roundIndex === i - 1);
  if (previous?.outcome !== undefined && previous.modelVersion !== undefined) {
    const published = previous.outcome === 'ok' ? previous.modelVersion + 1 : previous.modelVersion;
    if (v !== published) {
      throw new AegisError(ErrorCode.ModelRollback, `${roundName(i)} of ${name} names model version ${v}, but ${roundName(i - 1)} (${previous.outcome}) left version ${published}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Merging (restores, and a write that finds entries another process wrote).

const earlierOf = (a: string | undefined, b: string | undefined): string | undefined => (a === undefined ? b : b === undefined ? a : a < b ? a : b);
const maxOf = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined ? b : b === undefined ? a : Math.max(a, b));

function mergeRound(a: RoundEntry, b: RoundEntry): RoundEntry {
  const modelVersion = a.modelVersion ?? b.modelVersion;
  const contributedAt = earlierOf(a.contributedAt, b.contributedAt);
  const outcome = a.outcome ?? b.outcome;
  return {
    roundIndex: a.roundIndex,
    ...(modelVersion !== undefined ? { modelVersion } : {}),
    joinedAt: earlierOf(a.joinedAt, b.joinedAt)!,
    ...(contributedAt !== undefined ? { contributedAt } : {}),
    ...(outcome !== undefined ? { outcome } : {}),
  };
}

function mergeJob(a: JobEntry, b: JobEntry): JobEntry {
  const rounds = new Map<number, RoundEntry>();
  for (const r of [...a.recent, ...b.recent]) {
    const seen = rounds.get(r.roundIndex);
    rounds.set(r.roundIndex, seen ? mergeRound(seen, r) : { ...r });
  }
  const recent = [...rounds.values()].sort((x, y) => (x.joinedAt < y.joinedAt ? -1 : x.joinedAt > y.joinedAt ? 1 : x.roundIndex - y.roundIndex)).slice(-RECENT_ROUNDS);
  const jobId = a.jobId ?? b.jobId;
  const rounds_ = a.rounds ?? b.rounds;
  const expiresAt = a.expiresAt ?? b.expiresAt;
  const contributedFrom = maxOf(a.contributedFrom, b.contributedFrom);
  return {
    manifestSha256: a.manifestSha256,
    ...(jobId !== undefined ? { jobId } : {}),
    kind: a.kind === 'training' || b.kind === 'training' ? 'training' : 'plain',
    ...(rounds_ !== undefined ? { rounds: rounds_ } : {}),
    ...(expiresAt !== undefined ? { expiresAt } : {}),
    joined: addRanges(a.joined, b.joined),
    ...(contributedFrom !== undefined ? { contributedFrom } : {}),
    contributions: Math.max(a.contributions, b.contributions),
    recent,
  };
}

/** The union of two ledgers: nothing either holds is lost (within the bounds). */
export function mergeLedgers(a: LedgerData, b: LedgerData): LedgerData {
  const jobs = new Map<string, JobEntry>();
  for (const j of [...a.jobs, ...b.jobs]) {
    const seen = jobs.get(j.manifestSha256);
    jobs.set(j.manifestSha256, seen ? mergeJob(seen, j) : mergeJob(j, { ...j, recent: [] }));
  }
  const inputs = new Map<string, InputEntry>();
  for (const e of [...a.inputs, ...b.inputs]) {
    const k = `${e.key}:${e.digest}:${e.manifestSha256}:${e.roundIndex}`;
    const seen = inputs.get(k);
    inputs.set(k, seen ? { ...seen, at: earlierOf(seen.at, e.at)! } : { ...e });
  }
  const inputKeys = new Map(a.inputKeys);
  for (const [id, key] of b.inputKeys) if (!inputKeys.has(id)) inputKeys.set(id, key);
  return { jobs: [...jobs.values()], inputs: boundInputs([...inputs.values()]), inputKeys, privacy: mergeCharges(a.privacy, b.privacy) };
}

const boundInputs = (inputs: InputEntry[]): InputEntry[] => inputs.sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : 0)).slice(-MAX_INPUTS);

/** Drops the jobs whose manifest expired more than EXPIRED_JOB_KEPT_MS before `now`. */
export function pruneExpired(jobs: JobEntry[], now: number): JobEntry[] {
  return jobs.filter((j) => j.expiresAt === undefined || Date.parse(j.expiresAt) + EXPIRED_JOB_KEPT_MS > now);
}

// ---------------------------------------------------------------------------------------------
// The ledger.

const roundKey = (manifestSha256: string, roundIndex: number): string => `${manifestSha256}:${roundIndex}`;

export class Ledger implements ContributionLedger {
  private jobs = new Map<string, JobEntry>();
  private inputs: InputEntry[] = [];
  private privacy: PrivacyCharge[] = [];
  /** The privacy charges of joined DP rounds, recorded with their contribution. */
  private readonly pendingCharges = new Map<string, PendingCharge>();
  private inputKeys: Map<string, Uint8Array>;
  /** Input digests of joined rounds, recorded with their contribution. */
  private readonly pending = new Map<string, InputDigest>();
  /** Rounds this ledger joined whose outcome it has not heard yet: only theirs is recorded. */
  private readonly awaitingOutcome = new Set<string>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    data: LedgerData,
    private readonly store?: LedgerStore,
    private readonly clock: () => number = Date.now,
  ) {
    if (data.inputKeys.size === 0) throw new AegisError(ErrorCode.InvalidArgument, 'a ledger needs an input-digest key');
    this.inputKeys = data.inputKeys;
    this.load(data);
  }

  check(claim: RoundClaim): void {
    if (!this.jobs.has(claim.manifestSha256) && this.jobs.size >= MAX_JOBS && pruneExpired([...this.jobs.values()], this.clock()).length >= MAX_JOBS) {
      throw new AegisError(ErrorCode.FailedPrecondition, `the contribution ledger holds ${MAX_JOBS} jobs whose manifests are still valid; this client joins no new job until some expire`);
    }
    checkClaim(this.jobs.get(claim.manifestSha256), claim);
  }

  inputDigest(id: InputId, round: RoundRef, opts: { reuse: boolean }): InputDigest {
    const manifestSha256 = hex(round.manifestHash);
    const [firstId, firstKey] = this.inputKeys.entries().next().value as [string, Uint8Array];
    // The digest under the first key is both checked and recorded: computed once.
    const recorded = inputHmac(firstKey, id);
    if (!opts.reuse) {
      for (const [keyId, key] of this.inputKeys) {
        const d = keyId === firstId ? recorded : inputHmac(key, id);
        const earlier = this.inputs.find((e) => e.key === keyId && e.digest === d && (e.manifestSha256 !== manifestSha256 || e.roundIndex !== round.roundIndex));
        if (earlier) {
          const where = earlier.manifestSha256 === manifestSha256 ? `${roundName(earlier.roundIndex)} of this job` : `${roundName(earlier.roundIndex)} of the job of manifest ${short(earlier.manifestSha256)}`;
          throw new AegisError(ErrorCode.InputReused, `this plain input was already contributed to ${where} (at ${earlier.at}); a coordinator could learn it as the difference of two sums`);
        }
      }
    }
    return { key: firstId, digest: recorded };
  }

  join(claim: RoundClaim, input?: InputDigest): Promise<void> {
    return this.exclusive(async () => {
      this.check(claim);
      const now = new Date(this.clock()).toISOString();
      const seen = this.jobs.get(claim.manifestSha256);
      const job: JobEntry = seen ?? {
        manifestSha256: claim.manifestSha256,
        ...(claim.jobId !== undefined ? { jobId: claim.jobId } : {}),
        kind: claim.kind,
        ...(claim.rounds !== undefined ? { rounds: claim.rounds } : {}),
        ...(claim.expiresAt !== undefined ? { expiresAt: claim.expiresAt } : {}),
        joined: [],
        contributions: 0,
        recent: [],
      };
      job.joined = addRanges(job.joined, [[claim.roundIndex, claim.roundIndex]]);
      job.recent = [...job.recent, { roundIndex: claim.roundIndex, ...(claim.modelVersion !== undefined ? { modelVersion: claim.modelVersion } : {}), joinedAt: now }].slice(-RECENT_ROUNDS);
      this.jobs.set(job.manifestSha256, job);
      const key = roundKey(claim.manifestSha256, claim.roundIndex);
      if (input) this.pending.set(key, input);
      else this.pending.delete(key);
      if (claim.charge) this.pendingCharges.set(key, claim.charge);
      else this.pendingCharges.delete(key);
      this.awaitingOutcome.add(key);
      // A client is in one round at a time; older rounds still waiting never hear back.
      for (const k of this.awaitingOutcome) if (this.awaitingOutcome.size > 16) this.awaitingOutcome.delete(k);
      await this.save();
    });
  }

  contribute(round: RoundRef, opts: { reuse: boolean }): Promise<void> {
    return this.exclusive(async () => {
      const manifestSha256 = hex(round.manifestHash);
      const job = this.jobs.get(manifestSha256);
      const entry = job?.recent.find((r) => r.roundIndex === round.roundIndex);
      if (!job || !entry || !inRanges(job.joined, round.roundIndex)) {
        throw new AegisError(ErrorCode.FailedPrecondition, `${roundName(round.roundIndex)} of the job of manifest ${short(manifestSha256)} was not joined through the ledger; its masked input is not sent`);
      }
      if (entry.contributedAt !== undefined) return; // the same round's input, sent again after a reconnect
      const key = roundKey(manifestSha256, round.roundIndex);
      const input = this.pending.get(key);
      if (input && !opts.reuse) {
        const earlier = this.inputs.find((e) => e.key === input.key && e.digest === input.digest && (e.manifestSha256 !== manifestSha256 || e.roundIndex !== round.roundIndex));
        if (earlier) throw new AegisError(ErrorCode.InputReused, `this plain input was already contributed to ${roundName(earlier.roundIndex)} of the job of manifest ${short(earlier.manifestSha256)}`);
      }
      const charge = this.pendingCharges.get(key);
      const chargeOf = { publisher: charge?.publisher ?? '', manifestSha256, ...(job.jobId !== undefined ? { jobId: job.jobId } : {}), roundIndex: round.roundIndex };
      // The limit again, on what is on disk now: the round is charged before its input leaves.
      if (charge) checkRoundPrivacy(this.privacy, charge.limit, { ...chargeOf, privacy: { dp: true, rdp: charge.rdp } });
      const now = new Date(this.clock()).toISOString();
      if (charge) this.privacy = addCharge(this.privacy, { ...chargeOf, at: now, rdp: [...charge.rdp] });
      entry.contributedAt = now;
      job.contributions++;
      if (entry.modelVersion !== undefined) job.contributedFrom = maxOf(job.contributedFrom, entry.modelVersion);
      if (input) this.inputs = boundInputs([...this.inputs, { ...input, manifestSha256, roundIndex: round.roundIndex, at: now }]);
      this.pending.delete(key);
      this.pendingCharges.delete(key);
      await this.save();
    });
  }

  privacyCharges(): readonly PrivacyCharge[] {
    return this.privacy;
  }

  outcome(round: RoundRef, o: { ok: boolean; poisoningFlagged?: boolean }): Promise<void> {
    return this.exclusive(async () => {
      // Only the outcome of a round this client took part in, heard while in it: not that of a
      // replay it declined, nor a second word on a round (the coordinator takes none back).
      const key = roundKey(hex(round.manifestHash), round.roundIndex);
      if (!this.awaitingOutcome.delete(key)) return;
      const entry = this.jobs.get(hex(round.manifestHash))?.recent.find((r) => r.roundIndex === round.roundIndex);
      if (!entry || entry.outcome !== undefined) return;
      entry.outcome = o.poisoningFlagged ? 'flagged' : o.ok ? 'ok' : 'aborted';
      await this.save();
    });
  }

  view(): LedgerView {
    const inputOf = new Map(this.inputs.map((e) => [roundKey(e.manifestSha256, e.roundIndex), e.digest.slice(0, 12)]));
    return {
      jobs: [...this.jobs.values()].map((j) => ({
        ...j,
        joined: j.joined.map(([a, b]): [number, number] => [a, b]),
        recent: j.recent.map((r) => {
          const input = inputOf.get(roundKey(j.manifestSha256, r.roundIndex));
          return { ...r, ...(input !== undefined ? { input } : {}) };
        }),
      })),
      inputs: this.inputs.length,
    };
  }

  /** What the ledger holds, as its store writes it. */
  data(): LedgerData {
    return { jobs: pruneExpired([...this.jobs.values()], this.clock()), inputs: [...this.inputs], inputKeys: new Map(this.inputKeys), privacy: [...this.privacy] };
  }

  /** Writes through the store (which may merge in what another process wrote), then takes the merge. */
  protected async save(): Promise<void> {
    if (!this.store) return;
    this.load(await this.store.sync(this.data()));
  }

  /** Runs `fn` after every earlier change: one change at a time, in order. */
  protected exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private load(data: LedgerData): void {
    this.jobs = new Map(data.jobs.map((j) => [j.manifestSha256, j]));
    this.inputs = [...data.inputs];
    this.privacy = [...data.privacy];
    for (const [id, key] of data.inputKeys) if (!this.inputKeys.has(id)) this.inputKeys.set(id, key);
  }
}

/** A fresh ledger's data: nothing recorded, a new random input-digest key. */
export function emptyLedgerData(): LedgerData {
  const key = new Uint8Array(randomBytes(32));
  return { jobs: [], inputs: [], inputKeys: new Map([[inputKeyId(key), key]]), privacy: [] };
}

/** A ledger for one process (no data dir): the same rules, forgotten when the process ends. */
export const memoryLedger = (clock?: () => number): Ledger => new Ledger(emptyLedgerData(), undefined, clock);
