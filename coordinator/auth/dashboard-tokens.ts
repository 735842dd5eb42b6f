/**
 * Login tokens and sessions of the coordinator's web dashboard (coordinator/dashboard/server.ts).
 *
 * A login token (`aegis dashboard token`, Admin.IssueDashboardToken) is 32 random bytes,
 * base64url, single use, valid `ttlMs` (default 15 min, at most 24 h). Only its SHA-256 is kept;
 * a redemption hashes the presented token and compares it in constant time with every stored
 * hash (no early exit, so the time taken does not depend on which one matches). A redeemed token
 * is gone; it becomes a session: another 32 random bytes (the cookie value), also kept only as
 * SHA-256. A session ends at the first of: `idleMs` without a request that uses it (default
 * 15 min), its absolute lifetime `lifetimeMs` from the login (default 8 h), or a logout.
 * Expired tokens and sessions are pruned on every call.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AegisError, ErrorCode } from '../../shared/errors.js';

export const DASHBOARD_TOKEN_DEFAULT_TTL_MS = 15 * 60_000;
export const DASHBOARD_TOKEN_MAX_TTL_MS = 24 * 3_600_000;
/** A session ends after this long without a request (default; `--dashboard-idle-timeout`). */
export const DASHBOARD_IDLE_TIMEOUT_MS = 15 * 60_000;
/** A session ends this long after its login whatever it does (default; `--dashboard-session-lifetime`). */
export const DASHBOARD_SESSION_LIFETIME_MS = 8 * 3_600_000;
/** Bounds of both settings. */
export const DASHBOARD_SESSION_MIN_MS = 60_000;
export const DASHBOARD_SESSION_MAX_MS = 24 * 3_600_000;
/** At most this many live tokens and sessions each (oldest dropped first). */
const MAX_ENTRIES = 1024;

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();
/** 32 random bytes, base64url: 43 characters. */
const WELL_FORMED = /^[A-Za-z0-9_-]{43}$/;

interface Entry {
  hash: Buffer;
  /** Absolute end (token: its TTL; session: login + lifetime). */
  expiresAt: number;
  /** Sessions: the last request that used it. */
  lastUsed: number;
}

/** What a live session's holder may know of it. */
export interface DashboardSessionInfo {
  /** When it ends whatever happens (ms since epoch). */
  expiresAt: number;
  /** When it ends unless used before (ms since epoch). */
  idleExpiresAt: number;
  idleTimeoutMs: number;
}

/** Finds `value`'s entry comparing every stored hash in constant time; undefined if none. */
function find(entries: Entry[], value: string): Entry | undefined {
  const h = digest(value);
  let found: Entry | undefined;
  for (const e of entries) if (timingSafeEqual(e.hash, h) && found === undefined) found = e;
  return found;
}

function checkSpan(what: string, ms: number): number {
  if (!Number.isFinite(ms) || ms < DASHBOARD_SESSION_MIN_MS || ms > DASHBOARD_SESSION_MAX_MS) {
    throw new AegisError(ErrorCode.InvalidArgument, `the dashboard's ${what} must be between 1 min and 24 h`);
  }
  return Math.floor(ms);
}

export class DashboardTokens {
  private tokens: Entry[] = [];
  private sessions: Entry[] = [];
  private readonly clock: () => number;
  readonly idleMs: number;
  readonly lifetimeMs: number;

  constructor(opts: { clock?: () => number; idleMs?: number; lifetimeMs?: number } = {}) {
    this.clock = opts.clock ?? Date.now;
    this.idleMs = checkSpan('idle timeout', opts.idleMs ?? DASHBOARD_IDLE_TIMEOUT_MS);
    this.lifetimeMs = checkSpan('session lifetime', opts.lifetimeMs ?? DASHBOARD_SESSION_LIFETIME_MS);
  }

  /** A new single-use login token valid `ttlMs` (default 15 min; 1 s .. 24 h). */
  issue(ttlMs: number = DASHBOARD_TOKEN_DEFAULT_TTL_MS): { token: string; expiresAt: number } {
    if (!Number.isFinite(ttlMs) || ttlMs < 1000 || ttlMs > DASHBOARD_TOKEN_MAX_TTL_MS) {
      throw new AegisError(ErrorCode.InvalidArgument, 'a dashboard token lives between 1 s and 24 h');
    }
    this.prune();
    const token = randomBytes(32).toString('base64url');
    const expiresAt = this.clock() + Math.floor(ttlMs);
    this.tokens.push({ hash: digest(token), expiresAt, lastUsed: 0 });
    if (this.tokens.length > MAX_ENTRIES) this.tokens.shift();
    return { token, expiresAt };
  }

  /**
   * Trades a valid, unused, unexpired token for a new session; undefined otherwise (the token
   * cannot be used again either way once it matched).
   */
  redeem(token: string): ({ session: string } & DashboardSessionInfo) | undefined {
    this.prune();
    if (typeof token !== 'string' || !WELL_FORMED.test(token)) return undefined;
    const e = find(this.tokens, token);
    if (!e) return undefined;
    this.tokens = this.tokens.filter((x) => x !== e);
    const session = randomBytes(32).toString('base64url');
    const now = this.clock();
    const entry: Entry = { hash: digest(session), expiresAt: now + this.lifetimeMs, lastUsed: now };
    this.sessions.push(entry);
    if (this.sessions.length > MAX_ENTRIES) this.sessions.shift();
    return { session, ...this.info(entry) };
  }

  /**
   * A request made with `session`: if it is live, it counts as activity (the idle timeout starts
   * again) and its info is returned; undefined otherwise.
   */
  use(session: string | undefined): DashboardSessionInfo | undefined {
    const e = this.lookup(session);
    if (!e) return undefined;
    e.lastUsed = this.clock();
    return this.info(e);
  }

  /** Whether `session` is live, without counting as activity (open event streams check this). */
  validSession(session: string | undefined): boolean {
    return this.lookup(session) !== undefined;
  }

  /** Logout: ends `session` now; whether it was live. */
  end(session: string | undefined): boolean {
    const e = this.lookup(session);
    if (!e) return false;
    this.sessions = this.sessions.filter((x) => x !== e);
    return true;
  }

  /** Live tokens and sessions (tests). */
  get size(): { tokens: number; sessions: number } {
    this.prune();
    return { tokens: this.tokens.length, sessions: this.sessions.length };
  }

  private lookup(session: string | undefined): Entry | undefined {
    this.prune();
    if (typeof session !== 'string' || !WELL_FORMED.test(session)) return undefined;
    return find(this.sessions, session);
  }

  private info(e: Entry): DashboardSessionInfo {
    return { expiresAt: e.expiresAt, idleExpiresAt: Math.min(e.expiresAt, e.lastUsed + this.idleMs), idleTimeoutMs: this.idleMs };
  }

  private prune(): void {
    const now = this.clock();
    this.tokens = this.tokens.filter((e) => e.expiresAt > now);
    this.sessions = this.sessions.filter((e) => e.expiresAt > now && e.lastUsed + this.idleMs > now);
  }
}
