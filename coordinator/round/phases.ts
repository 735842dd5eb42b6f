/**
 * What a round host needs to know about each phase, as pure functions of the state: the client
 * message a phase takes, its deadline, how many answered, whom it waits for, and whether it is
 * open or closing. The in-memory host (coordinator/hosts/round-host.ts) and the Redis host
 * (coordinator/queue/redis-round-host.ts) both read them from here, so the two cannot drift.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { ClientMessage, PhaseDeadlines } from '../../shared/protocol/messages.js';
import { Phase, PHASE_ORDER } from '../../shared/protocol/vocabulary.js';
import type { CoordinatorState, CoordinatorStats } from './types.js';

/**
 * The client messages each phase takes; the two final states take none. Phase 0 takes a client's
 * keys or its decline (it sits the round out), one of the two per client.
 */
export const MESSAGES_OF_PHASE: Readonly<Record<Phase, readonly ClientMessage['type'][]>> = {
  [Phase.AdvertiseKeys]: ['advertise-keys', 'decline'],
  [Phase.ShareKeys]: ['share-keys'],
  [Phase.MaskedInput]: ['masked-input'],
  [Phase.ConsistencyCheck]: ['consistency-signature'],
  [Phase.Unmasking]: ['unmask-response'],
  [Phase.Completed]: [],
  [Phase.Aborted]: [],
};

/** Which of the manifest's deadlines bounds each phase; the two final states have none. */
export const DEADLINE_OF_PHASE: Readonly<Record<Phase, keyof PhaseDeadlines | null>> = {
  [Phase.AdvertiseKeys]: 'advertiseMs',
  [Phase.ShareKeys]: 'shareMs',
  [Phase.MaskedInput]: 'maskedMs',
  [Phase.ConsistencyCheck]: 'consistencyMs',
  [Phase.Unmasking]: 'unmaskMs',
  [Phase.Completed]: null,
  [Phase.Aborted]: null,
};

/** How long `phase` may stay open (ms), undefined for a final state. */
export function deadlineOf(phase: Phase, deadlines: PhaseDeadlines): number | undefined {
  const key = DEADLINE_OF_PHASE[phase];
  return key === null ? undefined : deadlines[key];
}

export const isFinalPhase = (phase: Phase): boolean => phase === Phase.Completed || phase === Phase.Aborted;

/** A phase's place in the protocol order (the final states last). */
export const phaseIndex = (phase: Phase): number => PHASE_ORDER.indexOf(phase);

/**
 * A round's phase as its host sees it: open, or closing — its close is under way (the unmask
 * workers expand the masks, or another front end closes it) and it takes no more messages.
 */
export interface PhaseMark {
  phase: Phase;
  closing: boolean;
}

const CLOSING_SUFFIX = '!';

/** The mark as one string (how a round on Redis stores it): the phase name, `!` appended while closing. */
export const formatPhaseMark = (m: PhaseMark): string => (m.closing ? `${m.phase}${CLOSING_SUFFIX}` : m.phase);

/** Reads `formatPhaseMark`'s string back; undefined for anything else. */
export function parsePhaseMark(s: string): PhaseMark | undefined {
  const closing = s.endsWith(CLOSING_SUFFIX);
  const phase = (closing ? s.slice(0, -CLOSING_SUFFIX.length) : s) as Phase;
  return PHASE_ORDER.includes(phase) ? { phase, closing } : undefined;
}

const describeMark = (m: PhaseMark): string => (m.closing ? `${m.phase} (closing)` : m.phase);

/** True when the round, at `mark`, takes a message of this type. */
export const takes = (mark: PhaseMark, type: unknown): boolean => !mark.closing && (MESSAGES_OF_PHASE[mark.phase] as readonly unknown[]).includes(type);

/** Throws `wrong-phase` unless the round, at `mark`, takes a message of this type. */
export function assertTakes(mark: PhaseMark, type: unknown): void {
  if (!takes(mark, type)) throw new AegisError(ErrorCode.WrongPhase, `the round is in phase ${describeMark(mark)} and does not take ${String(type)}`);
}

