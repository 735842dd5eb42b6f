/**
 * Properties of whole rounds (DESIGN.md §2) under random dropout schedules, checked against a
 * model of the protocol computed from the schedule alone, and the masking of one client's
 * vector checked with simple statistics.
 *
 * The model. With A, S, M, C, X clients dropping in advertise, share, masked, consistency and
 * unmask, U1 = n - A, U2 = U1 - S, U3 = U2 - M, U4 = U3 - C, and U5 = U4 - X answer the unmasking
 * request. The coordinator needs |U1| >= t + 1 (each client needs t neighbours) and |U2| >= t,
 * else `too-few-clients` in that phase. A client with fewer than t neighbours in U2 refuses to
 * mask (`too-few-clients` on its side), so it drops out of U3 as if it had crashed.
 *
 * Classic SecAgg (the graph on U1 is complete) is fully determined: |U2| = t leaves every client
 * t - 1 neighbours, so nobody masks; then |U3|, |U4| >= t or `too-few-clients`; then every
 * secret needs t holders other than its owner among U4 (checked when the consistency phase
 * closes) and among U5 (when unmasking), i.e. |U4| >= t + 1 and |U5| >= t + 1, else
 * `insufficient-shares`.
 *
 * SecAgg+: every client has at least k neighbours, so at most k - t drops after advertising
 * always complete with the scheduled sets. Clients refusing to mask only shrink U3 and U4, so
 * scheduled |U3| < t or |U4| < t still abort there, and |U5| <= t always aborts; in between the
 * outcome depends on the session's random neighbour graph.
 */
import { roundViewDigest } from '../../shared/protocol/view.js';
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { DROP_PHASES, makeIdentities, type DropPhase } from '../../bench/sim/client-host.js';
import { dropSchedule, simulate, type SimulateResult } from '../../bench/sim/simulate.js';
import { handle, start as startClient, type ClientState } from '../../client/round/index.js';
import { close, isFinal, receive, start as startCoordinator, type CoordinatorState } from '../../coordinator/round/index.js';
import type { ClientMessage } from '../../shared/protocol/messages.js';
import { sumBitsOf, validateRoundParams, type RoundParams } from '../../shared/protocol/params.js';
import { sha256 } from '../../shared/protocol/session.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';

type Outcome = readonly [AbortReason, Phase];

interface Expected {
  /** Set sizes the schedule implies (upper bounds for U3 and U4 when `exactSets` is false). */
  sets: { u1: number; u2: number; u3: number; u4: number; u5: number };
  /** The round may complete. */
  mayComplete: boolean;
  /** The aborts (reason, phase) the round may end in. */
  aborts: readonly Outcome[];
  /** Whether the coordinator's sets are exactly the scheduled ones. */
  exactSets: boolean;
}

const tooFew = (at: Phase): Outcome => [AbortReason.TooFewClients, at];
const short = (at: Phase): Outcome => [AbortReason.InsufficientShares, at];
/** What a SecAgg+ round can still end in once its counts are fine: it depends on the graph. */
const LATE_ABORTS: readonly Outcome[] = [tooFew(Phase.MaskedInput), tooFew(Phase.ConsistencyCheck), short(Phase.ConsistencyCheck), short(Phase.Unmasking)];

