/**
 * The merge rules of the client registry (coordinator/clients/merge.ts): whichever copy is merged
 * into which, in any order, the result is the same and no revocation, enrollment or redeemed
 * invite is lost; a stale copy cannot bring back an older certificate or an unused invite.
 */
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { Invites, Revocations } from '../../coordinator/auth/enrollment.js';
import { applyDelta, factsMissing, mergeRecord, mergeRegistry, sameRecord } from '../../coordinator/clients/merge.js';
import { Registry, type ClientRecord } from '../../coordinator/clients/registry.js';

const T0 = Date.UTC(2030, 0, 1);
const DAY = 86_400_000;
const KEY = 'A'.repeat(43);
const KEY2 = 'B'.repeat(43);

function rec(over: Partial<ClientRecord> & { serial: string }): ClientRecord {
  return { clientId: 'dev-1', publicKey: KEY, enrolledAt: T0, certificateExpiresAt: T0 + DAY, certificate: 'AAAA', ...over };
}

describe('client records', () => {
  test('a rekeyed record (recorded later) wins over the older one in either order, even when the older certificate expires later; the older serial stays on it', () => {
    const old = rec({ serial: 'a1', issuedAt: T0, certificateExpiresAt: T0 + 7 * DAY });
    // A shorter certificate lifetime since, and a new key: the stale record must not bring the old key back.
    const rekeyed = rec({ serial: 'b2', publicKey: KEY2, issuedAt: T0 + 1, certificateExpiresAt: T0 + DAY, previousSerials: [{ serial: 'a1', expiresAt: T0 + 7 * DAY }] });
    for (const m of [mergeRecord(old, rekeyed), mergeRecord(rekeyed, old)]) {
      expect(m).toMatchObject({ serial: 'b2', publicKey: KEY2, issuedAt: T0 + 1 });
      expect(m.previousSerials).toEqual([{ serial: 'a1', expiresAt: T0 + 7 * DAY }]);
    }
  });

  test('two certificates issued from the same state: the later recorded is current, the other joins previousSerials', () => {
    const x = rec({ serial: 'c3', issuedAt: T0 + 5, previousSerials: [{ serial: 'a1', expiresAt: T0 + DAY }] });
    const y = rec({ serial: 'd4', issuedAt: T0 + 9, previousSerials: [{ serial: 'a1', expiresAt: T0 + DAY }] });
    const m = mergeRecord(x, y);
    expect(m.serial).toBe('d4');
    expect(m.previousSerials?.map((p) => p.serial).sort()).toEqual(['a1', 'c3']);
  });

  test('a revocation on either side is kept, with the earliest time and its own reason and detail', () => {
    const a = rec({ serial: 'a1', revokedAt: T0 + 50, revocationReason: 'lost-device', revocationDetail: 'train' });
    const b = rec({ serial: 'a1', revokedAt: T0 + 10, revocationReason: 'key-compromise' });
    const c = rec({ serial: 'a1', lastSeenAt: T0 + 60_000 });
    expect(mergeRecord(a, b)).toMatchObject({ revokedAt: T0 + 10, revocationReason: 'key-compromise' });
    expect(mergeRecord(a, b).revocationDetail).toBeUndefined();
    expect(mergeRecord(c, a)).toMatchObject({ revokedAt: T0 + 50, revocationReason: 'lost-device', revocationDetail: 'train', lastSeenAt: T0 + 60_000 });
  });

  test('merging records is commutative, associative and idempotent (any order of writers gives one result)', () => {
    // A serial names one certificate: its recording time and expiry are its own.
    const serial = fc.constantFrom('a1', 'b2', 'c3', 'd4');
    const issued: Record<string, number> = { a1: T0, b2: T0 + 1, c3: T0 + 1, d4: T0 + 3 };
    const expires: Record<string, number> = { a1: T0 + 4, b2: T0 + 2, c3: T0 + 5, d4: T0 + 5 };
    const arb = fc.record({
      serial,
      enrolledAt: fc.integer({ min: 0, max: 5 }).map((n) => T0 + n),
      revokedAt: fc.option(fc.integer({ min: 0, max: 5 }).map((n) => T0 + n), { nil: undefined }),
      lastSeenAt: fc.option(fc.integer({ min: 0, max: 5 }).map((n) => T0 + n * 60_000), { nil: undefined }),
      prev: fc.subarray(['a1', 'b2', 'c3', 'd4']),
    });
    const build = (r: { serial: string; enrolledAt: number; revokedAt: number | undefined; lastSeenAt: number | undefined; prev: string[] }): ClientRecord => {
      const out = rec({ serial: r.serial, issuedAt: issued[r.serial]!, certificateExpiresAt: expires[r.serial]!, enrolledAt: r.enrolledAt });
      if (r.revokedAt !== undefined) Object.assign(out, { revokedAt: r.revokedAt, revocationReason: r.revokedAt % 2 === 0 ? 'retired' : 'lost-device' });
      if (r.lastSeenAt !== undefined) out.lastSeenAt = r.lastSeenAt;
      const prev = r.prev.filter((s) => s !== r.serial);
      if (prev.length > 0) out.previousSerials = prev.map((s) => ({ serial: s, expiresAt: expires[s]! }));
      return out;
    };
    fc.assert(
      fc.property(arb, arb, arb, (ra, rb, rc) => {
        const [a, b, c] = [build(ra), build(rb), build(rc)];
        expect(sameRecord(mergeRecord(a, b), mergeRecord(b, a))).toBe(true);
        expect(sameRecord(mergeRecord(mergeRecord(a, b), c), mergeRecord(a, mergeRecord(b, c)))).toBe(true);
        expect(sameRecord(mergeRecord(a, a), mergeRecord(a, mergeRecord(a, a)))).toBe(true);
        // Nothing is lost: every serial either side named is still named, and a revocation stays.
        const m = mergeRecord(a, b);
        const named = new Set([m.serial, ...(m.previousSerials ?? []).map((p) => p.serial)]);
        for (const s of [a.serial, b.serial]) expect(named.has(s)).toBe(true);
        if (a.revokedAt !== undefined || b.revokedAt !== undefined) expect(m.revokedAt).toBe(Math.min(a.revokedAt ?? Infinity, b.revokedAt ?? Infinity));
      }),
      { numRuns: 300 },
    );
  });
});

