/**
 * How a job and its rounds are reported to operators (Admin replies: round status, results, the
 * job list). Pure projections of the job records: they change nothing.
 */
import { create } from '@bufbuild/protobuf';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { abortReasonToProto, errorReasonToProto, phaseToProto, vectorToBytes } from '../../shared/rpc/convert.js';
import { totalDeclines, type DeclineCounts } from '../round/declines.js';
import { expectedClients } from '../round/phases.js';
import { dpStatusOf } from './dp-status.js';
import type { ModelVersionRecord, TrainingProgress } from './training.js';
import { invitedOf, roundsDone, type Job, type RoundRecord } from './types.js';
import { roundName, roundNumber } from '../../shared/round-number.js';

export const JOB_STATE_NAMES: Partial<Record<admin.JobState, string>> = {
  [admin.JobState.RUNNING]: 'running',
  [admin.JobState.COMPLETED]: 'completed',
  [admin.JobState.FAILED]: 'failed',
  [admin.JobState.CANCELLED]: 'cancelled',
  [admin.JobState.ABORTED]: 'aborted',
};

/** A round of a job: the latest when `roundIndex` is undefined; `not-found` otherwise. */
export function roundOf(job: Job | undefined, jobId: string, roundIndex?: number): RoundRecord {
  if (!job || job.rounds.length === 0) throw new AegisError(ErrorCode.NotFound, `no job '${jobId}' has run here`);
  const r = roundIndex === undefined ? job.rounds[job.rounds.length - 1] : job.rounds.find((x) => x.index === roundIndex);
  if (!r) throw new AegisError(ErrorCode.NotFound, `job '${jobId}' has no ${roundName(roundIndex!)}`);
  return r;
}

/** The phase a round is in, or its end. */
export const phaseOfRound = (r: RoundRecord): Phase => (r.outcome ? (r.outcome.ok ? Phase.Completed : Phase.Aborted) : r.host.phase);

/**
 * Where a job stands. A plain job takes its last round's state; a training job its own (an
 * operator's cancellation wins over the failure it is recorded as).
 */
export function jobStateOf(job: Job, cancelled: boolean): admin.JobState {
  const t = job.training;
  if (t) {
    if (cancelled) return admin.JobState.CANCELLED;
    return t.state === 'running' ? admin.JobState.RUNNING : t.state === 'completed' ? admin.JobState.COMPLETED : admin.JobState.FAILED;
  }
  const o = job.rounds[job.rounds.length - 1]?.outcome;
  if (!o) return admin.JobState.RUNNING;
  if (o.ok) return admin.JobState.COMPLETED;
  return o.reason === 'cancelled' ? admin.JobState.CANCELLED : admin.JobState.ABORTED;
}

/** Decline counts as the Admin replies carry them: one entry per reason, most first. */
export function declineCountsToProto(c: DeclineCounts): admin.DeclineCount[] {
  return (Object.entries(c) as [ErrorCode, number | undefined][])
    .filter(([, n]) => (n ?? 0) > 0)
    .sort(([a, x], [b, y]) => (y ?? 0) - (x ?? 0) || (a < b ? -1 : 1))
    .map(([reason, n]) => create(admin.DeclineCountSchema, { reason: errorReasonToProto(reason), clients: n! }));
}

/**
 * A round's status: its phase, the clients each phase heard from out of how many, the clients
 * that declined by reason, dropouts (invited clients that neither declined nor reached the
 * latest set), its outcome, and the job's.
 */
export function roundStatus(job: Job, r: RoundRecord, cancelled: boolean, now: number): admin.RoundStatusReply {
  const s = r.host.status();
  // Each phase with the clients it heard from and the clients it waited for (the previous set).
  const phases: [Phase, number | undefined, number | undefined][] = [
    [Phase.AdvertiseKeys, s.sets.u1, invitedOf(r)],
    [Phase.ShareKeys, s.sets.u2, s.sets.u1],
    [Phase.MaskedInput, s.sets.u3, s.sets.u2],
    [Phase.ConsistencyCheck, s.sets.u4, s.sets.u3],
  ];
  const counts = phases
    .filter(([, n]) => n !== undefined)
    .map(([phase, n, expected]) => create(admin.PhaseCountSchema, { phase: phaseToProto(phase), clients: n!, expected: expected ?? 0 }));
  if (!r.outcome && s.phase !== Phase.Completed && s.phase !== Phase.Aborted) {
    counts.push(create(admin.PhaseCountSchema, { phase: phaseToProto(s.phase), clients: s.received, expected: expectedClients(s.phase, s.sets, r.cohort.length) }));
  }
  const latest = [s.sets.u4, s.sets.u3, s.sets.u2, s.sets.u1].find((x) => x !== undefined);
  const o = r.outcome;
  const training = job.training ? trainingStatus(job.training) : undefined;
  if (training && cancelled) training.state = 'cancelled';
  // A completed round whose model the evaluator could not check: held back (model-unchecked).
  const held = o?.ok ? job.training?.unchecked.find((u) => u.round === r.index) : undefined;
  const dp = dpStatusProto(job);
  return create(admin.RoundStatusReplySchema, {
    jobId: job.jobId,
    roundIndex: r.index,
    phase: phaseToProto(o ? (o.ok ? Phase.Completed : Phase.Aborted) : s.phase),
    clientsPerPhase: counts,
    dropouts: latest === undefined ? 0 : Math.max(0, invitedOf(r) - totalDeclines(s.declines) - latest),
    declines: declineCountsToProto(s.declines),
    // A finished round reports its duration (launch to outcome), not time since launch.
    elapsedMs: BigInt((r.endedAt ?? now) - r.startedAt),
    ok: o?.ok ?? false,
    abortReason: o && !o.ok ? abortReasonToProto(o.reason as AbortReason) : 0,
    invited: invitedOf(r),
    refused: s.refused,
    finished: o !== undefined,
    detail: o && !o.ok ? o.detail : held ? held.detail : '',
    holdReason: held ? abortReasonToProto(AbortReason.ModelUnchecked) : 0,
    rounds: job.manifest.rounds,
    ...(training ? { training } : {}),
    jobState: jobStateOf(job, cancelled),
    kind: job.training ? admin.JobKind.TRAINING : admin.JobKind.PLAIN,
    startedAtMs: BigInt(r.startedAt),
    roundsDone: roundsDone(job),
    revision: job.manifest.revision,
    ...(dp ? { dp } : {}),
  });
}

