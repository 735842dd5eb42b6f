/**
 * A client that loses its front end mid-round and reconnects through another: two coordinator
 * front ends on one real Redis and one key prefix (coordinator/queue/redis-rounds.ts), six
 * clients, each reaching each front end through a fault proxy of its own
 * (test/support/fault-proxy.ts) and given both as `PROXY_A,PROXY_B` (or B first), so its
 * failover runs over real gRPC/TLS through the proxies. As the masked-input phase opens for one
 * client of front end A, its link to A is reset (TCP RST both ways): the message that opens the
 * phase dies with the stream. The client moves to front end B, which follows the round on
 * Redis and hands it what it missed; it uploads its masked input there and is in the exact sum.
 *
 * In-process ClientRunners (the code `aegis client run` runs) rather than processes: the test
 * reads which front end each runner is on and the order of its connection events.
 */
import { sumBitsOf } from '../../shared/protocol/params.js';
import { packedBytes } from '../../shared/crypto/bitpack.js';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, test } from '@jest/globals';
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { RedisRounds } from '../../coordinator/queue/redis-rounds.js';
import type { ClientRunner, RunnerEvent } from '../../client/agent/connection.js';
import type { ServerEvent } from '../../shared/protocol/messages.js';
import { enrollClients, expectedSum, integerInput, manifest, startRunners, waitFor } from '../support/cluster.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { useTestRedis } from '../support/redis.js';

const DIM = 1_000;
const N = 6;
const ctx = useTestRedis();
const queueKey = randomBytes(32);
const runners: ClientRunner[] = [];
const proxies: FaultProxy[] = [];
const coordinators: Coordinator[] = [];

afterAll(async () => {
  for (const r of runners) await r.stop();
  for (const c of coordinators) await c.close();
  for (const p of proxies) await p.close();
});

describe('a client moved to another front end mid-round', () => {
  test('its link to front end A reset as the masked-input phase opens: it reconnects through front end B, uploads there, and the sum is exact over all six', async () => {
    const victimIndex = 0;
    /** The fault to run when `at` is about to reach the client on front end A. */
    const faultAt = new Map<string, { at: ServerEvent['type']; run: () => void }>();
    const fired: string[] = [];
    const ca = await createCa({ name: 'Aegis faults test CA' });
    const tokens = TokenIssuer.create();
    const registry = new Registry();
    const fes: Coordinator[] = [];
    for (let i = 0; i < 2; i++) {
      const redis = ctx.redis.duplicate({ maxRetriesPerRequest: null });
      ctx.closers.push(() => redis.quit());
      const shared = new RedisRounds(redis, queueKey, { prefix: `${ctx.prefix}-faults`, frontEndId: `fe-${i}-${randomBytes(2).toString('hex')}`, pollMs: 200 });
      const c = new Coordinator({
        ca,
        tokens,
        registry,
        redisRounds: shared,
        ...(i === 0
          ? {
              tap: (id: string, type: ServerEvent['type']) => {
                const f = faultAt.get(id);
                if (f?.at !== type) return;
                faultAt.delete(id);
                fired.push(`${id}:${type}`);
                f.run();
              },
            }
          : {}),
      });
      await c.listen('127.0.0.1:0', '127.0.0.1:0');
      coordinators.push(c);
      fes.push(c);
    }
    const [a, b] = fes as [Coordinator, Coordinator];
    const clients = await enrollClients(a, N);
    const events = new Map<string, RunnerEvent[]>();
    // Client i: a proxy to A and one to B; even clients start on A, odd ones on B.
    const links = await Promise.all(clients.map(async () => ({ toA: await FaultProxy.start(a.address), toB: await FaultProxy.start(b.address) })));
    proxies.push(...links.flatMap((l) => [l.toA, l.toB]));
    clients.forEach((e, i) => {
      const log: RunnerEvent[] = [];
      events.set(e.clientId, log);
      const { toA, toB } = links[i]!;
      const address = i % 2 === 0 ? `${toA.address},${toB.address}` : `${toB.address},${toA.address}`;
      runners.push(...startRunners(a, [e], DIM, (_id, ev) => void log.push(ev), () => ({ address, input: () => integerInput(i, DIM) })));
    });
    const onA = clients.filter((_, i) => i % 2 === 0).map((e) => e.clientId);
    const onB = clients.filter((_, i) => i % 2 === 1).map((e) => e.clientId);
    await waitFor(() => onA.every((id) => a.connectedClients().includes(id)) && onB.every((id) => b.connectedClients().includes(id)), 30_000, 'clients on both front ends');

    const victim = clients[victimIndex]!.clientId;
    const { toA, toB } = links[victimIndex]!;
    faultAt.set(victim, { at: 'share-broadcast', run: () => void toA.reset() });
    const launched = await a.launch(
      manifest({ jobId: 'faults-fe', round: { dim: DIM, cohort: N, threshold: 4 }, deadlines: { advertiseMs: 15_000, shareMs: 15_000, maskedMs: 15_000, consistencyMs: 15_000, unmaskMs: 15_000 } }),
      // The cohort gathers over both front ends (each one's clients are on Redis as its presence).
      { gatherMs: 5_000 },
    );
    expect([...launched.cohort].sort()).toEqual(clients.map((e) => e.clientId).sort());
    const o = await a.outcomeOf('faults-fe', 0);

    expect(fired).toEqual([`${victim}:share-broadcast`]);
    expect(toA.resets).toBeGreaterThan(0);
    expect(o.ok ? 'completed' : `${o.reason} at ${o.at}: ${o.detail}`).toBe('completed');
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual(clients.map((e) => e.clientId).sort());
    expect(Buffer.from(o.sum.buffer, o.sum.byteOffset, o.sum.byteLength).equals(Buffer.from(expectedSum([0, 1, 2, 3, 4, 5], DIM).buffer))).toBe(true);

    // The victim lost A (unavailable), was sent on to B, and connected there; it is on B now.
    const log = events.get(victim)!;
    const lost = log.findIndex((e) => e.kind === 'disconnected' && e.address === toA.address);
    expect(lost).toBeGreaterThanOrEqual(0);
    expect(log[lost]).toMatchObject({ code: 'unavailable', next: toB.address });
    expect(log.findIndex((e, i) => i > lost && e.kind === 'connected' && e.address === toB.address)).toBeGreaterThan(lost);
    expect(runners[victimIndex]!.address).toBe(toB.address);
    expect(b.connectedClients()).toContain(victim);
    expect(a.connectedClients()).not.toContain(victim);
    // Its masked input went to B: B's link carried at least the packed vector.
    expect(toB.forwarded.up).toBeGreaterThan(packedBytes(DIM + 1, sumBitsOf({ cohort: N, bits: 16 })));
    // B tells it how the round ended.
    await waitFor(() => log.some((e) => e.kind === 'round-ended' && e.ok), 30_000, "the victim's round-ended event");
  });
});
