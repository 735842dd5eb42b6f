/**
 * Structured logs (pino, JSON lines on stderr). Logs carry names, counts, phases and reason
 * codes; `redact` removes anything that could hold a secret if a caller ever passed one
 * (tokens, keys, passphrases, shares), and no code path logs message contents.
 */
import { destination, pino, type Logger } from 'pino';

export const REDACT_PATHS = ['token', '*.token', 'authorization', '*.authorization', 'passphrase', '*.passphrase', 'seed', '*.seed', 'key', '*.key', 'shares', '*.shares', 'vector', '*.vector'];

export function createLogger(name: string, level = process.env.AEGIS_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { pid: process.pid } }, destination({ fd: 2, sync: true }));
}

export type { Logger };
