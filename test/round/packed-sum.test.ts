/**
 * Masked inputs travel reduced mod 2^r and bit-packed at r bits per word (r: the bits the
 * round's sum needs). Whole rounds, every message through the real protobuf encoding, at every r
 * from the smallest a manifest allows (3) to 32, with a client that drops before masking and
 * one that drops before unmasking: the sum is exact, and each masked upload is ⌈m·r/8⌉ bytes of
 * payload.
 */
import { describe, expect, test } from '@jest/globals';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { makeIdentities } from '../../bench/sim/client-host.js';
import { handle, start as startClient, type ClientState } from '../../client/round/index.js';
import { close, isFinal, receive, start as startCoordinator, type CoordinatorState } from '../../coordinator/round/index.js';
import { packedBytes } from '../../shared/crypto/bitpack.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { maskedSumBits } from '../../shared/protocol/dp-manifest.js';
import type { ClientMessage, ServerMessage } from '../../shared/protocol/messages.js';
import { ceilLog2, sumBitsOf, validateRoundParams, type RoundParams } from '../../shared/protocol/params.js';
import { sha256 } from '../../shared/protocol/session.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { roundViewDigest } from '../../shared/protocol/view.js';
import { fromClientEnvelope, fromServerEnvelope, toClientEnvelope, toServerEnvelope } from '../../shared/rpc/convert.js';

/** A client message as the coordinator gets it over the wire, and its encoded size. */
function overTheWire(m: ClientMessage): { m: ClientMessage; bytes: number } {
  const wire = toBinary(pb.ClientEnvelopeSchema, toClientEnvelope(m));
  return { m: fromClientEnvelope(fromBinary(pb.ClientEnvelopeSchema, wire)), bytes: wire.length };
}
const serverOverTheWire = (m: ServerMessage): ServerMessage => fromServerEnvelope(fromBinary(pb.ServerEnvelopeSchema, toBinary(pb.ServerEnvelopeSchema, toServerEnvelope(m))))!;

interface Run {
  final: CoordinatorState;
  /** Each survivor's input, by id (the expected sum is theirs). */
  survivors: string[];
  inputs: Map<string, Uint32Array>;
  /** Encoded size of every masked input envelope, and of its packed vector. */
  maskedEnvelopeBytes: number[];
  maskedVectorBytes: number[];
  bits: number[];
}

/**
 * One round of `params` in process, every message encoded and decoded: the first client drops
 * after sharing its keys (its masks are reconstructed); with six clients or more, the second
 * drops after its masked input (it never answers the unmasking request — below six, the
 * remaining shares of a neighbour's secret would then be fewer than t).
 */
function runRound(params: RoundParams, input: (i: number) => Uint32Array, sumBits?: number): Run {
  const parties = makeIdentities(params.cohort);
  const directory = new Map(parties.map((p) => [p.id, p.publicKey]));
  const identityOf = (id: string): Uint8Array | undefined => directory.get(id);
  const round = { manifestHash: sha256('aegis-test:packed'), roundIndex: 0 };
  const view = roundViewDigest({ round, params });
  const bitsCfg = sumBits === undefined ? {} : { sumBits };
  let coordinator: CoordinatorState = startCoordinator({ params, round, view, identityOf, ...bitsCfg });
  const clients = new Map<string, ClientState>();
  const inputs = new Map<string, Uint32Array>();
  let outbox: ClientMessage[] = [];
  parties.forEach((p, i) => {
    inputs.set(p.id, input(i));
    const { next, outbound } = startClient({ clientId: p.id, identityKey: p.identityKey, params, round, view, identityOf, input: () => inputs.get(p.id)!, ...bitsCfg });
    clients.set(p.id, next);
    outbox.push(...outbound);
  });
  const [dropsBeforeMasking, dropsBeforeUnmasking] = [parties[0]!.id, parties[1]!.id];
  const run: Run = { final: coordinator, survivors: [], inputs, maskedEnvelopeBytes: [], maskedVectorBytes: [], bits: [] };
  while (!isFinal(coordinator)) {
    for (const sent of outbox) {
      if (sent.type === 'masked-input' && sent.clientId === dropsBeforeMasking) continue;
      if (sent.type === 'unmask-response' && sent.clientId === dropsBeforeUnmasking && params.cohort >= 6) continue;
      const { m, bytes } = overTheWire(sent);
      if (m.type === 'masked-input') {
        run.maskedEnvelopeBytes.push(bytes);
        const env = toClientEnvelope(sent).message;
        run.maskedVectorBytes.push(env.case === 'maskedInput' ? env.value.vector.length : -1);
        run.bits.push(m.bits);
      }
      coordinator = receive(coordinator, m).next;
    }
    const { next, outbound } = close(coordinator);
    coordinator = next;
    outbox = [];
    for (const { to, message } of outbound) {
      const tr = handle(clients.get(to)!, serverOverTheWire(message));
      clients.set(to, tr.next);
      outbox.push(...tr.outbound);
    }
  }
  run.final = coordinator;
  run.survivors = parties.map((p) => p.id).filter((id) => id !== dropsBeforeMasking);
  return run;
}

/** The survivors' plain sum, in exact integers. */
function plainSum(run: Run, words: number): number[] {
  const out = new Array<number>(words).fill(0);
  for (const id of run.survivors) {
    const x = run.inputs.get(id)!;
    for (let i = 0; i < words; i++) out[i]! += x[i]!;
  }
  return out;
}

