/**
 * Jobs as every front end sees them: status, results and listings from this process, or — with
 * Redis — from the job directory and the round state on Redis, whichever front end ran the job
 * (also one that is gone); cancellation of another front end's job through the directory; and
 * this process's jobs published to the directory.
 */
import { create } from '@bufbuild/protobuf';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import type { Phase } from '../../shared/protocol/vocabulary.js';
import { phaseFromProto, vectorToBytes } from '../../shared/rpc/convert.js';
import type { JobDirectory } from '../queue/job-directory.js';
import { GroupedRoundHost } from '../hosts/grouped-host.js';
import type { RoundHostLike } from '../hosts/types.js';
import type { RedisRounds } from '../queue/redis-rounds.js';
import type { Jobs } from './jobs.js';
import { jobInfo, roundResult, roundStatus } from './views.js';

export class JobsAcrossFrontEnds {
  constructor(
    private readonly jobs: Jobs,
    private readonly opts: { jobDirectory?: JobDirectory; redisRounds?: RedisRounds },
    private readonly clock: () => number,
  ) {}

  /** A round's status from this process (the latest round when `roundIndex` is undefined). */
  statusOf(jobId: string, roundIndex?: number): admin.RoundStatusReply {
    const r = this.jobs.roundOf(jobId, roundIndex);
    return roundStatus(this.jobs.get(jobId)!, r, this.jobs.isCancelled(jobId), this.clock());
  }

  /** A completed round's result from this process. */
  resultOf(jobId: string, roundIndex?: number): admin.RoundResultReply {
    return roundResult(this.jobs.get(jobId), jobId, roundIndex);
  }

  /** Every job this coordinator knows (with a job history: also from its earlier runs), oldest first. */
  listJobs(): admin.JobInfo[] {
    const now = this.clock();
    return this.jobs
      .all()
      .filter((job) => job.rounds.length > 0)
      .map((job) => jobInfo(job, this.jobs.isCancelled(job.jobId), now));
  }

  /** This process's jobs and, with a job directory, those other coordinators on the Redis run. */
  async listJobsEverywhere(): Promise<admin.JobInfo[]> {
    const local = this.listJobs();
    if (!this.opts.jobDirectory) return local;
    const here = new Set(local.map((j) => j.jobId));
    const elsewhere = (await this.opts.jobDirectory.list()).filter((j) => !here.has(j.jobId));
    return [...local, ...elsewhere].sort((a, b) => Number(a.startedAtMs - b.startedAtMs));
  }

  /** A job's status from this process, or else from the job directory (its latest round only). */
  async statusAnywhere(jobId: string, roundIndex?: number): Promise<admin.RoundStatusReply> {
    try {
      return this.statusOf(jobId, roundIndex);
    } catch (e) {
      if (!isAegisError(e, ErrorCode.NotFound) || !this.opts.jobDirectory) throw e;
      const s = await this.opts.jobDirectory.status(jobId);
      if (!s || (roundIndex !== undefined && s.roundIndex !== roundIndex)) throw e;
      return s;
    }
  }

  /**
   * A round's result from this process, or — with rounds on Redis — from there, whichever front
   * end ran it (also one that is gone).
   */
  async resultAnywhere(jobId: string, roundIndex?: number): Promise<admin.RoundResultReply> {
    try {
      return this.resultOf(jobId, roundIndex);
    } catch (e) {
      const shared = this.opts.redisRounds;
      if (!isAegisError(e, ErrorCode.NotFound) || !shared) throw e;
      const infos = (await shared.roundsOf(jobId)).filter((i) => roundIndex === undefined || i.index === roundIndex).sort((a, b) => b.index - a.index);
      for (const info of infos) {
        const hosts = await Promise.all(info.groups.map((k) => shared.host(k)));
        if (!hosts.every((h) => h.settled)) continue;
        const host: RoundHostLike = hosts.length === 1 ? hosts[0]! : new GroupedRoundHost(hosts.map((h) => ({ members: h.meta.cohort, host: h })));
        const o = await host.outcome;
        if (!o.ok) continue;
        const params = hosts[0]!.meta.params;
        return create(admin.RoundResultReplySchema, {
          jobId,
          roundIndex: info.index,
          manifestHash: new Uint8Array(Buffer.from(info.manifestHash, 'hex')),
          survivors: [...o.survivors],
          survivorCount: o.survivors.length,
          sum: new Uint8Array(vectorToBytes(o.sum)),
          clip: params.clip,
          bits: params.bits,
        });
      }
      throw e;
    }
  }

  /**
   * Cancels a job here, or — with a job directory — a running job another coordinator runs: the
   * request goes to the directory and that coordinator acts on it within a second.
   */
  async cancelAnywhere(jobId: string, detail: string): Promise<{ roundIndex: number; phase: Phase; at: number }> {
    const dir = this.opts.jobDirectory;
    if (this.jobs.get(jobId) || !dir) return this.jobs.cancelJob(jobId, detail);
    const s = await dir.status(jobId);
    if (!s) throw new AegisError(ErrorCode.NotFound, `no job '${jobId}' is known here or on the Redis`);
    if (s.jobState !== admin.JobState.RUNNING) throw new AegisError(ErrorCode.FailedPrecondition, `job '${jobId}' is not running; nothing to cancel`);
    await dir.requestCancel(jobId, detail);
    return { roundIndex: s.roundIndex, phase: phaseFromProto(s.phase), at: this.clock() };
  }

  /**
   * Publishes this process's jobs to the job directory (every second, and at each round's end),
   * after acting on any cancel request another coordinator left for them.
   */
  async publishJobs(): Promise<void> {
    const dir = this.opts.jobDirectory;
    if (!dir) return;
    for (const info of this.listJobs()) {
      if (info.state === admin.JobState.RUNNING) {
        const detail = await dir.takeCancel(info.jobId).catch(() => undefined);
        if (detail !== undefined) {
          try {
            this.jobs.cancelJob(info.jobId, detail);
          } catch {
            // It ended meanwhile: nothing to cancel.
          }
        }
      }
      await dir.publish(this.listJobs().find((j) => j.jobId === info.jobId) ?? info, this.statusOf(info.jobId)).catch(() => undefined);
    }
  }
}
