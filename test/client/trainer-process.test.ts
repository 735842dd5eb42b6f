import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, test } from '@jest/globals';
import { runEvaluate, runFit, splitCommand, type TrainerCallOptions } from '../../shared/trainer/process.js';
import { TrainerError, type TensorSpec, type TrainerContext } from '../../shared/trainer/protocol.js';
import { redactTrainerOutput } from '../../shared/trainer/redact.js';

const PY = '/usr/bin/python3';
const FAKE = resolve('test/support/trainers/fake_trainer.py');
const TENSORS: TensorSpec[] = [
  { name: 'W', shape: [4, 3], dtype: 'F32' },
  { name: 'b', shape: [3], dtype: 'F32' },
];
const GLOBAL = Float32Array.from({ length: 15 }, (_, i) => i / 8 - 1);
const CONTEXT: TrainerContext = {
  job: 'trainer-test',
  round: 2,
  model_version: 1,
  training: { epochs: 1, batchSize: 4, learningRate: 0.1, optimizer: 'sgd', loss: 'categoricalCrossentropy' },
  features: ['features'],
  label: 'label',
  tensors: TENSORS,
};
/** Records with distinctive values (easy to spot if they leaked). */
const RECORDS = Array.from({ length: 6 }, (_, i) => ({ x: Float32Array.from([0.123456 + i, 9.87654 + i, 4.5 + i, 31.25 - i]), y: i % 3 }));
/** The bytes the records are on stdin (as the runner writes them), hashed, as the fake trainer reports it. */
const RECORDS_HASH48 = parseInt(
  createHash('sha256')
    .update(RECORDS.map((r) => `${JSON.stringify({ x: Array.from(r.x), y: r.y })}\n`).join(''))
    .digest('hex')
    .slice(0, 12),
  16,
);

const opts = (mode: string, over: Partial<TrainerCallOptions> = {}): TrainerCallOptions => ({
  cmd: [PY, FAKE, mode],
  timeoutMs: 60_000,
  context: CONTEXT,
  tensors: TENSORS,
  global: GLOBAL,
  records: RECORDS,
  ...over,
});

async function failure(p: Promise<unknown>): Promise<TrainerError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof TrainerError) return err;
    throw err;
  }
  throw new Error('the call succeeded');
}

/** The call directory the fake trainer names on its stderr. */
const dirOf = (tail: string): string => /dir=(\S+)/.exec(tail)![1]!;

/** True while `pid` runs (a zombie, dead and waiting for its parent to reap it, does not). */
const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

