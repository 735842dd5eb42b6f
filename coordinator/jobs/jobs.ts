/**
 * The jobs: the one owner of every job this coordinator runs or follows and of their rounds —
 * launching (here or through the launch queue), starting rounds, routing clients' messages to
 * the round they belong to, delivering rounds' messages to the cohort, the training loop,
 * cancellation, and retention of finished rounds. Status and listings across front ends are in
 * ./front-ends.ts, the reports themselves in ./views.ts. With a data dir and no Redis, every change
 * it reports is saved to the job history (./job-history.ts) before it can be read, and read back
 * when the coordinator starts again; a training job that was running resumes.
 */
import { fromBinary } from '@bufbuild/protobuf';
import type { Logger } from 'pino';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { isTrainingManifest, parseManifest } from '../../shared/protocol/manifest.js';
import { sharedContentOf, type ClientMessage, type ServerEvent, type ServerMessage } from '../../shared/protocol/messages.js';
import { sameRound } from '../../shared/protocol/session.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { fromEventEnvelope, toEventEnvelope } from '../../shared/rpc/convert.js';
import type { ClientRegistry } from '../clients/client-registry.js';
import type { LaunchTask } from '../queue/launch-queue.js';
import type { RedisRoundInfo } from '../queue/round-store.js';
import { GroupedRoundHost } from '../hosts/grouped-host.js';
import type { RoundHostLike } from '../hosts/types.js';
import type { Mailboxes } from '../service/mailbox.js';
import { DEFAULT_ROUND_RETENTION_MS, retiredHost, withoutClients } from '../hosts/retired-host.js';
import type { RoundOutcome } from '../round/index.js';
import { UploadGate } from '../service/upload-gate.js';
import { withDeclineDetail } from './decline-detail.js';
import { queueLaunch, runQueuedLaunch } from './queued-launch.js';
import { JobHistory, modelDirName } from './job-history.js';
import { verifiedManifestBytes } from './manifest-check.js';
import { DEFAULT_UPLOAD_BUDGET_BYTES, openRound } from './round-start.js';
import { advanceTraining, announcedAfterValidation, continueTraining, measureModel, type TrainingLoopContext } from './training-loop.js';
import { checkedByEvaluator } from './evaluator.js';
import { ModelStore, newTrainingProgress, sha256, weightsOf, type ModelVersionRecord } from './training.js';
import { newJob, type Job, type JobsOptions, type LaunchResult, type RoundRecord } from './types.js';
import { jobStateOf, phaseOfRound, roundOf, JOB_STATE_NAMES } from './views.js';
import { roundName } from '../../shared/round-number.js';

/** A round on Redis another front end started, followed by this one. */
type RemoteRound = RoundRecord & { jobId: string };

/** A Send's room besides its vectors and per-neighbour lists (ids, signatures, the envelope). */
const SEND_BASE_BYTES = 64 * 1024;
/** Room per neighbour of a round in a Send (an encrypted share pair or an unmask answer, with the peer's id). */
const SEND_PER_NEIGHBOUR_BYTES = 1024;

export class Jobs {
  private readonly jobs = new Map<string, Job>();
  /** Rounds on Redis another front end started, that this one serves too (with `redisRounds`). */
  private readonly remoteRounds = new Map<string, RemoteRound>();
  /** Training jobs an operator cancelled, with when. */
  private readonly cancelledJobs = new Map<string, number>();
  private readonly opts: JobsOptions;
  private readonly clients: ClientRegistry;
  private readonly mailboxes: Mailboxes<pb.ServerEnvelope>;
  private readonly connectedClients: () => string[];
  private readonly clock: () => number;
  private readonly log: Logger | undefined;
  private closing = false;
  /** Where jobs are kept across restarts (a data dir without Redis). */
  private readonly history: JobHistory | undefined;
  /** Called when a round of this process ends (the job directory publishes then). */
  onRoundEnded: () => void = () => undefined;

  constructor(opts: JobsOptions, deps: { clients: ClientRegistry; mailboxes: Mailboxes<pb.ServerEnvelope>; connectedClients: () => string[]; clock: () => number }) {
    this.opts = opts;
    this.clients = deps.clients;
    this.mailboxes = deps.mailboxes;
    this.connectedClients = deps.connectedClients;
    this.clock = deps.clock;
    this.log = opts.log;
    if (opts.dataDir !== undefined && !opts.redisRounds && !opts.launchQueue && !opts.jobDirectory) this.history = JobHistory.open(opts.dataDir);
    const shared = opts.redisRounds;
    if (shared) {
      shared.onNewRound = (info) =>
        void this.attachRemoteRound(info).catch((err: unknown) => this.log?.warn({ job: info.jobId, round: info.index, code: isAegisError(err) ? err.code : 'internal' }, 'could not follow a shared round'));
    }
  }

