/**
 * `simulate()` (bench/sim/simulate.ts), the engine of `aegis simulate`, run in the calling
 * thread (`workers: 0`): the JSON result the CLI prints, its keystream accounting, the decoded
 * weighted mean, determinism under a seed, and typed aborts.
 */
import { roundViewDigest } from '../../shared/protocol/view.js';
import { describe, expect, test } from '@jest/globals';
import { ClientHost, makeIdentities, syntheticInput, type DropPhase } from '../../bench/sim/client-host.js';
import { dropSchedule, simulate, type SimulateResult } from '../../bench/sim/simulate.js';
import { close, decodeRoundSum, isFinal, receive, start, type CoordinatorState } from '../../coordinator/round/index.js';
import type { ClientMessage } from '../../shared/protocol/messages.js';
import { validateRoundParams } from '../../shared/protocol/params.js';
import { sha256 } from '../../shared/protocol/session.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { clientMessageBytes } from '../../shared/rpc/wire-bytes.js';

/** Sum of the synthetic weights of the clients that survive `seed`'s schedule up to U3. */
function survivorWeight(n: number, dim: number, dropout: number, dropPhase: DropPhase | 'any', seed: number): number {
  const schedule = dropSchedule(n, dropout, dropPhase, seed);
  let w = 0;
  schedule.forEach((d, i) => {
    if (d === null || d === 'consistency' || d === 'unmask') w += syntheticInput(seed, i, dim, 1).weight;
  });
  return w;
}

interface InThreadRound {
  final: CoordinatorState;
  xSum: Float64Array;
  qSum: Uint32Array;
  contributors: string[];
}

/** The simulator's round with the final coordinator state kept: client host and coordinator in this thread. */
function runInThread(o: { clients: number; dim: number; dropout: number; dropPhase: DropPhase | 'any'; seed: number }): InThreadRound {
  const params = validateRoundParams({ dim: o.dim, cohort: o.clients });
  const round = { manifestHash: sha256(`aegis-test:simulate:${o.seed}`), roundIndex: 0 };
  const parties = makeIdentities(o.clients);
  const schedule = dropSchedule(o.clients, o.dropout, o.dropPhase, o.seed);
  const directory: [string, Uint8Array][] = parties.map((p) => [p.id, p.publicKey]);
  const identityOf = new Map(directory);
  const host = new ClientHost({
    params,
    round,
    seed: o.seed,
    directory,
    clients: parties.map((p, index) => ({ id: p.id, index, identityKey: p.identityKey, dropAt: schedule[index]! })),
  });
  let state: CoordinatorState = start({ params, round, view: roundViewDigest({ round, params }), identityOf: (id) => identityOf.get(id) });
  const take = (m: ClientMessage): void => {
    state = receive(state, m).next;
  };
  host.startAll(take);
  while (!isFinal(state)) {
    const { next, outbound } = close(state);
    state = next;
    host.deliver(outbound, take);
  }
  const { xSum, qSum, contributors } = host.plaintext();
  return { final: state, xSum, qSum, contributors };
}

const step = (bits: number, clip = 1): number => (2 * clip) / (2 ** bits - 1);

