/** One-time enrollment tokens and the revocation list. */
import { describe, expect, test } from '@jest/globals';
import { EnrollmentError, Invites, Revocations, type EnrollmentRefusal } from '../../coordinator/auth/enrollment.js';

const T0 = Date.UTC(2030, 0, 1);

function refusal(fn: () => unknown): EnrollmentRefusal | string {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    return e instanceof EnrollmentError ? e.reason : `unexpected: ${String(e)}`;
  }
}

describe('enrollment invites', () => {
  test('an invite is 32 random bytes in base64url and redeems exactly once', () => {
    const invites = new Invites({ clock: () => T0 });
    const { token, expiresAt } = invites.createInvite({ clientId: 'clinic-1' });
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(token, 'base64url').length).toBe(32);
    expect(expiresAt).toBe(T0 + 15 * 60 * 1000);
    expect(invites.redeem(token)).toEqual({ clientId: 'clinic-1' });
    expect(refusal(() => invites.redeem(token))).toBe('used');
    expect(invites.pending).toBe(0);
  });

  test('an expired invite is refused and stays unredeemed', () => {
    const now = { t: T0 };
    const invites = new Invites({ clock: () => now.t });
    const { token } = invites.createInvite({ ttlMs: 60_000 });
    now.t = T0 + 60_000;
    expect(refusal(() => invites.redeem(token))).toBe('expired');
    expect(refusal(() => invites.redeem(token))).toBe('expired');
  });

  test('an unknown or malformed token is refused', () => {
    const invites = new Invites({ clock: () => T0 });
    const { token } = invites.createInvite();
    const other = Buffer.from(token, 'base64url');
    other[0]! ^= 1;
    expect(refusal(() => invites.redeem(other.toString('base64url')))).toBe('unknown');
    for (const bad of ['', 'short', `${token}A`, token.replace(/.$/, '!')]) expect(refusal(() => invites.redeem(bad))).toBe('malformed');
    expect(invites.redeem(token)).toEqual({});
  });

  test('the persisted form holds only hashes, and a reloaded store still refuses reuse', () => {
    const invites = new Invites({ clock: () => T0 });
    const a = invites.createInvite();
    const b = invites.createInvite();
    invites.redeem(a.token);
    const json = JSON.stringify(invites);
    for (const t of [a.token, b.token]) {
      expect(json).not.toContain(t);
      expect(json).not.toContain(Buffer.from(t, 'base64url').toString('hex'));
      expect(json).not.toContain(Buffer.from(t, 'base64url').toString('base64'));
    }
    const reloaded = Invites.fromJSON(JSON.parse(json), { clock: () => T0 });
    expect(refusal(() => reloaded.redeem(a.token))).toBe('used');
    expect(refusal(() => reloaded.redeem(b.token))).toBe('accepted');
  });

  test('invite lifetimes outside 1 s..7 days are refused', () => {
    const invites = new Invites();
    for (const ttlMs of [0, 999, 8 * 24 * 3600 * 1000, 1.5]) expect(() => invites.createInvite({ ttlMs })).toThrow(/ttl/);
  });
});

describe('revocations', () => {
  test('a revoked client id or certificate serial is reported revoked, others are not', () => {
    const r = new Revocations();
    r.revokeClient('lost-laptop');
    r.revokeSerial('4A0B');
    expect(r.isRevoked({ clientId: 'lost-laptop' })).toBe(true);
    expect(r.isRevoked({ clientId: 'clinic-1', serial: '004a0b' })).toBe(true);
    expect(r.isRevoked({ clientId: 'clinic-1', serial: '4a0c' })).toBe(false);
    expect(r.isRevoked({})).toBe(false);
  });

  test('revocations survive a JSON round trip', () => {
    const r = new Revocations();
    r.revokeClient('lost-laptop');
    r.revokeSerial('ff01');
    const back = Revocations.fromJSON(JSON.parse(JSON.stringify(r)));
    expect(back.isRevoked({ clientId: 'lost-laptop' })).toBe(true);
    expect(back.isRevoked({ serial: 'FF01' })).toBe(true);
    expect(() => Revocations.fromJSON({ version: 1, clients: ['bad id'], serials: [] })).toThrow();
  });
});
