/**
 * The offline CA end to end, each step a real `aegis` process (dist/): `ca init`, a coordinator
 * whose first start waits for its server and operator certificates, `ca sign-csr`, an invite and a
 * `client enroll` that blocks until ops sign again, and then the proof: no encoding of the CA's
 * private key anywhere under the coordinator's data dir or in any process output (with a planted
 * copy as the positive control).
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { caCertificateFromPem } from '../../coordinator/auth/ca.js';
import { parseCrl, verifyCrl } from '../../coordinator/auth/crl.js';
import { PassphraseKek } from '../../shared/keystore/kek-passphrase.js';
import { SealedVault } from '../../shared/keystore/vault.js';
import { P256Purpose, p256Scalar } from '../../shared/keystore/webcrypto-p256.js';
import { encodingsOf, filesUnder, makeCanaries, scanFilesReport, type Needle } from '../support/canary.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';
import { waitFor } from '../support/cluster.js';

const c = makeCanaries();
const env = { ...process.env, AEGIS_PASSPHRASE: c.passphrase, AEGIS_LOG_LEVEL: 'debug' };
const logs: string[] = [];
const children: ChildProcess[] = [];
let root: string;
let caDir: string;
let coordDir: string;

const aegis = (args: string[]): CliRun => {
  const r = runCli(args, env, 100_000);
  logs.push(r.stdout, r.stderr);
  return r;
};
const spawnLogged = (args: string[]): { child: ChildProcess; done: Promise<number | null>; out: () => string } => {
  const p = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (d: Buffer) => {
    logs.push(d.toString('utf8'));
    out += d.toString('utf8');
  });
  p.stderr!.on('data', (d: Buffer) => {
    logs.push(d.toString('utf8'));
    out += d.toString('utf8');
  });
  children.push(p);
  return { child: p, done: new Promise((r) => p.on('exit', (code) => r(code))), out: () => out };
};

const keyNeedles = (key: Uint8Array, label: string): Needle[] =>
  encodingsOf({ ...c, key: Buffer.from(key) })
    .filter((n) => n.what.split(' | ').some((w) => w.startsWith('key')))
    .map((n) => ({ what: `${label}: ${n.what}`, bytes: n.bytes }));

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), `aegis-offline-ca-${c.runId}-`));
  caDir = join(root, 'ca');
  coordDir = join(root, 'coord');
});

afterAll(() => {
  for (const p of children) p.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('offline CA: the coordinator host never holds the CA private key', () => {
  test('ca init, waiting coordinator, sign-csr, enrollment that waits for the CA, and a scan of the coordinator', async () => {
    const init = cliJson(aegis(['ca', 'init', '--dir', caDir, '--json']));
    expect(init.ok).toBe(true);
    const caPem = readFileSync(join(caDir, 'ca.pem'), 'utf8');
    expect((await caCertificateFromPem(caPem)).keyType).toBe('p256');

    // First start in offline mode: requests in ca-requests/, and it waits (no coordinator.json yet).
    const coord = spawnLogged(['coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--allow-unsigned', '--offline-ca', join(caDir, 'ca.pem')]);
    await waitFor(() => /waiting for the offline CA/.test(coord.out()), 30_000, 'the coordinator to ask for its certificates');
    const requests = join(coordDir, 'ca-requests');
    expect(readdirSync(requests).filter((f) => f.endsWith('.json'))).toHaveLength(2);
    expect(existsSync(join(coordDir, 'coordinator.json'))).toBe(false);
    expect(JSON.parse(readFileSync(join(coordDir, 'ca-mode.json'), 'utf8')).mode).toBe('offline');

    const signed1 = cliJson(aegis(['ca', 'sign-csr', '--dir', caDir, requests, '--out', join(coordDir, 'ca-signed'), '--yes', '--json']));
    expect(signed1.signed.map((s: { kind: string }) => s.kind).sort()).toEqual(['operator', 'server']);
    // The server key and the operator credential are P-256.
    expect(Object.fromEntries(signed1.signed.map((s: { kind: string; key_type: string }) => [s.kind, s.key_type]))).toEqual({ server: 'p256', operator: 'p256' });
    await waitFor(() => existsSync(join(coordDir, 'coordinator.json')) && /coordinator listening on/.test(coord.out()), 30_000, 'the coordinator to serve');
    // No CA key on this host: no warning about an embedded CA.
    expect(coord.out()).not.toMatch(/embedded CA/);
    const { address, enrollAddress } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { address: string; enrollAddress: string };

    // An invite (the operator certificate from the offline CA works) and an enrollment that waits.
    const inv = cliJson(aegis(['clients', 'invite', '--data-dir', coordDir, '--id', 'dev-1', '--json']));
    const dev = join(root, 'dev-1');
    const enroll = spawnLogged(['client', 'enroll', '--coordinator', address, '--enroll-address', enrollAddress, '--token', inv.token, '--ca', join(coordDir, 'ca.pem'), '--data-dir', dev, '--id', 'dev-1', '--wait', '5m']);
    await waitFor(() => /waiting for the offline CA to sign request/.test(enroll.out()), 30_000, 'the client to wait for the CA');
    expect(existsSync(join(dev, 'client.pem'))).toBe(false);
    const clientReq = readdirSync(requests).filter((f) => f.endsWith('.json'));
    expect(clientReq).toHaveLength(1);

    const signed2 = cliJson(aegis(['ca', 'sign-csr', '--dir', caDir, requests, '--out', join(coordDir, 'ca-signed'), '--yes', '--json']));
    expect(signed2.signed).toHaveLength(1);
    expect(signed2.signed[0]).toMatchObject({ kind: 'client', subject: 'dev-1', key_type: 'p256' });
    expect(await enroll.done).toBe(0);
    const cert = new X509Certificate(readFileSync(join(dev, 'client.pem'), 'utf8'));
    const ca = new X509Certificate(caPem);
    expect(cert.checkIssued(ca) && cert.verify(ca.publicKey)).toBe(true);
    expect(cert.serialNumber.toLowerCase()).toBe(signed2.signed[0].serial);
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const listed = cliJson(aegis(['clients', 'list', '--data-dir', coordDir, '--json']));
    expect(JSON.stringify(listed)).toContain('dev-1');

    // Revocation with an offline CA: the coordinator refuses the client at once and asks the CA
    // host for a CRL (ca-requests/revocations.json); it serves only a CRL the CA signed.
    const serial = signed2.signed[0].serial.replace(/^0+(?=.)/, '');
    expect(cliJson(aegis(['clients', 'revoke', 'dev-1', '--reason', 'lost-device', '--data-dir', coordDir, '--json'])).client_id).toBe('dev-1');
    const revocations = JSON.parse(readFileSync(join(requests, 'revocations.json'), 'utf8')) as { entries: { serial: string; reason: string }[] };
    expect(revocations.entries).toEqual([expect.objectContaining({ serial, reason: 'lost-device' })]);
    const noCrl = aegis(['clients', 'crl', '--data-dir', coordDir, '--json']);
    expect(noCrl.status).toBe(2);
    expect(cliJson(noCrl).error.code).toBe('failed-precondition');
    expect(aegis(['ca', 'sign-csr', '--dir', caDir, requests, '--out', join(coordDir, 'ca-signed'), '--yes', '--json']).status).toBe(0);
    const crlFile = join(root, 'crl.pem');
    expect(aegis(['clients', 'crl', '--data-dir', coordDir, '--out', crlFile, '--json']).status).toBe(0);
    const crlPem = readFileSync(crlFile, 'utf8');
    expect(await verifyCrl(crlPem, await caCertificateFromPem(caPem))).toBe(true);
    expect((await parseCrl(crlPem)).entries).toEqual([expect.objectContaining({ serial, crlReason: 'cessationOfOperation' })]);

    // The CA seed, opened from CADIR with the test passphrase.
    const kek = await PassphraseKek.open(join(caDir, 'kek.keyfile.json'), c.passphrase);
    const caSeed = await (await SealedVault.open(join(caDir, 'secrets.vault.json'))).get(kek, 'ca-seed');
    kek.close();
    expect(caSeed.length).toBe(32);
    // The seed, and the P-256 private scalar derived from it.
    const needles = [...keyNeedles(caSeed, 'offline CA seed'), ...keyNeedles(p256Scalar(caSeed, P256Purpose.Ca), 'offline CA scalar')];

    const logFile = join(root, 'all-output.log');
    writeFileSync(logFile, logs.join('\n'));
    const coordFiles = filesUnder(coordDir);
    expect(coordFiles.length).toBeGreaterThan(8);
    const report = scanFilesReport([...coordFiles, logFile], needles);
    expect(report.scanned.length).toBe(coordFiles.length + 1);
    expect(report.hits).toEqual([]);
    // No private key of any kind in clear there either.
    for (const f of coordFiles) expect(readFileSync(f, 'utf8')).not.toMatch(/PRIVATE KEY/);

    // Positive control: the same scan finds the seed planted in a file (base64 inside random bytes).
    const planted = join(root, 'planted.bin');
    writeFileSync(planted, Buffer.concat([randomBytes(1001), Buffer.from(Buffer.from(caSeed).toString('base64')), randomBytes(77), Buffer.from(caSeed), randomBytes(33)]));
    const control = scanFilesReport([planted], needles);
    expect(control.hits.map((h) => h.what).join('\n')).toMatch(/offline CA seed: key raw bytes/);
    expect(control.hits.map((h) => h.what).join('\n')).toMatch(/offline CA seed: key base64/);
  });
});