  /** A job of this process, if any. */
  get(jobId: string): Job | undefined {
    return this.jobs.get(jobId);
  }

  /** Every job of this process, oldest first. */
  all(): Job[] {
    return [...this.jobs.values()];
  }

  /** True once an operator cancelled this training job. */
  isCancelled(jobId: string): boolean {
    return this.cancelledJobs.has(jobId);
  }

  // -------------------------------------------------------------------------------------------
  // Launching.

  /**
   * Launches a job. A plain job runs one round per launch (its next one). A training job
   * (manifest with `model` and `training`) is launched once with its initial weights, whose
   * SHA-256 must match the manifest; the coordinator then runs its rounds one after another,
   * applying each round's weighted mean update to the global model (FedAvg).
   *
   * A round waits up to `gatherMs` for a full cohort of connected clients, invites
   * min(cohort, connected) of them (at least `minimumGroupSize`: more than t, 3 or more, and more
   * than half the group size when the manifest names one), and starts its phase clock.
   */
  async launch(manifestJsonIn: Uint8Array, opts: { gatherMs?: number; initialWeights?: Uint8Array; signedManifest?: Uint8Array; roundIndex?: number } = {}): Promise<LaunchResult> {
    const { manifestJson, signer } = await verifiedManifestBytes(this.opts.registryDir, manifestJsonIn, opts.signedManifest, new Date(this.clock()));
    const signedBy = signer ? { signer } : {};
    const { manifest, hash } = parseManifest(manifestJson, new Date(this.clock()));
    const current = this.jobs.get(manifest.jobId);
    const existing = current && Buffer.compare(Buffer.from(current.manifestHash), Buffer.from(hash)) === 0 ? current : undefined;
    // Another manifest under a known job id: a higher revision, once the job ended, starts anew.
    if (current && !existing) {
      const state = jobStateOf(current, this.isCancelled(current.jobId));
      if (state === admin.JobState.RUNNING) throw new AegisError(ErrorCode.AlreadyExists, `job '${manifest.jobId}' runs another manifest (revision ${current.manifest.revision}); cancel it or wait for its end first`);
      if (manifest.revision <= current.manifest.revision) {
        throw new AegisError(ErrorCode.AlreadyExists, `job '${manifest.jobId}' ran revision ${current.manifest.revision} already; to launch it again, publish the manifest with a higher revision`);
      }
    }
    const gatherMs = Math.min(opts.gatherMs ?? 0, 3_600_000);
    if (isTrainingManifest(manifest)) {
      if (existing) return this.relaunchTraining(existing, gatherMs, opts.initialWeights);
      if (!opts.initialWeights || opts.initialWeights.length === 0) throw new AegisError(ErrorCode.InvalidArgument, 'a training job needs its initial weights (aegis round launch --weights FILE)');
      const weights = weightsOf(opts.initialWeights, manifest.round.dim);
      const dataset = manifest.validation?.dataset;
      if (dataset !== undefined && !this.opts.validationSets?.[dataset]) {
        throw new AegisError(ErrorCode.NotFound, `this coordinator has no validation set '${dataset}' (coordinator start --validation-data ${dataset}=FILE.jsonl)`);
      }
      // tfjs cannot run a safetensors model: without an evaluator every round's model would be held back unchecked.
      if (dataset !== undefined && checkedByEvaluator(manifest) && !this.opts.evaluator) {
        throw new AegisError(ErrorCode.FailedPrecondition, `job '${manifest.jobId}' has a safetensors model checked on validation set '${dataset}': this coordinator needs an evaluator for it (coordinator start --evaluator-cmd CMD)`);
      }
      if (Buffer.from(sha256(opts.initialWeights)).toString('hex') !== manifest.model.initialWeightsSha256) {
        throw new AegisError(ErrorCode.HashMismatch, "the initial weights do not match the manifest's model.initialWeightsSha256");
      }
      const models = new ModelStore(manifest.jobId, this.clock, modelDirName(manifest.jobId, manifest.revision));
      models.add(weights, { clients: 0, totalWeight: 0 });
      const job: Job = { ...newJob(manifest, manifestJson, hash, opts.signedManifest), ...signedBy, training: newTrainingProgress(models, gatherMs) };
      const started = await this.startRound(job, gatherMs);
      // With a validation set, version 0 is measured too (the dashboard's chart starts at round 0).
      if (dataset !== undefined) void measureModel(this.opts.validationSets, job, models.latest, this.opts.evaluator).catch(() => undefined);
      // Only a job that started is written out: a refused launch leaves nothing behind.
      if (this.opts.dataDir !== undefined) models.persistTo(this.opts.dataDir);
      return started;
    }
    const last = existing?.rounds[existing.rounds.length - 1];
    if (last && !last.outcome) throw new AegisError(ErrorCode.WrongPhase, `${roundName(last.index)} of job '${manifest.jobId}' is still running`);
    // A queued launch names its round (the launch queue numbers a job's rounds across processes).
    const index = opts.roundIndex ?? existing?.rounds.length ?? 0;
    if (index >= manifest.rounds) throw new AegisError(ErrorCode.WrongPhase, `job '${manifest.jobId}' has run all its ${manifest.rounds} rounds`);
    if (existing?.rounds.some((r) => r.index === index)) throw new AegisError(ErrorCode.AlreadyExists, `${roundName(index)} of job '${manifest.jobId}' has run here already`);
    const job: Job = existing ?? { ...newJob(manifest, manifestJson, hash, opts.signedManifest), ...signedBy };
    return this.startRound(job, gatherMs, 0, index);
  }

