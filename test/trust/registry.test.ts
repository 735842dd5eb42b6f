/**
 * The publisher registry's verification (shared/trust/registry.ts): TUF root rotation, threshold
 * cheats, freeze, rollback, primary/backup disagreement, revocation, signature bit flips and
 * strict payload parsing.
 */
import { describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { isAegisError } from '../../shared/errors.js';
import { keyIdOf, signEnvelope, type DsseEnvelope } from '../../shared/trust/dsse.js';
import {
  PUBLISHERS_PAYLOAD_TYPE,
  ROOT_PAYLOAD_TYPE,
  checkRegistries,
  parseSnapshot,
  publisherKey,
  signPublishersDoc,
  signRootDoc,
  snapshotBytes,
  verifyPublishers,
  verifyRootChain,
  type PublishersDoc,
  type RegistrySnapshot,
  type RootDoc,
} from '../../shared/trust/registry.js';
import { canonicalJson } from '../../shared/trust/strict-json.js';

const NOW = new Date('2030-06-01T00:00:00.000Z');
const LATER = '2031-06-01T00:00:00.000Z';
const EARLIER = '2030-05-01T00:00:00.000Z';

const newSeed = (): Uint8Array => new Uint8Array(randomBytes(32));
const pk = (s: Uint8Array): Uint8Array => ed25519PublicFromSeed(s);
const idOf = (s: Uint8Array): string => keyIdOf(pk(s));
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

function rootDoc(version: number, seeds: Uint8Array[], threshold: number, expires = LATER): RootDoc {
  return { type: 'aegis-root', version, expires, keys: Object.fromEntries(seeds.map((s) => [idOf(s), b64(pk(s))])), threshold };
}

function pubsDoc(version: number, rootVersion: number, publishers: PublishersDoc['publishers'] = {}, expires = LATER): PublishersDoc {
  return { type: 'aegis-publishers', version, expires, rootVersion, publishers };
}

/** The error code `fn` throws (an AegisError), or 'none'. */
function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'none';
  } catch (e) {
    if (isAegisError(e)) return e.code;
    throw e;
  }
}

/** A raw envelope over exactly these payload bytes (for payloads the signer helpers refuse). */
const rawEnvelope = (type: string, text: string, seeds: Uint8Array[]): DsseEnvelope => signEnvelope(type, Buffer.from(text, 'utf8'), seeds);

