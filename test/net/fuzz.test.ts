/**
 * A protocol fuzzer against one coordinator, over real gRPC and TLS 1.3 on loopback. An enrolled
 * member (its own certificate and fresh round tokens, so every call passes authentication) sends
 * fast-check-generated calls: each phase's message kind with hostile field values (wrong
 * lengths, other rounds, sessions, views, manifests and senders, vectors of the wrong dimension,
 * empty and oversized repeated fields, numbers the proto cannot hold), messages of the wrong
 * phase, replays of other rounds and other clients, raw mutations of valid encodings (bit flips,
 * truncation, extension), in sequences of one to three; then every other RPC (SecAgg, Enrollment,
 * Admin as an operator, Trust, health) with hostile requests, and the wrong certificate on each.
 *
 * The round is held in each phase in turn: the member's own runner and one other hold their
 * messages back, first both (every generated message must then be refused), then only the other
 * (the member has answered: everything is refused too, resends included). Every refusal must be a
 * status with an `aegis-reason` whose gRPC code is that reason's, never INTERNAL or UNKNOWN, and
 * leave the observable state as it was (each round's status and counts per phase, the job list,
 * the client registry, the operators, the connected clients). Afterwards the fuzzed round has
 * completed with the exact sum, the coordinator answers SERVING, a new honest round is exact, and
 * no unhandled rejection, uncaught exception or error log line occurred.
 *
 * Budget: AEGIS_FUZZ_RUNS runs per property (default in test/support/fuzz-gen.ts), seed
 * AEGIS_FUZZ_SEED; a failure names both, to replay it (docs/protocol.md, "Fuzzing the protocol").
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import { create, toJson } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import type { ClientRunner } from '../../client/agent/connection.js';
import { createCsr } from '../../client/enroll/csr.js';
import { issueOperatorCertificate } from '../../coordinator/auth/ca.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import type { ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { ClientMessage } from '../../shared/protocol/messages.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { phaseToProto } from '../../shared/rpc/convert.js';
import { callUnary } from '../../shared/rpc/service.js';
import { GRPC_STATUS, reasonOf } from '../../shared/rpc/status.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';
import { answeredPhaseCalls, fuzzSettings, heldPhaseCalls, otherRpcCalls, type Call, type RoundContext, type RpcContext } from '../support/fuzz-gen.js';
import { memoryLog, watchCrashes, type CrashWatch, type MemoryLog } from '../support/fuzz-watch.js';
import { bearer, credentialsOf, healthStatus, holdBefore, issueTokens, mtls, onSend, rawClient, releaseAll, secAgg, TokenPool, type Held, type RawOutcome, type SecAggClient } from '../support/raw-calls.js';

const { seed, numRuns } = fuzzSettings();
const REPLAY = `AEGIS_FUZZ_SEED=${seed} AEGIS_FUZZ_RUNS=${numRuns} npm run -s jest -- test/net/fuzz.test.ts`;
const DIM = 16;
const MAX_MESSAGE_BYTES = 256 * 1024;
/** Phase deadlines of the fuzzed round: no phase may close on its own while it is fuzzed. */
const PHASE_MS = 600_000 + numRuns * 5_000;
const DEADLINES = { advertiseMs: PHASE_MS, shareMs: PHASE_MS, maskedMs: PHASE_MS, consistencyMs: PHASE_MS, unmaskMs: PHASE_MS };
/**
 * Four members, classic SecAgg, t = 3: with two members holding back their unmask responses a
 * secret has two shares at most, and with one still holding back some secret has two; the
 * unmasking phase stays open in both stages.
 */
const ROUND = { dim: DIM, cohort: 4, neighbors: 3, threshold: 3 };

let watch: CrashWatch;
let logs: MemoryLog;
let c: Coordinator;
let members: Enrolled[];
let outsider: Enrolled;
let runners: ClientRunner[] = [];
let operator: { name: string; serial: string; creds: grpc.ChannelCredentials };
const closers: { close: () => void }[] = [];
let raw: Record<'attacker' | 'outsider' | 'operator' | 'anonymous', ReturnType<typeof rawClient>>;
let attacker: SecAggClient;
let pools: { attacker: TokenPool; outsider: TokenPool };
/** A round token the attacker has used already. */
let spentToken: string;
/** The job each runner's messages belong to, as the test launches them. */
let currentJob = '';
const recorded: { job: string; msg: ClientMessage }[] = [];
/** What the fuzzer sent and how it was answered. */
const tally = { calls: 0, taken: 0, refusedBy: new Map<string, number>() };