  /**
   * A training job launched again: one that failed (not one an operator cancelled) runs on from
   * where it stopped — its latest model version, its next round — e.g. once the clients that held
   * it up for approval approved it. Initial weights, if given, must still be the manifest's. A job
   * still running, completed or cancelled is `already-exists`.
   */
  private async relaunchTraining(job: Job, gatherMs: number, initialWeights: Uint8Array | undefined): Promise<LaunchResult> {
    const t = job.training;
    if (!t || t.state !== 'failed' || this.isCancelled(job.jobId) || !job.rounds.every((r) => r.outcome)) {
      throw new AegisError(ErrorCode.AlreadyExists, `training job '${job.jobId}' was launched already; the coordinator runs its rounds (aegis round status ${job.jobId})`);
    }
    if (job.rounds.length >= job.manifest.rounds) {
      throw new AegisError(ErrorCode.FailedPrecondition, `training job '${job.jobId}' has used all ${job.manifest.rounds} rounds its manifest allows; publish a new revision to train on`);
    }
    if (initialWeights && initialWeights.length > 0 && Buffer.from(sha256(initialWeights)).toString('hex') !== job.manifest.model?.initialWeightsSha256) {
      throw new AegisError(ErrorCode.HashMismatch, "the initial weights do not match the manifest's model.initialWeightsSha256");
    }
    const fresh = newTrainingProgress(t.models, gatherMs);
    Object.assign(t, { state: fresh.state, detail: '', abortedInARow: 0, gatherMs, finished: fresh.finished, settle: fresh.settle });
    this.log?.info({ job: job.jobId, version: t.models.latest.version, round: job.rounds.length }, 'training job launched again');
    try {
      return await this.startRound(job, gatherMs);
    } catch (err) {
      t.state = 'failed';
      t.detail = `the next round could not start: ${isAegisError(err) ? err.message : 'internal error'}`;
      t.settle('failed');
      throw err;
    }
  }

  /** With a launch queue (`--redis`): checks, then queues the launch (./queued-launch.ts); without one, launches here. */
  async requestLaunch(manifestJsonIn: Uint8Array, opts: { gatherMs?: number; initialWeights?: Uint8Array; signedManifest?: Uint8Array } = {}): Promise<LaunchResult & { queued?: string }> {
    if (!this.opts.launchQueue) return this.launch(manifestJsonIn, opts);
    return queueLaunch(this.opts.launchQueue, { ...this.opts, clock: this.clock }, manifestJsonIn, opts);
  }

  /** Runs one launch taken from the queue and resolves when it has ended (./queued-launch.ts). */
  async runQueuedLaunch(task: LaunchTask): Promise<{ ok: boolean; state: string; survivors?: number }> {
    return runQueuedLaunch(this, task, this.log);
  }

