/**
 * The file-backed token ledger (DATA_DIR/tokens.log): a token spent before a restart is still
 * `replayed` after it, revocations last across restarts, entries of expired tokens are dropped
 * (in memory and, at start, from the file), a torn last line is skipped, and a write that fails
 * refuses the call without remembering anything. Real files; each "restart" is a new ledger and a
 * new verifier over the same file.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalTokenLedger } from '../../coordinator/auth/seen-tokens.js';
import { AuthError, TokenIssuer, TokenVerifier, type AuthRefusal } from '../../coordinator/auth/tokens.js';
import { isAegisError } from '../../shared/errors.js';

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0);
const root = mkdtempSync(join(tmpdir(), 'aegis-seen-tokens-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
const freshPath = (): string => {
  const dir = join(root, `d${n++}`);
  mkdirSync(dir);
  return join(dir, 'tokens.log');
};

async function reason(p: Promise<unknown>): Promise<AuthRefusal | string> {
  try {
    await p;
    return 'accepted';
  } catch (e) {
    return e instanceof AuthError ? e.reason : isAegisError(e) ? `error:${e.code}` : `unexpected: ${String(e)}`;
  }
}

/** A verifier over the ledger in `path`, as a coordinator start would open it. */
async function start(path: string, issuer: TokenIssuer, now: { t: number }) {
  const ledger = await LocalTokenLedger.open(path, Math.floor(now.t / 1000));
  return { ledger, verifier: new TokenVerifier({ publicKey: issuer.publicKey, clock: () => now.t, ledger }) };
}

const lines = (path: string): string[] => readFileSync(path, 'utf8').split('\n').filter((l) => l.length > 0);

