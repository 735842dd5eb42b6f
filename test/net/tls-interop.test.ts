/**
 * The TLS policy (shared/net/tls-policy.ts) and the certificate profile against another TLS
 * stack, over real sockets: the system `openssl s_client` (a separate process) against both
 * coordinator listeners, and Aegis's own outgoing channels against a server that offers what the
 * policy leaves out.
 *
 * - Suites: each TLS 1.3 suite offered alone — TLS_AES_128_GCM_SHA256 is refused,
 *   TLS_AES_256_GCM_SHA384 and TLS_CHACHA20_POLY1305_SHA256 are accepted — on the main (mTLS)
 *   listener with a client certificate and on the enrollment listener; TLS 1.2 is refused on both.
 * - Outgoing: a server that offers only TLS_AES_128_GCM_SHA256 gets no handshake from
 *   `channelCredentials` (enrollment, mTLS client channel).
 * - Signature algorithms: a client that offers only what BoringSSL offers by default for
 *   certificates (ECDSA P-256 and RSA-PSS with SHA-256; no Ed25519) completes the handshake on
 *   both listeners with the P-256 client certificate it got by real enrollment, and makes a gRPC
 *   call with Node restricted to the same list; so does an operator credential (P-256, as
 *   `issueOperatorCertificate` makes it now) on the Admin service, while an Ed25519 operator
 *   certificate from before P-256 cannot sign under that list. An Ed25519 server certificate (what the
 *   coordinator used before P-256) gets an alert from that client: the control that shows the
 *   restriction bites.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { enrollWithToken } from '../../client/agent/connection.js';
import { createCsr, createIdentity, tlsKeyPemFor, type ClientIdentity } from '../../client/enroll/csr.js';
import { createCa, csrForSeed, exportCa, issueClientCertificate, issueOperatorCertificate, issueServerCertificate, KeyBindings } from '../../coordinator/auth/ca.js';
import type { Coordinator } from '../../coordinator/service/coordinator.js';
import { ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { ed25519PrivateKeyPem } from '../../shared/keystore/webcrypto-ed25519.js';
import { TLS_CLIENT_POLICY } from '../../shared/net/tls-policy.js';
import { callUnary, clientFor } from '../../shared/rpc/service.js';
import { channelCredentials } from '../../shared/rpc/tls-credentials.js';
import { startCoordinator } from '../support/cluster.js';

/** What BoringSSL offers by default for certificate signatures, in OpenSSL's and in Node's spelling. */
const BORINGSSL_SIGALGS = 'ECDSA+SHA256:RSA-PSS+SHA256';
const BORINGSSL_SIGALGS_NODE = 'ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256';
const OWN_CHANNEL: grpc.ChannelOptions = { 'grpc.use_local_subchannel_pool': 1 };

let c: Coordinator;
let dir: string;
let client: { clientId: string; identity: ClientIdentity; certificateDer: Uint8Array };
const files = { ca: '', cert: '', key: '' };

beforeAll(async () => {
  c = await startCoordinator();
  dir = await mkdtemp(join(tmpdir(), 'aegis-tls-interop-'));
  // A P-256 client certificate through the real Enroll RPC (a one-time token and a CSR).
  const identity = await createIdentity();
  const { token } = await c.createInvite();
  const r = await enrollWithToken({ enrollAddress: c.enrollAddress, caPem: c.ca.certificatePem, token, identity, clientId: 'interop-1' });
  client = { clientId: r.clientId, identity, certificateDer: r.certificateDer };
  files.ca = join(dir, 'ca.pem');
  files.cert = join(dir, 'client.pem');
  files.key = join(dir, 'client.key');
  await writeFile(files.ca, c.ca.certificatePem);
  await writeFile(files.cert, new X509Certificate(Buffer.from(client.certificateDer)).toString());
  await writeFile(files.key, tlsKeyPemFor(identity, client.certificateDer), { mode: 0o600 });
});