describe('root chain', () => {
  const [a, b, c, d] = [newSeed(), newSeed(), newSeed(), newSeed()] as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
  const r1 = rootDoc(1, [a, b, c], 2);
  const e1 = signRootDoc(r1, [a, b, c]);
  // v2 drops c, adds d; threshold 2 of {a, b, d}.
  const r2 = rootDoc(2, [a, b, d], 2);

  test('a valid chain: v1 self-signed, v2 signed by the old and the new threshold', () => {
    const e2 = signRootDoc(r2, [a, b, d]);
    expect(verifyRootChain(undefined, [e1], NOW)).toEqual(r1);
    expect(verifyRootChain(undefined, [e1, e2], NOW)).toEqual(r2);
    // From a pinned (trusted) v1, and a chain served from v1 or from v2.
    expect(verifyRootChain(r1, [e1, e2], NOW)).toEqual(r2);
    expect(verifyRootChain(r1, [e2], NOW)).toEqual(r2);
    expect(verifyRootChain(r2, [e1, e2], NOW)).toEqual(r2);
  });

  test('v2 signed by a minimal set meeting both thresholds (a and b are in both) is accepted', () => {
    expect(verifyRootChain(undefined, [e1, signRootDoc(r2, [a, b])], NOW)).toEqual(r2);
  });

  test('a rotation signed only by the new keys, or only by the old ones, is refused', () => {
    const fresh = [newSeed(), newSeed()];
    const r2new = rootDoc(2, fresh, 2);
    // Only the new (disjoint) key set: no old key signed.
    expect(codeOf(() => verifyRootChain(undefined, [e1, signRootDoc(r2new, fresh)], NOW))).toBe('unknown-key');
    // Only the old keys: the new set never proved it holds its keys.
    expect(codeOf(() => verifyRootChain(undefined, [e1, signRootDoc(r2new, [a, b])], NOW))).toBe('unknown-key');
    // Overlapping sets: new threshold met by {a, d} but only one old key (a) signed.
    expect(codeOf(() => verifyRootChain(undefined, [e1, signRootDoc(r2, [a, d])], NOW))).toBe('bad-signature');
    // Old threshold met by {b, c}, only one new key (b).
    expect(codeOf(() => verifyRootChain(undefined, [e1, signRootDoc(r2, [b, c])], NOW))).toBe('bad-signature');
  });

  test('a first root below its own threshold, a gap in versions, a chain not from v1 are refused', () => {
    expect(codeOf(() => verifyRootChain(undefined, [signRootDoc(r1, [a])], NOW))).toBe('bad-signature');
    const r3 = rootDoc(3, [a, b, d], 2);
    expect(codeOf(() => verifyRootChain(undefined, [e1, signRootDoc(r3, [a, b, d])], NOW))).toBe('malformed');
    expect(codeOf(() => verifyRootChain(undefined, [signRootDoc(r2, [a, b, d])], NOW))).toBe('malformed');
    expect(codeOf(() => verifyRootChain(undefined, [], NOW))).toBe('malformed');
  });

  test('rollback below the trusted root, and a forked history, are refused', () => {
    expect(codeOf(() => verifyRootChain(r2, [e1], NOW))).toBe('rollback');
    const fork = rootDoc(2, [a, b], 2);
    expect(codeOf(() => verifyRootChain(r2, [e1, signRootDoc(fork, [a, b])], NOW))).toBe('registry-mismatch');
  });

  test('an expired final root is refused; an expired intermediate one is not', () => {
    const old1 = rootDoc(1, [a, b, c], 2, EARLIER);
    const eOld1 = signRootDoc(old1, [a, b, c]);
    expect(codeOf(() => verifyRootChain(undefined, [eOld1], NOW))).toBe('expired');
    expect(verifyRootChain(undefined, [eOld1, signRootDoc(r2, [a, b, d])], NOW)).toEqual(r2);
  });

  test('threshold cheat: the same key under two key ids in a root is malformed', () => {
    const doc = { type: 'aegis-root', version: 1, expires: LATER, keys: { [idOf(a)]: b64(pk(a)), [idOf(b)]: b64(pk(a)) }, threshold: 2 };
    expect(codeOf(() => verifyRootChain(undefined, [rawEnvelope(ROOT_PAYLOAD_TYPE, canonicalJson(doc), [a, a])], NOW))).toBe('malformed');
    expect(codeOf(() => signRootDoc(doc as RootDoc, [a]))).toBe('malformed');
  });

  test('a key id that is not the hash of its key, or a threshold above the key count, is malformed', () => {
    const wrongId = { type: 'aegis-root', version: 1, expires: LATER, keys: { [idOf(b)]: b64(pk(a)) }, threshold: 1 };
    expect(codeOf(() => verifyRootChain(undefined, [rawEnvelope(ROOT_PAYLOAD_TYPE, canonicalJson(wrongId), [a])], NOW))).toBe('malformed');
    const tooHigh = { ...rootDoc(1, [a], 1), threshold: 2 };
    expect(codeOf(() => verifyRootChain(undefined, [rawEnvelope(ROOT_PAYLOAD_TYPE, canonicalJson(tooHigh), [a])], NOW))).toBe('malformed');
  });
});

