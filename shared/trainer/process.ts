/**
 * The trainer process runner: one external process per fit or evaluate, under the trainer
 * protocol (shared/trainer/protocol.ts, docs/trainer-protocol.md).
 *
 * Each call: a fresh 0700 directory under the OS temp dir holding `global.safetensors`; the
 * command spawned without a shell, in its own process group, with Aegis's own secrets
 * (`AEGIS_*` variables) taken out of its environment; the header and the records streamed on
 * its stdin (never written to a file); one reply line read from its stdout (at most
 * `MAX_STDOUT_BYTES`); a redacted tail of its stderr kept. On timeout or cancellation the whole
 * process group gets SIGTERM, then SIGKILL after `KILL_GRACE_MS`; once the trainer has exited,
 * anything it left running in its group is killed too. The directory is removed in every
 * outcome. A fit's output is then checked against the declared tensors.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, lstat, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { AegisError, ErrorCode } from '../errors.js';
import { decodeSafetensors, encodeSafetensors, flatToTensors, maxFileBytes, SafetensorsError, tensorsToFlat } from '../model/safetensors.js';
import { EvaluateReplySchema, FitReplySchema, TRAINER_PROTOCOL_VERSION, TrainerError, type TensorSpec, type TrainerContext, type TrainerHeader } from './protocol.js';
import { StderrTail } from './redact.js';

/** The most a trainer may write on stdout (its reply is one short line). */
export const MAX_STDOUT_BYTES = 1024 * 1024;
/** Between SIGTERM and SIGKILL when a trainer is stopped. */
export const KILL_GRACE_MS = 2_000;
/** The global weights file in a call's directory. */
export const WEIGHTS_FILE = 'global.safetensors';
/** Where a fit writes the trained weights in a call's directory. */
export const OUTPUT_FILE = 'update.safetensors';

/** What both calls take. */
export interface TrainerCallOptions {
  /** The command: an argv, or a string split like a shell would (quotes, backslashes) but run without one. */
  cmd: string[] | string;
  /** How long the process may run, ms. */
  timeoutMs: number;
  context: TrainerContext;
  /** The declared tensors (the manifest's `model.tensors`). */
  tensors: TensorSpec[];
  /** The global model: the declared tensors' values concatenated. */
  global: Float32Array;
  /** The examples, one JSON line each on stdin (typed arrays are sent as JSON arrays). */
  records: AsyncIterable<unknown> | Iterable<unknown>;
  /** Stops the call (the process group is killed; the call rejects with kind `timeout`). */
  signal?: AbortSignal;
  /** The most record bytes sent on stdin; past it the call stops with `too-large`. Default: no limit. */
  maxRecordsBytes?: number;
}

export interface FitResult {
  /** The trained weights (not a delta), checked against the declared tensors. */
  trained: Float32Array;
  numExamples: number;
  metrics: Record<string, number>;
  /** The redacted end of the trainer's stderr. */
  stderrTail: string;
}

export interface EvaluateResult {
  numExamples: number;
  loss: number;
  metrics: Record<string, number> & { accuracy: number };
  stderrTail: string;
}

/** One local fit: the trained weights, the examples trained on, the metrics. */
export async function runFit(opts: TrainerCallOptions): Promise<FitResult> {
  return call('fit', opts, async (reply, dir, tail) => {
    const r = FitReplySchema.safeParse(reply);
    if (!r.success) throw protocolError(r.error.issues[0], tail);
    const trained = await readOutput(join(dir, OUTPUT_FILE), opts.tensors, tail);
    return { trained, numExamples: r.data.num_examples, metrics: r.data.metrics, stderrTail: tail };
  });
}

/** One local evaluation: examples evaluated on, the mean loss, the metrics (with `accuracy`). */
export async function runEvaluate(opts: TrainerCallOptions): Promise<EvaluateResult> {
  return call('evaluate', opts, async (reply, _dir, tail) => {
    const r = EvaluateReplySchema.safeParse(reply);
    if (!r.success) throw protocolError(r.error.issues[0], tail);
    const { accuracy, ...rest } = r.data.metrics as Record<string, number> & { accuracy: number };
    return { numExamples: r.data.num_examples, loss: r.data.loss, metrics: { accuracy, ...rest }, stderrTail: tail };
  });
}

