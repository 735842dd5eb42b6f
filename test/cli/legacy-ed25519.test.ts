/**
 * An existing deployment after the move to P-256 (docs/operator-guide.md, "Certificates and TLS"), with real
 * processes: a coordinator data dir made by the release before P-256 (test/vectors/
 * legacy-ed25519-coordinator: its Ed25519 CA, token and operator keys sealed under the passphrase
 * below, and one enrolled client) is started by today's `aegis coordinator start`. Its CA stays
 * Ed25519 and keeps issuing; the TLS server certificate is P-256 now; a client enrolled the old
 * way (`--tls-key ed25519`) keeps its Ed25519 certificate, one moves to P-256 with `client run
 * --tls-key p256` (same round key), a new client gets P-256; all three complete a round together;
 * a client offering only BoringSSL's default signature algorithms connects with the new client's
 * certificate; its Ed25519 operator credential opens with the Ed25519 key of its sealed seed, and
 * operator credentials issued now (the built-in one reissued at start, `operators issue`) are P-256.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { openOperatorCredential } from '../../coordinator/service/data-dir.js';
import { readKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import { certificateKeys } from '../../shared/keystore/round-key.js';
import { p256PrivateKeyPem, P256Purpose } from '../../shared/keystore/webcrypto-p256.js';
import { CLI, cliJson, runCli } from '../support/cli.js';
import { waitFor } from '../support/cluster.js';

const FIXTURE = fileURLToPath(new URL('../vectors/legacy-ed25519-coordinator', import.meta.url));
/** The passphrase the fixture's KEK keyfile was made with (a test vector, not a secret). */
const PASS = 'legacy data dir test passphrase';
const env = { ...process.env, AEGIS_PASSPHRASE: PASS, AEGIS_LOG_LEVEL: 'warn' };
const VALUES = [0.5, -0.25, 0.125, 1];

let root: string;
let coordDir: string;
const children: ChildProcess[] = [];
const aegis = (args: string[]) => runCli(args, env);

function spawnAegis(args: string[]): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.resume();
  children.push(child);
  return child;
}

