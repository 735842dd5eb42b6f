/**
 * A strict reader of DER (ITU-T X.690 distinguished encoding), for the few fields Aegis reads
 * from a certificate it has already checked the signature of (shared/keystore/client-certificate.ts).
 * Only what DER allows is read: one-byte tags (tag numbers below 31), definite lengths in their
 * shortest form, every element inside its parent. Anything else throws `MalformedDerError`.
 */

export class MalformedDerError extends Error {
  constructor() {
    super('malformed DER');
  }
}

/** One element: its tag byte and where its header and content lie in the buffer. */
export interface Tlv {
  tag: number;
  /** First byte of the element (its tag). */
  start: number;
  /** First byte of its content. */
  content: number;
  /** One past its last byte. */
  end: number;
}

/** The element that begins at `at` and ends at or before `limit`. */
export function readTlv(buf: Uint8Array, at: number, limit: number = buf.length): Tlv {
  if (at + 2 > limit) throw new MalformedDerError();
  const tag = buf[at]!;
  if ((tag & 0x1f) === 0x1f) throw new MalformedDerError();
  const first = buf[at + 1]!;
  let length: number;
  let content: number;
  if (first < 0x80) {
    length = first;
    content = at + 2;
  } else {
    const n = first & 0x7f;
    // 0x80 is BER's indefinite length; more than 3 length bytes is more than any certificate needs.
    if (n === 0 || n > 3 || at + 2 + n > limit || buf[at + 2] === 0) throw new MalformedDerError();
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + buf[at + 2 + i]!;
    if (length < 0x80) throw new MalformedDerError();
    content = at + 2 + n;
  }
  const end = content + length;
  if (end > limit) throw new MalformedDerError();
  return { tag, start: at, content, end };
}

/** The elements of a constructed element's content, in order (`tag`, when given, is checked). */
export function children(buf: Uint8Array, parent: Tlv, tag?: number): Tlv[] {
  if (tag !== undefined && parent.tag !== tag) throw new MalformedDerError();
  const out: Tlv[] = [];
  for (let at = parent.content; at < parent.end; ) {
    const t = readTlv(buf, at, parent.end);
    out.push(t);
    at = t.end;
  }
  return out;
}

/** The element's whole encoding (header and content), as a view. */
export const encoding = (buf: Uint8Array, t: Tlv): Uint8Array => buf.subarray(t.start, t.end);

/** The element's content, as a view. */
export const contentOf = (buf: Uint8Array, t: Tlv): Uint8Array => buf.subarray(t.content, t.end);

const digits = (buf: Uint8Array, from: number, count: number): number => {
  let v = 0;
  for (let i = from; i < from + count; i++) {
    const d = buf[i]! - 0x30;
    if (d < 0 || d > 9) throw new MalformedDerError();
    v = v * 10 + d;
  }
  return v;
};

/**
 * A UTCTime (YYMMDDHHMMSSZ, years 1950–2049) or GeneralizedTime (YYYYMMDDHHMMSSZ) as X.509 writes
 * them (RFC 5280 4.1.2.5: seconds present, no fraction, UTC), in milliseconds since the epoch.
 */
export function readTime(buf: Uint8Array, t: Tlv): number {
  const len = t.end - t.content;
  let year: number;
  let at: number;
  if (t.tag === 0x17 && len === 13) {
    const yy = digits(buf, t.content, 2);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
    at = t.content + 2;
  } else if (t.tag === 0x18 && len === 15) {
    year = digits(buf, t.content, 4);
    at = t.content + 4;
  } else {
    throw new MalformedDerError();
  }
  if (buf[t.end - 1] !== 0x5a) throw new MalformedDerError(); // 'Z'
  const [mo, d, h, mi, s] = [0, 2, 4, 6, 8].map((o) => digits(buf, at + o, 2)) as [number, number, number, number, number];
  const ms = Date.UTC(year, mo - 1, d, h, mi, s);
  // Date.UTC rolls over (month 13, day 32, hour 24, ...): a date that does not round-trip is malformed.
  const back = new Date(ms);
  if (back.getUTCFullYear() !== year || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || back.getUTCHours() !== h || back.getUTCMinutes() !== mi || back.getUTCSeconds() !== s) {
    throw new MalformedDerError();
  }
  return ms;
}