  /**
   * Gathers a cohort and starts the job's next round. The job is registered once its first
   * round starts (a launch refused for too few clients leaves nothing behind).
   */
  private async startRound(job: Job, gatherMs: number, minimumWaitMs = 0, roundIndex?: number): Promise<LaunchResult> {
    const ctx = { opts: this.opts, clients: this.clients, connectedClients: this.connectedClients, clock: this.clock, closing: () => this.closing };
    const record = await openRound(ctx, job, gatherMs, minimumWaitMs, roundIndex, () => {
      // A new revision takes the place of the ended job of the same id (its rows stay in the history).
      if (this.jobs.get(job.jobId) !== job) {
        // Listed by its new launch (the history reads jobs back in launch order).
        this.jobs.delete(job.jobId);
        this.jobs.set(job.jobId, job);
        this.cancelledJobs.delete(job.jobId);
      }
    });
    job.rounds.push(record);
    this.save(job);
    this.wireRound(record, 'all');
    void record.host.outcome.then((o) => this.finishRound(job, record, o));
    return { jobId: job.jobId, manifestHash: job.manifestHash, roundIndex: record.index, cohort: record.cohort };
  }

  private finishRound(job: Job, r: RoundRecord, outcome: RoundOutcome): void {
    // An aborted round's detail says who declined, by reason, and what clients awaiting approval need.
    const o = withDeclineDetail(outcome, { jobId: job.jobId, manifestSha256: Buffer.from(job.manifestHash).toString('hex'), invited: r.cohort.length });
    r.outcome = o;
    r.endedAt = this.clock();
    setImmediate(() => this.onRoundEnded());
    const seconds = (r.endedAt - r.startedAt) / 1000;
    if (o.ok && job.manifest.dp) this.opts.metrics?.dpRoundCompleted();
    if (o.ok) this.opts.metrics?.roundFinished({ outcome: 'completed', seconds });
    else this.opts.metrics?.roundFinished({ outcome: o.reason === 'cancelled' ? 'cancelled' : 'aborted', ...(o.reason === 'cancelled' ? {} : { reason: o.reason }), phase: o.at, seconds });
    // A training round checked on a validation set is announced once the check has run.
    if (!(o.ok && announcedAfterValidation(job))) this.announceOutcome(r, o);
    if (o.ok) this.log?.info({ job: job.jobId, round: r.index, survivors: o.survivors.length, ms: this.clock() - r.startedAt }, 'round completed');
    else this.log?.warn({ job: job.jobId, round: r.index, reason: o.reason, at: o.at }, 'round aborted');
    const t = job.training;
    // A training round is saved with the model version it made (or the job's end), not before.
    if (!t) return this.save(job);
    void advanceTraining(this.trainingContext(t.gatherMs), job, t, r, o).then(() => this.save(job));
  }

  private trainingContext(gatherMs: number): TrainingLoopContext {
    return {
      ...(this.opts.log ? { log: this.opts.log } : {}),
      ...(this.opts.validationSets ? { validationSets: this.opts.validationSets } : {}),
      ...(this.opts.evaluator ? { evaluator: this.opts.evaluator } : {}),
      announce: (round: RoundRecord, ev: ServerEvent) => this.announce(round, ev),
      // Clients that dropped out may be reconnecting: wait for the threshold up to the advertise
      // deadline. The model version the last round made is saved before the next round gathers.
      startNextRound: (j: Job) => {
        this.save(j);
        this.opts.onBetweenRounds?.(j.jobId, j.rounds.length);
        return this.startRound(j, gatherMs, j.manifest.deadlines.advertiseMs);
      },
      closing: () => this.closing,
    };
  }

  // -------------------------------------------------------------------------------------------
  // The job history.

  /** Writes a job to the job history (with a data dir and no Redis); a failed write is logged, the job goes on. */
  private save(job: Job): void {
    if (!this.history) return;
    try {
      // What the history now holds of a finished round need not stay in memory as well.
      for (const r of this.history.save(job, this.cancelledJobs.get(job.jobId))) if (r.outcome) this.history.release(job, r);
      this.history.releaseModels(job);
    } catch (err) {
      this.log?.error({ job: job.jobId, code: (err as NodeJS.ErrnoException).code ?? 'io' }, 'could not write the job history');
    }
  }

