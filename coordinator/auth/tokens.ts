/**
 * Short-lived round-call tokens: EdDSA (Ed25519) JWTs, RFC 7519 / RFC 8037, via jose.
 *
 * Claims: { sub: client id, aud: 'aegis-coordinator', jti: 16 random bytes base64url, iat, exp }
 * (NumericDate seconds; default lifetime 5 minutes, at most 15). The coordinator both issues and
 * verifies them, so one clock decides and no skew allowance is needed.
 *
 * `TokenVerifier.verify` refuses with one error class, `AuthError`, whose `reason` the
 * transport maps to UNAUTHENTICATED. Checks run in this order so nothing is trusted before the
 * signature: structure and header (`malformed`, `bad-algorithm` — only `alg: EdDSA`, never
 * `none`, HS*, or a key from the header), signature (`bad-signature`), claims (`malformed`,
 * `bad-audience`, `not-yet-valid`, `expired`), subject = the certificate's client id
 * (`wrong-subject`), revocation of the jti or the client (`revoked`), and last the replay check
 * (`replayed`). A jti is remembered only once every check has passed, until its `exp`: a refused
 * token leaves the verifier's state untouched.
 */
import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { compactVerify, SignJWT } from 'jose';
import { abytes } from '../../shared/bytes.js';
import { okpPrivateKeyObject, okpPublicKey } from '../../shared/crypto/okp.js';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { assertClientId } from './ca.js';

export const TOKEN_AUDIENCE = 'aegis-coordinator';
/** Default token lifetime: 5 minutes. */
export const TOKEN_TTL_MS = 5 * 60 * 1000;
/** Longest accepted lifetime (exp - iat): 15 minutes; bounds how long a jti must be remembered. */
export const MAX_TOKEN_TTL_MS = 15 * 60 * 1000;

export type AuthRefusal =
  | 'malformed'
  | 'bad-algorithm'
  | 'bad-signature'
  | 'bad-audience'
  | 'not-yet-valid'
  | 'expired'
  | 'wrong-subject'
  | 'revoked'
  | 'replayed'
  | 'no-identity';

/**
 * Every refusal of a call's credentials — the token here, the peer certificate in peer.ts. The
 * transport answers UNAUTHENTICATED with `reason`.
 */
export class AuthError extends AegisError {
  readonly reason: AuthRefusal;
  constructor(reason: AuthRefusal, what = 'token') {
    super(ErrorCode.Unauthenticated, `${what} refused: ${reason}`);
    this.reason = reason;
  }
}

export interface TokenClaims {
  sub: string;
  aud: string;
  jti: string;
  iat: number;
  exp: number;
}

/** Something that knows which clients are revoked (coordinator/auth/enrollment.ts `Revocations`). */
export interface RevocationList {
  isRevoked(q: { clientId?: string }): boolean;
}

/** Issues tokens under an Ed25519 key made from 32 random bytes (see shared/crypto/okp.ts). */
export class TokenIssuer {
  private readonly key: KeyObject;
  private readonly clock: () => number;
  /** The raw 32-byte public key, for `TokenVerifier`. */
  readonly publicKey: Uint8Array;
  private readonly seed: Uint8Array;

  private constructor(seed: Uint8Array, clock: () => number) {
    abytes(seed, 32, 'token signing key');
    this.seed = new Uint8Array(seed);
    this.key = okpPrivateKeyObject('Ed25519', this.seed);
    this.publicKey = okpPublicKey(this.key);
    this.clock = clock;
  }

  static create(opts: { clock?: () => number } = {}): TokenIssuer {
    return new TokenIssuer(new Uint8Array(randomBytes(32)), opts.clock ?? Date.now);
  }

  /** From a seed opened from the passphrase keyfile. */
  static fromSeed(seed: Uint8Array, opts: { clock?: () => number } = {}): TokenIssuer {
    return new TokenIssuer(seed, opts.clock ?? Date.now);
  }

  /** The 32-byte seed, to seal in the passphrase keyfile. */
  exportSeed(): Uint8Array {
    return new Uint8Array(this.seed);
  }

  async issue(clientId: string, opts: { ttlMs?: number } = {}): Promise<{ token: string; claims: TokenClaims }> {
    assertClientId(clientId);
    const ttl = opts.ttlMs ?? TOKEN_TTL_MS;
    if (!Number.isInteger(ttl) || ttl < 1000 || ttl > MAX_TOKEN_TTL_MS) fail(ErrorCode.InvalidArgument, 'token ttl must be 1 s..15 min');
    const iat = Math.floor(this.clock() / 1000);
    const claims: TokenClaims = {
      sub: clientId,
      aud: TOKEN_AUDIENCE,
      jti: randomBytes(16).toString('base64url'),
      iat,
      exp: iat + Math.floor(ttl / 1000),
    };
    const token = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT' }).sign(this.key);
    return { token, claims };
  }
}

