/**
 * The client runner over real gRPC/TLS: certificate renewal before expiry, reconnection with
 * backoff after the coordinator restarts, and giving up on a round whose coordinator went silent.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { enrollClients, expectedSum, manifest, startCoordinator, startRunners, waitFor } from '../support/cluster.js';
import { FaultProxy } from '../support/fault-proxy.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

describe('client runner', () => {
  test('renews its certificate before expiry, persists it, and keeps taking part under the new one', async () => {
    const c = await startCoordinator({ clientCertTtlMs: 60_000 });
    cleanups.push(() => c.close());
    const clients = await enrollClients(c, 4);
    const saved: Uint8Array[] = [];
    const events: RunnerEvent[] = [];
    // Client 0 renews 3 s into its certificate's minute, once: after that renewal its runner is
    // told to renew only near the end (past this test), so no second renewal can move its channel
    // just as the round below starts. The others keep their certificates.
    const runners: ClientRunner[] = startRunners(c, clients, 16, (id, ev) => id === clients[0]!.clientId && events.push(ev), (i) =>
      i === 0
        ? {
            renewAfter: 0.05,
            renewCheckMs: 200,
            onCertificate: async (der) => {
              saved.push(der);
              runners[0]!['opts'].renewAfter = 0.99;
            },
          }
        : {},
    );
    cleanups.push(async () => void (await Promise.all(runners.map((r) => r.stop()))));
    await waitFor(() => saved.length >= 1, 20_000, 'a renewed certificate');
    const renewed = new X509Certificate(Buffer.from(saved[0]!));
    const original = new X509Certificate(Buffer.from(clients[0]!.certificateDer));
    expect(renewed.serialNumber).not.toBe(original.serialNumber);
    expect(renewed.subject).toBe(original.subject);
    expect(renewed.publicKey.export({ format: 'jwk' }).x).toBe(original.publicKey.export({ format: 'jwk' }).x);
    expect(events.some((e) => e.kind === 'renewed')).toBe(true);
    await waitFor(() => c.registry.clients.get(clients[0]!.clientId)!.serial === renewed.serialNumber.toLowerCase(), 5000, 'the registry to hold the new serial');
    // The runner moved its channel to the new certificate (connected again after renewing): a
    // round started before that could reach the old stream as it closes.
    await waitFor(() => events.slice(events.findIndex((e) => e.kind === 'renewed')).some((e) => e.kind === 'connected'), 20_000, 'the channel on the new certificate');
    await waitFor(() => c.connectedClients().length === 4, 20_000, 'four subscribers');
    await c.launch(manifest({ round: { dim: 16, cohort: 4, neighbors: 3 } }));
    const o = await c.outcomeOf('job-1', 0);
    expect(o.ok).toBe(true);
    if (o.ok) expect(Array.from(o.sum)).toEqual(Array.from(expectedSum([0, 1, 2, 3], 16)));
  });

  test('reconnects with backoff after the coordinator restarts on the same address, then completes a round', async () => {
    const first = await startCoordinator();
    const clients = await enrollClients(first, 4);
    const disconnects: string[] = [];
    const runners = startRunners(first, clients, 8, (_id, e) => e.kind === 'disconnected' && disconnects.push(e.code));
    cleanups.push(async () => void (await Promise.all(runners.map((r) => r.stop()))));
    await waitFor(() => first.connectedClients().length === 4, 20_000, 'four subscribers');
    const [host, port] = [first.address.split(':')[0]!, Number(first.address.split(':')[1])];
    await first.close();
    await waitFor(() => disconnects.length >= 4, 20_000, 'every client to notice');
    // The same CA, token key and registry come back (as `aegis coordinator start` would from its data dir).
    const second = new Coordinator({ ca: first.ca, tokens: TokenIssuer.fromSeed((first as unknown as { tokens: TokenIssuer }).tokens.exportSeed()), registry: first.registry });
    cleanups.push(() => second.close());
    await second.listen(`${host}:${port}`, '127.0.0.1:0');
    await waitFor(() => second.connectedClients().length === 4, 30_000, 'four clients back');
    await second.launch(manifest({ round: { dim: 8, cohort: 4, neighbors: 3 } }));
    const o = await second.outcomeOf('job-1', 0);
    expect(o.ok).toBe(true);
    if (o.ok) expect(Array.from(o.sum)).toEqual(Array.from(expectedSum([0, 1, 2, 3], 8)));
    expect(disconnects.every((code) => code === 'unavailable')).toBe(true);
  });

  test('refuses to mask a plain input with a value wider than the round\'s bits (the sum mod 2^r would wrap): the round goes on without it, exact over the others', async () => {
    const c = await startCoordinator();
    cleanups.push(() => c.close());
    const clients = await enrollClients(c, 4);
    const ignored: string[] = [];
    // Client 3's input has one value of 2^16 in a round of 16-bit values.
    const wide = (): Uint32Array => {
      const v = expectedSum([3], 8);
      v[5] = 2 ** 16;
      return v;
    };
    const runners = startRunners(
      c,
      clients,
      8,
      (id, ev) => void (id === clients[3]!.clientId && ev.kind === 'ignored' && ignored.push(ev.code)),
      (i) => (i === 3 ? { input: wide } : {}),
    );
    cleanups.push(async () => void (await Promise.all(runners.map((r) => r.stop()))));
    await waitFor(() => c.connectedClients().length === 4, 20_000, 'four subscribers');
    // Every phase closes early once all have answered; the masked-input phase waits out its
    // deadline for the client that refused.
    const deadlines = { advertiseMs: 60_000, shareMs: 60_000, maskedMs: 10_000, consistencyMs: 60_000, unmaskMs: 60_000 };
    await c.launch(manifest({ round: { dim: 8, cohort: 4, neighbors: 3, bits: 16 }, deadlines }));
    const o = await c.outcomeOf('job-1', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual([0, 1, 2].map((i) => clients[i]!.clientId).sort());
    expect(Array.from(o.sum)).toEqual(Array.from(expectedSum([0, 1, 2], 8)));
    expect(ignored).toContain('invalid-argument');
  });

  test('gives up on a round whose coordinator went silent once all its deadlines have passed', async () => {
    // Silent, not closed: every client reaches the coordinator through a proxy of its own, and
    // the proxies turn into a partition just as the coordinator closes phase 0 — the connections
    // stay open and nothing more arrives either way (a closing coordinator would instead tell the
    // clients the round was cancelled). Whatever the coordinator does after that (its later
    // phases time out and it aborts the round) never reaches them.
    const proxies: FaultProxy[] = [];
    const c = await startCoordinator({ tap: (_id, type) => void (type === 'advertise-broadcast' && proxies.forEach((p) => p.blackhole())) });
    cleanups.push(() => c.close());
    cleanups.push(async () => void (await Promise.all(proxies.map((p) => p.close()))));
    const clients = await enrollClients(c, 4);
    for (const _ of clients) proxies.push(await FaultProxy.start(c.address));
    const ended: { ok: boolean; reason?: string }[] = [];
    const runners = startRunners(
      c,
      clients,
      8,
      (_id, ev) => void (ev.kind === 'round-ended' && ended.push({ ok: ev.ok, ...(ev.reason ? { reason: ev.reason } : {}) })),
      (i) => ({ address: proxies[i]!.address, roundGraceMs: 200, backoffMs: { min: 50, max: 200 } }),
    );
    cleanups.push(async () => void (await Promise.all(runners.map((r) => r.stop()))));
    await waitFor(() => c.connectedClients().length === 4, 20_000, 'four subscribers');
    // Phase 0 closes as soon as all four advertised: its deadline is long enough for a loaded
    // machine (a client late for it would be left out of the round). No later phase needs to
    // complete in time: the partition starts as phase 0 closes. The clients give up once the sum
    // of the deadlines (and their grace) has passed since the round started.
    const deadlines = { advertiseMs: 30_000, shareMs: 300, maskedMs: 300, consistencyMs: 300, unmaskMs: 300 };
    await c.launch(manifest({ round: { dim: 8, cohort: 4, neighbors: 3 }, deadlines }));
    await waitFor(() => ended.length === 4, 120_000, 'every client to give up');
    expect(ended).toEqual([0, 1, 2, 3].map(() => ({ ok: false, reason: 'deadline-passed' })));
    expect(runners.every((r) => r.agent.currentRound === null)).toBe(true);
  });
});
