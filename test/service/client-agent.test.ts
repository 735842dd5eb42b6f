/**
 * ClientAgent against RoundHost, in process: agents join announced rounds, answer through the
 * host, and keep going after a round aborts.
 */
import { roundViewDigest } from '../../shared/protocol/view.js';
import { describe, expect, test } from '@jest/globals';
import { ClientAgent, type AgentEvent } from '../../client/agent/agent.js';
import { RoundHost } from '../../coordinator/hosts/round-host.js';
import type { RoundOutcome } from '../../coordinator/round/index.js';
import { encodeWeightedInput } from '../../shared/crypto/quantize.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { addInto } from '../../shared/crypto/vecops.js';
import type { ClientMessage, RoundRef, ServerEvent } from '../../shared/protocol/messages.js';
import { validateRoundParams } from '../../shared/protocol/params.js';
import { sha256 } from '../../shared/protocol/session.js';
import { makeIdentities } from '../../bench/sim/client-host.js';

const params = validateRoundParams({ dim: 16, cohort: 6, neighbors: 5 });
const deadlines = { advertiseMs: 400, shareMs: 400, maskedMs: 400, consistencyMs: 400, unmaskMs: 400 };
const ids = makeIdentities(6);
const directory = new Map(ids.map((c) => [c.id, c.publicKey]));
const inputOf = (id: string, round: RoundRef): Uint32Array =>
  encodeWeightedInput(Array.from({ length: params.dim }, (_, j) => ((j % 5) - 2) / 4), 1 + Number(id.slice(-1)), params, DeterministicRng.fromSeed(id, round.roundIndex));

/** Runs one round: announce to the online agents, pump the host's messages to them, report the outcome. */
async function runRound(agents: Map<string, ClientAgent>, online: Set<string>, roundIndex: number): Promise<RoundOutcome> {
  const round = { manifestHash: sha256('agent test job'), roundIndex };
  const host = new RoundHost({ params, round, view: roundViewDigest({ round, params }), identityOf: (id) => directory.get(id), deadlines });
  const deliver = (id: string, e: ServerEvent): void => {
    if (online.has(id)) setImmediate(() => void agents.get(id)!.onEvent(e));
  };
  for (const id of agents.keys()) host.subscribe(id, (m) => deliver(id, m));
  hosts.set(roundIndex, host);
  for (const id of agents.keys()) deliver(id, { type: 'round-start', round, params });
  const out = await host.outcome;
  for (const id of agents.keys()) deliver(id, { type: 'round-outcome', round, ok: out.ok, reason: out.ok ? undefined : out.reason });
  await new Promise((r) => setTimeout(r, 20));
  return out;
}

const hosts = new Map<number, RoundHost>();

function makeAgents(events: AgentEvent[]): Map<string, ClientAgent> {
  return new Map(
    ids.map((c) => [
      c.id,
      new ClientAgent({
        clientId: c.id,
        identityKey: c.identityKey,
        identityOf: (id) => directory.get(id),
        input: (round) => inputOf(c.id, round),
        // The host of the agent's current round; refusals surface as AegisErrors.
        send: async (m) => {
          const host = [...hosts.values()].at(-1)!;
          host.submit(c.id, m);
        },
        onEvent: (e) => events.push(e),
      }),
    ]),
  );
}

describe('ClientAgent', () => {
  test('agents run consecutive rounds; an offline client misses one, and a round that aborts does not stop the next', async () => {
    const events: AgentEvent[] = [];
    const agents = makeAgents(events);
    const everyone = new Set(ids.map((c) => c.id));

    const r0 = await runRound(agents, everyone, 0);
    expect(r0.ok).toBe(true);
    const want0 = new Uint32Array(params.dim + 1);
    for (const c of ids) addInto(want0, inputOf(c.id, { manifestHash: new Uint8Array(32), roundIndex: 0 }));
    if (r0.ok) expect(Array.from(r0.sum)).toEqual(Array.from(want0));

    // Round 1: only two clients online — fewer than the threshold: the round aborts.
    const r1 = await runRound(agents, new Set([ids[0]!.id, ids[1]!.id]), 1);
    expect(r1).toMatchObject({ ok: false, reason: 'too-few-clients' });

    // Round 2: one client offline; the others complete it with an exact sum.
    const r2 = await runRound(agents, new Set([...everyone].filter((id) => id !== ids[5]!.id)), 2);
    expect(r2.ok).toBe(true);
    const want2 = new Uint32Array(params.dim + 1);
    for (const c of ids.slice(0, 5)) addInto(want2, inputOf(c.id, { manifestHash: new Uint8Array(32), roundIndex: 2 }));
    if (r2.ok) expect(Array.from(r2.sum)).toEqual(Array.from(want2));

    const first = agents.get(ids[0]!.id)!;
    expect(first.history).toEqual([
      { roundIndex: 0, ok: true, reason: undefined },
      { roundIndex: 1, ok: false, reason: 'too-few-clients' },
      { roundIndex: 2, ok: true, reason: undefined },
    ]);
    expect(agents.get(ids[5]!.id)!.history.map((h) => h.roundIndex)).toEqual([0]);
    expect(events.filter((e) => e.kind === 'joined').length).toBe(6 + 2 + 5);
  });

  test('a round-start with parameters the client refuses is sat out, reported, and sends only a decline with the reason', async () => {
    const events: AgentEvent[] = [];
    const sent: ClientMessage[] = [];
    const agent = new ClientAgent({
      clientId: ids[0]!.id,
      identityKey: ids[0]!.identityKey,
      identityOf: (id) => directory.get(id),
      input: () => new Uint32Array(params.dim + 1),
      send: async (m) => void sent.push(m),
      onEvent: (e) => events.push(e),
    });
    const round = { manifestHash: new Uint8Array(32), roundIndex: 0 };
    await agent.onEvent({ type: 'round-start', round, params: { ...params, threshold: 2 } });
    expect(sent).toEqual([{ type: 'decline', round, clientId: ids[0]!.id, reason: 'invalid-argument' }]);
    expect(events).toEqual([{ kind: 'aborted', roundIndex: 0, reason: 'invalid-argument', phase: 'start' }]);
    await agent.onEvent({ type: 'consistency-request', sessionId: new Uint8Array(32), u3: [] });
    expect(events.at(-1)).toEqual({ kind: 'ignored', type: 'consistency-request', code: 'no-round' });
  });
});
