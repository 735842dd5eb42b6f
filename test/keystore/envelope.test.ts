/**
 * Envelope encryption of fields (shared/keystore/envelope.ts) and the passphrase KEK provider
 * (shared/keystore/kek-passphrase.ts), DESIGN.md §5: AAD binding to (asset, field, schema
 * version), the one `decryption-failed` error for every cause, the key commitment, re-wrap on
 * rotation without touching data, and a KEK keyfile that never holds a plain key.
 * Low scrypt N (2^14) keeps it fast.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '../../shared/errors.js';
import {
  openField,
  parseSealedHeader,
  rewrapField,
  sealField,
  type FieldContext,
  type KekProvider,
} from '../../shared/keystore/envelope.js';
import { KEK_KEYFILE_LABEL, PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { readKeyfile, writeKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import { failure, lp } from '../support/bytes.js';

const FAST = { N: 2 ** 14, r: 8, p: 1 };
const PASS = 'correct horse battery staple';
const CTX: FieldContext = { assetUuid: '3f2b8c1e-6d4a-4f0e-9b7c-2a1d5e8f9c03', fieldName: 'postal_address', schemaVersion: 3 };
const FIELD_FAILED = { code: ErrorCode.DecryptionFailed, message: 'field could not be decrypted' };
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');


/** The documented layout, decoded here independently of envelope.ts. */
function split(sealed: Uint8Array): { header: Uint8Array; nonce: Uint8Array; commitment: Uint8Array; ctTag: Uint8Array } {
  const b = Buffer.from(sealed);
  const idLen = b.readUInt16BE(5);
  const wLen = b.readUInt16BE(7 + idLen + 4);
  const h = 7 + idLen + 6 + wLen;
  return { header: sealed.subarray(0, h), nonce: sealed.subarray(h, h + 12), commitment: sealed.subarray(h + 12, h + 44), ctTag: sealed.subarray(h + 44) };
}


const commit = (dek: Uint8Array): Buffer => createHmac('sha256', dek).update('aegis-dek-commit-v1').digest();

/** A sealed value built by hand from the documented format, with a chosen commitment. */
async function handSealed(kek: KekProvider, ctx: FieldContext, pt: Uint8Array, dek: Uint8Array, commitment: Uint8Array): Promise<Uint8Array> {
  const { version, wrapped } = await kek.wrap(dek);
  const id = Buffer.from(kek.id, 'utf8');
  const head = Buffer.alloc(7 + id.length + 6);
  head.write('AEF1', 0, 'latin1');
  head[4] = 1;
  head.writeUInt16BE(id.length, 5);
  id.copy(head, 7);
  head.writeUInt32BE(version, 7 + id.length);
  head.writeUInt16BE(wrapped.length, 7 + id.length + 4);
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', dek, nonce);
  c.setAAD(lp('AEF1', Uint8Array.of(1), ctx.assetUuid, ctx.fieldName, String(ctx.schemaVersion)));
  const ct = Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
  return new Uint8Array(Buffer.concat([head, wrapped, nonce, commitment, ct]));
}