/** Parameters whose sum needs exactly r bits: b bits per value and n clients with b + ⌈log2 n⌉ = r. */
function paramsFor(r: number, dim: number): RoundParams {
  let cohort: number;
  let bits: number;
  if (r === 3) [cohort, bits] = [4, 1];
  else if (r <= 27) [cohort, bits] = [8, r - 3];
  else if (r < 32) [cohort, bits] = [2 ** (r - 24), 24];
  // n · 2^b must stay below 2^32: 255 clients of 24 bits need all 32.
  else [cohort, bits] = [255, 24];
  // SecAgg+ with a small neighbourhood keeps the large cohorts quick; classic below.
  return validateRoundParams({ dim, cohort, bits, clip: 1, ...(cohort > 8 ? { neighbors: 6 } : {}) });
}

describe('masked inputs reduced and packed at the bits of the sum', () => {
  const rs = Array.from({ length: 30 }, (_, i) => i + 3);

  test('the parameters used below need exactly r bits, 3 to 32, and the smallest valid round needs 3', () => {
    for (const r of rs) expect(sumBitsOf(paramsFor(r, 4))).toBe(r);
    expect(sumBitsOf(validateRoundParams({ dim: 1, cohort: 3, bits: 1 }))).toBe(3);
    expect(sumBitsOf(validateRoundParams({ dim: 1, cohort: 4, bits: 1 }))).toBe(3);
    expect(sumBitsOf(validateRoundParams({ dim: 1, cohort: 5, bits: 1 }))).toBe(4);
    // n = 500 clients of 16-bit values: 25 bits, not 32.
    expect(sumBitsOf(validateRoundParams({ dim: 1, cohort: 500, bits: 16 }))).toBe(25);
    for (const n of [1, 2, 3, 4, 5, 255, 256, 257, 10_000]) expect(ceilLog2(n)).toBe(Math.ceil(Math.log2(n)));
  });

  test.each(rs)('r = %i: every value at its maximum, two dropouts — the sum is exact and each masked vector is ⌈m·r/8⌉ bytes', (r) => {
    const dim = 11;
    const params = paramsFor(r, dim);
    const max = 2 ** params.bits - 1;
    const run = runRound(params, () => new Uint32Array(dim + 1).fill(max));
    expect(run.final.phase).toBe(Phase.Completed);
    if (run.final.phase !== Phase.Completed) return;
    const want = plainSum(run, dim + 1);
    // The largest sum the round can have without its dropout: it needs all r bits (the top one
    // is set) — except with 1-bit values, where n - 1 ones stay below 2^(r-1).
    expect(want[0]).toBe((params.cohort - 1) * max);
    if (params.bits > 1) expect(want[0]! >= 2 ** (r - 1)).toBe(true);
    expect(Array.from(run.final.sum)).toEqual(want);
    expect(run.final.survivors).toEqual([...run.survivors].sort());
    expect(new Set(run.bits)).toEqual(new Set([r]));
    expect(new Set(run.maskedVectorBytes)).toEqual(new Set([packedBytes(dim + 1, r)]));
  });

  test.each([3, 9, 17, 25, 32])('r = %i: random inputs, two dropouts — the sum is exact', (r) => {
    const dim = 100;
    const params = paramsFor(r, dim);
    const run = runRound(params, () => Uint32Array.from({ length: dim + 1 }, () => Math.floor(Math.random() * 2 ** params.bits)));
    expect(run.final.phase).toBe(Phase.Completed);
    if (run.final.phase === Phase.Completed) expect(Array.from(run.final.sum)).toEqual(plainSum(run, dim + 1));
  });

  test('a masked upload of m = 10^5 values at r = 25 (n = 500, 16 bits) is within 1% of m·r/8 bytes', () => {
    // Six clients stand in for the 500 (r is what matters; the bytes do not depend on n).
    const dim = 100_000;
    const r = 25;
    const run = runRound(validateRoundParams({ dim, cohort: 6, bits: 16 }), () => new Uint32Array(dim + 1).fill(7), r);
    expect(run.final.phase).toBe(Phase.Completed);
    const floor = (dim * r) / 8;
    for (const bytes of run.maskedEnvelopeBytes) {
      expect(bytes).toBeGreaterThanOrEqual(floor);
      expect(bytes / floor).toBeLessThan(1.01);
    }
    // 32-bit words would have been 28% more.
    expect(4 * (dim + 1)).toBeGreaterThan(1.28 * floor);
  });

  test('a round with explicit sum bits (as a DP job sets them) is exact at that modulus, and the manifest rule picks them', () => {
    // b = 16 and n = 6 would need 19 bits; the round sums mod 2^12 instead, so values wrap.
    const dim = 20;
    const params = validateRoundParams({ dim, cohort: 6, bits: 16 });
    const run = runRound(params, (i) => Uint32Array.from({ length: dim + 1 }, (_, j) => (i * 1000 + j * 37) % 2 ** 16), 12);
    expect(run.final.phase).toBe(Phase.Completed);
    if (run.final.phase === Phase.Completed) expect(Array.from(run.final.sum)).toEqual(plainSum(run, dim + 1).map((s) => s % 2 ** 12));
    expect(new Set(run.bits)).toEqual(new Set([12]));

    const job = { rounds: 3, round: { dim, cohort: 6 } };
    expect(maskedSumBits(job, params)).toBe(sumBitsOf(params));
    const dp = (bits: number): Parameters<typeof maskedSumBits>[0] => ({ ...job, dp: { bits } as NonNullable<Parameters<typeof maskedSumBits>[0]['dp']> });
    expect(maskedSumBits(dp(20), params)).toBe(20);
    // A modulus too narrow for the weight word (one per survivor) is widened until it fits.
    expect(maskedSumBits(dp(2), validateRoundParams({ dim, cohort: 9, bits: 16 }))).toBe(4);
    expect(maskedSumBits(dp(2), validateRoundParams({ dim, cohort: 3, bits: 16 }))).toBe(2);
  });
});
