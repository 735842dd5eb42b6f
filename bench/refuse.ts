/**
 * `npm run bench -- refuse`: what a revoked client flooding the coordinator costs it. A real
 * coordinator (gRPC, TLS 1.3, mTLS on loopback) with n = 8 ClientRunners in this process.
 * Memory: the coordinator idle between rounds for a window, alone, then while the revoked client
 * floods it (peak RSS over the window's start, after a full GC). Time: back-to-back rounds
 * (m = 10^5, classic SecAgg) for a window in each of three conditions:
 * 1. alone — the baseline, measured in this run;
 * 2. next to a process that only spins on one core for the window (the control: what any busy
 *    neighbour costs on this machine);
 * 3. next to a revoked client (forked process, refuse-attacker.ts) starting SecAgg.Send calls that
 *    declare 60 MiB, 4 or 16 at a time, writing their bodies for as long as the server lets it.
 * Reported per condition: rounds completed, mean round time and its ratio to the baseline,
 * this process's peak RSS in the window (coordinator and runners; the attacker's memory is its
 * own) and its excess over the baseline's, and what the attacker managed (calls, statuses, body
 * bytes written).
 * The goal: under 50 MB of extra RSS, and the flood's slowdown close to the spinning control's.
 */
import { fork } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { cpus } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { fileURLToPath } from 'node:url';
import { ClientRunner, enrollWithToken } from '../client/agent/connection.js';
import { createIdentity, tlsKeyPemFor } from '../client/enroll/csr.js';
import { createCa } from '../coordinator/auth/ca.js';
import { TokenIssuer } from '../coordinator/auth/tokens.js';
import { Registry } from '../coordinator/clients/registry.js';
import { Coordinator } from '../coordinator/service/coordinator.js';
import type { AttackReport } from './refuse-attacker.js';
import { fmt, table } from './table.js';

interface Row {
  condition: string;
  rounds: number;
  meanRoundMs: number;
  ratio: number;
  /** Peak RSS in the window minus RSS at its start (after a full GC). */
  rssGrowthMb: number;
  attack?: AttackReport;
}

setFlagsFromString('--expose-gc');
/** A full garbage collection (V8's gc, exposed for this measurement). */
const gc = runInNewContext('gc') as () => void;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function input(i: number, dim: number): Uint32Array {
  const v = new Uint32Array(dim + 1);
  for (let j = 0; j < dim; j++) v[j] = (i + j) & 0xffff;
  v[dim] = 1;
  return v;
}

function manifest(jobId: string, n: number, dim: number): Uint8Array {
  const now = Date.now();
  return new TextEncoder().encode(
    JSON.stringify({
      version: 1,
      jobId,
      rounds: 1,
      round: { dim, cohort: n, neighbors: n - 1 },
      deadlines: { advertiseMs: 30_000, shareMs: 30_000, maskedMs: 60_000, consistencyMs: 30_000, unmaskMs: 30_000 },
      issuedAt: new Date(now - 60_000).toISOString(),
      expiresAt: new Date(now + 3_600_000).toISOString(),
    }),
  );
}

