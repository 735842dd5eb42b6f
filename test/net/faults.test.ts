/**
 * Rounds over a bad network: a coordinator and ten `aegis client run` processes (the built CLI,
 * each with its own sealed data dir), every process connected through a fault proxy of its own
 * (test/support/fault-proxy.ts: a user-space TCP proxy; TLS 1.3 and mTLS pass through it
 * untouched). The faults are switched on from the coordinator's `tap`, which fires just before
 * a phase's first message is queued for a client, so each one lands in the phase it is meant
 * for. Every case ends in the exact sum over the survivors (the survivors' inputs are summed
 * here, word by word) or a typed abort, within the deadlines its manifest sets:
 *
 * - 100 ms each way and 1 MB/s on every link at m = 10^5, with deadlines computed from m, the
 *   cap and the latency;
 * - a stalled upload (the link stops after half of the masked input): that client is a dropout;
 * - a reset in the middle of the upload (the Send is retried on a new connection) and of the
 *   Subscribe stream as the round starts (the round start is sent again on reconnect): that
 *   client reconnects with backoff and is in the sum;
 * - 20 % of the clients blackholed (silent, not disconnected) as each of the five phases opens:
 *   the phase closes at its deadline (unmasking: once it has t shares of every secret, which
 *   the others give), they are dropouts (their input stays in the sum when they went silent
 *   after sending it), and, once the partition heals, they take part again.
 */
import { sumBitsOf } from '../../shared/protocol/params.js';
import { packedBytes } from '../../shared/crypto/bitpack.js';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { enrollWithToken } from '../../client/agent/connection.js';
import { openOrCreateIdentity, saveEnrollment } from '../../client/agent/data-dir.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import type { PhaseDeadlines, ServerEvent } from '../../shared/protocol/messages.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { CLI } from '../support/cli.js';
import { manifest, startCoordinator, waitFor } from '../support/cluster.js';
import { FaultProxy } from '../support/fault-proxy.js';

const N = 10;
const BITS = 16;
const LEVELS = 2 ** BITS - 1;
const BIG = 100_000;
/** The packed vector of a masked input at m = BIG: m + 1 words of r = ⌈log2 N⌉ + BITS bits. */
const MASKED = packedBytes(BIG + 1, sumBitsOf({ cohort: N, bits: BITS }));
const SMALL = 64;
const PASSPHRASE = 'faults passphrase, long enough';

interface Proc {
  id: string;
  index: number;
  dir: string;
  input: string;
  proxy: FaultProxy;
  child: ChildProcess;
  exited: Promise<number | null>;
  /** stderr: the process's JSON log lines. */
  stderr: string[];
}

/** Client i's update: grid values (k / LEVELS * 2 - 1), so quantization is exact: word j = k. */
const gridWord = (i: number, j: number): number => ((i + 1) * 7919 + j * 104729) % (LEVELS + 1);
const WEIGHT = (i: number): number => 1 + (i % 5);

/** Writes each client's input file for vectors of `dim` values (read again at each round). */
function writeInputs(dim: number, to: readonly Pick<Proc, 'index' | 'input'>[] = procs): void {
  for (const p of to) {
    const values = Array.from({ length: dim }, (_, j) => (gridWord(p.index, j) / LEVELS) * 2 - 1);
    writeFileSync(p.input, JSON.stringify({ values, weight: WEIGHT(p.index) }));
  }
}

/** The sum the coordinator must learn: the survivors' words and weights, mod 2^32. */
function expectedSum(ids: readonly string[], dim: number): Uint32Array {
  const s = new Uint32Array(dim + 1);
  for (const id of ids) {
    const i = byId(id).index;
    for (let j = 0; j < dim; j++) s[j] = (s[j]! + gridWord(i, j)) >>> 0;
    s[dim] = (s[dim]! + WEIGHT(i)) >>> 0;
  }
  return s;
}

function expectExactSum(sum: Uint32Array, survivors: readonly string[], dim: number): void {
  const want = expectedSum(survivors, dim);
  expect(sum.length).toBe(dim + 1);
  const first = want.findIndex((w, j) => sum[j] !== w);
  expect(first === -1 ? 'exact' : `word ${first}: got ${sum[first]}, want ${want[first]}`).toBe('exact');
}

/**
 * Phase deadlines from the network alone (m, the cap and the latency), not from this machine's
 * speed. A phase moves each client's largest message of the phase (`bytes`) over its link: at
 * the cap, and at most one HTTP/2 window (64 KiB, the default a gRPC stream starts with) per
 * round trip. Around it go about ten round trips (the event down, a token batch, an upload
 * slot, the Send and its answer, with room to spare). Generous: four times that, plus 5 s for
 * the work at both ends.
 */
