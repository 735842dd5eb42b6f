/**
 * The SecAgg service (clients, on the mTLS listener): the Subscribe stream of a client's round
 * messages, Send of its protocol messages, heartbeats, upload slots for masked inputs, model
 * downloads and round-call tokens. Thin: authorization here, everything else in the owners.
 */
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { sameRound } from '../../shared/protocol/session.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { fromClientEnvelope, phaseToProto } from '../../shared/rpc/convert.js';
import { serverStream, unary } from '../../shared/rpc/service.js';
import type { TokenIssuer } from '../auth/tokens.js';
import type { Jobs } from '../jobs/jobs.js';
import type { Mailboxes } from '../service/mailbox.js';
import type { CallerAuthorization } from './caller.js';
import type { RedisRounds } from '../queue/redis-rounds.js';
import { modelChunks, sharedModelChunks } from './model-chunks.js';

const MAX_TOKENS_PER_CALL = 64;

export interface SecAggServiceDeps {
  auth: CallerAuthorization;
  jobs: Jobs;
  mailboxes: Mailboxes<pb.ServerEnvelope>;
  tokens: TokenIssuer;
  /** Round-call token lifetime; default the issuer's. */
  tokenTtlMs?: number;
  /** How long a client may stay disconnected before its rounds stop waiting for it; default 2 s. */
  lostAfterMs?: number;
  /** Rounds on Redis: the model versions of training jobs other front ends run are read there. */
  redisRounds?: RedisRounds;
  log?: Logger;
}

export function secAggService(deps: SecAggServiceDeps) {
  const { auth, jobs, tokens } = deps;
  return {
    subscribe: serverStream<pb.SubscribeRequest, pb.ServerEnvelope>((_req, call) => stream(deps, call)),
    send: unary<pb.ClientEnvelope, pb.SendReply>(async (env, call) => {
      const rec = await auth.roundClient(call);
      const msg = fromClientEnvelope(env);
      const phase = await jobs.submit(rec.clientId, msg);
      return create(pb.SendReplySchema, { phase: phaseToProto(phase) });
    }),
    heartbeat: unary<pb.HeartbeatRequest, pb.HeartbeatReply>(async (req, call) => {
      const rec = await auth.roundClient(call);
      const r = jobs.activeRoundsOf(rec.clientId).find((x) => !req.round || sameRound(x.ref, { manifestHash: req.round.manifestHash, roundIndex: req.round.roundIndex }));
      return create(pb.HeartbeatReplySchema, { phase: r ? phaseToProto(r.host.phase) : 0 });
    }),
    acquireUpload: unary<pb.AcquireUploadRequest, pb.AcquireUploadReply>(async (_req, call) => {
      const rec = await auth.roundClient(call);
      const r = jobs.activeRoundsOf(rec.clientId).find((x) => x.host.phase === Phase.MaskedInput);
      if (!r) throw new AegisError(ErrorCode.WrongPhase, 'no round of this client takes masked inputs now');
      await r.gate.acquire(rec.clientId, (cb) => call.on('cancelled', cb));
      return create(pb.AcquireUploadReplySchema, { slots: r.gate.slots });
    }),
    fetchModel: serverStream<pb.FetchModelRequest, pb.ModelChunk>((req, call) => {
      auth.client(call);
      const job = jobs.trainingJobByHash(req.manifestHash);
      if (job?.training) return modelChunks(job.training.models.get(req.version));
      // Another front end on the Redis runs the job: it recorded the version there.
      return sharedModelChunks(deps.redisRounds?.store, req.manifestHash, req.version);
    }),
    issueTokens: unary<pb.IssueTokensRequest, pb.IssueTokensReply>(async (req, call) => {
      const rec = auth.client(call);
      const count = req.count === 0 ? 1 : req.count;
      if (count > MAX_TOKENS_PER_CALL) throw new AegisError(ErrorCode.InvalidArgument, `at most ${MAX_TOKENS_PER_CALL} tokens per call`);
      const ttlMs = deps.tokenTtlMs;
      const issued = await Promise.all(Array.from({ length: count }, () => tokens.issue(rec.clientId, ttlMs === undefined ? {} : { ttlMs })));
      return create(pb.IssueTokensReplySchema, { tokens: issued.map((t) => t.token), expiresAtMs: BigInt(issued[0]!.claims.exp * 1000) });
    }),
  };
}

/**
 * A client's Subscribe stream: its mailbox, drained until the client goes away. A client that
 * stays away past the grace period is gone for its rounds' phases; one that comes back is told
 * again the round start it may have missed.
 */
async function* stream(deps: SecAggServiceDeps, call: grpc.ServerWritableStream<pb.SubscribeRequest, pb.ServerEnvelope>): AsyncGenerator<pb.ServerEnvelope> {
  const { auth, jobs, log } = deps;
  const rec = await auth.roundClient(call);
  const mailbox = deps.mailboxes.of(rec.clientId);
  const { messages, detach: detachMailbox } = mailbox.attach();
  for (const r of jobs.activeRoundsOf(rec.clientId)) r.host.back(rec.clientId);
  let detached = false;
  const detach = (): void => {
    if (detached) return;
    detached = true;
    detachMailbox();
    // A client that stays away past the grace period is gone: the round's phases stop waiting for it.
    const t = setTimeout(() => {
      if (mailbox.attached) return;
      for (const r of jobs.activeRoundsOf(rec.clientId)) r.host.lost(rec.clientId);
    }, deps.lostAfterMs ?? 2_000);
    t.unref();
  };
  // Headers now, so the client knows at once that it is subscribed (not at the first message).
  call.sendMetadata(new grpc.Metadata());
  // A round start can be lost with a stream that broke: re-send it while the round still waits
  // for this client's keys (a client ignores a start of the round it is already in).
  for (const r of jobs.activeRoundsOf(rec.clientId)) {
    if (r.host.awaitsAdvertisement(rec.clientId)) mailbox.push(r.startOf.get(rec.clientId) ?? r.startEnvelope);
  }
  call.on('cancelled', detach);
  call.on('close', detach);
  log?.debug({ client: rec.clientId }, 'client subscribed');
  try {
    yield* messages;
  } finally {
    detach();
    log?.debug({ client: rec.clientId }, 'client stream ended');
  }
}
