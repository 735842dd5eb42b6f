/**
 * The attacker process of `npm run bench -- refuse` (forked with an IPC channel; its orders,
 * certificate and key arrive as one IPC message, never in argv or the environment):
 * - `flood`: a revoked client, over HTTP/2 on mTLS with its still-unexpired certificate, starts
 *   SecAgg.Send calls declaring 60 MiB, `concurrency` at a time, and writes each body in 1 MiB pieces for
 *   as long as the server lets it, for `seconds`;
 * - `cpu`: a process that only spins on the CPU for `seconds` (the control: what any busy
 *   neighbour on the same cores costs the round).
 * Answers with what it managed: calls started, statuses seen, body bytes written.
 */
import http2 from 'node:http2';
import { TLS_CLIENT_POLICY } from '../shared/net/tls-policy.js';

interface Orders {
  mode: 'flood' | 'cpu';
  seconds: number;
  /** flood: calls kept open at once. */
  concurrency?: number;
  address?: string;
  caPem?: string;
  keyPem?: string;
  certPem?: string;
}

export interface AttackReport {
  calls: number;
  statuses: Record<string, number>;
  bytesWritten: number;
  /** How the streams closed: RST_STREAM codes (0 NO_ERROR, 7 REFUSED_STREAM, 11 ENHANCE_YOUR_CALM, ...). */
  resets: Record<string, number>;
}

const MiB = 1024 * 1024;
const piece = Buffer.alloc(MiB, 0x5a);

async function flood(o: Orders): Promise<AttackReport> {
  const report: AttackReport = { calls: 0, statuses: {}, bytesWritten: 0, resets: {} };
  const end = Date.now() + o.seconds * 1000;
  const session = http2.connect(`https://${o.address!}`, { ca: o.caPem!, key: o.keyPem!, cert: o.certPem!, servername: 'localhost', ...TLS_CLIENT_POLICY });
  session.on('error', () => undefined);
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      report.calls++;
      const req = session.request({ ':method': 'POST', ':path': '/aegis.v1.SecAgg/Send', 'content-type': 'application/grpc', te: 'trailers' });
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(60 * MiB, 1);
      req.write(prefix);
      let sent = 0;
      const pump = (): void => {
        while (sent < 60 && !req.closed && !req.destroyed && Date.now() < end) {
          sent++;
          report.bytesWritten += MiB;
          if (!req.write(piece)) return void req.once('drain', pump);
        }
        if (!req.closed && !req.destroyed) req.end();
      };
      const take = (h: http2.IncomingHttpHeaders): void => {
        const s = h['grpc-status'];
        if (s !== undefined) report.statuses[String(s)] = (report.statuses[String(s)] ?? 0) + 1;
      };
      req.on('response', take);
      req.on('trailers', take);
      req.on('data', () => undefined);
      req.on('error', () => undefined);
      req.on('close', () => {
        const code = String(req.rstCode ?? '-');
        report.resets[code] = (report.resets[code] ?? 0) + 1;
        resolve();
      });
      pump();
    });
  const worker = async (): Promise<void> => {
    while (Date.now() < end && !session.destroyed) await one();
  };
  await Promise.all(Array.from({ length: o.concurrency ?? 4 }, worker));
  session.close();
  return report;
}

function spin(o: Orders): AttackReport {
  const end = Date.now() + o.seconds * 1000;
  let x = 0;
  while (Date.now() < end) for (let i = 0; i < 100_000; i++) x = (x * 31 + i) >>> 0;
  return { calls: 0, statuses: { spin: x & 1 }, bytesWritten: 0, resets: {} };
}

process.once('message', (o: Orders) => {
  process.send?.('ready', () => {
    void (async () => {
      const report = o.mode === 'flood' ? await flood(o) : spin(o);
      process.send?.(report, () => process.exit(0));
    })();
  });
});