function networkDeadlines(maskedBytes: number, bytesPerSecond: number, latencyMs: number): PhaseDeadlines {
  const rtt = 2 * latencyMs;
  const window = 65_535;
  const transferMs = (bytes: number): number => (bytes / bytesPerSecond) * 1000 + Math.ceil(bytes / window) * rtt;
  const phase = (bytes: number): number => Math.ceil(5_000 + 4 * (10 * rtt + transferMs(bytes)));
  // Keys, shares, signatures and unmask answers fit the 64 KiB a Send may carry without a slot.
  const small = 64 * 1024;
  return { advertiseMs: phase(small), shareMs: phase(small), maskedMs: phase(maskedBytes), consistencyMs: phase(small), unmaskMs: phase(small) };
}

let coordinator: Coordinator;
let root: string;
const procs: Proc[] = [];
const byId = (id: string): Proc => procs.find((p) => p.id === id)!;
/** What to do to which client when which event is about to reach it (run once, from the tap). */
const faultAt = new Map<string, { at: ServerEvent['type']; run: (p: Proc) => void }>();
const fired: { id: string; at: ServerEvent['type'] }[] = [];

function spawnClient(p: Omit<Proc, 'child' | 'exited' | 'stderr'>): Proc {
  const child = spawn(
    process.execPath,
    [CLI, 'client', 'run', '--data-dir', p.dir, '--coordinator', p.proxy.address, '--input', p.input, '--input-reuse', '--allow-unsigned', '--heartbeat-interval', '0'],
    { env: { ...process.env, AEGIS_PASSPHRASE: PASSPHRASE, AEGIS_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const stderr: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (d: string) => stderr.push(d));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  return { ...p, child, exited, stderr };
}

/** The JSON log lines a process wrote from `from` (an index into its stderr chunks) on. */
function logLines(p: Proc, from = 0): Record<string, unknown>[] {
  return p.stderr
    .slice(from)
    .join('')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'aegis-faults-'));
  coordinator = await startCoordinator({
    // A client away from its stream counts as gone for its phases after 10 s here (default 2 s),
    // so a reconnect on a busy machine does not race that grace; no case relies on a client
    // being gone (a blackholed one keeps its stream open).
    lostAfterMs: 10_000,
    tap: (clientId, type) => {
      const f = faultAt.get(clientId);
      if (f?.at !== type) return;
      faultAt.delete(clientId);
      fired.push({ id: clientId, at: type });
      f.run(byId(clientId));
    },
  });
  // Each client: its own data dir (enrolled directly, not through a proxy) and its own proxy to
  // the coordinator's mTLS listener, which `client run --coordinator` points it at.
  const made = await Promise.all(
    Array.from({ length: N }, async (_, index) => {
      const id = `site-${index}`;
      const dir = join(root, id);
      const { identity } = await openOrCreateIdentity(dir, PASSPHRASE);
      const { token } = await coordinator.createInvite();
      const r = await enrollWithToken({ enrollAddress: coordinator.enrollAddress, caPem: coordinator.ca.certificatePem, token, identity, clientId: id });
      await saveEnrollment(dir, { config: { version: 1, clientId: id, coordinator: coordinator.address, enrollAddress: coordinator.enrollAddress }, certificateDer: r.certificateDer, caDer: r.caDer });
      return { id, index, dir, input: join(dir, 'update.json'), proxy: await FaultProxy.start(coordinator.address) };
    }),
  );
  writeInputs(BIG, made);
  procs.push(...made.map((p) => spawnClient(p)));
  await waitFor(() => coordinator.connectedClients().length === N, 90_000, `${N} client processes subscribed through their proxies`);
});

afterAll(async () => {
  for (const p of procs) p.child.kill('SIGKILL');
  await Promise.all(procs.map((p) => p.exited));
  await coordinator?.close();
  await Promise.all(procs.map((p) => p.proxy.close()));
  rmSync(root, { recursive: true, force: true });
});

let jobs = 0;

/** Launches a one-round job over every connected client and waits for its outcome. */
async function runRound(dim: number, deadlines: PhaseDeadlines): Promise<{ jobId: string; cohort: string[]; outcome: Awaited<ReturnType<Coordinator['outcomeOf']>> }> {
  const jobId = `faults-${++jobs}`;
  const launched = await coordinator.launch(manifest({ jobId, round: { dim, cohort: N, bits: BITS, clip: 1 }, deadlines }), { gatherMs: 0 });
  const outcome = await coordinator.outcomeOf(jobId, 0);
  return { jobId, cohort: launched.cohort, outcome };
}

