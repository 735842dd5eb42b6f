/**
 * Two coordinator front ends of one deployment (same CA, token key and registry; round tokens on
 * one real Redis under the suite's prefix), over real gRPC and TLS 1.3: a token a client spent on
 * front end A is refused as `replayed` on front end B, and a revocation an operator makes through
 * A's Admin service is refused on B.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { createCa, issueOperatorCertificate } from '../../coordinator/auth/ca.js';
import { RedisTokenLedger } from '../../coordinator/auth/seen-tokens.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Registry } from '../../coordinator/clients/registry.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import { callUnary } from '../../shared/rpc/service.js';
import { enrollClients, startCoordinator, type Enrolled } from '../support/cluster.js';
import { adminClient, bearer, credentialsOf, heartbeat, issueTokens, mtls, refusal, secAgg, type SecAggClient } from '../support/raw-calls.js';
import { useTestRedis } from '../support/redis.js';

const r = useTestRedis();
const previousMinVersion = tls.DEFAULT_MIN_VERSION;
let a: Coordinator;
let b: Coordinator;
let dev: Enrolled;
let onA: SecAggClient;
let onB: SecAggClient;
const closers: { close: () => void }[] = [];
const refusedAs = (why: string) => ({ code: grpc.status.UNAUTHENTICATED, codeName: 'UNAUTHENTICATED', reason: ErrorCode.Unauthenticated, details: `token refused: ${why}` });

beforeAll(async () => {
  const ca = await createCa({ name: 'Front ends test CA' });
  const tokens = TokenIssuer.create();
  const registry = new Registry();
  const frontEnd = (): Promise<Coordinator> => startCoordinator({ ca, tokens, registry, tokenLedger: new RedisTokenLedger(r.redis, { prefix: r.prefix }) });
  a = await frontEnd();
  b = await frontEnd();
  [dev] = (await enrollClients(a, 1, 'roaming')) as [Enrolled];
  onA = secAgg(a.address, credentialsOf(ca.certificatePem, dev));
  onB = secAgg(b.address, credentialsOf(ca.certificatePem, dev));
  closers.push(onA, onB);
});

afterAll(async () => {
  for (const x of closers) x.close();
  await a.close();
  await b.close();
  tls.DEFAULT_MIN_VERSION = previousMinVersion;
});

describe('round tokens across front ends on Redis', () => {
  test('a token spent on front end A is refused as replayed on front end B; an unused one passes there once', async () => {
    const [t1, t2] = (await issueTokens(onA, 2)) as [string, string];
    await heartbeat(onA, bearer(t1));
    await expect(refusal(heartbeat(onB, bearer(t1)))).resolves.toEqual(refusedAs('replayed'));
    await heartbeat(onB, bearer(t2));
    await expect(refusal(heartbeat(onA, bearer(t2)))).resolves.toEqual(refusedAs('replayed'));
  });

  test("a client's tokens revoked through A's Admin service are refused on B", async () => {
    const op = await issueOperatorCertificate(a.ca, { name: 'ops' });
    const ops = adminClient(a.address, mtls(a.ca.certificatePem, op.privateKeyPem, op.certificateDer));
    closers.push(ops);
    const pool = await issueTokens(onB, 2);
    await callUnary(ops.revokeTokens.bind(ops), create(admin.RevokeTokensRequestSchema, { clientId: dev.clientId }));
    for (const t of pool) await expect(refusal(heartbeat(onB, bearer(t)))).resolves.toEqual(refusedAs('revoked'));
  });
});