describe('registries', () => {
  test('a stale copy merged into a newer one drops nothing; the newer merged into the stale one teaches it everything', () => {
    const stale = new Registry({ clients: [rec({ serial: 'a1' }), rec({ clientId: 'dev-2', publicKey: KEY2, serial: 'b2' })] });
    const fresh = new Registry({ clients: [rec({ serial: 'a1' }), rec({ clientId: 'dev-2', publicKey: KEY2, serial: 'b2' })] });
    // On the fresh copy: dev-2 revoked with its serial.
    fresh.clients.set('dev-2', { ...fresh.clients.get('dev-2')!, revokedAt: T0 + 5, revocationReason: 'key-compromise' });
    fresh.revocations.revokeClient('dev-2');
    fresh.revocations.revokeSerial('b2', { revokedAt: T0 + 5, reason: 'key-compromise' });
    // The stale copy has only a later last-seen time of its own.
    stale.clients.set('dev-1', { ...stale.clients.get('dev-1')!, lastSeenAt: T0 + 120_000 });

    const written = Registry.fromJSON(JSON.parse(JSON.stringify(fresh.toJSON())));
    const change = mergeRegistry(written, stale);
    expect(change).toEqual({ clients: [], serials: [] });
    expect(written.revocations.isRevoked({ clientId: 'dev-2' })).toBe(true);
    expect(written.revocations.isRevoked({ serial: 'b2' })).toBe(true);
    expect(written.clients.get('dev-2')?.revokedAt).toBe(T0 + 5);
    expect(written.clients.get('dev-1')?.lastSeenAt).toBe(T0 + 120_000);

    const learned = mergeRegistry(stale, written);
    expect(learned).toEqual({ clients: ['dev-2'], serials: ['b2'] });
    expect(stale.revocations.isRevoked({ clientId: 'dev-2', serial: 'b2' })).toBe(true);
  });

  test('a revoked record revokes its id and every serial of it still valid when it was revoked, also one a racing renewal issued', () => {
    const reg = new Registry({ clients: [rec({ serial: 'a1', issuedAt: T0, certificateExpiresAt: T0 + DAY })] });
    const renewed = rec({ serial: 'b2', issuedAt: T0 + 1, certificateExpiresAt: T0 + 2 * DAY, previousSerials: [{ serial: 'a1', expiresAt: T0 + DAY }] });
    const revoked = rec({ serial: 'a1', issuedAt: T0, certificateExpiresAt: T0 + DAY, revokedAt: T0 + 10, revocationReason: 'lost-device' });
    const change = applyDelta(reg, { clients: [revoked, renewed] });
    expect(change.clients).toEqual(['dev-1']);
    expect(change.serials.sort()).toEqual(['a1', 'b2']);
    expect(reg.clients.get('dev-1')).toMatchObject({ serial: 'b2', revokedAt: T0 + 10 });
    expect(reg.revocations.infoOf('b2')).toEqual({ revokedAt: T0 + 10, reason: 'lost-device' });
  });

  test('factsMissing: what one copy holds and another lacks; once merged, nothing', () => {
    const mine = new Registry({ clients: [rec({ serial: 'a1', issuedAt: T0, lastSeenAt: T0 + 60_000 })] });
    mine.revocations.revokeClient('gone');
    mine.revocations.revokeSerial('beef', { revokedAt: T0 + 1, reason: 'retired' });
    mine.bindings.bind(new Uint8Array(Buffer.from(KEY, 'base64url')), 'dev-1');
    const { token } = mine.invites.createInvite();
    const theirs = new Registry();
    // Theirs knows the serial, but revoked later: the earlier revocation is missing there.
    theirs.revocations.revokeSerial('beef', { revokedAt: T0 + 9, reason: 'lost-device' });
    const missing = factsMissing(mine, theirs, Date.now());
    expect(missing.clients.map((c) => c.clientId)).toEqual(['dev-1']);
    expect(missing.clients[0]!.lastSeenAt).toBeUndefined();
    expect(missing.lastSeen).toEqual([['dev-1', T0 + 60_000]]);
    expect(missing.revokedClients).toEqual(['gone']);
    expect(missing.revokedSerials).toEqual([{ serial: 'beef', revokedAt: T0 + 1, reason: 'retired' }]);
    expect(missing.bindings).toEqual([[KEY, 'dev-1']]);
    expect(missing.invites.map((i) => i.hash)).toEqual([Invites.hashOf(token)]);
    applyDelta(theirs, missing);
    expect(factsMissing(mine, theirs, Date.now())).toEqual({ clients: [], invites: [], bindings: [], revokedClients: [], revokedSerials: [], lastSeen: [] });
  });

  test('the parts the transport holds stay the same objects through a merge', () => {
    const reg = new Registry();
    const { revocations, invites, bindings } = reg;
    const other = new Registry();
    other.revocations.revokeClient('dev-9');
    mergeRegistry(reg, other);
    expect(reg.revocations).toBe(revocations);
    expect(reg.invites).toBe(invites);
    expect(reg.bindings).toBe(bindings);
    expect(revocations.isRevoked({ clientId: 'dev-9' })).toBe(true);
  });
});

