/**
 * One unmask worker process for `npm run bench -- scale` (forked with an IPC channel): it gets the
 * Redis URL, prefix and queue key as one IPC message — never in argv or the environment — works
 * the unmask queue, and exits when told to.
 */
import { UnmaskQueue } from '../coordinator/queue/unmask-queue.js';
import { connectRedis } from '../coordinator/queue/redis.js';

process.once('message', (m: { url: string; prefix: string; key: string }) => {
  void (async () => {
    const redis = await connectRedis(m.url);
    const key = new Uint8Array(Buffer.from(m.key, 'base64'));
    const q = new UnmaskQueue(redis, key, { prefix: m.prefix });
    key.fill(0);
    q.work({ concurrency: 1 });
    process.send?.('ready');
    process.once('message', () => {
      void q
        .close()
        .then(() => redis.quit())
        .then(() => process.exit(0));
    });
  })();
});
