/**
 * Prometheus metrics for the coordinator, served on `GET /metrics` (text exposition format).
 *
 * Every metric lives in a registry of its own (never prom-client's global one), so two
 * coordinators in one process — or two tests — never share state. All names carry the `aegis_`
 * prefix; prom-client's default process/Node.js metrics are collected into the same registry
 * with the same prefix (`aegis_process_*`, `aegis_nodejs_*`).
 *
 * Metrics (labels in braces; every label value comes from a fixed vocabulary, anything else is
 * reported as `other`):
 *
 * | metric                                  | type      | labels          | meaning                                                                  |
 * | --------------------------------------- | --------- | --------------- | ------------------------------------------------------------------------ |
 * | `aegis_rounds_started_total`            | counter   | —               | rounds started                                                           |
 * | `aegis_rounds_finished_total`           | counter   | outcome         | rounds finished, by `completed` / `aborted` / `cancelled`                |
 * | `aegis_round_aborts_total`              | counter   | reason, phase   | rounds that ended without a result: `AbortReason` × the phase it was in  |
 * | `aegis_rounds_running`                  | gauge     | —               | rounds started and not yet finished                                      |
 * | `aegis_round_duration_seconds`          | histogram | outcome         | wall time from start to finish of a round                                |
 * | `aegis_phase_duration_seconds`          | histogram | phase           | wall time of a phase, from open to close (10 ms .. 10 min buckets)       |
 * | `aegis_phase_clients`                   | gauge     | phase           | clients that sent the phase's message, in the latest closed phase        |
 * | `aegis_phase_expected_clients`          | gauge     | phase           | clients expected in the latest closed phase                              |
 * | `aegis_dropouts_total`                  | counter   | phase           | clients expected but missing when a phase closed (not those that declined) |
 * | `aegis_round_declines_total`            | counter   | reason          | clients that declined a round (sat it out), by the `ErrorCode` they sent; counted when phase 0 closes |
 * | `aegis_unmask_seconds`                  | histogram | —               | time the coordinator spent reconstructing and removing masks             |
 * | `aegis_clients_suspected_lost`          | gauge     | —               | enrolled, unrevoked clients silent longer than `clients.lost_after`      |
 * | `aegis_clients_flagged_lost_total`      | counter   | —               | times a client was flagged suspected-lost                                |
 * | `aegis_key_rotations_total`             | counter   | kind            | key rotations (`kek`, `kek-emergency`)                                   |
 * | `aegis_key_rotations_total`             | counter   | key, reason     | time-based rotations (shared/keystore/policy.ts): `key` = `RotatedKeyName`, `reason` = `due` |
 * | `aegis_key_age_seconds`                 | gauge     | key             | age of each key's current version at the last check (`RotatedKeyName`)   |
 * | `aegis_redis_up`                        | gauge     | —               | with `--redis`: 1 while Redis answers, 0 while it is unreachable         |
 * | `aegis_redis_disconnects_total`         | counter   | —               | with `--redis`: times the Redis connection was lost                      |
 * | `aegis_dp_epsilon_spent_max`            | gauge     | —               | the largest ε (at its own δ) any DP job known here has spent so far      |
 * | `aegis_dp_epsilon_budget_fraction_max`  | gauge     | —               | the largest fraction ε spent / ε after all its rounds of any DP job here |
 * | `aegis_dp_jobs_running`                 | gauge     | —               | DP jobs still running here                                               |
 * | `aegis_dp_rounds_completed_total`       | counter   | —               | DP rounds whose noisy sum was released (each one charged to its job)     |
 *
 * Label vocabularies: `phase` is one of the five protocol phases of `Phase` (advertise-keys,
 * share-keys, masked-input, consistency-check, unmasking); `reason` is an `AbortReason` value
 * (an `ErrorCode` value for declines); `outcome` is `RoundOutcome`; `kind` is `KeyRotationKind`;
 * each also admits `other`.
 *
 * Why there are no client or job labels (metadata minimisation): secure aggregation hides what
 * each client contributed, and the metadata around a round must not undo that. A client-id label
 * would record, per client, which phases it reached and when it dropped — exactly the
 * participation pattern the protocol's dropout handling keeps between coordinator and survivors
 * — and would hand it to whoever scrapes `/metrics` (often a wider audience than the
 * coordinator's operators) and to a long-retention time-series store. IP addresses are worse
 * still. Job ids are left out too: they are operator-chosen, unbounded strings (unbounded
 * cardinality, and a free-text channel into the metrics backend). So metrics carry only counts,
 * durations, round/phase names and reason codes; per-client and per-job detail stays in the
 * coordinator's own state and logs, under its own access control. The differential privacy
 * metrics follow the same rule: a per-job ε series would be as unbounded as the job ids, so they
 * are maxima over the jobs this process knows (finished ones included, from the job history) —
 * what an alert needs ("some job is past 80% of its budget") — and the job is found with
 * `aegis round list` / `round status`, which show each DP job's ε. Label values are checked
 * against the vocabularies at runtime as well (not only by the types), so nothing
 * user-controlled ever becomes a label value.
 *
 * What is not the coordinator's own lives in shared/metrics/: the label checks (labels.ts), the
 * key rotation vocabulary a client's metrics share (key-rotation.ts), and the `/metrics` server
 * (`serveMetrics`, serve.ts; loopback only unless allowed), which serves these metrics as well.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { isDuration, label } from '../../shared/metrics/labels.js';
import { rotatedKeyLabel, rotationReasonLabel, type RotatedKeyName, type RotationReason } from '../../shared/metrics/key-rotation.js';
import type { MetricsSource } from '../../shared/metrics/serve.js';
import type { RedisHealthSink } from '../queue/redis-health.js';
import { ErrorCode } from '../../shared/errors.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';

/** How a round ended. */
export const RoundOutcome = {
  Completed: 'completed',
  Aborted: 'aborted',
  Cancelled: 'cancelled',
} as const;
export type RoundOutcome = (typeof RoundOutcome)[keyof typeof RoundOutcome];

