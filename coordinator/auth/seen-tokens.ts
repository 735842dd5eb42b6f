/**
 * What the round-token verifier (tokens.ts) remembers between calls, and across restarts: the
 * jti of every token it accepted, until that token expires (a second use is `replayed`), and the
 * tokens an operator revoked (`revoked`): one jti, or every token of a client issued up to a
 * given second. Every entry carries the time after which it no longer matters (a token past its
 * `exp` is refused as `expired` anyway), and entries past it are dropped: the ledger stays
 * bounded by the tokens issued in the longest token lifetime (15 minutes).
 *
 * `admit` is the one call that changes state, and only for a token it accepts: it checks the
 * token's revocations, then records its jti, as one step. A refused token leaves the ledger as
 * it was.
 *
 * Three stores:
 * - `LocalTokenLedger.memory()`: this process only (tests, the simulator);
 * - `LocalTokenLedger.open(DATA_DIR/tokens.log)` (the embedded coordinator): the same, with each
 *   change appended to a file before the call it admits goes on (see `LocalTokenLedger` for what
 *   a crash can and cannot lose), read back and compacted at start;
 * - `RedisTokenLedger` (`coordinator start --redis`): keys under the deployment's prefix, shared
 *   by every front end; `admit` is one Lua script, so two front ends offered the same token
 *   cannot both accept it.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync, constants as fsc } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import type { Redis } from 'ioredis';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { withFileLock } from '../../shared/fs-lock.js';
import { CLIENT_ID_PATTERN } from './ca.js';

/** The claims of a token the ledger decides on (NumericDate seconds). */
export interface TokenUse {
  jti: string;
  sub: string;
  iat: number;
  exp: number;
}

export type TokenAdmission = 'accepted' | 'revoked' | 'replayed';

export interface TokenLedger {
  /**
   * Refuses a revoked token (its jti, or its client's tokens issued at or before `iat`), then a
   * jti seen before; otherwise records the jti until `exp` and accepts. `nowSec` drops entries
   * that no longer matter.
   */
  admit(t: TokenUse, nowSec: number): Promise<TokenAdmission>;
  /** Refuses the token `jti` from now on, until `untilSec` (when it has expired anyway). */
  revokeJti(jti: string, untilSec: number): Promise<void>;
  /** Refuses every token of `clientId` issued at or before `issuedUpToSec`, until `untilSec`. */
  revokeClient(clientId: string, issuedUpToSec: number, untilSec: number): Promise<void>;
  /** Local stores: jti remembered now (Redis: not counted). */
  readonly size?: number;
  close(): Promise<void>;
}

export const JTI_PATTERN = /^[A-Za-z0-9_-]{22}$/;
const isSeconds = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function checkJti(jti: unknown): string {
  if (typeof jti !== 'string' || !JTI_PATTERN.test(jti)) fail(ErrorCode.InvalidArgument, 'a jti is 22 base64url characters');
  return jti;
}

function checkClient(clientId: unknown): string {
  if (typeof clientId !== 'string' || !CLIENT_ID_PATTERN.test(clientId)) fail(ErrorCode.InvalidArgument, 'client id must be 1..128 characters of [A-Za-z0-9._:@-]');
  return clientId;
}

/** Expired entries are looked for at most this often (seconds of the verifier's clock). */
const SWEEP_EVERY_S = 10;
/** The file is rewritten without expired lines once it holds this many more lines than live entries. */
const COMPACT_SLACK_LINES = 20_000;

/** The ledger file in a coordinator data dir. */
export const TOKEN_LEDGER_FILE = 'tokens.log';