const endpoint = (): { address: string; enrollAddress: string } => JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8'));
const certOf = (dir: string): X509Certificate => new X509Certificate(readFileSync(join(dir, 'client.pem'), 'utf8'));
/** `openssl x509 -text` of a certificate (the system binary). */
const opensslText = (pem: string): string => execFileSync('openssl', ['x509', '-noout', '-text'], { input: pem, encoding: 'utf8' });

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-legacy-'));
  coordDir = join(root, 'coord');
  cpSync(FIXTURE, coordDir, { recursive: true });
  // Git keeps no permissions; the data dir's secrets must not be readable by others.
  chmodSync(coordDir, 0o700);
  for (const f of readdirSync(coordDir)) chmodSync(join(coordDir, f), 0o600);
  spawnAegis(['coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--allow-unsigned']);
  await waitFor(() => existsSync(join(coordDir, 'coordinator.json')), 60_000, 'the coordinator to listen');
});

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('a data dir from before P-256', () => {
  test('the Ed25519 CA loads unchanged, the registry keeps its client, and the TLS server certificate is P-256 signed by that CA', async () => {
    expect(readFileSync(join(coordDir, 'ca.pem'), 'utf8')).toBe(readFileSync(join(FIXTURE, 'ca.pem'), 'utf8'));
    expect(opensslText(readFileSync(join(coordDir, 'ca.pem'), 'utf8'))).toMatch(/Public Key Algorithm: ED25519/);
    const list = cliJson(aegis(['clients', 'list', '--data-dir', coordDir, '--json']));
    expect(list.clients.map((c: { client_id: string }) => c.client_id)).toContain('legacy-1');
    const { address } = endpoint();
    const [host, port] = address.split(':') as [string, string];
    const server = await new Promise<X509Certificate>((resolve, reject) => {
      const s = tls.connect({ host, port: Number(port), ca: readFileSync(join(coordDir, 'ca.pem')), servername: 'localhost', minVersion: 'TLSv1.3', ALPNProtocols: ['h2'] }, () => {
        const raw = s.getPeerCertificate().raw;
        s.destroy();
        resolve(new X509Certificate(raw));
      });
      s.on('error', reject);
    });
    const text = opensslText(server.toString());
    expect(text).toMatch(/NIST CURVE: P-256/);
    expect(text).toMatch(/Signature Algorithm: ED25519/);
  });

  test('its Ed25519 operator credential opens with the Ed25519 key of the sealed seed; the coordinator reissued it at start as P-256 (it lived longer than 7 days), and operator commands run with it', async () => {
    // An untouched copy: the credential as the release before P-256 left it.
    const copy = join(root, 'untouched');
    cpSync(FIXTURE, copy, { recursive: true });
    chmodSync(copy, 0o700);
    for (const f of readdirSync(copy)) chmodSync(join(copy, f), 0o600);
    const old = await openOperatorCredential(copy, { passphrase: async () => PASS, pin: async () => '' });
    expect(createPrivateKey(old.keyPem).asymmetricKeyType).toBe('ed25519');
    expect(new X509Certificate(old.certificatePem).checkPrivateKey(createPrivateKey(old.keyPem))).toBe(true);
    expect(new X509Certificate(old.certificatePem).raw.equals(new X509Certificate(readFileSync(join(FIXTURE, 'operator.pem'))).raw)).toBe(true);

    // The started data dir: its 1-year credential was replaced at start by a 7-day P-256 one, signed by the Ed25519 CA.
    const text = opensslText(readFileSync(join(coordDir, 'operator.pem'), 'utf8'));
    expect(text).toMatch(/NIST CURVE: P-256/);
    expect(text).toMatch(/Signature Algorithm: ED25519/);
    const ops = cliJson(aegis(['operators', 'list', '--data-dir', coordDir, '--json'])).operators as { built_in: boolean; status: string; serial: string }[];
    const oldSerial = new X509Certificate(old.certificatePem).serialNumber.toLowerCase().replace(/^0+/, '');
    const active = ops.filter((o) => o.built_in && o.status === 'active');
    expect(active).toHaveLength(1);
    expect(active[0]!.serial).not.toBe(oldSerial);
    expect(active[0]!.serial).toBe(new X509Certificate(readFileSync(join(coordDir, 'operator.pem'))).serialNumber.toLowerCase().replace(/^0+/, ''));
    // An operator credential issued now under the Ed25519 CA is P-256 as well, and works.
    const file = join(root, 'ops.operator.json');
    const issued = runCli(['operators', 'issue', 'ops', '--out', file, '--data-dir', coordDir, '--json'], { ...env, AEGIS_OPERATOR_PASSPHRASE: PASS });
    expect(cliJson(issued)).toMatchObject({ ok: true, name: 'ops', out: file });
    const sealed = await readKeyfile(file, PASS, { expectedLabel: 'aegis/operator-credential' });
    expect(new X509Certificate(Buffer.from(sealed['operator-certificate']!)).publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const asOps = runCli(['clients', 'list', '--credential', file, '--data-dir', coordDir, '--json'], { ...env, AEGIS_OPERATOR_PASSPHRASE: PASS });
    expect(cliJson(asOps).clients.map((c: { client_id: string }) => c.client_id)).toContain('legacy-1');
  });

  test('old-style, moved and new clients complete a round together; the moved one keeps its round key on a P-256 certificate', async () => {
    const { address, enrollAddress } = endpoint();
    const devices = [
      { id: 'dev-old', enroll: ['--tls-key', 'ed25519'], run: [] as string[] },
      { id: 'dev-moved', enroll: ['--tls-key', 'ed25519'], run: ['--tls-key', 'p256'] },
      { id: 'dev-new', enroll: [], run: [] as string[] },
    ];
    const dirs: string[] = [];
    for (const [i, d] of devices.entries()) {
      const inv = cliJson(aegis(['clients', 'invite', '--data-dir', coordDir, '--id', d.id, '--json']));
      const dir = join(root, d.id);
      dirs.push(dir);
      const e = aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', dir, '--id', d.id, ...d.enroll, '--json']);
      expect(cliJson(e)).toEqual({ ok: true, client_id: d.id, data_dir: dir });
      expect(certOf(dir).publicKey.asymmetricKeyType).toBe(d.enroll.length > 0 ? 'ed25519' : 'ec');
      writeFileSync(join(root, `update-${i}.json`), JSON.stringify({ values: VALUES.map((v) => v * (i + 1)), weight: i + 1 }));
    }
    // A key type other than p256/ed25519 is refused with the flag named, and nothing is written.
    const bad = aegis(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', 'x'.repeat(43), '--ca', join(coordDir, 'ca.pem'), '--data-dir', join(root, 'bad'), '--tls-key', 'rsa', '--json']);
    expect(bad.status).toBe(2);
    expect(cliJson(bad).error).toMatchObject({ code: 'invalid-argument', message: expect.stringMatching(/--tls-key/) });
    expect(existsSync(join(root, 'bad'))).toBe(false);
    const movedBefore = certificateKeys(certOf(dirs[1]!));
    for (const [i, d] of devices.entries()) spawnAegis(['client', 'run', '--data-dir', dirs[i]!, '--input', join(root, `update-${i}.json`), '--allow-unsigned', ...d.run]);
    // The moved client renews at start for a P-256 key, for the same round key.
    await waitFor(() => certOf(dirs[1]!).publicKey.asymmetricKeyType === 'ec', 60_000, 'the moved client to renew for P-256');
    expect(certificateKeys(certOf(dirs[1]!))).toEqual({ tlsKeyType: 'p256', roundKey: movedBefore.roundKey });
    expect(certificateKeys(certOf(dirs[0]!)).tlsKeyType).toBe('ed25519');

    const manifestPath = join(root, 'job.json');
    const now = Date.now();
    writeFileSync(
      manifestPath,
      JSON.stringify({
        version: 1,
        jobId: 'legacy-job',
        rounds: 1,
        round: { dim: VALUES.length, cohort: 3, neighbors: 2, clip: 4, bits: 16 },
        deadlines: { advertiseMs: 10_000, shareMs: 10_000, maskedMs: 10_000, consistencyMs: 10_000, unmaskMs: 10_000 },
        issuedAt: new Date(now - 60_000).toISOString(),
        expiresAt: new Date(now + 3_600_000).toISOString(),
      }),
    );
    const launched = aegis(['round', 'launch', '--manifest', manifestPath, '--data-dir', coordDir, '--gather', '60s', '--wait', '--json']);
    expect(launched.status).toBe(0);
    expect(cliJson(launched).status).toMatchObject({ finished: true, ok: true, phase: 'completed', invited: 3, dropouts: 0 });
    const result = cliJson(aegis(['round', 'result', 'legacy-job', '--data-dir', coordDir, '--json']));
    expect(result.survivors).toEqual(['dev-moved', 'dev-new', 'dev-old']);
    expect(result.total_weight).toBe(6);
    const step = (2 * 4) / (2 ** 16 - 1);
    result.mean.forEach((m: number, j: number) => expect(Math.abs(m - VALUES[j]!)).toBeLessThanOrEqual((3 * step) / 6 + 1e-12));

    // The new client's certificate with only BoringSSL's default signature algorithms (openssl s_client).
    const seed = (await readKeyfile(join(dirs[2]!, 'identity.keyfile.json'), PASS, { expectedLabel: 'aegis/client-identity' })).seed!;
    writeFileSync(join(root, 'new.key'), p256PrivateKeyPem(seed, P256Purpose.ClientTls), { mode: 0o600 });
    const out = await new Promise<string>((resolve) => {
      const ch = spawn('openssl', ['s_client', '-connect', address, '-servername', 'localhost', '-alpn', 'h2', '-CAfile', join(coordDir, 'ca.pem'), '-verify_return_error', '-brief', '-sigalgs', 'ECDSA+SHA256:RSA-PSS+SHA256', '-cert', join(dirs[2]!, 'client.pem'), '-key', join(root, 'new.key')], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let text = '';
      let appData = 0;
      ch.stdout.on('data', (b: Buffer) => {
        appData += b.length;
        ch.stdin.end();
      });
      ch.stderr.on('data', (b: Buffer) => (text += b.toString()));
      const killer = setTimeout(() => ch.kill('SIGKILL'), 60_000);
      ch.on('close', () => {
        clearTimeout(killer);
        resolve(`${text}\napp-data:${appData}`);
      });
    });
    expect(out).toMatch(/CONNECTION ESTABLISHED/);
    expect(out).toMatch(/Verification: OK/);
    expect(out).not.toMatch(/app-data:0$/);
  });
});
