/**
 * Canaries for the "assume leak" tests: values unique to the run, planted into the client store,
 * backups, exports and logs, and every byte encoding a leak of them could take, so that a test can
 * scan the resulting files (SQLite db, -wal, -shm, backups, log output) and require that none
 * appears. `plantedFile` writes the positive control: a file where two canaries MUST be found, so a
 * scan cannot pass by finding nothing (a wrong path, an empty file, a broken scanner).
 *
 * Every needle is at least MIN_NEEDLE_BYTES long and carries a random part, so a clean file never
 * matches by accident. The cost of that rule: a single 4-byte value (an E7 coordinate as int32, a
 * float32) is only searched as the lat/lon pair (8 bytes, both orders), which is how it sits in a
 * struct or in a SQLite record whose two columns are adjacent; the single values are searched in
 * their 8-byte forms (float64, int64) and as text.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Canaries {
  /** Hex, names this run (temp dirs, file names); not itself a canary. */
  runId: string;
  /** A postal address with a random token, and non-ASCII so that NFC and NFD differ. */
  address: string;
  /** Random, |lat| in [10, 80), 9 decimals, no printed form used here ends in 0. */
  lat: number;
  /** Random, |lon| in [10, 170), 9 decimals, no printed form used here ends in 0. */
  lon: number;
  /** A voice transcript with é, ñ, ü, ç, a double quote and a CJK word, plus a random token. */
  transcript: string;
  /** 32 random bytes. */
  key: Buffer;
  passphrase: string;
  /** A bearer-token-looking string. */
  token: string;
}

export interface Needle {
  /** e.g. 'lat comma decimal toFixed(5)'; several labels joined by ' | ' when two encodings coincide. */
  what: string;
  bytes: Buffer;
}

export interface ScanHit {
  file: string;
  what: string;
}

export interface ScanReport {
  hits: ScanHit[];
  /** Files read, with their size: lets a test assert the scan actually covered something. */
  scanned: { file: string; bytes: number }[];
  /** Paths that did not exist (e.g. no -wal after a checkpoint); skipped. */
  missing: string[];
}

export const MIN_NEEDLE_BYTES = 6;

const rnd = (n: number): Buffer => randomBytes(n);
const hexTok = (bytes: number): string => rnd(bytes).toString('hex');
const randInt = (lo: number, hi: number): number => lo + (rnd(4).readUInt32BE() % (hi - lo)); // [lo, hi), bias irrelevant here

/** Digits after the decimal point in String(x) (0 when there is no point). */
function decimalsOf(s: string): number {
  const i = s.indexOf('.');
  return i < 0 ? 0 : s.length - i - 1;
}

export interface Dms {
  deg: number;
  min: number;
  /** Seconds as printed with `decimals` decimals, e.g. '23.8'. */
  sec: string;
  hemisphere: string;
  negative: boolean;
}

/**
 * Degrees/minutes/seconds with the seconds rounded to `decimals` decimals, computed in integer
 * units of 10^-decimals seconds so that rounding carries into minutes and degrees (59.96" → 1').
 */
export function toDms(x: number, axis: 'lat' | 'lon', decimals: number): Dms {
  const scale = 10 ** decimals;
  const total = Math.round(Math.abs(x) * 3600 * scale);
  const deg = Math.floor(total / (3600 * scale));
  const rest = total - deg * 3600 * scale;
  const min = Math.floor(rest / (60 * scale));
  const secUnits = rest - min * 60 * scale;
  const sec = (secUnits / scale).toFixed(decimals);
  const negative = x < 0;
  const hemisphere = axis === 'lat' ? (negative ? 'S' : 'N') : negative ? 'W' : 'E';
  return { deg, min, sec, hemisphere, negative };
}

/** 48.8566 → `48°51'23.8"N` (decimals = 1). */
export function formatDms(x: number, axis: 'lat' | 'lon', decimals: number): string {
  const d = toDms(x, axis, decimals);
  return `${d.deg}°${d.min}'${d.sec}"${d.hemisphere}`;
}

/** Every printed form of a coordinate this module searches for ends in a non-zero digit. */
function coordinateOk(x: number): boolean {
  const s = String(x);
  if (decimalsOf(s) < 7 || s.endsWith('0')) return false;
  for (let k = 4; k <= 7; k++) if (x.toFixed(k).endsWith('0')) return false;
  for (const d of [1, 2]) if (toDms(x, 'lat', d).sec.endsWith('0')) return false;
  return true;
}