function protocolError(issue: { path: PropertyKey[]; message: string } | undefined, tail: string): TrainerError {
  const where = issue?.path.map(String).join('.') || 'reply';
  return new TrainerError('protocol', `the trainer's reply is not valid: ${where} ${issue?.message ?? 'invalid'}`, { stderrTail: tail });
}

/**
 * Splits a command line into argv the way a POSIX shell splits words: whitespace separates,
 * '…' keeps everything literally, "…" keeps everything but lets \ escape " \ $ `, and \ outside
 * quotes escapes the next character. No expansion of any kind ($VAR, globs, ~) and no
 * operators: the words are run as they are, without a shell.
 */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let i = 0;
  while (i < line.length) {
    const c = line[i]!;
    if (c === ' ' || c === '\t' || c === '\n') {
      if (word !== undefined) words.push(word);
      word = undefined;
      i++;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new AegisError(ErrorCode.InvalidArgument, 'the trainer command has an unterminated single quote');
      word = (word ?? '') + line.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      let j = i + 1;
      let s = '';
      for (; j < line.length && line[j] !== '"'; j++) {
        if (line[j] === '\\' && j + 1 < line.length && '"\\$`'.includes(line[j + 1]!)) s += line[++j];
        else s += line[j];
      }
      if (j >= line.length) throw new AegisError(ErrorCode.InvalidArgument, 'the trainer command has an unterminated double quote');
      word = (word ?? '') + s;
      i = j + 1;
    } else if (c === '\\') {
      if (i + 1 >= line.length) throw new AegisError(ErrorCode.InvalidArgument, 'the trainer command ends with a lone backslash');
      word = (word ?? '') + line[i + 1];
      i += 2;
    } else {
      word = (word ?? '') + c;
      i++;
    }
  }
  if (word !== undefined) words.push(word);
  if (words.length === 0) throw new AegisError(ErrorCode.InvalidArgument, 'the trainer command is empty');
  return words;
}

/** The trainer's environment: the client's, without Aegis's own secrets (`AEGIS_*`). */
function trainerEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AEGIS_')) env[k] = v;
  return env;
}

/** JSON with typed arrays as arrays (JSON.stringify would make objects of them). */
const recordLine = (r: unknown): string =>
  `${JSON.stringify(r, (_k, v: unknown) => (ArrayBuffer.isView(v) && !(v instanceof DataView) ? Array.from(v as unknown as ArrayLike<number>) : v))}\n`;

type Finish<T> = (reply: unknown, dir: string, stderrTail: string) => Promise<T>;

