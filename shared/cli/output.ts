/**
 * CLI conventions (NVIDIA FLARE style): data goes to stdout as one JSON document with
 * `--json`, human progress goes to stderr, errors carry a stable code and a hint.
 */
import { isAegisError } from '../errors.js';

export const progress = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

/** Prints an error (code, message, hint) and sets a non-zero exit code. */
export function reportError(err: unknown, json: boolean): void {
  const code = isAegisError(err) ? err.code : 'internal';
  const message = err instanceof Error ? err.message : String(err);
  const hint = isAegisError(err) ? err.hint : undefined;
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, error: { code, message, hint } })}\n`);
  else process.stderr.write(`error [${code}]: ${message}${hint ? `\n  hint: ${hint}` : ''}\n`);
  process.exitCode = 2;
}

export function parseIntOption(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}`);
    return n;
  };
}

export function parseFloatOption(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name} must be a number in ${min}..${max}`);
    return n;
  };
}
