/**
 * Starting a job's round: gathering a cohort among the connected clients, splitting a large one
 * into aggregation groups, building the round's host (in memory, or on Redis shared with the
 * other front ends) and the RoundStart each member is sent.
 */
import { randomInt } from 'node:crypto';
import { toBinary } from '@bufbuild/protobuf';
import type { Logger } from 'pino';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { RoundRef, RoundStart } from '../../shared/protocol/messages.js';
import { groupRoundParams, minimumGroupSize, type RoundParams } from '../../shared/protocol/params.js';
import { maskedDim, maskedRoundParams, maskedSumBits } from '../../shared/protocol/dp-manifest.js';
import { roundViewDigest } from '../../shared/protocol/view.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { toEventEnvelope } from '../../shared/rpc/convert.js';
import type { ClientRegistry } from '../clients/client-registry.js';
import type { RedisRoundInfo, RedisRoundMeta } from '../queue/round-store.js';
import { groupableCohort, planGroups } from '../round/groups.js';
import { GroupedRoundHost } from '../hosts/grouped-host.js';
import type { RoundHostLike } from '../hosts/types.js';
import { RoundHost } from '../hosts/round-host.js';
import { UploadGate } from '../service/upload-gate.js';
import { weightBytes } from './training.js';
import type { Job, JobsOptions, RoundRecord } from './types.js';

/** Default memory for masked inputs being received at once. */
export const DEFAULT_UPLOAD_BUDGET_BYTES = 96 * 1024 * 1024;

export interface RoundStartContext {
  opts: JobsOptions;
  clients: ClientRegistry;
  /** Client ids connected to this process (not revoked). */
  connectedClients: () => string[];
  clock: () => number;
  closing: () => boolean;
}

/**
 * Gathers a cohort and opens the job's next round (`roundIndex`, default the next). Waits up to
 * `gatherMs` for a full cohort, and at least `minimumWaitMs` for t + 1 clients. `register` is
 * called once the cohort is chosen (a launch refused for too few clients leaves nothing behind).
 */
