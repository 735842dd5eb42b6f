#!/usr/bin/env node
/**
 * Keeps the machine's cores busy, to run the test suite under load as a busy CI machine would:
 *
 *   node scripts/busy.mjs [--workers N] [--seconds S] -- <command …>
 *
 * Starts N worker threads (default: every core) that spin on arithmetic, then runs the command
 * (if any) and stops the workers when it ends, exiting with its code; without a command it spins
 * for S seconds (default: until SIGINT/SIGTERM). Each worker yields nothing: the command competes
 * with N runnable threads for the cores, as it would beside another job.
 */
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { setTimeout } from 'node:timers';
import { Worker } from 'node:worker_threads';

const args = process.argv.slice(2);
const sep = args.indexOf('--');
const own = sep < 0 ? args : args.slice(0, sep);
const command = sep < 0 ? [] : args.slice(sep + 1);
const flag = (name, fallback) => {
  const i = own.indexOf(name);
  if (i < 0) return fallback;
  const v = Number(own[i + 1]);
  if (!Number.isFinite(v) || v <= 0) {
    process.stderr.write(`error [invalid-argument]: ${name} must be a positive number\n`);
    process.exit(2);
  }
  return v;
};
const workers = Math.floor(flag('--workers', availableParallelism()));
const seconds = flag('--seconds', 0);

const spin = 'let x = 0; for (;;) { for (let i = 0; i < 1e7; i++) x = (x * 1103515245 + 12345) % 2147483648; }';
const threads = Array.from({ length: workers }, () => new Worker(spin, { eval: true }));
process.stderr.write(`busy: ${workers} spinning worker thread(s)\n`);
const stop = (code) => {
  for (const t of threads) void t.terminate();
  process.exitCode = code;
};

if (command.length > 0) {
  const child = spawn(command[0], command.slice(1), { stdio: 'inherit', shell: false });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => stop(code ?? (signal ? 1 : 0)));
} else {
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => stop(0));
  if (seconds > 0) setTimeout(() => stop(0), seconds * 1000);
}
