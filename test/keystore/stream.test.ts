/**
 * AEGIS-STREAM v1 (shared/keystore/stream.ts): the encrypted container for backups and exports.
 * Round trips at the chunk-size edges for both recipient types, the documented layout decoded
 * and decrypted here independently, the one `decryption-failed` error for every cause
 * (truncation anywhere, a dropped final chunk on a chunk boundary, swapped and duplicated
 * chunks, trailing bytes and trailing valid-looking chunks, flipped bytes, wrong keys, weak
 * scrypt parameters re-MACed), atomic 0600 writes, metadata without a key, low-order keys.
 * Low scrypt N (2^14) keeps it fast.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createCipheriv, createDecipheriv, createHash, createHmac, createPrivateKey, createPublicKey, diffieHellman, hkdfSync, randomBytes, scryptSync } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, isAegisError } from '../../shared/errors.js';
import { readKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import {
  createRecipientIdentity,
  decryptFile,
  encryptToFile,
  IDENTITY_LABEL,
  openRecipientIdentity,
  parseRecipient,
  readStreamMeta,
  type Identity,
  type StreamKey,
} from '../../shared/keystore/stream.js';
import { SMALL_ORDER_X25519_HEX } from '../support/codes.js';

const FAST = { N: 2 ** 14, r: 8, p: 1 };
const PASS = 'correct horse battery staple';
const CHUNK = 65536;
const SEALED = CHUNK + 16;
const FAILED = { code: ErrorCode.DecryptionFailed, message: 'the encrypted file could not be decrypted' };
const SIZES = [0, 1, 65535, 65536, 65537, 2 * 65536, 3 * 65536 + 5];

interface Outcome {
  code?: string;
  message: string;
  /** Plaintext chunks yielded before the failure (or in all, with message 'ok'). */
  yielded: number;
  plaintext: Buffer;
}

/** Decrypts and iterates to the end; reports how far it got and how it ended. */
async function run(path: string, key: StreamKey): Promise<Outcome> {
  const got: Buffer[] = [];
  try {
    const { chunks } = await decryptFile(path, key);
    for await (const c of chunks) got.push(Buffer.from(c));
  } catch (e) {
    const plaintext = Buffer.concat(got);
    if (isAegisError(e)) return { code: e.code, message: e.message, yielded: got.length, plaintext };
    return { message: `unexpected: ${String(e)}`, yielded: got.length, plaintext };
  }
  return { message: 'ok', yielded: got.length, plaintext: Buffer.concat(got) };
}

const failure = async (path: string, key: StreamKey): Promise<{ code?: string; message: string }> => {
  const { code, message } = await run(path, key);
  return { code, message };
};

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return isAegisError(e) ? e.code : `unexpected: ${String(e)}`;
  }
}

/** The documented layout, decoded here independently of stream.ts. */
function layout(file: Buffer): {
  m: number;
  type: number;
  stanzaStart: number;
  macOff: number;
  nonceOff: number;
  payloadStart: number;
  chunks: Buffer[];
} {
  expect(file.subarray(0, 12).toString('latin1')).toBe('AEGIS-STREAM');
  expect(file[12]).toBe(1);
  const m = file.readUInt16BE(13);
  const type = file[15 + m]!;
  const s = type === 1 ? 88 : 92;
  const macOff = 16 + m + s;
  const payloadStart = macOff + 48;
  const chunks: Buffer[] = [];
  for (let o = payloadStart; o < file.length; o += SEALED) chunks.push(file.subarray(o, Math.min(o + SEALED, file.length)));
  return { m, type, stanzaStart: 16 + m, macOff, nonceOff: macOff + 32, payloadStart, chunks };
}

const X25519_PKCS8 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const x25519Pub = (sk: Uint8Array): Buffer =>
  Buffer.from(createPublicKey(createPrivateKey({ key: Buffer.concat([X25519_PKCS8, sk]), format: 'der', type: 'pkcs8' })).export({ format: 'jwk' }).x!, 'base64url');
const hkdf = (ikm: Uint8Array, salt: Uint8Array, info: string): Buffer => Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from(info), 32));

function gcmOpen(key: Uint8Array, nonce: Uint8Array, ctTag: Uint8Array, aad?: Uint8Array): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, nonce);
  if (aad) d.setAAD(aad);
  d.setAuthTag(ctTag.subarray(ctTag.length - 16));
  return Buffer.concat([d.update(ctTag.subarray(0, ctTag.length - 16)), d.final()]);
}
function gcmSeal(key: Uint8Array, nonce: Uint8Array, pt: Uint8Array, aad?: Uint8Array): Buffer {
  const c = createCipheriv('aes-256-gcm', key, nonce);
  if (aad) c.setAAD(aad);
  return Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
}
function chunkNonce(i: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeUIntBE(i, 5, 6);
  n[11] = last ? 1 : 0;
  return n;
}

