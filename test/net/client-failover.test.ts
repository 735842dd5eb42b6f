/**
 * Client failover across coordinator front ends, over real gRPC/TLS on loopback: a runner given
 * `HOST:PORT,HOST:PORT` uses one front end and moves to the next when it goes away. The two
 * coordinators share the CA, the token issuer and the registry (as front ends on one Redis share
 * their data dir), so either accepts the client's certificate and tokens.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import net from 'node:net';
import { ClientRunner, parseAddressList, type RunnerEvent } from '../../client/agent/connection.js';
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { codeOf } from '../support/codes.js';
import { enrollClients, expectedSum, integerInput, manifest, startCoordinator, type Enrolled, waitFor } from '../support/cluster.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

/** Two listening front ends built from one CA, one token issuer and one registry. */
async function twoFrontEnds(): Promise<[Coordinator, Coordinator]> {
  const ca = await createCa({ name: 'Aegis failover test CA' });
  const tokens = TokenIssuer.create();
  const registry = new Registry();
  const a = new Coordinator({ ca, tokens, registry });
  const b = new Coordinator({ ca, tokens, registry });
  await a.listen('127.0.0.1:0', '127.0.0.1:0');
  await b.listen('127.0.0.1:0', '127.0.0.1:0');
  return [a, b];
}

