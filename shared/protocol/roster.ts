/**
 * The roster of a session: U1 sorted by client id, each member's index and x-coordinate, the
 * session id and the neighbour graph. Both sides build the same roster from the phase-0
 * broadcast; nothing in it is chosen by the coordinator beyond U1 itself.
 */
import type { KeyObject } from 'node:crypto';
import { ErrorCode, fail } from '../errors.js';
import { assertUsablePublicKey } from '../crypto/x25519.js';
import { NeighbourGraph } from '../crypto/graph.js';
import type { AdvertisedEntry, RoundRef } from './messages.js';
import { compareIds, computeSessionId } from './session.js';

export class Roster {
  readonly round: RoundRef;
  readonly sessionId: Uint8Array;
  /** U1, sorted by client id. */
  readonly ids: readonly string[];
  readonly entries: ReadonlyMap<string, AdvertisedEntry>;
  readonly graph: NeighbourGraph;
  private readonly index: Map<string, number>;
  private readonly neighbourCache = new Map<string, string[]>();
  private readonly keyCache = new Map<string, KeyObject>();

  constructor(round: RoundRef, entries: readonly AdvertisedEntry[], neighbors: number) {
    const sorted = [...entries].sort((a, b) => compareIds(a.clientId, b.clientId));
    this.round = round;
    this.ids = sorted.map((e) => e.clientId);
    this.index = new Map(this.ids.map((id, i) => [id, i]));
    if (this.index.size !== sorted.length) fail(ErrorCode.InvalidArgument, 'duplicate client id in U1');
    this.entries = new Map(sorted.map((e) => [e.clientId, e]));
    this.sessionId = computeSessionId(round, sorted);
    this.graph = new NeighbourGraph(this.sessionId, sorted.length, neighbors);
  }

  get size(): number {
    return this.ids.length;
  }

  get classic(): boolean {
    return this.graph.complete;
  }

  has(id: string): boolean {
    return this.index.has(id);
  }

  indexOf(id: string): number {
    const i = this.index.get(id);
    if (i === undefined) fail(ErrorCode.UnknownSender, 'client is not in U1');
    return i;
  }

  /** Shamir x-coordinate of a member: its index + 1 (1..n, never 0). */
  xOf(id: string): number {
    return this.indexOf(id) + 1;
  }

  /** Neighbours of `id` among U1, sorted by id. */
  neighboursOf(id: string): string[] {
    let hit = this.neighbourCache.get(id);
    if (!hit) {
      hit = this.graph.neighboursOf(this.indexOf(id)).map((j) => this.ids[j]!);
      this.neighbourCache.set(id, hit);
    }
    return hit;
  }

  /**
   * A member's advertised X25519 key ('c': share encryption, 's': masks) as a KeyObject,
   * checked once (length, small order) and cached for the session. Throws `bad-key-length` or
   * `low-order-point`.
   */
  publicKey(id: string, which: 'c' | 's'): KeyObject {
    const k = `${which}:${id}`;
    let obj = this.keyCache.get(k);
    if (!obj) {
      const e = this.entries.get(id);
      if (!e) fail(ErrorCode.UnknownSender, 'client is not in U1');
      obj = assertUsablePublicKey(which === 'c' ? e.cPk : e.sPk);
      this.keyCache.set(k, obj);
    }
    return obj;
  }

  areNeighbours(a: string, b: string): boolean {
    return a !== b && this.has(a) && this.has(b) && this.graph.areNeighbours(this.indexOf(a), this.indexOf(b));
  }
}