afterAll(async () => {
  await c.close();
  await rm(dir, { recursive: true, force: true });
});

interface SClient {
  /** The client's side of the handshake finished ("CONNECTION ESTABLISHED"). */
  established: boolean;
  /**
   * The server then sent application data (the gRPC server's HTTP/2 SETTINGS): it accepted the
   * connection. In TLS 1.3 the server checks a client certificate after the client has finished,
   * so on the main listener only this shows the certificate was taken.
   */
  accepted: boolean;
  protocol: string | undefined;
  suite: string | undefined;
  /** The server's signature type (`-brief`: "Signature type: ECDSA"). */
  signatureType: string | undefined;
  alert: string | undefined;
  output: string;
}

/**
 * `openssl s_client -brief -alpn h2` to `address`. `-brief` writes the handshake summary to
 * stderr; stdout carries only what the server sends. The run ends on the first byte from the
 * server (then stdin is closed and s_client says goodbye) or when the server ends the connection
 * (an alert, or a close); a generous kill timer is only a safety net. The result is parsed from
 * its output.
 */
function sClient(address: string, args: string[], opts: { caFile?: string; verify?: boolean } = {}): Promise<SClient> {
  const verify = opts.verify === false ? [] : ['-verify_return_error'];
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', '-connect', address, '-servername', 'localhost', '-alpn', 'h2', '-CAfile', opts.caFile ?? files.ca, ...verify, '-brief', ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    let appData = 0;
    child.stdout.on('data', (d: Buffer) => {
      appData += d.length;
      child.stdin.end();
    });
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(killer);
      resolve({
        established: /CONNECTION ESTABLISHED/.test(output),
        accepted: /CONNECTION ESTABLISHED/.test(output) && appData > 0,
        protocol: /Protocol version: (\S+)/.exec(output)?.[1],
        suite: /Ciphersuite: (\S+)/.exec(output)?.[1],
        signatureType: /^Signature type: (\S+)/m.exec(output)?.[1],
        alert: /alert ([a-z ]+?)(?::|$)/m.exec(output)?.[1]?.trim(),
        output,
      });
    });
  });
}

const listeners = (): { name: string; address: string; auth: string[] }[] => [
  { name: 'main (mTLS, with the enrolled client certificate)', address: c.address, auth: ['-cert', files.cert, '-key', files.key] },
  { name: 'enrollment (server-authenticated)', address: c.enrollAddress, auth: [] },
];