describe('publishers', () => {
  const [a, b, c] = [newSeed(), newSeed(), newSeed()] as [Uint8Array, Uint8Array, Uint8Array];
  const root = rootDoc(1, [a, b, c], 2);
  const alice = newSeed();
  const mallory = newSeed();
  const entries: PublishersDoc['publishers'] = {
    [idOf(alice)]: { publicKey: b64(pk(alice)), name: 'alice' },
    [idOf(mallory)]: { publicKey: b64(pk(mallory)), name: 'mallory', revoked: true, revokedAt: '2030-01-01T00:00:00.000Z' },
  };

  test('a threshold of root keys: accepted; publisherKey gives active keys only', () => {
    const doc = verifyPublishers(root, signPublishersDoc(pubsDoc(3, 1, entries), [a, c]), NOW, 3);
    expect(Buffer.from(publisherKey(doc, idOf(alice))!)).toEqual(Buffer.from(pk(alice)));
    expect(publisherKey(doc, idOf(mallory))).toBeUndefined();
    expect(publisherKey(doc, idOf(newSeed()))).toBeUndefined();
    expect(publisherKey(doc, '__proto__')).toBeUndefined();
  });

  test('threshold cheat: one key signing twice, or its signature relabelled as another key, does not count twice', () => {
    const doc = pubsDoc(1, 1);
    expect(codeOf(() => verifyPublishers(root, signPublishersDoc(doc, [a, a]), NOW))).toBe('bad-signature');
    const once = signPublishersDoc(doc, [a]);
    const relabelled = { ...once, signatures: [once.signatures[0]!, { keyid: idOf(b), sig: once.signatures[0]!.sig }] };
    expect(codeOf(() => verifyPublishers(root, relabelled, NOW))).toBe('bad-signature');
    expect(codeOf(() => verifyPublishers(root, signPublishersDoc(doc, [newSeed(), newSeed()]), NOW))).toBe('unknown-key');
  });

  test('expired (frozen), rolled back, or signed under another root version: refused', () => {
    expect(codeOf(() => verifyPublishers(root, signPublishersDoc(pubsDoc(1, 1, {}, EARLIER), [a, b]), NOW))).toBe('expired');
    expect(codeOf(() => verifyPublishers(root, signPublishersDoc(pubsDoc(4, 1), [a, b]), NOW, 5))).toBe('rollback');
    const root2 = rootDoc(2, [a, b, c], 2);
    expect(codeOf(() => verifyPublishers(root2, signPublishersDoc(pubsDoc(4, 1), [a, b]), NOW))).toBe('rollback');
    expect(codeOf(() => verifyPublishers(root, signPublishersDoc(pubsDoc(4, 2), [a, b]), NOW))).toBe('registry-mismatch');
  });

  test('every single bit flip of a signature is refused (512 bits)', () => {
    const env = signPublishersDoc(pubsDoc(1, 1, entries), [a, b]);
    expect(verifyPublishers(root, env, NOW).version).toBe(1);
    const sig = Buffer.from(env.signatures[1]!.sig, 'base64');
    expect(sig.length).toBe(64);
    const codes = new Set<string>();
    for (let bit = 0; bit < 512; bit++) {
      const flipped = Buffer.from(sig);
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      const bad = { ...env, signatures: [env.signatures[0]!, { keyid: env.signatures[1]!.keyid, sig: flipped.toString('base64') }] };
      codes.add(codeOf(() => verifyPublishers(root, bad, NOW)));
    }
    expect([...codes]).toEqual(['bad-signature']);
  });

  test('duplicate JSON keys, fields outside the schema, non-canonical payloads: malformed', () => {
    const canonical = canonicalJson(pubsDoc(2, 1));
    const dup = canonical.replace('"version":2', '"version":2,"version":9');
    expect(dup).not.toBe(canonical);
    expect(codeOf(() => verifyPublishers(root, rawEnvelope(PUBLISHERS_PAYLOAD_TYPE, dup, [a, b]), NOW))).toBe('malformed');
    const dupRoot = canonicalJson(root).replace('"threshold":2', '"threshold":2,"threshold":1');
    expect(codeOf(() => verifyRootChain(undefined, [rawEnvelope(ROOT_PAYLOAD_TYPE, dupRoot, [a, b, c])], NOW))).toBe('malformed');
    const extra = canonicalJson({ ...pubsDoc(2, 1), extra: true });
    expect(codeOf(() => verifyPublishers(root, rawEnvelope(PUBLISHERS_PAYLOAD_TYPE, extra, [a, b]), NOW))).toBe('malformed');
    const spaced = JSON.stringify(pubsDoc(2, 1), null, 1);
    expect(codeOf(() => verifyPublishers(root, rawEnvelope(PUBLISHERS_PAYLOAD_TYPE, spaced, [a, b]), NOW))).toBe('malformed');
    // A root envelope is not a publishers envelope (payload type bound by the signature).
    expect(codeOf(() => verifyPublishers(root, signRootDoc(root, [a, b, c]), NOW))).toBe('malformed');
  });
});

