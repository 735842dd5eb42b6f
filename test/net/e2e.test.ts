/**
 * End to end: a coordinator and 22 `aegis client run` processes (the built CLI, each with its own
 * sealed data dir) over loopback TLS 1.3 with mTLS and round tokens. Clients are SIGKILLed at
 * the moment the coordinator opens each phase (its `tap` fires just before the phase's first
 * message is queued for them), so every phase loses clients for real. Checks: exact sums over
 * the survivors, a typed abort below the threshold, a revoked client refused and stopped.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { enrollWithToken } from '../../client/agent/connection.js';
import { openOrCreateIdentity, saveEnrollment } from '../../client/agent/data-dir.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import type { ServerEvent } from '../../shared/protocol/messages.js';
import { manifest, startCoordinator, waitFor } from '../support/cluster.js';

const N = 22;
const DIM = 64;
const BITS = 16;
const LEVELS = 2 ** BITS - 1;
const PASSPHRASE = 'e2e passphrase, long enough';
const CLI = resolve('dist/bin/aegis.js');

interface Proc {
  id: string;
  index: number;
  child: ChildProcess;
  exited: Promise<number | null>;
  stderr: string[];
}

/** Client i's update: grid values (k / LEVELS * 2 - 1), so quantization is exact: word j = k. */
const gridWord = (i: number, j: number): number => ((i + 1) * 7919 + j * 104729) % (LEVELS + 1);
const WEIGHT = (i: number): number => 1 + (i % 5);

function expectedSum(indices: number[]): number[] {
  const s = new Array<number>(DIM + 1).fill(0);
  for (const i of indices) {
    for (let j = 0; j < DIM; j++) s[j] = (s[j]! + gridWord(i, j)) >>> 0;
    s[DIM] = (s[DIM]! + WEIGHT(i)) >>> 0;
  }
  return s;
}

let coordinator: Coordinator;
let root: string;
const procs = new Map<string, Proc>();
/** Which clients to kill when which event is about to reach them. */
const killAt = new Map<string, ServerEvent['type']>();
const killed: { id: string; at: ServerEvent['type'] }[] = [];
let jobRound = 0;

function spawnClient(id: string, index: number, dir: string, input: string): Proc {
  // One input file for every round of the job: the clients opt in to contribute it again.
  const child = spawn(process.execPath, [CLI, 'client', 'run', '--data-dir', dir, '--input', input, '--input-reuse', '--allow-unsigned'], {
    env: { ...process.env, AEGIS_PASSPHRASE: PASSPHRASE, AEGIS_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (d: string) => stderr.push(d));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  return { id, index, child, exited, stderr };
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'aegis-e2e-'));
  coordinator = await startCoordinator({
    tap: (clientId, type) => {
      if (killAt.get(clientId) === type) {
        killAt.delete(clientId);
        procs.get(clientId)!.child.kill('SIGKILL');
        killed.push({ id: clientId, at: type });
      }
    },
  });
  // Enroll every client into its own data dir (sealed identity key, certificate, pinned CA).
  await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      const id = `site-${String(i).padStart(2, '0')}`;
      const dir = join(root, id);
      const { identity } = await openOrCreateIdentity(dir, PASSPHRASE);
      const { token } = await coordinator.createInvite();
      const r = await enrollWithToken({ enrollAddress: coordinator.enrollAddress, caPem: coordinator.ca.certificatePem, token, identity, clientId: id });
      await saveEnrollment(dir, { config: { version: 1, clientId: id, coordinator: coordinator.address, enrollAddress: coordinator.enrollAddress }, certificateDer: r.certificateDer, caDer: r.caDer });
      const values = Array.from({ length: DIM }, (_, j) => (gridWord(i, j) / LEVELS) * 2 - 1);
      const input = join(dir, 'update.json');
      writeFileSync(input, JSON.stringify({ values, weight: WEIGHT(i) }));
      procs.set(id, spawnClient(id, i, dir, input));
    }),
  );
  await waitFor(() => coordinator.connectedClients().length === N, 60_000, `${N} client processes subscribed`);
});

afterAll(async () => {
  for (const p of procs.values()) p.child.kill('SIGKILL');
  await Promise.all([...procs.values()].map((p) => p.exited));
  await coordinator?.close();
  rmSync(root, { recursive: true, force: true });
});