  /**
   * Reads the job history back (at start, before any call is taken): every job's latest
   * revision answers status, list, result and model queries as before. A round that was running
   * when the previous process stopped is recorded as aborted (`interrupted`). Returns the
   * training jobs that were running, for `resumeTraining` once clients can connect.
   */
  restoreHistory(): Job[] {
    if (!this.history) return [];
    const resume: Job[] = [];
    for (const { job, cancelledAt, interrupted } of this.history.load(this.opts.dataDir!, this.clock)) {
      if (this.jobs.has(job.jobId)) continue;
      this.jobs.set(job.jobId, job);
      if (cancelledAt !== undefined) this.cancelledJobs.set(job.jobId, cancelledAt);
      const t = job.training;
      if (interrupted.length > 0) this.log?.warn({ job: job.jobId, rounds: interrupted }, 'rounds interrupted by the previous coordinator process recorded as aborted');
      if (t?.state === 'running') {
        // An interrupted round counts as an aborted one: its index is used, its model unchanged.
        t.aborted += interrupted.length;
        t.abortedInARow += interrupted.length;
        resume.push(job);
      }
      this.save(job);
    }
    return resume;
  }

  /**
   * Resumes training jobs the previous coordinator process was running: from the latest model
   * version the history holds, with the job's next round index (an interrupted round's index is
   * not used again), waiting up to the job's gather time for a full cohort of reconnecting clients.
   */
  resumeTraining(jobs: Job[]): void {
    for (const job of jobs) {
      const t = job.training!;
      const maxAborted = job.manifest.training?.maxAbortedRounds ?? 3;
      this.log?.info({ job: job.jobId, version: t.models.latest.version, round: job.rounds.length }, 'training job resumed after a restart');
      if (t.abortedInARow > maxAborted) {
        t.state = 'failed';
        t.detail = `${t.abortedInARow} rounds in a row aborted (last: interrupted)`;
        t.settle('failed');
        this.save(job);
        continue;
      }
      void continueTraining(this.trainingContext(t.gatherMs), job, t).then(() => this.save(job));
    }
  }

  // -------------------------------------------------------------------------------------------
  // Clients' messages and the cohort's deliveries.

  /** The running rounds whose cohort has this client (this process's and followed ones). */
  activeRoundsOf(clientId: string): RoundRecord[] {
    const out: RoundRecord[] = [];
    for (const job of this.jobs.values()) {
      const r = job.rounds[job.rounds.length - 1];
      if (r && !r.outcome && r.cohort.includes(clientId)) out.push(r);
    }
    for (const r of this.remoteRounds.values()) if (!r.outcome && r.cohort.includes(clientId)) out.push(r);
    return out;
  }

  /**
   * Routes one authenticated message to the round it belongs to and returns that round's phase.
   * With several rounds running for this client, the first that does not answer
   * session-mismatch takes it.
   */
  async submit(clientId: string, msg: ClientMessage): Promise<Phase> {
    const rounds = this.activeRoundsOf(clientId);
    if (rounds.length === 0) throw new AegisError(ErrorCode.WrongPhase, 'no round is running for this client');
    let last: unknown;
    let noSlot: AegisError | undefined;
    for (const r of rounds) {
      // Phase 0's answers (keys, or a decline) name their round; later messages their session.
      if ((msg.type === 'advertise-keys' || msg.type === 'decline') && !sameRound(msg.round, r.ref)) {
        last = new AegisError(ErrorCode.SessionMismatch, 'the message names another round');
        continue;
      }
      // A masked input is taken only with an upload slot of its round (the back-pressure that
      // keeps the coordinator's memory O(m)); a message naming another client is left to the
      // round, which refuses it as unknown-sender whatever else is wrong with it.
      if (msg.type === 'masked-input' && msg.clientId === clientId && r.host.phase === Phase.MaskedInput && !r.gate.holds(clientId)) {
        noSlot = new AegisError(ErrorCode.UploadSlotRequired, 'a masked input needs an upload slot first (SecAgg.AcquireUpload)');
        continue;
      }
      try {
        await r.host.submit(clientId, msg);
        if (msg.type === 'masked-input') r.gate.release(clientId);
        return r.host.phase;
      } catch (err) {
        if (msg.type === 'masked-input') r.gate.release(clientId);
        if (isAegisError(err, ErrorCode.SessionMismatch) && rounds.length > 1) {
          last = err;
          continue;
        }
        this.log?.info({ client: clientId, type: msg.type, code: isAegisError(err) ? err.code : 'internal' }, 'message refused');
        throw err;
      }
    }
    if (noSlot) this.log?.info({ client: clientId, type: msg.type, code: noSlot.code }, 'message refused');
    throw noSlot ?? last;
  }

