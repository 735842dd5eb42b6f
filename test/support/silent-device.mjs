/**
 * A device that subscribes with its own enrolled identity and then never says anything about a
 * round: `node test/support/silent-device.mjs <data-dir> <address>` (AEGIS_PASSPHRASE in the
 * environment). Its process stays responsive, so the transport's keepalive pings are answered
 * and the coordinator keeps it attached: a round that invited it waits for it until a deadline.
 * A separate process, because a test that runs CLI commands synchronously blocks its own event
 * loop (and would miss the pings). Prints "attached" once the stream is open; exits on SIGTERM.
 * Uses the built modules (dist/), like the CLI tests.
 */
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { loadClient } from '../../dist/client/agent/data-dir.js';
import { tlsKeyPemFor } from '../../dist/client/enroll/csr.js';
import * as pb from '../../dist/shared/gen/aegis/v1/secagg_pb.js';
import { callUnary, clientFor } from '../../dist/shared/rpc/service.js';

const [dir, address] = process.argv.slice(2);
const loaded = await loadClient(dir, process.env.AEGIS_PASSPHRASE ?? '');
const creds = grpc.credentials.createSsl(
  Buffer.from(loaded.caPem),
  Buffer.from(tlsKeyPemFor(loaded.identity, loaded.certificateDer)),
  Buffer.from(new X509Certificate(Buffer.from(loaded.certificateDer)).toString()),
);
const client = new (clientFor(pb.SecAgg))(address, creds, { 'grpc.use_local_subchannel_pool': 1 });
const { tokens } = await callUnary(client.issueTokens.bind(client), create(pb.IssueTokensRequestSchema, { count: 1 }));
const md = new grpc.Metadata();
md.set('authorization', `Bearer ${tokens[0]}`);
const stream = client.subscribe(create(pb.SubscribeRequestSchema, {}), md);
stream.on('data', () => {});
stream.on('metadata', () => process.stdout.write('attached\n'));
stream.on('error', (e) => {
  process.stderr.write(`silent device: stream ended: ${e.code} ${e.details}\n`);
  process.exit(1);
});
process.on('SIGTERM', () => {
  stream.cancel();
  client.close();
  process.exit(0);
});
