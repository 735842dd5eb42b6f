/**
 * Login tokens and sessions of the coordinator's web dashboard (coordinator/service/dashboard.ts).
 *
 * A login token (`aegis dashboard token`, Admin.IssueDashboardToken) is 32 random bytes,
 * base64url, single use, valid `ttlMs` (default 15 min, at most 24 h). Only its SHA-256 is kept;
 * a redemption hashes the presented token and compares it in constant time with every stored
 * hash (no early exit, so the time taken does not depend on which one matches). A redeemed token
 * is gone; it becomes a session: another 32 random bytes (the cookie value), valid 12 h, also
 * kept only as SHA-256. Expired tokens and sessions are pruned on every call.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AegisError, ErrorCode } from '../../shared/errors.js';

export const DASHBOARD_TOKEN_DEFAULT_TTL_MS = 15 * 60_000;
export const DASHBOARD_TOKEN_MAX_TTL_MS = 24 * 3_600_000;
export const DASHBOARD_SESSION_TTL_MS = 12 * 3_600_000;
/** At most this many live tokens and sessions each (oldest dropped first). */
const MAX_ENTRIES = 1024;

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();
/** 32 random bytes, base64url: 43 characters. */
const WELL_FORMED = /^[A-Za-z0-9_-]{43}$/;

interface Entry {
  hash: Buffer;
  expiresAt: number;
}

/** Finds `value`'s entry comparing every stored hash in constant time; undefined if none. */
function find(entries: Entry[], value: string): Entry | undefined {
  const h = digest(value);
  let found: Entry | undefined;
  for (const e of entries) if (timingSafeEqual(e.hash, h) && found === undefined) found = e;
  return found;
}

export class DashboardTokens {
  private tokens: Entry[] = [];
  private sessions: Entry[] = [];
  private readonly clock: () => number;

  constructor(opts: { clock?: () => number } = {}) {
    this.clock = opts.clock ?? Date.now;
  }

  /** A new single-use login token valid `ttlMs` (default 15 min; 1 s .. 24 h). */
  issue(ttlMs: number = DASHBOARD_TOKEN_DEFAULT_TTL_MS): { token: string; expiresAt: number } {
    if (!Number.isFinite(ttlMs) || ttlMs < 1000 || ttlMs > DASHBOARD_TOKEN_MAX_TTL_MS) {
      throw new AegisError(ErrorCode.InvalidArgument, 'a dashboard token lives between 1 s and 24 h');
    }
    this.prune();
    const token = randomBytes(32).toString('base64url');
    const expiresAt = this.clock() + Math.floor(ttlMs);
    this.tokens.push({ hash: digest(token), expiresAt });
    if (this.tokens.length > MAX_ENTRIES) this.tokens.shift();
    return { token, expiresAt };
  }

  /**
   * Trades a valid, unused, unexpired token for a new session; undefined otherwise (the token
   * cannot be used again either way once it matched).
   */
  redeem(token: string): { session: string; expiresAt: number } | undefined {
    this.prune();
    if (typeof token !== 'string' || !WELL_FORMED.test(token)) return undefined;
    const e = find(this.tokens, token);
    if (!e) return undefined;
    this.tokens = this.tokens.filter((x) => x !== e);
    const session = randomBytes(32).toString('base64url');
    const expiresAt = this.clock() + DASHBOARD_SESSION_TTL_MS;
    this.sessions.push({ hash: digest(session), expiresAt });
    if (this.sessions.length > MAX_ENTRIES) this.sessions.shift();
    return { session, expiresAt };
  }

  /** Whether `session` is a live session id. */
  validSession(session: string | undefined): boolean {
    this.prune();
    if (typeof session !== 'string' || !WELL_FORMED.test(session)) return false;
    return find(this.sessions, session) !== undefined;
  }

  /** Live tokens and sessions (tests). */
  get size(): { tokens: number; sessions: number } {
    this.prune();
    return { tokens: this.tokens.length, sessions: this.sessions.length };
  }

  private prune(): void {
    const now = this.clock();
    this.tokens = this.tokens.filter((e) => e.expiresAt > now);
    this.sessions = this.sessions.filter((e) => e.expiresAt > now);
  }
}