/** What the schedule implies for a round of n clients with degree k and threshold t. */
function expectFromSchedule(n: number, k: number, t: number, schedule: readonly (DropPhase | null)[]): Expected {
  const count = (p: DropPhase): number => schedule.filter((s) => s === p).length;
  const [a, s, m, c, x] = DROP_PHASES.map(count) as [number, number, number, number, number];
  const u1 = n - a;
  const u2 = u1 - s;
  const u3 = u2 - m;
  const u4 = u3 - c;
  const u5 = u4 - x;
  const sets = { u1, u2, u3, u4, u5 };
  const abort = (o: Outcome): Expected => ({ sets, mayComplete: false, aborts: [o], exactSets: true });
  const complete: Expected = { sets, mayComplete: true, aborts: [], exactSets: true };
  if (u1 < t + 1) return abort(tooFew(Phase.AdvertiseKeys));
  if (u2 < t) return abort(tooFew(Phase.ShareKeys));
  if (k >= u1 - 1) {
    // Classic: the graph on U1 is complete, each member of U2 has |U2| - 1 neighbours in it.
    if (u2 - 1 < t || u3 < t) return abort(tooFew(Phase.MaskedInput));
    if (u4 < t) return abort(tooFew(Phase.ConsistencyCheck));
    if (u4 < t + 1) return abort(short(Phase.ConsistencyCheck));
    if (u5 < t + 1) return abort(short(Phase.Unmasking));
    return complete;
  }
  if (u3 < t) return abort(tooFew(Phase.MaskedInput));
  if (k - (s + m + c + x) >= t) return complete;
  if (u4 < t) return { sets, mayComplete: false, aborts: [tooFew(Phase.MaskedInput), tooFew(Phase.ConsistencyCheck)], exactSets: false };
  return { sets, mayComplete: u5 >= t + 1, aborts: LATE_ABORTS, exactSets: false };
}

interface Scenario {
  n: number;
  k: number;
  t: number;
  dim: number;
  dropout: number;
  dropPhase: DropPhase | 'any';
  seed: number;
}

const runScenario = (sc: Scenario): Promise<SimulateResult> =>
  simulate({ clients: sc.n, dim: sc.dim, neighbors: sc.k, threshold: sc.t, dropout: sc.dropout, dropPhase: sc.dropPhase, seed: sc.seed, workers: 0 });

const expectedOf = (sc: Scenario): Expected => expectFromSchedule(sc.n, sc.k, sc.t, dropSchedule(sc.n, sc.dropout, sc.dropPhase, sc.seed));

/** Checks a simulation result against what its schedule implies. */
function checkAgainstModel(sc: Scenario, r: SimulateResult): void {
  const e = expectedOf(sc);
  if (r.ok) {
    expect(e.mayComplete).toBe(true);
    expect(r.exact).toBe(true);
    expect(r.survivors).toBe(r.sets.u3);
    if (e.exactSets) {
      expect(r.survivors).toBe(e.sets.u3);
      expect(r.sets).toEqual({ u1: e.sets.u1, u2: e.sets.u2, u3: e.sets.u3, u4: e.sets.u4 });
    } else {
      expect(r.sets).toMatchObject({ u1: e.sets.u1, u2: e.sets.u2 });
      expect(r.sets.u3).toBeLessThanOrEqual(e.sets.u3);
      expect(r.sets.u4).toBeLessThanOrEqual(e.sets.u4);
    }
    expect(r.max_abs_error).toBeLessThanOrEqual(r.survivors * ((2 * r.clip) / (2 ** r.bits - 1)));
    return;
  }
  expect(r.exact).toBe(false);
  expect(e.aborts).toContainEqual([r.reason, r.aborted_at]);
}

const phaseArb = fc.constantFrom<DropPhase | 'any'>(...DROP_PHASES, 'any');
const seedArb = fc.integer({ min: 0, max: 2 ** 31 });
const dimArb = fc.integer({ min: 16, max: 64 });

/** Classic (k = n - 1) or SecAgg+ (k <= n - 3) parameters with t a majority of k: k/2 < t <= k. */
const paramsArb = (mode: 'classic' | 'secagg+'): fc.Arbitrary<{ n: number; k: number; t: number }> =>
  (mode === 'classic' ? fc.integer({ min: 4, max: 10 }).map((n) => ({ n, k: n - 1 })) : fc.integer({ min: 7, max: 14 }).chain((n) => fc.integer({ min: 3, max: n - 3 }).map((k) => ({ n, k }))))
    .chain(({ n, k }) => fc.integer({ min: Math.floor(k / 2) + 1, max: k }).map((t) => ({ n, k, t })));

