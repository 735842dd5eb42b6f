/**
 * Redaction of an external trainer's stderr before Aegis logs or prints any of it. The trainer
 * saw the client's decrypted records and runs with the user's environment, so its stderr may
 * hold either; the tail Aegis keeps is passed through `redactTrainerOutput` first, which
 * replaces:
 *
 * - PEM blocks (`-----BEGIN …-----` … `-----END …-----`, also one cut off at either end of the
 *   tail) with `[redacted pem]`;
 * - `name=value` / `name: value` where the name says secret, token, password, passphrase, key,
 *   credential or auth, with the value `[redacted]`;
 * - runs of 32 or more hex digits with `[redacted hex]`, and runs of 40 or more base64 /
 *   base64url characters (with both letters and digits) with `[redacted base64]`;
 * - runs of 4 or more numbers (a record's features as JSON, Python or NumPy print them) with
 *   `[redacted numbers]`, and any JSON-like `"x": …` / `"y": …` value with `[redacted]`.
 *
 * What stays: words, short numbers (line numbers, counts, a loss), paths and Python tracebacks —
 * what it takes to see why a trainer failed. This is a filter for accidents (a debug print, a
 * traceback showing a local variable), not a guarantee against a trainer that means to leak:
 * the trainer is trusted local code (docs/trainer-protocol.md).
 */

/** How much of the stderr a call keeps before redaction (the redacted tail is cut to `TAIL_BYTES`). */
export const RAW_TAIL_BYTES = 16 * 1024;
/** How much redacted stderr a call reports. */
export const TAIL_BYTES = 4 * 1024;

const PEM_BLOCK = /-----BEGIN [A-Z0-9 ]{0,64}-----[\s\S]*?(?:-----END [A-Z0-9 ]{0,64}-----|$)/g;
const PEM_HEADLESS = /^[\s\S]*?-----END [A-Z0-9 ]{0,64}-----/;
const SECRET_ASSIGNMENT = /\b([A-Za-z0-9_.-]*(?:secret|token|passw(?:or)?d|passphrase|api[_-]?key|private[_-]?key|credential|auth)[A-Za-z0-9_.-]*)(["']?\s*[:=]\s*)("[^"\n]*"|'[^'\n]*'|[^\s,;}]+)/gi;
const HEX_RUN = /\b[0-9a-fA-F]{32,}\b/g;
const BASE64_RUN = /[A-Za-z0-9+/_-]{40,}={0,2}/g;
const NUMBER = String.raw`[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?`;
// Numbers separated by a comma, a semicolon or white space (a separator is required: digits alone are one number).
const NUMBER_RUN = new RegExp(String.raw`(?<![\w.])${NUMBER}(?:(?:\s*[,;]\s*|\s+)${NUMBER}){3,}`, 'g');
const RECORD_FIELD = /("?\b[xy]\b"?\s*:\s*)(\[[^\]\n]*\]?|[^\s,}]+)/g;

/** The text with secrets and record contents replaced (see the file comment). */
export function redactTrainerOutput(text: string): string {
  return text
    .replace(PEM_BLOCK, '[redacted pem]')
    .replace(PEM_HEADLESS, '[redacted pem]')
    .replace(SECRET_ASSIGNMENT, (_m, name: string, sep: string) => `${name}${sep}[redacted]`)
    .replace(RECORD_FIELD, (_m, field: string) => `${field}[redacted]`)
    .replace(BASE64_RUN, (m) => (/[0-9]/.test(m) && /[A-Za-z]/.test(m) ? '[redacted base64]' : m))
    .replace(HEX_RUN, '[redacted hex]')
    .replace(NUMBER_RUN, '[redacted numbers]');
}

/**
 * A bounded tail of a stream's bytes: keeps the last `RAW_TAIL_BYTES`, and gives them back
 * redacted, cut to the last `TAIL_BYTES` at a line start where there is one.
 */
export class StderrTail {
  private chunks: Buffer[] = [];
  private size = 0;
  private dropped = false;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size - (this.chunks[0]?.length ?? 0) >= RAW_TAIL_BYTES) {
      this.size -= this.chunks.shift()!.length;
      this.dropped = true;
    }
  }

  /** The redacted tail ('' when the stream said nothing). */
  text(): string {
    let raw = Buffer.concat(this.chunks).toString('utf8');
    if (raw.length > RAW_TAIL_BYTES) {
      raw = raw.slice(-RAW_TAIL_BYTES);
      this.dropped = true;
    }
    // A cut tail starts mid-line: drop that partial line (it may be half a secret).
    if (this.dropped) raw = raw.slice(raw.indexOf('\n') + 1);
    let out = redactTrainerOutput(raw);
    if (out.length > TAIL_BYTES) {
      out = out.slice(-TAIL_BYTES);
      const nl = out.indexOf('\n');
      if (nl >= 0 && nl < out.length - 1) out = out.slice(nl + 1);
    }
    return out;
  }
}
