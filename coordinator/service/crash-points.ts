/**
 * Crash injection for the end-to-end tests: with `AEGIS_TEST_KILL_AT=POINT:N` in its environment
 * (never set in use), `aegis coordinator start` kills itself with SIGKILL the N-th time it reaches
 * POINT, so a test can stop a real coordinator process at an exact place:
 *
 *   between-rounds   a training job's state after a round (its new model version) is written to
 *                    the job history and its next round has not started
 *   <event type>     an event about to be queued for a client, e.g. `advertise-broadcast:4` — the
 *                    4th advertise broadcast of this process (with 3 clients: inside the 2nd round,
 *                    once every member advertised its keys and before any masked input)
 */
import type { JobsOptions } from '../jobs/types.js';

export function crashPoints(spec: string | undefined): Pick<JobsOptions, 'tap' | 'onBetweenRounds'> {
  const m = spec === undefined ? null : /^([a-z-]+):([1-9][0-9]*)$/.exec(spec);
  if (!m) return {};
  const point = m[1]!;
  let left = Number(m[2]);
  const reached = (): void => {
    if (--left === 0) process.kill(process.pid, 'SIGKILL');
  };
  if (point === 'between-rounds') return { onBetweenRounds: reached };
  return { tap: (_clientId, event) => event === point && reached() };
}