/**
 * A ledger in this process's memory, optionally backed by an append-only file.
 *
 * File format, one change per line: `seen JTI EXP`, `revoked JTI UNTIL`,
 * `revoked-client CLIENT_ID ISSUED_UP_TO UNTIL` (seconds since the epoch). `admit` appends the
 * `seen` line with one write(2) on an O_APPEND descriptor before it accepts the token; if the
 * write fails the call is refused (`unavailable`) and nothing is remembered.
 *
 * What a crash can and cannot lose: a line is in the kernel's page cache once write(2) returns,
 * so a killed process (kill -9, a crash, an OOM kill) loses nothing it accepted — the next start
 * reads every line. Only a crash of the machine itself (power loss, kernel panic) can lose the
 * lines of the last few seconds that the kernel had not yet written to disk (no fsync per call:
 * it would cost a disk flush per round call); the tokens those lines named could then be used
 * once more until they expire (at most 15 minutes). A torn last line from such a crash is
 * skipped at start. Revocations (`revokeJti`, `revokeClient`) are rare and are fsynced.
 *
 * At start (`open`) the file is read under a lock file and rewritten (temp file, fsync, rename)
 * without the entries that no longer matter; a long-running process rewrites it the same way
 * once it holds many more lines than live entries. One coordinator process per data dir uses it
 * (front ends that share rounds run on Redis and use `RedisTokenLedger`).
 */
export class LocalTokenLedger implements TokenLedger {
  /** jti -> exp: tokens accepted. */
  private readonly seen = new Map<string, number>();
  /** jti -> until: tokens revoked one by one. */
  private readonly revokedJti = new Map<string, number>();
  /** client id -> tokens issued at or before `upTo` are revoked, until `until`. */
  private readonly revokedClients = new Map<string, { upTo: number; until: number }>();
  private nextSweep = 0;
  private readonly path: string | undefined;
  private readonly compactSlack: number;
  private fd: number | undefined;
  private lines = 0;

  private constructor(path?: string, compactSlack = COMPACT_SLACK_LINES) {
    this.path = path;
    this.compactSlack = compactSlack;
  }

  /** A ledger in memory only. */
  static memory(): LocalTokenLedger {
    return new LocalTokenLedger();
  }

