/**
 * Time-based key rotation from the command line (the built CLI): a coordinator started with a
 * short due period (`--rotation-kek-days`, `--rotation-signing-days`: a fraction of a day, so
 * the keys made at the first start are past due at the second) rotates its KEK, token key and
 * operator credential at start, logs it without key material, and its data stays readable.
 * `keys status --json` shows every key's version, age and due date.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, cliJson, runCli } from '../support/cli.js';

const PASS = 'keys policy cli passphrase 3e9d';
const env = { ...process.env, AEGIS_PASSPHRASE: PASS, AEGIS_LOG_LEVEL: 'info' };
const root = mkdtempSync(join(tmpdir(), 'aegis-keys-policy-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const dir = join(root, 'coord');

/** Starts the coordinator, waits until it listens (and scrapes its metrics, when served), stops it; returns its stderr. */
function startAndStop(extra: string[]): Promise<{ stderr: string; code: number | null; metrics?: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'coordinator', 'start', '--listen', '127.0.0.1:0', '--enroll-listen', '127.0.0.1:0', '--data-dir', dir, '--allow-unsigned', ...extra], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let metrics: string | undefined;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`coordinator did not start: ${stderr.slice(-800)}`));
    }, 60_000);
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!stderr.includes('coordinator listening') || child.exitCode !== null || child.killed) return;
      const at = /metrics on http:\/\/(\S+)\/metrics/.exec(stderr)?.[1];
      if (!at) return void child.kill('SIGTERM');
      child.stderr!.pause();
      void fetch(`http://${at}/metrics`)
        .then((r) => r.text())
        .then((t) => (metrics = t))
        .finally(() => {
          child.stderr!.resume();
          child.kill('SIGTERM');
        });
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ stderr, code, ...(metrics === undefined ? {} : { metrics }) });
    });
  });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed CLI JSON
const keyOf = (s: any, name: string): any => s.keys.find((k: { key: string }) => k.key === name);

describe('aegis coordinator start with a rotation policy', () => {
  test('keys past due are rotated at start, logged without key material, and the data stays readable', async () => {
    const first = await startAndStop([]);
    expect(first.stderr).toContain('coordinator listening');
    expect(first.stderr).not.toContain('key rotated');

    const s1 = cliJson(runCli(['keys', 'status', '--data-dir', dir, '--json'], env));
    expect(s1.ok).toBe(true);
    expect(s1.policy).toEqual({ kekDays: 90, signingDays: 90 });
    const kek1 = keyOf(s1, 'kek').version as number;
    for (const name of ['kek', 'token', 'operator']) {
      const k = keyOf(s1, name);
      expect(k.version).toBeGreaterThanOrEqual(1);
      expect(k.due).toBe(false);
      if (name !== 'operator') expect(Date.parse(k.dueAt) - Date.parse(k.createdAt)).toBe(90 * 86_400_000);
      expect(typeof k.ageDays).toBe('number');
    }
    // The operator credential lives 7 days (operator.ttl_days) and is due at 2/3 of that, well before the policy's 90 days.
    const op = keyOf(s1, 'operator');
    const lifetime = 7 * 86_400_000 + 60_000; // notBefore is a minute back
    const notBefore = Date.parse(op.expiresAt) - lifetime;
    expect(Date.parse(op.dueAt)).toBe(notBefore + Math.floor((lifetime * 2) / 3));
    expect(keyOf(s1, 'ca').dueAt).toBeUndefined();
    expect(typeof keyOf(s1, 'ca').expiresAt).toBe('string');
    // The KEK versions list stays as before.
    expect(s1.versions.find((v: { state: string }) => v.state === 'primary').version).toBe(kek1);

    // A due period of ~0.1 s: every key made at the first start is past due now.
    const tiny = '0.000001';
    const second = await startAndStop(['--rotation-kek-days', tiny, '--rotation-signing-days', tiny, '--metrics', '127.0.0.1:0']);
    expect(second.stderr).toContain('coordinator listening');
    const rotations = second.stderr
      .split('\n')
      .filter((l) => l.includes('"key rotated"'))
      .map((l) => JSON.parse(l) as { keyName: string; version: number; reason: string });
    expect(rotations.map((r) => r.keyName).sort()).toEqual(['kek', 'operator', 'token']);
    expect(rotations.every((r) => r.reason === 'due' && r.version === (r.keyName === 'kek' ? kek1 + 1 : 2))).toBe(true);
    // The same rotations as metrics, and each key's age (just rotated: under a minute).
    for (const name of ['kek', 'token', 'operator']) {
      expect(second.metrics).toMatch(new RegExp(`aegis_key_rotations_total\\{key="${name}",reason="due"\\} 1\\b`));
      const age = new RegExp(`aegis_key_age_seconds\\{key="${name}"\\} ([0-9.e+-]+)`).exec(second.metrics ?? '')?.[1];
      expect(Number(age)).toBeLessThan(60);
    }

    // The policy is recorded in the dir: keys status shows the same due dates without flags.
    const s2 = cliJson(runCli(['keys', 'status', '--data-dir', dir, '--json'], env));
    expect(s2.policy).toEqual({ kekDays: 0.000001, signingDays: 0.000001 });
    expect(keyOf(s2, 'kek').version).toBe(kek1 + 1);
    expect(keyOf(s2, 'token').version).toBe(2);
    expect(keyOf(s2, 'operator').version).toBe(2);
    // Every sealed value is under the new primary (nothing left under the old one)...
    const refs = (v: number): number => Object.values(s2.versions.find((x: { version: number }) => x.version === v).references as Record<string, number>).reduce((a, b) => a + b, 0);
    expect(refs(kek1)).toBe(0);
    expect(refs(kek1 + 1)).toBeGreaterThan(0);
    // ...and opens: the coordinator starts again on it (CA, token key, queue key all unsealed).
    const third = await startAndStop(['--rotation-kek-days', '90', '--rotation-signing-days', '90']);
    expect(third.stderr).toContain('coordinator listening');
    expect(third.stderr).not.toContain('key rotated');
    // No log line carries key material (the passphrase stands in for any secret we know).
    for (const out of [first.stderr, second.stderr, third.stderr]) expect(out).not.toContain(PASS);
  });
});