describe('revocations and invites', () => {
  test('of two revocations of one serial the earlier time and reason stay, in either order', () => {
    const a = new Revocations();
    a.revokeSerial('ff', { revokedAt: T0 + 9, reason: 'retired' });
    a.revokeSerial('ff', { revokedAt: T0 + 3, reason: 'key-compromise', detail: 'stolen' });
    const b = new Revocations();
    b.revokeSerial('FF', { revokedAt: T0 + 3, reason: 'key-compromise', detail: 'stolen' });
    b.revokeSerial('ff', { revokedAt: T0 + 9, reason: 'retired' });
    expect(a.toJSON()).toEqual(b.toJSON());
    expect(a.infoOf('00ff')).toEqual({ revokedAt: T0 + 3, reason: 'key-compromise', detail: 'stolen' });
    expect(Revocations.fromJSON(JSON.parse(JSON.stringify(a))).infoOf('ff')).toEqual({ revokedAt: T0 + 3, reason: 'key-compromise', detail: 'stolen' });
  });

  test('a redeemed invite stays redeemed: a stale copy where it is unused cannot make it usable again', () => {
    const issuing = new Invites({ clock: () => T0 });
    const { token } = issuing.createInvite();
    const stale = Invites.fromJSON(JSON.parse(JSON.stringify(issuing)), { clock: () => T0 });
    issuing.redeem(token);
    // The stale copy is merged into the writer's, then the writer's into a third copy.
    const merged = Invites.fromJSON(JSON.parse(JSON.stringify(stale)), { clock: () => T0 });
    merged.absorb(issuing.list());
    stale.absorb(merged.list());
    for (const copy of [merged, stale]) expect(() => copy.redeem(token)).toThrow(/used/);
  });
});
