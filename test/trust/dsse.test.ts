/** DSSE envelopes with Ed25519: strict parsing, strict verification, thresholds that count a key once. */
import { describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { addSignatures, keyIdOf, MANIFEST_PAYLOAD_TYPE, pae, parseEnvelope, signEnvelope, verifyEnvelope, type DsseEnvelope } from '../../shared/trust/dsse.js';
import { canonicalJson, parseStrictJson } from '../../shared/trust/strict-json.js';
import { codeOf } from '../support/codes.js';

const seedA = randomBytes(32);
const seedB = randomBytes(32);
const pkA = ed25519PublicFromSeed(seedA);
const pkB = ed25519PublicFromSeed(seedB);
const trust = (keys: Uint8Array[]) => (id: string) => keys.find((k) => keyIdOf(k) === id);
const payload = new TextEncoder().encode('{"jobId":"j","round":{"dim":3}}');

describe('DSSE', () => {
  it('PAE is the DSSE v1 encoding', () => {
    expect(Buffer.from(pae('t', new TextEncoder().encode('hi'))).toString()).toBe('DSSEv1 1 t 2 hi');
  });

  it('a signed envelope verifies and round-trips through strict parsing', () => {
    const env = signEnvelope(MANIFEST_PAYLOAD_TYPE, payload, [seedA]);
    const parsed = parseEnvelope(JSON.stringify(env));
    const v = verifyEnvelope(parsed, MANIFEST_PAYLOAD_TYPE, trust([pkA]));
    expect(Buffer.from(v.payload).equals(Buffer.from(payload))).toBe(true);
    expect(v.signers).toEqual([keyIdOf(pkA)]);
  });

  it('refuses every single flipped bit of the signature', () => {
    const env = signEnvelope(MANIFEST_PAYLOAD_TYPE, payload, [seedA]);
    const sig = Buffer.from(env.signatures[0]!.sig, 'base64');
    for (let bit = 0; bit < sig.length * 8; bit++) {
      const flipped = Buffer.from(sig);
      flipped[bit >> 3] = flipped[bit >> 3]! ^ (1 << (bit & 7));
      const e: DsseEnvelope = { ...env, signatures: [{ keyid: env.signatures[0]!.keyid, sig: flipped.toString('base64') }] };
      expect(codeOf(() => verifyEnvelope(e, MANIFEST_PAYLOAD_TYPE, trust([pkA])))).toBe('bad-signature');
    }
  });

  it('refuses every single flipped bit of the payload', () => {
    const env = signEnvelope(MANIFEST_PAYLOAD_TYPE, payload, [seedA]);
    for (let bit = 0; bit < payload.length * 8; bit++) {
      const p = Buffer.from(payload);
      p[bit >> 3] = p[bit >> 3]! ^ (1 << (bit & 7));
      expect(codeOf(() => verifyEnvelope({ ...env, payload: p.toString('base64') }, MANIFEST_PAYLOAD_TYPE, trust([pkA])))).toBe('bad-signature');
    }
  });

  it('refuses an unknown key, a wrong key behind a trusted id, and another payload type', () => {
    const env = signEnvelope(MANIFEST_PAYLOAD_TYPE, payload, [seedB]);
    expect(codeOf(() => verifyEnvelope(env, MANIFEST_PAYLOAD_TYPE, trust([pkA])))).toBe('unknown-key');
    // A trusted id whose key did not make the signature.
    const forged: DsseEnvelope = { ...env, signatures: [{ keyid: keyIdOf(pkA), sig: env.signatures[0]!.sig }] };
    expect(codeOf(() => verifyEnvelope(forged, MANIFEST_PAYLOAD_TYPE, trust([pkA])))).toBe('bad-signature');
    expect(codeOf(() => verifyEnvelope(signEnvelope('application/other', payload, [seedA]), MANIFEST_PAYLOAD_TYPE, trust([pkA])))).toBe('malformed');
  });

  it('counts a key once toward a threshold: a duplicated signature or one key under two ids does not make two', () => {
    const one = signEnvelope(MANIFEST_PAYLOAD_TYPE, payload, [seedA]);
    const dup: DsseEnvelope = { ...one, signatures: [one.signatures[0]!, one.signatures[0]!] };
    expect(codeOf(() => verifyEnvelope(dup, MANIFEST_PAYLOAD_TYPE, trust([pkA, pkB]), 2))).toBe('bad-signature');
    // The same key listed under a second id by a careless trust source.
    const alias = 'f'.repeat(64);
    const aliased: DsseEnvelope = { ...one, signatures: [one.signatures[0]!, { keyid: alias, sig: one.signatures[0]!.sig }] };
    const lookup = (id: string) => (id === alias ? pkA : trust([pkA])(id));
    expect(codeOf(() => verifyEnvelope(aliased, MANIFEST_PAYLOAD_TYPE, lookup, 2))).toBe('bad-signature');
    const both = addSignatures(one, [seedB]);
    expect(verifyEnvelope(both, MANIFEST_PAYLOAD_TYPE, trust([pkA, pkB]), 2).signers).toHaveLength(2);
  });

  it('parses strictly: extra fields, duplicate keys, non-canonical base64 and bad shapes are malformed', () => {
    const env = signEnvelope(MANIFEST_PAYLOAD_TYPE, payload, [seedA]);
    const text = JSON.stringify(env);
    expect(codeOf(() => parseEnvelope(JSON.stringify({ ...env, extra: 1 })))).toBe('malformed');
    expect(codeOf(() => parseEnvelope(text.replace('{"payloadType"', '{"payloadType":"x","payloadType"')))).toBe('malformed');
    expect(codeOf(() => parseEnvelope(JSON.stringify({ ...env, payload: `${env.payload}\n` })))).toBe('malformed');
    expect(codeOf(() => parseEnvelope(JSON.stringify({ ...env, signatures: [] })))).toBe('malformed');
    expect(codeOf(() => parseEnvelope(JSON.stringify({ ...env, signatures: [{ keyid: 'A', sig: env.signatures[0]!.sig }] })))).toBe('malformed');
    expect(codeOf(() => parseEnvelope('not json'))).toBe('malformed');
  });
});

describe('strict JSON', () => {
  it('refuses duplicate keys at any depth, and only in objects', () => {
    expect(codeOf(() => parseStrictJson('{"a":1,"a":2}'))).toBe('malformed');
    expect(codeOf(() => parseStrictJson('{"x":{"b":1,"c":{"d":1},"b":2}}'))).toBe('malformed');
    expect(codeOf(() => parseStrictJson('{"a":"\\"a\\"","b":"a"}'))).toBeUndefined();
    expect(parseStrictJson('{"a":[{"k":1},{"k":2}],"k":3}')).toEqual({ a: [{ k: 1 }, { k: 2 }], k: 3 });
    expect(codeOf(() => parseStrictJson('{"a":1,"\\u0061":2}'))).toBe('malformed');
  });
  it('canonical JSON sorts keys at every depth', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: null } })).toBe('{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}');
  });
});