/** What was rotated (see shared/keystore/rotation.ts). Extend here when another kind lands. */
export const KeyRotationKind = {
  /** `aegis keys rotate`: a new KEK version, DEKs re-wrapped. */
  Kek: 'kek',
  /** `aegis keys rotate --emergency`: every value re-encrypted under fresh DEKs. */
  KekEmergency: 'kek-emergency',
} as const;
export type KeyRotationKind = (typeof KeyRotationKind)[keyof typeof KeyRotationKind];

/** The phases a round spends time in (the `phase` label vocabulary, besides `other`). */
export const METRIC_PHASES: readonly Phase[] = [Phase.AdvertiseKeys, Phase.ShareKeys, Phase.MaskedInput, Phase.ConsistencyCheck, Phase.Unmasking];

/** Every metric this module defines (without prom-client's defaults) and its label names. */
export const METRIC_LABELS: Readonly<Record<string, readonly string[]>> = {
  aegis_rounds_started_total: [],
  aegis_rounds_finished_total: ['outcome'],
  aegis_round_aborts_total: ['reason', 'phase'],
  aegis_rounds_running: [],
  aegis_round_duration_seconds: ['outcome'],
  aegis_phase_duration_seconds: ['phase'],
  aegis_phase_clients: ['phase'],
  aegis_phase_expected_clients: ['phase'],
  aegis_dropouts_total: ['phase'],
  aegis_round_declines_total: ['reason'],
  aegis_unmask_seconds: [],
  aegis_clients_suspected_lost: [],
  aegis_clients_flagged_lost_total: [],
  aegis_key_rotations_total: ['kind', 'key', 'reason'],
  aegis_key_age_seconds: ['key'],
  aegis_redis_up: [],
  aegis_redis_disconnects_total: [],
  aegis_dp_epsilon_spent_max: [],
  aegis_dp_epsilon_budget_fraction_max: [],
  aegis_dp_jobs_running: [],
  aegis_dp_rounds_completed_total: [],
};

/** One DP job's privacy as the DP gauges read it (no job id: the gauges are label-free). */
export interface DpSpending {
  /** ε spent so far (at the job's δ), from the accountant. */
  spent: number;
  /** ε after all the job's rounds, from the accountant. */
  budget: number;
  /** Whether the job still runs rounds. */
  running: boolean;
}

