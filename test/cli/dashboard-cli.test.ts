/**
 * `aegis coordinator start --dashboard …` and `aegis dashboard token` end to end, real `aegis`
 * processes (dist/):
 * - on loopback (from --config): plain HTTP; the token command prints a link with the token in
 *   the fragment (`/login#token=…`), which signs in once by the page's POST; opening the link
 *   without the page's script (the fragment never travels) signs nobody in; coordinator.json
 *   records the address;
 * - with --dashboard-allow-remote and no certificate: HTTPS with an ECDSA P-256 certificate from
 *   the coordinator's (P-256) CA, verified with the data dir's ca.pem, also by openssl offering
 *   only BoringSSL's default signature algorithms; TLS 1.3 with AES-256-GCM, while
 *   TLS_AES_128_GCM_SHA256 (Node and `openssl s_client`), TLS 1.2 and plain HTTP are refused; a
 *   Secure `__Host-` cookie; the idle timeout and lifetime flags reach the sessions;
 * - with --dashboard-tls-cert/--dashboard-tls-key: the operator's certificate (ECDSA P-256 from
 *   openssl) is the one served;
 * - bad flags exit 2 before anything listens, naming the flag or file;
 * - a coordinator without --dashboard answers failed-precondition.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions, type PeerCertificate } from 'node:tls';
import { CLI, cliJson, runCli } from '../support/cli.js';
import { waitFor } from '../support/cluster.js';
import { dashLogin, dashRequest, loginRequest } from '../support/dashboard-http.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'operator passphrase for tests', AEGIS_LOG_LEVEL: 'warn' };
let root: string;
const children: ChildProcess[] = [];

interface Started {
  child: ChildProcess;
  /** Everything it wrote on stderr so far. */
  stderr: () => string;
}

function start(dir: string, extra: string[]): Started {
  const child = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', dir, '--allow-unsigned', ...extra], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  children.push(child);
  return { child, stderr: () => err };
}

async function started(dir: string): Promise<{ dashboard?: string }> {
  await waitFor(() => existsSync(join(dir, 'coordinator.json')), 60_000, 'the coordinator to listen');
  return JSON.parse(readFileSync(join(dir, 'coordinator.json'), 'utf8')) as { dashboard?: string };
}

type Probe = { protocol: string | null; cipher: string; authorized: boolean; cert: PeerCertificate } | { error: string };

function probe(address: string, opts: ConnectionOptions): Promise<Probe> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    const socket = tlsConnect({ host, port, ...opts });
    socket.once('secureConnect', () => {
      resolve({ protocol: socket.getProtocol(), cipher: socket.getCipher().standardName, authorized: socket.authorized, cert: socket.getPeerCertificate() });
      socket.end();
    });
    socket.once('error', (e) => resolve({ error: e.message }));
  });
}

/** `openssl s_client` against `address` with TLS 1.3 and only `suite`. */
function sClient(address: string, suite: string, caFile: string): { status: number | null; out: string } {
  const r = spawnSync('openssl', ['s_client', '-connect', address, '-tls1_3', '-ciphersuites', suite, '-CAfile', caFile], { input: '', encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-dash-cli-'));
});

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('aegis dashboard token', () => {
  test('against `coordinator start --dashboard` on loopback (from --config, with an idle timeout): plain HTTP; the printed link carries the token after "#" and signs in once by POST; coordinator.json records the address', async () => {
    const dir = join(root, 'with');
    const config = join(root, 'config.json');
    writeFileSync(config, JSON.stringify({ dashboard: '127.0.0.1:0', dashboardIdleTimeout: '5m' }));
    const coordinator = start(dir, ['--config', config]);
    const endpoint = await started(dir);
    expect(endpoint.dashboard).toMatch(/^127\.0\.0\.1:\d+$/);
    const base = `http://${endpoint.dashboard}`;
    expect(coordinator.stderr()).toContain(`dashboard on ${base}/ (plain HTTP on loopback;`);

    const r = runCli(['dashboard', 'token', '--ttl', '5m', '--json', '--data-dir', dir], env);
    const out = cliJson(r);
    expect(out).toEqual({ token: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), url: `${base}/login#token=${out.token}`, expires_at: expect.any(String) });
    expect(Date.parse(out.expires_at)).toBeGreaterThan(Date.now());

    expect((await dashRequest(base, '/api/jobs')).status).toBe(401);
    // What reaches the server when the link is opened is only /login (the fragment stays in the
    // browser): the sign-in page, no cookie.
    const opened = await fetch(out.url, { redirect: 'manual' });
    expect(opened.status).toBe(200);
    expect(opened.headers.get('set-cookie')).toBeNull();
    expect(await opened.text()).toContain('action="/login"');
    // The page's POST signs in: a cookie without Secure (plain HTTP), HttpOnly, SameSite=Strict.
    const login = await loginRequest(base, out.token);
    expect(login.status).toBe(303);
    expect(login.headers.location).toBe('/');
    expect(String(login.headers['set-cookie'])).toMatch(/^aegis_dashboard=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=28800$/);
    expect((await loginRequest(base, out.token)).status).toBe(401);
    // The idle timeout from the config file.
    const session = /aegis_dashboard=([^;]+)/.exec(String(login.headers['set-cookie']))![1]!;
    expect(JSON.parse((await dashRequest(base, '/api/session', { cookie: session })).body).idleTimeoutMs).toBe(300_000);

    // Text mode: the link on stdout, the expiry and how to paste the token instead on stderr.
    const text = runCli(['dashboard', 'token', '--data-dir', dir], env);
    expect(text.status).toBe(0);
    expect(text.stdout.trim()).toMatch(new RegExp(`^http://${endpoint.dashboard!.replace(/\./g, '\\.')}/login#token=[A-Za-z0-9_-]{43}$`));
    expect(text.stderr).toMatch(/valid until \d{4}-/);
    expect(text.stderr).toContain(`open ${base}/login and paste the token`);
  });

  test('a coordinator without --dashboard answers failed-precondition', async () => {
    const dir = join(root, 'without');
    start(dir, []);
    await started(dir);
    const r = runCli(['dashboard', 'token', '--json', '--data-dir', dir], env);
    expect(r.status).toBe(2);
    expect(cliJson(r).error.code).toBe('failed-precondition');
  });
});

