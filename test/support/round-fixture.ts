/**
 * An honest round, run end to end with the real coordinator and client state machines and
 * recorded phase by phase, so a test can hand any client any phase's message again — untouched,
 * or tampered with as a hostile coordinator would.
 *
 * Client transitions are pure (a state is never mutated by the handler it is given to), so the
 * recorded state of a client just before a phase's message can be reused by any number of tests.
 * `message()` returns a fresh deep copy each time: tamper with it freely.
 *
 * The round checks itself: it must complete, and the coordinator's unmasked sum must equal the
 * plain sum of the survivors' quantized inputs. Drops are chosen per round by a callback that
 * sees the roster (the SecAgg+ neighbour graph is a function of the random session id).
 */
import { roundViewDigest } from '../../shared/protocol/view.js';
import { createHash } from 'node:crypto';
import { makeIdentities } from '../../bench/sim/client-host.js';
import {
  handle,
  start as startClient,
  type AdvertiseKeysState,
  type ClientConfig,
  type ClientState,
  type ConsistencyCheckState,
  type MaskedInputState,
  type ShareKeysState,
  type UnmaskingState,
} from '../../client/round/index.js';
import * as coordinator from '../../coordinator/round/index.js';
import type { CompletedState, CoordinatorState } from '../../coordinator/round/index.js';
import { ed25519Sign } from '../../shared/crypto/ed25519.js';
import { encodeWeightedInput } from '../../shared/crypto/quantize.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { addInto } from '../../shared/crypto/vecops.js';
import type {
  AdvertiseBroadcast,
  ClientMessage,
  ConsistencyRequest,
  RoundRef,
  ServerMessage,
  ShareBroadcast,
  UnmaskRequest,
} from '../../shared/protocol/messages.js';
import { validateRoundParams, type RoundParams } from '../../shared/protocol/params.js';
import type { Roster } from '../../shared/protocol/roster.js';
import { compareIds, consistencyTranscript } from '../../shared/protocol/session.js';
import { Phase } from '../../shared/protocol/vocabulary.js';

export type Identity = ReturnType<typeof makeIdentities>[number];

/** What a client holds just before each coordinator message, and that message's type. */
export interface PhaseOf {
  'advertise-broadcast': { state: AdvertiseKeysState; message: AdvertiseBroadcast };
  'share-broadcast': { state: ShareKeysState; message: ShareBroadcast };
  'consistency-request': { state: MaskedInputState; message: ConsistencyRequest };
  'unmask-request': { state: ConsistencyCheckState; message: UnmaskRequest };
}
export type Step = keyof PhaseOf;
export const STEPS: readonly Step[] = ['advertise-broadcast', 'share-broadcast', 'consistency-request', 'unmask-request'];

/** Clients that stop answering: before sharing keys (so U2 < U1) or before masking (U3 < U2). */
export interface Drops {
  beforeShare?: string[];
  beforeMask?: string[];
}

export interface RoundOptions {
  n: number;
  /** Neighbour degree k; default n - 1 (classic SecAgg). */
  k?: number;
  /** Threshold t; default floor(k / 2) + 1. */
  t?: number;
  dim?: number;
  roundIndex?: number;
  /** Names the job: its manifest hash is SHA-256 of this label. */
  manifest?: string;
  /** Reuse identities (e.g. for a second round of the same job); default fresh ones. */
  identities?: Identity[];
  drops?: (roster: Roster, params: RoundParams) => Drops;
}

export const manifestHash = (label: string): Uint8Array => new Uint8Array(createHash('sha256').update(`aegis-test-manifest\0${label}`).digest());

/** A client's input: deterministic per id, so re-running a phase masks the same vector. */
function inputOf(id: string, params: RoundParams): Uint32Array {
  const rng = DeterministicRng.fromSeed('round-fixture-values', id);
  const block = rng.nextBlock();
  const values = Array.from({ length: params.dim }, (_, i) => (block[i]! / 2 ** 32) * 2 * params.clip - params.clip);
  return encodeWeightedInput(values, 1 + (block[params.dim]! % 50), params, DeterministicRng.fromSeed('round-fixture-rounding', id));
}

export class HonestRound {
  readonly params: RoundParams;
  readonly round: RoundRef;
  /** The round view every party signs. */
  readonly view: Uint8Array;
  readonly identities: Identity[];
  readonly ids: string[];
  /** The coordinator's roster (U1, session id, neighbour graph). */
  readonly roster: Roster;
  readonly u2: readonly string[];
  readonly u3: readonly string[];
  readonly droppedBeforeShare: readonly string[];
  readonly droppedBeforeMask: readonly string[];
  readonly outcome: CompletedState;
  /** Plain sum of the quantized inputs of U3 (what unmasking must produce). */
  readonly plainSum: Uint32Array;

  private readonly directory: Map<string, Uint8Array>;
  private readonly before = new Map<Step, Map<string, ClientState>>();
  private readonly inbox = new Map<Step, Map<string, ServerMessage>>();
  private readonly outbox = new Map<ClientMessage['type'], Map<string, ClientMessage>>();
  private readonly starts = new Map<string, AdvertiseKeysState>();
  private readonly finals = new Map<string, ClientState>();