describe('envelope encryption of fields', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-envelope-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  let kek: PassphraseKek;
  beforeAll(async () => {
    kek = await PassphraseKek.create(join(dir, 'kek.json'), PASS, { kdf: FAST });
  });

  test('sealed values open again under the same context, for empty to large plaintexts', async () => {
    for (const n of [0, 1, 17, 4096]) {
      const pt = new Uint8Array(randomBytes(n));
      const sealed = await sealField(kek, CTX, pt);
      expect(Buffer.from(sealed.subarray(0, 5))).toEqual(Buffer.from([0x41, 0x45, 0x46, 0x31, 1]));
      expect(Buffer.from(await openField(kek, CTX, sealed))).toEqual(Buffer.from(pt));
      expect(Buffer.from(await openField(() => kek, CTX, sealed))).toEqual(Buffer.from(pt));
    }
    const h = parseSealedHeader(await sealField(kek, CTX, text('x')));
    expect(h).toMatchObject({ formatVersion: 1, kekId: 'passphrase:kek.json', kekVersion: 1 });
    expect(h.wrappedDek.length).toBe(60);
  });

  test('two seals of the same plaintext differ (fresh DEK and nonce each time)', async () => {
    const a = split(await sealField(kek, CTX, text('12 Rue des Lilas')));
    const b = split(await sealField(kek, CTX, text('12 Rue des Lilas')));
    expect(hex(a.nonce)).not.toBe(hex(b.nonce));
    expect(hex(a.commitment)).not.toBe(hex(b.commitment));
    expect(hex(a.ctTag)).not.toBe(hex(b.ctTag));
    expect(hex(a.header)).not.toBe(hex(b.header));
  });

  test('a value moved to another asset, field or schema version does not open', async () => {
    const sealed = await sealField(kek, CTX, text('48.8566,2.3522'));
    for (const ctx of [
      { ...CTX, assetUuid: '3f2b8c1e-6d4a-4f0e-9b7c-2a1d5e8f9c04' },
      { ...CTX, fieldName: 'gps' },
      { ...CTX, fieldName: 'postal_address ' },
      { ...CTX, schemaVersion: 4 },
      { ...CTX, schemaVersion: 30 },
    ]) {
      expect(await failure(openField(kek, ctx, sealed))).toEqual(FIELD_FAILED);
    }
  });

  test('every flipped byte of a sealed value gives the same error', async () => {
    const sealed = await sealField(kek, CTX, text('hello'));
    for (let i = 0; i < sealed.length; i++) {
      for (const mask of [0x01, 0x80]) {
        const bad = sealed.slice();
        bad[i]! ^= mask;
        expect({ i, mask, ...(await failure(openField(kek, CTX, bad))) }).toEqual({ i, mask, ...FIELD_FAILED });
      }
    }
  });

  test('truncated values and trailing bytes give the same error', async () => {
    const sealed = await sealField(kek, CTX, text('hello'));
    for (let n = 0; n < sealed.length; n++) {
      expect({ n, ...(await failure(openField(kek, CTX, sealed.subarray(0, n)))) }).toEqual({ n, ...FIELD_FAILED });
    }
    for (const extra of [Uint8Array.of(0), new Uint8Array(randomBytes(16))]) {
      expect(await failure(openField(kek, CTX, Buffer.concat([sealed, extra])))).toEqual(FIELD_FAILED);
    }
    expect(await failure(openField(kek, CTX, 'not bytes' as unknown as Uint8Array))).toEqual(FIELD_FAILED);
  });

  test('a wrong KEK gives the same error: same id with another key, another id, a resolver that refuses', async () => {
    const sealed = await sealField(kek, CTX, text('transcript'));
    const sameId = await PassphraseKek.create(join(dir, 'impostor.json'), PASS, { kdf: FAST, id: kek.id });
    const otherId = await PassphraseKek.create(join(dir, 'other.json'), PASS, { kdf: FAST });
    expect(await failure(openField(sameId, CTX, sealed))).toEqual(FIELD_FAILED);
    expect(await failure(openField(otherId, CTX, sealed))).toEqual(FIELD_FAILED);
    expect(await failure(openField(() => otherId, CTX, sealed))).toEqual(FIELD_FAILED);
    expect(await failure(openField(() => sameId, CTX, sealed))).toEqual(FIELD_FAILED);
    const unknown = (id: string): KekProvider => {
      throw new Error(`no provider ${id}`);
    };
    expect(await failure(openField(unknown, CTX, sealed))).toEqual(FIELD_FAILED);
    const resolver = (id: string): KekProvider => ({ [kek.id]: kek, [otherId.id]: otherId })[id]!;
    expect(Buffer.from(await openField(resolver, CTX, sealed)).toString()).toBe('transcript');
    expect(Buffer.from(await openField(resolver, CTX, await sealField(otherId, CTX, text('b')))).toString()).toBe('b');
  });

  test('the documented format opens as written; the key commitment is checked', async () => {
    const dek = new Uint8Array(randomBytes(32));
    const good = await handSealed(kek, CTX, text('by hand'), dek, commit(dek));
    expect(Buffer.from(await openField(kek, CTX, good)).toString()).toBe('by hand');

    // GCM still verifies under the real DEK: only the commitment check can refuse these.
    const otherCommit = commit(new Uint8Array(randomBytes(32)));
    expect(await failure(openField(kek, CTX, await handSealed(kek, CTX, text('by hand'), dek, otherCommit)))).toEqual(FIELD_FAILED);
    const real = await sealField(kek, CTX, text('swap me'));
    const parts = split(real);
    const swapped = Buffer.concat([parts.header, parts.nonce, otherCommit, parts.ctTag]);
    expect(await failure(openField(kek, CTX, swapped))).toEqual(FIELD_FAILED);
    // Another value's (valid) commitment: still refused.
    const another = split(await sealField(kek, CTX, text('other')));
    expect(await failure(openField(kek, CTX, Buffer.concat([parts.header, parts.nonce, another.commitment, parts.ctTag])))).toEqual(FIELD_FAILED);
    // Another value's header (its own DEK) on this body: the commitment does not match.
    expect(await failure(openField(kek, CTX, Buffer.concat([another.header, parts.nonce, parts.commitment, parts.ctTag])))).toEqual(FIELD_FAILED);
  });

  test('the DEK is zeroed after sealing and after opening', async () => {
    const seen: Uint8Array[] = [];
    const spy: KekProvider = {
      id: kek.id,
      kind: 'passphrase',
      primaryVersion: () => kek.primaryVersion(),
      wrap: (dek, v) => {
        seen.push(dek);
        return kek.wrap(dek, v);
      },
      unwrap: async (w, v) => {
        const dek = await kek.unwrap(w, v);
        seen.push(dek);
        return dek;
      },
    };
    const sealed = await sealField(spy, CTX, text('zero me'));
    expect(Buffer.from(await openField(spy, CTX, sealed)).toString()).toBe('zero me');
    expect(seen).toHaveLength(2);
    for (const d of seen) expect(hex(d)).toBe('00'.repeat(32));
  });

  test('a malformed context is invalid-argument; a non-AEF1 value has a malformed header', async () => {
    const sealed = await sealField(kek, CTX, text('x'));
    for (const ctx of [
      { ...CTX, assetUuid: CTX.assetUuid.toUpperCase() },
      { ...CTX, assetUuid: '' },
      { ...CTX, fieldName: '' },
      { ...CTX, fieldName: 'a\uD800' },
      { ...CTX, schemaVersion: -1 },
      { ...CTX, schemaVersion: 1.5 },
    ]) {
      expect((await failure(openField(kek, ctx, sealed))).code).toBe(ErrorCode.InvalidArgument);
      expect((await failure(sealField(kek, ctx, text('x')))).code).toBe(ErrorCode.InvalidArgument);
    }
    expect(() => parseSealedHeader(text('AEF2 not a value'))).toThrow(expect.objectContaining({ code: ErrorCode.Malformed }));
    expect(() => parseSealedHeader(sealed.subarray(0, 40))).toThrow(expect.objectContaining({ code: ErrorCode.Malformed }));
  });
});

