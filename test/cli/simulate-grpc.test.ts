/**
 * `aegis simulate --transport grpc` end to end: the built CLI (dist/) in a child process, a real
 * coordinator on loopback gRPC/mTLS inside it, the clients enrolled over the enrollment listener
 * and run as ClientRunners in client processes of their own.
 */
import { describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../../dist/bin/aegis.js', import.meta.url));

interface Run {
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI without blocking the test process (the runs below go in parallel). */
function aegis(...args: string[]): Promise<Run> {
  if (!existsSync(cli)) throw new Error('dist/ is missing: run "npm run build" first');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 540_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a parsed JSON document, checked field by field below
function json(r: Run): any {
  const lines = r.stdout.trim().split('\n');
  if (lines.length !== 1) throw new Error(`expected one line on stdout, got ${lines.length}; stderr: ${r.stderr.slice(-400)}`);
  try {
    return JSON.parse(lines[0]!);
  } catch {
    throw new Error(`no JSON on stdout (exit ${r.status}, signal ${r.signal}); stderr: ${r.stderr.slice(-400)}`);
  }
}

const grpcRound = ['simulate', '--transport', 'grpc', '--json', '--dim', '1000', '--workers', '2'];
const common = [...grpcRound, '--phase-timeout', '2s'];

describe('aegis simulate --transport grpc', () => {
  test('full rounds, with and without dropouts, are exact; below the threshold the round aborts with a typed reason', async () => {
    const [full, dropped, below, local] = await Promise.all([
      aegis(...common, '--clients', '8'),
      aegis(...common, '--clients', '10', '--neighbors', '5', '--dropout', '0.2', '--drop-phase', 'masked', '--seed', '4'),
      aegis(...common, '--clients', '8', '--dropout', '0.75', '--drop-phase', 'share'),
      aegis('simulate', '--json', '--dim', '1000', '--clients', '8', '--workers', '0'),
    ]);

    expect(full.status).toBe(0);
    const a = json(full);
    expect(a).toMatchObject({ ok: true, exact: true, transport: 'grpc', clients: 8, survivors: 8, dropped: 0, mode: 'secagg', neighbors: 7, threshold: 4, workers: 2 });
    expect(a.sets).toEqual({ u1: 8, u2: 8, u3: 8, u4: 8 });
    expect(a.max_abs_error).toBeGreaterThan(0);
    expect(a.max_abs_error).toBeLessThan(8 * (2 / 65535));
    for (const k of ['setup', 'client_mean', 'client_max', 'server_unmask', 'total']) expect(a.timings_ms[k]).toBeGreaterThan(0);
    expect(a.prg_bytes).toBeGreaterThan(0);
    expect(a.peak_rss_mb).toBeGreaterThan(0);
    expect(full.stderr).toContain('round completed');
    // Same seed, same inputs: the in-process round has the same total weight and JSON shape.
    const l = json(local);
    expect(l).toMatchObject({ ok: true, exact: true, transport: 'local', total_weight: a.total_weight });
    expect(Object.keys(a).sort()).toEqual(Object.keys(l).sort());
    // What a client sends is the same bytes over gRPC as in process (same messages, same sizes);
    // what it is sent differs by the members' certificates in the advertise broadcast (gRPC only).
    expect(a.bytes_per_client).toEqual(l.bytes_per_client);
    // The coordinator's CPU per client is measured where it runs alone (gRPC), not in process.
    expect(a.coordinator_cpu_ms_per_client).toBeGreaterThan(0);
    expect(l.coordinator_cpu_ms_per_client).toBeNull();
    expect(a.sum_bits).toBe(16 + 3);
    expect(a.masked_floor_bytes).toBe(Math.ceil((1000 * 19) / 8));
    expect(a.bytes_per_client.masked / a.masked_floor_bytes).toBeLessThan(1.05);
    expect(a.bytes_down_per_client.advertise).toBeGreaterThan(l.bytes_down_per_client.advertise + 7 * 300);
    for (const k of ['share', 'masked', 'consistency']) expect(a.bytes_down_per_client[k]).toBe(l.bytes_down_per_client[k]);

    expect(dropped.status).toBe(0);
    const d = json(dropped);
    expect(d).toMatchObject({ ok: true, exact: true, transport: 'grpc', clients: 10, survivors: 8, dropped: 2, mode: 'secagg+', drop_phase: 'masked' });
    expect(d.sets).toMatchObject({ u1: 10, u2: 10, u3: 8, u4: 8 });

    // Over gRPC each client checks every neighbour's certificate (classic SecAgg: all n - 1 others).
    expect(a.peer_certificate_checks).toBe(8 * 7);
    expect(l.peer_certificate_checks).toBeNull();
    expect([a.warm_up, l.warm_up]).toEqual([false, false]);

    expect(below.status).toBe(1);
    const b = json(below);
    expect(b).toMatchObject({ ok: false, exact: false, transport: 'grpc', reason: 'too-few-clients', aborted_at: 'share-keys', survivors: 0, max_abs_error: null });
    expect(b.detail).toContain('threshold is 4');
  });

  test('--warm-up measures the clients\' second round: nobody drops in the first, the drop schedule and the counts apply to the second, remembered certificates are not checked again', async () => {
    const [warm, local] = await Promise.all([
      // Two rounds, one phase of them waiting out its deadline for the two who drop: 6 s, so no
      // client that is merely slow on a busy machine is cut off with them.
      aegis(...grpcRound, '--phase-timeout', '6s', '--clients', '8', '--warm-up', '--dropout', '0.25', '--drop-phase', 'masked', '--seed', '3'),
      aegis('simulate', '--dim', '1000', '--clients', '8', '--warm-up'),
    ]);
    expect(warm.status).toBe(0);
    const w = json(warm);
    expect(w).toMatchObject({ ok: true, exact: true, transport: 'grpc', clients: 8, survivors: 6, dropped: 2, warm_up: true });
    // Everyone advertised in the measured round: the warm-up round stopped no client.
    expect(w.sets).toMatchObject({ u1: 8, u2: 8, u3: 6, u4: 6 });
    // Classic SecAgg: the warm-up round checked every peer's certificate; the measured one checks none again.
    expect(w.peer_certificate_checks).toBe(0);
    expect(warm.stderr).toContain('warm-up round completed');
    // What the clients sent is counted for the measured round alone.
    expect(w.bytes_per_client.masked / w.masked_floor_bytes).toBeLessThan(1.05);

    expect(local.status).toBe(2);
    expect(local.stderr).toContain('--warm-up needs --transport grpc');
  });
});