/** Buckets for phase and unmask times: 10 ms .. 10 min. */
const SHORT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
/** Buckets for whole rounds: 100 ms .. 1 h. */
const ROUND_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600];

const PHASES = new Set<string>(METRIC_PHASES);
const REASONS = new Set<string>(Object.values(AbortReason));
const DECLINE_REASONS = new Set<string>(Object.values(ErrorCode));
const OUTCOMES = new Set<string>(Object.values(RoundOutcome));
const KINDS = new Set<string>(Object.values(KeyRotationKind));

/** A client count: a finite number, floored and clamped at 0 (anything else counts as 0). */
const count = (n: unknown): number => (typeof n === 'number' && Number.isFinite(n) && n > 0 ? Math.floor(n) : 0);

export interface PhaseClosed {
  /** The phase that closed. */
  phase: Phase;
  /** Its duration, from open to close. */
  seconds: number;
  /** Clients that sent the phase's message. */
  clients: number;
  /** Clients expected to send it (the survivors of the previous phase). */
  expected: number;
  /** Phase 0: the clients that declined the round instead, by reason code (not dropouts). */
  declines?: Readonly<Record<string, number | undefined>>;
}

export interface RoundFinished {
  outcome: RoundOutcome;
  /** Why a round that did not complete ended; default `cancelled` for a cancelled round, else `other`. */
  reason?: AbortReason;
  /** The phase the round was in when it ended without a result; default `other`. */
  phase?: Phase;
  /** Wall time from start to finish. */
  seconds: number;
}

export interface CoordinatorMetricsOptions {
  /** Collect prom-client's default process/Node.js metrics (prefixed `aegis_`); default true. */
  defaultMetrics?: boolean;
}

/**
 * The coordinator's metrics. The methods never throw: a bad value is mapped to `other` (labels)
 * or ignored (non-finite or negative durations), so metrics can never break a round.
 */
export class CoordinatorMetrics implements MetricsSource, RedisHealthSink {
  /** This instance's own registry. */
  readonly registry: Registry;
  private readonly roundsStarted: Counter;
  private readonly roundsFinished: Counter<'outcome'>;
  private readonly roundAborts: Counter<'reason' | 'phase'>;
  private readonly roundsRunning: Gauge;
  private readonly roundDuration: Histogram<'outcome'>;
  private readonly phaseDuration: Histogram<'phase'>;
  private readonly phaseClients: Gauge<'phase'>;
  private readonly phaseExpected: Gauge<'phase'>;
  private readonly dropouts: Counter<'phase'>;
  private readonly declines: Counter<'reason'>;
  private readonly unmask: Histogram;
  private readonly suspectedLost: Gauge;
  private readonly flaggedLost: Counter;
  private readonly keyRotations: Counter<'kind' | 'key' | 'reason'>;
  private readonly keyAge: Gauge<'key'>;
  private readonly dpRounds: Counter;
  /** Read at every scrape by the DP gauges; none until the coordinator sets it. */
  private dpSource: () => readonly DpSpending[] = () => [];
  private redisUpGauge: Gauge | undefined;
  private redisDisconnects: Counter | undefined;
  private running = 0;

