/**
 * Usage errors of the built `aegis` CLI (dist/, real processes): a value a flag's parser refuses
 * exits 2 with a message naming the flag, whatever the parser throws — commander's
 * InvalidArgumentError (shared/cli/output.ts parsers), a plain Error (`--heartbeat-interval`'s
 * own check) — and never the crash handler's exit 70. Unknown and missing flags exit 2 too, help
 * and version 0; nothing is written by a refused command.
 */
import { beforeAll, afterAll, describe, expect, test } from '@jest/globals';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, runCli } from '../support/cli.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'usage errors test passphrase', AEGIS_LOG_LEVEL: 'warn' };
let root: string;

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-usage-'));
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('a bad value for a flag with its own parser', () => {
  test('exits 2 naming the flag, for every kind of parser and command group', () => {
    const dir = join(root, 'never-made');
    const cases: [string[], string][] = [
      [['client', 'enroll', '--coordinator', '127.0.0.1:1', '--token', 'x'.repeat(43), '--ca', join(root, 'ca.pem'), '--data-dir', dir, '--wait', 'abc'], '--wait'],
      [['client', 'run', '--data-dir', dir, '--heartbeat-interval', '0.5s'], '--heartbeat-interval'],
      [['dashboard', 'token', '--data-dir', dir, '--ttl', 'abc'], '--ttl'],
      [['keys', 'destroy', '--data-dir', dir, '--version', 'x'], '--version'],
      [['registry', 'init', '--expires', 'soon'], '--expires'],
      [['demo', '--clients', 'many', '--out', dir], '--clients'],
      [['simulate', '--clients', '-3'], '--clients'],
      [['operators', 'issue', 'x', '--out', root, '--ttl', 'soon', '--data-dir', dir], '--ttl'],
      [['coordinator', 'start', '--data-dir', dir, '--operator-ttl-days', 'week'], '--operator-ttl-days'],
    ];
    for (const [args, flag] of cases) {
      const r = runCli(args, env);
      expect({ args, status: r.status }).toEqual({ args, status: 2 });
      expect({ args, stderr: r.stderr }).toEqual({ args, stderr: expect.stringContaining(`option '${flag} `) });
      expect(r.stderr).not.toMatch(/crashed|uncaught|unhandled/i);
    }
    expect(existsSync(dir)).toBe(false);
  });

  test('unknown and missing flags exit 2 naming them; --help and --version exit 0', () => {
    const unknown = runCli(['clients', 'list', '--bogus'], env);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/unknown option '--bogus'/);
    const missing = runCli(['client', 'enroll'], env);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/required option '--coordinator <host:port>' not specified/);
    expect(runCli(['--version'], env)).toMatchObject({ status: 0, stdout: '0.1.0\n' });
    expect(runCli(['client', 'enroll', '--help'], env)).toMatchObject({ status: 0, stdout: expect.stringContaining('--wait') });
  });
});