beforeAll(async () => {
  watch = watchCrashes();
  logs = memoryLog();
  c = await startCoordinator({ maxMessageBytes: MAX_MESSAGE_BYTES, log: logs.log });
  members = await enrollClients(c, 4, 'member');
  [outsider] = (await enrollClients(c, 1, 'outsider')) as [Enrolled];
  const op = await issueOperatorCertificate(c.ca, { name: 'fuzz-op' });
  operator = { name: 'fuzz-op', serial: new X509Certificate(Buffer.from(op.certificateDer)).serialNumber, creds: mtls(c.ca.certificatePem, op.privateKeyPem, op.certificateDer) };
  const attackerCreds = credentialsOf(c.ca.certificatePem, members[0]!);
  raw = {
    attacker: rawClient(c.address, attackerCreds),
    outsider: rawClient(c.address, credentialsOf(c.ca.certificatePem, outsider)),
    operator: rawClient(c.address, operator.creds),
    anonymous: rawClient(c.enrollAddress, grpc.credentials.createSsl(Buffer.from(c.ca.certificatePem))),
  };
  closers.push(...Object.values(raw));
  attacker = secAgg(c.address, attackerCreds);
  const outsiderClient = secAgg(c.address, credentialsOf(c.ca.certificatePem, outsider));
  closers.push(attacker, outsiderClient);
  pools = { attacker: new TokenPool(attacker), outsider: new TokenPool(outsiderClient) };
  [spentToken] = (await issueTokens(attacker, 1)) as [string];
  await callUnary(attacker.heartbeat.bind(attacker), create(pb.HeartbeatRequestSchema, {}), bearer(spentToken));

  // The same inputs in every round: the clients opt in to contribute them again.
  runners = startRunners(c, members, DIM, undefined, () => ({ inputReuse: true }));
  for (const r of runners) onSend(r, () => undefined, (msg, err) => void (err === undefined && recorded.push({ job: currentJob, msg })));
  await waitFor(() => members.every((m) => c.connectedClients().includes(m.clientId)), 20_000, 'four subscribers');
});

afterAll(async () => {
  releaseAll();
  await Promise.all(runners.map((r) => r.stop()));
  for (const x of closers) x.close();
  await c?.close();
  watch?.stop();
});

// ---------------------------------------------------------------------------------------------
// Sending a call and judging the answer.

async function metadataFor(call: Call): Promise<grpc.Metadata> {
  switch (call.auth) {
    case 'token':
      return call.as === 'attacker' || call.as === 'outsider' ? pools[call.as].next() : new grpc.Metadata();
    case 'none':
      return new grpc.Metadata();
    case 'garbage':
      return bearer('eyJhbGciOiJFZERTQSJ9.garbage.garbage');
    case 'replayed':
      return bearer(spentToken);
  }
}

async function perform(call: Call): Promise<RawOutcome> {
  const md = await metadataFor(call);
  const client = raw[call.as];
  if (call.stream) return client.stream(call.path, call.bytes, md, { untilHeaders: call.staysOpen === true });
  try {
    return { ok: true, replies: [await client.unary(call.path, call.bytes, md)] };
  } catch (e) {
    const err = e as grpc.ServiceError;
    if (typeof err.code !== 'number') throw e;
    return { ok: false, refusal: { code: err.code, codeName: grpc.status[err.code], reason: reasonOf(err), details: err.details } };
  }
}

const volatile = (o: Record<string, unknown>, keys: string[]): Record<string, unknown> => {
  for (const k of keys) delete o[k];
  return o;
};

/** What a refused message must leave as it was. */
async function snapshot(): Promise<unknown> {
  const jobs = c.listJobs();
  const registry = JSON.parse(JSON.stringify(c.registry.toJSON())) as { clients: Record<string, unknown>[] };
  for (const r of registry.clients) delete r.lastSeenAt;
  return {
    jobs: jobs.map((j) => volatile(toJson(admin.JobInfoSchema, j) as Record<string, unknown>, ['elapsedMs'])),
    // The per-round refusal counter and the elapsed time are the two fields a refusal may move.
    rounds: jobs.map((j) => volatile(toJson(admin.RoundStatusReplySchema, c.statusOf(j.jobId)) as Record<string, unknown>, ['elapsedMs', 'refused'])),
    registry,
    operators: await c.operators.list(),
    connected: c.connectedClients().filter((id) => id !== outsider.clientId).sort(),
  };
}