function randomCoordinate(maxAbs: number): number {
  for (;;) {
    // 9 decimals: an integer number of 1e-9 degrees, last digit non-zero.
    const whole = randInt(10, maxAbs);
    const frac = randInt(0, 100_000_000) * 10 + randInt(1, 10);
    const x = (rnd(1)[0]! & 1 ? -1 : 1) * (whole + frac / 1e9);
    if (Math.abs(x) < maxAbs && coordinateOk(x)) return x;
  }
}

const STREETS = ['Quillberry Lane', 'Marrowfield Road', 'Thistlewood Avenue', 'Emberly Court'];
const CITIES = ['Springfield-Müllheim', 'Saint-Étienne-sur-Loire', 'Villanueva de Peñarroya', 'Zürichsee Nord'];

/** Fresh canaries, unique to the call (all random parts come from crypto.randomBytes). */
export function makeCanaries(): Canaries {
  const street = STREETS[randInt(0, STREETS.length)]!;
  const city = CITIES[randInt(0, CITIES.length)]!;
  const address = `${randInt(100, 10000)} ${street} ${hexTok(4)}, Apt ${randInt(2, 99)}, ${randInt(10000, 100000)} ${city}`;
  const transcript = `Señor Núñez dijo "über café" cerca de 東京駅 ${hexTok(5)}, ça va, güero ñandú`;
  return {
    runId: hexTok(8),
    address: address.normalize('NFC'),
    lat: randomCoordinate(80),
    lon: randomCoordinate(170),
    transcript: transcript.normalize('NFC'),
    key: rnd(32),
    passphrase: `canary pass ${hexTok(6)} lantern ${hexTok(4)}`,
    token: `aeg_ct_${rnd(24).toString('base64url')}`,
  };
}

// ---------------------------------------------------------------------------------------------
// Encodings

const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
const utf16le = (s: string): Buffer => Buffer.from(s, 'utf16le');
const stripPad = (s: string): string => s.replace(/=+$/, '');

/** JSON.stringify's output without the surrounding quotes. */
const jsonInner = (s: string): string => JSON.stringify(s).slice(1, -1);

/** The all-ASCII JSON form (Python ensure_ascii, Jackson ESCAPE_NON_ASCII): \uXXXX for every non-ASCII UTF-16 unit. */
function jsonAscii(s: string, upper: boolean): string {
  return jsonInner(s).replace(/[^\x20-\x7e]/g, (ch) => {
    const h = ch.charCodeAt(0).toString(16).padStart(4, '0');
    return `\\u${upper ? h.toUpperCase() : h}`;
  });
}

/**
 * The base64 characters that depend only on `secret` when it sits `align` bytes (mod 3) into a
 * longer byte string that is encoded as a whole: encode `align` filler bytes + secret and keep the
 * characters whose 6 bits all come from the secret. align = 0 drops only the last partial character.
 */
export function base64Aligned(secret: Uint8Array, align: 0 | 1 | 2, url: boolean): string {
  const enc = Buffer.concat([Buffer.alloc(align), Buffer.from(secret)]).toString(url ? 'base64url' : 'base64');
  const first = Math.ceil((8 * align) / 6);
  const end = Math.floor((8 * (align + secret.length)) / 6); // exclusive
  return enc.slice(first, end);
}

function secretNeedles(name: string, bytes: Buffer, isString: boolean): Needle[] {
  const out: Needle[] = [{ what: isString ? `${name} UTF-8` : `${name} raw bytes`, bytes }];
  if (isString) out.push({ what: `${name} UTF-16LE`, bytes: utf16le(bytes.toString('utf8')) });
  out.push(
    { what: `${name} hex lower`, bytes: utf8(bytes.toString('hex')) },
    { what: `${name} hex upper`, bytes: utf8(bytes.toString('hex').toUpperCase()) },
    { what: `${name} base64`, bytes: utf8(stripPad(bytes.toString('base64'))) },
    { what: `${name} base64url`, bytes: utf8(bytes.toString('base64url')) },
  );
  for (const align of [0, 1, 2] as const) {
    out.push(
      { what: `${name} base64 align ${align}`, bytes: utf8(base64Aligned(bytes, align, false)) },
      { what: `${name} base64url align ${align}`, bytes: utf8(base64Aligned(bytes, align, true)) },
    );
  }
  return out;
}

