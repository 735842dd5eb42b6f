/**
 * `aegis coordinator start --config FILE` (the built CLI): options come from a JSON file, are
 * checked like the command line's, and the command line wins. The Redis named in the file is used
 * (a port nothing listens on: the start fails with `unavailable` naming that Redis).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from '@jest/globals';
import { runCli } from '../support/cli.js';

const root = mkdtempSync(join(tmpdir(), 'aegis-config-'));
const env = { ...process.env, AEGIS_PASSPHRASE: 'config test passphrase', AEGIS_LOG_LEVEL: 'warn' };
afterAll(() => rmSync(root, { recursive: true, force: true }));

function start(config: unknown, extra: string[] = []): { status: number | null; stderr: string } {
  const file = join(root, `c-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config));
  return runCli(['coordinator', 'start', '--data-dir', join(root, 'coord'), '--allow-unsigned', '--listen', '127.0.0.1:0', '--kek', 'passphrase', '--config', file, ...extra], env, 20_000);
}

describe('coordinator start --config', () => {
  test('the Redis URL and prefix come from the file', () => {
    const r = start({ redis: 'redis://127.0.0.1:1', redisPrefix: 'from-file', unmaskWorkers: 2 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/unavailable/);
    expect(r.stderr).toContain('redis://127.0.0.1:1');
  });

  test('an option on the command line wins over the file', () => {
    const r = start({ redis: 'redis://127.0.0.1:1' }, ['--redis', 'redis://127.0.0.1:2']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('redis://127.0.0.1:2');
    expect(r.stderr).not.toContain('redis://127.0.0.1:1');
  });

  test('values are checked like the command line: unknown names, wrong types and bad values are invalid-argument', () => {
    for (const bad of [{ redisUrl: 'redis://x' }, { allowUnsigned: 'yes' }, { unmaskWorkers: 1000 }, '{ not json', '[1]', { rotation: { kek_dayz: 30 } }, { retention: { round_days: 0 } }, { clients: { lost_after: 'soon' } }]) {
      const r = start(bad);
      expect([bad, r.status]).toEqual([bad, 2]);
      expect(r.stderr).toMatch(/invalid-argument|invalid argument/i);
    }
  });
});
