/**
 * Round-token revocation and replay over real gRPC and TLS 1.3 on loopback, nothing mocked: an
 * operator revokes one token by its jti or whole, or every token of a client issued up to now
 * (Admin.RevokeTokens); those are refused as `revoked` on their next use while other tokens and
 * other clients pass; a client runner whose tokens were revoked fetches new ones and goes on (it
 * is not revoked); and a token spent before a coordinator restart on the same data dir (close,
 * then a new Coordinator over the same tokens.log) is refused as `replayed` after it.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import { createCa, issueOperatorCertificate } from '../../coordinator/auth/ca.js';
import { LocalTokenLedger, TOKEN_LEDGER_FILE } from '../../coordinator/auth/seen-tokens.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Registry } from '../../coordinator/clients/registry.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import { callUnary } from '../../shared/rpc/service.js';
import { enrollClients, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { adminClient, bearer, credentialsOf, heartbeat, issueTokens, mtls, refusal, secAgg, type AdminClient, type SecAggClient } from '../support/raw-calls.js';

const previousMinVersion = tls.DEFAULT_MIN_VERSION;
let now = Date.now();
const clock = (): number => now;
const tokens = TokenIssuer.create({ clock });
let dir: string;
let c: Coordinator;
let ops: AdminClient;
let alice: Enrolled;
let bob: Enrolled;
let aliceCalls: SecAggClient;
let bobCalls: SecAggClient;
const closers: { close: () => void }[] = [];

const revokeTokens = (req: { jti?: string; token?: string; clientId?: string }) => callUnary(ops.revokeTokens.bind(ops), create(admin.RevokeTokensRequestSchema, req));
const beat = (cl: SecAggClient, token: string) => heartbeat(cl, bearer(token));
const refusedAs = (why: string) => ({ code: grpc.status.UNAUTHENTICATED, codeName: 'UNAUTHENTICATED', reason: ErrorCode.Unauthenticated, details: `token refused: ${why}` });
const jtiOf = (token: string): string => (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'aegis-token-revocation-'));
  c = await startCoordinator({ clock, tokens, dataDir: dir, tokenLedger: await LocalTokenLedger.open(join(dir, TOKEN_LEDGER_FILE), Math.floor(now / 1000)) });
  [alice, bob] = (await enrollClients(c, 2, 'device')) as [Enrolled, Enrolled];
  const op = await issueOperatorCertificate(c.ca, { name: 'ops' });
  ops = adminClient(c.address, mtls(c.ca.certificatePem, op.privateKeyPem, op.certificateDer));
  aliceCalls = secAgg(c.address, credentialsOf(c.ca.certificatePem, alice));
  bobCalls = secAgg(c.address, credentialsOf(c.ca.certificatePem, bob));
  closers.push(ops, aliceCalls, bobCalls);
});

afterAll(async () => {
  for (const x of closers) x.close();
  await c.close();
  rmSync(dir, { recursive: true, force: true });
  tls.DEFAULT_MIN_VERSION = previousMinVersion;
});

describe('aegis tokens revoke, over the Admin service', () => {
  test('one token by its jti: refused as revoked; its siblings pass', async () => {
    const [a1, a2] = (await issueTokens(aliceCalls, 2)) as [string, string];
    const r = await revokeTokens({ jti: jtiOf(a1) });
    expect(r).toMatchObject({ jti: jtiOf(a1), clientId: '', alreadyExpired: false });
    expect(Number(r.untilMs)).toBeGreaterThanOrEqual(now + 14 * 60_000);
    await expect(refusal(beat(aliceCalls, a1))).resolves.toEqual(refusedAs('revoked'));
    await expect(beat(aliceCalls, a2)).resolves.toBeDefined();
  });

  test('one token given whole: checked to be ours, then refused as revoked; a forged one revokes nothing', async () => {
    const [a1, a2] = (await issueTokens(aliceCalls, 2)) as [string, string];
    const r = await revokeTokens({ token: a1 });
    expect(r).toMatchObject({ jti: jtiOf(a1), clientId: alice.clientId, alreadyExpired: false });
    await expect(refusal(beat(aliceCalls, a1))).resolves.toEqual(refusedAs('revoked'));
    const [h, p, s] = a2.split('.') as [string, string, string];
    const forged = `${h}.${p}.${Buffer.from(Buffer.from(s, 'base64url').map((b, i) => (i === 0 ? b ^ 1 : b))).toString('base64url')}`;
    await expect(refusal(revokeTokens({ token: forged }))).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/not a token this coordinator issued.*bad-signature/) });
    await expect(beat(aliceCalls, a2)).resolves.toBeDefined();
  });

  test("every token of a client issued up to now: refused; the client's later tokens and other clients' pass", async () => {
    const pool = await issueTokens(aliceCalls, 3);
    const [b1] = (await issueTokens(bobCalls, 1)) as [string];
    const r = await revokeTokens({ clientId: alice.clientId });
    expect(r).toMatchObject({ clientId: alice.clientId, jti: '' });
    expect(Number(r.issuedUpToMs)).toBe(Math.floor(now / 1000) * 1000);
    for (const t of pool) await expect(refusal(beat(aliceCalls, t))).resolves.toEqual(refusedAs('revoked'));
    await expect(beat(bobCalls, b1)).resolves.toBeDefined();
    // A second on, new tokens of the client pass: the client itself is not revoked.
    now += 1000;
    const [fresh] = (await issueTokens(aliceCalls, 1)) as [string];
    await expect(beat(aliceCalls, fresh)).resolves.toBeDefined();
    expect(c.clientStatus(alice.clientId)).toBe('active');
  });

  test('a request naming none, or more than one, of jti, token and client is invalid; an unknown jti shape too', async () => {
    await expect(refusal(revokeTokens({}))).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/exactly one/) });
    await expect(refusal(revokeTokens({ jti: 'a'.repeat(22), clientId: 'x' }))).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(refusal(revokeTokens({ jti: 'short' }))).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(refusal(revokeTokens({ clientId: 'bad id!' }))).resolves.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
  });

  test('a running client whose tokens are revoked fetches new ones and goes on heartbeating', async () => {
    const events: RunnerEvent[] = [];
    const [runner] = startRunners(c, [bob], 2, (_id, e) => events.push(e), () => ({ heartbeatMs: 100 })) as [ClientRunner];
    try {
      await waitFor(() => events.some((e) => e.kind === 'heartbeat' && e.ok), 20_000, 'a first heartbeat');
      const mark = events.length;
      // While the clock stays in the revocation's second, every token the runner has or fetches is refused.
      await revokeTokens({ clientId: bob.clientId });
      await waitFor(() => events.slice(mark).some((e) => e.kind === 'heartbeat' && !e.ok && e.code === ErrorCode.Unauthenticated), 20_000, 'a heartbeat refused');
      const refusedAt = events.length;
      now += 1000; // tokens fetched from now on are issued after the revocation
      await waitFor(() => events.slice(refusedAt).filter((e) => e.kind === 'heartbeat' && e.ok).length >= 2, 20_000, 'heartbeats going on');
      expect(events.some((e) => e.kind === 'fatal')).toBe(false);
    } finally {
      await runner.stop();
    }
  });
});

describe('a coordinator restarted on the same data dir', () => {
  test('a token spent before the restart is refused as replayed after it; unused ones and revocations carry over', async () => {
    const ca = await createCa({ name: 'Restart test CA' });
    const issuer = TokenIssuer.create();
    const registry = new Registry();
    const data = mkdtempSync(join(tmpdir(), 'aegis-token-restart-'));
    const open = async (): Promise<Coordinator> =>
      startCoordinator({ ca, tokens: issuer, registry, dataDir: data, tokenLedger: await LocalTokenLedger.open(join(data, TOKEN_LEDGER_FILE), Math.floor(Date.now() / 1000)) });
    let first: Coordinator | undefined = await open();
    let second: Coordinator | undefined;
    try {
      const [dev] = (await enrollClients(first, 1, 'restart')) as [Enrolled];
      const calls1 = secAgg(first.address, credentialsOf(ca.certificatePem, dev));
      const [spent, unused, revoked] = (await issueTokens(calls1, 3)) as [string, string, string];
      await beat(calls1, spent);
      await first.verifier.revokeToken(jtiOf(revoked));
      calls1.close();
      await first.close();
      first = undefined;

      second = await open();
      const calls2 = secAgg(second.address, credentialsOf(ca.certificatePem, dev));
      closers.push(calls2);
      await expect(refusal(beat(calls2, spent))).resolves.toEqual(refusedAs('replayed'));
      await expect(refusal(beat(calls2, revoked))).resolves.toEqual(refusedAs('revoked'));
      await expect(beat(calls2, unused)).resolves.toBeDefined();
      await expect(refusal(beat(calls2, unused))).resolves.toEqual(refusedAs('replayed'));
    } finally {
      await first?.close();
      await second?.close();
      rmSync(data, { recursive: true, force: true });
    }
  });
});