async function check(call: Call): Promise<void> {
  if (call.withSlot) await callUnary(attacker.acquireUpload.bind(attacker), create(pb.AcquireUploadRequestSchema, {}), await pools.attacker.next());
  const before = await snapshot();
  const out = await perform(call);
  tally.calls++;
  if (out.ok) {
    tally.taken++;
    if (call.expect === 'refused') throw new Error(`taken, but it must be refused: ${call.label}`);
    return;
  }
  const r = out.refusal;
  const seen = `${r.codeName} ${r.reason ?? '(no aegis-reason)'}: ${r.details}`;
  tally.refusedBy.set(`${r.codeName}/${r.reason ?? '-'}`, (tally.refusedBy.get(`${r.codeName}/${r.reason ?? '-'}`) ?? 0) + 1);
  if (r.code === grpc.status.INTERNAL || r.code === grpc.status.UNKNOWN || r.reason === undefined) throw new Error(`refused without a stable reason (${seen}): ${call.label}`);
  if (r.code !== GRPC_STATUS[r.reason as ErrorCode]) throw new Error(`refused with ${r.codeName}, but the reason ${r.reason} is ${grpc.status[GRPC_STATUS[r.reason as ErrorCode]]} (${seen}): ${call.label}`);
  const after = await snapshot();
  try {
    expect(after).toEqual(before);
  } catch (e) {
    throw new Error(`refused (${seen}) but the state changed: ${call.label}\n${(e as Error).message}`, { cause: e });
  }
}

let properties = 0;

/** Runs `numRuns` sequences of 1-3 calls from `calls`, each checked; a failure names the replay command. */
async function fuzz(name: string, calls: fc.Arbitrary<Call>): Promise<void> {
  const propertySeed = (seed + 7919 * properties++) | 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(calls, { minLength: 1, maxLength: 3 }), async (seq) => {
        for (const x of seq) await check(x);
      }),
      { seed: propertySeed, numRuns, endOnFailure: true },
    );
  } catch (e) {
    const cause = (e as Error).cause;
    const why = cause instanceof Error ? `\nFirst failure: ${cause.message}` : '';
    throw new Error(`protocol fuzzer, property '${name}' failed (AEGIS_FUZZ_SEED=${seed}, property seed ${propertySeed}); replay with:\n  ${REPLAY}\n${(e as Error).message}${why}`, { cause: e });
  }
}

// ---------------------------------------------------------------------------------------------

const PHASE_OF: Record<Exclude<ClientMessage['type'], 'decline'>, Phase> = {
  'advertise-keys': Phase.AdvertiseKeys,
  'share-keys': Phase.ShareKeys,
  'masked-input': Phase.MaskedInput,
  'consistency-signature': Phase.ConsistencyCheck,
  'unmask-response': Phase.Unmasking,
};

const exact = (sum: Uint32Array, who: number[]): boolean => Buffer.from(sum.buffer, sum.byteOffset, sum.byteLength).equals(Buffer.from(expectedSum(who, DIM).buffer));

async function honestRound(jobId: string): Promise<void> {
  currentJob = jobId;
  const done = runners.map((r) => r.agent.history.length);
  await c.launch(manifest({ jobId, round: ROUND }));
  const o = await c.outcomeOf(jobId, 0);
  expect(o.ok).toBe(true);
  if (!o.ok) return;
  expect([...o.survivors].sort()).toEqual(members.map((m) => m.clientId).sort());
  expect(exact(o.sum, [0, 1, 2, 3])).toBe(true);
  await waitFor(() => runners.every((r, i) => r.agent.history.length > done[i]!), 20_000, 'outcomes at every member');
}