describe('primary and backup registries', () => {
  const [a, b, c, d] = [newSeed(), newSeed(), newSeed(), newSeed()] as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
  const r1 = rootDoc(1, [a, b, c], 2);
  const e1 = signRootDoc(r1, [a, b, c]);
  const r2 = rootDoc(2, [a, b, d], 2);
  const e2 = signRootDoc(r2, [a, b, d]);
  const alice = newSeed();
  const listed = { [idOf(alice)]: { publicKey: b64(pk(alice)), name: 'alice' } };
  const snap = (roots: DsseEnvelope[], version: number, rootVersion: number, publishers: PublishersDoc['publishers'] = listed, expires = LATER): RegistrySnapshot => ({
    roots,
    publishers: signPublishersDoc(pubsDoc(version, rootVersion, publishers, expires), [a, b]),
  });

  test('agreeing registries: accepted, and the new state holds the versions seen', () => {
    const s = snap([e1], 1, 1);
    const r = checkRegistries(s, parseSnapshot(snapshotBytes(s)), undefined, NOW);
    expect(r.root).toEqual(r1);
    expect(r.state).toEqual({ rootVersion: 1, rootSha256: expect.stringMatching(/^[0-9a-f]{64}$/), publishersVersion: 1 });
    expect(publisherKey(r.publishers, idOf(alice))).toBeDefined();
    // Later: a rotation and a new publishers version, both served by both.
    const s2 = snap([e1, e2], 2, 2);
    const next = checkRegistries(s2, s2, r.state, NOW);
    expect(next.state.rootVersion).toBe(2);
    expect(next.state.publishersVersion).toBe(2);
    // With a pinned root.
    expect(checkRegistries(s2, s2, r.state, NOW, r1).root).toEqual(r2);
  });

  test('a backup newer than the primary, different publishers bytes, different roots: registry-mismatch', () => {
    // A primary behind its backup may be hiding a revocation (registry-lag.test.ts: the reverse only lags).
    expect(codeOf(() => checkRegistries(snap([e1], 1, 1), snap([e1], 2, 1), undefined, NOW))).toBe('registry-mismatch');
    expect(codeOf(() => checkRegistries(snap([e1], 2, 1), snap([e1], 2, 1, {}), undefined, NOW))).toBe('registry-mismatch');
    expect(codeOf(() => checkRegistries(snap([e1, e2], 2, 2), snap([e1], 2, 1), undefined, NOW))).toBe('registry-mismatch');
    // Another root v1 altogether (another key set, self-signed).
    const other = rootDoc(1, [a, b], 2);
    expect(codeOf(() => checkRegistries(snap([e1], 1, 1), snap([signRootDoc(other, [a, b])], 1, 1), undefined, NOW))).toBe('registry-mismatch');
  });

  test('versions older than the state: rollback; a history forked from the state: registry-mismatch', () => {
    const state = checkRegistries(snap([e1, e2], 3, 2), snap([e1, e2], 3, 2), undefined, NOW).state;
    expect(codeOf(() => checkRegistries(snap([e1, e2], 2, 2), snap([e1, e2], 2, 2), state, NOW))).toBe('rollback');
    expect(codeOf(() => checkRegistries(snap([e1], 3, 1), snap([e1], 3, 1), state, NOW))).toBe('rollback');
    const fork = [signRootDoc(rootDoc(1, [a, b], 2), [a, b]), signRootDoc(rootDoc(2, [a, b], 2), [a, b])];
    expect(codeOf(() => checkRegistries(snap(fork, 3, 2), snap(fork, 3, 2), state, NOW))).toBe('registry-mismatch');
  });

  test('expired publishers (a frozen registry): expired', () => {
    const s = snap([e1], 1, 1, listed, EARLIER);
    expect(codeOf(() => checkRegistries(s, s, undefined, NOW))).toBe('expired');
  });

  test('snapshot bytes round-trip; duplicate keys in a snapshot are malformed', () => {
    const s = snap([e1, e2], 2, 2);
    const bytes = snapshotBytes(s);
    expect(parseSnapshot(bytes)).toEqual(s);
    const text = Buffer.from(bytes).toString('utf8');
    expect(codeOf(() => parseSnapshot(text.replace('{"publishers":', '{"roots":[],"publishers":')))).toBe('malformed');
    expect(codeOf(() => parseSnapshot('{"roots":[],"publishers":{}}'))).toBe('malformed');
  });
});
