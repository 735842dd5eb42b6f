/**
 * Worker thread of `npm run bench -- floor`: runs `count` clients' unavoidable crypto (bench
 * client's baseline) when told to go, after one unmeasured run, and reports the milliseconds.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { unavoidableCrypto } from './client.js';

const { count, m, k, t } = workerData as { count: number; m: number; k: number; t: number };
unavoidableCrypto(k, t, m); // warm-up, not measured
parentPort!.once('message', () => {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) unavoidableCrypto(k, t, m);
  parentPort!.postMessage(performance.now() - t0);
});
parentPort!.postMessage('ready');
