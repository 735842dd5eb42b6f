/**
 * CLI conventions (NVIDIA FLARE style): data goes to stdout as one JSON document with
 * `--json`, human progress goes to stderr, errors carry a stable code and a hint.
 */
import { InvalidArgumentError } from 'commander';
import { isAegisError } from '../errors.js';

export const progress = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

/** Prints a command's result: one JSON document on stdout with --json, else the human text. */
export function printResult(o: { json?: boolean }, data: unknown, text: string): void {
  process.stdout.write(o.json ? `${JSON.stringify(data)}\n` : `${text}\n`);
}

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
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`--${name} must be an integer in ${min}..${max}`);
    return n;
  };
}

export function parseFloatOption(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`--${name} must be a number in ${min}..${max}`);
    return n;
  };
}

/** Parses a duration such as 500ms, 30s, 15m, 24h, 7d (a bare number is seconds). */
/** One of `choices`, or a usage error naming the flag and the accepted values. */
export function parseChoice<T extends string>(name: string, choices: readonly T[]) {
  return (v: string): T => {
    if (!(choices as readonly string[]).includes(v)) throw new InvalidArgumentError(`--${name} must be one of ${choices.join(', ')}`);
    return v as T;
  };
}

/** A duration as `parseDuration` reads it back, in the largest unit that keeps it whole: 604800000 → "7d". */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

export function parseDuration(name: string, minMs: number, maxMs: number) {
  return (v: string): number => {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(v.trim());
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m?.[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd'];
    const ms = m ? Math.round(Number(m[1]) * unit) : NaN;
    if (!Number.isFinite(ms) || ms < minMs || ms > maxMs) throw new InvalidArgumentError(`--${name} must be a duration like 30s, 15m or 24h, between ${minMs / 1000} s and ${maxMs / 1000} s`);
    return ms;
  };
}