describe('the trainer process runner', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'aegis-trainer-test-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  test('a fit: the records arrive over stdin, the trained weights come back, and the 0700 call dir is gone after', async () => {
    process.env.AEGIS_PASSPHRASE_FOR_TEST = 'not for the trainer';
    try {
      const r = await runFit(opts('ok'));
      expect(Array.from(r.trained)).toEqual(Array.from(GLOBAL, (v) => Math.fround(v + 1)));
      expect(r.numExamples).toBe(RECORDS.length);
      expect(r.metrics.records_hash48).toBe(RECORDS_HASH48);
      expect(r.metrics.dir_mode).toBe(0o700);
      // global.safetensors and update.safetensors, and no record in either
      expect(r.metrics.files_in_dir).toBe(2);
      expect(r.metrics.records_in_files).toBe(0);
      expect(r.metrics.aegis_env).toBe(0);
      expect(existsSync(dirOf(r.stderrTail))).toBe(false);
    } finally {
      delete process.env.AEGIS_PASSPHRASE_FOR_TEST;
    }
  });

  test('an evaluate: loss, accuracy and example count; records from an async source', async () => {
    async function* source(): AsyncGenerator<unknown> {
      for (const r of RECORDS) yield r;
    }
    const r = await runEvaluate(opts('ok', { records: source() }));
    expect(r).toMatchObject({ numExamples: RECORDS.length, loss: 0.5, metrics: { accuracy: 0.75, records_hash48: RECORDS_HASH48 } });
    expect(existsSync(dirOf(r.stderrTail))).toBe(false);
  });

  test('the command as one line is split like a shell would, and run without one', async () => {
    expect(splitCommand(`python3 'my trainer.py' --x "a \\"b\\" c" d\\ e $HOME`)).toEqual(['python3', 'my trainer.py', '--x', 'a "b" c', 'd e', '$HOME']);
    expect(() => splitCommand(`python3 'unterminated`)).toThrow(/single quote/);
    expect(() => splitCommand('   ')).toThrow(/empty/);
    const r = await runFit(opts('ok', { cmd: `${PY} '${FAKE}' ok` }));
    expect(r.numExamples).toBe(RECORDS.length);
  });

  test('a trainer that replies without reading its records (their writes hit a closed pipe) still succeeds', async () => {
    const many = Array.from({ length: 3000 }, (_, i) => ({ x: Array.from({ length: 64 }, (_, j) => i + j / 64), y: i % 10 }));
    const r = await runFit(opts('early', { records: many }));
    expect(r.numExamples).toBe(1);
    expect(Array.from(r.trained)).toEqual(Array.from(GLOBAL, (v) => Math.fround(v + 1)));
  });

  test('a trainer that sleeps for ever (and ignores SIGTERM) is killed at its timeout with its whole process group', async () => {
    const err = await failure(runFit(opts('sleep', { timeoutMs: 1500 })));
    expect(err.kind).toBe('timeout');
    expect(err.code).toBe('trainer-failed');
    const child = Number(/child=(\d+)/.exec(err.stderrTail)![1]);
    expect(alive(child)).toBe(false);
    expect(existsSync(dirOf(err.stderrTail))).toBe(false);
  });

  test('a cancelled call kills the trainer', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 500);
    const err = await failure(runFit(opts('sleep', { signal: ac.signal })));
    expect(err.kind).toBe('timeout');
    expect(err.message).toMatch(/cancelled/);
  });

  test.each([
    ['crash', 'crashed', /SIGKILL/],
    ['exit3', 'exit-code', /status 3/],
    ['garbage', 'protocol', /2 lines on stdout/],
    ['notjson', 'protocol', /not a JSON line/],
    ['badversion', 'protocol', /aegis_trainer 2/],
    ['nooutput', 'protocol', /wrote no update.safetensors/],
  ])('mode %s fails as %s', async (mode, kind, message) => {
    const err = await failure(runFit(opts(mode)));
    expect(err.kind).toBe(kind);
    expect(err.code).toBe('trainer-failed');
    expect(err.message).toMatch(message);
    expect(existsSync(dirOf(err.stderrTail))).toBe(false);
  });

  test.each([
    ['extra', 'surprise', /not declared/],
    ['missing', 'b', /missing/],
    ['misshaped', 'W', /shape \[11\]/],
    ['nan', 'W', /non-finite/],
  ])('output %s: a tensor error naming %s', async (mode, tensor, message) => {
    const err = await failure(runFit(opts(mode)));
    expect(err.kind).toBe('tensor');
    expect(err.tensor).toBe(tensor);
    expect(err.message).toMatch(message);
  });

  test('an output larger than the declared tensors can need is refused before it is read', async () => {
    const err = await failure(runFit(opts('oversized')));
    expect(err.kind).toBe('tensor');
    expect(err.message).toMatch(/more than the \d+ the declared tensors can need/);
  });

  test('a command that is not there, or not executable, is unavailable', async () => {
    const missing = await failure(runFit(opts('ok', { cmd: [join(scratch, 'no-such-trainer')] })));
    expect(missing.kind).toBe('unavailable');
    expect(missing.code).toBe('trainer-unavailable');
    const notExec = join(scratch, 'not-executable.sh');
    writeFileSync(notExec, '#!/bin/sh\necho hi\n');
    chmodSync(notExec, 0o644);
    const denied = await failure(runFit(opts('ok', { cmd: [notExec] })));
    expect(denied.kind).toBe('unavailable');
    expect(denied.message).toMatch(/EACCES/);
  });

  test("the stderr tail shows neither a key nor a record the trainer printed", async () => {
    const err = await failure(runFit(opts('secret')));
    expect(err.kind).toBe('exit-code');
    const tail = err.stderrTail;
    expect(tail).toContain('[redacted pem]');
    expect(tail).not.toMatch(/BEGIN|PRIVATE KEY|MC4CAQAw/);
    expect(tail).not.toContain('s3cr3t');
    expect(tail).toContain('first record:');
    for (const v of ['0.123456', '9.87654', '31.25']) expect(tail).not.toContain(v);
    expect(err.message).not.toMatch(/0\.123456|BEGIN/);
  });

  test('redaction keeps what explains a failure', () => {
    const traceback = 'Traceback (most recent call last):\n  File "/opt/train.py", line 42, in fit\nValueError: shapes (32,784) and (10,) not aligned\n';
    expect(redactTrainerOutput(traceback)).toBe(traceback);
    expect(redactTrainerOutput('sha ' + 'ab'.repeat(32))).toBe('sha [redacted hex]');
    expect(redactTrainerOutput('[0.1 0.2 0.3 0.4 0.5]')).toBe('[[redacted numbers]]');
    expect(redactTrainerOutput('-----END RSA PRIVATE KEY-----\nnext')).toBe('[redacted pem]\nnext');
  });
});
