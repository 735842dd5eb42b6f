/**
 * The leak scanner behind the "assume leak" tests (test/support/canary.ts): every encoding of every
 * canary is found when planted in the middle of random bytes, random files and a SQLite-shaped blob
 * match nothing, canaries differ between runs, DMS and NFC/NFD forms are right, and the base64
 * alignment needles find a key at any offset inside a longer base64 string.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import {
  MIN_NEEDLE_BYTES,
  PLANTED_WHAT,
  base64Aligned,
  encodingsOf,
  filesUnder,
  formatDms,
  makeCanaries,
  plantedFile,
  scanBytes,
  scanFiles,
  scanFilesReport,
  toDms,
  type Needle,
} from '../support/canary.js';

const C = makeCanaries();
const NEEDLES = encodingsOf(C);
const whats = (hits: { what: string }[]): string[] => hits.map((h) => h.what);
/** Needles whose label (possibly merged with ' | ') includes `label`. */
const labelled = (label: string): Needle[] => NEEDLES.filter((n) => n.what.split(' | ').includes(label));

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'aegis-canary-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('canaries', () => {
  test('two runs give different canaries', () => {
    const d = makeCanaries();
    for (const k of ['runId', 'address', 'lat', 'lon', 'transcript', 'passphrase', 'token'] as const) expect(d[k]).not.toEqual(C[k]);
    expect(d.key.equals(C.key)).toBe(false);
    const a = new Set(NEEDLES.map((n) => n.bytes.toString('hex')));
    expect(encodingsOf(d).filter((n) => a.has(n.bytes.toString('hex')))).toEqual([]);
  });

  test('shapes: coordinates in range with 7+ decimals not ending in 0; key is 32 bytes', () => {
    for (let i = 0; i < 50; i++) {
      const c = i === 0 ? C : makeCanaries();
      expect(Math.abs(c.lat)).toBeLessThan(80);
      expect(Math.abs(c.lon)).toBeLessThan(170);
      for (const x of [c.lat, c.lon]) {
        const s = String(x);
        expect(s).toMatch(/^-?\d+\.\d{7,}$/);
        expect(s.endsWith('0')).toBe(false);
        for (let k = 4; k <= 7; k++) expect(x.toFixed(k).endsWith('0')).toBe(false);
      }
      expect(c.key).toHaveLength(32);
      expect(c.address).toMatch(/^\d+ [A-Za-z ]+ [0-9a-f]{8}, Apt \d+, \d{5} \S/);
    }
  });

  test('transcript: NFC and NFD differ as bytes, and it has é, ñ, ü and a CJK word', () => {
    const nfc = Buffer.from(C.transcript.normalize('NFC'), 'utf8');
    const nfd = Buffer.from(C.transcript.normalize('NFD'), 'utf8');
    expect(nfc.equals(nfd)).toBe(false);
    expect(nfd.length).toBeGreaterThan(nfc.length);
    expect(C.transcript).toMatch(/é/);
    expect(C.transcript).toMatch(/ñ/);
    expect(C.transcript).toMatch(/ü/);
    expect(C.transcript).toMatch(/\p{Script=Han}{2,}/u);
    expect(Buffer.from(C.address.normalize('NFC')).equals(Buffer.from(C.address.normalize('NFD')))).toBe(false);
    expect(labelled('transcript UTF-8 NFC')[0]!.bytes.equals(labelled('transcript UTF-8 NFD')[0]!.bytes)).toBe(false);
  });
});

describe('DMS', () => {
  test('hand-computed examples', () => {
    expect(formatDms(48.8566, 'lat', 1)).toBe(`48°51'23.8"N`);
    expect(formatDms(-33.8688, 'lat', 1)).toBe(`33°52'7.7"S`);
    expect(formatDms(2.3522, 'lon', 1)).toBe(`2°21'7.9"E`);
    expect(formatDms(151.2093, 'lon', 2)).toBe(`151°12'33.48"E`);
    expect(formatDms(-122.4194, 'lon', 2)).toBe(`122°25'9.84"W`);
    // Rounding carries: 10.9999999° is 10°59'59.99964" → 11°0'0.0".
    expect(formatDms(10.9999999, 'lat', 1)).toBe(`11°0'0.0"N`);
    expect(toDms(-33.8688, 'lat', 1)).toEqual({ deg: 33, min: 52, sec: '7.7', hemisphere: 'S', negative: true });
  });

  test('needles hold the DMS spellings of this run', () => {
    const d = toDms(C.lat, 'lat', 1);
    const s = `${d.deg}°${d.min}'${d.sec}"${d.hemisphere}`;
    expect(labelled('lat DMS hemisphere (1 dp)')[0]!.bytes.toString('utf8')).toBe(s);
    expect(labelled('lat DMS hemisphere spaced (1 dp)')[0]!.bytes.toString('utf8')).toBe(`${d.deg}° ${d.min}' ${d.sec}" ${d.hemisphere}`);
    expect(labelled('lat DMS dms letters signed (1 dp)')[0]!.bytes.toString('utf8')).toBe(`${d.negative ? '-' : ''}${d.deg}d${d.min}m${d.sec}s`);
  });
});

