/**
 * `aegis trainer check` (built CLI, real trainer processes): a trainer that follows the protocol
 * exits 0 with a report of its fit and evaluate; one whose output is wrong exits 1 naming the
 * problem and the tensor; usage errors exit 2 naming the flag or file.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { cliJson, runCli } from '../support/cli.js';

const PY = '/usr/bin/python3';
const EXAMPLE = resolve('examples/numpy-logreg');
const GOOD = `${PY} ${join(EXAMPLE, 'trainer.py')}`;
const FAKE = resolve('test/support/trainers/fake_trainer.py');
const MANIFEST = join(EXAMPLE, 'manifest.json');
const env = { ...process.env, AEGIS_LOG_LEVEL: 'warn' };

describe('aegis trainer check', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-trainer-check-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('the NumPy example on synthetic examples: exit 0, its fit and evaluate reported', () => {
    const r = runCli(['trainer', 'check', '--trainer-cmd', GOOD, '--manifest', MANIFEST, '--weights', join(EXAMPLE, 'initial.safetensors'), '--synthetic', '40', '--json'], env);
    expect(r.status).toBe(0);
    const j = cliJson(r);
    expect(j).toMatchObject({ ok: true, job: 'numpy-logreg', examples: 40, fit: { num_examples: 40, weight: 40 }, evaluate: { num_examples: 40 } });
    expect(j.fit.changed_values).toBeGreaterThan(0);
    expect(j.evaluate.metrics.accuracy).toBeGreaterThanOrEqual(0);
    const text = runCli(['trainer', 'check', '--trainer-cmd', GOOD, '--manifest', MANIFEST, '--synthetic', '8'], env);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/fit: ok — num_examples 8/);
    expect(text.stdout).toMatch(/the trainer follows the protocol/);
  });

  test('records from a file, with the fields the manifest names', () => {
    const file = join(dir, 'digits.jsonl');
    const line = (d: number) => JSON.stringify({ pixels: Array.from({ length: 784 }, (_, i) => (i * (d + 1)) % 256), digit: d });
    writeFileSync(file, `${Array.from({ length: 12 }, (_, i) => line(i % 10)).join('\n')}\n`);
    const r = runCli(['trainer', 'check', '--trainer-cmd', GOOD, '--manifest', MANIFEST, '--records', file, '--json'], env);
    expect(r.status).toBe(0);
    expect(cliJson(r)).toMatchObject({ ok: true, examples: 12, fit: { num_examples: 12 } });
  });

  test('a trainer that leaves a tensor out: exit 1, the problem and the tensor named', () => {
    const r = runCli(['trainer', 'check', '--trainer-cmd', `${PY} ${FAKE} missing`, '--manifest', MANIFEST, '--synthetic', '4', '--json'], env);
    expect(r.status).toBe(1);
    expect(cliJson(r)).toMatchObject({ ok: false, problem: { call: 'fit', kind: 'tensor', tensor: 'b' } });
    const text = runCli(['trainer', 'check', '--trainer-cmd', `${PY} ${FAKE} garbage`, '--manifest', MANIFEST, '--synthetic', '4'], env);
    expect(text.status).toBe(1);
    expect(text.stdout).toMatch(/fit: INVALID \(protocol\): .*2 lines on stdout/);
    expect(text.stdout).toMatch(/does not follow the protocol/);
  });

  test.each([
    [['--manifest', MANIFEST], /required option '--trainer-cmd/],
    [['--trainer-cmd', GOOD], /required option '--manifest/],
    [['--trainer-cmd', GOOD, '--manifest', join(EXAMPLE, 'nope.json')], /--manifest: no such file: .*nope\.json/],
    [['--trainer-cmd', GOOD, '--manifest', MANIFEST, '--records', 'x.jsonl', '--synthetic', '3'], /--records or --synthetic, not both/],
    [['--trainer-cmd', GOOD, '--manifest', MANIFEST, '--weights', join(EXAMPLE, 'trainer.py')], /--weights .*trainer\.py/],
    [['--trainer-cmd', `${join(EXAMPLE, 'no-such-trainer')}`, '--manifest', MANIFEST], /--trainer-cmd: .*cannot be started \(ENOENT\)/],
    [['--trainer-cmd', `${PY} 'unterminated`, '--manifest', MANIFEST], /--trainer-cmd: .*single quote/],
  ])('usage error %#: exit 2 naming it', (args, message) => {
    const r = runCli(['trainer', 'check', ...args], env);
    expect(r.status).toBe(2);
    expect(`${r.stderr}${r.stdout}`).toMatch(message);
  });
});