function textNeedles(name: string, s: string): Needle[] {
  const out: Needle[] = [];
  for (const form of ['NFC', 'NFD'] as const) {
    const t = s.normalize(form);
    out.push(
      { what: `${name} UTF-8 ${form}`, bytes: utf8(t) },
      { what: `${name} UTF-16LE ${form}`, bytes: utf16le(t) },
      { what: `${name} JSON-escaped ${form}`, bytes: utf8(jsonInner(t)) },
      { what: `${name} JSON \\u-escaped lower ${form}`, bytes: utf8(jsonAscii(t, false)) },
      { what: `${name} JSON \\u-escaped upper ${form}`, bytes: utf8(jsonAscii(t, true)) },
    );
  }
  // A partial leak (a truncated preview): 16 characters around the random token, NFC.
  const chars = Array.from(s.normalize('NFC'));
  const tok = /[0-9a-f]{8,}/.exec(s.normalize('NFC'));
  const at = tok ? Array.from(s.normalize('NFC').slice(0, tok.index)).length : Math.floor(chars.length / 2);
  const start = Math.max(0, Math.min(at - 4, chars.length - 16));
  out.push({ what: `${name} 16-char window UTF-8 NFC`, bytes: utf8(chars.slice(start, start + 16).join('')) });
  return out;
}

function f64(x: number, le: boolean): Buffer {
  const b = Buffer.alloc(8);
  if (le) b.writeDoubleLE(x);
  else b.writeDoubleBE(x);
  return b;
}

const e7 = (x: number): number => Math.round(x * 1e7);

function coordinateNeedles(name: 'lat' | 'lon', x: number): Needle[] {
  const out: Needle[] = [];
  const decimal = (what: string, s: string): void => {
    out.push({ what: `${name} decimal ${what}`, bytes: utf8(s) });
    out.push({ what: `${name} comma decimal ${what}`, bytes: utf8(s.replace('.', ',')) });
  };
  decimal('String()', String(x));
  for (let k = 4; k <= 7; k++) decimal(`toFixed(${k})`, x.toFixed(k));

  for (const decimals of [1, 2]) {
    const d = toDms(x, name, decimals);
    const sg = d.negative ? '-' : '';
    const pad = (n: number | string, w: number): string => String(n).padStart(w, '0');
    const M = d.min;
    const S = d.sec;
    const Mp = pad(d.min, 2);
    const Sp = pad(d.sec, 3 + decimals);
    const H = d.hemisphere;
    const forms: [string, string][] = [
      ['hemisphere', `${d.deg}°${M}'${S}"${H}`],
      ['hemisphere spaced', `${d.deg}° ${M}' ${S}" ${H}`],
      ['signed', `${sg}${d.deg}°${M}'${S}"`],
      ['signed spaced', `${sg}${d.deg}° ${M}' ${S}"`],
      ['primes hemisphere', `${d.deg}°${M}′${S}″${H}`],
      ['dms letters signed', `${sg}${d.deg}d${M}m${S}s`],
      ['dms letters hemisphere', `${d.deg}d${M}m${S}s${H}`],
      ['zero-padded hemisphere', `${d.deg}°${Mp}'${Sp}"${H}`],
      ['zero-padded signed', `${sg}${d.deg}°${Mp}'${Sp}"`],
      ['comma seconds hemisphere', `${d.deg}°${M}'${S.replace('.', ',')}"${H}`],
    ];
    for (const [label, s] of forms) out.push({ what: `${name} DMS ${label} (${decimals} dp)`, bytes: utf8(s) });
  }

  const E = e7(x);
  out.push({ what: `${name} E7 decimal`, bytes: utf8(String(E)) });
  const i64 = Buffer.alloc(8);
  i64.writeBigInt64LE(BigInt(E));
  out.push({ what: `${name} E7 int64 LE`, bytes: Buffer.from(i64) });
  i64.writeBigInt64BE(BigInt(E));
  out.push({ what: `${name} E7 int64 BE`, bytes: Buffer.from(i64) });

  out.push({ what: `${name} float64 LE`, bytes: f64(x, true) }, { what: `${name} float64 BE`, bytes: f64(x, false) });
  // Stored after rounding to k decimals (a "privacy" rounding that is no such thing).
  for (let k = 4; k <= 7; k++) {
    const r = Number(x.toFixed(k));
    out.push({ what: `${name} float64 LE of toFixed(${k})`, bytes: f64(r, true) });
    out.push({ what: `${name} float64 BE of toFixed(${k})`, bytes: f64(r, false) });
  }
  return out;
}