describe('coordinator start --dashboard-allow-remote: HTTPS only', () => {
  // An operator's own certificate (ECDSA P-256, keys by openssl), and a key of no certificate.
  let cert: string;
  let key: string;
  let otherKey: string;
  beforeAll(() => {
    cert = join(root, 'dash-cert.pem');
    key = join(root, 'dash-key.pem');
    otherKey = join(root, 'other-key.pem');
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
    if (made.status !== 0) throw new Error(`openssl req failed: ${made.stderr}`);
    const other = spawnSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', otherKey], { encoding: 'utf8' });
    if (other.status !== 0) throw new Error(`openssl genpkey failed: ${other.stderr}`);
  });

  test("without a certificate: the coordinator CA's certificate, TLS 1.3 with AES-256-GCM; AES-128-GCM, TLS 1.2 and plain HTTP refused; a Secure __Host- cookie; the session flags apply", async () => {
    const dir = join(root, 'remote');
    const coordinator = start(dir, ['--dashboard', '127.0.0.1:0', '--dashboard-allow-remote', '--dashboard-idle-timeout', '2m', '--dashboard-session-lifetime', '1h']);
    const endpoint = await started(dir);
    const address = endpoint.dashboard!;
    const caFile = join(dir, 'ca.pem');
    const ca = readFileSync(caFile, 'utf8');
    expect(coordinator.stderr()).toContain(`dashboard on https://${address}/ (HTTPS, TLS 1.3, certificate from the coordinator CA (verify with ${caFile}; ECDSA P-256: a browser opens it once it trusts that CA)`);
    // The certificate is ECDSA P-256, signed ecdsa-with-SHA256 by the (P-256) CA: what a browser
    // verifies. openssl offering only BoringSSL's (Chrome's) default signature algorithms
    // completes the handshake and verifies the chain against ca.pem.
    const boring = spawnSync('openssl', ['s_client', '-connect', address, '-tls1_3', '-sigalgs', 'ECDSA+SHA256:RSA-PSS+SHA256', '-CAfile', caFile, '-verify_return_error', '-showcerts'], { input: '', encoding: 'utf8', timeout: 30_000 });
    expect(boring.status).toBe(0);
    expect(boring.stdout).toMatch(/Verify return code: 0 \(ok\)/);
    const leafPem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(boring.stdout)![0];
    const leafText = spawnSync('openssl', ['x509', '-noout', '-text'], { input: leafPem, encoding: 'utf8' }).stdout;
    expect(leafText).toMatch(/NIST CURVE: P-256/);
    expect(leafText).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(new X509Certificate(leafPem).checkIssued(new X509Certificate(ca))).toBe(true);

    const ok = await probe(address, { ca });
    expect(ok).toMatchObject({ protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', authorized: true });
    expect(await probe(address, { ca, ciphers: 'TLS_AES_128_GCM_SHA256' })).toEqual({ error: expect.stringMatching(/handshake failure|no shared cipher/i) });
    expect(await probe(address, { ca, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' })).toEqual({ error: expect.stringMatching(/version/i) });
    const weak = sClient(address, 'TLS_AES_128_GCM_SHA256', caFile);
    expect(weak.status).not.toBe(0);
    expect(weak.out).toMatch(/handshake failure/);
    const strong = sClient(address, 'TLS_AES_256_GCM_SHA384', caFile);
    expect(strong.status).toBe(0);
    expect(strong.out).toMatch(/TLSv1\.3, Cipher is TLS_AES_256_GCM_SHA384/);
    expect(strong.out).toMatch(/Verify return code: 0 \(ok\)/);
    await expect(dashRequest(`http://${address}`, '/login')).rejects.toThrow(/socket hang up|ECONNRESET/);

    const out = cliJson(runCli(['dashboard', 'token', '--json', '--data-dir', dir], env));
    expect(out.url).toBe(`https://${address}/login#token=${out.token}`);
    const base = `https://${address}`;
    const loginFrom = Date.now();
    const login = await loginRequest(base, out.token, { ca });
    const loginTo = Date.now();
    expect(login.status).toBe(303);
    const parts = String(login.headers['set-cookie']).split('; ');
    expect(parts[0]).toMatch(/^__Host-aegis_dashboard=[A-Za-z0-9_-]{43}$/);
    expect(parts.slice(1).sort()).toEqual(['HttpOnly', 'Max-Age=3600', 'Path=/', 'SameSite=Strict', 'Secure']);
    const session = parts[0]!.split('=')[1]!;
    const info = JSON.parse((await dashRequest(base, '/api/session', { ca, cookie: session, cookieName: '__Host-aegis_dashboard' })).body);
    expect(info.idleTimeoutMs).toBe(120_000);
    // Ends 1 h after the sign-in whatever happens, 2 min after the last request otherwise.
    expect(info.expiresAt).toBeGreaterThanOrEqual(loginFrom + 3_600_000);
    expect(info.expiresAt).toBeLessThanOrEqual(loginTo + 3_600_000);
    expect(info.idleExpiresAt).toBeGreaterThanOrEqual(loginFrom + 120_000);
    expect(info.idleExpiresAt).toBeLessThanOrEqual(Date.now() + 120_000);
  });

  test('with --dashboard-tls-cert/--dashboard-tls-key: that certificate (ECDSA P-256) is served', async () => {
    const dir = join(root, 'own-cert');
    const coordinator = start(dir, ['--dashboard', '127.0.0.1:0', '--dashboard-allow-remote', '--dashboard-tls-cert', cert, '--dashboard-tls-key', key]);
    const address = (await started(dir)).dashboard!;
    expect(coordinator.stderr()).toContain(`HTTPS, TLS 1.3, certificate ${cert};`);
    const pem = readFileSync(cert, 'utf8');
    const served = await probe(address, { ca: pem });
    expect(served).toMatchObject({ protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', authorized: true });
    expect((served as { cert: PeerCertificate }).cert.fingerprint256).toBe(new X509Certificate(pem).fingerprint256);
    const { token } = cliJson(runCli(['dashboard', 'token', '--json', '--data-dir', dir], env));
    expect(await dashLogin(`https://${address}`, token, { ca: pem })).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  test('bad dashboard flags exit 2 naming the flag or file, before anything listens', () => {
    const cases: [string[], RegExp][] = [
      [['--dashboard', '127.0.0.1:0', '--dashboard-tls-cert', cert], /--dashboard-tls-cert needs --dashboard-tls-key/],
      [['--dashboard', '127.0.0.1:0', '--dashboard-tls-key', cert], /--dashboard-tls-key needs --dashboard-tls-cert/],
      [['--dashboard-allow-remote'], /--dashboard-allow-remote needs --dashboard HOST:PORT/],
      [['--dashboard', '127.0.0.1:0', '--dashboard-tls-cert', join(root, 'absent.pem'), '--dashboard-tls-key', cert], /cannot read --dashboard-tls-cert .*absent\.pem/],
    ];
    for (const [i, [flags, message]] of cases.entries()) {
      const dir = join(root, `bad-${i}`);
      const r = runCli(['coordinator', 'start', '--listen', '127.0.0.1:0', '--data-dir', dir, '--allow-unsigned', ...flags], env);
      expect([flags, r.status]).toEqual([flags, 2]);
      expect(r.stderr).toMatch(message);
      expect(existsSync(join(dir, 'coordinator.json'))).toBe(false);
    }
  });

  test('a key that does not belong to the certificate, and a non-loopback address without --dashboard-allow-remote, exit 2', () => {
    const mismatch = runCli(['coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', join(root, 'mismatch'), '--allow-unsigned', '--dashboard', '127.0.0.1:0', '--dashboard-tls-cert', cert, '--dashboard-tls-key', otherKey], env);
    expect(mismatch.status).toBe(2);
    expect(mismatch.stderr).toMatch(/invalid-argument.*TLS key and certificate do not load/);
    const wildcard = runCli(['coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', join(root, 'wildcard'), '--allow-unsigned', '--dashboard', '0.0.0.0:0'], env);
    expect(wildcard.status).toBe(2);
    expect(wildcard.stderr).toMatch(/not loopback; pass --dashboard-allow-remote/);
  });
});