describe(`protocol fuzzer (seed ${seed}, ${numRuns} runs per property)`, () => {
  test('an honest round completes first (its messages are replayed later as another round)', async () => {
    await honestRound('warmup');
  });

  test('a round held in each phase: every hostile, mutated, repeated or misplaced message is refused with a reason and changes nothing; the round completes exact', async () => {
    const [att, slow] = [runners[0]!, runners[1]!];
    const kinds = Object.keys(PHASE_OF) as (keyof typeof PHASE_OF)[];
    const holds: { type: keyof typeof PHASE_OF; mine: Held; other: Held }[] = kinds.map((type) => ({ type, mine: holdBefore(att, type), other: holdBefore(slow, type) }));
    currentJob = 'fuzz';
    const manifestJson = manifest({ jobId: 'fuzz', round: ROUND, deadlines: DEADLINES });
    await c.launch(manifestJson);
    const ctx: RoundContext = { clientId: members[0]!.clientId, others: members.slice(1).map((m) => m.clientId), dim: DIM, genuine: {}, replays: [] };
    for (const { type, mine, other } of holds) {
      ctx.genuine[type] = await mine.reached;
      await other.reached;
      // Another round's messages (every client's), and this round's of the other clients so far.
      ctx.replays = recorded.filter((r) => r.job === 'warmup' || r.msg.clientId !== ctx.clientId).map((r) => r.msg);
      const phase = phaseToProto(PHASE_OF[type]);
      expect(c.statusOf('fuzz').phase).toBe(phase);
      // The two other members have answered the phase: from now on only the fuzzer's calls reach it.
      const host = c.jobs.get('fuzz')!.rounds[0]!.host;
      await waitFor(() => host.status().received === members.length - 2, 20_000, `the other members' ${type}`);

      await fuzz(`${type}, the sender's own held back`, heldPhaseCalls(ctx, type));
      expect(c.statusOf('fuzz').phase).toBe(phase);
      mine.release();
      await mine.sent;
      expect(host.status().received).toBe(members.length - 1);
      await fuzz(`${type}, the sender's own taken`, answeredPhaseCalls(ctx, type));
      if (type === 'masked-input') {
        const rpcCtx: RpcContext = {
          ...ctx,
          liveJobs: ['fuzz'],
          jobs: ['warmup', 'fuzz'],
          protectedIds: [...members.map((m) => m.clientId), outsider.clientId],
          operator,
          csrDer: await createCsr(members[0]!.identity, members[0]!.clientId),
          manifestJson,
        };
        await fuzz('every other RPC', otherRpcCalls(rpcCtx));
      }
      expect(c.statusOf('fuzz').phase).toBe(phase);
      other.release();
    }
    const o = await c.outcomeOf('fuzz', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    // Nothing the fuzzer sent entered the sum.
    expect([...o.survivors].sort()).toEqual(members.map((m) => m.clientId).sort());
    expect(exact(o.sum, [0, 1, 2, 3])).toBe(true);
    await waitFor(() => runners.every((r) => r.agent.history.length === 2), 20_000, 'outcomes at every member');
    expect(runners.every((r) => r.agent.history[1]!.ok)).toBe(true);
  }, 600_000 + numRuns * 60_000);

  test('afterwards the coordinator answers SERVING, an honest round on it is exact, and nothing crashed or logged an error', async () => {
    expect(tally.calls).toBeGreaterThan(0);
    const asMember = credentialsOf(c.ca.certificatePem, members[2]!);
    await expect(healthStatus(c.address, asMember)).resolves.toBe('SERVING');
    await expect(healthStatus(c.address, asMember, 'aegis.v1.SecAgg')).resolves.toBe('SERVING');
    await expect(healthStatus(c.enrollAddress, grpc.credentials.createSsl(Buffer.from(c.ca.certificatePem)))).resolves.toBe('SERVING');
    await honestRound('after');
    expect(watch.crashes).toEqual([]);
    const lines = logs.lines();
    expect(lines.filter((l) => Number(l.level) >= 50)).toEqual([]);
    expect(lines.filter((l) => l.code === 'internal')).toEqual([]);
    const by = [...tally.refusedBy.entries()].sort(([, a], [, b]) => b - a).map(([k, n]) => `${k} ${n}`);
    console.log(`protocol fuzzer: seed ${seed}, ${numRuns} runs per property, ${properties} properties, ${tally.calls} calls, ${tally.taken} taken (calls that may be), refused: ${by.join(', ')}`);
  });
});
