/** Running the built CLI (dist/) from tests, and reading its one-line JSON answers. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../dist/bin/aegis.js', import.meta.url));

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * How long a CLI run may take before it is killed, at least: the bound only ends a hung command,
 * and a loaded CI machine can be many times slower than a quiet one.
 */
const MIN_CLI_MS = 180_000;

/** Runs `aegis args…` to completion (blocking) with `env`. */
export function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = MIN_CLI_MS): CliRun {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: Math.max(timeoutMs, MIN_CLI_MS), env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Runs `aegis args…` without blocking this process (whose in-process coordinator must keep
 * answering); SIGKILLed after `timeoutMs`.
 */
export function runCliAsync(args: string[], env: NodeJS.ProcessEnv, timeoutMs = MIN_CLI_MS): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: string[] = [];
    const err: string[] = [];
    child.stdout!.setEncoding('utf8').on('data', (d: string) => out.push(d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), Math.max(timeoutMs, MIN_CLI_MS));
    child.once('exit', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout: out.join(''), stderr: err.join('') });
    });
  });
}

/** The JSON document a `--json` command printed; the error says what went wrong instead. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed CLI JSON, checked field by field by the caller
export function cliJson(r: CliRun): any {
  try {
    return JSON.parse(r.stdout.trim());
  } catch {
    throw new Error(`no JSON on stdout (exit ${r.status}); stderr: ${r.stderr.slice(-500)}`);
  }
}