  /**
   * The largest SecAgg.Send this client may make now, bytes: 64 KiB plus 1 KiB per neighbour of
   * its running rounds (shares and unmask answers grow with the neighbours), and a whole masked
   * vector (4(m+1) bytes) while it holds an upload slot of a round taking masked inputs.
   */
  sendLimitOf(clientId: string): number {
    let limit = SEND_BASE_BYTES;
    for (const r of this.activeRoundsOf(clientId)) {
      const start = r.startOf.get(clientId) ?? r.startEnvelope;
      const params = start.message.case === 'roundStart' ? start.message.value.parameters : undefined;
      if (!params) continue;
      limit = Math.max(limit, SEND_BASE_BYTES + SEND_PER_NEIGHBOUR_BYTES * Math.max(params.neighbors, params.cohort));
      if (r.host.phase === Phase.MaskedInput && r.gate.holds(clientId)) limit = Math.max(limit, SEND_BASE_BYTES + 4 * (params.dim + 1));
    }
    return limit;
  }

  /** Follows a round on Redis another front end started: its cohort members connected here take part through this process. */
  private async attachRemoteRound(info: RedisRoundInfo): Promise<void> {
    const shared = this.opts.redisRounds!;
    const id = `${info.jobId}.r${info.index}`;
    if (this.remoteRounds.has(id) || this.jobs.get(info.jobId)?.rounds.some((r) => r.index === info.index)) return;
    const hosts = await Promise.all(info.groups.map((k) => shared.host(k)));
    const startEnvelopes = info.starts.map((b) => fromBinary(pb.ServerEnvelopeSchema, new Uint8Array(Buffer.from(b, 'base64'))));
    const startOf = new Map<string, pb.ServerEnvelope>();
    hosts.forEach((h, i) => h.meta.cohort.forEach((cid) => startOf.set(cid, startEnvelopes[i]!)));
    const cohort = hosts.flatMap((h) => h.meta.cohort).sort();
    const host: RoundHostLike = hosts.length === 1 ? hosts[0]! : new GroupedRoundHost(hosts.map((h) => ({ members: h.meta.cohort, host: h })));
    const start = fromEventEnvelope(startEnvelopes[0]!);
    const dim = start.type === 'round-start' ? start.params.dim : 0;
    const record: RemoteRound = {
      jobId: info.jobId,
      gate: UploadGate.forDim(dim, this.opts.uploadBudgetBytes ?? DEFAULT_UPLOAD_BUDGET_BYTES),
      startEnvelope: startEnvelopes[0]!,
      startOf,
      index: info.index,
      ref: { manifestHash: new Uint8Array(Buffer.from(info.manifestHash, 'hex')), roundIndex: info.index },
      host,
      cohort,
      startedAt: info.createdAt,
    };
    this.remoteRounds.set(id, record);
    this.wireRound(record, hosts[0]!.phase === Phase.AdvertiseKeys ? 'connected' : 'none');
    this.log?.info({ job: info.jobId, round: info.index, groups: hosts.length, frontEnd: shared.frontEndId }, 'following a round another front end started');
    void host.outcome.then((outcome) => {
      const o = withDeclineDetail(outcome, { jobId: info.jobId, manifestSha256: info.manifestHash, invited: cohort.length });
      record.outcome = o;
      record.endedAt = this.clock();
      record.gate.open();
      this.announceOutcome(record, o);
      for (const k of info.groups) shared.release(k);
    });
  }