  /**
   * The ledger kept in `path` (created when missing): its live entries read back, the file
   * compacted. Malformed lines (a torn last line) are skipped and counted in `skipped`.
   * `compactSlackLines`: how many more lines than live entries the file may hold before it is
   * rewritten (default 20 000).
   */
  static async open(path: string, nowSec: number, opts: { compactSlackLines?: number } = {}): Promise<LocalTokenLedger & { skipped: number }> {
    const ledger = new LocalTokenLedger(path, opts.compactSlackLines);
    let skipped = 0;
    await withFileLock(`${path}.lock`, 'another coordinator on this data dir', async () => {
      let text = '';
      try {
        text = readFileSync(path, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new AegisError(ErrorCode.Unavailable, `cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? 'io'})`);
      }
      for (const line of text.split('\n')) {
        if (line.length === 0) continue;
        if (!ledger.apply(line)) skipped++;
      }
      ledger.sweep(nowSec, true);
      ledger.compact();
    });
    return Object.assign(ledger, { skipped });
  }

  get size(): number {
    return this.seen.size;
  }

  async admit(t: TokenUse, nowSec: number): Promise<TokenAdmission> {
    this.sweep(nowSec, false);
    if (this.isRevoked(t)) return 'revoked';
    if (this.seen.has(t.jti)) return 'replayed';
    this.append(`seen ${t.jti} ${t.exp}\n`, false);
    this.seen.set(t.jti, t.exp);
    this.maybeCompact();
    return 'accepted';
  }

  async revokeJti(jti: string, untilSec: number): Promise<void> {
    checkJti(jti);
    if (!isSeconds(untilSec)) fail(ErrorCode.InvalidArgument, 'malformed revocation time');
    if ((this.revokedJti.get(jti) ?? -1) >= untilSec) return;
    this.append(`revoked ${jti} ${untilSec}\n`, true);
    this.revokedJti.set(jti, untilSec);
  }

  async revokeClient(clientId: string, issuedUpToSec: number, untilSec: number): Promise<void> {
    checkClient(clientId);
    if (!isSeconds(issuedUpToSec) || !isSeconds(untilSec)) fail(ErrorCode.InvalidArgument, 'malformed revocation time');
    const known = this.revokedClients.get(clientId);
    if (known && known.upTo >= issuedUpToSec && known.until >= untilSec) return;
    this.append(`revoked-client ${clientId} ${issuedUpToSec} ${untilSec}\n`, true);
    this.mergeClient(clientId, issuedUpToSec, untilSec);
  }

  async close(): Promise<void> {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private isRevoked(t: TokenUse): boolean {
    if (this.revokedJti.has(t.jti)) return true;
    const c = this.revokedClients.get(t.sub);
    return c !== undefined && t.iat <= c.upTo;
  }

  private mergeClient(clientId: string, upTo: number, until: number): void {
    const known = this.revokedClients.get(clientId);
    this.revokedClients.set(clientId, { upTo: Math.max(upTo, known?.upTo ?? 0), until: Math.max(until, known?.until ?? 0) });
  }

  /** One line of the file into memory; false for a line that is not well formed. */
  private apply(line: string): boolean {
    const f = line.split(' ');
    const n = f.slice(2).map(Number);
    if (!n.every(isSeconds)) return false;
    if (f[0] === 'seen' && f.length === 3 && JTI_PATTERN.test(f[1]!)) this.seen.set(f[1]!, n[0]!);
    else if (f[0] === 'revoked' && f.length === 3 && JTI_PATTERN.test(f[1]!)) this.revokedJti.set(f[1]!, Math.max(n[0]!, this.revokedJti.get(f[1]!) ?? 0));
    else if (f[0] === 'revoked-client' && f.length === 4 && CLIENT_ID_PATTERN.test(f[1]!)) this.mergeClient(f[1]!, n[0]!, n[1]!);
    else return false;
    return true;
  }

  /** Drops entries that no longer matter (at most every 10 s unless `force`). */
  private sweep(nowSec: number, force: boolean): void {
    if (!force && nowSec < this.nextSweep) return;
    this.nextSweep = nowSec + SWEEP_EVERY_S;
    for (const [jti, exp] of this.seen) if (exp <= nowSec) this.seen.delete(jti);
    for (const [jti, until] of this.revokedJti) if (until <= nowSec) this.revokedJti.delete(jti);
    for (const [id, c] of this.revokedClients) if (c.until <= nowSec) this.revokedClients.delete(id);
  }

  private append(line: string, durable: boolean): void {
    if (this.path === undefined) return;
    try {
      this.fd ??= openSync(this.path, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT, 0o600);
      writeSync(this.fd, line);
      if (durable) fsyncSync(this.fd);
    } catch (e) {
      throw new AegisError(ErrorCode.Unavailable, `cannot record the round token in ${basename(this.path)} (${(e as NodeJS.ErrnoException).code ?? 'io'}); the call is refused`);
    }
    this.lines++;
  }

  private maybeCompact(): void {
    if (this.path === undefined || this.lines < this.live() + this.compactSlack) return;
    try {
      this.compact();
    } catch {
      // The file stays as it is (longer than needed, still complete); tried again later.
      this.lines = this.live();
    }
  }

  private live(): number {
    return this.seen.size + this.revokedJti.size + this.revokedClients.size;
  }

  /** Rewrites the file with the live entries only: temp file, fsync, rename, fsync the folder. */
  private compact(): void {
    const path = this.path;
    if (path === undefined) return;
    const out: string[] = [];
    for (const [jti, exp] of this.seen) out.push(`seen ${jti} ${exp}\n`);
    for (const [jti, until] of this.revokedJti) out.push(`revoked ${jti} ${until}\n`);
    for (const [id, c] of this.revokedClients) out.push(`revoked-client ${id} ${c.upTo} ${c.until}\n`);
    const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
    const fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      writeSync(fd, out.join(''));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    try {
      const dir = openSync(dirname(path), fsc.O_RDONLY);
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    } catch {
      // a folder that cannot be fsynced (some file systems): the rename stands
    }
    // Appends go to the new file from now on.
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.lines = out.length;
  }
}

/**
 * Clock allowance on Redis: keys live until the token's exp plus a minute, so front ends whose
 * clocks differ from Redis's by less than that never forget a jti a slower front end still
 * takes as unexpired.
 */
const REDIS_CLOCK_ALLOWANCE_S = 60;

// KEYS: revoked jti, revoked client, seen jti. ARGV: iat (s), PXAT of the seen key (ms).
const ADMIT = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 'revoked' end
local client = redis.call('GET', KEYS[2])
if client and tonumber(ARGV[1]) <= tonumber(string.match(client, '^%d+')) then return 'revoked' end
if redis.call('SET', KEYS[3], '1', 'NX', 'PXAT', ARGV[2]) then return 'accepted' end
return 'replayed'
`;

// KEYS: revoked client (value "ISSUED_UP_TO PXAT"). ARGV: issued up to (s), PXAT (ms). Two
// revocations merge to the later of each (PXAT kept in the value: PEXPIRETIME needs Redis 7).
const REVOKE_CLIENT = `
local upTo = tonumber(ARGV[1])
local pxat = tonumber(ARGV[2])
local old = redis.call('GET', KEYS[1])
if old then
  local ou, op = string.match(old, '^(%d+) (%d+)$')
  if ou and tonumber(ou) > upTo then upTo = tonumber(ou) end
  if op and tonumber(op) > pxat then pxat = tonumber(op) end
end
redis.call('SET', KEYS[1], string.format('%d %d', upTo, pxat), 'PXAT', string.format('%d', pxat))
return 1
`;

type AdmitCommand = (revoked: string, client: string, seen: string, iat: number, pxat: number) => Promise<TokenAdmission>;
type RevokeClientCommand = (key: string, upTo: number, pxat: number) => Promise<number>;

/**
 * The ledger on Redis, shared by every front end of a deployment (keys under its prefix, like
 * coordinator/queue/): `P:token:seen:<jti>` (SET NX with PXAT = exp + a minute),
 * `P:token:revoked:<jti>`, `P:token:revoked-client:<client id>` (value: `ISSUED_UP_TO PXAT`).
 * Redis expires every key itself, so nothing outlives the tokens it is about. Durability is
 * Redis's (run it with appendonly yes).
 */
export class RedisTokenLedger implements TokenLedger {
  private readonly redis: Redis;
  private readonly prefix: string;

  constructor(redis: Redis, opts: { prefix?: string } = {}) {
    this.redis = redis;
    this.prefix = opts.prefix ?? 'aegis';
    redis.defineCommand('aegisTokenAdmit', { numberOfKeys: 3, lua: ADMIT });
    redis.defineCommand('aegisTokenRevokeClient', { numberOfKeys: 1, lua: REVOKE_CLIENT });
  }

  private key(kind: 'seen' | 'revoked' | 'revoked-client', id: string): string {
    return `${this.prefix}:token:${kind}:${id}`;
  }

  async admit(t: TokenUse): Promise<TokenAdmission> {
    const admit = (this.redis as unknown as { aegisTokenAdmit: AdmitCommand }).aegisTokenAdmit.bind(this.redis);
    let r: TokenAdmission;
    try {
      r = await admit(this.key('revoked', t.jti), this.key('revoked-client', t.sub), this.key('seen', t.jti), t.iat, (t.exp + REDIS_CLOCK_ALLOWANCE_S) * 1000);
    } catch {
      throw new AegisError(ErrorCode.Unavailable, 'Redis did not answer the token check; the call is refused');
    }
    if (r !== 'accepted' && r !== 'revoked' && r !== 'replayed') throw new AegisError(ErrorCode.Unavailable, 'unexpected answer from Redis to the token check');
    return r;
  }

  async revokeJti(jti: string, untilSec: number): Promise<void> {
    checkJti(jti);
    if (!isSeconds(untilSec)) fail(ErrorCode.InvalidArgument, 'malformed revocation time');
    await this.redis.set(this.key('revoked', jti), '1', 'PXAT', (untilSec + REDIS_CLOCK_ALLOWANCE_S) * 1000);
  }

  async revokeClient(clientId: string, issuedUpToSec: number, untilSec: number): Promise<void> {
    checkClient(clientId);
    if (!isSeconds(issuedUpToSec) || !isSeconds(untilSec)) fail(ErrorCode.InvalidArgument, 'malformed revocation time');
    const revoke = (this.redis as unknown as { aegisTokenRevokeClient: RevokeClientCommand }).aegisTokenRevokeClient.bind(this.redis);
    await revoke(this.key('revoked-client', clientId), issuedUpToSec, (untilSec + REDIS_CLOCK_ALLOWANCE_S) * 1000);
  }

  async close(): Promise<void> {
    // The Redis connection belongs to the caller.
  }
}