  constructor(opts: CoordinatorMetricsOptions = {}) {
    const registers = [(this.registry = new Registry())];
    this.roundsStarted = new Counter({ name: 'aegis_rounds_started_total', help: 'Rounds started.', registers });
    this.roundsFinished = new Counter({
      name: 'aegis_rounds_finished_total',
      help: 'Rounds finished, by outcome (completed, aborted, cancelled).',
      labelNames: ['outcome'] as const,
      registers,
    });
    this.roundAborts = new Counter({
      name: 'aegis_round_aborts_total',
      help: 'Rounds that ended without a result, by abort reason and the phase the round was in.',
      labelNames: ['reason', 'phase'] as const,
      registers,
    });
    this.roundsRunning = new Gauge({ name: 'aegis_rounds_running', help: 'Rounds started and not yet finished.', registers });
    this.roundDuration = new Histogram({
      name: 'aegis_round_duration_seconds',
      help: 'Wall time of a round from start to finish, by outcome.',
      labelNames: ['outcome'] as const,
      buckets: ROUND_BUCKETS,
      registers,
    });
    this.phaseDuration = new Histogram({
      name: 'aegis_phase_duration_seconds',
      help: 'Wall time of a round phase from open to close.',
      labelNames: ['phase'] as const,
      buckets: SHORT_BUCKETS,
      registers,
    });
    this.phaseClients = new Gauge({
      name: 'aegis_phase_clients',
      help: "Clients that sent the phase's message, in the latest closed phase of that name.",
      labelNames: ['phase'] as const,
      registers,
    });
    this.phaseExpected = new Gauge({
      name: 'aegis_phase_expected_clients',
      help: 'Clients expected in the latest closed phase of that name.',
      labelNames: ['phase'] as const,
      registers,
    });
    this.dropouts = new Counter({
      name: 'aegis_dropouts_total',
      help: 'Clients expected but missing when a phase closed.',
      labelNames: ['phase'] as const,
      registers,
    });
    this.declines = new Counter({
      name: 'aegis_round_declines_total',
      help: 'Clients that declined a round (sat it out), by the reason code they sent; counted when phase 0 closes.',
      labelNames: ['reason'] as const,
      registers,
    });
    this.unmask = new Histogram({
      name: 'aegis_unmask_seconds',
      help: 'Time spent reconstructing and removing the masks of a round.',
      buckets: SHORT_BUCKETS,
      registers,
    });
    this.keyRotations = new Counter({
      name: 'aegis_key_rotations_total',
      help: 'Key rotations, by kind (keys rotate) or by key and reason (time-based policy).',
      labelNames: ['kind', 'key', 'reason'] as const,
      registers,
    });
    this.keyAge = new Gauge({ name: 'aegis_key_age_seconds', help: "Age of each key's current version at the last rotation check.", labelNames: ['key'] as const, registers });
    this.suspectedLost = new Gauge({ name: 'aegis_clients_suspected_lost', help: 'Enrolled, unrevoked clients silent longer than clients.lost_after.', registers });
    this.flaggedLost = new Counter({ name: 'aegis_clients_flagged_lost_total', help: 'Times a client was flagged suspected-lost.', registers });
    this.dpRounds = new Counter({ name: 'aegis_dp_rounds_completed_total', help: 'DP rounds whose noisy sum was released (each charged to its job).', registers });
    this.dpRounds.inc(0);
    // The DP gauges are read from the jobs at scrape time: they are always the accountant's.
    const dp = (): readonly DpSpending[] => {
      try {
        return this.dpSource().filter((d) => Number.isFinite(d.spent) && Number.isFinite(d.budget) && d.spent >= 0 && d.budget > 0);
      } catch {
        return [];
      }
    };
    new Gauge({
      name: 'aegis_dp_epsilon_spent_max',
      help: 'The largest epsilon (at its own delta) any DP job known here has spent so far, from the accountant.',
      registers,
      collect() {
        this.set(dp().reduce((m, d) => Math.max(m, d.spent), 0));
      },
    });
    new Gauge({
      name: 'aegis_dp_epsilon_budget_fraction_max',
      help: 'The largest fraction of its budget (epsilon after all its rounds) any DP job known here has spent.',
      registers,
      collect() {
        this.set(dp().reduce((m, d) => Math.max(m, d.spent / d.budget), 0));
      },
    });
    new Gauge({
      name: 'aegis_dp_jobs_running',
      help: 'DP jobs still running here.',
      registers,
      collect() {
        this.set(dp().filter((d) => d.running).length);
      },
    });
    this.suspectedLost.set(0);
    // Known series start at 0, so rate() and absent-alerts work before the first event.
    for (const outcome of OUTCOMES) this.roundsFinished.inc({ outcome }, 0);
    for (const phase of PHASES) this.dropouts.inc({ phase }, 0);
    this.roundsRunning.set(0);
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'aegis_' });
  }

  /** The exposition's content type (text/plain; version=0.0.4). */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** A round started. */
  roundStarted(): void {
    this.roundsStarted.inc();
    this.running += 1;
    this.roundsRunning.set(this.running);
  }

  /**
   * A phase closed: its duration, how many of the expected clients sent its message, and (phase
   * 0) how many declined, by reason. A client that declined is not a dropout.
   */
  phaseClosed(p: PhaseClosed): void {
    const phase = label(PHASES, p.phase);
    const clients = count(p.clients);
    const expected = count(p.expected);
    let declined = 0;
    for (const [reason, n] of Object.entries(p.declines ?? {})) {
      const c = count(n);
      if (c === 0) continue;
      this.declines.inc({ reason: label(DECLINE_REASONS, reason) }, c);
      declined += c;
    }
    if (isDuration(p.seconds)) this.phaseDuration.observe({ phase }, p.seconds);
    this.phaseClients.set({ phase }, clients);
    this.phaseExpected.set({ phase }, expected);
    if (expected > clients + declined) this.dropouts.inc({ phase }, expected - clients - declined);
  }

  /** A round finished; a round that did not complete also counts under its reason and phase. */
  roundFinished(r: RoundFinished): void {
    const outcome = label(OUTCOMES, r.outcome);
    this.roundsFinished.inc({ outcome });
    if (isDuration(r.seconds)) this.roundDuration.observe({ outcome }, r.seconds);
    if (outcome !== RoundOutcome.Completed) {
      const reason = r.reason === undefined && outcome === RoundOutcome.Cancelled ? AbortReason.Cancelled : label(REASONS, r.reason);
      this.roundAborts.inc({ reason, phase: label(PHASES, r.phase) });
    }
    this.running = Math.max(0, this.running - 1);
    this.roundsRunning.set(this.running);
  }

  /** Where the DP gauges read each DP job's ε spent and budget (the coordinator's jobs). */
  trackDp(source: () => readonly DpSpending[]): void {
    this.dpSource = source;
  }

  /** A DP round completed: its noisy sum was released. */
  dpRoundCompleted(): void {
    this.dpRounds.inc();
  }

  /**
   * Whether Redis answers (RedisHealth). The Redis series appear with the first call, so a
   * coordinator without `--redis` has none.
   */
  redisUp(up: boolean): void {
    this.redisSeries().up.set(up ? 1 : 0);
  }

  /** The Redis connection was lost. */
  redisDisconnected(): void {
    this.redisSeries().disconnects.inc();
  }

  private redisSeries(): { up: Gauge; disconnects: Counter } {
    const registers = [this.registry];
    this.redisUpGauge ??= new Gauge({ name: 'aegis_redis_up', help: 'Whether Redis answers (1) or is unreachable (0).', registers });
    if (!this.redisDisconnects) {
      this.redisDisconnects = new Counter({ name: 'aegis_redis_disconnects_total', help: 'Times the Redis connection was lost.', registers });
      this.redisDisconnects.inc(0);
    }
    return { up: this.redisUpGauge, disconnects: this.redisDisconnects };
  }

  /** `n` clients are suspected lost now. */
  clientsSuspectedLost(n: number): void {
    this.suspectedLost.set(count(n));
  }

  /** A client was flagged suspected-lost. */
  clientFlaggedLost(): void {
    this.flaggedLost.inc();
  }

  /** The unmasking step of a round took `seconds`. */
  unmaskTime(seconds: number): void {
    if (isDuration(seconds)) this.unmask.observe(seconds);
  }

  /** A key of `kind` was rotated. */
  keyRotated(kind: KeyRotationKind): void {
    this.keyRotations.inc({ kind: label(KINDS, kind) });
  }

  /** The rotation policy rotated `key` (reason `due`). */
  keyRotatedBy(key: RotatedKeyName, reason: RotationReason): void {
    this.keyRotations.inc({ key: rotatedKeyLabel(key), reason: rotationReasonLabel(reason) });
  }

  /** The age of `key`'s current version, in seconds. */
  keyAgeSeconds(key: RotatedKeyName, seconds: number): void {
    if (isDuration(seconds)) this.keyAge.set({ key: rotatedKeyLabel(key) }, seconds);
  }
}