/** How long each phase of a round lasted, ms (from the coordinator's timeline). */
function phaseDurations(jobId: string): Partial<Record<Phase, number>> {
  const { timeline } = coordinator.timingOf(jobId, 0);
  const out: Partial<Record<Phase, number>> = {};
  for (let i = 0; i + 1 < timeline.length; i++) out[timeline[i]!.phase] = timeline[i + 1]!.at - timeline[i]!.at;
  return out;
}

const ids = (): string[] => procs.map((p) => p.id);
const others = (victims: readonly Proc[]): string[] => ids().filter((id) => !victims.some((v) => v.id === id));

/** Waits until every process is connected again (after a fault that broke its stream). */
const allConnected = (): Promise<void> => waitFor(() => coordinator.connectedClients().length === N, 60_000, 'every client connected again');

describe(`${N} client processes, each behind its own fault proxy`, () => {
  const LATENCY = 100;
  const CAP = 1_000_000;

  test(`${LATENCY} ms each way and ${CAP / 1e6} MB/s on every link at m = ${BIG}: the round completes with the exact sum, within deadlines computed from m, the cap and the latency`, async () => {
    for (const p of procs) p.proxy.setLatency(LATENCY).setBandwidth(CAP);
    const before = procs.map((p) => p.proxy.forwarded.up);
    const deadlines = networkDeadlines(MASKED, CAP, LATENCY);
    const { jobId, outcome } = await runRound(BIG, deadlines);
    for (const p of procs) p.proxy.setLatency(0).setBandwidth(0);
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect([...outcome.survivors].sort()).toEqual(ids().sort());
    expectExactSum(outcome.sum, outcome.survivors, BIG);
    // Every masked input went through its proxy, under the cap: the masked-input phase lasted at
    // least one upload at the cap (after the bucket's burst) plus the latency of its opening.
    procs.forEach((p, i) => expect(p.proxy.forwarded.up - before[i]!).toBeGreaterThan(MASKED));
    const d = phaseDurations(jobId);
    expect(d[Phase.MaskedInput]).toBeGreaterThanOrEqual(((MASKED - procs[0]!.proxy.burst('up')) / CAP) * 1000 + LATENCY);
  });

  /** Half of a masked input's vector at m = BIG. */
  const HALF = Math.floor(MASKED / 2);
  const QUICK: PhaseDeadlines = { advertiseMs: 8_000, shareMs: 8_000, maskedMs: 8_000, consistencyMs: 8_000, unmaskMs: 8_000 };

  test('an upload stalled halfway through the masked input: the phase closes at its deadline without it, and the sum is exact over the others', async () => {
    const victim = procs[3]!;
    let mark = 0;
    faultAt.set(victim.id, {
      at: 'share-broadcast',
      run: (p) => {
        mark = p.proxy.forwarded.up;
        p.proxy.stallUploadAfter(HALF);
      },
    });
    const { jobId, outcome } = await runRound(BIG, QUICK);
    const held = victim.proxy.held('up');
    const through = victim.proxy.forwarded.up - mark;
    victim.proxy.heal();
    expect(fired).toContainEqual({ id: victim.id, at: 'share-broadcast' });
    // The link let exactly N bytes through and held the rest of the upload.
    expect(through).toBe(HALF);
    expect(held).toBeGreaterThan(0);
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect([...outcome.survivors].sort()).toEqual(others([victim]).sort());
    expectExactSum(outcome.sum, outcome.survivors, BIG);
    expect(phaseDurations(jobId)[Phase.MaskedInput]).toBeGreaterThanOrEqual(QUICK.maskedMs - 5);
  });

  test('a reset in the middle of the upload: the client reconnects with backoff, its Send is retried on the new connection, and it is in the exact sum', async () => {
    const victim = procs[4]!;
    const from = victim.stderr.length;
    let mark = 0;
    faultAt.set(victim.id, {
      at: 'share-broadcast',
      run: (p) => {
        mark = p.proxy.forwarded.up;
        p.proxy.stallUploadAfter(HALF);
      },
    });
    const round = runRound(BIG, QUICK);
    // Half the masked input is through and the rest held: reset every connection of that link.
    await waitFor(() => victim.proxy.uploadBudget === 0 && victim.proxy.held('up') > 0, 60_000, 'the upload half way');
    expect(victim.proxy.forwarded.up - mark).toBe(HALF);
    // Reset first (the held rest of the upload is dropped with the connections), then lift the
    // stall for the connections the client opens next.
    victim.proxy.reset().heal();
    const { outcome } = await round;
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect([...outcome.survivors].sort()).toEqual(ids().sort());
    expectExactSum(outcome.sum, outcome.survivors, BIG);
    const lines = logLines(victim, from);
    const lost = lines.findIndex((l) => l.msg === 'disconnected');
    expect(lost).toBeGreaterThanOrEqual(0);
    expect(lines[lost]).toMatchObject({ code: 'unavailable' });
    expect(lines[lost]!.retryInMs).toBeGreaterThan(0);
    expect(lines.slice(lost).some((l) => l.msg === 'connected')).toBe(true);
    await allConnected();
  });

  test('a reset of the Subscribe stream as the round starts: the client reconnects with backoff, is sent the round start again, and is in the exact sum', async () => {
    writeInputs(SMALL);
    const victim = procs[5]!;
    const from = victim.stderr.length;
    faultAt.set(victim.id, { at: 'round-start', run: (p) => void p.proxy.reset() });
    const { outcome } = await runRound(SMALL, QUICK);
    expect(fired).toContainEqual({ id: victim.id, at: 'round-start' });
    expect(victim.proxy.resets).toBeGreaterThan(0);
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect([...outcome.survivors].sort()).toEqual(ids().sort());
    expectExactSum(outcome.sum, outcome.survivors, SMALL);
    const lines = logLines(victim, from);
    const lost = lines.findIndex((l) => l.msg === 'disconnected');
    expect(lines[lost]).toMatchObject({ code: 'unavailable' });
    const back = lines.findIndex((l, i) => i > lost && l.msg === 'connected');
    expect(back).toBeGreaterThan(lost);
    expect(lines.slice(back).some((l) => l.msg === 'joined')).toBe(true);
  });

  // 20 % of the cohort goes silent as each phase opens (the tap fires before the phase's first
  // message is queued for it), a different pair each time.
  const BLACKHOLE: [string, ServerEvent['type'], Phase][] = [
    ['advertise keys', 'round-start', Phase.AdvertiseKeys],
    ['share keys', 'advertise-broadcast', Phase.ShareKeys],
    ['masked input', 'share-broadcast', Phase.MaskedInput],
    ['consistency check', 'consistency-request', Phase.ConsistencyCheck],
    ['unmasking', 'unmask-request', Phase.Unmasking],
  ];
  const SILENT = Math.round(N * 0.2);
  const FAST: PhaseDeadlines = { advertiseMs: 4_000, shareMs: 4_000, maskedMs: 4_000, consistencyMs: 4_000, unmaskMs: 4_000 };

  test.each(BLACKHOLE)(`${SILENT} of ${N} clients blackholed as %s opens: the round goes on without them (the phase closes at its deadline, or once unmasking has t shares of every secret), and the sum is exact over the survivors`, async (_name, opener, phase) => {
    const k = BLACKHOLE.findIndex((b) => b[1] === opener);
    const victims = procs.slice(k * SILENT, (k + 1) * SILENT);
    for (const v of victims) faultAt.set(v.id, { at: opener, run: (p) => void p.proxy.blackhole() });
    const { jobId, cohort, outcome } = await runRound(SMALL, FAST);
    // Silent, not disconnected: the coordinator still had their streams open the whole round.
    const stillAttached = victims.every((v) => coordinator.connectedClients().includes(v.id));
    for (const v of victims) v.proxy.heal();
    expect(cohort).toHaveLength(N);
    for (const v of victims) expect(fired).toContainEqual({ id: v.id, at: opener });
    expect(stillAttached).toBe(true);
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    // Silent before sending a masked input: not in the sum. Silent later: their input is in the
    // sum (U3) and the others unmask it without them.
    const inSum = phase === Phase.ConsistencyCheck || phase === Phase.Unmasking;
    const want = inSum ? ids() : others(victims);
    expect([...outcome.survivors].sort()).toEqual(want.sort());
    expectExactSum(outcome.sum, outcome.survivors, SMALL);
    // The phase they went silent in waited for them until its deadline. Not unmasking: it closes
    // as soon as every secret it needs has t shares, which the others' answers give (the round
    // ended while the victims were still silent).
    if (phase !== Phase.Unmasking) {
      const key = ({ [Phase.AdvertiseKeys]: 'advertiseMs', [Phase.ShareKeys]: 'shareMs', [Phase.MaskedInput]: 'maskedMs', [Phase.ConsistencyCheck]: 'consistencyMs' } as const)[phase as 'advertise-keys'];
      expect(phaseDurations(jobId)[phase]).toBeGreaterThanOrEqual(FAST[key] - 5);
    }
  });

  test('after the partitions heal, every client takes part again: the exact sum of all ten', async () => {
    const { outcome } = await runRound(SMALL, FAST);
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect([...outcome.survivors].sort()).toEqual(ids().sort());
    expectExactSum(outcome.sum, outcome.survivors, SMALL);
  });
});
