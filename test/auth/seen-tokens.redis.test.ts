/**
 * The token ledger on a real Redis, as front ends of one deployment share it: a token accepted
 * by front end A is `replayed` on front end B; of many concurrent uses of one token across both,
 * exactly one is accepted; revocations made on A are refused on B; every key expires a minute
 * after its token does; a ledger opened later (a restarted front end) still refuses a spent token.
 */
import { describe, expect, test } from '@jest/globals';
import { connectRedis } from '../../coordinator/queue/redis.js';
import { RedisTokenLedger } from '../../coordinator/auth/seen-tokens.js';
import { AuthError, TokenIssuer, TokenVerifier, type AuthRefusal } from '../../coordinator/auth/tokens.js';
import { TEST_REDIS_URL, useTestRedis } from '../support/redis.js';

const r = useTestRedis();

async function reason(p: Promise<unknown>): Promise<AuthRefusal | string> {
  try {
    await p;
    return 'accepted';
  } catch (e) {
    return e instanceof AuthError ? e.reason : `unexpected: ${String(e)}`;
  }
}

/** Two front ends: one issuer key, each its own verifier and ledger object on the shared prefix. */
function frontEnds() {
  const issuer = TokenIssuer.create();
  const make = () => new TokenVerifier({ publicKey: issuer.publicKey, keyring: issuer.keyring, ledger: new RedisTokenLedger(r.redis, { prefix: r.prefix }) });
  return { issuer, a: make(), b: make() };
}

describe('the token ledger on Redis, shared by front ends', () => {
  test('a token used on front end A is refused as replayed on front end B', async () => {
    const { issuer, a, b } = frontEnds();
    const t = await issuer.issue('clinic-1');
    await expect(reason(a.verify(t.token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
    await expect(reason(b.verify(t.token, { clientId: 'clinic-1' }))).resolves.toBe('replayed');
    await expect(reason(a.verify(t.token, { clientId: 'clinic-1' }))).resolves.toBe('replayed');
    // Its key lives until the token's exp plus the one-minute clock allowance.
    const before = Date.now();
    const pttl = await r.redis.pttl(`${r.prefix}:token:seen:${t.claims.jti}`);
    const after = Date.now();
    const expiresAt = (t.claims.exp + 60) * 1000;
    expect(pttl).toBeLessThanOrEqual(expiresAt - before + 5);
    expect(pttl).toBeGreaterThanOrEqual(expiresAt - after - 5);
  });

  test('of 40 concurrent uses of one token on two front ends, exactly one is accepted', async () => {
    const { issuer, a, b } = frontEnds();
    const t = await issuer.issue('clinic-1');
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => reason((i % 2 ? a : b).verify(t.token, { clientId: 'clinic-1' }))));
    expect(results.filter((x) => x === 'accepted')).toHaveLength(1);
    expect(results.filter((x) => x === 'replayed')).toHaveLength(39);
  });

  test("revocations made on A (one jti, a client's tokens) are refused on B; other tokens pass", async () => {
    const { issuer, a, b } = frontEnds();
    const one = await issuer.issue('clinic-1');
    const sibling = await issuer.issue('clinic-1');
    const other = await issuer.issue('clinic-2');
    await a.revokeToken(one.claims.jti, one.claims.exp);
    await expect(reason(b.verify(one.token, { clientId: 'clinic-1' }))).resolves.toBe('revoked');
    await expect(reason(b.verify(sibling.token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
    const early = await issuer.issue('clinic-2');
    await a.revokeClientTokens('clinic-2');
    await expect(reason(b.verify(other.token, { clientId: 'clinic-2' }))).resolves.toBe('revoked');
    await expect(reason(b.verify(early.token, { clientId: 'clinic-2' }))).resolves.toBe('revoked');
    // A refused token left no trace: its jti was never recorded as seen.
    expect(await r.redis.exists(`${r.prefix}:token:seen:${early.claims.jti}`)).toBe(0);
    // A second, earlier revocation never shortens the first (the later of each is kept).
    const key = `${r.prefix}:token:revoked-client:clinic-2`;
    const [upTo, pxat] = (await r.redis.get(key))!.split(' ').map(Number) as [number, number];
    await new RedisTokenLedger(r.redis, { prefix: r.prefix }).revokeClient('clinic-2', upTo - 100, upTo);
    expect(await r.redis.get(key)).toBe(`${upTo} ${pxat}`);
    expect(await r.redis.pttl(key)).toBeGreaterThan(14 * 60_000);
  });

  test('a front end that starts later (a new connection) still refuses a spent token', async () => {
    const { issuer, a } = frontEnds();
    const t = await issuer.issue('clinic-1');
    await a.verify(t.token, { clientId: 'clinic-1' });
    const redis = await connectRedis(TEST_REDIS_URL);
    try {
      const later = new TokenVerifier({ publicKey: issuer.publicKey, keyring: issuer.keyring, ledger: new RedisTokenLedger(redis, { prefix: r.prefix }) });
      await expect(reason(later.verify(t.token, { clientId: 'clinic-1' }))).resolves.toBe('replayed');
    } finally {
      await redis.quit();
    }
  });
});
