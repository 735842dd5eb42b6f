/**
 * The dashboard's part of the coordinator CLI: the `coordinator start --dashboard…` flags (what
 * they turn into for `Coordinator.startDashboard`, and the start line that says how to open it)
 * and `aegis dashboard token` (a single-use sign-in link).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import type { Command } from 'commander';
import { parseDuration, printResult, progress } from '../../shared/cli/output.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import type { TlsKeyType } from '../../shared/keystore/round-key.js';
import { call, run, withAdmin, type AdminOpts } from '../admin-client.js';
import type { Coordinator } from '../service/coordinator.js';

/** Adds the dashboard's flags to `coordinator start`. */
export function withDashboardOptions(cmd: Command): Command {
  return cmd
    .option('--dashboard <host:port>', 'serve the web dashboard on HOST:PORT (loopback, plain HTTP unless --dashboard-tls-cert; sign in with a link from `aegis dashboard token`)')
    .option('--dashboard-allow-remote', "let --dashboard listen on a non-loopback address: HTTPS only (TLS 1.3), with --dashboard-tls-cert/--dashboard-tls-key or else the coordinator's own TLS certificate (its CA, ca.pem)")
    .option('--dashboard-tls-cert <file>', 'serve the dashboard over HTTPS with this PEM certificate chain (with --dashboard-tls-key)')
    .option('--dashboard-tls-key <file>', "the PEM private key of --dashboard-tls-cert's certificate")
    .option('--dashboard-idle-timeout <duration>', 'a dashboard session ends after this long without a request', parseDuration('dashboard-idle-timeout', 60_000, 24 * 3_600_000), 15 * 60_000)
    .option('--dashboard-session-lifetime <duration>', 'a dashboard session ends this long after its sign-in, active or not', parseDuration('dashboard-session-lifetime', 60_000, 24 * 3_600_000), 8 * 3_600_000);
}

export interface DashboardCliOptions {
  dashboard?: string;
  dashboardAllowRemote?: boolean;
  dashboardTlsCert?: string;
  dashboardTlsKey?: string;
  dashboardIdleTimeout: number;
  dashboardSessionLifetime: number;
}

/** `startDashboard`'s options from the flags; `invalid-argument` naming the flag or file at fault. */
export async function dashboardStartOptions(o: DashboardCliOptions): Promise<Parameters<Coordinator['startDashboard']>[1]> {
  if (!o.dashboard) {
    const stray = (['dashboardAllowRemote', 'dashboardTlsCert', 'dashboardTlsKey'] as const).find((k) => o[k] !== undefined && o[k] !== false);
    if (stray) throw new AegisError(ErrorCode.InvalidArgument, `--${stray.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} needs --dashboard HOST:PORT`);
    return {};
  }
  if ((o.dashboardTlsCert === undefined) !== (o.dashboardTlsKey === undefined)) {
    throw new AegisError(ErrorCode.InvalidArgument, o.dashboardTlsCert === undefined ? '--dashboard-tls-key needs --dashboard-tls-cert (the certificate chain of that key)' : '--dashboard-tls-cert needs --dashboard-tls-key (the private key of that certificate)');
  }
  const read = (flag: string, file: string): Promise<string> =>
    readFile(file, 'utf8').catch(() => {
      throw new AegisError(ErrorCode.NotFound, `cannot read ${flag} ${file}`, 'check the path');
    });
  const tls =
    o.dashboardTlsCert !== undefined && o.dashboardTlsKey !== undefined
      ? { certPem: await read('--dashboard-tls-cert', o.dashboardTlsCert), keyPem: await read('--dashboard-tls-key', o.dashboardTlsKey) }
      : undefined;
  return {
    allowRemote: o.dashboardAllowRemote === true,
    ...(tls ? { tls } : {}),
    idleTimeoutMs: o.dashboardIdleTimeout,
    sessionLifetimeMs: o.dashboardSessionLifetime,
  };
}

/**
 * The start line naming the dashboard's URL and TLS. Its default certificate comes from the
 * coordinator CA with an ECDSA P-256 key: a browser opens it once it trusts that CA. A CA from
 * before P-256 is Ed25519: its signature on the certificate is one browsers do not verify (nor
 * can their trust stores hold such a CA), so a browser refuses it whatever it trusts.
 */
export function dashboardBanner(d: { url: string; tls: boolean }, o: DashboardCliOptions, dir: string, caKeyType: TlsKeyType): string {
  const ca = join(dir, 'ca.pem');
  const how = !d.tls
    ? 'plain HTTP on loopback'
    : o.dashboardTlsCert !== undefined
      ? `HTTPS, TLS 1.3, certificate ${o.dashboardTlsCert}`
      : caKeyType === 'p256'
        ? `HTTPS, TLS 1.3, certificate from the coordinator CA (verify with ${ca}; ECDSA P-256: a browser opens it once it trusts that CA)`
        : `HTTPS, TLS 1.3, certificate from the coordinator CA (verify with ${ca}; that CA is Ed25519, made before P-256, and browsers refuse certificates it signs: give --dashboard-tls-cert/--dashboard-tls-key for a browser)`;
  return `dashboard on ${d.url}/ (${how}; sign in with a link from: aegis dashboard token --data-dir ${dir})`;
}

// ---------------------------------------------------------------------------------------------
// aegis dashboard token

export function registerDashboard(program: Command): void {
  const group = program.command('dashboard').description('the web dashboard (coordinator start --dashboard HOST:PORT): login links (operators)');
  withAdmin(group.command('token').description('print a single-use login link for the dashboard (the token after "#": the browser sends it nowhere, the sign-in page posts it)'))
    .option('--ttl <duration>', 'how long the link stays valid (at most 24 h)', parseDuration('ttl', 1000, 24 * 3_600_000), 15 * 60_000)
    .action((o: AdminOpts & { ttl: number }) =>
      run(o, async (client) => {
        const r = await call<admin.IssueDashboardTokenRequest, admin.IssueDashboardTokenReply>(
          client,
          'issueDashboardToken',
          create(admin.IssueDashboardTokenRequestSchema, { ttlSeconds: Math.ceil(o.ttl / 1000) }),
        );
        const expiresAt = new Date(Number(r.expiresAtMs)).toISOString();
        if (!o.json) progress(`single-use login link, valid until ${expiresAt}; open it in a browser (or open ${r.url.replace(/#.*$/, '')} and paste the token after "#token="):`);
        printResult(o, { token: r.token, url: r.url, expires_at: expiresAt }, r.url);
      }),
    );
}
