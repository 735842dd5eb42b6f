/**
 * Where a registry's signed metadata comes from: a registry directory, or a coordinator's
 * Trust service (on its enrollment address, server-authenticated TLS 1.3 against a pinned CA).
 * The metadata authenticates itself; the transport only has to be TLS.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { AegisError, ErrorCode } from '../errors.js';
import * as trustPb from '../gen/aegis/v1/trust_pb.js';
import { channelOptions } from '../rpc/channel.js';
import { callUnary, clientFor } from '../rpc/service.js';
import { reasonOf } from '../rpc/status.js';
import { parseSnapshot, type RegistrySnapshot } from './registry.js';
import { readSnapshot } from './registry-dir.js';
import { channelCredentials } from '../rpc/tls-credentials.js';

const ADDRESS = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

/** True when `spec` names a HOST:PORT rather than an existing directory. */
export const isRegistryAddress = (spec: string): boolean => ADDRESS.test(spec) && !existsSync(spec);

/** The snapshot served at a coordinator address (its enrollment listener), checked against `caPem`. */
export async function fetchSnapshot(address: string, caPem: string): Promise<RegistrySnapshot> {
  const client = new (clientFor(trustPb.Trust))(address, channelCredentials(caPem), channelOptions(address));
  try {
    const reply = await callUnary(client.getRegistry.bind(client), create(trustPb.GetRegistryRequestSchema, {}), new grpc.Metadata(), { deadline: Date.now() + 15_000 });
    return parseSnapshot(reply.snapshot);
  } catch (err) {
    if (err instanceof AegisError) throw err;
    const code = reasonOf(err);
    const details = (err as { details?: string }).details ?? String(err);
    throw new AegisError(code ?? ErrorCode.Unavailable, code ? details : `registry at ${address} unreachable: ${details}`);
  } finally {
    client.close();
  }
}

/** A registry from a directory or HOST:PORT (then `caPem` is required). */
export function registrySource(spec: string, caPem: string | undefined): () => Promise<RegistrySnapshot> {
  if (!isRegistryAddress(spec)) return () => readSnapshot(resolve(spec));
  if (caPem === undefined) throw new AegisError(ErrorCode.InvalidArgument, `a registry address (${spec}) needs the CA that certifies it (--ca / --registry-ca FILE)`);
  return () => fetchSnapshot(spec, caPem);
}
