/**
 * An in-process coordinator on loopback TLS 1.3 and enrolled client identities, for the network
 * tests: real gRPC, real mTLS, real tokens; nothing mocked. Clients run in this process
 * (`startRunners`) or as separate `aegis client run` processes (test/net/e2e.test.ts).
 */
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Coordinator, type CoordinatorOptions } from '../../coordinator/service/coordinator.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { ClientRunner, enrollWithToken, type RunnerEvent, type RunnerOptions } from '../../client/agent/connection.js';
import { createIdentity, type ClientIdentity } from '../../client/enroll/csr.js';
import type { JobManifestInput } from '../../shared/protocol/manifest.js';

export interface Enrolled {
  clientId: string;
  identity: ClientIdentity;
  certificateDer: Uint8Array;
}

export async function startCoordinator(opts: Partial<CoordinatorOptions> = {}): Promise<Coordinator> {
  const ca = await createCa({ name: 'Aegis test CA' });
  const c = new Coordinator({ ca, tokens: TokenIssuer.create(), registry: new Registry(), ...opts });
  await c.listen('127.0.0.1:0', '127.0.0.1:0');
  return c;
}

export async function enrollClients(c: Coordinator, n: number, prefix = 'client'): Promise<Enrolled[]> {
  const width = String(n - 1).length;
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const clientId = `${prefix}-${String(i).padStart(width, '0')}`;
      const identity = await createIdentity();
      const { token } = await c.createInvite();
      const r = await enrollWithToken({ enrollAddress: c.enrollAddress, caPem: c.ca.certificatePem, token, identity, clientId });
      return { clientId: r.clientId, identity, certificateDer: r.certificateDer };
    }),
  );
}

/** Client i's input: words i+1, 2(i+1), ... and weight 1 — integers, so the expected sum is exact. */
export function integerInput(i: number, dim: number): Uint32Array {
  const v = new Uint32Array(dim + 1);
  for (let j = 0; j < dim; j++) v[j] = ((i + 1) * (j + 1) * 2654435761) >>> 16;
  v[dim] = 1;
  return v;
}

export function expectedSum(indices: number[], dim: number): Uint32Array {
  const s = new Uint32Array(dim + 1);
  for (const i of indices) {
    const v = integerInput(i, dim);
    for (let j = 0; j <= dim; j++) s[j] = (s[j]! + v[j]!) >>> 0;
  }
  return s;
}

/** Starts one in-process runner per client; `options(i)` adds or overrides runner options. */
export function startRunners(
  c: Coordinator,
  clients: Enrolled[],
  dim: number,
  onEvent?: (id: string, e: RunnerEvent) => void,
  options?: (i: number) => Partial<RunnerOptions>,
): ClientRunner[] {
  return clients.map((e, i) => {
    const r = new ClientRunner({
      address: c.address,
      caPem: c.ca.certificatePem,
      clientId: e.clientId,
      identity: e.identity,
      certificateDer: e.certificateDer,
      input: () => integerInput(i, dim),
      backoffMs: { min: 50, max: 500 },
      ...(onEvent ? { onEvent: (ev: RunnerEvent) => onEvent(e.clientId, ev) } : {}),
      ...options?.(i),
    });
    r.start();
    return r;
  });
}

/**
 * Waits until `cond` holds. The bound only ends a hung test: it never judges the machine's speed,
 * so one under a minute is raised to a minute (a loaded CI machine can be many times slower than
 * a quiet one). A test that must see something NOT happen takes its timing from the scenario
 * instead (a deadline its own manifest sets, an event), never from this.
 */
export async function waitFor(cond: () => boolean, timeoutMs = 60_000, what = 'condition'): Promise<void> {
  const until = Date.now() + Math.max(timeoutMs, 60_000);
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The first truthy answer of `f`, asked every 20 ms: for state another process or Redis shows in
 * its own time. Undefined after `timeoutMs` (a minute by default), for the caller's assertion.
 */
export async function eventually<T>(f: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T | undefined> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v || Date.now() > until) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function manifest(over: Partial<JobManifestInput> & { round: JobManifestInput['round'] }): Uint8Array {
  const now = Date.now();
  const m: JobManifestInput = {
    version: 1,
    jobId: 'job-1',
    rounds: 1,
    deadlines: { advertiseMs: 10_000, shareMs: 10_000, maskedMs: 20_000, consistencyMs: 10_000, unmaskMs: 10_000 },
    issuedAt: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    ...over,
  };
  return new TextEncoder().encode(JSON.stringify(m));
}
