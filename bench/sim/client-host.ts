/**
 * Runs many simulated clients in one thread (the main thread, or one worker of the pool):
 * the real client state machines, synthetic inputs from the seed, and the drop schedule. It
 * also keeps, for the clients whose masked input it sent, the plain sum of their quantized
 * inputs and of their float inputs — the ground truth the simulator checks the round against.
 */
import { roundViewDigest } from '../../shared/protocol/view.js';
import type { KeyObject } from 'node:crypto';
import { ed25519KeyPair, ed25519PrivateKeyObject } from '../../shared/crypto/ed25519.js';
import { encodeWeightedInput } from '../../shared/crypto/quantize.js';
import { BLOCK_WORDS, DeterministicRng } from '../../shared/crypto/rng.js';
import { addInto, VectorAccumulator } from '../../shared/crypto/vecops.js';
import type { Addressed, ClientMessage, RoundRef, ServerMessage } from '../../shared/protocol/messages.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import { handle, start, type ClientState } from '../../client/round/index.js';
import type { MaskJob } from '../../coordinator/round/index.js';
import { applyMaskJobs } from '../../coordinator/round/index.js';
import { countReceived, countSent, emptyCounts, PHASES, type WireCounts, type WirePhase } from './wire-count.js';

/** The phases a simulated client can drop in: the round's five (wire-count.ts). */
export const DROP_PHASES = PHASES;
export type DropPhase = WirePhase;

/** The phase whose message a client would send in answer to each coordinator message. */
const ANSWER_PHASE: Record<ServerMessage['type'], DropPhase> = {
  'advertise-broadcast': 'share',
  'share-broadcast': 'masked',
  'consistency-request': 'consistency',
  'unmask-request': 'unmask',
};

export interface HostedClient {
  id: string;
  index: number;
  identityKey: Uint8Array;
  dropAt: DropPhase | null;
}

export interface HostInit {
  params: RoundParams;
  round: RoundRef;
  seed: number;
  /** [client id, Ed25519 public key] for every client of the simulation: the PKI. */
  directory: [string, Uint8Array][];
  clients: HostedClient[];
}

export interface Plaintext {
  qSum: Uint32Array;
  xSum: Float64Array;
  contributors: string[];
}

export type Emit = (m: ClientMessage) => void;

/** Synthetic input of one client: values uniform in [-c, c] (already weight-scaled) and a weight. */
export function syntheticInput(seed: number, index: number, dim: number, clip: number): { x: Float64Array; weight: number } {
  const rng = DeterministicRng.fromSeed('aegis-sim-input', `${seed}:${index}`);
  const weight = 1 + rng.nextInt(100);
  const x = new Float64Array(dim);
  for (let base = 0; base < dim; base += BLOCK_WORDS) {
    const u = rng.nextBlock();
    const end = Math.min(dim, base + BLOCK_WORDS);
    for (let i = base; i < end; i++) x[i] = (u[i - base]! * 4.656612873077393e-10 - 1) * clip; // 2u/2^32 - 1
  }
  return { x, weight };
}

export class ClientHost {
  private readonly init: HostInit;
  private readonly states = new Map<string, ClientState>();
  private readonly crashed = new Set<string>();
  private readonly ms = new Map<string, number>();
  private readonly byId: Map<string, HostedClient>;
  private readonly directory: Map<string, Uint8Array>;
  private readonly acc: VectorAccumulator;
  private readonly qSum: Uint32Array;
  private readonly xSum: Float64Array;
  private readonly contributors: string[] = [];
  private pending: { id: string; x: Float64Array; q: Uint32Array } | null = null;
  /**
   * The synthetic update of the client about to mask, made before its step is timed: it stands
   * for what local training hands a real client, not for work the client does. (Quantizing it is
   * the client's, and is timed.)
   */
  private prepared: { id: string; x: Float64Array; weight: number } | null = null;
  /** The bytes of the protocol messages this host's clients sent and were sent, by phase. */
  private readonly wire: WireCounts = emptyCounts();
  /** Identity keys imported once, as a long-running client process would. */
  private readonly identities: Map<string, KeyObject>;

