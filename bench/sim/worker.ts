/** Worker-thread entry of the simulator's WorkerPool: one ClientHost, driven by messages. */
import { parentPort, workerData } from 'node:worker_threads';
import type { ClientMessage } from '../../shared/protocol/messages.js';
import { ClientHost, type HostInit } from './client-host.js';

const host = new ClientHost(workerData as HostInit);
const port = parentPort!;

function emit(m: ClientMessage): void {
  // Masked vectors are moved, not copied: the worker keeps no reference to them.
  if (m.type === 'masked-input') port.postMessage({ kind: 'msg', m }, [m.vector.buffer as ArrayBuffer]);
  else port.postMessage({ kind: 'msg', m });
}

port.on('message', (req: { op: string; messages?: never; jobs?: never }) => {
  try {
    switch (req.op) {
      case 'ready':
        return port.postMessage({ kind: 'done' });
      case 'start':
        host.startAll(emit);
        return port.postMessage({ kind: 'done' });
      case 'deliver':
        host.deliver(req.messages ?? [], emit);
        return port.postMessage({ kind: 'done' });
      case 'plaintext':
        return port.postMessage({ kind: 'done', value: host.plaintext() });
      case 'unmask': {
        const partial = host.unmask(req.jobs ?? []);
        return port.postMessage({ kind: 'done', value: partial }, [partial.buffer as ArrayBuffer]);
      }
      case 'stats':
        return port.postMessage({ kind: 'done', value: host.stats() });
      default:
        return port.postMessage({ kind: 'error', message: `unknown op ${req.op}` });
    }
  } catch (err) {
    port.postMessage({ kind: 'error', message: err instanceof Error ? err.message : String(err) });
  }
});