/** A loopback address nothing listens on (a port bound, then released). */
async function deadAddress(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

function run(address: string, caPem: string, clients: Enrolled[], dim: number, events: Map<string, RunnerEvent[]>): ClientRunner[] {
  const runners = clients.map((e, i) => {
    const log: RunnerEvent[] = [];
    events.set(e.clientId, log);
    const r = new ClientRunner({
      address,
      caPem,
      clientId: e.clientId,
      identity: e.identity,
      certificateDer: e.certificateDer,
      input: () => integerInput(i, dim),
      backoffMs: { min: 50, max: 500 },
      onEvent: (ev) => void log.push(ev),
    });
    r.start();
    return r;
  });
  cleanups.push(async () => void (await Promise.all(runners.map((r) => r.stop()))));
  return runners;
}

const connectedTo = (log: RunnerEvent[], address: string): number => log.findIndex((e) => e.kind === 'connected' && e.address === address);

describe('client failover across coordinator front ends', () => {
  test('connects to the first front end, moves to the second when the first closes, and completes a round there', async () => {
    const [a, b] = await twoFrontEnds();
    cleanups.push(() => b.close());
    let aClosed = false;
    cleanups.push(async () => void (aClosed || (await a.close())));
    const clients = await enrollClients(a, 4);
    const events = new Map<string, RunnerEvent[]>();
    const runners = run(`127.0.0.1:${a.address.split(':')[1]}, 127.0.0.1:${b.address.split(':')[1]}`, a.ca.certificatePem, clients, 8, events);
    const ids = clients.map((c) => c.clientId);

    await waitFor(() => ids.every((id) => a.connectedClients().includes(id)), 20_000, 'every client on front end A');
    await waitFor(() => ids.every((id) => connectedTo(events.get(id)!, a.address) >= 0), 20_000, "every client's connected event for A");
    expect(b.connectedClients()).toEqual([]);
    expect(runners.every((r) => r.address === a.address)).toBe(true);

    await a.close();
    aClosed = true;
    await waitFor(() => ids.every((id) => b.connectedClients().includes(id)), 20_000, 'every client on front end B');
    expect(runners.every((r) => r.address === b.address)).toBe(true);
    // The server attaches a stream a moment before the client sees its headers: wait for both.
    await waitFor(() => ids.every((id) => connectedTo(events.get(id)!, b.address) >= 0), 20_000, "every client's connected event for B");

    for (const id of ids) {
      const log = events.get(id)!;
      const first = connectedTo(log, a.address);
      const lost = log.findIndex((e) => e.kind === 'disconnected' && e.address === a.address);
      const second = connectedTo(log, b.address);
      expect(first).toBeGreaterThanOrEqual(0);
      expect(lost).toBeGreaterThan(first);
      expect(second).toBeGreaterThan(lost);
      const d = log[lost]!;
      if (d.kind !== 'disconnected') throw new Error('unreachable');
      expect(d.code).toBe('unavailable');
      expect(d.next).toBe(b.address);
      expect(log.some((e) => e.kind === 'fatal')).toBe(false);
    }

    // The second front end takes the clients' tokens and messages: a whole round runs there.
    await b.launch(manifest({ round: { dim: 8, cohort: 4, neighbors: 3 } }));
    const o = await b.outcomeOf('job-1', 0);
    expect(o.ok).toBe(true);
    if (o.ok) expect(Array.from(o.sum)).toEqual(Array.from(expectedSum([0, 1, 2, 3], 8)));
  });

  test('reaches a later front end when the first one in the list is down from the start', async () => {
    const [a, b] = await twoFrontEnds();
    cleanups.push(() => a.close());
    cleanups.push(() => b.close());
    const [client] = await enrollClients(a, 1);
    const events = new Map<string, RunnerEvent[]>();
    const dead = await deadAddress();
    const [runner] = run(`${dead},${b.address}`, a.ca.certificatePem, [client!], 8, events);
    await waitFor(() => b.connectedClients().includes(client!.clientId), 20_000, 'the client on front end B');
    expect(runner!.address).toBe(b.address);
    expect(a.connectedClients()).toEqual([]);
    const log = events.get(client!.clientId)!;
    await waitFor(() => connectedTo(log, b.address) >= 0, 20_000, 'the connected event for B');
    const lost = log.findIndex((e) => e.kind === 'disconnected' && e.address === dead);
    expect(lost).toBeGreaterThanOrEqual(0);
    expect(connectedTo(log, b.address)).toBeGreaterThan(lost);
    expect(connectedTo(log, dead)).toBe(-1);
  });

  test('a single address works as before: connects, takes part in a round', async () => {
    const c = await startCoordinator();
    cleanups.push(() => c.close());
    const clients = await enrollClients(c, 4);
    const events = new Map<string, RunnerEvent[]>();
    const runners = run(c.address, c.ca.certificatePem, clients, 8, events);
    await waitFor(() => c.connectedClients().length === 4, 20_000, 'four subscribers');
    expect(runners.every((r) => r.address === c.address)).toBe(true);
    await waitFor(() => [...events.values()].every((log) => connectedTo(log, c.address) >= 0), 20_000, 'four connected events');
    for (const log of events.values()) expect(log.filter((e) => e.kind === 'disconnected')).toEqual([]);
    await c.launch(manifest({ round: { dim: 8, cohort: 4, neighbors: 3 } }));
    const o = await c.outcomeOf('job-1', 0);
    expect(o.ok).toBe(true);
    if (o.ok) expect(Array.from(o.sum)).toEqual(Array.from(expectedSum([0, 1, 2, 3], 8)));
  });

  test('the address list is trimmed and empties dropped; an empty list is refused with invalid-argument', async () => {
    expect(parseAddressList(' 127.0.0.1:1 ,, 127.0.0.1:2,')).toEqual(['127.0.0.1:1', '127.0.0.1:2']);
    expect(parseAddressList('127.0.0.1:1')).toEqual(['127.0.0.1:1']);
    const ca = await createCa({ name: 'Aegis failover test CA' });
    const [client] = await (async () => {
      const c = await startCoordinator();
      try {
        return await enrollClients(c, 1);
      } finally {
        await c.close();
      }
    })();
    for (const address of [',', '', ' , ,']) {
      expect(
        codeOf(
          () =>
            new ClientRunner({ address, caPem: ca.certificatePem, clientId: client!.clientId, identity: client!.identity, certificateDer: client!.certificateDer }),
        ),
      ).toBe('invalid-argument');
    }
  });
});
