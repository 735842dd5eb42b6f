/**
 * The dashboard's default TLS certificate when it is exposed beyond this host
 * (`--dashboard-allow-remote` without `--dashboard-tls-cert`): the coordinator's own TLS server
 * credential — with an offline CA the one signed on the CA host, otherwise a server certificate
 * its CA issues at start for the dashboard's address. Clients verify it with the coordinator's
 * `ca.pem`. Its key is Ed25519 like every key the coordinator CA certifies, which tools (curl,
 * openssl, Node) accept and browsers so far do not (Chromium ends the handshake with
 * ERR_SSL_VERSION_OR_CIPHER_MISMATCH): a browser needs `--dashboard-tls-cert` with an ECDSA or
 * RSA certificate it trusts.
 */
import { hostname, networkInterfaces } from 'node:os';
import { hasCaKey, issueServerCertificate, type CaCertificate } from '../auth/ca.js';

const HOST_NAME = /^[A-Za-z0-9.:-]{1,253}$/;

/**
 * The names a certificate for a dashboard listening on `listen` should carry: its host (for a
 * wildcard address, this machine's name and non-loopback interface addresses), 127.0.0.1 and
 * localhost; at most 32.
 */
export function dashboardHosts(listen: string): string[] {
  const m = /^(\[[^\]]+\]|[^:[\]]+):\d{1,5}$/.exec(listen);
  const host = m ? m[1]!.replace(/^\[|\]$/g, '') : '';
  const wildcard = host === '0.0.0.0' || host === '::';
  const names = wildcard
    ? [
        hostname(),
        ...Object.values(networkInterfaces())
          .flat()
          .filter((a) => a !== undefined && !a.internal)
          .map((a) => a!.address),
      ]
    : [host];
  return [...new Set([...names, '127.0.0.1', 'localhost'])].filter((h) => HOST_NAME.test(h)).slice(0, 32);
}

/**
 * The coordinator's TLS credential for a dashboard at `listen`: `serverCredential` when the
 * coordinator has one (offline CA), else a certificate from its CA; undefined when neither is
 * possible (no CA key on this host and no server credential).
 */
export async function coordinatorDashboardCredential(
  ca: CaCertificate,
  listen: string,
  serverCredential?: { privateKeyPem: string; certificatePem: string },
): Promise<{ keyPem: string; certPem: string } | undefined> {
  if (serverCredential) return { keyPem: serverCredential.privateKeyPem, certPem: serverCredential.certificatePem };
  if (!hasCaKey(ca)) return undefined;
  const issued = await issueServerCertificate(ca, { hosts: dashboardHosts(listen) });
  return { keyPem: issued.privateKeyPem, certPem: issued.certificatePem };
}