describe('simulate', () => {
  test('a classic round without dropouts returns, as plain JSON, every field the CLI promises with consistent values', async () => {
    const [n, dim, seed] = [6, 3000, 5];
    const r = await simulate({ clients: n, dim, seed, workers: 0 });
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
    expect(r).toMatchObject({
      ok: true,
      exact: true,
      clients: n,
      survivors: n,
      dropped: 0,
      neighbors: n - 1,
      threshold: Math.floor((n - 1) / 2) + 1,
      mode: 'secagg',
      dim,
      bits: 16,
      clip: 1,
      seed,
      workers: 0,
      sets: { u1: n, u2: n, u3: n, u4: n },
      refused_messages: 0,
      client_aborts: 0,
    });
    expect(r.reason).toBeUndefined();
    expect(typeof r.max_abs_error).toBe('number');
    expect(r.max_abs_error!).toBeGreaterThan(0);
    expect(r.max_abs_error!).toBeLessThanOrEqual(n * step(16));
    for (const k of ['client_mean', 'client_max', 'server_unmask', 'total'] as const) {
      expect(Number.isFinite(r.timings_ms[k])).toBe(true);
      expect(r.timings_ms[k]).toBeGreaterThan(0);
    }
    expect(r.timings_ms.client_max).toBeGreaterThanOrEqual(r.timings_ms.client_mean);
    expect(r.timings_ms.total).toBeGreaterThanOrEqual(r.timings_ms.server_unmask);
    // Each client expands its self mask and one mask per other client; the coordinator removes
    // the n self masks. Every keystream is (m + 1) words of 4 bytes.
    expect(r.prg_bytes).toBe(n * n * (dim + 1) * 4 + n * (dim + 1) * 4);
    expect(r.peak_rss_mb).toBeGreaterThan(0);
    expect(r.total_weight).toBe(survivorWeight(n, dim, 0, 'any', seed));
  });

  test('bytes per client: the mean payload of each phase\'s messages, the masked input at r bits within 1% of m·r/8, and the totals add up', async () => {
    const [n, dim] = [8, 20_000];
    const r = await simulate({ clients: n, dim, seed: 2, dropout: 0.25, dropPhase: 'masked', workers: 0 });
    expect(r).toMatchObject({ ok: true, exact: true, survivors: 6, sum_bits: 16 + 3, masked_floor_bytes: (dim * 19) / 8 });
    const up = r.bytes_per_client;
    // The masked input's exact envelope size: the packed vector of dim + 1 words and its header.
    const masked = clientMessageBytes({ type: 'masked-input', sessionId: new Uint8Array(32), clientId: 'client-0', vector: new Uint32Array(dim + 1), bits: 19 });
    expect(up.masked).toBe(masked);
    expect(up.masked / r.masked_floor_bytes).toBeLessThan(1.01);
    expect(up.masked).toBeGreaterThan(r.masked_floor_bytes);
    // Key advertisement: two 32-byte keys, a 32-byte view, a 64-byte signature and the round.
    expect(up.advertise).toBeGreaterThan(160);
    expect(up.advertise).toBeLessThan(300);
    // Share pairs: one AES-GCM ciphertext per other client (classic: 7).
    expect(up.share).toBeGreaterThan(7 * 90);
    expect(up.consistency).toBeGreaterThan(64);
    expect(up.total).toBe(up.advertise + up.share + up.masked + up.consistency + up.unmask);
    const down = r.bytes_down_per_client;
    expect(down.total).toBe(down.advertise + down.share + down.masked + down.consistency + down.unmask);
    // The advertise broadcast carries every member's signed keys.
    expect(down.advertise).toBeGreaterThan(n * 160);
    expect(down.unmask).toBe(0);
  });

  test('prg_bytes counts exactly the keystreams of the clients that masked and of the coordinator when some clients drop before masking', async () => {
    // Classic, n = 8, two clients drop after sharing: U2 = 8, U3 = 6. Each of the 6 masks with its
    // 7 neighbours in U2 plus itself; the coordinator removes 6 self masks and, for each of the 2
    // dropped clients, its pairwise masks with the 6 survivors.
    const [n, dim] = [8, 100];
    const r = await simulate({ clients: n, dim, dropout: 0.25, dropPhase: 'masked', seed: 3, workers: 0 });
    expect(r).toMatchObject({ ok: true, exact: true, survivors: 6, sets: { u1: 8, u2: 8, u3: 6, u4: 6 } });
    const words = 6 * (7 + 1) + (6 + 2 * 6);
    expect(r.prg_bytes).toBe(words * (dim + 1) * 4);
  });

  test('prg_bytes of a SecAgg+ round without dropouts is n (k + 1) client keystreams plus n self masks', async () => {
    // n even: every vertex of the Harary graph has exactly k neighbours.
    const [n, k, dim] = [10, 4, 64];
    const r = await simulate({ clients: n, dim, neighbors: k, seed: 9, workers: 0 });
    expect(r).toMatchObject({ ok: true, exact: true, mode: 'secagg+', neighbors: k, threshold: 3, survivors: n });
    expect(r.prg_bytes).toBe((n * (k + 1) + n) * (dim + 1) * 4);
  });

  test('the weighted mean of a completed round is its sum divided by the total weight, which is the survivors\' weights added up', () => {
    const o = { clients: 7, dim: 50, dropout: 2 / 7, dropPhase: 'masked' as const, seed: 21 };
    const { final, xSum, contributors } = runInThread(o);
    expect(final.phase).toBe(Phase.Completed);
    if (final.phase !== Phase.Completed) return;
    const { sum, mean, totalWeight } = decodeRoundSum(final.sum, final.survivors.length, final.cfg.params);
    expect(final.survivors).toHaveLength(5);
    expect([...contributors].sort()).toEqual([...final.survivors]);
    expect(totalWeight).toBe(survivorWeight(o.clients, o.dim, o.dropout, o.dropPhase, o.seed));
    expect(totalWeight).toBe(final.sum[o.dim]);
    expect(totalWeight).toBeGreaterThan(0);
    expect(mean).toHaveLength(o.dim);
    for (let i = 0; i < o.dim; i++) {
      expect(mean[i]).toBe(sum[i]! / totalWeight);
      expect(Math.abs(sum[i]! - xSum[i]!)).toBeLessThanOrEqual(5 * step(16));
    }
  });

  test('the same seed gives the same schedule, survivors, total weight and unmasked sum; another seed another round', async () => {
    const o = { clients: 10, dim: 40, dropout: 0.3, dropPhase: 'any' as const };
    const [a, b, c] = await Promise.all([7, 7, 8].map((seed) => simulate({ ...o, seed, workers: 0 })));
    expect(a!.ok && a!.exact && b!.ok && b!.exact).toBe(true);
    const sameFields = (r: SimulateResult): unknown => ({ survivors: r.survivors, dropped: r.dropped, sets: r.sets, total_weight: r.total_weight, prg_bytes: r.prg_bytes });
    expect(sameFields(b!)).toEqual(sameFields(a!));
    expect(c!.total_weight).not.toBe(a!.total_weight);

    // Fresh keys every time, yet the unmasked sum is a function of the seed alone.
    const x = runInThread({ ...o, seed: 7 });
    const y = runInThread({ ...o, seed: 7 });
    expect(x.final.phase).toBe(Phase.Completed);
    expect(y.final.phase).toBe(Phase.Completed);
    if (x.final.phase !== Phase.Completed || y.final.phase !== Phase.Completed) return;
    expect(Array.from(y.final.sum)).toEqual(Array.from(x.final.sum));
    expect(Array.from(x.final.sum)).toEqual(Array.from(x.qSum));
    expect(x.final.survivors).toEqual(y.final.survivors);
    expect(x.final.survivors).toHaveLength(a!.survivors);
    expect(x.final.sum[o.dim]).toBe(a!.total_weight);
  });

  test.each<[string, DropPhase, number, AbortReason, Phase]>([
    ['share', 'share', 0.75, AbortReason.TooFewClients, Phase.ShareKeys],
    ['masked', 'masked', 0.75, AbortReason.TooFewClients, Phase.MaskedInput],
    ['unmask', 'unmask', 0.75, AbortReason.InsufficientShares, Phase.Unmasking],
  ])('a round left with fewer than t clients by drops in the %s phase returns ok:false with a typed reason and no result', async (_name, dropPhase, dropout, reason, at) => {
    const [n, dim] = [8, 32];
    const r = await simulate({ clients: n, dim, dropout, dropPhase, seed: 4, workers: 0 });
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
    expect(r).toMatchObject({ ok: false, exact: false, reason, aborted_at: at, max_abs_error: null, survivors: 0, total_weight: null, clients: n, dropped: 6 });
    expect(Object.values(AbortReason)).toContain(r.reason);
    expect(typeof r.detail).toBe('string');
    expect(r.detail!.length).toBeGreaterThan(0);
    expect(r.timings_ms.total).toBeGreaterThan(0);
    expect(r.peak_rss_mb).toBeGreaterThan(0);
  });
});
