/**
 * What the fuzzer watches besides the answers: crashes of the process that runs the coordinator
 * (an unhandled rejection or an uncaught exception) and the coordinator's own log lines.
 *
 * Jest gives a test file its own `process` object whose listeners the real process never calls;
 * the listeners here go on the real process (the one of Node's main context), so they see what
 * the coordinator's promises and callbacks leave unhandled.
 */
import vm from 'node:vm';
import { pino, type Logger } from 'pino';

export interface CrashWatch {
  /** One line per unhandled rejection or uncaught exception since `watchCrashes`. */
  crashes: string[];
  stop: () => void;
}

const describe = (e: unknown): string => (e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ''}` : String(e));

export function watchCrashes(): CrashWatch {
  const real = vm.runInThisContext('process') as NodeJS.Process;
  const crashes: string[] = [];
  const onRejection = (e: unknown): void => void crashes.push(`unhandled rejection: ${describe(e)}`);
  const onException = (e: unknown): void => void crashes.push(`uncaught exception: ${describe(e)}`);
  real.prependListener('unhandledRejection', onRejection);
  real.prependListener('uncaughtException', onException);
  return {
    crashes,
    stop: () => {
      real.off('unhandledRejection', onRejection);
      real.off('uncaughtException', onException);
    },
  };
}

export interface MemoryLog {
  log: Logger;
  /** The log lines so far, parsed. */
  lines: () => Record<string, unknown>[];
}

/** A pino logger (level info) that keeps its lines in memory. */
export function memoryLog(): MemoryLog {
  const raw: string[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void raw.push(s) });
  return { log, lines: () => raw.map((s) => JSON.parse(s) as Record<string, unknown>) };
}
