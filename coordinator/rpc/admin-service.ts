/**
 * The Admin service (operators, on the mTLS listener with an operator certificate): invites,
 * the client list, revocation and the CRL, launching and following jobs, cancelling them,
 * dashboard logins, model downloads, operator credentials and round-token revocation. Thin:
 * every call is authorized here (the operator's certificate checked again, revocation and
 * expiry, on every call) and handled by the owner of what it touches.
 */
import { create } from '@bufbuild/protobuf';
import type { Logger } from 'pino';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import type * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { phaseToProto } from '../../shared/rpc/convert.js';
import { serverStream, unary } from '../../shared/rpc/service.js';
import { parseRevocationReason } from '../auth/enrollment.js';
import type { OperatorView, Operators } from '../auth/operators.js';
import type { TokenRevocation, TokenVerifier } from '../auth/tokens.js';
import type { ClientRegistry } from '../clients/client-registry.js';
import { certificateSerialsOf, revocationCodeOf, revocationDetailOf } from '../clients/serials.js';
import type { JobsAcrossFrontEnds } from '../jobs/front-ends.js';
import type { Jobs } from '../jobs/jobs.js';
import type { CallerAuthorization } from './caller.js';
import { modelChunks } from './model-chunks.js';

export interface AdminServiceDeps {
  auth: CallerAuthorization;
  clients: ClientRegistry;
  jobs: Jobs;
  reports: JobsAcrossFrontEnds;
  /** A single-use dashboard login token; `failed-precondition` without a dashboard. */
  issueDashboardToken: (ttlMs?: number) => { token: string; expiresAt: number; url: string };
  /** Operator credentials: list, issue, reissue, revoke. */
  operators: Operators;
  /** The round-token verifier (its ledger keeps token revocations). */
  tokens: TokenVerifier;
  /** The CA certificate (DER), returned with issued operator certificates. */
  caCertificateDer: Uint8Array;
  log?: Logger;
}

const OPERATOR_STATUS = { active: admin.OperatorStatus.ACTIVE, expired: admin.OperatorStatus.EXPIRED, revoked: admin.OperatorStatus.REVOKED } as const;

function operatorInfo(r: OperatorView): admin.OperatorInfo {
  return create(admin.OperatorInfoSchema, {
    name: r.name,
    serial: r.serial,
    issuedAtMs: BigInt(r.issuedAt),
    expiresAtMs: BigInt(r.expiresAt),
    status: OPERATOR_STATUS[r.status],
    revokedAtMs: BigInt(r.revokedAt ?? 0),
    revocationReason: r.status === 'revoked' ? (r.reason ?? 'unspecified') : '',
    revocationDetail: r.detail ?? '',
    builtIn: r.builtIn === true,
  });
}

const ttlOf = (seconds: number): number | undefined => (seconds > 0 ? seconds * 1000 : undefined);

function tokenRevocationReply(r: TokenRevocation): admin.RevokeTokensReply {
  return create(admin.RevokeTokensReplySchema, {
    jti: r.jti ?? '',
    clientId: r.clientId ?? '',
    issuedUpToMs: BigInt((r.issuedUpTo ?? 0) * 1000),
    untilMs: BigInt(r.until * 1000),
    alreadyExpired: r.alreadyExpired === true,
  });
}

const CLIENT_STATUS = { active: admin.ClientStatus.ACTIVE, 'suspected-lost': admin.ClientStatus.SUSPECTED_LOST, revoked: admin.ClientStatus.REVOKED } as const;

