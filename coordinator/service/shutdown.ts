/**
 * Stopping a process on SIGTERM/SIGINT in every state, Redis down included (BullMQ's and
 * ioredis's graceful closes wait for a connection that may never come back): each step is bounded
 * and one that fails or overruns is logged and passed over, and the whole stop is bounded by
 * `limitMs`, past which the process exits with `FORCED_EXIT_CODE` (docs/scale-out.md, "When Redis
 * fails").
 */
import type { Logger } from '../../shared/log.js';

/** How long one shutdown step may take before it is passed over, ms. */
export const SHUTDOWN_STEP_MS = 5000;
/** How long a whole shutdown may take before the process exits regardless, ms. */
export const SHUTDOWN_LIMIT_MS = 15_000;
/** The exit code when a shutdown had to be cut short at `SHUTDOWN_LIMIT_MS`. */
export const FORCED_EXIT_CODE = 1;

export type ShutdownStep = [name: string, run: () => unknown];

/** Runs `steps` in order, each for at most `stepMs`; a step that throws or overruns is logged and the next one runs. */
export async function runShutdownSteps(steps: readonly ShutdownStep[], log: Logger, stepMs = SHUTDOWN_STEP_MS): Promise<void> {
  for (const [name, run] of steps) {
    let timer: NodeJS.Timeout | undefined;
    const overrun = new Promise<'overrun'>((r) => {
      timer = setTimeout(() => r('overrun'), stepMs);
      timer.unref();
    });
    try {
      const r = await Promise.race([Promise.resolve().then(run), overrun]);
      if (r === 'overrun') log.warn({ step: name, ms: stepMs }, 'shutdown step did not finish in time; going on');
    } catch (err) {
      log.warn({ step: name, code: typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : 'internal' }, 'shutdown step failed; going on');
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Installs the SIGINT/SIGTERM handler: the first signal runs `steps` and exits 0; if that takes
 * longer than `limitMs`, the process exits with `FORCED_EXIT_CODE`. A second signal changes nothing.
 */
export function onStopSignals(steps: (signal: string) => readonly ShutdownStep[], log: Logger, limitMs = SHUTDOWN_LIMIT_MS): void {
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    setTimeout(() => {
      log.error({ signal, ms: limitMs }, 'shutdown did not finish in time; exiting');
      process.exit(FORCED_EXIT_CODE);
    }, limitMs);
    void runShutdownSteps(steps(signal), log).then(() => {
      log.info('stopped');
      process.exit(0);
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
