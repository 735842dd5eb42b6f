/**
 * Declines on a round shared by two coordinator front ends on one real Redis: a decline one
 * front end takes counts on the other, like an advertisement, and when it is the last answer
 * phase 0 was waiting for, it closes phase 0 for the round everywhere — long before the
 * deadline. Real gRPC over TLS 1.3, real Redis, real client runners: nothing mocked.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from '@jest/globals';
import { AuditBook } from '../../client/audit/audit.js';
import type { ClientRunner } from '../../client/agent/connection.js';
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Registry } from '../../coordinator/clients/registry.js';
import type { PhaseClosedEvent } from '../../coordinator/hosts/types.js';
import { RedisRounds } from '../../coordinator/queue/redis-rounds.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { enrollClients, expectedSum, manifest, startRunners, waitFor } from '../support/cluster.js';
import { useTestRedis } from '../support/redis.js';

const DIM = 8;
const ctx = useTestRedis();
const queueKey = randomBytes(32);

let coordinators: Coordinator[] = [];
let runners: ClientRunner[] = [];
afterEach(async () => {
  for (const r of runners) await r.stop();
  runners = [];
  for (const c of coordinators) await c.close();
  coordinators = [];
});

describe('a decline on one front end', () => {
  test('counts on the other and, as the last answer, closes phase 0 there too', async () => {
    const prefix = `${ctx.prefix}-declines`;
    const ca = await createCa({ name: 'Aegis test CA' });
    const tokens = TokenIssuer.create();
    const registry = new Registry();
    const closed: PhaseClosedEvent[] = [];
    const fes: { c: Coordinator; shared: RedisRounds }[] = [];
    for (let i = 0; i < 2; i++) {
      const redis = ctx.redis.duplicate({ maxRetriesPerRequest: null });
      ctx.closers.push(() => redis.quit());
      const shared = new RedisRounds(redis, queueKey, { prefix, frontEndId: `fe-${i}-${randomBytes(2).toString('hex')}`, pollMs: 200, onPhaseClosed: (_m, e) => closed.push(e) });
      const c = new Coordinator({ ca, tokens, registry, redisRounds: shared, lostAfterMs: 500 });
      await c.listen('127.0.0.1:0', '127.0.0.1:0');
      coordinators.push(c);
      fes.push({ c, shared });
    }
    const [a, b] = fes as [(typeof fes)[0], (typeof fes)[0]];

    // Clients 0..3 advertise and client 5 (no input) declines, all on front end a; client 4, in
    // audit mode, declines on front end b — held until the test lets it answer.
    const clients = await enrollClients(a.c, 6);
    const book = await AuditBook.open(await mkdtemp(join(tmpdir(), 'aegis-declines-redis-')));
    await book.enter('operator', 'declines on redis');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const admit = book.admit.bind(book);
    book.admit = async (jobId, sha) => {
      await gate;
      return admit(jobId, sha);
    };
    const inputOf = (i: number): Uint32Array => expectedSum([i], DIM);
    runners = clients.map((e, i) => startRunners(i === 4 ? b.c : a.c, [e], DIM, undefined, () => (i === 4 ? { audit: book } : i === 5 ? { input: undefined } : { input: () => inputOf(i) }))[0]!);
    await waitFor(() => a.c.connectedClients().length === 5 && b.c.connectedClients().length === 1, 20_000, 'clients on both front ends');

    const advertiseMs = 60_000;
    await a.c.launch(manifest({ jobId: 'fe-declines', round: { dim: DIM, cohort: 6 }, deadlines: { advertiseMs, shareMs: 20_000, maskedMs: 20_000, consistencyMs: 20_000, unmaskMs: 20_000 } }), { gatherMs: 5_000 });
    const k = 'fe-declines.r0';
    const st = a.shared.store;
    const rk = st.roundKey(k);
    const inbox = st.inboxKey(k, Phase.AdvertiseKeys);

    // Four advertisements and one decline, all taken by front end a: phase 0 still waits for client 4.
    const until = Date.now() + 20_000;
    while ((await ctx.redis.hlen(inbox)) < 5) {
      if (Date.now() > until) throw new Error('timed out waiting for five answers');
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(await ctx.redis.hget(rk, 'phase')).toBe(Phase.AdvertiseKeys);
    const followed = await b.shared.host(k);
    // Front end b counts the decline a took (counts only: reason -> clients).
    await waitFor(() => Object.values(followed.status().declines).reduce((x, n) => x + (n ?? 0), 0) === 1, 10_000, 'front end b to see the decline');
    expect(followed.status()).toMatchObject({ phase: Phase.AdvertiseKeys, received: 4 });
    const reasonOf5 = Object.keys(followed.status().declines)[0]!;
    expect(['no-input', 'invalid-argument']).toContain(reasonOf5);
    expect(Object.keys(await ctx.redis.hgetall(st.declinesKey(k)))).toEqual([reasonOf5]);

    // Client 4 declines through front end b: the last answer; phase 0 closes at once.
    release();
    const o = await a.c.outcomeOf('fe-declines', 0);
    expect(o.ok).toBe(true);
    if (!o.ok) return;
    expect([...o.survivors].sort()).toEqual(clients.slice(0, 4).map((x) => x.clientId).sort());
    expect(Buffer.from(o.sum.buffer).equals(Buffer.from(expectedSum([0, 1, 2, 3], DIM).buffer))).toBe(true);
    expect(o.declines).toEqual({ 'approval-required': 1, [reasonOf5]: 1 });
    const timeline = JSON.parse((await ctx.redis.hget(rk, 'timeline'))!) as { phase: string; at: number }[];
    expect(timeline[1]!.phase).toBe(Phase.ShareKeys);
    expect(timeline[1]!.at - timeline[0]!.at).toBeLessThan(advertiseMs / 4);
    expect(await a.shared.phaseQueue.getJob(`${k}.0.early`)).toBeDefined();

    // Both front ends report the declines by reason; the closer's phase-0 event has them apart from the advertisers.
    const status = a.c.statusOf('fe-declines');
    expect(status.declines.map((d) => d.clients)).toEqual([1, 1]);
    expect(status.dropouts).toBe(0);
    await waitFor(() => followed.settled, 10_000, 'front end b to settle the round');
    expect(followed.status().declines).toEqual({ 'approval-required': 1, [reasonOf5]: 1 });
    expect(closed.find((e) => e.phase === Phase.AdvertiseKeys)).toMatchObject({ clients: 4, expected: 6, declines: { 'approval-required': 1, [reasonOf5]: 1 } });
    // The counts on Redis name no client.
    const stats = (await ctx.redis.hget(rk, 'stats'))!;
    for (const x of clients) expect(stats).not.toContain(x.clientId);
    expect(JSON.parse(stats)).toMatchObject({ advertised: 4, u1: 4, declines: { 'approval-required': 1, [reasonOf5]: 1 } });
  });
});
