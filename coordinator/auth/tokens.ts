/**
 * Short-lived round-call tokens: EdDSA (Ed25519) JWTs, RFC 7519 / RFC 8037. jose signs them; the
 * verifier checks the compact form itself (three base64url parts, a header of known fields) and
 * the Ed25519 signature over `header.payload` with Node's synchronous `crypto.verify`: every round
 * call carries a token, and WebCrypto's asynchronous verify costs a thread-pool round trip each.
 *
 * Claims: { sub: client id, aud: 'aegis-coordinator', jti: 16 random bytes base64url, iat, exp }
 * (NumericDate seconds; default lifetime 5 minutes, at most 15). The coordinator both issues and
 * verifies them, so one clock decides and no skew allowance is needed.
 *
 * `TokenVerifier.verify` refuses with one error class, `AuthError`, whose `reason` the
 * transport maps to UNAUTHENTICATED. Checks run in this order, so nothing is trusted before the
 * signature and nothing is stored for a token that is refused:
 *   1. structure and header (`malformed`, `bad-algorithm` — only `alg: EdDSA`, never `none`,
 *      HS*, or a key from the header; a `kid` the key ring does not know is `bad-signature`);
 *   2. the signature (`bad-signature`) — or, for a token this process signed and presented intact,
 *      its bytes against the ones signed (`TokenKeyRing`, below);
 *   3. the claims (`malformed`, `bad-audience`, `not-yet-valid`, `expired`);
 *   4. subject = the certificate's client id (`wrong-subject`);
 *   5. the client's revocation (`revoked`, coordinator/auth/enrollment.ts `Revocations`);
 *   6. the ledger (seen-tokens.ts), in one step: a revoked jti, or a token of a client whose
 *      tokens an operator revoked up to a time at or after its `iat` (`revoked`); then a jti
 *      seen before (`replayed`); else the jti is recorded until its `exp` and the token passes.
 * Only step 6 changes state, and only for a token that passes: a refused token leaves the
 * verifier and its ledger as they were. The ledger outlives the process (DATA_DIR/tokens.log, or
 * Redis for front ends), so a token spent before a restart is still `replayed` after it; its
 * entries are dropped once their tokens have expired.
 *
 * Operators revoke tokens (`aegis tokens revoke`): one by its jti or by the token itself
 * (`revokeToken`, `revokeTokenString`), or every token of a client issued up to now
 * (`revokeClientTokens`); revocations go to the same ledger and last until those tokens expire.
 *
 * Key versions (time-based rotation, shared/keystore/policy.ts): every token names its signing
 * key in the protected header's `kid` (`t<version>-<8 chars of the public key's SHA-256>`). The
 * issuer's `TokenKeyRing` holds the current key and the keys it replaced; a replaced key still
 * verifies the tokens it signed until every one of them has expired (retired at + the longest
 * lifetime, 15 min), then it is dropped. A malformed `kid` is `malformed`, one the ring does not
 * know `bad-signature` (a foreign or dropped key); a token
 * without `kid` (issued before key versions) is checked against the current key only.
 */
import { createHash, createPublicKey, randomBytes, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import { abytes } from '../../shared/bytes.js';
import { okpPrivateKeyObject, okpPublicKey } from '../../shared/crypto/okp.js';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { assertClientId } from './ca.js';
import { JTI_PATTERN, LocalTokenLedger, type TokenLedger } from './seen-tokens.js';

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

/** A token key's id: its version and a short hash of its public key (so a kid never names two keys). */
export function tokenKid(version: number, publicKey: Uint8Array): string {
  if (!Number.isSafeInteger(version) || version < 1) fail(ErrorCode.InvalidArgument, 'token key version must be a positive integer');
  return `t${version}-${createHash('sha256').update(publicKey).digest('base64url').slice(0, 8)}`;
}

const KID = /^t[1-9][0-9]{0,8}-[A-Za-z0-9_-]{8}$/;

interface RingKey {
  kid: string;
  version: number;
  publicKey: Uint8Array;
  keyObject: KeyObject;
  /** When it stopped signing (ms); undefined for the current key. */
  retiredAt?: number;
}

const publicKeyObject = (publicKey: Uint8Array): KeyObject =>
  createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(publicKey).toString('base64url') }, format: 'jwk' });