  constructor(init: HostInit) {
    this.init = init;
    this.byId = new Map(init.clients.map((c) => [c.id, c]));
    this.directory = new Map(init.directory);
    this.identities = new Map(init.clients.map((c) => [c.id, ed25519PrivateKeyObject(c.identityKey)]));
    this.acc = new VectorAccumulator(init.params.dim + 1);
    this.qSum = new Uint32Array(init.params.dim + 1);
    this.xSum = new Float64Array(init.params.dim);
  }

  private timed<T>(id: string, f: () => T): T {
    const t = performance.now();
    try {
      return f();
    } finally {
      this.ms.set(id, (this.ms.get(id) ?? 0) + performance.now() - t);
    }
  }

  /** `emit`, counting each message's bytes on the way out. */
  private counted(emit: Emit): Emit {
    return (m) => {
      countSent(this.wire, m);
      emit(m);
    };
  }

  startAll(to: Emit): void {
    const emit = this.counted(to);
    const { params, round, seed } = this.init;
    const view = roundViewDigest({ round, params });
    for (const c of this.init.clients) {
      if (c.dropAt === 'advertise') continue;
      const { next, outbound } = this.timed(c.id, () =>
        start({
          clientId: c.id,
          identityKey: this.identities.get(c.id)!,
          params,
          round,
          view,
          identityOf: (id) => this.directory.get(id),
          accumulator: this.acc,
          input: () => {
            const ready = this.prepared?.id === c.id ? this.prepared : null;
            this.prepared = null;
            const { x, weight } = ready ?? syntheticInput(seed, c.index, params.dim, params.clip);
            const q = encodeWeightedInput(x, weight, params, DeterministicRng.fromSeed('aegis-sim-rounding', `${seed}:${c.index}`));
            this.pending = { id: c.id, x, q };
            return q;
          },
        }),
      );
      this.states.set(c.id, next);
      outbound.forEach(emit);
    }
  }

  deliver(messages: Addressed<ServerMessage>[], out: Emit): void {
    const emit = this.counted(out);
    for (const { to, message } of messages) {
      const c = this.byId.get(to);
      const state = this.states.get(to);
      if (!c || !state || this.crashed.has(to)) continue;
      if (c.dropAt !== null && DROP_PHASES.indexOf(c.dropAt) <= DROP_PHASES.indexOf(ANSWER_PHASE[message.type])) {
        this.crashed.add(to); // crashed: it answers nothing from now on
        continue;
      }
      countReceived(this.wire, message);
      if (message.type === 'share-broadcast') this.prepared = { id: to, ...syntheticInput(this.init.seed, c.index, this.init.params.dim, this.init.params.clip) };
      const { next, outbound } = this.timed(to, () => handle(state, message));
      this.states.set(to, next);
      for (const m of outbound) {
        if (m.type === 'masked-input' && this.pending?.id === to) {
          addInto(this.qSum, this.pending.q);
          const xs = this.xSum;
          const x = this.pending.x;
          for (let i = 0; i < xs.length; i++) xs[i]! += x[i]!;
          this.contributors.push(to);
        }
        this.pending = null;
        emit(m);
      }
    }
  }

  plaintext(): Plaintext {
    return { qSum: this.qSum, xSum: this.xSum, contributors: this.contributors };
  }

  /** Per-client compute time (ms) and keystream words, for clients that took part at all; bytes by phase. */
  stats(): { clientMs: number[]; prgWords: number; aborted: { id: string; reason: string }[]; wire: WireCounts } {
    let prgWords = 0;
    const aborted: { id: string; reason: string }[] = [];
    for (const [id, s] of this.states) {
      prgWords += s.stats.prgWords;
      if (s.phase === 'aborted') aborted.push({ id, reason: s.reason });
    }
    return { clientMs: [...this.ms.values()], prgWords, aborted, wire: this.wire };
  }

  /** Expands a share of the coordinator's unmasking keystreams into a partial sum. */
  unmask(jobs: MaskJob[]): Uint32Array {
    this.acc.reset();
    applyMaskJobs(this.acc, jobs);
    return this.acc.snapshot();
  }
}

/** Fresh identity keys for a simulation (from the OS CSPRNG, like every key). */
export function makeIdentities(n: number): { id: string; identityKey: Uint8Array; publicKey: Uint8Array }[] {
  const width = String(n - 1).length;
  return Array.from({ length: n }, (_, i) => {
    const kp = ed25519KeyPair();
    return { id: `client-${String(i).padStart(width, '0')}`, identityKey: kp.privateKey, publicKey: kp.publicKey };
  });
}
