/**
 * Round-call tokens: EdDSA JWTs (RFC 7519, RFC 8037). Every refusal reason, a hand-built
 * `alg: none` token (RFC 7519 §6), an HS256 token keyed with the public key (key confusion),
 * and every single-bit change of the signature (libsignal style).
 */
import { describe, expect, test } from '@jest/globals';
import { createHash, createHmac } from 'node:crypto';
import { Revocations } from '../../coordinator/auth/enrollment.js';
import { AuthError, TokenIssuer, TokenVerifier, type AuthRefusal } from '../../coordinator/auth/tokens.js';

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0);

function fixture(now = { t: T0 }) {
  const clock = () => now.t;
  const issuer = TokenIssuer.create({ clock });
  const revocations = new Revocations();
  const verifier = new TokenVerifier({ publicKey: issuer.publicKey, clock, revocations });
  return { now, issuer, verifier, revocations };
}

async function reason(p: Promise<unknown>): Promise<AuthRefusal | string> {
  try {
    await p;
    return 'accepted';
  } catch (e) {
    return e instanceof AuthError ? e.reason : `unexpected: ${String(e)}`;
  }
}

const b64u = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

function payloadOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
}

describe('round-call tokens', () => {
  test('a fresh token for the calling client is accepted and carries sub, aud, jti, iat and a 5-minute exp', async () => {
    const { issuer, verifier } = fixture();
    const { token } = await issuer.issue('clinic-1');
    const claims = await verifier.verify(token, { clientId: 'clinic-1' });
    expect(claims.sub).toBe('clinic-1');
    expect(claims.aud).toBe('aegis-coordinator');
    expect(claims.jti).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(claims.iat).toBe(T0 / 1000);
    expect(claims.exp - claims.iat).toBe(300);
    // The protected header names the signing key: `t<version>-<first 8 chars of base64url(SHA-256(public key))>`.
    const header = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>;
    expect(header).toEqual({ alg: 'EdDSA', typ: 'JWT', kid: expect.stringMatching(/^t[1-9][0-9]{0,8}-[A-Za-z0-9_-]{8}$/) });
    const keyHash = createHash('sha256').update(issuer.publicKey).digest('base64url').slice(0, 8);
    expect(header.kid).toBe(`t1-${keyHash}`);
    expect(header.kid).toBe(issuer.kid);
    // Another version of the same key gets another kid.
    const v7 = TokenIssuer.fromSeed(issuer.exportSeed(), { version: 7, clock: () => T0 });
    expect(JSON.parse(Buffer.from((await v7.issue('clinic-1')).token.split('.')[0]!, 'base64url').toString())).toMatchObject({ kid: `t7-${keyHash}` });
  });

  test('every token gets a distinct jti', async () => {
    const { issuer } = fixture();
    const jtis = new Set<string>();
    for (let i = 0; i < 50; i++) jtis.add((await issuer.issue('c')).claims.jti);
    expect(jtis.size).toBe(50);
  });

  test('a replayed token is refused as replayed', async () => {
    const { issuer, verifier } = fixture();
    const { token } = await issuer.issue('clinic-1');
    await verifier.verify(token, { clientId: 'clinic-1' });
    await expect(reason(verifier.verify(token, { clientId: 'clinic-1' }))).resolves.toBe('replayed');
  });

  test('an expired token is refused as expired, at exactly exp and after', async () => {
    const { now, issuer, verifier } = fixture();
    const a = await issuer.issue('clinic-1');
    const b = await issuer.issue('clinic-1');
    now.t = T0 + 300_000;
    await expect(reason(verifier.verify(a.token, { clientId: 'clinic-1' }))).resolves.toBe('expired');
    now.t = T0 + 3_600_000;
    await expect(reason(verifier.verify(b.token, { clientId: 'clinic-1' }))).resolves.toBe('expired');
  });

  test('a token issued in the future is refused as not yet valid', async () => {
    const now = { t: T0 };
    const issuer = TokenIssuer.create({ clock: () => now.t + 60_000 });
    const verifier = new TokenVerifier({ publicKey: issuer.publicKey, clock: () => now.t });
    const { token } = await issuer.issue('clinic-1');
    await expect(reason(verifier.verify(token, { clientId: 'clinic-1' }))).resolves.toBe('not-yet-valid');
  });

  test('a token for another audience is refused as bad-audience', async () => {
    const { issuer } = fixture();
    const verifier = new TokenVerifier({ publicKey: issuer.publicKey, clock: () => T0, audience: 'aegis-other' });
    const { token } = await issuer.issue('clinic-1');
    await expect(reason(verifier.verify(token, { clientId: 'clinic-1' }))).resolves.toBe('bad-audience');
  });

  test('a token whose subject is not the certificate’s client id is refused as wrong-subject', async () => {
    const { issuer, verifier } = fixture();
    const { token } = await issuer.issue('clinic-1');
    await expect(reason(verifier.verify(token, { clientId: 'clinic-2' }))).resolves.toBe('wrong-subject');
    // The refusal left no trace: the rightful client can still use it once.
    await expect(reason(verifier.verify(token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
  });

  test('a revoked client is refused on its next call even with an unexpired token', async () => {
    const { issuer, verifier, revocations } = fixture();
    const a = await issuer.issue('clinic-1');
    const b = await issuer.issue('clinic-1');
    await verifier.verify(a.token, { clientId: 'clinic-1' });
    revocations.revokeClient('clinic-1');
    await expect(reason(verifier.verify(b.token, { clientId: 'clinic-1' }))).resolves.toBe('revoked');
  });

  test('a revoked jti is refused as revoked while other tokens of the client still pass', async () => {
    const { issuer, verifier } = fixture();
    const a = await issuer.issue('clinic-1');
    const b = await issuer.issue('clinic-1');
    await verifier.revokeToken(a.claims.jti, a.claims.exp);
    await expect(reason(verifier.verify(a.token, { clientId: 'clinic-1' }))).resolves.toBe('revoked');
    await expect(reason(verifier.verify(b.token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
  });

  test('a token signed by another key is refused as bad-signature', async () => {
    const { verifier } = fixture();
    const other = TokenIssuer.create({ clock: () => T0 });
    const { token } = await other.issue('clinic-1');
    await expect(reason(verifier.verify(token, { clientId: 'clinic-1' }))).resolves.toBe('bad-signature');
  });

  test('every single-bit change of the signature is refused as bad-signature', async () => {
    const { issuer, verifier } = fixture();
    const { token } = await issuer.issue('clinic-1');
    const [h, p, s] = token.split('.') as [string, string, string];
    const sig = Buffer.from(s, 'base64url');
    expect(sig.length).toBe(64);
    for (let bit = 0; bit < sig.length * 8; bit++) {
      const bad = Buffer.from(sig);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      await expect(reason(verifier.verify(`${h}.${p}.${bad.toString('base64url')}`, { clientId: 'clinic-1' }))).resolves.toBe('bad-signature');
    }
    // The untouched token still passes: refusals recorded nothing.
    await expect(reason(verifier.verify(token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
  });

  test('a signature of the wrong length, or spelled another way in base64url, is refused as bad-signature', async () => {
    const { issuer, verifier } = fixture();
    const { token } = await issuer.issue('clinic-1');
    const [h, p, s] = token.split('.') as [string, string, string];
    // 64 bytes take 86 base64url characters, the last carrying 4 unused bits: another last
    // character with the same 2 leading bits decodes to the same bytes.
    const last = s[85]!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const twin = alphabet[(alphabet.indexOf(last) & ~0xf) | ((alphabet.indexOf(last) + 1) & 0xf)]!;
    expect(Buffer.from(`${s.slice(0, 85)}${twin}`, 'base64url')).toEqual(Buffer.from(s, 'base64url'));
    const sig = Buffer.from(s, 'base64url');
    for (const bad of [`${s.slice(0, 85)}${twin}`, sig.subarray(0, 63).toString('base64url'), Buffer.concat([sig, Buffer.from([0])]).toString('base64url')]) {
      await expect(reason(verifier.verify(`${h}.${p}.${bad}`, { clientId: 'clinic-1' }))).resolves.toBe('bad-signature');
    }
    await expect(reason(verifier.verify(token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
  });

  test('a changed payload under the original signature is refused as bad-signature', async () => {
    const { issuer, verifier } = fixture();
    const { token } = await issuer.issue('clinic-1');
    const [h, p, s] = token.split('.') as [string, string, string];
    const forged = b64u({ ...payloadOf(token), sub: 'clinic-2' });
    expect(forged).not.toBe(p);
    await expect(reason(verifier.verify(`${h}.${forged}.${s}`, { clientId: 'clinic-2' }))).resolves.toBe('bad-signature');
  });

  test('a hand-built alg:none token is refused as bad-algorithm, with or without a signature part', async () => {
    const { issuer, verifier } = fixture();
    const { token } = await issuer.issue('clinic-1');
    const payload = token.split('.')[1]!;
    for (const alg of ['none', 'None', 'NONE']) {
      const h = b64u({ alg, typ: 'JWT' });
      await expect(reason(verifier.verify(`${h}.${payload}.`, { clientId: 'clinic-1' }))).resolves.toBe('bad-algorithm');
      await expect(reason(verifier.verify(`${h}.${payload}.${token.split('.')[2]!}`, { clientId: 'clinic-1' }))).resolves.toBe('bad-algorithm');
    }
  });

  test('an HS256 token keyed with the public key, and any algorithm but EdDSA, is refused as bad-algorithm', async () => {
    const { issuer, verifier } = fixture();
    const { token } = await issuer.issue('clinic-1');
    const payload = token.split('.')[1]!;
    for (const alg of ['HS256', 'ES256', 'RS256', 'Ed25519', 'ed25519', '']) {
      const h = b64u({ alg, typ: 'JWT' });
      const mac = createHmac('sha256', Buffer.from(issuer.publicKey)).update(`${h}.${payload}`).digest('base64url');
      await expect(reason(verifier.verify(`${h}.${payload}.${mac}`, { clientId: 'clinic-1' }))).resolves.toBe('bad-algorithm');
    }
    const noAlg = b64u({ typ: 'JWT' });
    await expect(reason(verifier.verify(`${noAlg}.${payload}.${token.split('.')[2]!}`, { clientId: 'clinic-1' }))).resolves.toBe('bad-algorithm');
  });

  test('a header that brings its own key or critical extensions is refused as malformed', async () => {
    const { issuer, verifier } = fixture();
    const { token } = await issuer.issue('clinic-1');
    const [, p, s] = token.split('.') as [string, string, string];
    for (const extra of [{ jwk: { kty: 'OKP', crv: 'Ed25519', x: 'AA' } }, { crit: ['b64'], b64: false }, { kid: 'x' }, { typ: 'at+jwt' }]) {
      const h = b64u({ alg: 'EdDSA', ...extra });
      await expect(reason(verifier.verify(`${h}.${p}.${s}`, { clientId: 'clinic-1' }))).resolves.toBe('malformed');
    }
  });

  test('garbage, truncated and oversized tokens are refused as malformed', async () => {
    const { issuer, verifier } = fixture();
    const { token } = await issuer.issue('clinic-1');
    for (const bad of ['', 'a.b', 'a.b.c.d', '..', token.split('.').slice(0, 2).join('.'), `${token}.x`, 'x'.repeat(5000), '!!.??.**', `${b64u([1])}.${b64u({})}.AA`]) {
      await expect(reason(verifier.verify(bad, { clientId: 'clinic-1' }))).resolves.toBe('malformed');
    }
  });

  test('a signed token missing a claim or living longer than 15 minutes is refused as malformed', async () => {
    const now = { t: T0 };
    const { issuer, verifier } = fixture(now);
    await expect(issuer.issue('clinic-1', { ttlMs: 16 * 60 * 1000 })).rejects.toThrow(/ttl/);
    // Verifier-side: sign odd claim sets with the issuer's own key via jose.
    const { SignJWT } = await import('jose');
    const { okpPrivateKeyObject } = await import('../../shared/crypto/okp.js');
    const key = okpPrivateKeyObject('Ed25519', issuer.exportSeed());
    const base = { sub: 'clinic-1', aud: 'aegis-coordinator', jti: 'AAAAAAAAAAAAAAAAAAAAAA', iat: T0 / 1000, exp: T0 / 1000 + 300 };
    const variants: Record<string, unknown>[] = [
      { ...base, jti: undefined },
      { ...base, sub: undefined },
      { ...base, exp: undefined },
      { ...base, iat: undefined },
      { ...base, exp: base.iat + 3600 },
      { ...base, exp: 'soon' },
    ];
    for (const v of variants) {
      const t = await new SignJWT(v).setProtectedHeader({ alg: 'EdDSA' }).sign(key);
      await expect(reason(verifier.verify(t, { clientId: 'clinic-1' }))).resolves.toBe('malformed');
    }
  });

  test('a jti revoked without its exp is kept for the longest token lifetime, then dropped', async () => {
    const now = { t: T0 };
    const { issuer, verifier } = fixture(now);
    const a = await issuer.issue('clinic-1', { ttlMs: 15 * 60_000 });
    await expect(verifier.revokeToken(a.claims.jti)).resolves.toEqual({ jti: a.claims.jti, until: T0 / 1000 + 900 });
    now.t = T0 + 14 * 60_000;
    await expect(reason(verifier.verify(a.token, { clientId: 'clinic-1' }))).resolves.toBe('revoked');
    await expect(verifier.revokeToken('not-a-jti')).rejects.toThrow(/jti/);
  });

  test('a token revoked whole must be one of ours; an expired one needs nothing; the revocation refuses it', async () => {
    const now = { t: T0 };
    const { issuer, verifier } = fixture(now);
    const a = await issuer.issue('clinic-1');
    const b = await issuer.issue('clinic-1', { ttlMs: 60_000 });
    await expect(verifier.revokeTokenString(a.token)).resolves.toEqual({ jti: a.claims.jti, clientId: 'clinic-1', until: a.claims.exp });
    await expect(reason(verifier.verify(a.token, { clientId: 'clinic-1' }))).resolves.toBe('revoked');
    // A token signed by another key, or garbage: refused with the token's reason, nothing stored.
    const foreign = await TokenIssuer.create({ clock: () => now.t }).issue('clinic-1');
    await expect(reason(verifier.revokeTokenString(foreign.token))).resolves.toBe('bad-signature');
    await expect(reason(verifier.revokeTokenString('x.y.z'))).resolves.toBe('malformed');
    await expect(reason(verifier.verify(foreign.token, { clientId: 'clinic-1' }))).resolves.toBe('bad-signature');
    now.t = T0 + 120_000;
    await expect(verifier.revokeTokenString(b.token)).resolves.toMatchObject({ jti: b.claims.jti, alreadyExpired: true });
  });

  test("revoking a client's tokens refuses every one issued up to that second; later ones and other clients' pass", async () => {
    const now = { t: T0 + 400 };
    const { issuer, verifier } = fixture(now);
    const early = await issuer.issue('clinic-1');
    const other = await issuer.issue('clinic-2');
    now.t = T0 + 900;
    await expect(verifier.revokeClientTokens('clinic-1')).resolves.toEqual({ clientId: 'clinic-1', issuedUpTo: T0 / 1000, until: T0 / 1000 + 900 });
    // Issued in the second of the revocation (after it, by the millisecond): refused too, on the safe side.
    const inSecond = await issuer.issue('clinic-1');
    now.t = T0 + 1_000;
    const later = await issuer.issue('clinic-1');
    await expect(reason(verifier.verify(early.token, { clientId: 'clinic-1' }))).resolves.toBe('revoked');
    await expect(reason(verifier.verify(inSecond.token, { clientId: 'clinic-1' }))).resolves.toBe('revoked');
    await expect(reason(verifier.verify(later.token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
    await expect(reason(verifier.verify(other.token, { clientId: 'clinic-2' }))).resolves.toBe('accepted');
    // The refusals recorded nothing: only the two accepted tokens are remembered.
    expect(verifier.remembered).toBe(2);
  });

  test('seen jti are forgotten once their tokens expire, and those tokens stay refused as expired', async () => {
    const now = { t: T0 };
    const { issuer, verifier } = fixture(now);
    const a = await issuer.issue('clinic-1', { ttlMs: 60_000 });
    await verifier.verify(a.token, { clientId: 'clinic-1' });
    expect(verifier.remembered).toBe(1);
    now.t = T0 + 120_000;
    const b = await issuer.issue('clinic-1');
    await verifier.verify(b.token, { clientId: 'clinic-1' });
    expect(verifier.remembered).toBe(1);
    await expect(reason(verifier.verify(a.token, { clientId: 'clinic-1' }))).resolves.toBe('expired');
  });
});

describe('tokens signed in this process (verified through the issuer’s own key ring)', () => {
  function sameRing(now = { t: T0 }) {
    const clock = () => now.t;
    const issuer = TokenIssuer.create({ clock });
    const verifier = new TokenVerifier({ publicKey: issuer.publicKey, keyring: issuer.keyring, clock });
    return { now, issuer, verifier };
  }

  test('pass without an Ed25519 verification, once each; a verifier with only the public key checks every one', async () => {
    const { issuer, verifier } = sameRing();
    const elsewhere = new TokenVerifier({ publicKey: issuer.publicKey, clock: () => T0 });
    const tokens = await Promise.all(Array.from({ length: 20 }, () => issuer.issue('clinic-1')));
    expect(issuer.keyring.signedHereCount).toBe(20);
    for (const { token } of tokens.slice(0, 10)) await expect(reason(verifier.verify(token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
    for (const { token } of tokens.slice(10)) await expect(reason(elsewhere.verify(token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
    expect(verifier.signaturesChecked).toBe(0);
    expect(elsewhere.signaturesChecked).toBe(10);
    expect(issuer.keyring.signedHereCount).toBe(10);
    // Presented again: checked by signature this time, then refused by the ledger.
    await expect(reason(verifier.verify(tokens[0]!.token, { clientId: 'clinic-1' }))).resolves.toBe('replayed');
    expect(verifier.signaturesChecked).toBe(1);
  });

  test('a changed payload, header or signature is refused as before, and does not use up the real token', async () => {
    const { issuer, verifier } = sameRing();
    const { token } = await issuer.issue('clinic-1');
    const [h, p, s] = token.split('.') as [string, string, string];
    const forgedPayload = b64u({ ...payloadOf(token), sub: 'clinic-2' });
    await expect(reason(verifier.verify(`${h}.${forgedPayload}.${s}`, { clientId: 'clinic-2' }))).resolves.toBe('bad-signature');
    const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as Record<string, unknown>;
    const forgedHeader = b64u({ typ: 'JWT', alg: 'EdDSA', kid: header.kid });
    expect(forgedHeader).not.toBe(h);
    await expect(reason(verifier.verify(`${forgedHeader}.${p}.${s}`, { clientId: 'clinic-1' }))).resolves.toBe('bad-signature');
    const noKid = b64u({ alg: 'EdDSA', typ: 'JWT' });
    await expect(reason(verifier.verify(`${noKid}.${p}.${s}`, { clientId: 'clinic-1' }))).resolves.toBe('bad-signature');
    const sig = Buffer.from(s, 'base64url');
    for (const bit of [0, 200, 511]) {
      const bad = Buffer.from(sig);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      await expect(reason(verifier.verify(`${h}.${p}.${bad.toString('base64url')}`, { clientId: 'clinic-1' }))).resolves.toBe('bad-signature');
    }
    expect(verifier.signaturesChecked).toBe(6);
    await expect(reason(verifier.verify(token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
    expect(verifier.signaturesChecked).toBe(6);
  });

  test('the other checks still apply: wrong subject, expiry, and a key the ring has dropped', async () => {
    const now = { t: T0 };
    const { issuer, verifier } = sameRing(now);
    const a = await issuer.issue('clinic-1');
    await expect(reason(verifier.verify(a.token, { clientId: 'clinic-2' }))).resolves.toBe('wrong-subject');
    const b = await issuer.issue('clinic-1', { ttlMs: 60_000 });
    now.t = T0 + 60_000;
    await expect(reason(verifier.verify(b.token, { clientId: 'clinic-1' }))).resolves.toBe('expired');
    // Rotated away and dropped once every token it signed has expired: refused although remembered.
    now.t = T0;
    const c = await issuer.issue('clinic-1', { ttlMs: 60_000 });
    issuer.rotate(new Uint8Array(32).fill(7), 2);
    now.t = T0 + 16 * 60_000;
    await expect(reason(verifier.verify(c.token, { clientId: 'clinic-1' }))).resolves.toBe('bad-signature');
  });

  test('expired tokens are forgotten as new ones are signed, and at most 32768 are remembered', async () => {
    const now = { t: T0 };
    const { issuer, verifier } = sameRing(now);
    await Promise.all(Array.from({ length: 5 }, () => issuer.issue('clinic-1', { ttlMs: 60_000 })));
    expect(issuer.keyring.signedHereCount).toBe(5);
    now.t = T0 + 60_000;
    await issuer.issue('clinic-1');
    expect(issuer.keyring.signedHereCount).toBe(1);
    const batch = 4096;
    for (let done = 1; done < 32_768 + 10; done += batch) await Promise.all(Array.from({ length: batch }, () => issuer.issue('clinic-1')));
    expect(issuer.keyring.signedHereCount).toBe(32_768);
    // One signed past the bound is not remembered: it is verified by its signature, and passes.
    const late = await issuer.issue('clinic-1');
    await expect(reason(verifier.verify(late.token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
    expect(verifier.signaturesChecked).toBe(1);
  });
});
