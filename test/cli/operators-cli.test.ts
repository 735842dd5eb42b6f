/**
 * `aegis operators list|issue|revoke|reissue` and `aegis tokens revoke` against real
 * `aegis coordinator start` processes (dist/): the built-in admin credential lives 7 days; an
 * operator issues a sealed credential file (an ECDSA P-256 key) for another, who uses it with
 * --credential; a credential file from before P-256 (Ed25519) keeps working until its reissue,
 * which is P-256; revoked,
 * it is refused; a reissue refuses the old file, lists its serial on the CRL (superseded) and the
 * new file works; the built-in credential is reissued on request and when its lifetime is
 * shortened at a restart; bad flags exit 2 naming the flag and change nothing. Round tokens: a
 * token spent before `kill -9` of the coordinator is refused as replayed after it restarts on the
 * same data dir, and a revocation made before a restart still holds after it.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { enrollWithToken } from '../../client/agent/connection.js';
import { createIdentity } from '../../client/enroll/csr.js';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { csrForSeed } from '../../coordinator/auth/ca.js';
import { parseCrl } from '../../coordinator/auth/crl.js';
import { openOperatorCredential } from '../../coordinator/service/data-dir.js';
import * as admin from '../../shared/gen/aegis/v1/admin_pb.js';
import { readKeyfile, sealSecrets } from '../../shared/keystore/passphrase-keyfile.js';
import { P256Purpose, p256Spki } from '../../shared/keystore/webcrypto-p256.js';
import { callUnary } from '../../shared/rpc/service.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';
import { waitFor, type Enrolled } from '../support/cluster.js';
import { adminClient, bearer, credentialsOf, heartbeat, issueTokens, refusal, secAgg } from '../support/raw-calls.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'operators cli test passphrase', AEGIS_OPERATOR_PASSPHRASE: 'operator credential passphrase', AEGIS_LOG_LEVEL: 'warn' };
const DAY = 86_400_000;
const previousMinVersion = tls.DEFAULT_MIN_VERSION;
let root: string;
let dir: string;
let coordinator: ChildProcess | undefined;
let stderr = '';

const aegis = (args: string[]): CliRun => runCli(args, env);
const json = (args: string[]) => cliJson(aegis([...args, '--data-dir', dir, '--json']));
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed CLI JSON
const operators = (): any[] => json(['operators', 'list']).operators;
const endpoint = (): { address: string; enrollAddress: string; pid: number } => JSON.parse(readFileSync(join(dir, 'coordinator.json'), 'utf8'));

async function startCoordinator(extra: string[] = []): Promise<void> {
  stderr = '';
  const child = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', dir, '--allow-unsigned', ...extra], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  coordinator = child;
  // coordinator.json names this process once it listens (one left by a killed process names that one).
  await waitFor(() => (existsSync(join(dir, 'coordinator.json')) && endpoint().pid === child.pid) || child.exitCode !== null, 60_000, 'the coordinator to listen');
  if (child.exitCode !== null) throw new Error(`the coordinator did not start: ${stderr.slice(-800)}`);
}

async function stopCoordinator(signal: NodeJS.Signals): Promise<void> {
  const child = coordinator;
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
  coordinator = undefined;
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-operators-cli-'));
  dir = join(root, 'coord');
  await startCoordinator();
});

afterAll(async () => {
  await stopCoordinator('SIGKILL');
  rmSync(root, { recursive: true, force: true });
  tls.DEFAULT_MIN_VERSION = previousMinVersion;
});

describe('aegis operators', () => {
  test('list: the built-in admin credential, active, living 7 days', () => {
    const [adminRow, ...rest] = operators();
    expect(rest).toEqual([]);
    expect(adminRow).toMatchObject({ name: 'admin', built_in: true, status: 'active', revoked_at: null });
    const life = Date.parse(adminRow.expires_at) - Date.parse(adminRow.issued_at);
    expect(life).toBe(7 * DAY + 60_000); // notBefore is set a minute back for clock skew
  });

  test('issue: a sealed credential file another operator uses with --credential; revoked, it is refused', async () => {
    const r = json(['operators', 'issue', 'bob', '--out', root]);
    const file = join(root, 'bob.operator.json');
    expect(r).toMatchObject({ ok: true, name: 'bob', status: 'active', out: file });
    expect(Date.parse(r.expires_at) - Date.now()).toBeLessThanOrEqual(7 * DAY);
    // Sealed (no key in clear), owner-only.
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const text = readFileSync(file, 'utf8');
    expect(text).not.toMatch(/PRIVATE KEY/);
    expect(JSON.parse(text)).toMatchObject({ format: 'aegis-keyfile', label: 'aegis/operator-credential' });
    // An ECDSA P-256 certificate for the key derived from the sealed seed.
    const sealed = await readKeyfile(file, env.AEGIS_OPERATOR_PASSPHRASE, { expectedLabel: 'aegis/operator-credential' });
    const bobCert = new X509Certificate(Buffer.from(sealed['operator-certificate']!));
    expect(bobCert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(Buffer.from(bobCert.publicKey.export({ format: 'der', type: 'spki' })).equals(Buffer.from(p256Spki(sealed['operator-seed']!, P256Purpose.Operator)))).toBe(true);
    expect(operators().map((o) => [o.name, o.status])).toEqual([
      ['admin', 'active'],
      ['bob', 'active'],
    ]);
    // Bob's credential works from anywhere that reaches the coordinator.
    const asBob = aegis(['clients', 'list', '--credential', file, '--coordinator', endpoint().address, '--data-dir', join(root, 'nowhere'), '--json']);
    expect(cliJson(asBob)).toEqual({ clients: [] });
    // A wrong passphrase opens nothing.
    const wrong = runCli(['clients', 'list', '--credential', file, '--data-dir', dir, '--json'], { ...env, AEGIS_OPERATOR_PASSPHRASE: 'not the right passphrase' });
    expect(wrong.status).toBe(2);
    expect(cliJson(wrong).error.code).toBe('decryption-failed');

    expect(json(['operators', 'revoke', 'bob', '--reason', 'key-compromise', '--detail', 'laptop stolen'])).toMatchObject({ ok: true, serials: [r.serial], reason: 'key-compromise', known: true });
    const refused = aegis(['clients', 'list', '--credential', file, '--data-dir', dir, '--json']);
    expect(refused.status).toBe(2);
    expect(cliJson(refused).error).toMatchObject({ code: 'unauthenticated', message: 'operator certificate refused: revoked' });
    expect(operators().find((o) => o.name === 'bob')).toMatchObject({ status: 'revoked', revocation_reason: 'key-compromise', revocation_detail: 'laptop stolen' });
  });

  test('reissue: the old file is refused and its serial is on the CRL (superseded); the new file works', async () => {
    const first = json(['operators', 'issue', 'carol', '--out', join(root, 'carol-1.json'), '--ttl', '2']);
    expect(Date.parse(first.expires_at) - Date.parse(first.issued_at)).toBe(2 * DAY + 60_000);
    const second = json(['operators', 'reissue', 'carol', '--out', join(root, 'carol-2.json')]);
    expect(second).toMatchObject({ ok: true, name: 'carol', superseded: [first.serial] });
    const old = aegis(['clients', 'list', '--credential', join(root, 'carol-1.json'), '--data-dir', dir, '--json']);
    expect(old.status).toBe(2);
    expect(cliJson(old).error.message).toBe('operator certificate refused: revoked');
    expect(cliJson(aegis(['clients', 'list', '--credential', join(root, 'carol-2.json'), '--data-dir', dir, '--json']))).toEqual({ clients: [] });
    const crl = await parseCrl(json(['clients', 'crl']).pem as string);
    expect(crl.entries).toContainEqual(expect.objectContaining({ serial: first.serial, crlReason: 'superseded' }));
    expect(crl.entries).toContainEqual(expect.objectContaining({ crlReason: 'keyCompromise' })); // bob's
  });

  test('a credential file from before P-256 (an Ed25519 key) keeps working with --credential; its reissue is P-256 and the old file is refused', async () => {
    // Made as `operators issue` made it before P-256: an Ed25519 CSR, sealed in the same file format.
    const builtIn = await openOperatorCredential(dir, { passphrase: async () => env.AEGIS_PASSPHRASE, pin: async () => '' });
    const ops = adminClient(endpoint().address, grpc.credentials.createSsl(Buffer.from(builtIn.caPem), Buffer.from(builtIn.keyPem), Buffer.from(builtIn.certificatePem)));
    const seed = new Uint8Array(randomBytes(32));
    let reply: admin.IssueOperatorReply;
    try {
      reply = await callUnary(ops.issueOperator.bind(ops), create(admin.IssueOperatorRequestSchema, { name: 'erin', csrDer: await csrForSeed(seed, 'operator:erin') }));
    } finally {
      ops.close();
    }
    expect(new X509Certificate(Buffer.from(reply.certificateDer)).publicKey.asymmetricKeyType).toBe('ed25519');
    const oldFile = join(root, 'erin-ed25519.json');
    const sealed = await sealSecrets(env.AEGIS_OPERATOR_PASSPHRASE, 'aegis/operator-credential', { 'operator-seed': seed, 'operator-certificate': reply.certificateDer, 'ca-certificate': new Uint8Array(new X509Certificate(builtIn.caPem).raw) });
    writeFileSync(oldFile, `${JSON.stringify(sealed, null, 2)}\n`, { mode: 0o600 });
    expect(cliJson(aegis(['clients', 'list', '--credential', oldFile, '--data-dir', join(root, 'nowhere'), '--coordinator', endpoint().address, '--json']))).toEqual({ clients: [] });

    const newFile = join(root, 'erin-p256.json');
    expect(json(['operators', 'reissue', 'erin', '--out', newFile, '--credential', oldFile])).toMatchObject({ ok: true, name: 'erin', superseded: [reply.operator!.serial] });
    const fresh = await readKeyfile(newFile, env.AEGIS_OPERATOR_PASSPHRASE, { expectedLabel: 'aegis/operator-credential' });
    expect(new X509Certificate(Buffer.from(fresh['operator-certificate']!)).publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(cliJson(aegis(['clients', 'list', '--credential', newFile, '--data-dir', dir, '--json']))).toEqual({ clients: [] });
    const refused = aegis(['clients', 'list', '--credential', oldFile, '--data-dir', dir, '--json']);
    expect(refused.status).toBe(2);
    expect(cliJson(refused).error.message).toBe('operator certificate refused: revoked');
  });

  test("reissue admin: the data dir's credential is replaced (commands go on with the new one), the old serial is revoked", async () => {
    const before = operators().find((o) => o.name === 'admin' && o.status === 'active');
    const r = json(['operators', 'reissue', 'admin']);
    expect(r).toMatchObject({ ok: true, name: 'admin', built_in: true, superseded: [before.serial], out: null });
    const after = operators();
    expect(after.filter((o) => o.name === 'admin').map((o) => [o.serial, o.status])).toEqual([
      [before.serial, 'revoked'],
      [r.serial, 'active'],
    ]);
    const crl = await parseCrl(json(['clients', 'crl']).pem as string);
    expect(crl.entries).toContainEqual(expect.objectContaining({ serial: before.serial, crlReason: 'superseded' }));
  });

  test('bad flags and values exit 2 naming the flag; nothing is issued or revoked', () => {
    const listed = JSON.stringify(operators());
    writeFileSync(join(root, 'taken.json'), 'x');
    const cases: [string[], RegExp][] = [
      [['operators', 'issue', 'dave', '--out', root, '--ttl', '0'], /--ttl/],
      [['operators', 'issue', 'dave', '--out', root, '--ttl', 'soon'], /--ttl/],
      [['operators', 'issue', 'dave', '--out', root, '--ttl', '91'], /--ttl/],
      [['operators', 'issue', 'dave'], /--out/],
      [['operators', 'issue', 'dave', '--out', join(root, 'taken.json')], /--out: .*taken\.json exists/],
      [['operators', 'issue', 'dave', '--out', join(root, 'no-such-dir', 'x.json')], /--out: there is no directory/],
      [['operators', 'issue', 'bad name!', '--out', root], /operator name/],
      [['operators', 'revoke'], /NAME or --serial/],
      [['operators', 'revoke', 'bob', '--serial', 'ab'], /NAME or --serial/],
      [['operators', 'revoke', '--serial', 'zz'], /--serial/],
      [['operators', 'revoke', 'bob', '--reason', 'dropped'], /valid reasons/],
      [['operators', 'reissue', 'admin', '--out', root], /--out/],
      [['operators', 'reissue', 'carol'], /--out/],
      [['tokens', 'revoke'], /exactly one of --jti, --token and --client/],
      [['tokens', 'revoke', '--jti', 'a'.repeat(22), '--client', 'x'], /exactly one of --jti, --token and --client/],
      [['tokens', 'revoke', '--jti', 'short'], /--jti/],
      [['tokens', 'revoke', '--client', 'bad id!'], /--client/],
      [['operators', 'list', '--bogus'], /--bogus/],
    ];
    for (const [args, named] of cases) {
      const r = aegis([...args, '--data-dir', dir]);
      expect({ args, status: r.status }).toEqual({ args, status: 2 });
      expect(r.stderr).toMatch(named);
    }
    expect(readFileSync(join(root, 'taken.json'), 'utf8')).toBe('x');
    expect(existsSync(join(root, 'dave.operator.json'))).toBe(false);
    expect(JSON.stringify(operators())).toBe(listed);
  });
});

describe('round tokens across coordinator restarts', () => {
  let dev: Enrolled;

  async function enroll(): Promise<Enrolled> {
    const inv = json(['clients', 'invite', '--id', 'phone-1']);
    const identity = await createIdentity();
    const ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
    const r = await enrollWithToken({ enrollAddress: endpoint().enrollAddress, caPem: ca, token: inv.token, identity, clientId: 'phone-1' });
    return { clientId: r.clientId, identity, certificateDer: r.certificateDer };
  }

  const calls = () => secAgg(endpoint().address, credentialsOf(readFileSync(join(dir, 'ca.pem'), 'utf8'), dev));
  const refusedAs = (why: string) => expect.objectContaining({ details: `token refused: ${why}` });

  test('a token spent before kill -9 is refused as replayed after the restart; an unused one passes once', async () => {
    dev = await enroll();
    const before = calls();
    const [spent, unused] = (await issueTokens(before, 2)) as [string, string];
    await heartbeat(before, bearer(spent));
    before.close();
    await stopCoordinator('SIGKILL');
    await startCoordinator();
    const after = calls();
    try {
      await expect(refusal(heartbeat(after, bearer(spent)))).resolves.toEqual(refusedAs('replayed'));
      await expect(heartbeat(after, bearer(unused))).resolves.toBeDefined();
      await expect(refusal(heartbeat(after, bearer(unused)))).resolves.toEqual(refusedAs('replayed'));
    } finally {
      after.close();
    }
  });

  test("tokens revoke --client (and --token from stdin): refused, and still after a restart; later tokens pass", async () => {
    const cl = calls();
    const [a, b, c] = (await issueTokens(cl, 3)) as [string, string, string];
    cl.close();
    // One token whole, read from stdin (so it never shows in the process list).
    const viaStdin = await new Promise<{ status: number | null; stdout: string }>((resolve) => {
      const p = spawn(process.execPath, [CLI, 'tokens', 'revoke', '--token', '-', '--data-dir', dir, '--json'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      p.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      p.on('exit', (status) => resolve({ status, stdout }));
      p.stdin!.end(`${c}\n`);
    });
    expect(viaStdin.status).toBe(0);
    expect(JSON.parse(viaStdin.stdout)).toMatchObject({ ok: true, client_id: 'phone-1', already_expired: false });
    const r = json(['tokens', 'revoke', '--client', 'phone-1']);
    expect(r).toMatchObject({ ok: true, client_id: 'phone-1', jti: null });
    await stopCoordinator('SIGTERM');
    await startCoordinator();
    const after = calls();
    try {
      for (const t of [a, b, c]) await expect(refusal(heartbeat(after, bearer(t)))).resolves.toEqual(refusedAs('revoked'));
      // Tokens issued a second after the revocation pass: the device is not revoked.
      await waitFor(() => Date.now() >= Date.parse(r.issued_up_to) + 1000, 5_000, 'the next second');
      const [fresh] = (await issueTokens(after, 1)) as [string];
      await expect(heartbeat(after, bearer(fresh))).resolves.toBeDefined();
    } finally {
      after.close();
    }
  });

  test('a restart with a shorter --operator-ttl-days reissues the built-in credential and revokes the old one', async () => {
    const before = operators().find((o) => o.name === 'admin' && o.status === 'active');
    await stopCoordinator('SIGTERM');
    await startCoordinator(['--operator-ttl-days', '1']);
    const admins = operators().filter((o) => o.name === 'admin');
    const current = admins.find((o) => o.status === 'active');
    expect(current.serial).not.toBe(before.serial);
    expect(Date.parse(current.expires_at) - Date.parse(current.issued_at)).toBe(DAY + 60_000);
    expect(admins.find((o) => o.serial === before.serial)).toMatchObject({ status: 'revoked', revocation_reason: 'superseded' });
    expect(stderr).not.toContain(env.AEGIS_PASSPHRASE);
  });
});
