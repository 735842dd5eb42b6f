/**
 * DSSE envelopes (Dead Simple Signing Envelope, secure-systems-lab/dsse v1) signed with Ed25519.
 *
 * Signatures cover PAE(payloadType, payload) = "DSSEv1" SP len(type) SP type SP len(body) SP
 * body, so the payload type is bound and nothing is signed twice under two meanings. Parsing is
 * strict: exactly the envelope's fields, canonical base64, no duplicate JSON keys, at most 16
 * signatures. Verification counts each trusted key once (by key id and by key bytes): a
 * threshold is never met by one key signing twice or appearing under two ids.
 */
import { createHash } from 'node:crypto';
import { AegisError, ErrorCode } from '../errors.js';
import { ed25519PublicFromSeed, ed25519Sign, ed25519Verify } from '../crypto/ed25519.js';
import { parseStrictJson } from './strict-json.js';

export const MANIFEST_PAYLOAD_TYPE = 'application/vnd.aegis.manifest+json';
const MAX_SIGNATURES = 16;

export interface DsseSignature {
  keyid: string;
  /** Base64 Ed25519 signature over PAE. */
  sig: string;
}

export interface DsseEnvelope {
  payloadType: string;
  /** Base64 of the payload bytes. */
  payload: string;
  signatures: DsseSignature[];
}

/** A key id: the hex SHA-256 of the raw 32-byte Ed25519 public key. */
export function keyIdOf(publicKey: Uint8Array): string {
  return createHash('sha256').update(publicKey).digest('hex');
}

/** DSSE's pre-authentication encoding. */
export function pae(payloadType: string, payload: Uint8Array): Uint8Array {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.length} `), payload]);
}

/** Signs `payload` with each seed (32-byte Ed25519 private key). */
export function signEnvelope(payloadType: string, payload: Uint8Array, seeds: readonly Uint8Array[]): DsseEnvelope {
  const message = pae(payloadType, payload);
  return {
    payloadType,
    payload: Buffer.from(payload).toString('base64'),
    signatures: seeds.map((seed) => ({ keyid: keyIdOf(ed25519PublicFromSeed(seed)), sig: Buffer.from(ed25519Sign(seed, message)).toString('base64') })),
  };
}

/** Adds signatures to an envelope (another signer of the same payload). */
export function addSignatures(env: DsseEnvelope, seeds: readonly Uint8Array[]): DsseEnvelope {
  const more = signEnvelope(env.payloadType, Buffer.from(env.payload, 'base64'), seeds);
  return { ...env, signatures: [...env.signatures, ...more.signatures] };
}

const malformed = (what: string): never => {
  throw new AegisError(ErrorCode.Malformed, `envelope: ${what}`);
};

/** Field names for a message: at most 8, each cut to 40 characters at most, never mid-list. */
function listFields(fields: string[]): string {
  const shown = fields.slice(0, 8).map((f) => (f.length > 40 ? `${f.slice(0, 40)}…` : f));
  return fields.length > 8 ? `${shown.join(', ')} and ${fields.length - 8} more` : shown.join(', ');
}

/** Canonical base64 only (what Buffer.from would silently accept otherwise: junk, missing padding). */
function strictBase64(s: unknown, what: string): Buffer {
  if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return malformed(`${what} is not base64`);
  const b = Buffer.from(s, 'base64');
  if (b.toString('base64') !== s) malformed(`${what} is not canonical base64`);
  return b;
}

/** Parses envelope bytes strictly; throws `malformed`. */
export function parseEnvelope(bytes: Uint8Array | string): DsseEnvelope {
  const text = typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8');
  const v = parseStrictJson(text, 'envelope');
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return malformed('not an object');
  const o = v as Record<string, unknown>;
  const fields = Object.keys(o).sort();
  if (!('payload' in o) && !('signatures' in o)) {
    // A plain JSON document (an unsigned manifest, most often) where an envelope belongs.
    throw new AegisError(ErrorCode.Malformed, 'envelope: not signed: a plain JSON document, not a DSSE envelope (payload, payloadType, signatures)', 'sign the manifest first: aegis manifest sign job.json --key publisher.key --out job.dsse.json');
  }
  if (fields.join(',') !== 'payload,payloadType,signatures') malformed(`fields must be payload, payloadType, signatures (got ${listFields(fields)})`);
  if (typeof o.payloadType !== 'string' || o.payloadType.length === 0 || o.payloadType.length > 200) malformed('payloadType');
  strictBase64(o.payload, 'payload');
  if (!Array.isArray(o.signatures) || o.signatures.length === 0) return malformed('no signatures');
  if (o.signatures.length > MAX_SIGNATURES) malformed(`more than ${MAX_SIGNATURES} signatures`);
  const signatures = o.signatures.map((s: unknown, i: number) => {
    if (typeof s !== 'object' || s === null || Array.isArray(s)) return malformed(`signature ${i}`);
    const r = s as Record<string, unknown>;
    if (Object.keys(r).sort().join(',') !== 'keyid,sig') malformed(`signature ${i} must have keyid and sig`);
    if (typeof r.keyid !== 'string' || !/^[0-9a-f]{64}$/.test(r.keyid)) malformed(`signature ${i} keyid`);
    if (strictBase64(r.sig, `signature ${i}`).length !== 64) malformed(`signature ${i} is not 64 bytes`);
    return { keyid: r.keyid as string, sig: r.sig as string };
  });
  return { payloadType: o.payloadType as string, payload: o.payload as string, signatures };
}

export interface Verified {
  payload: Uint8Array;
  /** Key ids of the distinct trusted keys whose signatures verified. */
  signers: string[];
}

/**
 * Verifies an envelope: the payload type must be `payloadType`, and at least `threshold`
 * distinct trusted keys must have signed it. `trusted(keyid)` gives the public key of a
 * trusted signer, undefined otherwise. Throws `malformed` (wrong type), `unknown-key` (no
 * signature is by a trusted key) or `bad-signature` (too few valid signatures by trusted keys).
 */
export function verifyEnvelope(env: DsseEnvelope, payloadType: string, trusted: (keyid: string) => Uint8Array | undefined, threshold = 1): Verified {
  if (env.payloadType !== payloadType) malformed(`payload type ${env.payloadType.slice(0, 80)}, expected ${payloadType}`);
  const payload = strictBase64(env.payload, 'payload');
  const message = pae(env.payloadType, payload);
  const signers = new Set<string>();
  const keysSeen = new Set<string>();
  let known = 0;
  for (const s of env.signatures) {
    const pk = trusted(s.keyid);
    if (!pk) continue;
    known++;
    // One key counts once, whatever id it is listed under.
    const material = Buffer.from(pk).toString('hex');
    if (signers.has(s.keyid) || keysSeen.has(material)) continue;
    if (keyIdOf(pk) !== s.keyid) continue;
    if (!ed25519Verify(pk, message, strictBase64(s.sig, 'signature'))) continue;
    signers.add(s.keyid);
    keysSeen.add(material);
  }
  if (known === 0) throw new AegisError(ErrorCode.UnknownKey, 'no signature is by a trusted key');
  if (signers.size < threshold) throw new AegisError(ErrorCode.BadSignature, `${signers.size} valid signature(s) by distinct trusted keys, ${threshold} needed`);
  return { payload: new Uint8Array(payload), signers: [...signers] };
}