export async function openRound(ctx: RoundStartContext, job: Job, gatherMs: number, minimumWaitMs: number, roundIndex: number | undefined, register: () => void): Promise<RoundRecord> {
  const { opts, clients, clock } = ctx;
  const log: Logger | undefined = opts.log;
  const { manifest, manifestHash: hash } = job;
  const cohort = await gatherCohort(ctx, manifest.round, gatherMs, minimumWaitMs);
  // A DP round's noise is calibrated for n_min..n_max clients (the manifest's parse checked
  // threshold >= minClients and cohort <= maxClients); never launch one outside them.
  if (manifest.dp && (cohort.length > manifest.dp.maxClients || manifest.round.threshold < manifest.dp.minClients)) {
    throw new AegisError(ErrorCode.InvalidArgument, `a DP round needs a cohort of at most dp.maxClients ${manifest.dp.maxClients} and a threshold of at least dp.minClients ${manifest.dp.minClients} (cohort ${cohort.length}, threshold ${manifest.round.threshold})`);
  }
  const members = new Map(cohort.map((id) => [id, new Uint8Array(Buffer.from(clients.get(id)!.publicKey, 'base64url'))]));
  register();
  const index = roundIndex ?? job.rounds.length;
  const ref: RoundRef = { manifestHash: hash, roundIndex: index };
  const gate = UploadGate.forDim(maskedDim(manifest), opts.uploadBudgetBytes ?? DEFAULT_UPLOAD_BUDGET_BYTES);
  // Aggregation groups (round.groupSize): a larger cohort runs as several SecAgg(+) instances,
  // split by a permutation fixed by the manifest hash and round index.
  const groupSize = manifest.round.groupSize;
  const split = groupSize !== undefined && cohort.length > groupSize ? planGroups(cohort, groupSize, `${Buffer.from(hash).toString('hex')}:${index}`) : [cohort];
  // A DP job masks its encoded length, not round.dim (shared/protocol/dp-manifest.ts).
  const groupParams = split.map((g) => maskedRoundParams(manifest, split.length > 1 ? groupRoundParams(manifest.round, g.length) : manifest.round));
  const startEvents = roundStarts(job, ref, groupParams, split);
  const views = startEvents.map((e) => roundViewDigest(e));
  const hostFor = (groupMembers: string[], params: RoundParams, view: Uint8Array): RoundHost =>
    new RoundHost({
      params,
      sumBits: maskedSumBits(manifest, params),
      round: ref,
      view,
      identityOf: (id) => members.get(id),
      deadlines: manifest.deadlines,
      invited: groupMembers.length,
      cohort: groupMembers,
      ...(opts.unmaskQueue ? { unmask: (jobs, words) => opts.unmaskQueue!.dispatch(`${job.jobId}.r${index}.g${split.indexOf(groupMembers)}`, jobs, words, opts.unmaskParts ?? 2) } : {}),
      // Once the masked-input phase is over, nobody waits for a slot any more.
      onPhase: (p) => p !== Phase.MaskedInput && gate.open(),
      onPhaseClosed: (e) => {
        opts.metrics?.phaseClosed(e);
        if (e.phase === Phase.Unmasking) opts.metrics?.unmaskTime(e.seconds);
        log?.debug({ job: job.jobId, round: index, ...(split.length > 1 ? { group: split.indexOf(groupMembers) } : {}), phase: e.phase, next: e.next, clients: e.clients, expected: e.expected, ...(e.declines ? { declines: e.declines } : {}), ms: Math.round(e.seconds * 1000) }, 'phase closed');
      },
    });
  let host: RoundHostLike;
  const startEnvelopes = startEvents.map((e) => toEventEnvelope(e));
  const shared = opts.redisRounds;
  if (shared) {
    const roundId = `${job.jobId}.r${index}`;
    const keys = split.map((_, i) => (split.length === 1 ? roundId : `${roundId}.g${i}`));
    const hashHex = Buffer.from(hash).toString('hex');
    const createdAt = clock();
    const info: RedisRoundInfo = { v: 1, jobId: job.jobId, index, manifestHash: hashHex, groups: keys, starts: startEnvelopes.map((e) => Buffer.from(toBinary(pb.ServerEnvelopeSchema, e)).toString('base64')), owner: shared.frontEndId, createdAt };
    const metas: RedisRoundMeta[] = split.map((g, i) => ({
      v: 1,
      key: keys[i]!,
      jobId: job.jobId,
      index,
      group: i,
      groups: split.length,
      params: groupParams[i]!,
      sumBits: maskedSumBits(manifest, groupParams[i]!),
      manifestHash: hashHex,
      view: Buffer.from(views[i]!).toString('hex'),
      deadlines: manifest.deadlines,
      cohort: g,
      identities: Object.fromEntries(g.map((id) => [id, clients.get(id)!.publicKey])),
      owner: shared.frontEndId,
      createdAt,
    }));
    // A training round's clients may be on any front end: each serves them the round's model
    // from the Redis (FetchModel), so it is there before any of them is sent the round start.
    if (job.training) await shared.store.putModel(hashHex, job.training.models.latest.version, weightBytes(job.training.models.latest.weights));
    const { hosts, created } = await shared.create(info, metas);
    if (!created) log?.warn({ job: job.jobId, round: index }, 'the round exists on the Redis already: following it instead of starting it again');
    host = hosts.length === 1 ? hosts[0]! : new GroupedRoundHost(hosts.map((h) => ({ members: h.meta.cohort, host: h })));
    if (!created) cohort.splice(0, cohort.length, ...hosts.flatMap((h) => h.meta.cohort).sort());
    void host.outcome.then(() => gate.open());
  } else {
    host = split.length === 1 ? hostFor(cohort, groupParams[0]!, views[0]!) : new GroupedRoundHost(split.map((g, i) => ({ members: g, host: hostFor(g, groupParams[i]!, views[i]!) })));
  }
  if (split.length > 1) log?.info({ job: job.jobId, round: index, groups: split.length, sizes: split.map((g) => g.length) }, 'round split into aggregation groups');
  opts.metrics?.roundStarted();
  const startOf = new Map<string, pb.ServerEnvelope>();
  split.forEach((g, i) => g.forEach((id) => startOf.set(id, startEnvelopes[i]!)));
  return { gate, startEnvelope: startEnvelopes[0]!, startOf, index, ref, host, cohort, startedAt: clock() };
}

