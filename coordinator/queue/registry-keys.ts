/**
 * The client registry's keys on Redis (coordinator/queue/redis-registry.ts), how their values are
 * written and read back, and the two Lua scripts that keep the earlier revocation of a serial and
 * the later last-seen time. Values read from Redis are checked like any input: an entry that does
 * not parse is left out (a revoked serial whose details do not parse stays revoked).
 *
 * Under P = `<prefix>:registry`:
 * - `P:client:<id>` (string): a client record (JSON, without last seen); `P:clients` (set);
 * - `P:revoked-clients` (set); `P:revoked-serials` (hash: serial → `{"revokedAt","reason","detail"}`,
 *   `{}` when unknown);
 * - `P:bindings` (hash: public key, base64url → client id);
 * - `P:invites` (hash: SHA-256 of the token, hex → the invite record, JSON);
 * - `P:last-seen` (hash: client id → ms);
 * - `P:seq` (counter); channel `P:events`.
 */
import { CLIENT_ID_PATTERN } from '../auth/ca.js';
import { parseInviteRecord, revocationReasonOf, type InviteRecord } from '../auth/enrollment.js';
import type { RevokedSerialFact } from '../clients/merge.js';
import { parseClientRecord, type ClientRecord } from '../clients/registry.js';

export class RegistryKeys {
  /** `<prefix>:registry`. */
  readonly prefix: string;
  constructor(deploymentPrefix: string) {
    this.prefix = `${deploymentPrefix}:registry`;
  }
  private k(name: string): string {
    return `${this.prefix}:${name}`;
  }
  client(id: string): string {
    return this.k(`client:${id}`);
  }
  get clients(): string {
    return this.k('clients');
  }
  get revokedClients(): string {
    return this.k('revoked-clients');
  }
  get revokedSerials(): string {
    return this.k('revoked-serials');
  }
  get bindings(): string {
    return this.k('bindings');
  }
  get invites(): string {
    return this.k('invites');
  }
  get lastSeen(): string {
    return this.k('last-seen');
  }
  get seq(): string {
    return this.k('seq');
  }
  get channel(): string {
    return this.k('events');
  }
}

/** Of two revocations of a serial, the earlier stays; one without a time never replaces one with. */
export const SERIAL_SCRIPT = `
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    local new = cjson.decode(ARGV[i + 1])
    if new.revokedAt ~= nil then
      local ok, old = pcall(cjson.decode, cur)
      if not ok or type(old) ~= 'table' or old.revokedAt == nil or new.revokedAt < old.revokedAt then
        redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
      end
    end
  end
end
return 0`;

/** The later last-seen time stays. */
export const LAST_SEEN_SCRIPT = `
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1') or -1
  if cur < tonumber(ARGV[i + 1]) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 0`;

/** A change announced on the channel (only a hint: the facts are read from the keys). */
export interface Announcement {
  from?: unknown;
  q?: unknown;
  c?: unknown;
  s?: unknown;
  i?: unknown;
  resync?: unknown;
}

export const isKey = (k: unknown): k is string => typeof k === 'string' && /^[A-Za-z0-9_-]{43}$/.test(k);
export const isClientId = (id: unknown): id is string => typeof id === 'string' && CLIENT_ID_PATTERN.test(id);
export const isSerial = (s: unknown): s is string => typeof s === 'string' && /^[0-9a-f]{1,40}$/.test(s);
export const isHash = (h: unknown): h is string => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h);

export function serialValue(f: RevokedSerialFact): string {
  if (f.revokedAt === undefined || f.reason === undefined) return '{}';
  return JSON.stringify({ revokedAt: f.revokedAt, reason: f.reason, ...(f.detail ? { detail: f.detail } : {}) });
}

export function parseSerialValue(serial: string, v: string | null): RevokedSerialFact {
  try {
    const j = JSON.parse(v ?? '{}') as { revokedAt?: unknown; reason?: unknown; detail?: unknown };
    const reason = revocationReasonOf(j.reason);
    if (!Number.isSafeInteger(j.revokedAt) || reason === undefined) return { serial };
    return { serial, revokedAt: j.revokedAt as number, reason, ...(typeof j.detail === 'string' && j.detail.length <= 200 && j.detail !== '' ? { detail: j.detail } : {}) };
  } catch {
    return { serial }; // still revoked: only its time and reason are unknown
  }
}

/** A client record read from `P:client:<id>`, or undefined when it is missing, does not parse or names another client. */
export function parseRecordValue(v: string | null, id: string): ClientRecord | undefined {
  if (v === null) return undefined;
  try {
    const rec = parseClientRecord(JSON.parse(v), 'a client record on Redis');
    return rec.clientId === id ? rec : undefined;
  } catch {
    return undefined;
  }
}

/** An invite read from `P:invites`, or undefined when it is missing, does not parse or has another hash. */
export function parseInviteValue(v: string | null, hash: string): InviteRecord | undefined {
  if (v === null) return undefined;
  try {
    const inv = parseInviteRecord(JSON.parse(v));
    return inv.hash === hash ? inv : undefined;
  } catch {
    return undefined;
  }
}