const B64URL = /^[A-Za-z0-9_-]*$/;
const JTI = /^[A-Za-z0-9_-]{22}$/;
const MAX_TOKEN_CHARS = 4096;
const CLEANUP_EVERY_MS = 10_000;

function decodeJson(part: string): unknown {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

const isNumericDate = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

export class TokenVerifier {
  private readonly key: KeyObject;
  private readonly clock: () => number;
  private readonly audience: string;
  private readonly revocations: RevocationList | undefined;
  /** jti -> exp (seconds): seen tokens, remembered until they expire. */
  private readonly seen = new Map<string, number>();
  /** jti -> exp (seconds): tokens revoked one by one. */
  private readonly revokedJti = new Map<string, number>();
  private nextCleanup = 0;

  constructor(opts: { publicKey: Uint8Array; clock?: () => number; audience?: string; revocations?: RevocationList }) {
    abytes(opts.publicKey, 32, 'token public key');
    this.key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(opts.publicKey).toString('base64url') }, format: 'jwk' });
    this.clock = opts.clock ?? Date.now;
    this.audience = opts.audience ?? TOKEN_AUDIENCE;
    this.revocations = opts.revocations;
  }

  /** Revokes one token by its jti until `exp` (seconds), after which it is expired anyway. */
  revokeToken(jti: string, exp: number): void {
    if (typeof jti !== 'string' || !JTI.test(jti) || !isNumericDate(exp)) fail(ErrorCode.InvalidArgument, 'malformed jti or exp');
    this.revokedJti.set(jti, exp);
  }

  /** Number of jti currently remembered against replay. */
  get remembered(): number {
    return this.seen.size;
  }

  /**
   * Verifies `token` for a call from the client whose certificate names `clientId`; returns the
   * claims or throws `AuthError`.
   */
  async verify(token: string, ctx: { clientId: string }): Promise<TokenClaims> {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_CHARS) throw new AuthError('malformed');
    const parts = token.split('.');
    if (parts.length !== 3 || !parts.every((p) => B64URL.test(p)) || parts[0]!.length === 0 || parts[1]!.length === 0) {
      throw new AuthError('malformed');
    }
    const header = decodeJson(parts[0]!) as Record<string, unknown> | undefined;
    if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new AuthError('malformed');
    // Only EdDSA, and no header field that could bring its own key or change processing.
    if (header.alg !== 'EdDSA') throw new AuthError('bad-algorithm');
    if (!Object.keys(header).every((k) => k === 'alg' || k === 'typ') || (header.typ !== undefined && header.typ !== 'JWT')) {
      throw new AuthError('malformed');
    }
    if (parts[2]!.length === 0) throw new AuthError('bad-signature');
    try {
      await compactVerify(token, this.key, { algorithms: ['EdDSA'] });
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ERR_JOSE_ALG_NOT_ALLOWED') throw new AuthError('bad-algorithm');
      if (code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') throw new AuthError('bad-signature');
      throw new AuthError(code === 'ERR_JWS_INVALID' ? 'bad-signature' : 'malformed');
    }

    const c = decodeJson(parts[1]!) as Record<string, unknown> | undefined;
    if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new AuthError('malformed');
    const { sub, aud, jti, iat, exp, nbf } = c;
    if (typeof sub !== 'string' || typeof jti !== 'string' || !JTI.test(jti) || !isNumericDate(iat) || !isNumericDate(exp)) {
      throw new AuthError('malformed');
    }
    if (nbf !== undefined && !isNumericDate(nbf)) throw new AuthError('malformed');
    if (exp <= iat || (exp - iat) * 1000 > MAX_TOKEN_TTL_MS) throw new AuthError('malformed');
    if (aud !== this.audience && !(Array.isArray(aud) && aud.length === 1 && aud[0] === this.audience)) throw new AuthError('bad-audience');
    const now = Math.floor(this.clock() / 1000);
    if (iat > now || (nbf !== undefined && nbf > now)) throw new AuthError('not-yet-valid');
    if (now >= exp) throw new AuthError('expired');
    if (sub !== ctx.clientId) throw new AuthError('wrong-subject');
    if (this.revokedJti.has(jti) || this.revocations?.isRevoked({ clientId: sub }) === true) throw new AuthError('revoked');

    this.cleanup(now);
    if (this.seen.has(jti)) throw new AuthError('replayed');
    this.seen.set(jti, exp);
    return { sub, aud: this.audience, jti, iat, exp };
  }

  /** Forgets jti whose tokens have expired (they are refused as expired from then on). */
  private cleanup(nowSec: number): void {
    const nowMs = nowSec * 1000;
    if (nowMs < this.nextCleanup) return;
    this.nextCleanup = nowMs + CLEANUP_EVERY_MS;
    for (const [jti, exp] of this.seen) if (exp <= nowSec) this.seen.delete(jti);
    for (const [jti, exp] of this.revokedJti) if (exp <= nowSec) this.revokedJti.delete(jti);
  }
}
