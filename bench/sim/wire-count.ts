/**
 * Bytes per client per phase, as `aegis simulate` reports them: each client host counts the
 * protocol messages its clients send and receive (their protobuf envelopes,
 * shared/rpc/wire-bytes.ts), by phase; the simulator adds the hosts' counts up and reports
 * means over the clients that sent (or were sent) each phase's message.
 *
 * A message counts for the phase it belongs to: C→S, the phase it answers; S→C, the phase it
 * closes (the advertise broadcast ends phase 0, the consistency request phase 2, …). The round
 * start, sent once before phase 0 (the manifest and parameters), is not a message of the five
 * phases and is not counted.
 */
import type { ClientAgent } from '../../client/agent/agent.js';
import { sharedContentOf, type ClientMessage, type ServerEvent, type ServerMessage } from '../../shared/protocol/messages.js';
import { clientMessageBytes, serverMessageBytes } from '../../shared/rpc/wire-bytes.js';

/** The round's five phases, as the simulator names them (also its drop phases, client-host.ts). */
export const PHASES = ['advertise', 'share', 'masked', 'consistency', 'unmask'] as const;
export type WirePhase = (typeof PHASES)[number];

/** [total bytes, messages] per phase. */
export type PhaseBytes = Record<WirePhase, [number, number]>;

export interface WireCounts {
  up: PhaseBytes;
  down: PhaseBytes;
}

const UP: Record<ClientMessage['type'], WirePhase> = {
  'advertise-keys': 'advertise',
  decline: 'advertise',
  'share-keys': 'share',
  'masked-input': 'masked',
  'consistency-signature': 'consistency',
  'unmask-response': 'unmask',
};
const DOWN: Record<ServerMessage['type'], WirePhase> = {
  'advertise-broadcast': 'advertise',
  'share-broadcast': 'share',
  'consistency-request': 'masked',
  'unmask-request': 'consistency',
};

const empty = (): PhaseBytes => Object.fromEntries(PHASES.map((p) => [p, [0, 0]])) as unknown as PhaseBytes;

export const emptyCounts = (): WireCounts => ({ up: empty(), down: empty() });

/** Counts one message a client sent. */
export function countSent(c: WireCounts, m: ClientMessage): void {
  const slot = c.up[UP[m.type]];
  slot[0] += clientMessageBytes(m);
  slot[1] += 1;
}

/**
 * Sizes of server messages already counted, each encoded once: keyed by what a broadcast's
 * members share (`sharedContentOf`), or the simulator would encode the n-entry list once per client.
 */
const serverSizes = new WeakMap<object, number>();

/** Counts one message a client was sent. */
export function countReceived(c: WireCounts, m: ServerMessage): void {
  const slot = c.down[DOWN[m.type]];
  const key = sharedContentOf(m);
  let bytes = serverSizes.get(key);
  if (bytes === undefined) serverSizes.set(key, (bytes = serverMessageBytes(m)));
  slot[0] += bytes;
  slot[1] += 1;
}

/** Messages a ClientRunner's agent sent or took and `settleCounts` has not sized yet. */
const unsized = new WeakMap<WireCounts, { up: ClientMessage[]; down: ServerMessage[] }>();

/**
 * Counts what a ClientRunner's agent sends and takes, into `c` (read at each use, so a caller may
 * swap in fresh counts between rounds). Wrap before any other interception of `onEvent` that
 * may swallow a message: what is swallowed is then not counted.
 *
 * Sizing a message encodes it again (a client decodes its own copy of each broadcast, so nothing
 * is shared to size once), which is the simulator's work, not the client's: the messages are
 * kept and sized by `settleCounts` after the round, off the round's clock and CPU. A masked input
 * is sized at once (from its length, without encoding) and not kept.
 */
export function countAgentTraffic(agent: ClientAgent, c: () => WireCounts): void {
  const later = (): { up: ClientMessage[]; down: ServerMessage[] } => {
    const counts = c();
    let u = unsized.get(counts);
    if (!u) unsized.set(counts, (u = { up: [], down: [] }));
    return u;
  };
  const cfg = agent['cfg'];
  const send = cfg.send;
  cfg.send = (m) => {
    if (m.type === 'masked-input') countSent(c(), m);
    else later().up.push(m);
    return send(m);
  };
  const onEvent = agent.onEvent.bind(agent);
  agent.onEvent = (ev: ServerEvent): Promise<void> => {
    // Round starts and outcomes are not messages of a phase.
    if (ev.type !== 'round-start' && ev.type !== 'round-outcome') later().down.push(ev);
    return onEvent(ev);
  };
}

/** Sizes the messages `countAgentTraffic` kept for `c` and adds them in; returns `c`. */
export function settleCounts(c: WireCounts): WireCounts {
  const u = unsized.get(c);
  if (u) {
    unsized.delete(c);
    for (const m of u.up) countSent(c, m);
    for (const m of u.down) countReceived(c, m);
  }
  return c;
}

/** The hosts' counts added up. */
export function mergeCounts(all: readonly WireCounts[]): WireCounts {
  const out = emptyCounts();
  for (const c of all) {
    for (const p of PHASES) {
      for (const dir of ['up', 'down'] as const) {
        out[dir][p][0] += c[dir][p][0];
        out[dir][p][1] += c[dir][p][1];
      }
    }
  }
  return out;
}

/** Mean bytes per client for each phase, and their sum. */
export type BytesPerClient = Record<WirePhase, number> & { total: number };

/** Per-phase figures and their sum, in phase order with the total last. */
function withTotal(perPhase: (p: WirePhase) => number): BytesPerClient {
  const out = {} as BytesPerClient;
  let total = 0;
  for (const p of PHASES) total += out[p] = perPhase(p);
  out.total = total;
  return out;
}

const means = (b: PhaseBytes): BytesPerClient => withTotal((p) => (b[p][1] === 0 ? 0 : Math.round(b[p][0] / b[p][1])));

/** Means of several rounds' (groups') per-client bytes, weighted by their client counts. */
export function weightedBytes(parts: readonly (readonly [BytesPerClient, number])[]): BytesPerClient {
  const clients = parts.reduce((a, [, n]) => a + n, 0);
  return withTotal((p) => (clients === 0 ? 0 : Math.round(parts.reduce((a, [b, n]) => a + b[p] * n, 0) / clients)));
}

/** The simulator's byte fields: what a client sends and receives per phase, and the masked upload's floor m·r/8. */
export function bytesReport(c: WireCounts, dim: number, sumBits: number): { bytes_per_client: BytesPerClient; bytes_down_per_client: BytesPerClient; sum_bits: number; masked_floor_bytes: number } {
  return { bytes_per_client: means(c.up), bytes_down_per_client: means(c.down), sum_bits: sumBits, masked_floor_bytes: Math.ceil((dim * sumBits) / 8) };
}