describe('needles', () => {
  test('every required encoding is present and none is shorter than 6 bytes', () => {
    const required: string[] = [];
    for (const n of ['lat', 'lon']) {
      required.push(`${n} decimal String()`, `${n} comma decimal String()`, `${n} E7 decimal`, `${n} float64 LE`, `${n} float64 BE`);
      for (let k = 4; k <= 7; k++) required.push(`${n} decimal toFixed(${k})`, `${n} comma decimal toFixed(${k})`);
      for (const dp of [1, 2]) {
        for (const f of ['hemisphere', 'hemisphere spaced', 'signed', 'signed spaced', 'dms letters signed', 'dms letters hemisphere']) {
          required.push(`${n} DMS ${f} (${dp} dp)`);
        }
      }
    }
    for (const p of ['lat,lon', 'lon,lat']) {
      for (const e of ['LE', 'BE']) required.push(`${p} E7 int32 ${e} pair`, `${p} float32 ${e} pair`);
    }
    for (const n of ['address', 'transcript']) {
      for (const f of ['NFC', 'NFD']) {
        required.push(`${n} UTF-8 ${f}`, `${n} UTF-16LE ${f}`, `${n} JSON-escaped ${f}`, `${n} JSON \\u-escaped lower ${f}`);
      }
      required.push(`${n} 16-char window UTF-8 NFC`);
    }
    for (const n of ['key', 'passphrase', 'token']) {
      required.push(n === 'key' ? 'key raw bytes' : `${n} UTF-8`, `${n} hex lower`, `${n} hex upper`, `${n} base64`, `${n} base64url`);
      for (const a of [0, 1, 2]) required.push(`${n} base64 align ${a}`, `${n} base64url align ${a}`);
    }
    const labels = new Set(NEEDLES.flatMap((n) => n.what.split(' | ')));
    expect(required.filter((r) => !labels.has(r))).toEqual([]);
    expect(NEEDLES.filter((n) => n.bytes.length < MIN_NEEDLE_BYTES).map((n) => n.what)).toEqual([]);
    expect(MIN_NEEDLE_BYTES).toBeGreaterThanOrEqual(6);
  });

  test('spot checks of the byte forms', () => {
    const one = (w: string): Buffer => labelled(w)[0]!.bytes;
    expect(one('lat float64 LE').readDoubleLE()).toBe(C.lat);
    expect(one('lon float64 BE').readDoubleBE()).toBe(C.lon);
    expect(one('lat,lon E7 int32 BE pair').readInt32BE(0)).toBe(Math.round(C.lat * 1e7));
    expect(one('lat,lon E7 int32 LE pair').readInt32LE(4)).toBe(Math.round(C.lon * 1e7));
    expect(one('lat E7 int64 BE').readBigInt64BE()).toBe(BigInt(Math.round(C.lat * 1e7)));
    expect(one('lat comma decimal toFixed(6)').toString()).toBe(C.lat.toFixed(6).replace('.', ','));
    expect(one('key raw bytes').equals(C.key)).toBe(true);
    expect(one('key hex upper').toString()).toBe(C.key.toString('hex').toUpperCase());
    expect(one('token base64').toString()).toBe(Buffer.from(C.token).toString('base64').replace(/=+$/, ''));
    expect(one('transcript UTF-16LE NFD').toString('utf16le')).toBe(C.transcript.normalize('NFD'));
    expect(JSON.parse(`"${one('transcript JSON \\u-escaped upper NFC').toString()}"`)).toBe(C.transcript);
    expect(one('transcript JSON \\u-escaped lower NFC').toString()).toMatch(/^[\x20-\x7e]+$/);
    const win = one('address 16-char window UTF-8 NFC').toString();
    expect(Array.from(win)).toHaveLength(16);
    expect(C.address).toContain(win);
    expect(win).toMatch(/[0-9a-f]{6}/);
  });

  // One test per distinct needle of this run's random canaries: encodings that happen to be the
  // same bytes are one needle (their labels joined), so the count moves a little between runs.
  test.each(NEEDLES.map((n) => [n.what, n] as const))('planted in random bytes, found: %s', (_what, n) => {
    const file = join(dir, `one-${NEEDLES.indexOf(n)}.bin`);
    const start = 1000 + (n.bytes.length % 7);
    const hay = Buffer.concat([randomBytes(start), n.bytes, randomBytes(1003)]);
    writeFileSync(file, hay);
    const found = whats(scanFiles([file], NEEDLES));
    expect(found).toContain(n.what);
    // Anything else it reports overlaps the planted bytes — an encoding inside the planted one
    // (the signed DMS form inside the hemisphere form), or the planted one extended by a random
    // neighbour byte (a signed DMS form followed by a chance 'N') — never a chance match lying
    // wholly in the random bytes.
    const end = start + n.bytes.length;
    const inRandomOnly = (m: (typeof NEEDLES)[number]): boolean => {
      for (let i = hay.indexOf(m.bytes); i >= 0; i = hay.indexOf(m.bytes, i + 1)) if (i + m.bytes.length <= start || i >= end) return true;
      return false;
    };
    const others = NEEDLES.filter((m) => m !== n && found.includes(m.what));
    expect(others.filter(inRandomOnly).map((m) => m.what)).toEqual([]);
  });
});