async function call<T>(kind: 'fit' | 'evaluate', opts: TrainerCallOptions, finish: Finish<T>): Promise<T> {
  const argv = typeof opts.cmd === 'string' ? splitCommand(opts.cmd) : opts.cmd;
  if (argv.length === 0 || argv[0] === '') throw new AegisError(ErrorCode.InvalidArgument, 'the trainer command is empty');
  if (!(opts.timeoutMs > 0)) throw new AegisError(ErrorCode.InvalidArgument, `the trainer timeout must be positive, got ${opts.timeoutMs}`);
  const weights = encodeSafetensors(flatToTensors(opts.global, opts.tensors), { format: 'pt', aegis_trainer: String(TRAINER_PROTOCOL_VERSION) });
  const dir = await mkdtemp(join(tmpdir(), 'aegis-trainer-'));
  try {
    await chmod(dir, 0o700); // mkdtemp makes it 0700 already; say so where it matters
    await writeFile(join(dir, WEIGHTS_FILE), weights, { mode: 0o600 });
    const header: TrainerHeader = {
      aegis_trainer: TRAINER_PROTOCOL_VERSION,
      kind,
      weights: join(dir, WEIGHTS_FILE),
      ...(kind === 'fit' ? { output: join(dir, OUTPUT_FILE) } : {}),
      context: opts.context,
    };
    const run = await runProcess(argv, header, opts);
    return await finish(run.reply, dir, run.stderrTail);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Reads and checks a fit's output: a regular file, not larger than the tensors need, matching them exactly. */
async function readOutput(path: string, tensors: readonly TensorSpec[], tail: string): Promise<Float32Array> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) throw new TrainerError('protocol', `the trainer replied but wrote no ${OUTPUT_FILE}`, { stderrTail: tail });
  if (!st.isFile()) throw new TrainerError('tensor', `${OUTPUT_FILE} is not a regular file`, { stderrTail: tail });
  const cap = maxFileBytes(tensors);
  if (st.size > cap) throw new TrainerError('tensor', `${OUTPUT_FILE} has ${st.size} bytes, more than the ${cap} the declared tensors can need`, { stderrTail: tail });
  const fh = await open(path, 'r');
  let bytes: Buffer;
  try {
    // Read at most cap + 1 bytes, whatever the file grew to after the stat.
    const buf = Buffer.alloc(Math.min(st.size, cap) + 1);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    bytes = buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  try {
    return tensorsToFlat(decodeSafetensors(bytes, { maxBytes: cap }), tensors);
  } catch (err) {
    if (err instanceof SafetensorsError) throw new TrainerError('tensor', `${OUTPUT_FILE}: ${err.message}`, { ...(err.tensor === undefined ? {} : { tensor: err.tensor }), stderrTail: tail });
    throw err;
  }
}

/** Kills the process group of `child` (its own group: it was spawned detached); no error if it is gone. */
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // the group is gone
  }
}

