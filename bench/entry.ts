/**
 * Where a benchmark's child entry (a worker thread's or a child process's script) is: next to
 * the calling module when it runs built, under dist/bench/ when it runs from the sources (tests).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The compiled `file` (e.g. `floor-worker.js`) of bench/, for the module at `moduleUrl` (its `import.meta.url`). */
export function benchEntry(file: string, moduleUrl: string, what: string): string {
  const here = fileURLToPath(new URL(`./${file}`, moduleUrl));
  if (existsSync(here)) return here;
  const built = fileURLToPath(new URL(`../dist/bench/${file}`, moduleUrl));
  if (existsSync(built)) return built;
  throw new Error(`${what} entry ${here} not found: run "npm run build" (${what} needs the compiled dist/)`);
}