describe('rounds under random dropout schedules', () => {
  test.each(['classic', 'secagg+'] as const)('a %s round in which at most k - t clients drop, in any phases, completes with the exact sum of U3', async (mode) => {
    await fc.assert(
      fc.asyncProperty(
        paramsArb(mode).chain((p) => fc.record({ n: fc.constant(p.n), k: fc.constant(p.k), t: fc.constant(p.t), drops: fc.integer({ min: 0, max: p.k - p.t }), dim: dimArb, dropPhase: phaseArb, seed: seedArb })),
        async ({ drops, ...rest }) => {
          const sc: Scenario = { ...rest, dropout: drops / rest.n };
          const expected = expectedOf(sc);
          expect(expected).toMatchObject({ mayComplete: true, aborts: [], exactSets: true });
          const r = await runScenario(sc);
          expect(r.ok).toBe(true);
          checkAgainstModel(sc, r);
        },
      ),
      { numRuns: 20 },
    );
  });

  test.each(['classic', 'secagg+'] as const)('a %s round left with fewer than t clients in one phase aborts there with too-few-clients, and one left with only t (too few to unmask) aborts with insufficient-shares', async (mode) => {
    const scenarioArb = paramsArb(mode).chain((p) =>
      fc.record({
        n: fc.constant(p.n),
        k: fc.constant(p.k),
        t: fc.constant(p.t),
        dim: dimArb,
        dropPhase: fc.constantFrom(...DROP_PHASES),
        seed: seedArb,
        // At most t clients left after the drop phase.
        drops: fc.integer({ min: p.n - p.t, max: p.n }),
      }),
    );
    await fc.assert(
      fc.asyncProperty(scenarioArb, async ({ drops, ...rest }) => {
        const left = rest.n - drops;
        const sc: Scenario = { ...rest, dropout: drops / rest.n };
        const r = await runScenario(sc);
        let want: [AbortReason, Phase];
        if (rest.dropPhase === 'advertise') want = [AbortReason.TooFewClients, Phase.AdvertiseKeys]; // U1 needs t + 1
        else if (rest.dropPhase === 'unmask') want = [AbortReason.InsufficientShares, Phase.Unmasking]; // a responder's own b needs t others
        else if (left < rest.t) want = [AbortReason.TooFewClients, ({ share: Phase.ShareKeys, masked: Phase.MaskedInput, consistency: Phase.ConsistencyCheck } as const)[rest.dropPhase]];
        // |U2| = t: every client has at most t - 1 neighbours in U2 and refuses to mask.
        else if (rest.dropPhase === 'share') want = [AbortReason.TooFewClients, Phase.MaskedInput];
        // |U4| = t: no member has t other signers to check, so none can be asked to unmask.
        else want = [AbortReason.InsufficientShares, Phase.ConsistencyCheck];
        const [reason, at] = want;
        expect(r).toMatchObject({ ok: false, exact: false, reason, aborted_at: at, survivors: 0, max_abs_error: null });
        checkAgainstModel(sc, r);
      }),
      {
        numRuns: 25,
        // Always include a schedule that leaves exactly t clients after masking.
        examples: [[mode === 'classic' ? { n: 6, k: 5, t: 3, dim: 16, dropPhase: 'consistency', seed: 1, drops: 3 } : { n: 8, k: 4, t: 3, dim: 16, dropPhase: 'masked', seed: 1, drops: 5 }]],
      },
    );
  });

  test('a classic round under any dropout schedule completes exactly when every phase keeps enough clients, and otherwise aborts with the reason and phase the schedule implies', async () => {
    const scenarioArb = paramsArb('classic').chain((p) =>
      fc.record({ n: fc.constant(p.n), k: fc.constant(p.k), t: fc.constant(p.t), dim: dimArb, dropout: fc.double({ min: 0, max: 1, noNaN: true }), dropPhase: phaseArb, seed: seedArb }),
    );
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (sc) => {
        const e = expectedOf(sc);
        expect(e.exactSets).toBe(true);
        expect(e.mayComplete !== (e.aborts.length === 1)).toBe(true);
        const r = await runScenario(sc);
        expect(r.ok).toBe(e.mayComplete);
        checkAgainstModel(sc, r);
      }),
      { numRuns: 40 },
    );
  });

  test('a SecAgg+ round under any dropout schedule either completes with the exact sum of the clients that masked or aborts with a reason and phase its schedule allows', async () => {
    const scenarioArb = paramsArb('secagg+').chain((p) =>
      fc.record({ n: fc.constant(p.n), k: fc.constant(p.k), t: fc.constant(p.t), dim: dimArb, dropout: fc.double({ min: 0, max: 0.8, noNaN: true }), dropPhase: phaseArb, seed: seedArb }),
    );
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (sc) => {
        const r = await runScenario(sc);
        expect(r.mode).toBe('secagg+');
        checkAgainstModel(sc, r);
      }),
      { numRuns: 40 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Masking: one client's masked vector looks uniform whatever its input.

interface RoundOutcome {
  masked: Map<string, Uint32Array>;
  final: CoordinatorState;
  ids: string[];
}

/** One round through the real coordinator and client state machines, nobody dropping. */
function runRound(params: RoundParams, inputs: Uint32Array[]): RoundOutcome {
  const parties = makeIdentities(params.cohort);
  const directory = new Map(parties.map((p) => [p.id, p.publicKey]));
  const identityOf = (id: string): Uint8Array | undefined => directory.get(id);
  const round = { manifestHash: sha256('aegis-test:masking'), roundIndex: 0 };
  const view = roundViewDigest({ round, params });
  let coordinator: CoordinatorState = startCoordinator({ params, round, view, identityOf });
  const clients = new Map<string, ClientState>();
  let outbox: ClientMessage[] = [];
  parties.forEach((p, i) => {
    const { next, outbound } = startClient({ clientId: p.id, identityKey: p.identityKey, params, round, view, identityOf, input: () => inputs[i]! });
    clients.set(p.id, next);
    outbox.push(...outbound);
  });
  const masked = new Map<string, Uint32Array>();
  while (!isFinal(coordinator)) {
    for (const m of outbox) {
      if (m.type === 'masked-input') masked.set(m.clientId, m.vector.slice());
      coordinator = receive(coordinator, m).next;
    }
    const { next, outbound } = close(coordinator);
    coordinator = next;
    outbox = [];
    for (const { to, message } of outbound) {
      const tr = handle(clients.get(to)!, message);
      clients.set(to, tr.next);
      outbox.push(...tr.outbound);
    }
  }
  return { masked, final: coordinator, ids: parties.map((p) => p.id) };
}

interface VectorStats {
  mean: number;
  variance: number;
  lowByte: number[];
}

function statsOf(v: Uint32Array): VectorStats {
  let sum = 0;
  for (const w of v) sum += w;
  const mean = sum / v.length;
  let sq = 0;
  for (const w of v) sq += (w - mean) ** 2;
  const lowByte = new Array<number>(256).fill(0);
  for (const w of v) lowByte[w & 0xff]!++;
  return { mean, variance: sq / (v.length - 1), lowByte };
}

/** Pearson's chi-square of a 256-bin histogram against the uniform distribution. */
const chiSquareUniform = (h: number[]): number => {
  const total = h.reduce((a, b) => a + b, 0);
  const e = total / h.length;
  return h.reduce((a, o) => a + (o - e) ** 2 / e, 0);
};

/** Two-sample chi-square (equal sample sizes): are two histograms from one distribution? */
const chiSquareTwoSample = (a: number[], b: number[]): number => a.reduce((acc, x, i) => (x + b[i]! === 0 ? acc : acc + (x - b[i]!) ** 2 / (x + b[i]!)), 0);

/** Limits at about six standard deviations (false alarm well below 1e-6 per check). */
const CHI2_255_LIMIT = 400;

/** What looks wrong with `v` as a vector of uniform words of Z_modulus (mean, variance, low byte). */
function uniformityProblems(v: Uint32Array, modulus: number): string[] {
  const s = statsOf(v);
  const n = v.length;
  const meanSd = modulus / Math.sqrt(12 * n);
  const variance = modulus ** 2 / 12;
  const varianceRelSd = Math.sqrt(0.8 / n); // uniform: (mu4 - sigma^4) / sigma^4 = 0.8
  const problems: string[] = [];
  if (Math.abs(s.mean - modulus / 2) > 6 * meanSd) problems.push(`mean ${s.mean}`);
  if (Math.abs(s.variance / variance - 1) > 6 * varianceRelSd) problems.push(`variance ratio ${s.variance / variance}`);
  const chi = chiSquareUniform(s.lowByte);
  if (chi > CHI2_255_LIMIT) problems.push(`low-byte chi-square ${chi}`);
  return problems;
}

describe('masked inputs', () => {
  const dim = 4095; // 4096 words per masked vector
  const params = validateRoundParams({ dim, cohort: 4, bits: 16 });
  const max = 2 ** params.bits - 1;
  // The masked words live in Z_{2^r}, r the round's sum bits: uniform there is what hides x.
  const modulus = 2 ** sumBitsOf(params);

  test('the uniformity check used below rejects unmasked and visibly biased vectors', () => {
    const n = dim + 1;
    expect(uniformityProblems(new Uint32Array(n), modulus)).not.toEqual([]);
    expect(uniformityProblems(new Uint32Array(n).fill(max), modulus)).not.toEqual([]);
    const halfRange = Uint32Array.from(runRound(params, Array.from({ length: 4 }, () => new Uint32Array(n))).masked.values().next().value!, (w) => w >>> 1);
    expect(uniformityProblems(halfRange, modulus)).not.toEqual([]);
  });

  test('the masked vector of an all-zero input and of an all-(2^b - 1) input both look uniform and cannot be told apart by mean, variance or low-byte histogram', () => {
    const n = dim + 1;
    const others = (): Uint32Array[] => [1, 2, 3].map((k) => new Uint32Array(n).fill(k * 1000));
    const zero = runRound(params, [new Uint32Array(n), ...others()]);
    const full = runRound(params, [new Uint32Array(n).fill(max), ...others()]);
    const yZero = zero.masked.get(zero.ids[0]!)!;
    const yFull = full.masked.get(full.ids[0]!)!;
    expect(yZero).toHaveLength(n);
    expect(yFull).toHaveLength(n);

    expect(uniformityProblems(yZero, modulus)).toEqual([]);
    expect(uniformityProblems(yFull, modulus)).toEqual([]);

    const a = statsOf(yZero);
    const b = statsOf(yFull);
    const meanSd = modulus / Math.sqrt(12 * n);
    expect(Math.abs(a.mean - b.mean)).toBeLessThan(6 * Math.SQRT2 * meanSd);
    expect(Math.abs(a.variance / b.variance - 1)).toBeLessThan(6 * Math.SQRT2 * Math.sqrt(0.8 / n));
    expect(chiSquareTwoSample(a.lowByte, b.lowByte)).toBeLessThan(CHI2_255_LIMIT);

    // Masking hides the input but loses nothing: both rounds still sum exactly.
    for (const [r, first] of [[zero, 0], [full, max]] as const) {
      expect(r.final.phase).toBe(Phase.Completed);
      if (r.final.phase !== Phase.Completed) continue;
      expect(Array.from(r.final.sum)).toEqual(new Array<number>(n).fill(first + 6000));
    }
  });
});
