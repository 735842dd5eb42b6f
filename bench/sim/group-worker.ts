/**
 * Worker-thread entry for grouped simulations: runs whole aggregation groups, one at a time, each
 * a complete simulated round in this thread (`simulate` with no worker threads of its own), so
 * independent groups use all cores at once.
 */
import { parentPort } from 'node:worker_threads';
import { simulate, type SimulateOptions } from './simulate.js';

const port = parentPort!;
port.on('message', (opts: SimulateOptions) => {
  simulate({ ...opts, workers: 0 }).then(
    (r) => port.postMessage({ ok: true, r }),
    (e: unknown) => port.postMessage({ ok: false, message: e instanceof Error ? e.message : String(e) }),
  );
});