describe('rotation: re-wrap DEKs without touching data', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-rewrap-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('after rotate, a re-wrapped value names the new version, opens, and keeps nonce, commitment and ciphertext', async () => {
    const path = join(dir, 'kek.json');
    const kek = await PassphraseKek.create(path, PASS, { kdf: FAST });
    const old = await sealField(kek, CTX, text('rotate me'));
    expect(await kek.rotate()).toBe(2);
    expect(await kek.primaryVersion()).toBe(2);
    expect((await kek.versions()).map((v) => [v.version, v.state])).toEqual([[1, "enabled"], [2, "primary"]]);

    const fresh = await sealField(kek, CTX, text('new'));
    expect(parseSealedHeader(fresh).kekVersion).toBe(2);

    const rewrapped = await rewrapField(kek, kek, old);
    const [a, b] = [split(old), split(rewrapped)];
    expect(parseSealedHeader(old).kekVersion).toBe(1);
    expect(parseSealedHeader(rewrapped)).toMatchObject({ formatVersion: 1, kekId: kek.id, kekVersion: 2 });
    expect(hex(b.nonce)).toBe(hex(a.nonce));
    expect(hex(b.commitment)).toBe(hex(a.commitment));
    expect(hex(b.ctTag)).toBe(hex(a.ctTag));
    expect(hex(parseSealedHeader(rewrapped).wrappedDek)).not.toBe(hex(parseSealedHeader(old).wrappedDek));
    expect(Buffer.from(await openField(kek, CTX, rewrapped)).toString()).toBe('rotate me');
    expect(Buffer.from(await openField(kek, CTX, old)).toString()).toBe('rotate me'); // v1 is still held

    // The rotation was persisted: a fresh open sees both versions and primary 2.
    const reopened = await PassphraseKek.open(path, PASS);
    expect(reopened.id).toBe(kek.id);
    expect(await reopened.primaryVersion()).toBe(2);
    expect(Buffer.from(await openField(reopened, CTX, rewrapped)).toString()).toBe('rotate me');
    expect(Buffer.from(await openField(reopened, CTX, old)).toString()).toBe('rotate me');
    expect(await reopened.rotate()).toBe(3);

    // An explicit target version; an unknown one is not-found.
    expect(parseSealedHeader(await rewrapField(kek, kek, rewrapped, 1)).kekVersion).toBe(1);
    expect((await failure(rewrapField(kek, kek, old, 9))).code).toBe(ErrorCode.NotFound);
  });

  test('re-wrap to another provider (migration); re-wrap of a bad value or with the wrong KEK fails', async () => {
    const a = await PassphraseKek.create(join(dir, 'a.json'), PASS, { kdf: FAST });
    const b = await PassphraseKek.create(join(dir, 'b.json'), PASS, { kdf: FAST });
    const sealed = await sealField(a, CTX, text('migrate'));
    const moved = await rewrapField(a, b, sealed);
    expect(parseSealedHeader(moved).kekId).toBe(b.id);
    expect(hex(split(moved).ctTag)).toBe(hex(split(sealed).ctTag));
    expect(Buffer.from(await openField(b, CTX, moved)).toString()).toBe('migrate');
    expect(await failure(openField(a, CTX, moved))).toEqual(FIELD_FAILED);

    expect(await failure(rewrapField(b, b, sealed))).toEqual(FIELD_FAILED);
    const bad = sealed.slice();
    bad[bad.length - 40]! ^= 1; // inside the commitment
    expect(await failure(rewrapField(a, a, bad))).toEqual(FIELD_FAILED);
    expect(await failure(rewrapField(a, a, sealed.subarray(0, 20)))).toEqual(FIELD_FAILED);
  });
});