/** A DP job's privacy as the Admin replies carry it; undefined for a job without DP. */
export function dpStatusProto(job: Job): admin.DpStatus | undefined {
  const d = dpStatusOf(job);
  if (!d) return undefined;
  return create(admin.DpStatusSchema, {
    mechanism: d.mechanism,
    delta: d.delta,
    epsilonSpent: d.epsilonSpent,
    epsilonBudget: d.epsilonBudget,
    epsilonClaimed: d.epsilonClaimed,
    roundsCharged: d.roundsCharged,
    rounds: d.rounds.map((r) => create(admin.DpRoundEpsilonSchema, { roundIndex: r.index, epsilon: r.epsilon })),
    noiseMultiplier: d.noiseMultiplier,
    clip: d.clip,
    minClients: d.minClients,
  });
}

/** A completed round's sum (the latest completed round when `roundIndex` is undefined). */
export function roundResult(job: Job | undefined, jobId: string, roundIndex?: number): admin.RoundResultReply {
  if (!job) throw new AegisError(ErrorCode.NotFound, `no job '${jobId}' has run here`);
  const r = roundIndex === undefined ? [...job.rounds].reverse().find((x) => x.outcome?.ok) : job.rounds.find((x) => x.index === roundIndex);
  if (!r || !r.outcome || !r.outcome.ok) throw new AegisError(ErrorCode.NotFound, `job '${jobId}' has no completed round${roundIndex === undefined ? '' : ` ${roundNumber(roundIndex)}`}`);
  return create(admin.RoundResultReplySchema, {
    jobId,
    roundIndex: r.index,
    manifestHash: job.manifestHash,
    survivors: [...r.outcome.survivors],
    survivorCount: r.retired?.survivors ?? r.outcome.survivors.length,
    sum: new Uint8Array(vectorToBytes(r.outcome.sum)),
    clip: job.manifest.round.clip,
    bits: job.manifest.round.bits,
  });
}

/** One line of the job list (the declines are the latest round's). */
export function jobInfo(job: Job, cancelled: boolean, now: number): admin.JobInfo {
  const first = job.rounds[0]!;
  const last = job.rounds[job.rounds.length - 1]!;
  const state = jobStateOf(job, cancelled);
  const end = state === admin.JobState.RUNNING ? now : (last.endedAt ?? now);
  return create(admin.JobInfoSchema, {
    jobId: job.jobId,
    kind: job.training ? admin.JobKind.TRAINING : admin.JobKind.PLAIN,
    state,
    roundsDone: roundsDone(job),
    roundsTotal: job.manifest.rounds,
    roundIndex: last.index,
    phase: phaseToProto(phaseOfRound(last)),
    startedAtMs: BigInt(first.startedAt),
    elapsedMs: BigInt(Math.max(0, end - first.startedAt)),
    roundsAborted: job.rounds.filter((r) => r.outcome && !r.outcome.ok).length,
    invited: invitedOf(last),
    declines: declineCountsToProto(last.host.status().declines),
    revision: job.manifest.revision,
  });
}

function trainingStatus(t: TrainingProgress): admin.TrainingStatus {
  const version = (v: ModelVersionRecord) => create(pb.ModelVersionSchema, { version: v.version, sha256: v.sha256 });
  return create(admin.TrainingStatusSchema, {
    state: t.state,
    roundsCompleted: t.completed,
    roundsAborted: t.aborted,
    model: version(t.models.latest),
    detail: t.detail,
    flaggedRounds: t.flagged,
    uncheckedRounds: t.unchecked.map((u) => u.round),
    history: t.models.all.map((v) =>
      create(admin.ModelHistoryEntrySchema, {
        model: version(v),
        ...(v.roundIndex === undefined ? {} : { roundIndex: v.roundIndex }),
        clients: v.clients,
        totalWeight: BigInt(v.totalWeight),
        ...(v.validationAccuracy === undefined ? {} : { validationAccuracy: v.validationAccuracy }),
      }),
    ),
  });
}