  constructor(opts: RoundOptions) {
    this.params = validateRoundParams({ dim: opts.dim ?? 8, cohort: opts.n, neighbors: opts.k ?? opts.n - 1, ...(opts.t === undefined ? {} : { threshold: opts.t }) });
    this.round = { manifestHash: manifestHash(opts.manifest ?? 'job-a'), roundIndex: opts.roundIndex ?? 0 };
    this.identities = opts.identities ?? makeIdentities(opts.n);
    this.ids = this.identities.map((i) => i.id);
    this.directory = new Map(this.identities.map((i) => [i.id, i.publicKey]));
    const identityOf = (id: string): Uint8Array | undefined => this.directory.get(id);

    this.view = roundViewDigest({ round: this.round, params: this.params });
    let cs: CoordinatorState = coordinator.start({ params: this.params, round: this.round, view: this.view, identityOf });
    const states = new Map<string, ClientState>();
    for (const who of this.identities) {
      const { next, outbound } = startClient(this.clientConfig(who.id));
      this.starts.set(who.id, next);
      states.set(who.id, next);
      for (const m of outbound) cs = this.send(cs, who.id, m);
    }
    let t = coordinator.close(cs);
    cs = t.next;
    if (cs.phase !== Phase.ShareKeys) throw new Error(`honest round: phase 0 ended in ${cs.phase}`);
    this.roster = cs.roster;
    const drops = opts.drops?.(cs.roster, this.params) ?? {};
    this.droppedBeforeShare = drops.beforeShare ?? [];
    this.droppedBeforeMask = drops.beforeMask ?? [];
    const silentOn: Partial<Record<Step, Set<string>>> = {
      'advertise-broadcast': new Set(this.droppedBeforeShare),
      'share-broadcast': new Set(this.droppedBeforeMask),
    };

    while (!coordinator.isFinal(cs)) {
      for (const { to, message } of t.outbound) {
        const step = message.type;
        const state = states.get(to)!;
        (this.before.get(step) ?? this.before.set(step, new Map()).get(step)!).set(to, state);
        (this.inbox.get(step) ?? this.inbox.set(step, new Map()).get(step)!).set(to, message);
        if (silentOn[step]?.has(to)) {
          states.delete(to);
          continue;
        }
        const r = handle(state, message);
        if (r.next.phase === Phase.Aborted) throw new Error(`honest round: ${to} aborted (${r.next.reason}: ${r.next.detail})`);
        states.set(to, r.next);
        this.finals.set(to, r.next);
        for (const m of r.outbound) cs = this.send(cs, to, m);
      }
      t = coordinator.close(cs);
      cs = t.next;
    }
    if (cs.phase !== Phase.Completed) throw new Error(`honest round: ended in ${cs.phase} (${'reason' in cs ? cs.reason : ''})`);
    this.outcome = cs;
    this.u2 = this.roster.ids.filter((id) => this.outbox.get('share-keys')?.has(id));
    this.u3 = [...cs.survivors];
    this.plainSum = new Uint32Array(this.params.dim + 1);
    for (const id of this.u3) addInto(this.plainSum, inputOf(id, this.params));
  }

  private send(cs: CoordinatorState, from: string, m: ClientMessage): CoordinatorState {
    (this.outbox.get(m.type) ?? this.outbox.set(m.type, new Map()).get(m.type)!).set(from, m);
    return coordinator.receive(cs, m).next;
  }

  clientConfig(id: string): ClientConfig {
    const who = this.identity(id);
    return {
      clientId: id,
      identityKey: who.identityKey,
      params: this.params,
      round: this.round,
      view: this.view,
      identityOf: (v) => this.directory.get(v),
      input: () => inputOf(id, this.params),
    };
  }

  identity(id: string): Identity {
    const who = this.identities.find((i) => i.id === id);
    if (!who) throw new Error(`no identity ${id}`);
    return who;
  }

  get sessionId(): Uint8Array {
    return this.roster.sessionId;
  }

  /** The state a client was in right after `start` (awaiting U1). */
  startState(id: string): AdvertiseKeysState {
    return this.starts.get(id)!;
  }

  /** The state `id` was in when the coordinator's `step` message reached it. */
  stateBefore<K extends Step>(step: K, id: string): PhaseOf[K]['state'] {
    const s = this.before.get(step)?.get(id);
    if (!s) throw new Error(`${id} got no ${step}`);
    return s as PhaseOf[K]['state'];
  }

  /** A fresh deep copy of the honest `step` message to `id`. */
  message<K extends Step>(step: K, id: string): PhaseOf[K]['message'] {
    const m = this.inbox.get(step)?.get(id);
    if (!m) throw new Error(`${id} got no ${step}`);
    return structuredClone(m) as PhaseOf[K]['message'];
  }

  /** What `id` sent in the honest round (a deep copy). */
  sent<K extends ClientMessage['type']>(type: K, id: string): Extract<ClientMessage, { type: K }> {
    const m = this.outbox.get(type)?.get(id);
    if (!m) throw new Error(`${id} sent no ${type}`);
    return structuredClone(m) as Extract<ClientMessage, { type: K }>;
  }

  /** The state of `id` after it answered the unmasking request. */
  unmasking(id: string): UnmaskingState {
    const s = this.finals.get(id);
    if (s?.phase !== Phase.Unmasking) throw new Error(`${id} did not unmask`);
    return s;
  }

  /** `signer`'s real consistency signature over `u3` (sorted here) in `sessionId`. */
  consistencySignature(signer: string, u3: readonly string[], sessionId: Uint8Array = this.sessionId): { clientId: string; signature: Uint8Array } {
    const sorted = [...u3].sort(compareIds);
    return { clientId: signer, signature: ed25519Sign(this.identity(signer).identityKey, consistencyTranscript(sessionId, sorted)) };
  }
}