describe('PassphraseKek keyfile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-kek-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('the keyfile is mode 0600 and holds no plain key', async () => {
    const path = join(dir, 'kek.json');
    const kek = await PassphraseKek.create(path, PASS, { kdf: FAST });
    await kek.rotate();
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const raw = readFileSync(path);
    const content = raw.toString('utf8');
    expect(content).not.toContain(PASS);
    // Look inside with the passphrase (as only a test should) to learn the keys, then search for them.
    const secrets = await readKeyfile(path, PASS, { expectedLabel: KEK_KEYFILE_LABEL });
    expect(Object.keys(secrets).sort()).toEqual(['kek-id', 'primary', 'states', 'v1', 'v2']);
    for (const name of ['v1', 'v2']) {
      const key = secrets[name]!;
      expect(key.length).toBe(32);
      for (const enc of ['base64', 'base64url', 'hex'] as const) expect(content).not.toContain(Buffer.from(key).toString(enc));
      expect(raw.includes(Buffer.from(key))).toBe(false);
    }
    expect(JSON.parse(content)).toMatchObject({ format: 'aegis-keyfile', label: KEK_KEYFILE_LABEL });
  });

  test('a wrong passphrase, a weak passphrase, an existing file and a foreign keyfile are refused', async () => {
    const path = join(dir, 'kek2.json');
    await PassphraseKek.create(path, PASS, { kdf: FAST });
    // The one failure for every cause, with the file named (never the passphrase).
    const wrong = await failure(PassphraseKek.open(path, 'correct horse battery stapler'));
    expect(wrong).toEqual({ code: ErrorCode.DecryptionFailed, message: `decryption failed: ${path} does not open: the passphrase is wrong or the file was altered` });
    expect(wrong.message).not.toContain('correct horse');
    expect((await failure(PassphraseKek.create(join(dir, 'weak.json'), 'short pass', { kdf: FAST }))).code).toBe(ErrorCode.InvalidArgument);
    expect(await failure(PassphraseKek.create(path, PASS, { kdf: FAST }))).toEqual({
      code: ErrorCode.InvalidArgument,
      message: 'a file already exists at the KEK keyfile path; refusing to overwrite it',
    });
    expect(Buffer.from(readFileSync(path)).length).toBeGreaterThan(0); // not overwritten
    // A sealed keyfile for another purpose (another label) does not open as a KEK set.
    const foreign = join(dir, 'foreign.json');
    await writeKeyfile(foreign, PASS, 'coordinator/ca', { v1: new Uint8Array(32), primary: Uint8Array.of(0, 0, 0, 1) }, FAST);
    expect((await failure(PassphraseKek.open(foreign, PASS))).code).toBe(ErrorCode.DecryptionFailed);
    // The right label but not a KEK set.
    const odd = join(dir, 'odd.json');
    await writeKeyfile(odd, PASS, KEK_KEYFILE_LABEL, { v1: new Uint8Array(16), primary: Uint8Array.of(0, 0, 0, 1), 'kek-id': text('x') }, FAST);
    expect((await failure(PassphraseKek.open(odd, PASS))).code).toBe(ErrorCode.Malformed);
  });

  test('unwrap refuses another version, a flipped byte, another length, with one error', async () => {
    const kek = await PassphraseKek.create(join(dir, 'kek3.json'), PASS, { kdf: FAST });
    await kek.rotate();
    const dek = new Uint8Array(randomBytes(32));
    const { version, wrapped } = await kek.wrap(dek, 1);
    expect(version).toBe(1);
    expect(hex(await kek.unwrap(wrapped, 1))).toBe(hex(dek));
    const one = { code: ErrorCode.DecryptionFailed, message: 'decryption failed' };
    expect(await failure(kek.unwrap(wrapped, 2))).toEqual(one);
    expect(await failure(kek.unwrap(wrapped, 7))).toEqual(one);
    for (let i = 0; i < wrapped.length; i++) {
      const bad = wrapped.slice();
      bad[i]! ^= 1;
      expect(await failure(kek.unwrap(bad, 1))).toEqual(one);
    }
    expect(await failure(kek.unwrap(wrapped.subarray(1), 1))).toEqual(one);
    expect(await failure(kek.unwrap(Buffer.concat([wrapped, Uint8Array.of(0)]), 1))).toEqual(one);
    expect((await failure(kek.wrap(new Uint8Array(16)))).code).toBe(ErrorCode.BadKeyLength);
    kek.close();
    expect((await failure(kek.unwrap(wrapped, 1))).code).toBe(ErrorCode.InvalidArgument);
  });
});

