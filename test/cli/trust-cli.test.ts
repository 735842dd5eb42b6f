/**
 * The trust commands as an ML engineer and ops run them, each a real `aegis` process (dist/):
 * `registry init|add-publisher|show`, `manifest keygen|new|sign|verify|inspect`, and a signed
 * `round launch job.dsse.json` against a coordinator started with `--registry` (whose
 * enrollment address also serves the registry to `manifest verify`).
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TrustBook } from '../../shared/trust/trust-book.js';
import { waitFor } from '../support/cluster.js';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';

const cli = CLI;
const env = { ...process.env, AEGIS_PASSPHRASE: 'trust cli test passphrase', AEGIS_LOG_LEVEL: 'warn' };
let root: string;
let coordinator: ChildProcess | undefined;

const aegis = (...args: string[]): CliRun => runCli(args, env);
const json = cliJson;
const code = (r: CliRun): string => {
  expect(r.status).toBe(2);
  return json(r).error.code as string;
};

beforeAll(() => {
  if (!existsSync(cli)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-trust-cli-'));
});
afterAll(() => {
  coordinator?.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

describe('registries, signed manifests and signed launches from the command line', () => {
  test('sign, verify (each reason code), inspect, and launch a signed job', async () => {
    const reg = join(root, 'registry');
    const other = join(root, 'other-registry');
    expect(json(aegis('registry', 'init', '--dir', reg, '--roots', '3', '--threshold', '2', '--json')).ok).toBe(true);
    expect(aegis('registry', 'init', '--dir', other, '--roots', '1', '--threshold', '1').status).toBe(0);
    const key = json(aegis('manifest', 'keygen', '--out', join(root, 'publisher.key'), '--json'));
    expect(key.keyid).toMatch(/^[0-9a-f]{64}$/);
    expect(readFileSync(join(root, 'publisher.key'), 'utf8')).not.toContain(key.publicKey);
    expect(aegis('registry', 'add-publisher', '--dir', reg, '--public-key', join(root, 'publisher.pub.json'), '--name', 'ml-team').status).toBe(0);
    expect(aegis('registry', 'add-publisher', '--dir', other, '--public-key', join(root, 'publisher.pub.json'), '--name', 'ml-team').status).toBe(0);
    const shown = json(aegis('registry', 'show', '--dir', reg, '--json'));
    expect(JSON.stringify(shown)).toContain('ml-team');

    const job = join(root, 'job.json');
    expect(json(aegis('manifest', 'new', '--out', job, '--job', 'digits-cli', '--clients', '3', '--json')).job_id).toBe('digits-cli');
    const signed = json(aegis('manifest', 'sign', job, '--key', join(root, 'publisher.key'), '--out', join(root, 'job.dsse.json'), '--json'));
    expect(signed.keyid).toBe(key.keyid);

    // Valid against a registry and a backup serving the same metadata.
    const copy = join(root, 'registry-copy');
    spawnSync('cp', ['-r', reg, copy]);
    const ok = json(aegis('manifest', 'verify', join(root, 'job.dsse.json'), '--registry', reg, '--backup-registry', copy, '--json'));
    expect(ok).toMatchObject({ ok: true, job_id: 'digits-cli', revision: 1, manifest_sha256: signed.manifest_sha256 });
    expect(ok.signers[0].name).toBe('ml-team');
    // registry-mismatch: the backup is another registry.
    expect(code(aegis('manifest', 'verify', join(root, 'job.dsse.json'), '--registry', reg, '--backup-registry', other, '--json'))).toBe('registry-mismatch');
    // bad-signature: the payload altered after signing.
    const env1 = JSON.parse(readFileSync(join(root, 'job.dsse.json'), 'utf8')) as { payload: string };
    const altered = Buffer.from(env1.payload, 'base64').toString('utf8').replace('"rounds": 10', '"rounds": 11');
    writeFileSync(join(root, 'altered.dsse.json'), JSON.stringify({ ...env1, payload: Buffer.from(altered).toString('base64') }));
    expect(code(aegis('manifest', 'verify', join(root, 'altered.dsse.json'), '--registry', reg, '--backup-registry', copy, '--json'))).toBe('bad-signature');
    // unknown-key: signed by a key the registry does not list.
    aegis('manifest', 'keygen', '--out', join(root, 'stranger.key'));
    aegis('manifest', 'sign', job, '--key', join(root, 'stranger.key'), '--out', join(root, 'stranger.dsse.json'));
    expect(code(aegis('manifest', 'verify', join(root, 'stranger.dsse.json'), '--registry', reg, '--backup-registry', copy, '--json'))).toBe('unknown-key');
    // malformed: not an envelope.
    writeFileSync(join(root, 'junk.json'), '{"payloadType":"x","payloadType":"y"}');
    expect(code(aegis('manifest', 'verify', join(root, 'junk.json'), '--registry', reg, '--backup-registry', copy, '--json'))).toBe('malformed');
    // rollback: a client that already accepted revision 2 of this job.
    const clientDir = join(root, 'client');
    mkdirSync(clientDir);
    writeFileSync(join(clientDir, 'trust.json'), JSON.stringify({ version: 1, revisions: { 'digits-cli': 2 } }));
    expect((await TrustBook.open(clientDir).load()).revisions['digits-cli']).toBe(2);
    expect(code(aegis('manifest', 'verify', join(root, 'job.dsse.json'), '--registry', reg, '--backup-registry', copy, '--state', clientDir, '--json'))).toBe('rollback');
    // inspect: the fields in plain words.
    const text = aegis('manifest', 'inspect', join(root, 'job.dsse.json'), '--public-key', join(root, 'publisher.pub.json')).stdout;
    expect(text).toMatch(/job digits-cli, revision 1: 10 rounds/);
    expect(text).toMatch(new RegExp(`signed by ${key.keyid}: signature valid`));

    // Audit mode from the command line: enter, approve a job by its manifest hash, status.
    const aud = join(root, 'audited-client');
    expect(json(aegis('client', 'audit', 'enter', '--data-dir', aud, '--reason', 'drill', '--json'))).toMatchObject({ in_audit_mode: true, remaining: 5 });
    const approved = json(aegis('client', 'approve', 'digits-cli', '--manifest-sha256', signed.manifest_sha256, '--data-dir', aud, '--json'));
    expect(approved.approvals).toEqual([expect.objectContaining({ job_id: 'digits-cli', manifest_sha256: signed.manifest_sha256 })]);
    expect(json(aegis('client', 'audit', 'status', '--data-dir', aud, '--json'))).toMatchObject({ in_audit_mode: true, remaining: 5, reason: 'operator' });
    expect(aegis('client', 'approve', 'digits-cli', '--manifest-sha256', 'not-a-hash', '--data-dir', aud, '--json').status).toBe(2);

    // Without a registry, a coordinator or a client starts only when told it is an experiment.
    const noReg = aegis('coordinator', 'start', '--listen', '127.0.0.1:0', '--data-dir', join(root, 'coord-unsigned'));
    expect(noReg.status).toBe(2);
    expect(noReg.stderr).toMatch(/--registry DIR.*--allow-unsigned/);
    const noBackup = aegis('client', 'run', '--data-dir', join(root, 'nobody'), '--input', job);
    expect(noBackup.status).toBe(2);
    expect(noBackup.stderr).toMatch(/--backup-registry.*--allow-unsigned/);

    // A coordinator with the registry: takes the signed manifest, refuses the unsigned one.
    const coordDir = join(root, 'coord');
    coordinator = spawn(process.execPath, [cli, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', coordDir, '--registry', reg], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    coordinator.stderr!.resume();
    await waitFor(() => existsSync(join(coordDir, 'coordinator.json')), 30_000, 'the coordinator to listen');
    const { enrollAddress } = JSON.parse(readFileSync(join(coordDir, 'coordinator.json'), 'utf8')) as { enrollAddress: string };
    // Its enrollment address serves the registry.
    expect(json(aegis('manifest', 'verify', join(root, 'job.dsse.json'), '--registry', enrollAddress, '--ca', join(coordDir, 'ca.pem'), '--backup-registry', copy, '--json')).ok).toBe(true);
    expect(code(aegis('round', 'launch', '--manifest', job, '--data-dir', coordDir, '--weights', join(root, 'job.weights.bin'), '--gather', '0s', '--json'))).toBe('unknown-key');
    // The signed launch passes verification and stops only at the missing clients.
    expect(code(aegis('round', 'launch', join(root, 'job.dsse.json'), '--data-dir', coordDir, '--weights', join(root, 'job.weights.bin'), '--gather', '0s', '--json'))).toBe('too-few-clients');
    expect(code(aegis('round', 'launch', join(root, 'stranger.dsse.json'), '--data-dir', coordDir, '--weights', join(root, 'job.weights.bin'), '--gather', '0s', '--json'))).toBe('unknown-key');
  });
});