/** Tokens signed in this process and remembered for their first verification, at most. */
const MAX_SIGNED_HERE = 32_768;

interface SignedHere {
  kid: string;
  /** `header.payload` as signed, ASCII. */
  signingInput: Buffer;
  /** Seconds. */
  exp: number;
}

/**
 * The verification keys of a token issuer: the current one and those it replaced, each kept until
 * the tokens it signed have all expired (`retiredAt + MAX_TOKEN_TTL_MS`). Public keys only.
 *
 * It also remembers the tokens its issuer signed in this process, by their signature, until each
 * is first presented or expires (at most `MAX_SIGNED_HERE`; past that, new tokens are simply not
 * remembered). A token presented with a remembered signature, a key the ring still accepts and,
 * byte for byte (compared in constant time), the header and payload that were signed is one this
 * process signed: its Ed25519 verification (~120 µs, one per round call) would only repeat what
 * the signing established. Anything else — another front end's token, one signed before a restart,
 * one whose key was dropped, one changed in any byte — is verified as before.
 */
export class TokenKeyRing {
  readonly #keys = new Map<string, RingKey>();
  #current!: RingKey;
  readonly #clock: () => number;
  /** By signature (base64url), in the order signed. */
  readonly #signedHere = new Map<string, SignedHere>();

  constructor(clock: () => number = Date.now) {
    this.#clock = clock;
  }