describe('format 2: the record version in the AAD', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-envelope-rv-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const V3: FieldContext = { ...CTX, recordVersion: 3 };

  test('a value sealed for record version 3 has format byte 2 and the documented AAD, and opens only as version 3', async () => {
    const kek = await PassphraseKek.create(join(dir, 'kek.json'), PASS, { kdf: FAST });
    const sealed = await sealField(kek, V3, text('record v3'));
    expect(Buffer.from(sealed.subarray(0, 5))).toEqual(Buffer.from([0x41, 0x45, 0x46, 0x31, 2]));
    expect(parseSealedHeader(sealed).formatVersion).toBe(2);
    // Opened by hand: the AAD is lengthPrefixed('AEF1', [2], uuid, field, schema, record version).
    const { header, nonce, ctTag } = split(sealed);
    const dek = await kek.unwrap(parseSealedHeader(sealed).wrappedDek, parseSealedHeader(sealed).kekVersion);
    const d = createDecipheriv('aes-256-gcm', dek, nonce);
    d.setAAD(lp('AEF1', Uint8Array.of(2), CTX.assetUuid, CTX.fieldName, String(CTX.schemaVersion), '3'));
    d.setAuthTag(ctTag.subarray(ctTag.length - 16));
    expect(Buffer.concat([d.update(ctTag.subarray(0, ctTag.length - 16)), d.final()]).toString()).toBe('record v3');
    expect(header.length).toBeGreaterThan(5);

    expect(Buffer.from(await openField(kek, V3, sealed)).toString()).toBe('record v3');
    for (const ctx of [{ ...CTX, recordVersion: 2 }, { ...CTX, recordVersion: 4 }, { ...CTX, recordVersion: 0 }, CTX]) {
      expect((await failure(openField(kek, ctx, sealed))).code).toBe(ErrorCode.DecryptionFailed);
    }
    // The byte flipped to 1 (a downgrade to the version-less AAD) opens neither way.
    const flipped = new Uint8Array(sealed);
    flipped[4] = 1;
    for (const ctx of [CTX, V3]) expect((await failure(openField(kek, ctx, flipped))).code).toBe(ErrorCode.DecryptionFailed);
    // A format-1 value does not open where a record version is expected.
    const old = await sealField(kek, CTX, text('no record version'));
    expect(Buffer.from(await openField(kek, CTX, old)).toString()).toBe('no record version');
    expect((await failure(openField(kek, { ...CTX, recordVersion: 0 }, old))).code).toBe(ErrorCode.DecryptionFailed);
    expect((await failure(sealField(kek, { ...CTX, recordVersion: -1 }, text('x')))).code).toBe(ErrorCode.InvalidArgument);
    expect((await failure(sealField(kek, { ...CTX, recordVersion: 1.5 }, text('x')))).code).toBe(ErrorCode.InvalidArgument);
    kek.close();
  });

  test('a re-wrap keeps format 2 and the body; the value still opens only as its version', async () => {
    const kek = await PassphraseKek.create(join(dir, 'kek2.json'), PASS, { kdf: FAST });
    const sealed = await sealField(kek, V3, text('rewrap v3'));
    await kek.rotate();
    const rewrapped = await rewrapField(kek, kek, sealed);
    expect(parseSealedHeader(rewrapped)).toMatchObject({ formatVersion: 2, kekVersion: 2 });
    expect(hex(split(rewrapped).ctTag)).toBe(hex(split(sealed).ctTag));
    expect(Buffer.from(await openField(kek, V3, rewrapped)).toString()).toBe('rewrap v3');
    expect((await failure(openField(kek, CTX, rewrapped))).code).toBe(ErrorCode.DecryptionFailed);
    kek.close();
  });
});