export function adminService(deps: AdminServiceDeps) {
  const { auth, clients, jobs, reports, operators, tokens, log } = deps;
  return {
    createInvite: unary<admin.CreateInviteRequest, admin.CreateInviteReply>(async (req, call) => {
      const operator = auth.operator(call);
      const inv = await clients.createInvite({
        ...(req.ttlSeconds > 0 ? { ttlMs: req.ttlSeconds * 1000 } : {}),
        ...(req.clientId ? { clientId: req.clientId } : {}),
      });
      log?.info({ operator, forClient: req.clientId || undefined }, 'invite created');
      return create(admin.CreateInviteReplySchema, { token: inv.token, expiresAtMs: BigInt(inv.expiresAt) });
    }),
    listClients: unary<admin.ListClientsRequest, admin.ListClientsReply>((_req, call) => {
      auth.operator(call);
      clients.sweep();
      const list = clients.records().map((c) => {
        const status = clients.statusOf(c.clientId);
        const seen = clients.lastSeenOf(c.clientId);
        return create(admin.ClientInfoSchema, {
          clientId: c.clientId,
          enrolledAtMs: BigInt(c.enrolledAt),
          certificateExpiresAtMs: BigInt(c.certificateExpiresAt),
          revoked: status === 'revoked',
          revocationReason: status === 'revoked' ? revocationCodeOf(c) : '',
          revocationDetail: revocationDetailOf(c),
          revokedAtMs: BigInt(c.revokedAt ?? 0),
          ...(seen === undefined ? {} : { lastSeenAtMs: BigInt(seen) }),
          status: CLIENT_STATUS[status],
        });
      });
      return create(admin.ListClientsReplySchema, { clients: list });
    }),
    revokeClient: unary<admin.RevokeClientRequest, admin.RevokeClientReply>(async (req, call) => {
      const operator = auth.operator(call);
      const at = await clients.revoke(req.clientId, parseRevocationReason(req.reason), req.detail);
      const rec = clients.get(req.clientId)!;
      const serials = certificateSerialsOf(rec, Number.NEGATIVE_INFINITY).filter((s) => clients.isRevoked({ serial: s }));
      log?.warn({ operator, client: req.clientId }, 'revocation by operator');
      return create(admin.RevokeClientReplySchema, { revokedAtMs: BigInt(at), reason: revocationCodeOf(rec), serials });
    }),
    getCrl: unary<admin.GetCrlRequest, admin.GetCrlReply>(async (_req, call) => {
      auth.operator(call);
      const crl = await clients.signedCrl();
      return create(admin.GetCrlReplySchema, { pem: crl.pem, thisUpdateMs: BigInt(crl.thisUpdate), nextUpdateMs: BigInt(crl.nextUpdate), crlNumber: BigInt(crl.crlNumber), entries: crl.entries });
    }),
    launchRound: unary<admin.LaunchRoundRequest, admin.LaunchRoundReply>(async (req, call) => {
      const operator = auth.operator(call);
      const r = await jobs.requestLaunch(req.manifestJson, {
        gatherMs: req.gatherMs,
        ...(req.initialWeights.length > 0 ? { initialWeights: req.initialWeights } : {}),
        ...(req.signedManifest.length > 0 ? { signedManifest: req.signedManifest } : {}),
      });
      log?.info({ operator, job: r.jobId, round: r.roundIndex, cohort: r.cohort.length }, 'round launched');
      return create(admin.LaunchRoundReplySchema, { jobId: r.jobId, manifestHash: r.manifestHash, roundIndex: r.roundIndex, cohort: r.cohort, queuedAs: r.queued ?? '' });
    }),
    roundStatus: unary<admin.RoundStatusRequest, admin.RoundStatusReply>(async (req, call) => {
      auth.operator(call);
      return reports.statusAnywhere(req.jobId, req.roundIndex);
    }),
    roundResult: unary<admin.RoundResultRequest, admin.RoundResultReply>(async (req, call) => {
      auth.operator(call);
      return reports.resultAnywhere(req.jobId, req.roundIndex);
    }),
    listRounds: unary<admin.ListRoundsRequest, admin.ListRoundsReply>(async (_req, call) => {
      auth.operator(call);
      return create(admin.ListRoundsReplySchema, { jobs: await reports.listJobsEverywhere() });
    }),
    cancelRound: unary<admin.CancelRoundRequest, admin.CancelRoundReply>(async (req, call) => {
      const operator = auth.operator(call);
      const reason = req.reason.trim().slice(0, 200);
      const c = await reports.cancelAnywhere(req.jobId, reason ? `cancelled by operator ${operator}: ${reason}` : `cancelled by operator ${operator}`);
      log?.warn({ operator, job: req.jobId, round: c.roundIndex }, 'cancellation by operator');
      return create(admin.CancelRoundReplySchema, { jobId: req.jobId, roundIndex: c.roundIndex, phase: phaseToProto(c.phase), cancelledAtMs: BigInt(c.at) });
    }),
    issueDashboardToken: unary<admin.IssueDashboardTokenRequest, admin.IssueDashboardTokenReply>((req, call) => {
      const operator = auth.operator(call);
      const t = deps.issueDashboardToken(req.ttlSeconds > 0 ? req.ttlSeconds * 1000 : undefined);
      log?.info({ operator, expiresAt: new Date(t.expiresAt).toISOString() }, 'dashboard login token issued');
      return create(admin.IssueDashboardTokenReplySchema, { token: t.token, expiresAtMs: BigInt(t.expiresAt), url: t.url });
    }),
    fetchModel: serverStream<admin.FetchJobModelRequest, pb.ModelChunk>((req, call) => {
      auth.operator(call);
      const job = jobs.get(req.jobId);
      if (!job) throw new AegisError(ErrorCode.NotFound, `no job '${req.jobId}' has run here`);
      if (!job.training) throw new AegisError(ErrorCode.NotFound, `job '${req.jobId}' is not a training job`);
      const { models } = job.training;
      return modelChunks(req.version === undefined ? models.latest : models.get(req.version), job.manifestJson);
    }),
    listOperators: unary<admin.ListOperatorsRequest, admin.ListOperatorsReply>(async (_req, call) => {
      auth.operator(call);
      return create(admin.ListOperatorsReplySchema, { operators: (await operators.list()).map(operatorInfo) });
    }),
    issueOperator: unary<admin.IssueOperatorRequest, admin.IssueOperatorReply>(async (req, call) => {
      const operator = auth.operator(call);
      const r = await operators.issue(req.name, req.csrDer, ttlOf(req.ttlSeconds));
      log?.info({ operator, operatorName: req.name, expiresAt: new Date(r.record.expiresAt).toISOString() }, 'operator credential issued by operator');
      return create(admin.IssueOperatorReplySchema, { certificateDer: r.certificateDer, caCertificateDer: deps.caCertificateDer, operator: operatorInfo({ ...r.record, status: 'active' }) });
    }),
    reissueOperator: unary<admin.ReissueOperatorRequest, admin.ReissueOperatorReply>(async (req, call) => {
      const operator = auth.operator(call);
      const r = await operators.reissue(req.name, req.csrDer.length > 0 ? req.csrDer : undefined, ttlOf(req.ttlSeconds));
      log?.info({ operator, operatorName: req.name, superseded: r.superseded.length }, 'operator credential reissued by operator');
      return create(admin.ReissueOperatorReplySchema, {
        ...(r.certificateDer ? { certificateDer: r.certificateDer } : {}),
        caCertificateDer: deps.caCertificateDer,
        operator: operatorInfo({ ...r.record, status: 'active' }),
        superseded: r.superseded,
      });
    }),
    revokeOperator: unary<admin.RevokeOperatorRequest, admin.RevokeOperatorReply>(async (req, call) => {
      const operator = auth.operator(call);
      const reason = parseRevocationReason(req.reason);
      if ((req.name === '') === (req.serial === '')) throw new AegisError(ErrorCode.InvalidArgument, 'name an operator or one certificate serial, not both');
      const r = await operators.revoke(req.name ? { name: req.name } : { serial: req.serial }, reason, req.detail);
      log?.warn({ operator, serials: r.serials.length, reason }, 'operator revocation by operator');
      return create(admin.RevokeOperatorReplySchema, { serials: r.serials, revokedAtMs: BigInt(r.revokedAt), reason, known: r.known });
    }),
    revokeTokens: unary<admin.RevokeTokensRequest, admin.RevokeTokensReply>(async (req, call) => {
      const operator = auth.operator(call);
      const given = [req.jti, req.token, req.clientId].filter((v) => v !== '').length;
      if (given !== 1) throw new AegisError(ErrorCode.InvalidArgument, 'name exactly one of a jti, a token or a client id');
      let r: TokenRevocation;
      if (req.jti) r = await tokens.revokeToken(req.jti);
      else if (req.token) {
        r = await tokens.revokeTokenString(req.token).catch((e: unknown) => {
          // The token's own refusal reason (malformed, bad-signature...), as invalid input here.
          throw new AegisError(ErrorCode.InvalidArgument, `not a token this coordinator issued (${e instanceof Error ? e.message : 'refused'})`);
        });
      } else r = await tokens.revokeClientTokens(req.clientId);
      log?.warn({ operator, ...(r.clientId ? { client: r.clientId } : {}), kind: req.clientId ? 'client' : 'one' }, 'token revocation by operator');
      return tokenRevocationReply(r);
    }),
  };
}