describe('the token ledger in a file', () => {
  test('a token spent before a restart is refused as replayed after it; an unused one still passes once', async () => {
    const path = freshPath();
    const now = { t: T0 };
    const issuer = TokenIssuer.create({ clock: () => now.t });
    const spent = await issuer.issue('clinic-1');
    const unused = await issuer.issue('clinic-1');
    const first = await start(path, issuer, now);
    await expect(reason(first.verifier.verify(spent.token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
    // On disk before the call went on: one line naming the jti and its exp.
    expect(lines(path)).toEqual([`seen ${spent.claims.jti} ${spent.claims.exp}`]);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    // No close: a killed process leaves the file as it is.
    now.t += 30_000;
    const second = await start(path, issuer, now);
    await expect(reason(second.verifier.verify(spent.token, { clientId: 'clinic-1' }))).resolves.toBe('replayed');
    await expect(reason(second.verifier.verify(unused.token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
    await expect(reason(second.verifier.verify(unused.token, { clientId: 'clinic-1' }))).resolves.toBe('replayed');
    await first.ledger.close();
    await second.ledger.close();
  });

  test("revocations of one token and of a client's tokens last across a restart", async () => {
    const path = freshPath();
    const now = { t: T0 };
    const issuer = TokenIssuer.create({ clock: () => now.t });
    const one = await issuer.issue('clinic-1');
    const keep = await issuer.issue('clinic-1');
    const other = await issuer.issue('clinic-2');
    const first = await start(path, issuer, now);
    await first.verifier.revokeToken(one.claims.jti, one.claims.exp);
    await first.ledger.close();
    now.t += 1000;
    const second = await start(path, issuer, now);
    await expect(reason(second.verifier.verify(one.token, { clientId: 'clinic-1' }))).resolves.toBe('revoked');
    await expect(reason(second.verifier.verify(keep.token, { clientId: 'clinic-1' }))).resolves.toBe('accepted');
    const before = await issuer.issue('clinic-2');
    await second.verifier.revokeClientTokens('clinic-2');
    await second.ledger.close();
    now.t += 1000;
    const third = await start(path, issuer, now);
    await expect(reason(third.verifier.verify(other.token, { clientId: 'clinic-2' }))).resolves.toBe('revoked');
    await expect(reason(third.verifier.verify(before.token, { clientId: 'clinic-2' }))).resolves.toBe('revoked');
    await expect(reason(third.verifier.verify((await issuer.issue('clinic-2')).token, { clientId: 'clinic-2' }))).resolves.toBe('accepted');
    await third.ledger.close();
  });

  test('entries of expired tokens are forgotten in memory and dropped from the file at the next start', async () => {
    const path = freshPath();
    const now = { t: T0 };
    const issuer = TokenIssuer.create({ clock: () => now.t });
    const { ledger, verifier } = await start(path, issuer, now);
    for (let i = 0; i < 20; i++) await verifier.verify((await issuer.issue(`c-${i}`, { ttlMs: 60_000 })).token, { clientId: `c-${i}` });
    await verifier.revokeToken((await issuer.issue('c-x', { ttlMs: 60_000 })).claims.jti, Math.floor(now.t / 1000) + 60);
    const long = await issuer.issue('c-long', { ttlMs: 15 * 60_000 });
    await verifier.verify(long.token, { clientId: 'c-long' });
    expect(ledger.size).toBe(21);
    expect(lines(path)).toHaveLength(22);
    // Two minutes on: the one-minute tokens are gone from memory at the next call...
    now.t += 120_000;
    await verifier.verify((await issuer.issue('c-new')).token, { clientId: 'c-new' });
    expect(ledger.size).toBe(2);
    await ledger.close();
    // ...and from the file at the next start; what still matters is kept.
    const again = await start(path, issuer, now);
    expect(lines(path).sort()).toEqual([expect.stringMatching(/^seen /), expect.stringMatching(/^seen /)]);
    expect(again.ledger.size).toBe(2);
    await expect(reason(again.verifier.verify(long.token, { clientId: 'c-long' }))).resolves.toBe('replayed');
    await again.ledger.close();
  });

  test('a long-running ledger rewrites its file without expired lines once it holds many more lines than live entries', async () => {
    const path = freshPath();
    const now = { t: T0 };
    const issuer = TokenIssuer.create({ clock: () => now.t });
    const ledger = await LocalTokenLedger.open(path, Math.floor(now.t / 1000), { compactSlackLines: 10 });
    const verifier = new TokenVerifier({ publicKey: issuer.publicKey, clock: () => now.t, ledger });
    const spent: string[] = [];
    for (let i = 0; i < 30; i++) {
      const t = await issuer.issue('clinic-1', { ttlMs: 60_000 });
      await verifier.verify(t.token, { clientId: 'clinic-1' });
      spent.push(t.token);
      now.t += 11_000; // each token lives about 5 of these steps
    }
    // Never more than the slack above what is live, and what is live is still refused.
    expect(lines(path).length).toBeLessThanOrEqual(ledger.size + 10);
    expect(ledger.size).toBeLessThanOrEqual(6);
    await expect(reason(verifier.verify(spent[29]!, { clientId: 'clinic-1' }))).resolves.toBe('replayed');
    await ledger.close();
    const again = await start(path, issuer, now);
    await expect(reason(again.verifier.verify(spent[29]!, { clientId: 'clinic-1' }))).resolves.toBe('replayed');
    await again.ledger.close();
  });

  test('a torn last line (a machine crash mid-write) is skipped; every whole line is read', async () => {
    const path = freshPath();
    const now = { t: T0 };
    const issuer = TokenIssuer.create({ clock: () => now.t });
    const a = await issuer.issue('clinic-1');
    const first = await start(path, issuer, now);
    await first.verifier.verify(a.token, { clientId: 'clinic-1' });
    await first.ledger.close();
    appendFileSync(path, 'seen AAAAAAAA');
    const second = await LocalTokenLedger.open(path, Math.floor(now.t / 1000));
    expect(second.skipped).toBe(1);
    const verifier = new TokenVerifier({ publicKey: issuer.publicKey, clock: () => now.t, ledger: second });
    await expect(reason(verifier.verify(a.token, { clientId: 'clinic-1' }))).resolves.toBe('replayed');
    expect(lines(path)).toEqual([`seen ${a.claims.jti} ${a.claims.exp}`]);
    await second.close();
  });

  test('a ledger that cannot write refuses the call (unavailable) and remembers nothing', async () => {
    const path = freshPath();
    const now = { t: T0 };
    const issuer = TokenIssuer.create({ clock: () => now.t });
    const { ledger, verifier } = await start(path, issuer, now);
    const a = await issuer.issue('clinic-1');
    rmSync(join(path, '..'), { recursive: true, force: true });
    await expect(reason(verifier.verify(a.token, { clientId: 'clinic-1' }))).resolves.toBe('error:unavailable');
    expect(ledger.size).toBe(0);
    await ledger.close();
  });
});