describe('negative and positive controls', () => {
  test('random files and a SQLite-shaped blob of random bytes match nothing', () => {
    const sub = join(dir, 'clean', 'nested');
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(dir, 'clean', 'random-a.bin'), randomBytes(1 << 20));
    writeFileSync(join(sub, 'random-b.log'), randomBytes(64 * 1024).toString('base64'));
    writeFileSync(join(sub, 'random-c.txt'), randomBytes(64 * 1024).toString('hex'));
    const header = Buffer.alloc(100);
    header.write('SQLite format 3\0', 0, 'latin1');
    header.writeUInt16BE(4096, 16);
    writeFileSync(join(sub, 'store.db'), Buffer.concat([header, randomBytes(4096 * 64 - 100)]));
    writeFileSync(join(sub, 'store.db-wal'), randomBytes(4096 * 8 + 32));
    writeFileSync(join(sub, 'store.db-shm'), Buffer.alloc(32768));
    const files = filesUnder(join(dir, 'clean'));
    expect(files).toHaveLength(6);
    const report = scanFilesReport([...files, join(sub, 'absent.db-journal')], NEEDLES);
    expect(report.hits).toEqual([]);
    expect(report.scanned).toHaveLength(6);
    expect(report.missing).toEqual([join(sub, 'absent.db-journal')]);
  });

  test('a real SQLite database with unrelated rows is clean; the same with the canaries is not', () => {
    const other = makeCanaries();
    const clean = join(dir, 'real-clean.db');
    const db = new Database(clean);
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE r (address TEXT, lat REAL, lon REAL, transcript TEXT, k BLOB)');
    db.prepare('INSERT INTO r VALUES (?, ?, ?, ?, ?)').run(other.address, other.lat, other.lon, other.transcript, other.key);
    const paths = [clean, `${clean}-wal`, `${clean}-shm`];
    expect(scanFiles(paths, NEEDLES)).toEqual([]);
    db.prepare('INSERT INTO r VALUES (?, ?, ?, ?, ?)').run(C.address, C.lat, C.lon, C.transcript, C.key);
    const hits = whats(scanFiles(paths, NEEDLES));
    db.close();
    for (const w of ['address UTF-8 NFC', 'transcript UTF-8 NFC', 'lat float64 BE', 'lon float64 BE', 'key raw bytes']) {
      expect(hits.some((h) => h.split(' | ').includes(w))).toBe(true);
    }
  });

  test('plantedFile is found by the scan (the positive control)', () => {
    const p = plantedFile(join(dir, 'planted'), C);
    expect(filesUnder(join(dir, 'planted'))).toEqual([p]);
    const found = whats(scanFiles([p], NEEDLES));
    for (const w of PLANTED_WHAT) expect(found.some((h) => h.split(' | ').includes(w))).toBe(true);
    // ...and it holds no canary of another run.
    expect(scanFiles([p], encodingsOf(makeCanaries()))).toEqual([]);
  });
});

describe('base64 at an unknown offset', () => {
  test.each([0, 1, 2, 3, 4, 5])('key and token embedded at offset %i inside a longer base64 string are found', (off) => {
    for (const [name, secret] of [
      ['key', C.key],
      ['token', Buffer.from(C.token, 'utf8')],
    ] as const) {
      const buf = Buffer.concat([randomBytes(off), secret, randomBytes(11)]);
      for (const url of [false, true]) {
        const enc = Buffer.from(buf.toString(url ? 'base64url' : 'base64'), 'ascii');
        const found = scanBytes(enc, NEEDLES);
        const want = `${name} ${url ? 'base64url' : 'base64'} align ${off % 3}`;
        expect(found.some((h) => h.split(' | ').includes(want))).toBe(true);
        // Within a larger encoded file, too.
        expect(scanBytes(Buffer.concat([randomBytes(333), enc, randomBytes(333)]), NEEDLES).length).toBeGreaterThan(0);
      }
    }
  });

  test('aligned forms drop exactly the characters that depend on neighbouring bytes', () => {
    const s = Buffer.from([0xff, 0xee, 0xdd, 0xcc]);
    // 4 bytes = 32 bits: align 0 keeps 5 full sextets, align 1 starts at bit 8 → sextet 2 (bit 12) to 40/6 = 6.
    expect(base64Aligned(s, 0, false)).toBe(s.toString('base64').slice(0, 5));
    expect(base64Aligned(s, 1, false)).toBe(Buffer.concat([Buffer.from([0]), s]).toString('base64').slice(2, 6));
    expect(base64Aligned(s, 2, false)).toBe(Buffer.concat([Buffer.from([0, 0]), s]).toString('base64').slice(3, 8));
    // Independent of the filler: same characters with random neighbours.
    for (let i = 0; i < 20; i++) {
      for (const a of [0, 1, 2] as const) {
        const enc = Buffer.concat([randomBytes(a), C.key, randomBytes(2)]).toString('base64');
        expect(enc).toContain(base64Aligned(C.key, a, false));
      }
    }
  });
});
