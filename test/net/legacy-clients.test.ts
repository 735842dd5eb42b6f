/**
 * Clients keep the TLS key type of their certificate (docs/operator-guide.md, "Certificates and TLS"), over real
 * gRPC/TLS with real ClientRunners under an Ed25519 CA (a data dir from before P-256): a client
 * enrolled with an Ed25519 certificate renews with Ed25519 and rotates its identity key on
 * Ed25519; a client enrolled since renews on its P-256 key; and the registry keeps each client
 * under its Ed25519 round key throughout.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { enrollWithToken, type ClientRunner } from '../../client/agent/connection.js';
import { createIdentity, type ClientIdentity } from '../../client/enroll/csr.js';
import { createCa } from '../../coordinator/auth/ca.js';
import { ErrorCode, isAegisError } from '../../shared/errors.js';
import { certificateKeys } from '../../shared/keystore/round-key.js';
import { startCoordinator, startRunners, waitFor, type Enrolled } from '../support/cluster.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');
const spki = (der: Uint8Array): string => new X509Certificate(Buffer.from(der)).publicKey.export({ format: 'der', type: 'spki' }).toString('base64');

describe('clients keep their TLS key type', () => {
  test('under an Ed25519 CA, an Ed25519 client renews and rotates on Ed25519 and a P-256 client renews on its P-256 key; the registry keeps the round keys', async () => {
    const c = await startCoordinator({ ca: await createCa({ name: 'Aegis coordinator CA', keyType: 'ed25519' }), clientCertTtlMs: 60_000 });
    cleanups.push(() => c.close());
    const enroll = async (clientId: string, tlsKeyType?: 'ed25519'): Promise<Enrolled> => {
      const identity = await createIdentity();
      const { token } = await c.createInvite();
      const r = await enrollWithToken({ enrollAddress: c.enrollAddress, caPem: c.ca.certificatePem, token, identity, clientId, ...(tlsKeyType ? { tlsKeyType } : {}) });
      return { clientId: r.clientId, identity, certificateDer: r.certificateDer };
    };
    const clients = [await enroll('old', 'ed25519'), await enroll('new')];
    expect(clients.map((e) => certificateKeys(e.certificateDer).tlsKeyType)).toEqual(['ed25519', 'p256']);
    const renewed: Uint8Array[][] = [[], []];
    const runners: ClientRunner[] = startRunners(c, clients, 4, undefined, (i) => ({
      renewAfter: 0.05,
      renewCheckMs: 200,
      onCertificate: async (der) => void renewed[i]!.push(der),
    }));
    cleanups.push(async () => void (await Promise.all(runners.map((r) => r.stop()))));
    await waitFor(() => renewed.every((list) => list.length >= 1), 30_000, 'both certificates renewed');
    for (const [i, e] of clients.entries()) {
      const next = renewed[i]![0]!;
      expect(certificateKeys(next)).toEqual(certificateKeys(e.certificateDer));
      expect(spki(next)).toBe(spki(e.certificateDer)); // the same TLS key
      expect(c.registry.clients.get(e.clientId)!.publicKey).toBe(b64u(e.identity.publicKey));
    }

    // Rotating the old client's identity key keeps its key type: a new Ed25519 certificate for the new key.
    await waitFor(() => c.connectedClients().length === 2, 20_000, 'both subscribed');
    const fresh: ClientIdentity = await createIdentity();
    // (A renewal under way refuses the rotation with `unavailable`; the caller tries again, as `client run` does.)
    let rotated: Uint8Array | undefined;
    for (let attempt = 0; rotated === undefined; attempt++) {
      rotated = await runners[0]!.rekey(fresh).catch((e: unknown) => {
        if (!isAegisError(e, ErrorCode.Unavailable) || attempt >= 200) throw e;
        return new Promise<undefined>((r) => setTimeout(() => r(undefined), 100));
      });
    }
    expect(certificateKeys(rotated)).toEqual({ tlsKeyType: 'ed25519', roundKey: fresh.publicKey });
    expect(c.registry.clients.get('old')!.publicKey).toBe(b64u(fresh.publicKey));
    await waitFor(() => c.connectedClients().includes('old'), 20_000, 'the rotated client back on its new certificate');
  });
});