/** How many clients the current phase has taken its message from (phase 0: keys; declines are counted apart). */
export function receivedCount(s: CoordinatorState): number {
  switch (s.phase) {
    case Phase.AdvertiseKeys:
    case Phase.ShareKeys:
    case Phase.MaskedInput:
      return s.received.size;
    case Phase.ConsistencyCheck:
      return s.signatures.size;
    case Phase.Unmasking:
      return s.responses.size;
    default:
      return 0;
  }
}

/** True when the current phase has taken a message from `clientId` (in phase 0, its keys or its decline). */
export function hasAnswered(s: CoordinatorState, clientId: string): boolean {
  switch (s.phase) {
    case Phase.AdvertiseKeys:
      return s.received.has(clientId) || s.declined.has(clientId);
    case Phase.ShareKeys:
    case Phase.MaskedInput:
      return s.received.has(clientId);
    case Phase.ConsistencyCheck:
      return s.signatures.has(clientId);
    case Phase.Unmasking:
      return s.responses.has(clientId);
    default:
      return false;
  }
}

/** The set sizes a round fixed so far (|U1|..|U4|). */
export type SetSizes = Pick<CoordinatorStats, 'u1' | 'u2' | 'u3' | 'u4'>;

/** How many clients a phase waits for: the invited cohort first, then the set the previous phase fixed (|U1|..|U4|). */
export function expectedClients(phase: Phase, sets: SetSizes, invited: number): number {
  switch (phase) {
    case Phase.AdvertiseKeys:
      return invited;
    case Phase.ShareKeys:
      return sets.u1 ?? 0;
    case Phase.MaskedInput:
      return sets.u2 ?? 0;
    case Phase.ConsistencyCheck:
      return sets.u3 ?? 0;
    case Phase.Unmasking:
      return sets.u4 ?? 0;
    default:
      return 0;
  }
}

/**
 * The clients the current phase waits for: the invited `cohort` (undefined when the host was
 * not told who was invited), then U1, U2, U3 and the members of U4 asked to unmask.
 */
export function awaitedClients(s: CoordinatorState, cohort: readonly string[] | undefined): readonly string[] | undefined {
  switch (s.phase) {
    case Phase.AdvertiseKeys:
      return cohort;
    case Phase.ShareKeys:
      return s.roster.ids;
    case Phase.MaskedInput:
      return s.u2;
    case Phase.ConsistencyCheck:
      return s.u3;
    case Phase.Unmasking:
      return s.u4;
    default:
      return undefined;
  }
}

/**
 * True when a phase waits only for clients that are gone: every client in `awaited` has
 * answered (in phase 0, a decline is an answer) or is gone, and some are gone. The phase can
 * then close without its deadline.
 */
export function waitsOnlyForGone(awaited: Iterable<string>, answered: (clientId: string) => boolean, gone: ReadonlySet<string>): boolean {
  if (gone.size === 0) return false;
  for (const id of awaited) if (!answered(id) && !gone.has(id)) return false;
  return true;
}

/**
 * A copy of a state as it was when its phase began: its per-phase collections empty and, in
 * the masked-input phase, a zero sum. A host that keeps the answers elsewhere (Redis) feeds them
 * into such a copy.
 */
export function atPhaseStart(s: CoordinatorState): CoordinatorState {
  switch (s.phase) {
    case Phase.AdvertiseKeys:
      return { ...s, received: new Map(), keyOwners: new Map(), declined: new Map() };
    case Phase.ShareKeys:
      return { ...s, received: new Map() };
    case Phase.MaskedInput:
      return { ...s, received: new Map(), sum: new Uint32Array(s.cfg.params.dim + 1) };
    case Phase.ConsistencyCheck:
      return { ...s, signatures: new Map() };
    case Phase.Unmasking:
      return { ...s, responses: new Map() };
    default:
      return s;
  }
}