export async function benchRefuse(opts: { json: boolean; quick: boolean; budgetSeconds: number }): Promise<void> {
  const seconds = opts.quick ? 5 : 10;
  const n = 8;
  const dim = opts.quick ? 20_000 : 100_000;
  const ca = await createCa({ name: 'Aegis bench CA' });
  const c = new Coordinator({ ca, tokens: TokenIssuer.create(), registry: new Registry() });
  await c.listen('127.0.0.1:0', '127.0.0.1:0');
  const runners: ClientRunner[] = [];
  const rows: Row[] = [];
  try {
    const enrolled = await Promise.all(
      Array.from({ length: n + 1 }, async (_, i) => {
        const identity = await createIdentity();
        const { token } = await c.createInvite();
        const clientId = i === n ? 'revoked-device' : `member-${i}`;
        const e = await enrollWithToken({ enrollAddress: c.enrollAddress, caPem: ca.certificatePem, token, identity, clientId });
        return { clientId, identity, certificateDer: e.certificateDer };
      }),
    );
    const attacker = enrolled.pop()!;
    await c.clients.revoke(attacker.clientId, 'key-compromise');
    for (const [i, e] of enrolled.entries()) {
      const r = new ClientRunner({ address: c.address, caPem: ca.certificatePem, clientId: e.clientId, identity: e.identity, certificateDer: e.certificateDer, input: () => input(i, dim), inputReuse: true, backoffMs: { min: 50, max: 500 } });
      r.start();
      runners.push(r);
    }
    const until = Date.now() + 30_000;
    while (!enrolled.every((e) => c.connectedClients().includes(e.clientId))) {
      if (Date.now() > until) throw new Error('the runners did not connect');
      await sleep(20);
    }
    let job = 0;
    const round = async (): Promise<number> => {
      const id = `bench-${job++}`;
      const t0 = performance.now();
      await c.launch(manifest(id, n, dim));
      const o = await c.outcomeOf(id, 0);
      if (!o.ok) throw new Error(`round ${id} aborted: ${o.reason}`);
      return performance.now() - t0;
    };
    // Warm-up: JIT, TLS sessions, worker threads.
    for (let i = 0; i < 3; i++) await round();

    const measure = async (condition: string, attack: 'flood' | 'cpu' | undefined, withRounds: boolean, concurrency = 4): Promise<Row> => {
      process.stderr.write(`${condition}: ${seconds} s${withRounds ? ' of rounds' : ''}...\n`);
      gc();
      await sleep(200);
      gc();
      const rss0 = process.memoryUsage().rss;
      let peak = rss0;
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
      let report: Promise<AttackReport> | undefined;
      if (attack) {
        const child = fork(fileURLToPath(new URL('./refuse-attacker.js', import.meta.url)), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
        const ready = new Promise<void>((resolve) => child.once('message', () => resolve()));
        report = new Promise<AttackReport>((resolve) => child.on('message', (m) => typeof m === 'object' && resolve(m as AttackReport)));
        child.send({
          mode: attack,
          seconds,
          concurrency,
          address: c.address,
          caPem: ca.certificatePem,
          keyPem: tlsKeyPemFor(attacker.identity, attacker.certificateDer),
          certPem: new X509Certificate(Buffer.from(attacker.certificateDer)).toString(),
        });
        await ready;
      }
      const end = Date.now() + seconds * 1000;
      const times: number[] = [];
      if (withRounds) while (Date.now() < end) times.push(await round());
      else await sleep(seconds * 1000);
      clearInterval(sampler);
      const attackReport = report ? await report : undefined;
      const mean = times.length > 0 ? times.reduce((a, b) => a + b, 0) / times.length : Number.NaN;
      return { condition, rounds: times.length, meanRoundMs: mean, ratio: Number.NaN, rssGrowthMb: (peak - rss0) / 1024 / 1024, ...(attackReport ? { attack: attackReport } : {}) };
    };
    // Memory: the coordinator between rounds, alone and then under the flood (no round's vectors
    // to blur the figure).
    rows.push(await measure('idle coordinator, alone', undefined, false));
    rows.push(await measure('idle coordinator, flood of 4 calls at a time', 'flood', false, 4));
    rows.push(await measure('idle coordinator, flood of 16 calls at a time', 'flood', false, 16));
    // Time: back-to-back rounds alone (the baseline), next to the control, next to the flood.
    const timed = [
      await measure('rounds alone (baseline)', undefined, true),
      await measure('rounds next to a process spinning on one core', 'cpu', true),
      await measure('rounds next to a flood of 4 calls at a time', 'flood', true, 4),
      await measure('rounds next to a flood of 16 calls at a time', 'flood', true, 16),
    ];
    for (const r of timed) r.ratio = r.meanRoundMs / timed[0]!.meanRoundMs;
    rows.push(...timed);
  } finally {
    await Promise.all(runners.map((r) => r.stop()));
    await c.close();
  }
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ topic: 'refuse', cores: cpus().length, n, dim, seconds, rows })}\n`);
    return;
  }
  process.stdout.write(`A revoked client flooding the coordinator (n = ${n}, m = ${dim}, classic SecAgg; ${seconds} s per condition; ${cpus().length} cores)\n\n`);
  process.stdout.write(
    `${table(
      ['condition', 'rounds', 'mean round ms', 'vs alone', 'RSS growth MB', 'attacker calls', 'statuses', 'stream resets', 'body MiB written'],
      rows.map((r) => [
        r.condition,
        r.rounds || '-',
        fmt(r.meanRoundMs),
        Number.isFinite(r.ratio) ? `${fmt(r.ratio, 2)}x` : '-',
        fmt(r.rssGrowthMb),
        r.attack && r.attack.calls > 0 ? r.attack.calls : '-',
        r.attack && r.attack.calls > 0 ? Object.entries(r.attack.statuses).map(([k, v]) => `${k}:${v}`).join(' ') || 'none' : '-',
        r.attack && r.attack.calls > 0 ? Object.entries(r.attack.resets).map(([k, v]) => `${k}:${v}`).join(' ') : '-',
        r.attack && r.attack.calls > 0 ? fmt(r.attack.bytesWritten / 1024 / 1024, 0) : '-',
      ]),
    )}\n`,
  );
  process.stdout.write(
    '\n"RSS growth": this process\'s (coordinator and runners) peak RSS in the window minus its RSS at the start, after a full GC. "statuses": gRPC status codes the attacker got (16 = UNAUTHENTICATED); "stream resets": the RST_STREAM codes its streams closed with (0 NO_ERROR, 7 REFUSED_STREAM, 11 ENHANCE_YOUR_CALM: Node refusing streams on a connection whose unread data is over its memory limit). ' +
      '"body MiB written": what the attacker handed to its socket; the coordinator drops it as it arrives (its cost is the TLS decryption). The attacker and the spinning control are separate processes on the same cores.\n',
  );
}
