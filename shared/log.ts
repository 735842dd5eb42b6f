/**
 * Structured logs (pino, JSON lines on stderr). Logs carry names, counts, phases and reason
 * codes; `redact` removes anything that could hold a secret if a caller ever passed one
 * (tokens, keys, passphrases, shares), and no code path logs message contents.
 */
import { destination, pino, type Logger } from 'pino';

/**
 * Field names that never reach a log line in clear, at the top level and one level down: secrets
 * (tokens, keys, passphrases, PINs, seeds, shares, DEKs/KEKs) and the client's sensitive data
 * (addresses, GPS points, transcripts, raw values and vectors), and metadata the coordinator does
 * not keep: a client's IP or peer address and its certificate details (serial, subject). Callers
 * log ids and counts; this is the net under them.
 */
const SENSITIVE_KEYS = [
  'token', 'authorization', 'passphrase', 'password', 'pin', 'seed', 'key', 'privateKey', 'secret', 'shares', 'dek', 'kek', 'wrapped',
  'vector', 'values', 'value', 'weights', 'update',
  'address', 'lat', 'lon', 'latitude', 'longitude', 'gps', 'transcript', 'record', 'fields',
  // Metadata the coordinator does not keep about a client: its network address, and certificate
  // details beyond its id.
  'ip', 'peer', 'remoteAddress', 'serial', 'certificate', 'subject', 'fingerprint',
];
export const REDACT_PATHS = SENSITIVE_KEYS.flatMap((k) => [k, `*.${k}`]);

export function createLogger(name: string, level = process.env.AEGIS_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { pid: process.pid } }, destination({ fd: 2, sync: true }));
}

/**
 * Crash reports without data: an uncaught error is logged as its code and message only (messages
 * never carry values, see shared/errors.ts) — no stack with arguments, no object dump — and the
 * process exits 70 (EX_SOFTWARE).
 */
export function installCrashHandler(log: Logger = createLogger('aegis')): void {
  const crash = (kind: string) => (err: unknown): void => {
    const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : 'internal';
    const message = err instanceof Error ? err.message : 'non-error thrown';
    log.fatal({ kind, code, error: { type: err instanceof Error ? err.name : typeof err, message } }, 'crashed');
    process.exit(70);
  };
  process.on('uncaughtException', crash('uncaught-exception'));
  process.on('unhandledRejection', crash('unhandled-rejection'));
}

export type { Logger };
