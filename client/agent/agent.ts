/**
 * ClientAgent: what `aegis client run` does once it is connected. It follows the coordinator's
 * stream of events, joins each announced round with a fresh client state machine, sends what
 * the state machine says to send, and keeps going after a round aborts (its own abort, or the
 * round's). It knows nothing of gRPC: a transport gives it events and takes its messages.
 */
import { fitsBits } from '../../shared/crypto/bitpack.js';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import type { ClientMessage, RoundRef, RoundStart, ServerEvent } from '../../shared/protocol/messages.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import { sameRound } from '../../shared/protocol/session.js';
import { roundViewDigest } from '../../shared/protocol/view.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { finish, handle, start, type ClientState } from '../round/index.js';
import { inputFor, type RoundInput } from '../round/types.js';
import type { KeyObject } from 'node:crypto';

/**
 * A plain input as it is given, refused (invalid-argument) when a value has more than the round's
 * b bits: the sum is computed mod 2^r with r = ⌈log2 n⌉ + b, so a wider value would wrap it.
 * (Quantized and DP inputs are made within their bounds.)
 */
function withinBits(input: Uint32Array, bits: number): Uint32Array {
  if (input instanceof Uint32Array && !fitsBits(input, bits)) {
    throw new AegisError(ErrorCode.InvalidArgument, `the input has a value of more than the round's ${bits} bits: the sum, taken mod 2^r, would not be exact`);
  }
  return input;
}

export interface AgentConfig {
  clientId: string;
  identityKey: Uint8Array | KeyObject;
  identityOf: (clientId: string) => Uint8Array | undefined;
  /** This client's quantized, weighted input for a round (length dim + 1). */
  input: (round: RoundRef, params: RoundParams) => Uint32Array;
  /**
   * An input still being made (local training) for a round, started when the round starts;
   * undefined when `input` serves the round. The agent advertises its keys and shares at once
   * and waits for this only when the masked input is due. A rejection makes the client leave
   * the round (it then counts as a dropout).
   */
  pendingInput?: (round: RoundRef) => Promise<RoundInput> | undefined;
  /**
   * r, the bits of a round's sum, as the round's signed manifest fixes them (a DP job: its
   * modulus); undefined: what the round's parameters need (`sumBitsOf`).
   */
  sumBits?: (round: RoundRef) => number | undefined;
  /** Sends one message; rejects with the coordinator's typed refusal. */
  send: (m: ClientMessage) => Promise<void>;
  /**
   * Awaited before each message of a round the agent is in leaves (the runner records the
   * contribution before a masked input). If it throws, the message is not sent: the agent
   * leaves the round (its secrets forgotten) and reports why.
   */
  beforeSend?: (m: ClientMessage, round: RoundRef) => Promise<void>;
  /** Structured events for logs and metrics (round, phase, outcome — never secrets). */
  onEvent?: (e: AgentEvent) => void;
}

export type AgentEvent =
  | { kind: 'joined'; roundIndex: number }
  | { kind: 'aborted'; roundIndex: number; reason: string; phase: string }
  | { kind: 'refused'; roundIndex: number; message: string; code: string }
  | { kind: 'ignored'; type: string; code: string }
  | { kind: 'round-ended'; roundIndex: number; ok: boolean; reason?: string }
  | { kind: 'left'; roundIndex: number; code: string; message: string }
  /** The client's own compute for one coordinator message (state machine and encryption/masking), ms. */
  | { kind: 'computed'; roundIndex: number; type: string; ms: number };

export class ClientAgent {
  private readonly cfg: AgentConfig;
  private round: RoundRef | null = null;
  private state: ClientState | null = null;
  private pending: Promise<RoundInput> | undefined;
  private ready: RoundInput | undefined;
  /** Rounds this agent finished (completed or aborted), by outcome. */
  readonly history: { roundIndex: number; ok: boolean; reason?: string }[] = [];

  constructor(cfg: AgentConfig) {
    this.cfg = cfg;
  }

  get phase(): string | null {
    return this.state?.phase ?? null;
  }

