/**
 * The dashboard's default TLS certificate when it is exposed beyond this host
 * (`--dashboard-allow-remote` without `--dashboard-tls-cert`): the coordinator's own TLS server
 * credential — with an offline CA the one signed on the CA host, otherwise a server certificate
 * its CA issues at start for the dashboard's address. Clients verify it with the coordinator's
 * `ca.pem`. Its key is ECDSA P-256 (`issueServerCertificate`), so any TLS client completes the
 * handshake, and with a P-256 CA (every CA made now) a browser that trusts that CA opens the
 * dashboard. A CA made before P-256 is Ed25519 and signs the certificate with Ed25519, which
 * browsers do not verify (Chromium: ERR_CERT_AUTHORITY_INVALID; NSS cannot even import such a
 * CA): there a browser needs `--dashboard-tls-cert` with a certificate it trusts.
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
