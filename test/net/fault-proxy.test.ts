/**
 * The fault-injecting proxy of the network fault suites (test/support/fault-proxy.ts), on real
 * loopback TCP: a target server that records what it receives, a plain client socket, and the
 * proxy between them. Each mode is shown to do what it says: bytes pass unchanged; latency is at
 * least the configured value (a lower bound only) and keeps order; the rate cap holds a transfer
 * to at most the cap; a blackhole delivers nothing either way, also on a new connection, without
 * closing anything, and heal() delivers what was held; a reset gives ECONNRESET on both sides;
 * a stalled upload stops at exactly N bytes while the other direction flows.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { FaultProxy } from '../support/fault-proxy.js';
import { waitFor } from '../support/cluster.js';

interface Target {
  server: net.Server;
  address: string;
  /** The server side of each accepted connection and what it received. */
  conns: { socket: net.Socket; received: Buffer[]; error?: NodeJS.ErrnoException }[];
}

/** A TCP server that records what each connection sends; `echo` sends it back as well. */
async function target(echo = false): Promise<Target> {
  const conns: Target['conns'] = [];
  const server = net.createServer((socket) => {
    const c: Target['conns'][number] = { socket, received: [] };
    conns.push(c);
    socket.on('data', (d: Buffer) => {
      c.received.push(d);
      if (echo) socket.write(d);
    });
    socket.on('error', (e) => (c.error = e));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, conns };
}

interface Client {
  socket: net.Socket;
  received: Buffer[];
  error?: NodeJS.ErrnoException;
  closed: boolean;
}

async function connect(address: string): Promise<Client> {
  const [host, port] = address.split(':') as [string, string];
  const socket = net.connect({ host, port: Number(port) });
  const c: Client = { socket, received: [], closed: false };
  socket.on('data', (d: Buffer) => c.received.push(d));
  socket.on('error', (e) => (c.error = e));
  socket.on('close', () => (c.closed = true));
  await new Promise<void>((r) => socket.once('connect', () => r()));
  return c;
}

const total = (bufs: Buffer[]): number => bufs.reduce((n, b) => n + b.length, 0);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function setup(echo = false): Promise<{ t: Target; p: FaultProxy }> {
  const t = await target(echo);
  const p = await FaultProxy.start(t.address);
  cleanups.push(() => new Promise<void>((r) => t.server.close(() => r())));
  cleanups.push(() => p.close());
  cleanups.push(() => t.conns.forEach((c) => c.socket.destroy()));
  return { t, p };
}

function client(c: Client): Client {
  cleanups.push(() => void c.socket.destroy());
  return c;
}

describe('fault proxy', () => {
  test('listens on 127.0.0.1 and forwards bytes both ways unchanged', async () => {
    const { t, p } = await setup(true);
    expect(p.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const c = client(await connect(p.address));
    const data = randomBytes(300_000);
    c.socket.write(data);
    await waitFor(() => total(c.received) === data.length, 20_000, 'the echo');
    expect(Buffer.concat(t.conns[0]!.received).equals(data)).toBe(true);
    expect(Buffer.concat(c.received).equals(data)).toBe(true);
    expect(p.forwarded).toEqual({ up: data.length, down: data.length });
  });

  test('latency: a round trip takes at least the two configured latencies, and chunks keep their order when it is lowered', async () => {
    const { p } = await setup(true);
    p.setLatency({ up: 150, down: 100 });
    const c = client(await connect(p.address));
    const t0 = performance.now();
    c.socket.write('ping');
    await waitFor(() => total(c.received) === 4, 20_000, 'the echo');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250);

    // Chunks written while the latency is high, then more after it is lowered: the later ones
    // may not overtake the earlier ones.
    c.received.length = 0;
    p.setLatency(300);
    const parts: Buffer[] = [];
    for (let i = 0; i < 5; i++) {
      const b = Buffer.from(`early-${i};`);
      parts.push(b);
      c.socket.write(b);
      await sleep(5);
    }
    await waitFor(() => p.held('up') > 0, 20_000, 'held bytes');
    p.setLatency(0);
    for (let i = 0; i < 5; i++) {
      const b = Buffer.from(`late-${i};`);
      parts.push(b);
      c.socket.write(b);
      await sleep(5);
    }
    const want = Buffer.concat(parts);
    await waitFor(() => total(c.received) === want.length, 20_000, 'every chunk echoed');
    expect(Buffer.concat(c.received).toString()).toBe(want.toString());
  });

  test('bandwidth: a transfer under a cap takes at least (size - burst) / cap, and arrives whole', async () => {
    const { t, p } = await setup();
    const cap = 100_000;
    p.setBandwidth({ up: cap });
    expect(p.burst('up')).toBe(cap / 10);
    const c = client(await connect(p.address));
    const data = randomBytes(200_000);
    const t0 = performance.now();
    c.socket.write(data);
    await waitFor(() => t.conns.length === 1 && total(t.conns[0]!.received) === data.length, 30_000, 'the whole transfer');
    // The bucket starts full (its burst): the rest moves at the cap.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(((data.length - p.burst('up')) / cap) * 1000 - 5);
    expect(Buffer.concat(t.conns[0]!.received).equals(data)).toBe(true);
  });

  test('blackhole: nothing moves either way, open and new connections stay open and silent; heal() delivers what was held, in order', async () => {
    const { t, p } = await setup();
    const c = client(await connect(p.address));
    c.socket.write('before');
    await waitFor(() => t.conns.length === 1 && total(t.conns[0]!.received) === 6, 20_000, 'the first bytes');
    const server = t.conns[0]!;

    p.blackhole();
    c.socket.write('up-during');
    server.socket.write('down-during');
    const fresh = client(await connect(p.address));
    fresh.socket.write('new-conn');
    await waitFor(() => p.held('up') === 'up-during'.length + 'new-conn'.length && p.held('down') === 'down-during'.length, 20_000, 'the proxy holding the bytes');
    await sleep(300);
    expect(total(server.received)).toBe(6);
    expect(c.received).toEqual([]);
    // The new connection reached the target as TCP but carried nothing.
    await waitFor(() => t.conns.length === 2, 20_000, 'the second upstream connection');
    expect(t.conns[1]!.received).toEqual([]);
    expect([c.closed, fresh.closed, c.error, fresh.error, server.error]).toEqual([false, false, undefined, undefined, undefined]);
    expect(p.connections).toBe(2);

    p.heal();
    await waitFor(() => total(server.received) === 6 + 9 && total(c.received) === 11 && total(t.conns[1]!.received) === 8, 20_000, 'the held bytes delivered');
    expect(Buffer.concat(server.received).toString()).toBe('beforeup-during');
    expect(Buffer.concat(c.received).toString()).toBe('down-during');
    expect(Buffer.concat(t.conns[1]!.received).toString()).toBe('new-conn');
  });

  test('reset: both sides of every open connection get ECONNRESET; new connections work afterwards', async () => {
    const { t, p } = await setup(true);
    const a = client(await connect(p.address));
    const b = client(await connect(p.address));
    a.socket.write('x');
    b.socket.write('y');
    await waitFor(() => t.conns.length === 2 && total(a.received) === 1 && total(b.received) === 1, 20_000, 'two echoing connections');
    p.reset();
    await waitFor(() => a.closed && b.closed && t.conns.every((s) => s.socket.destroyed), 20_000, 'both connections gone');
    expect(a.error?.code).toBe('ECONNRESET');
    expect(b.error?.code).toBe('ECONNRESET');
    for (const s of t.conns) expect(s.error?.code).toBe('ECONNRESET');
    expect(p.resets).toBe(2);
    const again = client(await connect(p.address));
    again.socket.write('z');
    await waitFor(() => total(again.received) === 1, 20_000, 'an echo on a new connection');
  });

  test('stall: the upload stops at exactly N more bytes, the connection stays open and the download flows; heal() lets the rest through', async () => {
    const { t, p } = await setup();
    const c = client(await connect(p.address));
    c.socket.write('hello');
    await waitFor(() => t.conns.length === 1 && total(t.conns[0]!.received) === 5, 20_000, 'the first bytes');
    const server = t.conns[0]!;
    const N = 40_000;
    p.stallUploadAfter(N);
    const data = randomBytes(100_000);
    c.socket.write(data);
    await waitFor(() => total(server.received) === 5 + N && p.held('up') === data.length - N, 20_000, 'N bytes through and the rest held');
    await sleep(300);
    expect(total(server.received)).toBe(5 + N);
    server.socket.write('still-here');
    await waitFor(() => total(c.received) === 10, 20_000, 'the download');
    expect([c.closed, c.error]).toEqual([false, undefined]);
    p.heal();
    await waitFor(() => total(server.received) === 5 + data.length, 20_000, 'the rest of the upload');
    expect(Buffer.concat(server.received).subarray(5).equals(data)).toBe(true);
  });
});