const JOB = { jobId: 'e2e', rounds: 20, round: { dim: DIM, cohort: N, neighbors: 10, clip: 1, bits: BITS } };
// Each phase closes once every live client answered (a killed one is let go when its connection
// drops): the deadlines only end a round whose clients went silent, so a loaded machine meets them.
const FAST = { advertiseMs: 30_000, shareMs: 30_000, maskedMs: 30_000, consistencyMs: 30_000, unmaskMs: 30_000 };
/** One manifest for the whole job: each launch runs its next round. */
const JOB_MANIFEST = manifest({ ...JOB, deadlines: FAST });

async function runRound(): Promise<Awaited<ReturnType<Coordinator['outcomeOf']>> & { cohort: string[] }> {
  const launched = await coordinator.launch(JOB_MANIFEST, { gatherMs: 0 });
  expect(launched.roundIndex).toBe(jobRound);
  const o = await coordinator.outcomeOf('e2e', jobRound);
  jobRound++;
  return { ...o, cohort: launched.cohort };
}

function sumOf(o: { ok: true; sum: Uint32Array }): number[] {
  return Array.from(o.sum);
}

const alive = (): Proc[] => [...procs.values()].filter((p) => p.child.exitCode === null && p.child.signalCode === null);

describe(`a coordinator and ${N} client processes over loopback TLS 1.3`, () => {
  test('every client takes part and the coordinator learns the exact sum', async () => {
    const checkedBefore = coordinator.verifier.signaturesChecked;
    const o = await runRound();
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect(o.survivors).toHaveLength(N);
    expect(sumOf(o)).toEqual(expectedSum([...procs.values()].map((p) => p.index)));
    // Every round call carried a token this coordinator signed and the client sent intact: none
    // needed its Ed25519 signature verified again.
    expect(coordinator.verifier.signaturesChecked).toBe(checkedBefore);
  });

  const PHASE_OPENERS: [string, ServerEvent['type']][] = [
    ['advertise keys', 'round-start'],
    ['share keys', 'advertise-broadcast'],
    ['masked input', 'share-broadcast'],
    ['consistency check', 'consistency-request'],
    ['unmasking', 'unmask-request'],
  ];

  test.each(PHASE_OPENERS)('two clients killed as %s opens: the round completes with the exact sum of its survivors', async (_phase, opener) => {
    const victims = alive()
      .slice(-2)
      .map((p) => p.id);
    for (const v of victims) killAt.set(v, opener);
    const o = await runRound();
    for (const v of victims) expect(killed.some((k) => k.id === v && k.at === opener)).toBe(true);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    // Dropped before sending a masked input: not in the sum. Dropped later: their input is in
    // the sum (U3) and the others unmask it without them.
    const inSum = opener === 'consistency-request' || opener === 'unmask-request';
    for (const v of victims) expect(o.survivors.includes(v)).toBe(inSum);
    const indices = o.survivors.map((id) => procs.get(id)!.index);
    expect(sumOf(o)).toEqual(expectedSum(indices));
  });

  test('a revoked client is refused on its next call and its process stops with the reason', async () => {
    const victim = alive()[0]!;
    await coordinator.revoke(victim.id, 'lost device');
    const code = await victim.exited;
    expect(code).toBe(2);
    expect(victim.stderr.join('')).toMatch(/unauthenticated/);
    const o = await runRound();
    expect(o.cohort).not.toContain(victim.id);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect(sumOf(o)).toEqual(expectedSum(o.survivors.map((id) => procs.get(id)!.index)));
  });

  test('below the threshold the round aborts with a typed reason; the survivors stay connected, and a launch with too few is refused', async () => {
    // t = floor(10/2) + 1 = 6 of each client's 10 neighbours; killing all but 5 at masked input
    // leaves every survivor with fewer than t live neighbours.
    const live = alive();
    const doomed = live.slice(5).map((p) => p.id);
    for (const v of doomed) killAt.set(v, 'share-broadcast');
    const o = await runRound();
    expect(o.ok).toBe(false);
    if (o.ok) return;
    expect(['too-few-clients', 'insufficient-shares']).toContain(o.reason);
    // The five left are still running, and still connected for the next round.
    await waitFor(() => coordinator.connectedClients().length === 5, 20_000, 'five clients reconnected');
    expect(alive()).toHaveLength(5);
    await expect(coordinator.launch(JOB_MANIFEST)).rejects.toMatchObject({ code: 'too-few-clients' });
  });
});
