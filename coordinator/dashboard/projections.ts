/**
 * The dashboard's data, from the coordinator's owners: counts about the coordinator, the jobs
 * (this process's and, with a job directory, the others'), and one job with its rounds and model
 * history (declines per round by reason), and a DP job's ε per round against its budget. Counts and ids only: no client ids, no inputs (the server projects again before
 * anything leaves the process).
 */
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import { parsePublishersPayload } from '../../shared/trust/registry.js';
import { readSnapshot } from '../../shared/trust/registry-dir.js';
import { abortReasonFromProto, errorReasonFromProto, phaseFromProto } from '../../shared/rpc/convert.js';
import type { ClientRegistry } from '../clients/client-registry.js';
import type { JobsAcrossFrontEnds } from '../jobs/front-ends.js';
import type { Jobs } from '../jobs/jobs.js';
import { JOB_STATE_NAMES } from '../jobs/views.js';
import { dpStatusOf } from '../jobs/dp-status.js';
import type { DashboardDp, DashboardJobDetail, DashboardJobState, DashboardJobSummary, DashboardOverview, DashboardRound, DashboardSource } from './server.js';

export interface DashboardDataDeps {
  jobs: Jobs;
  reports: JobsAcrossFrontEnds;
  clients: ClientRegistry;
  connectedClients: () => string[];
  /** The publisher registry directory, if the coordinator has one. */
  registryDir?: string;
  /** When the coordinator started (ms since the epoch). */
  startedAt: number;
  clock: () => number;
}

/** A decline's reason code ('unspecified' for a value this build does not know). */
function reasonName(r: admin.DeclineCount['reason']): string {
  try {
    return errorReasonFromProto(r);
  } catch {
    return 'unspecified';
  }
}

/** Another coordinator's DP job, from the status it published to the job directory. */
function dpOfProto(d: admin.DpStatus, roundsTotal: number): DashboardDp {
  return {
    mechanism: d.mechanism,
    delta: d.delta,
    epsilonBudget: d.epsilonBudget,
    epsilonSpent: d.epsilonSpent,
    roundsTotal,
    rounds: d.rounds.map((r) => ({ index: r.roundIndex, epsilon: r.epsilon })),
  };
}

export class DashboardData implements DashboardSource {
  /** The registry's version and publisher count, read at most every few seconds. */
  private registryInfo: { at: number; value: { version: number; publishers: number } | null } | undefined;

  constructor(private readonly deps: DashboardDataDeps) {}

  /** Counts only: when this coordinator started, clients connected and enrolled, the registry version, flagged rounds. */
  async overview(): Promise<DashboardOverview> {
    const { clients, jobs } = this.deps;
    return {
      coordinator: { startedAt: this.deps.startedAt, connectedClients: this.deps.connectedClients().length, enrolledClients: clients.activeCount() },
      registry: await this.registryVersion(),
      flags: { poisoningFlaggedRounds: jobs.flaggedRounds() },
    };
  }

  /** The publisher registry's version and publisher count (null without a registry); cached 5 s. */
  private async registryVersion(): Promise<{ version: number; publishers: number } | null> {
    const dir = this.deps.registryDir;
    if (dir === undefined) return null;
    const now = this.deps.clock();
    if (this.registryInfo && now - this.registryInfo.at < 5000) return this.registryInfo.value;
    let value: { version: number; publishers: number } | null;
    try {
      const doc = parsePublishersPayload((await readSnapshot(dir)).publishers);
      value = { version: doc.version, publishers: Object.values(doc.publishers).filter((p) => p.revoked !== true).length };
    } catch {
      value = this.registryInfo?.value ?? null;
    }
    this.registryInfo = { at: now, value };
    return value;
  }

  /** Every job (this process's and, with a job directory, the others'), as the dashboard lists them. */
  async jobs(): Promise<DashboardJobSummary[]> {
    const infos = await this.deps.reports.listJobsEverywhere();
    return infos.map((j) => {
      const job = this.deps.jobs.get(j.jobId);
      return {
        jobId: j.jobId,
        kind: j.kind === admin.JobKind.TRAINING ? 'training' : 'plain',
        state: (JOB_STATE_NAMES[j.state] ?? 'running') as DashboardJobState,
        signer: job?.signer ? { ...job.signer } : null,
        roundsDone: j.roundsDone,
        rounds: j.roundsTotal,
        roundIndex: j.roundIndex,
        phase: phaseFromProto(j.phase),
        startedAt: Number(j.startedAtMs),
        elapsedMs: Number(j.elapsedMs),
      };
    });
  }

  /** One job with its rounds (phase, counts, timeline) and, for training, its model history; undefined if unknown. */
  async job(jobId: string, known?: DashboardJobSummary): Promise<DashboardJobDetail | undefined> {
    const { jobs, reports } = this.deps;
    const summary = known ?? (await this.jobs()).find((j) => j.jobId === jobId);
    if (!summary) return undefined;
    const job = jobs.get(jobId);
    const t = job?.training;
    const flagged = new Set(t?.flagged ?? []);
    const roundOf = (s: admin.RoundStatusReply, timing?: ReturnType<Jobs['timingOf']>): DashboardRound => {
      const startedAt = Number(s.startedAtMs);
      const endedAt = timing?.endedAt ?? (s.finished ? startedAt + Number(s.elapsedMs) : null);
      return {
        index: s.roundIndex,
        phase: phaseFromProto(s.phase),
        ok: s.ok,
        finished: s.finished,
        startedAt,
        endedAt,
        elapsedMs: Number(s.elapsedMs),
        timeline: (timing?.timeline ?? []).map((x) => ({ phase: x.phase, at: x.at })),
        clientsPerPhase: s.clientsPerPhase.map((c) => ({ phase: phaseFromProto(c.phase), clients: c.clients, expected: c.expected })),
        invited: s.invited,
        dropouts: s.dropouts,
        refused: s.refused,
        declines: s.declines.map((d) => ({ reason: reasonName(d.reason), clients: d.clients })),
        abortReason: s.finished && !s.ok && s.abortReason !== 0 ? abortReasonFromProto(s.abortReason) : null,
        detail: s.detail,
        poisoningFlagged: flagged.has(s.roundIndex),
      };
    };
    if (!job) {
      // Another coordinator's job (job directory): its latest round only.
      const s = await reports.statusAnywhere(jobId).catch(() => undefined);
      return { job: summary, rounds: s ? [roundOf(s)] : [], training: null, dp: s?.dp ? dpOfProto(s.dp, summary.rounds) : null };
    }
    const rounds = job.rounds.map((r) => roundOf(reports.statusOf(jobId, r.index), jobs.timingOf(jobId, r.index)));
    const dp = dpStatusOf(job);
    return {
      job: summary,
      rounds,
      dp: dp ? { mechanism: dp.mechanism, delta: dp.delta, epsilonBudget: dp.epsilonBudget, epsilonSpent: dp.epsilonSpent, roundsTotal: dp.roundsTotal, rounds: dp.rounds } : null,
      training: t
        ? {
            state: jobs.isCancelled(jobId) ? 'cancelled' : t.state,
            roundsCompleted: t.completed,
            roundsAborted: t.aborted,
            flaggedRounds: [...t.flagged],
            models: t.models.all.map((v) => ({
              version: v.version,
              roundIndex: v.roundIndex ?? null,
              clients: v.clients,
              accuracy: v.validationAccuracy ?? null,
              loss: v.validationLoss ?? null,
              sha256: Buffer.from(v.sha256).toString('hex'),
            })),
          }
        : null,
    };
  }
}
