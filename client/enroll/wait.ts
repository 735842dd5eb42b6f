/**
 * Enrollment that waits for an offline CA: the coordinator answers `pending_request_id` while the
 * CSR waits to be signed on the CA host; the client asks again with the same token and CSR, with
 * backoff (1 s doubling to 30 s, jittered), up to `waitMs`. Against an embedded CA the first
 * answer carries the certificate and nothing waits.
 *
 * Every certificate taken must chain to the pinned CA and carry this identity's TLS key, round key
 * and id, and the CA the coordinator names must be the pinned one.
 */
import { createPublicKey, X509Certificate, randomInt } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import { channelOptions } from '../../shared/rpc/channel.js';
import { callUnary, clientFor } from '../../shared/rpc/service.js';
import { asAegisError } from '../agent/grpc-errors.js';
import { certificateKeys } from '../../shared/keystore/round-key.js';
import { createCsr, tlsKeyPemFor, type ClientIdentity, type TlsKeyType } from './csr.js';
import { channelCredentials } from '../../shared/rpc/tls-credentials.js';

/** Default time `aegis client enroll` waits for an offline CA: 10 minutes. */
export const ENROLL_WAIT_MS = 10 * 60 * 1000;

function checkIssued(certificateDer: Uint8Array, caPem: string, identity: ClientIdentity, clientId: string): void {
  let ok: boolean;
  try {
    const cert = new X509Certificate(Buffer.from(certificateDer));
    const ca = new X509Certificate(caPem);
    const tlsKey = createPublicKey(tlsKeyPemFor(identity, certificateDer)).export({ format: 'der', type: 'spki' });
    ok =
      cert.checkIssued(ca) &&
      cert.verify(ca.publicKey) &&
      Buffer.from(certificateKeys(cert).roundKey).equals(Buffer.from(identity.publicKey)) &&
      cert.publicKey.export({ format: 'der', type: 'spki' }).equals(tlsKey) &&
      (cert.subjectAltName ?? '').split(', ').includes(`URI:urn:aegis:client:${clientId}`);
  } catch {
    ok = false;
  }
  if (!ok) throw new AegisError(ErrorCode.Unauthenticated, 'the certificate the coordinator returned does not chain to the pinned CA or is not for this identity');
}

/**
 * Enrolls with a one-time token; while the coordinator answers pending (offline CA), asks again
 * with the same token and CSR until the certificate comes or `waitMs` passes (`unavailable`).
 */
export async function enrollAndWait(opts: {
  enrollAddress: string;
  caPem: string;
  token: string;
  identity: ClientIdentity;
  clientId: string;
  waitMs?: number;
  onPending?: (requestId: string, waitedMs: number) => void;
  /** The TLS key type to ask for; default P-256 (client/enroll/csr.ts). */
  tlsKeyType?: TlsKeyType;
}): Promise<{ certificateDer: Uint8Array; caDer: Uint8Array; clientId: string; waited: boolean }> {
  const csrDer = await createCsr(opts.identity, opts.clientId, opts.tlsKeyType ? { tlsKeyType: opts.tlsKeyType } : {});
  const pinned = new X509Certificate(opts.caPem);
  const started = Date.now();
  const waitMs = opts.waitMs ?? ENROLL_WAIT_MS;
  let delay = 1000;
  let announced: string | undefined;
  const client = new (clientFor(enroll.Enrollment))(opts.enrollAddress, channelCredentials(opts.caPem), channelOptions(opts.enrollAddress));
  try {
    for (;;) {
      const reply = await callUnary(client.enroll.bind(client), create(enroll.EnrollRequestSchema, { token: opts.token, csrDer }), new grpc.Metadata(), {
        deadline: Date.now() + 15_000,
      }).catch((e: unknown) => {
        throw asAegisError(e);
      });
      // The CA the coordinator answers with must be the one this client pinned.
      if (!Buffer.from(reply.caCertificateDer).equals(pinned.raw)) throw new AegisError(ErrorCode.Unauthenticated, 'the coordinator answered with another CA than the pinned one');
      if (reply.certificateDer.length > 0) {
        checkIssued(reply.certificateDer, opts.caPem, opts.identity, reply.clientId);
        return { certificateDer: reply.certificateDer, caDer: reply.caCertificateDer, clientId: reply.clientId, waited: announced !== undefined };
      }
      if (!reply.pendingRequestId) throw new AegisError(ErrorCode.Unavailable, 'the coordinator answered with neither a certificate nor a pending request');
      const waited = Date.now() - started;
      if (announced !== reply.pendingRequestId) {
        announced = reply.pendingRequestId;
        opts.onPending?.(reply.pendingRequestId, waited);
      }
      if (waited >= waitMs) {
        throw new AegisError(ErrorCode.Unavailable, `the offline CA has not signed request ${reply.pendingRequestId} yet; run the same command again later (the token stays bound to this device's CSR)`);
      }
      const sleep = Math.min(delay, Math.max(0, waitMs - waited)) * (0.75 + randomInt(0, 500) / 1000);
      await new Promise((r) => setTimeout(r, sleep));
      delay = Math.min(delay * 2, 30_000);
    }
  } finally {
    client.close();
  }
}