  /**
   * Delivers a round's messages to its members' mailboxes (the advertise broadcast with each
   * member's certificate), and the round start: to every member (`all`), or — a front end
   * following another's round — only to members connected here (`connected`; the others get it
   * from theirs, or when they connect), or to nobody (`none`).
   */
  private wireRound(record: RoundRecord, sendStart: 'all' | 'connected' | 'none'): void {
    const { host, cohort, startOf } = record;
    // The advertise broadcast carries each member's certificate: clients take identity keys from
    // certificates they check against their pinned CA, not from the coordinator's word.
    const certificates = new Map(cohort.map((id) => [id, new Uint8Array(Buffer.from(this.clients.get(id)?.certificate ?? '', 'base64'))]));
    const withCertificates = (m: ServerMessage): ServerMessage =>
      m.type === 'advertise-broadcast' ? { ...m, entries: m.entries.map((e) => ({ ...e, certificate: certificates.get(e.clientId) ?? new Uint8Array(0) })) } : m;
    const envelopes = new WeakMap<object, pb.ServerEnvelope>();
    for (const id of cohort) {
      host.subscribe(id, (m) => {
        // A broadcast's envelope is built once per round, not once per member (and the Subscribe
        // streams' serializer encodes one envelope object once).
        const key = sharedContentOf(m);
        let env = envelopes.get(key);
        if (!env) envelopes.set(key, (env = toEventEnvelope(withCertificates(m))));
        this.opts.tap?.(id, m.type);
        this.mailboxes.push(id, env);
      });
    }
    if (sendStart === 'none') return;
    for (const id of cohort) {
      if (sendStart === 'connected' && !this.mailboxes.of(id).attached) continue;
      this.opts.tap?.(id, 'round-start');
      this.mailboxes.push(id, startOf.get(id)!);
    }
  }

  /** Tells the round's cohort how it ended. */
  private announceOutcome(r: RoundRecord, o: RoundOutcome): void {
    this.announce(r, o.ok ? { type: 'round-outcome', round: r.ref, ok: true } : { type: 'round-outcome', round: r.ref, ok: false, reason: o.reason });
  }

