/**
 * RoundHost: the coordinator state machine with real timers (phase deadlines), per-client
 * queues and authenticated submission, driven by real client state machines in this thread.
 */
import { roundViewDigest } from '../../shared/protocol/view.js';
import { describe, expect, test } from '@jest/globals';
import { handle, start, type ClientState } from '../../client/round/index.js';
import { RoundHost, type PhaseDeadlines } from '../../coordinator/hosts/round-host.js';
import { encodeWeightedInput } from '../../shared/crypto/quantize.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { addInto } from '../../shared/crypto/vecops.js';
import { validateRoundParams } from '../../shared/protocol/params.js';
import { sha256 } from '../../shared/protocol/session.js';
import { makeIdentities } from '../../bench/sim/client-host.js';
import { codeOf } from '../support/codes.js';

const FAST: PhaseDeadlines = { advertiseMs: 2000, shareMs: 2000, maskedMs: 2000, consistencyMs: 2000, unmaskMs: 2000 };

/** n clients wired to a host; `silentFrom` makes some clients stop answering from a given message type. */
function setup(n: number, neighbors: number, deadlines = FAST, silent: Record<string, string> = {}, withCohort = false) {
  const params = validateRoundParams({ dim: 32, cohort: n, neighbors });
  const round = { manifestHash: sha256('round-host test'), roundIndex: 0 };
  const ids = makeIdentities(n);
  const directory = new Map(ids.map((c) => [c.id, c.publicKey]));
  const view = roundViewDigest({ round, params });
  const host = new RoundHost({ params, round, view, identityOf: (id) => directory.get(id), deadlines, ...(withCohort ? { cohort: ids.map((c) => c.id) } : {}) });
  const expected = new Uint32Array(params.dim + 1);
  const inputs = new Map<string, Uint32Array>();
  const states = new Map<string, ClientState>();
  const late: string[] = [];
  // A client's send, as over a network: a refusal comes back as an error the client sees.
  const send = (id: string, m: Parameters<RoundHost['submit']>[1]): void => {
    try {
      host.submit(id, m);
    } catch (e) {
      late.push(`${id}:${m.type}:${codeOf(() => { throw e; })}`);
    }
  };
  ids.forEach((c, i) => {
    const q = encodeWeightedInput(Array.from({ length: params.dim }, (_, j) => Math.sin(i + j) / 2), 1 + i, params, DeterministicRng.fromSeed('rh', i));
    inputs.set(c.id, q);
    const { next, outbound } = start({ clientId: c.id, identityKey: c.identityKey, params, round, view, identityOf: (id) => directory.get(id), input: () => q });
    states.set(c.id, next);
    host.subscribe(c.id, (m) => {
      if (silent[c.id] === m.type) return void states.set(c.id, { ...states.get(c.id)!, phase: 'aborted' } as ClientState);
      const s = states.get(c.id)!;
      if (s.phase === 'aborted') return;
      const t = handle(s, m);
      states.set(c.id, t.next);
      // Answer asynchronously, as a network would.
      setImmediate(() => t.outbound.forEach((o) => send(c.id, o)));
    });
    setImmediate(() => outbound.forEach((o) => send(c.id, o)));
  });
  return { host, ids, inputs, expected, params, late };
}

/** The round completed and its sum is exactly the sum of everyone's input but `missing`'s. */
function expectExactWithout(out: Awaited<RoundHost['outcome']>, ids: { id: string }[], inputs: Map<string, Uint32Array>, dim: number, missing: string): void {
  expect(out.ok).toBe(true);
  const want = new Uint32Array(dim + 1);
  for (const { id } of ids) if (id !== missing) addInto(want, inputs.get(id)!);
  if (out.ok) {
    expect(out.survivors).not.toContain(missing);
    expect(Array.from(out.sum)).toEqual(Array.from(want));
  }
}

describe('RoundHost', () => {
  test('a round with every client answering closes each phase as soon as all have answered and sums exactly', async () => {
    const { host, inputs, params, late } = setup(8, 7);
    const out = await host.outcome;
    expect(out.ok).toBe(true);
    // Unmasking closes as soon as every secret has t shares; answers after that are refused.
    expect(late.every((l) => l.endsWith(':unmask-response:wrong-phase'))).toBe(true);
    const want = new Uint32Array(params.dim + 1);
    for (const q of inputs.values()) addInto(want, q);
    if (out.ok) expect(Array.from(out.sum)).toEqual(Array.from(want));
    expect(host.status().elapsedMs).toBeLessThan(FAST.advertiseMs); // no phase waited for its deadline
  });

  test('a client whose connection is lost is not waited for: the phase closes without its deadline, and the sum of the others is exact', async () => {
    const { host, ids, inputs, params } = setup(8, 7, { ...FAST, maskedMs: 60_000 }, { 'client-3': 'share-broadcast' }, true);
    // The coordinator reports the lost stream once, as soon as the masked-input phase begins
    // (before the others' inputs arrive: the last of those must then close the phase).
    const timer = setInterval(() => {
      if (host.phase !== 'masked-input') return;
      host.lost('client-3');
      clearInterval(timer);
    }, 1);
    const out = await host.outcome;
    clearInterval(timer);
    expectExactWithout(out, ids, inputs, params.dim, 'client-3');
    // It finished while the 60 s masked-input deadline was still far away.
    expect(host.status().elapsedMs).toBeLessThan(30_000);
  });

  test('a client that goes silent after sharing is dropped when the masked-input deadline passes, and the sum of the others is exact', async () => {
    const { host, ids, inputs, params } = setup(8, 7, { ...FAST, maskedMs: 300 }, { 'client-3': 'share-broadcast' });
    const out = await host.outcome;
    expectExactWithout(out, ids, inputs, params.dim, 'client-3');
    expect(host.status().sets).toMatchObject({ u1: 8, u2: 8, u3: 7 });
  });

  test('too many silent clients make the round abort with too-few-clients when the deadline passes', async () => {
    const silent = Object.fromEntries(['client-0', 'client-1', 'client-2', 'client-3', 'client-4'].map((id) => [id, 'advertise-broadcast']));
    const { host } = setup(8, 7, { ...FAST, shareMs: 200 }, silent);
    const out = await host.outcome;
    expect(out).toMatchObject({ ok: false, reason: 'too-few-clients', at: 'share-keys' });
  });

  test('a message that names another client than the authenticated one is refused and changes nothing', async () => {
    const { host, ids } = setup(4, 3);
    const [a, b] = ids;
    const fake = { type: 'consistency-signature' as const, sessionId: new Uint8Array(32), clientId: b!.id, signature: new Uint8Array(64) };
    expect(codeOf(() => host.submit(a!.id, fake))).toBe('unknown-sender');
    expect(codeOf(() => host.submit(a!.id, { type: 'nonsense' } as never))).toBe('invalid-argument');
    const out = await host.outcome;
    expect(out.ok).toBe(true);
    expect(host.status().refused).toBe(2);
  });

  test('a cancelled round publishes nothing and refuses further messages', async () => {
    const { host, ids } = setup(4, 3, { ...FAST, advertiseMs: 5000 });
    host.cancel();
    const out = await host.outcome;
    expect(out).toMatchObject({ ok: false, reason: 'cancelled' });
    expect(codeOf(() => host.submit(ids[0]!.id, { type: 'advertise-keys' } as never))).toBe('wrong-phase');
  });
});