/** The file key, unwrapped by hand from the documented stanza. */
function fileKeyByHand(file: Buffer, secret: { passphrase: string } | { sk: Uint8Array }): Buffer {
  const L = layout(file);
  const s = L.stanzaStart;
  const aadStart = 15 + L.m;
  if (L.type === 1) {
    const salt = file.subarray(s, s + 16);
    const [N, r, p] = [file.readUInt32BE(s + 16), file.readUInt32BE(s + 20), file.readUInt32BE(s + 24)];
    const wrapKey = scryptSync(Buffer.from((secret as { passphrase: string }).passphrase), salt, 32, { N, r, p, maxmem: 256 * 1024 * 1024 });
    const w = file.subarray(s + 28, s + 88);
    return gcmOpen(wrapKey, w.subarray(0, 12), w.subarray(12), file.subarray(aadStart, s + 28));
  }
  const sk = (secret as { sk: Uint8Array }).sk;
  const eph = file.subarray(s, s + 32);
  const shared = diffieHellman({
    privateKey: createPrivateKey({ key: Buffer.concat([X25519_PKCS8, sk]), format: 'der', type: 'pkcs8' }),
    publicKey: createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: eph.toString('base64url') }, format: 'jwk' }),
  });
  const wrapKey = hkdf(shared, Buffer.concat([eph, x25519Pub(sk)]), 'aegis-stream x25519');
  const w = file.subarray(s + 32, s + 92);
  return gcmOpen(wrapKey, w.subarray(0, 12), w.subarray(12), file.subarray(aadStart, s + 32));
}

/** Checks the MAC and decrypts every chunk by hand, from the documented format only. */
function decryptByHand(file: Buffer, fileKey: Buffer): { meta: unknown; plaintext: Buffer } {
  const L = layout(file);
  const mac = createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'aegis-stream header')).update(file.subarray(0, L.macOff)).digest();
  expect(mac.equals(file.subarray(L.macOff, L.macOff + 32))).toBe(true);
  const payloadKey = hkdf(fileKey, file.subarray(L.nonceOff, L.nonceOff + 16), 'aegis-stream payload');
  const out = L.chunks.map((c, i) => gcmOpen(payloadKey, chunkNonce(i, i === L.chunks.length - 1), c));
  return { meta: JSON.parse(file.subarray(15, 15 + L.m).toString('utf8')), plaintext: Buffer.concat(out) };
}

/** The file with its stanza replaced and the header re-MACed under the real file key. */
function withStanza(file: Buffer, fileKey: Buffer, stanzaBody: Buffer): Buffer {
  const L = layout(file);
  const macInput = Buffer.concat([file.subarray(0, L.stanzaStart), stanzaBody]);
  const mac = createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'aegis-stream header')).update(macInput).digest();
  return Buffer.concat([macInput, mac, file.subarray(L.nonceOff)]);
}

/** A scrypt stanza body wrapping `fileKey` under the given parameters (the type byte precedes it). */
function scryptStanza(file: Buffer, fileKey: Buffer, params: { N: number; r: number; p: number }, passphrase = PASS): Buffer {
  const salt = randomBytes(16);
  const head = Buffer.alloc(28);
  salt.copy(head, 0);
  head.writeUInt32BE(params.N, 16);
  head.writeUInt32BE(params.r, 20);
  head.writeUInt32BE(params.p, 24);
  const wrapKey = scryptSync(Buffer.from(passphrase), salt, 32, { ...params, maxmem: 256 * 1024 * 1024 });
  const nonce = randomBytes(12);
  const aad = Buffer.concat([Buffer.of(1), head]);
  return Buffer.concat([head, nonce, gcmSeal(wrapKey, nonce, fileKey, aad)]);
}

function* pieces(data: Buffer, size: number): Generator<Uint8Array> {
  for (let o = 0; o < data.length; o += size) yield data.subarray(o, o + size);
}
async function* asyncPieces(data: Buffer, sizes: number[]): AsyncGenerator<Uint8Array> {
  let o = 0;
  for (let i = 0; o < data.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield data.subarray(o, o + n);
    o += n;
    await new Promise((r) => setImmediate(r));
  }
}

const expectedSize = (headerLen: number, n: number): number => headerLen + (n === 0 ? 16 : Math.ceil(n / CHUNK) * 16 + n);