/** 4-byte encodings only as the adjacent pair (8 bytes): lat then lon, and lon then lat (GeoJSON order). */
function pairNeedles(lat: number, lon: number): Needle[] {
  const out: Needle[] = [];
  const orders: [string, number, number][] = [
    ['lat,lon', lat, lon],
    ['lon,lat', lon, lat],
  ];
  for (const [label, a, b] of orders) {
    for (const le of [true, false]) {
      const end = le ? 'LE' : 'BE';
      const i = Buffer.alloc(8);
      const f = Buffer.alloc(8);
      if (le) {
        i.writeInt32LE(e7(a), 0);
        i.writeInt32LE(e7(b), 4);
        f.writeFloatLE(a, 0);
        f.writeFloatLE(b, 4);
      } else {
        i.writeInt32BE(e7(a), 0);
        i.writeInt32BE(e7(b), 4);
        f.writeFloatBE(a, 0);
        f.writeFloatBE(b, 4);
      }
      out.push({ what: `${label} E7 int32 ${end} pair`, bytes: i }, { what: `${label} float32 ${end} pair`, bytes: f });
    }
  }
  return out;
}

/** Merge needles with identical bytes (e.g. JSON-escaped == UTF-8 for a string with nothing to escape). */
function dedupe(needles: Needle[]): Needle[] {
  const byHex = new Map<string, Needle>();
  for (const n of needles) {
    const k = n.bytes.toString('hex');
    const seen = byHex.get(k);
    if (seen) seen.what = `${seen.what} | ${n.what}`;
    else byHex.set(k, { what: n.what, bytes: n.bytes });
  }
  return [...byHex.values()];
}

/** Every encoding of every canary; throws if one would be shorter than MIN_NEEDLE_BYTES. */
export function encodingsOf(c: Canaries): Needle[] {
  const all = dedupe([
    ...coordinateNeedles('lat', c.lat),
    ...coordinateNeedles('lon', c.lon),
    ...pairNeedles(c.lat, c.lon),
    ...textNeedles('address', c.address),
    ...textNeedles('transcript', c.transcript),
    ...secretNeedles('key', c.key, false),
    ...secretNeedles('passphrase', utf8(c.passphrase), true),
    ...secretNeedles('token', utf8(c.token), true),
  ]);
  const short = all.find((n) => n.bytes.length < MIN_NEEDLE_BYTES);
  if (short) throw new Error(`canary needle too short to be specific: ${short.what} (${short.bytes.length} bytes)`);
  return all;
}

// ---------------------------------------------------------------------------------------------
// Scanning

/** The `what` of every needle found anywhere in `hay` (needle order). */
export function scanBytes(hay: Uint8Array, needles: Needle[]): string[] {
  const h = Buffer.isBuffer(hay) ? hay : Buffer.from(hay.buffer, hay.byteOffset, hay.byteLength);
  return needles.filter((n) => h.indexOf(n.bytes) >= 0).map((n) => n.what);
}

/** Reads each existing file fully and scans it; paths that do not exist are listed in `missing`. */
export function scanFilesReport(paths: string[], needles: Needle[]): ScanReport {
  const report: ScanReport = { hits: [], scanned: [], missing: [] };
  for (const file of paths) {
    let data: Buffer;
    try {
      data = readFileSync(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        report.missing.push(file);
        continue;
      }
      throw e;
    }
    report.scanned.push({ file, bytes: data.length });
    for (const what of scanBytes(data, needles)) report.hits.push({ file, what });
  }
  return report;
}

/** The hits of scanFilesReport; missing files are skipped silently (use scanFilesReport to see them). */
export function scanFiles(paths: string[], needles: Needle[]): ScanHit[] {
  return scanFilesReport(paths, needles).hits;
}

/** Every regular file under `dir`, recursively (symlinks not followed), sorted. */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  if (existsSync(dir)) walk(dir);
  return out.sort();
}

/** What plantedFile puts in its file: a scan of it must report (at least) these. */
export const PLANTED_WHAT = ['lat float64 LE', 'transcript UTF-8 NFD'] as const;

/**
 * The positive control: a file in `dir` holding the lat as float64 LE and the transcript in NFD,
 * each between random bytes. Returns its path.
 */
export function plantedFile(dir: string, c: Canaries): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `planted-canary-${c.runId}.bin`);
  writeFileSync(path, Buffer.concat([rnd(4093), f64(c.lat, true), rnd(517), utf8(c.transcript.normalize('NFD')), rnd(1031)]));
  return path;
}
