/**
 * The PKCS#11 KEK provider (shared/keystore/kek-pkcs11.ts) against a real SoftHSM2 token made in a
 * temp dir (test/support/softhsm.ts): fields sealed through it, the token attributes of every KEK
 * version (sensitive, never extractable, CKA_VALUE unreadable), the wrap format recomputed by the
 * test's own token session, the lifecycle enforced by the token, state that persists across
 * opens, crash repairs, the one decryption-failed error, and the open errors.
 * The tests run in order and share the token.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode } from '../../shared/errors.js';
import { openField, parseSealedHeader, sealField, type FieldContext } from '../../shared/keystore/envelope.js';
import { Pkcs11Kek, type Pkcs11KekOptions } from '../../shared/keystore/kek-pkcs11.js';
import { inspect, softHsmAvailable, startSoftHsm, type SoftHsm, type SoftHsmToken } from '../support/softhsm.js';
import { failure, lp, u32 } from '../support/bytes.js';

const CTX: FieldContext = { assetUuid: '3f2b8c1e-6d4a-4f0e-9b7c-2a1d5e8f9c03', fieldName: 'postal_address', schemaVersion: 3 };
const FIELD_FAILED = { code: ErrorCode.DecryptionFailed, message: 'field could not be decrypted' };
const DECRYPTION_FAILED = { code: ErrorCode.DecryptionFailed, message: 'decryption failed' };
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;



// SoftHSM2 is a test requirement (.ci/run installs it): without it this suite fails, naming the package.
if (!softHsmAvailable()) throw new Error('SoftHSM2 is needed for the PKCS#11 tests: apt-get install -y softhsm2');

describe('Pkcs11Kek on a SoftHSM2 token', () => {
  let hsm: SoftHsm;
  let tok: SoftHsmToken;
  let opts: Pkcs11KekOptions;
  const open: Pkcs11Kek[] = [];
  const track = (k: Pkcs11Kek): Pkcs11Kek => {
    open.push(k);
    return k;
  };
  const closeAll = (): void => {
    for (const k of open.splice(0)) k.close();
  };
  let kek: Pkcs11Kek;

  beforeAll(async () => {
    hsm = await startSoftHsm();
    tok = hsm.addToken();
    opts = { module: hsm.module, token: tok.label, pin: tok.pin };
  });

  afterAll(async () => {
    closeAll();
    await hsm?.cleanup();
  });

  test('without create an empty token is not-found (pointing at init); with create it holds version 1 as primary', async () => {
    const missing = await failure(Pkcs11Kek.open(opts));
    expect(missing.code).toBe(ErrorCode.NotFound);
    expect(missing.message).toMatch(/init/);
    kek = track(await Pkcs11Kek.open(opts, { create: true }));
    expect(kek.kind).toBe('pkcs11');
    expect(kek.id).toBe(`pkcs11:${tok.label}/aegis`);
    expect(await kek.primaryVersion()).toBe(1);
    const vs = await kek.versions();
    expect(vs).toEqual([{ version: 1, state: 'primary', createdAt: expect.stringMatching(ISO) }]);
    // create on an existing KEK opens it instead of replacing it
    const again = track(await Pkcs11Kek.open(opts, { create: true }));
    expect(await again.versions()).toEqual(vs);
  });

  test('fields seal and open through the token KEK; another KEK name in the same token opens nothing', async () => {
    const pt = text('221B Baker Street, London');
    const sealed = await sealField(kek, CTX, pt);
    expect(Buffer.from(await openField(kek, CTX, sealed))).toEqual(Buffer.from(pt));
    const h = parseSealedHeader(sealed);
    expect(h).toMatchObject({ kekId: kek.id, kekVersion: 1 });
    expect(h.wrappedDek.length).toBe(60);

    const other = track(await Pkcs11Kek.open({ ...opts, name: 'other' }, { create: true }));
    expect(other.id).toBe(`pkcs11:${tok.label}/other`);
    expect(await failure(openField(other, CTX, sealed))).toEqual(FIELD_FAILED);
    // even handed the wrapped DEK directly, the other KEK's key does not unwrap it
    expect(await failure(other.unwrap(h.wrappedDek, 1))).toEqual(DECRYPTION_FAILED);
    expect(Buffer.from(await openField(other, CTX, await sealField(other, CTX, pt)))).toEqual(Buffer.from(pt));
  });

  test('every KEK version is a sensitive, never-extractable token AES-256 key whose CKA_VALUE cannot be read', async () => {
    await kek.addVersion();
    const ins = inspect(hsm.module, tok);
    try {
      const { api } = ins;
      const keys = ins.objects('aegis-kek/', api.CKO_SECRET_KEY);
      expect(keys.map((k) => k.label)).toEqual(['aegis-kek/aegis/1/primary', 'aegis-kek/aegis/2', 'aegis-kek/other/1/primary']);
      const yes = Buffer.of(1);
      const no = Buffer.of(0);
      for (const { handle } of keys) {
        expect(ins.attr(handle, api.CKA_SENSITIVE)).toEqual(yes);
        expect(ins.attr(handle, api.CKA_ALWAYS_SENSITIVE)).toEqual(yes);
        expect(ins.attr(handle, api.CKA_EXTRACTABLE)).toEqual(no);
        expect(ins.attr(handle, api.CKA_NEVER_EXTRACTABLE)).toEqual(yes);
        expect(ins.attr(handle, api.CKA_TOKEN)).toEqual(yes);
        expect(ins.attr(handle, api.CKA_PRIVATE)).toEqual(yes);
        expect(ins.attr(handle, api.CKA_WRAP)).toEqual(no);
        expect((ins.attr(handle, api.CKA_KEY_TYPE) as Buffer).readUInt32LE(0)).toBe(api.CKK_AES); // CK_ULONG, little-endian here
        expect((ins.attr(handle, api.CKA_VALUE_LEN) as Buffer).readUInt32LE(0)).toBe(32);
        expect(ins.attr(handle, api.CKA_VALUE)).toBe('CKR_ATTRIBUTE_SENSITIVE');
        expect((ins.attr(handle, api.CKA_ID) as Buffer).toString('utf8')).toMatch(/^aegis-kek\/(aegis|other)\/[12]\/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      }

      // The wrap format, recomputed with the test's own session: iv | GCM(ct | tag) under the token
      // key, AAD = lengthPrefixed('aegis-pkcs11-wrap-v1', id, u32be(version)).
      // Checked for both versions, so a version left out of the AAD shows.
      for (const [v, handle] of [[1, keys[0]!.handle], [2, keys[1]!.handle]] as const) {
        const dek = randomBytes(32);
        const { version, wrapped } = v === 1 ? await kek.wrap(dek) : await kek.wrap(dek, 2);
        expect(version).toBe(v);
        expect(wrapped.length).toBe(60);
        const decrypt = (aad: Buffer): Buffer => {
          const parameter = { type: api.CK_PARAMS_AES_GCM, iv: Buffer.from(wrapped.subarray(0, 12)), aad, ivBits: 96, tagBits: 128 };
          ins.lib.C_DecryptInit(ins.session, { mechanism: api.CKM_AES_GCM, parameter }, handle);
          return ins.lib.C_Decrypt(ins.session, Buffer.from(wrapped.subarray(12)), Buffer.alloc(48));
        };
        expect(decrypt(lp('aegis-pkcs11-wrap-v1', kek.id, u32(v)))).toEqual(dek);
        expect(() => decrypt(lp('aegis-pkcs11-wrap-v1', kek.id, u32(3 - v)))).toThrow();
        expect(() => decrypt(lp('aegis-pkcs11-wrap-v1', `pkcs11:${tok.label}/other`, u32(v)))).toThrow();
      }
    } finally {
      ins.close();
    }
  });

  test('lifecycle: add, setPrimary, disable (enforced by the token), enable, destroy; the primary is never disabled or destroyed', async () => {
    // version 2 was added above: enabled, not primary, new seals still go to version 1
    expect((await kek.versions()).map(({ version, state }) => [version, state])).toEqual([
      [1, 'primary'],
      [2, 'enabled'],
    ]);
    const old = await sealField(kek, CTX, text('old'));
    expect(parseSealedHeader(old).kekVersion).toBe(1);
    const oldWrapped = parseSealedHeader(old).wrappedDek;

    // a provider opened now keeps a cache that says version 1 is usable
    const stale = track(await Pkcs11Kek.open(opts));

    await kek.setPrimary(2);
    expect(await kek.primaryVersion()).toBe(2);
    const fresh = await sealField(kek, CTX, text('new'));
    expect(parseSealedHeader(fresh).kekVersion).toBe(2);
    expect(Buffer.from(await openField(kek, CTX, old)).toString()).toBe('old');

    await kek.disable(1);
    expect((await kek.versions()).map((v) => v.state)).toEqual(['disabled', 'primary']);
    expect(await failure(kek.unwrap(oldWrapped, 1))).toEqual(DECRYPTION_FAILED);
    expect(await failure(openField(kek, CTX, old))).toEqual(FIELD_FAILED);
    expect((await failure(kek.wrap(randomBytes(32), 1))).code).toBe(ErrorCode.FailedPrecondition);
    // the token itself refuses the key, so a provider that has not re-read the state fails too
    expect(await failure(stale.unwrap(oldWrapped, 1))).toEqual(DECRYPTION_FAILED);
    const ins = inspect(hsm.module, tok);
    try {
      const [k1] = ins.objects('aegis-kek/aegis/1', ins.api.CKO_SECRET_KEY);
      expect(ins.attr(k1!.handle, ins.api.CKA_DECRYPT)).toEqual(Buffer.of(0));
      expect(ins.attr(k1!.handle, ins.api.CKA_ENCRYPT)).toEqual(Buffer.of(0));
    } finally {
      ins.close();
    }
    expect(Buffer.from(await openField(kek, CTX, fresh)).toString()).toBe('new');

    await kek.enable(1);
    expect(Buffer.from(await openField(kek, CTX, old)).toString()).toBe('old');
    expect(Buffer.from(await openField(stale, CTX, old)).toString()).toBe('old');

    // the primary is never disabled or destroyed; unknown versions are not-found
    expect((await failure(kek.disable(2))).code).toBe(ErrorCode.FailedPrecondition);
    expect((await failure(kek.destroy(2))).code).toBe(ErrorCode.FailedPrecondition);
    expect((await failure(kek.setPrimary(9))).code).toBe(ErrorCode.NotFound);
    expect((await failure(kek.enable(9))).code).toBe(ErrorCode.NotFound);
    expect((await failure(kek.wrap(randomBytes(32), 9))).code).toBe(ErrorCode.NotFound);
    expect((await failure(kek.disable(0))).code).toBe(ErrorCode.InvalidArgument);
    expect(await failure(kek.unwrap(oldWrapped, 9))).toEqual(DECRYPTION_FAILED);

    await kek.destroy(1);
    const ins2 = inspect(hsm.module, tok);
    try {
      expect(ins2.objects('aegis-kek/aegis/', ins2.api.CKO_SECRET_KEY).map((o) => o.label)).toEqual(['aegis-kek/aegis/2/primary']);
      expect(ins2.objects('aegis-kek/aegis/', ins2.api.CKO_DATA).map((o) => o.label)).toEqual(['aegis-kek/aegis/1/destroyed']);
    } finally {
      ins2.close();
    }
    expect((await kek.versions()).map(({ version, state }) => [version, state])).toEqual([
      [1, 'destroyed'],
      [2, 'primary'],
    ]);
    expect(await failure(kek.unwrap(oldWrapped, 1))).toEqual(DECRYPTION_FAILED);
    expect(await failure(openField(kek, CTX, old))).toEqual(FIELD_FAILED);
    expect(await failure(stale.unwrap(oldWrapped, 1))).toEqual(DECRYPTION_FAILED);
    expect((await failure(kek.enable(1))).code).toBe(ErrorCode.FailedPrecondition);
    expect((await failure(kek.setPrimary(1))).code).toBe(ErrorCode.FailedPrecondition);
    expect((await failure(kek.wrap(randomBytes(32), 1))).code).toBe(ErrorCode.FailedPrecondition);

    // rotate: a new primary, never reusing a destroyed number
    expect(await kek.rotate()).toBe(3);
    expect(await kek.primaryVersion()).toBe(3);
    expect(Buffer.from(await openField(kek, CTX, fresh)).toString()).toBe('new');
    await kek.disable(2);
  });

  test('state persists in the token: another open, and an open after the module was finalized, see the same versions', async () => {
    const expected = await kek.versions();
    expect(expected.map(({ version, state }) => [version, state])).toEqual([
      [1, 'destroyed'],
      [2, 'disabled'],
      [3, 'primary'],
    ]);
    const second = track(await Pkcs11Kek.open(opts));
    expect(await second.versions()).toEqual(expected);
    expect(await second.primaryVersion()).toBe(3);
    const sealed = await sealField(kek, CTX, text('persist'));

    closeAll(); // the last provider finalizes the module
    kek = track(await Pkcs11Kek.open(opts));
    expect(await kek.versions()).toEqual(expected);
    expect(Buffer.from(await openField(kek, CTX, sealed)).toString()).toBe('persist');
    expect((await Pkcs11Kek.open({ ...opts, name: 'other' }).then(track)).id).toBe(`pkcs11:${tok.label}/other`);
  });

  test('half-done transitions are repaired on open: two primaries, a tombstoned key, one usage flag', async () => {
    const name = 'crash';
    expect((await failure(Pkcs11Kek.open({ ...opts, name: 'a/b' }, { create: true }))).code).toBe(ErrorCode.InvalidArgument);
    const k = track(await Pkcs11Kek.open({ ...opts, name }, { create: true }));
    expect(k.id).toBe(`pkcs11:${tok.label}/crash`);
    await k.addVersion(); // 2
    await k.addVersion(); // 3
    await k.addVersion(); // 4
    const ins = inspect(hsm.module, tok);
    try {
      const { api, lib, session } = ins;
      const key = (v: number): Buffer => ins.objects(`aegis-kek/${name}/${v}`, api.CKO_SECRET_KEY)[0]!.handle;
      // setPrimary(3) crashed after marking 3, before unmarking 1
      lib.C_SetAttributeValue(session, key(3), [{ type: api.CKA_LABEL, value: `aegis-kek/${name}/3/primary` }]);
      // destroy(2) crashed after writing the tombstone
      lib.C_CreateObject(session, [
        { type: api.CKA_CLASS, value: api.CKO_DATA },
        { type: api.CKA_TOKEN, value: true },
        { type: api.CKA_PRIVATE, value: true },
        { type: api.CKA_APPLICATION, value: 'aegis-kek' },
        { type: api.CKA_LABEL, value: `aegis-kek/${name}/2/destroyed` },
        { type: api.CKA_VALUE, value: Buffer.from('2025-01-01T00:00:00Z') },
      ]);
      // disable(4) half written
      lib.C_SetAttributeValue(session, key(4), [{ type: api.CKA_DECRYPT, value: false }]);

      const reopened = track(await Pkcs11Kek.open({ ...opts, name }));
      expect((await reopened.versions()).map(({ version, state }) => [version, state])).toEqual([
        [1, 'enabled'],
        [2, 'destroyed'],
        [3, 'primary'],
        [4, 'disabled'],
      ]);
      expect(ins.objects(`aegis-kek/${name}/`, api.CKO_SECRET_KEY).map((o) => o.label)).toEqual([
        `aegis-kek/${name}/1`,
        `aegis-kek/${name}/3/primary`,
        `aegis-kek/${name}/4`,
      ]);
      expect(ins.attr(key(4), api.CKA_ENCRYPT)).toEqual(Buffer.of(0));
      expect(await reopened.addVersion()).toBe(5);
    } finally {
      ins.close();
    }
  });

  test('a tampered, replayed or mis-sized wrapped DEK is the one decryption-failed error', async () => {
    await kek.enable(2);
    const dek = randomBytes(32);
    const { version, wrapped } = await kek.wrap(dek);
    expect(version).toBe(3);
    expect(Buffer.from(await kek.unwrap(wrapped, 3))).toEqual(dek);
    const { wrapped: under2 } = await kek.wrap(dek, 2);
    expect(Buffer.from(await kek.unwrap(under2, 2))).toEqual(dek);
    const failures = new Set<string>();
    for (let bit = 0; bit < wrapped.length * 8; bit++) {
      const t = new Uint8Array(wrapped);
      t[bit >> 3]! ^= 1 << (bit & 7);
      failures.add(JSON.stringify(await failure(kek.unwrap(t, 3))));
    }
    expect([...failures]).toEqual([JSON.stringify(DECRYPTION_FAILED)]);
    expect(await failure(kek.unwrap(wrapped, 2))).toEqual(DECRYPTION_FAILED); // replayed as another version
    expect(await failure(kek.unwrap(under2, 3))).toEqual(DECRYPTION_FAILED);
    for (const bad of [new Uint8Array(0), wrapped.subarray(0, 59), new Uint8Array([...wrapped, 0]), new Uint8Array(120)]) {
      expect(await failure(kek.unwrap(bad, 3))).toEqual(DECRYPTION_FAILED);
    }
    for (const v of [0, -1, 1.5, 2 ** 32, Number.NaN]) expect(await failure(kek.unwrap(wrapped, v))).toEqual(DECRYPTION_FAILED);
    expect(await failure(kek.unwrap('x' as unknown as Uint8Array, 3))).toEqual(DECRYPTION_FAILED);
    expect((await failure(kek.wrap(new Uint8Array(31)))).code).toBe(ErrorCode.BadKeyLength);
  });

  test('open errors: a missing or unloadable module, an unknown token, a wrong PIN; the PIN is in no message', async () => {
    const wrongPin = `${tok.pin}9`;
    const messages: string[] = [];
    const expectFailure = async (o: Pkcs11KekOptions, code: string, pattern: RegExp): Promise<void> => {
      const f = await failure(Pkcs11Kek.open(o, { create: true }));
      expect(f.code).toBe(code);
      expect(f.message).toMatch(pattern);
      messages.push(f.message);
    };
    const notAModule = join(hsm.dir, 'not-a-module.so');
    writeFileSync(notAModule, 'not an ELF file');
    await expectFailure({ ...opts, module: join(hsm.dir, 'missing.so') }, ErrorCode.Unavailable, /PKCS#11 module .*missing\.so could not be loaded; install softhsm2 .*--pkcs11-module/);
    await expectFailure({ ...opts, module: notAModule }, ErrorCode.Unavailable, /could not be loaded/);
    await expectFailure({ ...opts, token: 'no-such-token' }, ErrorCode.Unavailable, /no PKCS#11 token labelled "no-such-token"/);
    // while providers hold the login: checked against the PIN they logged in with
    expect(open.length).toBeGreaterThan(0);
    await expectFailure({ ...opts, pin: wrongPin }, ErrorCode.Unauthenticated, /the PKCS#11 token .* refused the PIN/);
    // with nothing open: refused by the token itself
    closeAll();
    await expectFailure({ ...opts, pin: wrongPin }, ErrorCode.Unauthenticated, /refused the PIN/);
    await expectFailure({ ...opts, pin: wrongPin, name: 'never-created' }, ErrorCode.Unauthenticated, /refused the PIN/);
    for (const m of messages) {
      expect(m).not.toContain(tok.pin);
      expect(m).not.toContain(tok.soPin);
    }
    // nothing was left open or created by the failures
    const k = track(await Pkcs11Kek.open(opts));
    expect((await k.versions()).map((v) => v.version)).toEqual([1, 2, 3]);
    expect((await failure(Pkcs11Kek.open({ ...opts, name: 'never-created' }))).code).toBe(ErrorCode.NotFound);
    k.close();
    expect((await failure(k.wrap(randomBytes(32)))).code).toBe(ErrorCode.InvalidArgument);
  });
});
