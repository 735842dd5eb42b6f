/**
 * `npm run bench -- floor` in small (its worker threads run dist/bench/floor-worker.js: run
 * "npm run build" first): the crypto of the clients that stay, on one thread and on two, against
 * an exact round — the shape of what it reports; no timing is asserted.
 */
import { describe, expect, test } from '@jest/globals';
import { runFloorBench } from '../../bench/floor.js';

describe('round floor benchmark', () => {
  test('counts the crypto of the clients that do not drop, on one thread and on two, beside an exact round, and their ratio', async () => {
    // Two of 20 drop: every neighbourhood of 9 keeps more than t = 5, whatever graph the round
    // draws. The round runs in this thread: the simulator's worker threads hand their vectors to
    // the main realm, not to the test's sandbox (they run from dist/ under \`npm run bench\`).
    const r = await runFloorBench({ n: 20, m: 500, k: 9, dropout: 0.1, repeats: 1, roundWorkers: 0 });
    expect(r).toMatchObject({ bench: 'floor', n: 20, m: 500, k: 9, t: 5, dropout: 0.1, repeats: 1, clients_that_stay: 18, exact: true });
    for (const k of ['crypto_one_thread_ms', 'crypto_two_threads_ms', 'round_ms'] as const) expect(r[k]).toBeGreaterThan(0);
    expect(r.round_vs_floor).toBeCloseTo(r.round_ms / r.crypto_two_threads_ms, 9);
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });
});