  /** Takes one event from the coordinator's stream. Never throws for the coordinator's input. */
  async onEvent(e: ServerEvent): Promise<void> {
    if (e.type === 'round-start') {
      // A repeated start of the round this client is in (re-sent after a reconnect) changes nothing.
      if (this.round && sameRound(e.round, this.round)) return this.emit({ kind: 'ignored', type: e.type, code: 'already-exists' });
      return this.join(e);
    }
    if (e.type === 'round-outcome') {
      if (this.round && sameRound(e.round, this.round)) {
        if (this.state) this.state = finish(this.state);
        this.history.push({ roundIndex: e.round.roundIndex, ok: e.ok, reason: e.reason });
        this.emit({ kind: 'round-ended', roundIndex: e.round.roundIndex, ok: e.ok, reason: e.reason });
        this.round = null;
        this.state = null;
        this.pending = undefined;
        this.ready = undefined;
      }
      return;
    }
    if (!this.state || !this.round) return this.emit({ kind: 'ignored', type: e.type, code: 'no-round' });
    if (e.type === 'share-broadcast' && this.pending) {
      // The masked input is due: wait for local training to finish.
      const round = this.round;
      try {
        this.ready = await this.pending;
      } catch (err) {
        const code = isAegisError(err) ? err.code : 'internal';
        this.emit({ kind: 'left', roundIndex: round.roundIndex, code, message: isAegisError(err) ? err.message : 'the input could not be made' });
        return this.leave(round, code);
      } finally {
        this.pending = undefined;
      }
      if (!this.round || !sameRound(round, this.round)) return;
    }
    let outbound: ClientMessage[];
    try {
      const started = performance.now();
      const t = handle(this.state, e);
      this.emit({ kind: 'computed', roundIndex: this.round.roundIndex, type: e.type, ms: performance.now() - started });
      this.state = t.next;
      outbound = t.outbound;
    } catch (err) {
      // A message the phase does not take changes nothing (wrong-phase); report and go on.
      if (isAegisError(err)) return this.emit({ kind: 'ignored', type: e.type, code: err.code });
      throw err;
    }
    if (this.state.phase === Phase.Aborted) {
      this.emit({ kind: 'aborted', roundIndex: this.round.roundIndex, reason: this.state.reason, phase: this.state.at });
    }
    await this.sendAll(outbound);
  }

  /**
   * Gives up on the current round (its deadlines passed without a word from the coordinator):
   * the client forgets the round's secrets and is ready for the next one.
   */
  abandon(round: RoundRef): void {
    this.leave(round, 'deadline-passed');
  }

  /** Forgets the round's secrets and ends it on this side with `reason`. */
  private leave(round: RoundRef, reason: string): void {
    if (!this.round || !sameRound(round, this.round)) return;
    if (this.state) this.state = finish(this.state);
    this.history.push({ roundIndex: round.roundIndex, ok: false, reason });
    this.emit({ kind: 'round-ended', roundIndex: round.roundIndex, ok: false, reason });
    this.round = null;
    this.state = null;
    this.pending = undefined;
    this.ready = undefined;
  }

  /** The round this agent is in, if any. */
  get currentRound(): RoundRef | null {
    return this.round;
  }

  private async join(e: RoundStart): Promise<void> {
    const { cfg } = this;
    const { round, params } = e;
    try {
      const sumBits = cfg.sumBits?.(round);
      const { next, outbound } = start({
        clientId: cfg.clientId,
        identityKey: cfg.identityKey,
        params,
        round,
        // Everything this client acts on in the round, signed with its keys: peers shown another
        // model, other parameters or another group abort in phase 0.
        view: roundViewDigest(e),
        ...(e.group ? { members: e.group.members } : {}),
        identityOf: cfg.identityOf,
        input: (sessionId) => inputFor(this.ready ?? withinBits(cfg.input(round, params), params.bits), sessionId),
        ...(sumBits !== undefined ? { sumBits } : {}),
      });
      this.round = round;
      this.state = next;
      this.ready = undefined;
      this.pending = cfg.pendingInput?.(round);
      // Failures surface when the input is due; do not let an early one go unhandled.
      this.pending?.catch(() => undefined);
      this.emit({ kind: 'joined', roundIndex: round.roundIndex });
      await this.sendAll(outbound);
    } catch (err) {
      // Parameters a client refuses (e.g. a threshold that is no majority): it sits the round out
      // and says so, so the coordinator stops waiting for it.
      if (!isAegisError(err)) throw err;
      this.emit({ kind: 'aborted', roundIndex: round.roundIndex, reason: err.code, phase: 'start' });
      await this.decline(round, err.code);
    }
  }

  /**
   * Tells the coordinator this client sits `round` out, with a reason code and nothing else. A
   * refusal of the decline (the round closed meanwhile) changes nothing for the client.
   */
  async decline(round: RoundRef, reason: ErrorCode): Promise<void> {
    await this.sendAll([{ type: 'decline', round, clientId: this.cfg.clientId, reason }]);
  }

  private async sendAll(ms: ClientMessage[]): Promise<void> {
    for (const m of ms) {
      const round = this.round;
      if (this.cfg.beforeSend && round && m.type !== 'decline') {
        try {
          await this.cfg.beforeSend(m, round);
        } catch (err) {
          const code = isAegisError(err) ? err.code : 'internal';
          this.emit({ kind: 'left', roundIndex: round.roundIndex, code, message: isAegisError(err) ? err.message : `${m.type} could not be recorded before it left` });
          return this.leave(round, code);
        }
        // The round ended while the hook ran: nothing more of it leaves.
        if (!this.round || !sameRound(round, this.round)) return;
      }
      try {
        await this.cfg.send(m);
      } catch (err) {
        if (!isAegisError(err)) throw err;
        this.emit({ kind: 'refused', roundIndex: this.round?.roundIndex ?? -1, message: m.type, code: (err as AegisError).code });
      }
    }
  }

  private emit(e: AgentEvent): void {
    this.cfg.onEvent?.(e);
  }
}