/** Runs the process to its end; resolves with its one reply (parsed JSON) or rejects with a `TrainerError`. */
function runProcess(argv: string[], header: TrainerHeader, opts: TrainerCallOptions): Promise<{ reply: unknown; stderrTail: string }> {
  return new Promise((resolveRun, rejectRun) => {
    const tail = new StderrTail();
    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    let stopped: 'timeout' | 'cancelled' | 'stdout' | 'records' | 'source' | undefined;
    let sourceError: unknown;
    let settled = false;
    let killTimer: NodeJS.Timeout | undefined;

    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: trainerEnv(), shell: false });
    } catch (err) {
      rejectRun(new TrainerError('unavailable', `the trainer command '${argv[0]!.slice(0, 200)}' cannot be started: ${(err as Error).message}`));
      return;
    }

    const stop = (why: NonNullable<typeof stopped>): void => {
      if (stopped || settled) return;
      stopped = why;
      killGroup(child, 'SIGTERM');
      killTimer = setTimeout(() => killGroup(child, 'SIGKILL'), KILL_GRACE_MS);
    };
    const timer = setTimeout(() => stop('timeout'), opts.timeoutMs);
    const onAbort = (): void => stop('cancelled');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.signal?.aborted) stop('cancelled');

    const done = (err: TrainerError | AegisError | undefined, reply?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(killTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      // Whatever the trainer left running in its group goes with it.
      killGroup(child, 'SIGKILL');
      if (err) rejectRun(err);
      else resolveRun({ reply, stderrTail: tail.text() });
    };

    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'EACCES' || err.code === 'ENOTDIR' || err.code === 'EISDIR') {
        done(new TrainerError('unavailable', `the trainer command '${argv[0]!.slice(0, 200)}' cannot be started (${err.code})`));
      } else {
        done(new TrainerError('crashed', `the trainer process failed: ${err.code ?? err.message}`, { stderrTail: tail.text() }));
      }
    });
    child.stderr!.on('data', (b: Buffer) => tail.push(b));
    child.stdout!.on('data', (b: Buffer) => {
      stdoutBytes += b.length;
      if (stdoutBytes > MAX_STDOUT_BYTES) return stop('stdout');
      stdout.push(b);
    });
    // The trainer may exit (or close stdin) before it read everything: EPIPE is its business,
    // its exit status and reply decide the outcome.
    child.stdin!.on('error', () => undefined);

    child.on('close', (code, signal) => {
      const stderrTail = tail.text();
      if (stopped === 'timeout') return done(new TrainerError('timeout', `the trainer ran past its ${Math.round(opts.timeoutMs / 100) / 10} s timeout and was killed`, { stderrTail }));
      if (stopped === 'cancelled') return done(new TrainerError('timeout', 'the trainer call was cancelled and the trainer killed', { stderrTail }));
      if (stopped === 'stdout') return done(new TrainerError('protocol', `the trainer wrote more than ${MAX_STDOUT_BYTES} bytes on stdout (only its one reply line goes there; logs go to stderr)`, { stderrTail }));
      if (stopped === 'records') return done(new AegisError(ErrorCode.TooLarge, `the records are larger than the ${opts.maxRecordsBytes} bytes allowed to the trainer`));
      if (stopped === 'source') {
        return done(sourceError instanceof AegisError ? sourceError : new AegisError(ErrorCode.InvalidArgument, 'the records could not be read for the trainer'));
      }
      if (signal) return done(new TrainerError('crashed', `the trainer was killed by ${signal}`, { stderrTail }));
      if (code !== 0) return done(new TrainerError('exit-code', `the trainer exited with status ${code}`, { stderrTail }));
      const out = Buffer.concat(stdout).toString('utf8');
      const lines = out.endsWith('\n') ? out.slice(0, -1).split('\n') : out.split('\n');
      if (out.length === 0) return done(new TrainerError('protocol', 'the trainer exited without a reply on stdout', { stderrTail }));
      if (lines.length !== 1) return done(new TrainerError('protocol', `the trainer wrote ${lines.length} lines on stdout; the protocol takes exactly one reply line (logs go to stderr)`, { stderrTail }));
      let reply: unknown;
      try {
        reply = JSON.parse(lines[0]!);
      } catch {
        return done(new TrainerError('protocol', 'the trainer\'s stdout is not a JSON line', { stderrTail }));
      }
      const version = typeof reply === 'object' && reply !== null ? (reply as Record<string, unknown>).aegis_trainer : undefined;
      if (version !== TRAINER_PROTOCOL_VERSION) {
        return done(new TrainerError('protocol', `the trainer's reply has aegis_trainer ${JSON.stringify(version) ?? 'missing'}; this Aegis speaks version ${TRAINER_PROTOCOL_VERSION}`, { stderrTail }));
      }
      done(undefined, reply);
    });

    if (child.pid !== undefined) {
      void feed(child.stdin!, header, opts, () => stop('records')).catch((err: unknown) => {
        sourceError = err;
        stop('source');
      });
    }
  });
}

/**
 * Writes the header and the records to the trainer's stdin, then closes it; stops quietly when
 * the trainer stops reading. Rejects when the record source fails (the call then fails too: a
 * trainer must not fit on part of the data without anyone knowing).
 */
async function feed(stdin: Writable, header: TrainerHeader, opts: TrainerCallOptions, tooLarge: () => void): Promise<void> {
  const closed = (): boolean => stdin.destroyed || stdin.writableEnded;
  const write = async (line: string): Promise<void> => {
    if (closed()) return;
    if (!stdin.write(line)) {
      await new Promise<void>((r) => {
        const go = (): void => {
          stdin.off('drain', go);
          stdin.off('close', go);
          stdin.off('error', go);
          r();
        };
        stdin.on('drain', go);
        stdin.on('close', go);
        stdin.on('error', go);
      });
    }
  };
  try {
    await write(`${JSON.stringify(header)}\n`);
    let bytes = 0;
    for await (const r of opts.records) {
      if (closed()) return;
      const line = recordLine(r);
      bytes += Buffer.byteLength(line);
      if (opts.maxRecordsBytes !== undefined && bytes > opts.maxRecordsBytes) return tooLarge();
      await write(line);
    }
  } finally {
    if (!closed()) stdin.end();
  }
}