  /** The key new tokens are signed with. */
  get current(): { kid: string; version: number; publicKey: Uint8Array } {
    return { kid: this.#current.kid, version: this.#current.version, publicKey: this.#current.publicKey };
  }

  /** Makes `publicKey` (version `version`) current; the previous current key retires now. */
  setCurrent(version: number, publicKey: Uint8Array): string {
    abytes(publicKey, 32, 'token public key');
    const kid = tokenKid(version, publicKey);
    if (this.#current !== undefined && this.#current.kid !== kid) this.#current.retiredAt = this.#clock();
    const k: RingKey = { kid, version, publicKey: new Uint8Array(publicKey), keyObject: publicKeyObject(publicKey) };
    this.#keys.set(kid, k);
    this.#current = k;
    this.prune();
    return kid;
  }

  /** Adds a key that stopped signing at `retiredAt` (ms); ignored when its tokens have all expired. */
  addRetired(version: number, publicKey: Uint8Array, retiredAt: number): void {
    abytes(publicKey, 32, 'token public key');
    if (retiredAt + MAX_TOKEN_TTL_MS <= this.#clock()) return;
    const kid = tokenKid(version, publicKey);
    if (this.#current?.kid === kid) return;
    this.#keys.set(kid, { kid, version, publicKey: new Uint8Array(publicKey), keyObject: publicKeyObject(publicKey), retiredAt });
  }

  /** Drops retired keys whose tokens have all expired. */
  prune(): void {
    const now = this.#clock();
    for (const [kid, k] of this.#keys) if (k.retiredAt !== undefined && k.retiredAt + MAX_TOKEN_TTL_MS <= now) this.#keys.delete(kid);
  }

  /** The verification key for `kid` (undefined: the current key), if it is still accepted. */
  keyFor(kid: string | undefined): KeyObject | undefined {
    this.prune();
    if (kid === undefined) return this.#current.keyObject;
    return this.#keys.get(kid)?.keyObject;
  }

  /** Remembers a token this process just signed with the key `kid` (see the class comment). */
  noteSigned(kid: string, token: string, exp: number): void {
    const now = Math.floor(this.#clock() / 1000);
    // Oldest first: drop the expired ones at the head (tokens of one lifetime expire in order).
    for (const [sig, t] of this.#signedHere) {
      if (t.exp > now) break;
      this.#signedHere.delete(sig);
    }
    if (this.#signedHere.size >= MAX_SIGNED_HERE) return;
    const dot = token.lastIndexOf('.');
    this.#signedHere.set(token.slice(dot + 1), { kid, signingInput: Buffer.from(token.slice(0, dot), 'ascii'), exp });
  }

  /**
   * True, once, when `signature` is that of a token this process signed with `kid` over exactly
   * `signingInput`, and `kid` is still accepted; the token is then forgotten. False otherwise, with
   * nothing changed (a forged token does not take the real one's place).
   */
  takeSignedHere(kid: string | undefined, signingInput: string, signature: string): boolean {
    if (kid === undefined) return false;
    const t = this.#signedHere.get(signature);
    if (t === undefined || t.kid !== kid || this.keyFor(kid) === undefined) return false;
    const presented = Buffer.from(signingInput, 'ascii');
    if (presented.length !== t.signingInput.length || !timingSafeEqual(presented, t.signingInput)) return false;
    this.#signedHere.delete(signature);
    return true;
  }

  /** Tokens remembered as signed here and not yet presented. */
  get signedHereCount(): number {
    return this.#signedHere.size;
  }

  /** Every key still accepted, current first: kid, version and when it retired. */
  list(): { kid: string; version: number; retiredAt?: number }[] {
    this.prune();
    return [...this.#keys.values()]
      .sort((a, b) => b.version - a.version)
      .map((k) => ({ kid: k.kid, version: k.version, ...(k.retiredAt !== undefined ? { retiredAt: k.retiredAt } : {}) }));
  }
}

/**
 * Issues tokens under an Ed25519 key made from 32 random bytes (see shared/crypto/okp.ts). The key
 * can be replaced by a newer version (`rotate`); `keyring` keeps the replaced ones for verifiers.
 */
export class TokenIssuer {
  private key: KeyObject;
  private readonly clock: () => number;
  private seed: Uint8Array;
  /** The current and still-accepted previous verification keys. */
  readonly keyring: TokenKeyRing;

  private constructor(seed: Uint8Array, clock: () => number, version: number) {
    abytes(seed, 32, 'token signing key');
    this.seed = new Uint8Array(seed);
    this.key = okpPrivateKeyObject('Ed25519', this.seed);
    this.clock = clock;
    this.keyring = new TokenKeyRing(clock);
    this.keyring.setCurrent(version, okpPublicKey(this.key));
  }

  static create(opts: { clock?: () => number; version?: number } = {}): TokenIssuer {
    return new TokenIssuer(new Uint8Array(randomBytes(32)), opts.clock ?? Date.now, opts.version ?? 1);
  }

  /** From a seed opened from the vault (`version`: the key's version, default 1). */
  static fromSeed(seed: Uint8Array, opts: { clock?: () => number; version?: number } = {}): TokenIssuer {
    return new TokenIssuer(seed, opts.clock ?? Date.now, opts.version ?? 1);
  }

  /** The raw 32-byte public key of the current signing key, for `TokenVerifier`. */
  get publicKey(): Uint8Array {
    return this.keyring.current.publicKey;
  }

  /** The current key's version and kid. */
  get version(): number {
    return this.keyring.current.version;
  }

  get kid(): string {
    return this.keyring.current.kid;
  }

  /** The 32-byte seed, to seal in the vault. */
  exportSeed(): Uint8Array {
    return new Uint8Array(this.seed);
  }

  /**
   * Signs from now on with `seed` as version `version`; the previous key keeps verifying (through
   * `keyring`) until the tokens it signed have expired.
   */
  rotate(seed: Uint8Array, version: number): void {
    abytes(seed, 32, 'token signing key');
    if (version <= this.version) fail(ErrorCode.InvalidArgument, 'a new token key version must be higher than the current one');
    const key = okpPrivateKeyObject('Ed25519', seed);
    this.keyring.setCurrent(version, okpPublicKey(key));
    this.seed.fill(0);
    this.seed = new Uint8Array(seed);
    this.key = key;
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
    const kid = this.kid;
    const token = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid }).sign(this.key);
    this.keyring.noteSigned(kid, token, claims.exp);
    return { token, claims };
  }
}

const B64URL = /^[A-Za-z0-9_-]*$/;
const MAX_TOKEN_CHARS = 4096;

function decodeJson(part: string): unknown {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

const isNumericDate = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** What a token revocation did: the jti and client it names (when known) and until when it holds (seconds). */
export interface TokenRevocation {
  jti?: string;
  clientId?: string;
  /** Tokens of the client issued at or before this second are refused (client revocations). */
  issuedUpTo?: number;
  /** The revocation is kept until then (the tokens it names have expired by then), seconds. */
  until: number;
  /** True when the token named had already expired: nothing needed revoking. */
  alreadyExpired?: boolean;
}

export class TokenVerifier {
  private readonly keyring: TokenKeyRing;
  private readonly clock: () => number;
  private readonly audience: string;
  private readonly revocations: RevocationList | undefined;
  /** Seen and revoked tokens (seen-tokens.ts); in memory unless a durable one is given. */
  readonly ledger: TokenLedger;
  #signaturesChecked = 0;

  /**
   * `keyring`: the issuer's key ring (follows its rotations: `issuer.keyring`); without it, one
   * fixed `publicKey` (version 1). `ledger`: where seen and revoked tokens are kept (default: this
   * process's memory).
   */
  constructor(opts: { publicKey: Uint8Array; keyring?: TokenKeyRing; clock?: () => number; audience?: string; revocations?: RevocationList; ledger?: TokenLedger }) {
    abytes(opts.publicKey, 32, 'token public key');
    this.clock = opts.clock ?? Date.now;
    if (opts.keyring) {
      this.keyring = opts.keyring;
    } else {
      this.keyring = new TokenKeyRing(this.clock);
      this.keyring.setCurrent(1, opts.publicKey);
    }
    this.audience = opts.audience ?? TOKEN_AUDIENCE;
    this.revocations = opts.revocations;
    this.ledger = opts.ledger ?? LocalTokenLedger.memory();
  }

  private nowSec(): number {
    return Math.floor(this.clock() / 1000);
  }

  /**
   * Revokes one token by its jti: refused as `revoked` from now on. Kept until `exp` (seconds)
   * when known, else for the longest token lifetime (any token with this jti has expired by then).
   */
  async revokeToken(jti: string, exp?: number): Promise<TokenRevocation> {
    if (typeof jti !== 'string' || !JTI_PATTERN.test(jti) || (exp !== undefined && !isNumericDate(exp))) fail(ErrorCode.InvalidArgument, 'a jti is 22 base64url characters');
    const until = exp ?? this.nowSec() + MAX_TOKEN_TTL_MS / 1000;
    await this.ledger.revokeJti(jti, until);
    return { jti, until };
  }

  /**
   * Revokes the token given whole (as a client would send it). It must be one of ours: its
   * signature is checked (`AuthError` otherwise, nothing stored); one that has expired already
   * needs nothing (`alreadyExpired`).
   */
  async revokeTokenString(token: string): Promise<TokenRevocation> {
    const c = await this.signedClaims(token);
    if (this.nowSec() >= c.exp) return { jti: c.jti, clientId: c.sub, until: c.exp, alreadyExpired: true };
    await this.ledger.revokeJti(c.jti, c.exp);
    return { jti: c.jti, clientId: c.sub, until: c.exp };
  }

  /** Revokes every token of `clientId` issued up to now (this second included); later ones pass. */
  async revokeClientTokens(clientId: string): Promise<TokenRevocation> {
    assertClientId(clientId);
    const now = this.nowSec();
    const until = now + MAX_TOKEN_TTL_MS / 1000;
    await this.ledger.revokeClient(clientId, now, until);
    return { clientId, issuedUpTo: now, until };
  }

  /** Ed25519 verifications run since start (tokens this process signed, presented intact, need none). */
  get signaturesChecked(): number {
    return this.#signaturesChecked;
  }

  /** Number of jti currently remembered against replay (local ledgers; undefined on Redis). */
  get remembered(): number | undefined {
    return this.ledger.size;
  }

  /**
   * Verifies `token` for a call from the client whose certificate names `clientId`; returns the
   * claims or throws `AuthError` (the order of the checks: at the top of this file).
   */
  async verify(token: string, ctx: { clientId: string }): Promise<TokenClaims> {
    const c = await this.signedClaims(token);
    const now = this.nowSec();
    if (c.iat > now || (c.nbf !== undefined && c.nbf > now)) throw new AuthError('not-yet-valid');
    if (now >= c.exp) throw new AuthError('expired');
    if (c.sub !== ctx.clientId) throw new AuthError('wrong-subject');
    if (this.revocations?.isRevoked({ clientId: c.sub }) === true) throw new AuthError('revoked');
    const admission = await this.ledger.admit({ jti: c.jti, sub: c.sub, iat: c.iat, exp: c.exp }, now);
    if (admission !== 'accepted') throw new AuthError(admission);
    return { sub: c.sub, aud: this.audience, jti: c.jti, iat: c.iat, exp: c.exp };
  }

  /** Steps 1-3 but the clock: structure, header, signature, claims and audience. */
  private async signedClaims(token: string): Promise<TokenClaims & { nbf?: number }> {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_CHARS) throw new AuthError('malformed');
    const parts = token.split('.');
    if (parts.length !== 3 || !parts.every((p) => B64URL.test(p)) || parts[0]!.length === 0 || parts[1]!.length === 0) {
      throw new AuthError('malformed');
    }
    const header = decodeJson(parts[0]!) as Record<string, unknown> | undefined;
    if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new AuthError('malformed');
    // Only EdDSA, and no header field that could bring its own key or change processing.
    if (header.alg !== 'EdDSA') throw new AuthError('bad-algorithm');
    if (!Object.keys(header).every((k) => k === 'alg' || k === 'typ' || k === 'kid') || (header.typ !== undefined && header.typ !== 'JWT')) {
      throw new AuthError('malformed');
    }
    const { kid } = header;
    if (kid !== undefined && (typeof kid !== 'string' || !KID.test(kid))) throw new AuthError('malformed');
    if (parts[2]!.length === 0) throw new AuthError('bad-signature');
    // A well-formed kid the ring does not know: a foreign key, or one dropped once its tokens expired.
    const key = this.keyring.keyFor(kid);
    if (key === undefined) throw new AuthError('bad-signature');
    // The signature: 64 bytes in canonical base64url (one spelling per token), over the ASCII
    // signing input (RFC 7515 §5.2).
    const signature = Buffer.from(parts[2]!, 'base64url');
    if (signature.length !== 64 || signature.toString('base64url') !== parts[2]) throw new AuthError('bad-signature');
    const signingInput = `${parts[0]}.${parts[1]}`;
    let valid = this.keyring.takeSignedHere(kid, signingInput, parts[2]!);
    if (!valid) {
      this.#signaturesChecked++;
      try {
        valid = verify(null, Buffer.from(signingInput, 'ascii'), key, signature);
      } catch {
        valid = false;
      }
    }
    if (!valid) throw new AuthError('bad-signature');

    const c = decodeJson(parts[1]!) as Record<string, unknown> | undefined;
    if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new AuthError('malformed');
    const { sub, aud, jti, iat, exp, nbf } = c;
    if (typeof sub !== 'string' || typeof jti !== 'string' || !JTI_PATTERN.test(jti) || !isNumericDate(iat) || !isNumericDate(exp)) {
      throw new AuthError('malformed');
    }
    if (nbf !== undefined && !isNumericDate(nbf)) throw new AuthError('malformed');
    if (exp <= iat || (exp - iat) * 1000 > MAX_TOKEN_TTL_MS) throw new AuthError('malformed');
    if (aud !== this.audience && !(Array.isArray(aud) && aud.length === 1 && aud[0] === this.audience)) throw new AuthError('bad-audience');
    return { sub, aud: this.audience, jti, iat, exp, ...(nbf !== undefined ? { nbf } : {}) };
  }
}
