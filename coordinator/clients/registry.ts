/**
 * The coordinator's client registry: the enrolled clients (public key, certificate, revocation,
 * last seen), the invites (as SHA-256 hashes only), the revocations and the key bindings —
 * public keys and names, no secret. Each process holds one as its cache (coordinator/clients/
 * client-registry.ts); the shared copy is registry.json in the data dir (coordinator/service/
 * data-dir.ts loads it and writes it merged under a lock) or, with Redis, the keys of
 * coordinator/queue/redis-registry.ts. `Registry.fromJSON` reads it back through a strict
 * schema, so a malformed file is refused rather than half-read.
 */
import { z } from 'zod';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { KeyBindings } from '../auth/ca.js';
import { Invites, Revocations } from '../auth/enrollment.js';

export interface ClientRecord {
  clientId: string;
  /** Raw Ed25519 public key, base64url. */
  publicKey: string;
  enrolledAt: number;
  serial: string;
  certificateExpiresAt: number;
  /** The current certificate, DER as base64 (public; sent to round peers). */
  certificate: string;
  /**
   * When the current certificate was recorded (ms; later than the record it replaced, whatever
   * the clocks): of two records of one client, the later one is the current one. Records of older
   * releases have none (the certificate's notBefore stands in).
   */
  issuedAt?: number;
  revokedAt?: number;
  /**
   * A revocation reason code (coordinator/auth/enrollment.ts `REVOCATION_REASONS`); registries of
   * older releases hold free text here (read as `unspecified`, the text as its detail).
   */
  revocationReason?: string;
  /** The operator's free-text detail for the revocation. */
  revocationDetail?: string;
  /** Last authenticated call, ms since the epoch, rounded down to the minute (written at most once a minute). */
  lastSeenAt?: number;
  /** Serials of this client's earlier certificates that were still valid when replaced (they go on the CRL at revocation). */
  previousSerials?: { serial: string; expiresAt: number }[];
}

const ClientRecordSchema = z
  .object({
    clientId: z.string(),
    publicKey: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
    enrolledAt: z.number().int(),
    serial: z.string().regex(/^[0-9a-f]{1,40}$/),
    certificateExpiresAt: z.number().int(),
    certificate: z.string().max(8192),
    issuedAt: z.number().int().optional(),
    revokedAt: z.number().int().optional(),
    revocationReason: z.string().max(200).optional(),
    revocationDetail: z.string().max(200).optional(),
    lastSeenAt: z.number().int().optional(),
    previousSerials: z.array(z.object({ serial: z.string().regex(/^[0-9a-f]{1,40}$/), expiresAt: z.number().int() }).strict()).max(1024).optional(),
  })
  .strict();

const RegistrySchema = z
  .object({
    version: z.literal(1),
    clients: z.array(ClientRecordSchema),
    invites: z.unknown(),
    revocations: z.unknown(),
    bindings: z.unknown(),
  })
  .strict();

/** One client record, checked against the schema; `invalid-argument` naming `what` otherwise. */
export function parseClientRecord(json: unknown, what = 'a client record'): ClientRecord {
  const r = ClientRecordSchema.safeParse(json);
  if (!r.success) throw new AegisError(ErrorCode.InvalidArgument, `${what} is malformed`);
  return r.data as ClientRecord;
}

/**
 * The coordinator's persistent registry (everything but round state). Its parts are never
 * replaced, only changed in place: the transport and the token verifier hold `revocations`.
 */
export class Registry {
  readonly clients = new Map<string, ClientRecord>();
  readonly invites: Invites;
  readonly revocations: Revocations;
  readonly bindings: KeyBindings;

  constructor(parts?: { clients?: ClientRecord[]; invites?: Invites; revocations?: Revocations; bindings?: KeyBindings }) {
    for (const c of parts?.clients ?? []) this.clients.set(c.clientId, c);
    this.invites = parts?.invites ?? new Invites();
    this.revocations = parts?.revocations ?? new Revocations();
    this.bindings = parts?.bindings ?? new KeyBindings();
  }

  toJSON(): unknown {
    return {
      version: 1,
      clients: [...this.clients.values()].sort((a, b) => (a.clientId < b.clientId ? -1 : 1)),
      invites: this.invites.toJSON(),
      revocations: this.revocations.toJSON(),
      bindings: this.bindings.toJSON(),
    };
  }

  static fromJSON(json: unknown): Registry {
    const r = RegistrySchema.safeParse(json);
    if (!r.success) throw new AegisError(ErrorCode.InvalidArgument, 'registry.json is malformed');
    return new Registry({
      clients: r.data.clients as ClientRecord[],
      invites: Invites.fromJSON(r.data.invites),
      revocations: Revocations.fromJSON(r.data.revocations),
      bindings: KeyBindings.fromJSON(r.data.bindings),
    });
  }
}