describe('AEGIS-STREAM v1', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-stream-'));
  afterAll(() => {
    identity?.close();
    other?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  let identity: Identity;
  let other: Identity;
  let recipient: string;
  let sk: Uint8Array;
  const data = new Map<number, Buffer>(SIZES.map((n) => [n, randomBytes(n)]));
  const files: Record<'scrypt' | 'x25519', Map<number, string>> = { scrypt: new Map(), x25519: new Map() };
  const META = { kind: 'backup', created: '2025-01-02T03:04:05.000Z', client: 'c-17', store: 'client.db' };
  let n = 0;
  const fresh = (name = 'f'): string => join(dir, `${name}-${n++}.aegis`);
  const write = (bytes: Uint8Array): string => {
    const p = fresh('t');
    writeFileSync(p, bytes, { mode: 0o600 });
    return p;
  };
  const ID = (): StreamKey => ({ identity });

  beforeAll(async () => {
    const idPath = join(dir, 'identity.json');
    ({ recipient } = await createRecipientIdentity(idPath, PASS, FAST));
    identity = await openRecipientIdentity(idPath, PASS);
    sk = (await readKeyfile(idPath, PASS, { expectedLabel: IDENTITY_LABEL })).x25519!;
    await createRecipientIdentity(join(dir, 'other.json'), PASS, FAST);
    other = await openRecipientIdentity(join(dir, 'other.json'), PASS);
    for (const size of SIZES) {
      const pScrypt = fresh('scrypt');
      await encryptToFile(pScrypt, pieces(data.get(size)!, 1000), { passphrase: PASS, kdf: FAST }, META);
      files.scrypt.set(size, pScrypt);
      const pX = fresh('x25519');
      await encryptToFile(pX, asyncPieces(data.get(size)!, [65536, 7, 70000, 1]), { x25519: recipient }, META);
      files.x25519.set(size, pX);
    }
  });

  describe('round trips', () => {
    for (const type of ['scrypt', 'x25519'] as const) {
      for (const size of SIZES) {
        test(`${type}: ${size} bytes`, async () => {
          const path = files[type].get(size)!;
          const key: StreamKey = type === 'scrypt' ? { passphrase: PASS } : ID();
          const { meta, chunks } = await decryptFile(path, key);
          expect(meta).toEqual(META);
          const got: Buffer[] = [];
          for await (const c of chunks) got.push(Buffer.from(c));
          expect(Buffer.concat(got).equals(data.get(size)!)).toBe(true);
          // One yielded chunk per sealed chunk: 64 KiB each but the last (one empty chunk for 0 bytes).
          expect(got.map((c) => c.length)).toEqual(
            size === 0 ? [0] : Array.from({ length: Math.ceil(size / CHUNK) }, (_, i) => Math.min(CHUNK, size - i * CHUNK)),
          );
          const file = readFileSync(path);
          const L = layout(file);
          expect(L.type).toBe(type === 'scrypt' ? 1 : 2);
          expect(file.length).toBe(expectedSize(L.payloadStart, size));
          expect(L.chunks.slice(0, -1).every((c) => c.length === SEALED)).toBe(true);
        });
      }
    }

    test('encryptToFile returns the size and SHA-256 of the whole file; any split of the input gives the same plaintext', async () => {
      const pt = data.get(3 * 65536 + 5)!;
      for (const input of [[pt], [pt.subarray(0, 5), new Uint8Array(0), pt.subarray(5)], pieces(pt, 65536), asyncPieces(pt, [3, 131072, 9])]) {
        const path = fresh();
        const res = await encryptToFile(path, input, { x25519: recipient }, { kind: 'export' });
        const file = readFileSync(path);
        expect(res).toEqual({ bytes: file.length, sha256: createHash('sha256').update(file).digest('hex') });
        const out = await run(path, ID());
        expect(out.message).toBe('ok');
        expect(out.plaintext.equals(pt)).toBe(true);
      }
    });

    test('created is filled in when the caller gives none; the default scrypt parameters work', async () => {
      const path = fresh();
      const before = Date.now();
      await encryptToFile(path, [Buffer.from('hello')], { passphrase: PASS }, { kind: 'export', rows: 3 });
      const { meta, chunks } = await decryptFile(path, { passphrase: PASS });
      expect(meta).toMatchObject({ kind: 'export', rows: 3 });
      expect(Date.parse(meta.created)).toBeGreaterThanOrEqual(before - 1000);
      for await (const c of chunks) expect(Buffer.from(c).toString()).toBe('hello');
      expect((await readStreamMeta(path)).recipient).toEqual({ type: 'scrypt', N: 2 ** 15, r: 8, p: 1 });
    });
  });

  describe('the documented format', () => {
    test('scrypt and x25519 files decrypt by hand from the layout in the top comment', async () => {
      for (const size of SIZES) {
        const s = readFileSync(files.scrypt.get(size)!);
        const bs = decryptByHand(s, fileKeyByHand(s, { passphrase: PASS }));
        expect(bs.meta).toEqual(META);
        expect(bs.plaintext.equals(data.get(size)!)).toBe(true);
        const x = readFileSync(files.x25519.get(size)!);
        const bx = decryptByHand(x, fileKeyByHand(x, { sk }));
        expect(bx.plaintext.equals(data.get(size)!)).toBe(true);
      }
    });

    test('the recipient string is aegis-x25519: + unpadded base64url of the public key', () => {
      expect(recipient).toBe('aegis-x25519:' + x25519Pub(sk).toString('base64url'));
      expect(identity.recipient).toBe(recipient);
      expect(Buffer.from(parseRecipient(recipient)).equals(x25519Pub(sk))).toBe(true);
    });

    test('a file re-stanzaed by hand with in-bounds scrypt parameters still opens (control for the weak-N test)', async () => {
      const file = readFileSync(files.scrypt.get(65537)!);
      const fk = fileKeyByHand(file, { passphrase: PASS });
      const path = write(withStanza(file, fk, scryptStanza(file, fk, { N: 2 ** 14, r: 8, p: 1 })));
      const out = await run(path, { passphrase: PASS });
      expect(out.message).toBe('ok');
      expect(out.plaintext.equals(data.get(65537)!)).toBe(true);
    });
  });

  describe('truncation', () => {
    for (const size of [65536, 2 * 65536, 3 * 65536 + 5]) {
      test(`at every chunk boundary and inside every chunk (${size} bytes)`, async () => {
        const file = readFileSync(files.x25519.get(size)!);
        const L = layout(file);
        const cuts: number[] = [];
        for (let k = 0; k < L.chunks.length; k++) {
          const start = L.payloadStart + k * SEALED;
          cuts.push(start, start + 1, start + 15, start + 16, start + 17, start + 1000, start + L.chunks[k]!.length - 1);
        }
        cuts.push(file.length - 1);
        for (const cut of cuts.filter((c) => c < file.length)) {
          const out = await run(write(file.subarray(0, cut)), ID());
          expect({ cut, code: out.code, message: out.message }).toEqual({ cut, ...FAILED });
          // Only whole, authenticated chunks before the cut were ever yielded.
          expect({ cut, yielded: out.yielded }).toEqual({ cut, yielded: Math.max(0, Math.floor((cut - L.payloadStart - 1) / SEALED)) });
          expect(data.get(size)!.subarray(0, out.plaintext.length).equals(out.plaintext)).toBe(true);
        }
      });
    }

    test('dropping the final chunk, so the file ends exactly after a full non-final chunk, is caught at the end', async () => {
      for (const size of [65537, 2 * 65536, 3 * 65536 + 5]) {
        const file = readFileSync(files.x25519.get(size)!);
        const L = layout(file);
        const dropped = file.subarray(0, L.payloadStart + (L.chunks.length - 1) * SEALED);
        const out = await run(write(dropped), ID());
        expect({ size, code: out.code, message: out.message }).toEqual({ size, ...FAILED });
        expect(out.yielded).toBe(L.chunks.length - 2);
      }
      // The same for a passphrase file.
      const file = readFileSync(files.scrypt.get(2 * 65536)!);
      expect(await failure(write(file.subarray(0, layout(file).payloadStart + SEALED)), { passphrase: PASS })).toEqual(FAILED);
    });

    test('inside the header: the one error after the magic, malformed within it', async () => {
      for (const type of ['scrypt', 'x25519'] as const) {
        const file = readFileSync(files[type].get(1)!);
        const L = layout(file);
        const key: StreamKey = type === 'scrypt' ? { passphrase: PASS } : ID();
        for (let cut = 0; cut < L.payloadStart; cut++) {
          const got = await failure(write(file.subarray(0, cut)), key);
          if (cut < 12) expect({ cut, ...got }).toEqual({ cut, code: ErrorCode.Malformed, message: 'not an AEGIS-STREAM file' });
          else expect({ cut, ...got }).toEqual({ cut, ...FAILED });
        }
        // Header complete, no payload at all.
        expect(await failure(write(file.subarray(0, L.payloadStart)), key)).toEqual(FAILED);
      }
    });
  });

  describe('reordering, duplication, trailing data', () => {
    const rebuild = (file: Buffer, order: (chunks: Buffer[]) => Buffer[]): Buffer => {
      const L = layout(file);
      return Buffer.concat([file.subarray(0, L.payloadStart), ...order(L.chunks)]);
    };

    test('swapped, duplicated and dropped chunks', async () => {
      const big = readFileSync(files.x25519.get(3 * 65536 + 5)!);
      const even = readFileSync(files.x25519.get(2 * 65536)!);
      const cases: [string, Buffer, number][] = [
        ['swap 0 and 1', rebuild(big, ([a, b, ...r]) => [b!, a!, ...r]), 0],
        ['swap 1 and 2', rebuild(big, ([a, b, c, d]) => [a!, c!, b!, d!]), 1],
        ['swap the two full chunks, the final one first', rebuild(even, ([a, b]) => [b!, a!]), 0],
        ['duplicate chunk 0', rebuild(big, ([a, ...r]) => [a!, a!, ...r]), 1],
        ['duplicate chunk 1', rebuild(big, ([a, b, ...r]) => [a!, b!, b!, ...r]), 2],
        ['duplicate the final chunk', rebuild(big, (c) => [...c, c[c.length - 1]!]), 3],
        ['drop a middle chunk', rebuild(big, ([a, , c, d]) => [a!, c!, d!]), 1],
        ['chunk 0 of another file to the same recipient', rebuild(big, ([, ...r]) => [layout(readFileSync(files.x25519.get(65537)!)).chunks[0]!, ...r]), 0],
      ];
      for (const [what, bytes, yielded] of cases) {
        const out = await run(write(bytes), ID());
        expect({ what, code: out.code, message: out.message, yielded: out.yielded }).toEqual({ what, ...FAILED, yielded });
      }
    });

    test('one trailing byte, and a whole trailing chunk sealed under the real payload key, fail at the end', async () => {
      for (const size of [1, 65536, 3 * 65536 + 5]) {
        const file = readFileSync(files.x25519.get(size)!);
        const L = layout(file);
        const count = L.chunks.length;
        const fk = fileKeyByHand(file, { sk });
        const payloadKey = hkdf(fk, file.subarray(L.nonceOff, L.nonceOff + 16), 'aegis-stream payload');
        const extras: [string, Buffer][] = [
          ['1 byte', Buffer.of(0)],
          ['16 bytes', randomBytes(16)],
          ['a final chunk n', gcmSeal(payloadKey, chunkNonce(count, true), randomBytes(100))],
          ['a full non-final chunk n', gcmSeal(payloadKey, chunkNonce(count, false), randomBytes(CHUNK))],
          ['an empty final chunk n', gcmSeal(payloadKey, chunkNonce(count, true), Buffer.alloc(0))],
          ['a copy of the final chunk', L.chunks[count - 1]!],
        ];
        for (const [what, extra] of extras) {
          const out = await run(write(Buffer.concat([file, extra])), ID());
          expect({ size, what, code: out.code, message: out.message }).toEqual({ size, what, ...FAILED });
          // Everything before the (former) final chunk came out; the failure is at the end.
          expect(out.yielded).toBeGreaterThanOrEqual(count - 1);
        }
      }
    });

    test('a final chunk that is empty when the plaintext is not is refused, even sealed under the real key', async () => {
      const file = readFileSync(files.x25519.get(65536)!);
      const L = layout(file);
      const fk = fileKeyByHand(file, { sk });
      const payloadKey = hkdf(fk, file.subarray(L.nonceOff, L.nonceOff + 16), 'aegis-stream payload');
      const full = gcmSeal(payloadKey, chunkNonce(0, false), data.get(65536)!);
      const empty = gcmSeal(payloadKey, chunkNonce(1, true), Buffer.alloc(0));
      expect(await failure(write(Buffer.concat([file.subarray(0, L.payloadStart), full, empty])), ID())).toEqual(FAILED);
      // Control: the same pieces with a real final chunk open.
      const last = gcmSeal(payloadKey, chunkNonce(1, true), Buffer.from('tail'));
      const ok = await run(write(Buffer.concat([file.subarray(0, L.payloadStart), full, last])), ID());
      expect(ok.message).toBe('ok');
      expect(ok.plaintext.equals(Buffer.concat([data.get(65536)!, Buffer.from('tail')]))).toBe(true);
    });
  });

  describe('tampering and wrong keys: one error', () => {
    test('every flipped byte of an x25519 header (magic: malformed)', async () => {
      const file = readFileSync(files.x25519.get(65537)!);
      const L = layout(file);
      for (let i = 0; i < L.payloadStart; i++) {
        for (const mask of [0x01, 0x80]) {
          const bad = Buffer.from(file);
          bad[i]! ^= mask;
          const got = await failure(write(bad), ID());
          if (i < 12) expect({ i, ...got }).toEqual({ i, code: ErrorCode.Malformed, message: 'not an AEGIS-STREAM file' });
          else expect({ i, mask, ...got }).toEqual({ i, mask, ...FAILED });
        }
      }
    });

    test('flipped bytes of a scrypt header (sampled, every stanza byte)', async () => {
      const file = readFileSync(files.scrypt.get(1)!);
      const L = layout(file);
      const offsets = new Set<number>([12, 13, 14, 15, L.stanzaStart - 1, ...Array.from({ length: 28 }, (_, k) => L.stanzaStart + k)]);
      for (let i = 16; i < L.payloadStart; i += 7) offsets.add(i);
      for (let i = L.macOff; i < L.payloadStart; i += 3) offsets.add(i);
      for (const i of offsets) {
        const bad = Buffer.from(file);
        bad[i]! ^= 0x04;
        expect({ i, ...(await failure(write(bad), { passphrase: PASS })) }).toEqual({ i, ...FAILED });
      }
    });

    test('flipped bits in each chunk: earlier chunks come out, the flipped one fails', async () => {
      const file = readFileSync(files.x25519.get(3 * 65536 + 5)!);
      const L = layout(file);
      for (let k = 0; k < L.chunks.length; k++) {
        const len = L.chunks[k]!.length;
        for (const [off, mask] of [[0, 0x01], [len >> 1, 0x10], [len - 17, 0x80], [len - 16, 0x01], [len - 1, 0x80]] as const) {
          const bad = Buffer.from(file);
          bad[L.payloadStart + k * SEALED + off]! ^= mask;
          const out = await run(write(bad), ID());
          expect({ k, off, code: out.code, message: out.message, yielded: out.yielded }).toEqual({ k, off, ...FAILED, yielded: k });
        }
      }
    });

    test('wrong passphrase, wrong identity, the wrong kind of key', async () => {
      const s = files.scrypt.get(65537)!;
      const x = files.x25519.get(65537)!;
      expect(await failure(s, { passphrase: PASS + ' ' })).toEqual(FAILED);
      expect(await failure(s, { passphrase: 'Correct horse battery staple' })).toEqual(FAILED);
      expect(await failure(s, { identity })).toEqual(FAILED);
      expect(await failure(x, { identity: other })).toEqual(FAILED);
      expect(await failure(x, { passphrase: PASS })).toEqual(FAILED);
      // The passphrase is NFC-normalized: the decomposed form of the same text opens.
      const nfc = fresh();
      await encryptToFile(nfc, [Buffer.from('x')], { passphrase: 'caf\u00e9 au lait!', kdf: FAST }, { kind: 'backup' });
      expect((await run(nfc, { passphrase: 'cafe\u0301 au lait!' })).message).toBe('ok');
    });

    test('an ephemeral key replaced by a small-order point, re-MACed by someone who knows the file key, is refused', async () => {
      const file = readFileSync(files.x25519.get(1)!);
      const fk = fileKeyByHand(file, { sk });
      const L = layout(file);
      for (const h of SMALL_ORDER_X25519_HEX) {
        const body = Buffer.concat([Buffer.from(h, 'hex'), file.subarray(L.stanzaStart + 32, L.stanzaStart + 92)]);
        expect(await failure(write(withStanza(file, fk, body)), ID())).toEqual(FAILED);
      }
    });

    test('a stanza rewritten with weak scrypt N = 2^10 and re-MACed is refused; readStreamMeta says kdf-out-of-bounds', async () => {
      const file = readFileSync(files.scrypt.get(65537)!);
      const fk = fileKeyByHand(file, { passphrase: PASS });
      for (const params of [{ N: 2 ** 10, r: 8, p: 1 }, { N: 2 ** 14, r: 4, p: 1 }]) {
        const weak = withStanza(file, fk, scryptStanza(file, fk, params));
        // Had the bounds not been checked, this would decrypt: the wrap and the MAC are genuine.
        const path = write(weak);
        expect(await failure(path, { passphrase: PASS })).toEqual(FAILED);
        const e = await readStreamMeta(path).catch((x: unknown) => x);
        expect(e).toMatchObject({ code: ErrorCode.InvalidArgument, reason: 'kdf-out-of-bounds' });
      }
    });

    test('oversized scrypt parameters are refused before scrypt runs (no memory blow-up)', async () => {
      const file = readFileSync(files.scrypt.get(1)!);
      const L = layout(file);
      for (const [N, r, p] of [[2 ** 21, 8, 1], [2 ** 31, 8, 1], [2 ** 20, 32, 1], [2 ** 20, 8, 16], [2 ** 14 + 1, 8, 1]] as const) {
        const bad = Buffer.from(file);
        bad.writeUInt32BE(N, L.stanzaStart + 16);
        bad.writeUInt32BE(r, L.stanzaStart + 20);
        bad.writeUInt32BE(p, L.stanzaStart + 24);
        const t0 = Date.now();
        expect(await failure(write(bad), { passphrase: PASS })).toEqual(FAILED);
        expect(Date.now() - t0).toBeLessThan(1000);
      }
    });
  });

  describe('files', () => {
    test('the output has mode 0600, also when it replaces a wider file', async () => {
      const path = fresh();
      writeFileSync(path, 'old', { mode: 0o644 });
      chmodSync(path, 0o644);
      await encryptToFile(path, [Buffer.from('x')], { x25519: recipient }, { kind: 'backup' });
      expect(statSync(path).mode & 0o777).toBe(0o600);
      for (const p of files.scrypt.values()) expect(statSync(p).mode & 0o777).toBe(0o600);
    });

    test('a source that throws midway leaves nothing under the final path and no temp file', async () => {
      const sub = mkdtempSync(join(dir, 'partial-'));
      const path = join(sub, 'backup.aegis');
      async function* failing(): AsyncGenerator<Uint8Array> {
        yield randomBytes(3 * CHUNK);
        yield randomBytes(10);
        throw new Error('disk read error');
      }
      await expect(encryptToFile(path, failing(), { x25519: recipient }, { kind: 'backup' })).rejects.toThrow('disk read error');
      expect(readdirSync(sub)).toEqual([]);
      // A previous backup at the path is left as it was.
      writeFileSync(path, 'previous backup', { mode: 0o600 });
      await expect(encryptToFile(path, failing(), { passphrase: PASS, kdf: FAST }, { kind: 'backup' })).rejects.toThrow('disk read error');
      expect(readFileSync(path, 'utf8')).toBe('previous backup');
      expect(readdirSync(sub)).toEqual(['backup.aegis']);
      // A chunk that is not bytes: invalid-argument, same clean-up.
      expect(await codeOf(encryptToFile(join(sub, 'b2'), [Buffer.from('a'), 'text' as unknown as Uint8Array], { x25519: recipient }, { kind: 'backup' }))).toBe(
        ErrorCode.InvalidArgument,
      );
      expect(readdirSync(sub)).toEqual(['backup.aegis']);
    });

    test('a file replaced between decryptFile and the iteration fails (the header is read again and compared)', async () => {
      const original = readFileSync(files.x25519.get(65537)!);
      const path = write(original);
      const { chunks, meta } = await decryptFile(path, ID());
      expect(meta).toEqual(META);
      // Same file key, nonce and chunks; other metadata, re-MACed: the returned meta would be stale.
      const L = layout(original);
      const fk = fileKeyByHand(original, { sk });
      const otherMeta = Buffer.from(JSON.stringify({ ...META, kind: 'export' }));
      const head = Buffer.concat([original.subarray(0, 13), Buffer.from([otherMeta.length >> 8, otherMeta.length & 0xff]), otherMeta]);
      const swapped = Buffer.concat([head, original.subarray(15 + L.m)]);
      writeFileSync(path, withStanza(swapped, fk, original.subarray(L.stanzaStart, L.macOff)));
      expect((await readStreamMeta(path)).meta.kind).toBe('export');
      const got: Uint8Array[] = [];
      const e = await (async () => {
        for await (const c of chunks) got.push(c);
      })().catch((x: unknown) => x);
      expect(e).toMatchObject(FAILED);
      expect(got).toHaveLength(0);
    });

    test('chunks iterate once; breaking out early is fine', async () => {
      const { chunks } = await decryptFile(files.x25519.get(3 * 65536 + 5)!, ID());
      for await (const c of chunks) {
        expect(c.length).toBe(CHUNK);
        break;
      }
      expect(() => chunks[Symbol.asyncIterator]()).toThrow(expect.objectContaining({ code: ErrorCode.FailedPrecondition }));
    });
  });

  describe('metadata', () => {
    test('readable without a key, with the recipient type', async () => {
      expect(await readStreamMeta(files.scrypt.get(1)!)).toEqual({ version: 1, meta: META, recipient: { type: 'scrypt', ...FAST } });
      expect(await readStreamMeta(files.x25519.get(0)!)).toEqual({ version: 1, meta: META, recipient: { type: 'x25519' } });
    });

    test('not an AEGIS-STREAM file, or a broken header: malformed', async () => {
      expect(await codeOf(readStreamMeta(write(Buffer.from('SQLite format 3\0 and more bytes than the magic'))))).toBe(ErrorCode.Malformed);
      expect(await codeOf(decryptFile(write(Buffer.from('{"format":"aegis-keyfile"}')), { passphrase: PASS }))).toBe(ErrorCode.Malformed);
      const file = readFileSync(files.x25519.get(1)!);
      for (const bad of [file.subarray(0, 40), Buffer.concat([file.subarray(0, 12), Buffer.of(2), file.subarray(13)])]) {
        expect(await codeOf(readStreamMeta(write(bad)))).toBe(ErrorCode.Malformed);
      }
    });

    test('metadata must be a small object with kind backup or export', async () => {
      const r = { x25519: recipient };
      expect(await codeOf(encryptToFile(fresh(), [], r, { kind: 'dump' }))).toBe(ErrorCode.InvalidArgument);
      expect(await codeOf(encryptToFile(fresh(), [], r, {}))).toBe(ErrorCode.InvalidArgument);
      expect(await codeOf(encryptToFile(fresh(), [], r, [] as unknown as Record<string, unknown>))).toBe(ErrorCode.InvalidArgument);
      expect(await codeOf(encryptToFile(fresh(), [], r, { kind: 'backup', created: 5 }))).toBe(ErrorCode.InvalidArgument);
      expect(await codeOf(encryptToFile(fresh(), [], r, { kind: 'backup', note: 'x'.repeat(5000) }))).toBe(ErrorCode.TooLarge);
      const path = fresh();
      await encryptToFile(path, [], r, { kind: 'backup', note: 'x'.repeat(4000) });
      expect((await readStreamMeta(path)).meta.note).toHaveLength(4000);
    });
  });

  describe('recipients and identities', () => {
    test('low-order X25519 recipients are refused, and nothing is written', async () => {
      for (const h of SMALL_ORDER_X25519_HEX) {
        const r = 'aegis-x25519:' + Buffer.from(h, 'hex').toString('base64url');
        expect(() => parseRecipient(r)).toThrow(expect.objectContaining({ code: ErrorCode.LowOrderPoint }));
        const path = fresh();
        expect(await codeOf(encryptToFile(path, [Buffer.from('x')], { x25519: r }, { kind: 'export' }))).toBe(ErrorCode.LowOrderPoint);
        expect(existsSync(path)).toBe(false);
      }
    });

    test('malformed recipient strings are invalid-argument', () => {
      const body = recipient.slice('aegis-x25519:'.length);
      for (const r of [
        '',
        body,
        'age1' + body,
        'aegis-x25519:',
        'aegis-x25519:' + body + '=',
        'aegis-x25519:' + body.slice(1),
        'aegis-x25519:' + body + 'A',
        'aegis-x25519:' + body.slice(0, 42) + '+',
        'AEGIS-X25519:' + body,
        42 as unknown as string,
      ]) {
        expect(() => parseRecipient(r)).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument }));
      }
      // Non-canonical: the unused low bits of the last character set.
      const last = body[42]!;
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const flipped = alphabet[alphabet.indexOf(last) ^ 1]!;
      expect(() => parseRecipient('aegis-x25519:' + body.slice(0, 42) + flipped)).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument }));
    });

    test('identity files: a sealed 0600 keyfile, never overwritten; wrong passphrase refused; closed identities refused', async () => {
      const path = join(dir, 'id2.json');
      const { recipient: r2 } = await createRecipientIdentity(path, PASS, FAST);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      const saved = readFileSync(path, 'utf8');
      expect(JSON.parse(saved)).toMatchObject({ format: 'aegis-keyfile', label: 'aegis/recipient-identity', kdf: { N: FAST.N } });
      expect(await codeOf(createRecipientIdentity(path, PASS, FAST))).toBe(ErrorCode.AlreadyExists);
      expect(readFileSync(path, 'utf8')).toBe(saved);
      expect(await codeOf(openRecipientIdentity(path, 'not the passphrase'))).toBe(ErrorCode.DecryptionFailed);

      const id2 = await openRecipientIdentity(path, PASS);
      expect(id2.recipient).toBe(r2);
      const enc = fresh();
      await encryptToFile(enc, [Buffer.from('for id2')], { x25519: r2 }, { kind: 'export' });
      expect((await run(enc, { identity: id2 })).plaintext.toString()).toBe('for id2');
      id2.close();
      expect(await codeOf(decryptFile(enc, { identity: id2 }))).toBe(ErrorCode.FailedPrecondition);
      const forged = { recipient: r2, close: () => undefined };
      expect(await codeOf(decryptFile(enc, { identity: forged }))).toBe(ErrorCode.FailedPrecondition);
    });

    test('decryptFile refuses a missing key and an empty passphrase as invalid-argument', async () => {
      const p = files.scrypt.get(1)!;
      expect(await codeOf(decryptFile(p, {} as StreamKey))).toBe(ErrorCode.InvalidArgument);
      expect(await codeOf(decryptFile(p, { passphrase: '' }))).toBe(ErrorCode.InvalidArgument);
      expect(await codeOf(encryptToFile(fresh(), [], { passphrase: '' }, { kind: 'backup' }))).toBe(ErrorCode.InvalidArgument);
      expect(await codeOf(encryptToFile(fresh(), [], { passphrase: PASS, kdf: { N: 2 ** 10, r: 8, p: 1 } }, { kind: 'backup' }))).toBe(ErrorCode.InvalidArgument);
    });
  });
});