/**
 * Waits for clients, then draws a uniformly random cohort of up to n among those connected
 * (sorted). A round needs `minimumGroupSize` clients (more than t, at least 3, and more than
 * half the group size when the manifest names one: clients refuse smaller groups):
 * `too-few-clients` otherwise. A cohort larger than the group size is trimmed to one that splits
 * into groups of more than half the group size each (`groupableCohort`).
 */
async function gatherCohort(ctx: RoundStartContext, params: RoundParams, gatherMs: number, minimumWaitMs: number): Promise<string[]> {
  const { opts, clients, clock } = ctx;
  const n = params.cohort;
  const needed = minimumGroupSize(params);
  // How many of `count` connected clients a round invites.
  const usable = (count: number): number => (params.groupSize === undefined ? Math.min(n, count) : groupableCohort(Math.min(n, count), params.groupSize));
  const full = clock() + gatherMs;
  const enough = clock() + Math.max(gatherMs, minimumWaitMs);
  // With rounds on Redis, clients connected to any front end on the Redis count.
  const available = async (): Promise<string[]> => {
    if (!opts.redisRounds) return ctx.connectedClients();
    const ids = await opts.redisRounds.presence().catch(() => ctx.connectedClients());
    return ids.filter((id) => clients.isActive(id));
  };
  for (;;) {
    const count = (await available()).length;
    const now = clock();
    if (count >= n || (now >= full && usable(count) >= needed) || now >= enough || ctx.closing()) break;
    await new Promise((r) => setTimeout(r, opts.redisRounds ? 200 : 50));
  }
  if (ctx.closing()) throw new AegisError(ErrorCode.Unavailable, 'the coordinator is shutting down');
  const connected = await available();
  const size = usable(connected.length);
  if (size < needed) {
    const trimmed = size < Math.min(n, connected.length) ? `, of which ${size} split into groups of more than half the group size` : '';
    throw new AegisError(ErrorCode.TooFewClients, `${connected.length} clients connected${trimmed}, the round needs at least ${needed} (t + 1, 3 or more${params.groupSize === undefined ? '' : ', and more than half the group size'})`);
  }
  for (let i = connected.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [connected[i], connected[j]] = [connected[j]!, connected[i]!];
  }
  // A cohort larger than the group size is split: only as many are invited as split into groups
  // of more than half the group size each.
  return connected.slice(0, size).sort();
}

/**
 * Each group's RoundStart: its members are sent their group's parameters (clients derive and
 * check them) and the group's member list; all of it, with the model, makes the group's view.
 */
function roundStarts(job: Job, ref: RoundRef, groupParams: readonly RoundParams[], groups: readonly string[][]): RoundStart[] {
  return groupParams.map((params, i) => {
    const group = { index: i, count: groups.length, members: [...groups[i]!] };
    const start: RoundStart = { type: 'round-start', round: ref, params, deadlines: job.manifest.deadlines, manifestJson: job.manifestJson, group };
    if (job.signedManifest) start.signedManifest = job.signedManifest;
    if (job.training) {
      const { version, sha256: digest } = job.training.models.latest;
      start.model = { version, sha256: digest };
    }
    return start;
  });
}
