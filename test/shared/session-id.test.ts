/**
 * The session id binds a round to its exact U1 (DESIGN.md §2): the same list gives the same id
 * in whatever order it arrives — the roster hands it over already sorted, a coordinator may not —
 * and any change to an entry gives another.
 */
import { describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import type { AdvertisedEntry } from '../../shared/protocol/messages.js';
import { Roster } from '../../shared/protocol/roster.js';
import { computeSessionId } from '../../shared/protocol/session.js';

const round = { manifestHash: new Uint8Array(randomBytes(32)), roundIndex: 3 };
const view = new Uint8Array(randomBytes(32));
const entry = (clientId: string): AdvertisedEntry => ({ clientId, cPk: new Uint8Array(randomBytes(32)), sPk: new Uint8Array(randomBytes(32)), view, signature: new Uint8Array(64) });
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('computeSessionId', () => {
  const sorted = Array.from({ length: 40 }, (_, i) => entry(`client-${String(i).padStart(3, '0')}`));

  test('is the same for U1 sorted, reversed, shuffled, or sorted but for one swapped pair', () => {
    const id = hex(computeSessionId(round, sorted));
    const reversed = [...sorted].reverse();
    const shuffled = [...sorted].sort(() => (randomBytes(1)[0]! < 128 ? -1 : 1));
    const swapped = [...sorted];
    [swapped[38], swapped[39]] = [swapped[39]!, swapped[38]!];
    for (const order of [reversed, shuffled, swapped]) expect(hex(computeSessionId(round, order))).toBe(id);
    expect(hex(new Roster(round, swapped, 7).sessionId)).toBe(id);
  });

  test('changes with any key, id or view of any entry, and with the round', () => {
    const id = hex(computeSessionId(round, sorted));
    const changed = (i: number, f: (e: AdvertisedEntry) => AdvertisedEntry): string => hex(computeSessionId(round, sorted.map((e, j) => (j === i ? f(e) : e))));
    expect(changed(0, (e) => ({ ...e, cPk: new Uint8Array(randomBytes(32)) }))).not.toBe(id);
    expect(changed(39, (e) => ({ ...e, sPk: new Uint8Array(randomBytes(32)) }))).not.toBe(id);
    expect(changed(20, (e) => ({ ...e, clientId: 'client-020x' }))).not.toBe(id);
    expect(changed(5, (e) => ({ ...e, view: new Uint8Array(32) }))).not.toBe(id);
    expect(hex(computeSessionId({ ...round, roundIndex: 4 }, sorted))).not.toBe(id);
    expect(hex(computeSessionId(round, sorted.slice(1)))).not.toBe(id);
  });
});