describe('the TLS policy against openssl s_client', () => {
  test('each listener refuses TLS_AES_128_GCM_SHA256 offered alone and accepts TLS_AES_256_GCM_SHA384 and TLS_CHACHA20_POLY1305_SHA256 alone', async () => {
    for (const l of listeners()) {
      const refused = await sClient(l.address, [...l.auth, '-tls1_3', '-ciphersuites', 'TLS_AES_128_GCM_SHA256']);
      expect({ listener: l.name, established: refused.established, alert: refused.alert }).toEqual({ listener: l.name, established: false, alert: 'handshake failure' });
      for (const suite of ['TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
        const ok = await sClient(l.address, [...l.auth, '-tls1_3', '-ciphersuites', suite]);
        expect({ listener: l.name, accepted: ok.accepted, protocol: ok.protocol, suite: ok.suite }).toEqual({ listener: l.name, accepted: true, protocol: 'TLSv1.3', suite });
      }
    }
  });

  test('the main listener takes no connection without a client certificate or with one from another CA (what "accepted" tells apart)', async () => {
    const none = await sClient(c.address, []);
    expect({ established: none.established, accepted: none.accepted, alert: none.alert }).toEqual({ established: true, accepted: false, alert: 'certificate required' });
    const other = await createCa({ name: 'other CA' });
    const id = await createIdentity();
    const forged = await issueClientCertificate(other, await createCsr(id, 'interop-1'), 'interop-1', { bindings: new KeyBindings() });
    await writeFile(join(dir, 'forged.pem'), forged.certificatePem);
    await writeFile(join(dir, 'forged.key'), tlsKeyPemFor(id, forged.certificateDer), { mode: 0o600 });
    const r = await sClient(c.address, ['-cert', join(dir, 'forged.pem'), '-key', join(dir, 'forged.key')]);
    expect({ established: r.established, accepted: r.accepted }).toEqual({ established: true, accepted: false });
  });

  test('each listener refuses TLS 1.2', async () => {
    for (const l of listeners()) {
      const r = await sClient(l.address, [...l.auth, '-tls1_2']);
      expect({ listener: l.name, established: r.established, alert: r.alert }).toEqual({ listener: l.name, established: false, alert: 'protocol version' });
    }
  });
});

/** One SecAgg call over `creds` to `address`: resolves with the refusal's gRPC code. */
async function callCode(address: string, creds: grpc.ChannelCredentials): Promise<number> {
  const cl = new (clientFor(pb.SecAgg))(address, creds, OWN_CHANNEL);
  try {
    await callUnary(cl.issueTokens.bind(cl), create(pb.IssueTokensRequestSchema, { count: 1 }), new grpc.Metadata(), { deadline: Date.now() + 10_000 });
    return grpc.status.OK;
  } catch (e) {
    return (e as grpc.ServiceError).code;
  } finally {
    cl.close();
  }
}

describe('outgoing connections keep the policy', () => {
  /** A TLS 1.3 server offering only `suite`, with a certificate from the coordinator CA; counts handshakes. */
  async function suiteServer(suite: string): Promise<{ address: string; handshakes: () => number; errors: string[]; close: () => void }> {
    const cert = await issueServerCertificate(c.ca, { hosts: ['127.0.0.1', 'localhost'] });
    let handshakes = 0;
    const errors: string[] = [];
    const srv = tls.createServer({ key: cert.privateKeyPem, cert: cert.certificatePem, minVersion: 'TLSv1.3', ciphers: suite, ALPNProtocols: ['h2'] }, (s) => {
      handshakes++;
      s.destroy();
    });
    srv.on('tlsClientError', (e: Error) => errors.push(e.message));
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    return { address: `127.0.0.1:${(srv.address() as AddressInfo).port}`, handshakes: () => handshakes, errors, close: () => srv.close() };
  }


  test('a server offering only TLS_AES_128_GCM_SHA256 gets no handshake from an enrolling client or an mTLS client channel', async () => {
    const only128 = await suiteServer('TLS_AES_128_GCM_SHA256');
    const only256 = await suiteServer('TLS_AES_256_GCM_SHA384');
    try {
      const { token } = await c.createInvite();
      const enrolling = enrollWithToken({ enrollAddress: only128.address, caPem: c.ca.certificatePem, token, identity: await createIdentity(), clientId: 'never', timeoutMs: 10_000 });
      await expect(enrolling).rejects.toMatchObject({ code: ErrorCode.Unavailable });
      const mtls = channelCredentials(c.ca.certificatePem, { keyPem: tlsKeyPemFor(client.identity, client.certificateDer), certificatePem: new X509Certificate(Buffer.from(client.certificateDer)).toString() });
      expect(await callCode(only128.address, mtls)).toBe(grpc.status.UNAVAILABLE);
      expect(only128.handshakes()).toBe(0);
      expect(only128.errors.length).toBeGreaterThan(0);
      expect(only128.errors.join('\n')).toMatch(/no shared cipher|no suitable|handshake failure/i);
      // The control: the same channel does complete a handshake with a server offering a policy suite.
      await callCode(only256.address, mtls);
      expect(only256.handshakes()).toBeGreaterThan(0);
    } finally {
      only128.close();
      only256.close();
    }
  });
});

describe("BoringSSL's default signature algorithms", () => {
  test('a client offering only ECDSA+SHA256 and RSA-PSS+SHA256 completes the handshake on both listeners, the main one with its enrolled P-256 certificate', async () => {
    for (const l of listeners()) {
      const r = await sClient(l.address, [...l.auth, '-sigalgs', BORINGSSL_SIGALGS]);
      expect({ listener: l.name, accepted: r.accepted, protocol: r.protocol, signatureType: r.signatureType }).toEqual({
        listener: l.name,
        accepted: true,
        protocol: 'TLSv1.3',
        signatureType: 'ECDSA',
      });
    }
  });

  test('a gRPC call with Node restricted to the same signature algorithms succeeds over mTLS with the enrolled P-256 certificate', async () => {
    const context = tls.createSecureContext({
      ...TLS_CLIENT_POLICY,
      sigalgs: BORINGSSL_SIGALGS_NODE,
      ca: c.ca.certificatePem,
      key: tlsKeyPemFor(client.identity, client.certificateDer),
      cert: new X509Certificate(Buffer.from(client.certificateDer)).toString(),
    });
    const cl = new (clientFor(pb.SecAgg))(c.address, grpc.credentials.createFromSecureContext(context), OWN_CHANNEL);
    try {
      const r = await callUnary(cl.issueTokens.bind(cl), create(pb.IssueTokensRequestSchema, { count: 2 }), new grpc.Metadata(), { deadline: Date.now() + 15_000 });
      expect(r.tokens.length).toBe(2);
    } finally {
      cl.close();
    }
  });

  test('the control on the client side: a client certificate from before P-256 (Ed25519, enrolled as such) cannot sign under that list', async () => {
    const identity = await createIdentity();
    const { token } = await c.createInvite();
    const legacy = await enrollWithToken({ enrollAddress: c.enrollAddress, caPem: c.ca.certificatePem, token, identity, clientId: 'interop-legacy', tlsKeyType: 'ed25519' });
    expect(new X509Certificate(Buffer.from(legacy.certificateDer)).publicKey.asymmetricKeyType).toBe('ed25519');
    const context = (sigalgs?: string): tls.SecureContext =>
      tls.createSecureContext({
        ...TLS_CLIENT_POLICY,
        ...(sigalgs ? { sigalgs } : {}),
        ca: c.ca.certificatePem,
        key: tlsKeyPemFor(identity, legacy.certificateDer),
        cert: new X509Certificate(Buffer.from(legacy.certificateDer)).toString(),
      });
    const call = (ctx: tls.SecureContext): Promise<number> => callCode(c.address, grpc.credentials.createFromSecureContext(ctx));
    expect(await call(context(BORINGSSL_SIGALGS_NODE))).toBe(grpc.status.UNAVAILABLE);
    // With OpenSSL's default list (Ed25519 in it) the same old certificate still works.
    expect(await call(context())).toBe(grpc.status.OK);
  });

  test('an operator credential (P-256, as issued now) opens the Admin service under that list: openssl s_client, and a Node gRPC Admin call', async () => {
    const op = await issueOperatorCertificate(c.ca, { name: 'interop-ops' });
    op.seed.fill(0);
    const cert = new X509Certificate(Buffer.from(op.certificateDer));
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const opCert = join(dir, 'operator.pem');
    const opKey = join(dir, 'operator.key');
    await writeFile(opCert, cert.toString());
    await writeFile(opKey, op.privateKeyPem, { mode: 0o600 });
    const r = await sClient(c.address, ['-cert', opCert, '-key', opKey, '-sigalgs', BORINGSSL_SIGALGS]);
    expect({ accepted: r.accepted, protocol: r.protocol, signatureType: r.signatureType }).toEqual({ accepted: true, protocol: 'TLSv1.3', signatureType: 'ECDSA' });
    const context = tls.createSecureContext({ ...TLS_CLIENT_POLICY, sigalgs: BORINGSSL_SIGALGS_NODE, ca: c.ca.certificatePem, key: op.privateKeyPem, cert: cert.toString() });
    const cl = new (clientFor(admin.Admin))(c.address, grpc.credentials.createFromSecureContext(context), OWN_CHANNEL);
    try {
      const listed = await callUnary(cl.listOperators.bind(cl), create(admin.ListOperatorsRequestSchema, {}), new grpc.Metadata(), { deadline: Date.now() + 15_000 });
      expect(listed.operators).toBeDefined();
    } finally {
      cl.close();
    }
  });

  test('the control on the operator side: an Ed25519 operator certificate (from before P-256) cannot sign under that list, and works with OpenSSL\'s default one', async () => {
    const seed = new Uint8Array(randomBytes(32));
    const ops = await issueOperatorCertificate(c.ca, { name: 'interop-admin' });
    const adminCl = new (clientFor(admin.Admin))(c.address, grpc.credentials.createFromSecureContext(tls.createSecureContext({ ...TLS_CLIENT_POLICY, ca: c.ca.certificatePem, key: ops.privateKeyPem, cert: ops.certificatePem })), OWN_CHANNEL);
    let legacy: admin.IssueOperatorReply;
    try {
      legacy = await callUnary(adminCl.issueOperator.bind(adminCl), create(admin.IssueOperatorRequestSchema, { name: 'interop-legacy-op', csrDer: await csrForSeed(seed, 'operator:interop-legacy-op') }));
    } finally {
      adminCl.close();
    }
    const cert = new X509Certificate(Buffer.from(legacy.certificateDer));
    expect(cert.publicKey.asymmetricKeyType).toBe('ed25519');
    const call = async (sigalgs?: string): Promise<number> => {
      const ctx = tls.createSecureContext({ ...TLS_CLIENT_POLICY, ...(sigalgs ? { sigalgs } : {}), ca: c.ca.certificatePem, key: ed25519PrivateKeyPem(seed), cert: cert.toString() });
      const cl = new (clientFor(admin.Admin))(c.address, grpc.credentials.createFromSecureContext(ctx), OWN_CHANNEL);
      try {
        await callUnary(cl.listOperators.bind(cl), create(admin.ListOperatorsRequestSchema, {}), new grpc.Metadata(), { deadline: Date.now() + 10_000 });
        return grpc.status.OK;
      } catch (e) {
        return (e as grpc.ServiceError).code;
      } finally {
        cl.close();
      }
    };
    expect(await call(BORINGSSL_SIGALGS_NODE)).toBe(grpc.status.UNAVAILABLE);
    expect(await call()).toBe(grpc.status.OK);
  });

  test('the control: an Ed25519 server certificate, as the coordinator had before P-256, gets an alert from that client', async () => {
    // A self-signed Ed25519 certificate and its key (the CA of createCa keyType ed25519 serves as
    // one; it is a CA certificate, so chain checks are left out: the handshake is what is tested).
    const ed = await createCa({ name: 'localhost', keyType: 'ed25519' });
    const edCa = join(dir, 'ed25519.pem');
    await writeFile(edCa, ed.certificatePem);
    const srv = tls.createServer({ key: ed25519PrivateKeyPem(exportCa(ed).seed), cert: ed.certificatePem, minVersion: 'TLSv1.3' }, (s) => s.end('hello'));
    srv.on('tlsClientError', () => undefined);
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const address = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
    try {
      const restricted = await sClient(address, ['-sigalgs', BORINGSSL_SIGALGS], { caFile: edCa, verify: false });
      expect({ established: restricted.established, alert: restricted.alert }).toEqual({ established: false, alert: 'handshake failure' });
      // OpenSSL's own default list has Ed25519: the same server is fine with it.
      expect((await sClient(address, [], { caFile: edCa, verify: false })).accepted).toBe(true);
    } finally {
      srv.close();
    }
  });
});