  private announce(r: RoundRecord, ev: ServerEvent): void {
    const env = toEventEnvelope(ev);
    for (const id of r.cohort) {
      this.opts.tap?.(id, 'round-outcome');
      this.mailboxes.push(id, env);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Queries.

  /** A round of this process's jobs (the latest when `roundIndex` is undefined); `not-found` otherwise. */
  roundOf(jobId: string, roundIndex?: number): RoundRecord {
    return roundOf(this.jobs.get(jobId), jobId, roundIndex);
  }

  /** Waits for a round's outcome (tests, simulate). */
  async outcomeOf(jobId: string, roundIndex: number): Promise<RoundOutcome> {
    const remote = this.remoteRounds.get(`${jobId}.r${roundIndex}`);
    if (remote && !this.jobs.get(jobId)?.rounds.some((r) => r.index === roundIndex)) return remote.host.outcome;
    return this.roundOf(jobId, roundIndex).host.outcome;
  }

  /** The training job whose manifest has this hash, if it runs here. */
  trainingJobByHash(manifestHash: Uint8Array): Job | undefined {
    return [...this.jobs.values()].find((j) => j.training && Buffer.from(j.manifestHash).equals(Buffer.from(manifestHash)));
  }

  /** A training job (`not-found` for an unknown or plain one). */
  private trainingJob(jobId: string): Job & { training: NonNullable<Job['training']> } {
    const job = this.jobs.get(jobId);
    if (!job?.training) throw new AegisError(ErrorCode.NotFound, `no training job '${jobId}' runs here`);
    return job as Job & { training: NonNullable<Job['training']> };
  }

  /** Waits until a training job completes or fails (tests, demo). */
  async trainingFinished(jobId: string): Promise<'completed' | 'failed'> {
    return this.trainingJob(jobId).training.finished.then((s) => (s === 'failed' ? 'failed' : 'completed'));
  }

  /** A training job's model versions (oldest first). */
  modelsOf(jobId: string): readonly ModelVersionRecord[] {
    return this.trainingJob(jobId).training.models.all;
  }

  /** Most masked inputs a round admitted at once (its upload gate's peak). */
  uploadPeakOf(jobId: string, roundIndex: number): { peak: number; slots: number } {
    const r = this.roundOf(jobId, roundIndex);
    return { peak: r.gate.peak, slots: r.gate.slots };
  }

  /** When each phase of a round began, and the coordinator's compute time closing each (ms). */
  timingOf(jobId: string, roundIndex: number): { timeline: readonly { phase: Phase; at: number }[]; closeMs: Partial<Record<Phase, number>>; startedAt: number; endedAt?: number } {
    const r = this.roundOf(jobId, roundIndex);
    return { timeline: r.host.timeline, closeMs: r.host.closeMs, startedAt: r.startedAt, ...(r.endedAt === undefined ? {} : { endedAt: r.endedAt }) };
  }

  /** Training rounds flagged by the poisoning check, over every job of this process. */
  flaggedRounds(): number {
    let flagged = 0;
    for (const job of this.jobs.values()) flagged += job.training?.flagged.length ?? 0;
    return flagged;
  }

  // -------------------------------------------------------------------------------------------
  // Cancellation, retention, shutdown.

  /**
   * Cancels a job's running round: it aborts with reason `cancelled` (nothing is published, the
   * cohort is told), and a training job starts no further round. Throws `not-found` for an
   * unknown job and `failed-precondition` for one that no longer runs.
   */
  cancelJob(jobId: string, detail = 'cancelled by an operator'): { roundIndex: number; phase: Phase; at: number } {
    const job = this.jobs.get(jobId);
    if (!job || job.rounds.length === 0) throw new AegisError(ErrorCode.NotFound, `no job '${jobId}' has run here`);
    const state = jobStateOf(job, this.isCancelled(jobId));
    if (state !== admin.JobState.RUNNING) {
      throw new AegisError(ErrorCode.FailedPrecondition, `job '${jobId}' is not running (${JOB_STATE_NAMES[state] ?? 'ended'}); nothing to cancel`);
    }
    const at = this.clock();
    const r = job.rounds[job.rounds.length - 1]!;
    const phase = phaseOfRound(r);
    const t = job.training;
    if (t) {
      // A training job that no longer runs starts no round after this one's outcome.
      this.cancelledJobs.set(jobId, at);
      t.state = 'failed';
      t.detail = detail;
      t.settle('failed');
      if (r.outcome) this.cancelNextRound(job, job.rounds.length, at + t.gatherMs + job.manifest.deadlines.advertiseMs + 60_000);
    }
    r.host.cancel(detail);
    this.save(job);
    this.log?.warn({ job: jobId, round: r.index, phase }, 'round cancelled');
    return { roundIndex: r.index, phase, at };
  }

  /**
   * A training job cancelled between two rounds may be gathering its next one already: that
   * round is cancelled as soon as it starts.
   */
  private cancelNextRound(job: Job, index: number, until: number): void {
    const tick = (): void => {
      const next = job.rounds[index];
      if (next) return next.host.cancel(job.training?.detail || 'cancelled by an operator');
      if (this.closing || this.clock() > until) return;
      setTimeout(tick, 50).unref();
    };
    tick();
  }

  /**
   * Retention: rounds that ended more than `roundRetentionMs` ago forget which clients took part
   * (their cohort, per-phase members, survivors and protocol state); counts, timeline, outcome
   * and sum stay. Runs at start and every hour. Returns how many rounds it retired.
   */
  retireRounds(): number {
    const before = this.clock() - (this.opts.roundRetentionMs ?? DEFAULT_ROUND_RETENTION_MS);
    let n = 0;
    for (const r of [...[...this.jobs.values()].flatMap((j) => j.rounds), ...this.remoteRounds.values()]) {
      if (r.retired || !r.outcome || r.endedAt === undefined || r.endedAt > before) continue;
      r.retired = { invited: r.cohort.length, survivors: r.outcome.ok ? r.outcome.survivors.length : 0 };
      r.host = retiredHost(r.host, r.outcome);
      r.outcome = withoutClients(r.outcome);
      r.cohort = [];
      r.startOf.clear();
      // Changed: written again at the save below, then let go of again.
      r.released = false;
      n++;
    }
    if (n > 0) this.log?.info({ rounds: n }, 'retention: rounds forgot who took part');
    // The history forgets them too (secure_delete: the old rows' pages are zeroed).
    if (n > 0) {
      for (const job of this.jobs.values()) this.save(job);
      try {
        this.history?.checkpoint();
      } catch {
        this.log?.error('could not checkpoint the job history after retention');
      }
    }
    return n;
  }

  /** No new round starts from now on; a round of this process alone is cancelled (a shared one goes on with the other front ends). */
  stop(): void {
    this.closing = true;
    if (!this.opts.redisRounds) for (const job of this.jobs.values()) for (const r of job.rounds) r.host.cancel('the coordinator is shutting down');
  }

  get stopped(): boolean {
    return this.closing;
  }

  /** Waits for training jobs' model versions to be written, then closes the job history. */
  async flush(): Promise<void> {
    for (const job of this.jobs.values()) await job.training?.models.flushed().catch(() => undefined);
    for (const job of this.jobs.values()) this.save(job);
    this.history?.close();
  }
}
