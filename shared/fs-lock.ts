/**
 * One process at a time: a lock file created with its content, holding `pid.random`. A lock whose
 * process is gone (killed mid-write) or that is older than 30 s is from a crashed process and is
 * broken: moved aside atomically, so of two processes breaking it one wins, and a lock another
 * process took meanwhile (not the one judged stale) is put back. Used for the client's small
 * read-modify-write files (the audit book, the contribution ledger).
 */
import { randomBytes } from 'node:crypto';
import { link, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { AegisError, ErrorCode } from './errors.js';

const LOCK_WAIT_MS = 5_000;
const LOCK_STALE_MS = 30_000;
const LOCK_RETRY_MS = 20;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** False only when `pid` names a process that no longer exists (this one always exists). */
export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** False only when the lock names a process that no longer exists. */
function holderAlive(content: string): boolean {
  const pid = Number(content.split('.')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return true; // being written: not ours to judge yet
  return processAlive(pid);
}

/**
 * Runs `fn` holding the lock file `path`; waits up to ~5 s, then `unavailable` naming the file
 * and `holders` (who else takes it, for the message).
 */
export async function withFileLock<T>(path: string, holders: string, fn: () => Promise<T>): Promise<T> {
  const token = `${process.pid}.${randomBytes(8).toString('hex')}`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  // The lock appears with its token in it: written to a file of our own, then hard-linked into
  // place (which fails if the lock exists). A process that dies while taking the lock leaves at
  // most that private file, never an empty lock that would look held until it is 30 s old.
  const mine = `${path}.${token}`;
  await writeFile(mine, token, { mode: 0o600, flag: 'wx' });
  try {
    for (;;) {
      try {
        await link(mine, path);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const st = await stat(path).catch(() => undefined);
      const held = await readFile(path, 'utf8').catch(() => undefined);
      if (st && held !== undefined && (Date.now() - st.mtimeMs > LOCK_STALE_MS || !holderAlive(held))) {
        const aside = `${path}.stale.${randomBytes(6).toString('hex')}`;
        if (await rename(path, aside).then(() => true, () => false)) {
          if ((await readFile(aside, 'utf8').catch(() => held)) !== held) await link(aside, path).catch(() => undefined);
          await unlink(aside).catch(() => undefined);
        }
        continue;
      }
      if (Date.now() > deadline) throw new AegisError(ErrorCode.Unavailable, `${path} is held by another process (${holders}); retry, or remove it if no aegis process is running`);
      await sleep(LOCK_RETRY_MS + Math.floor(Math.random() * LOCK_RETRY_MS));
    }
  } finally {
    await unlink(mine).catch(() => undefined);
  }
  try {
    return await fn();
  } finally {
    // Removed only while still ours (it may have been broken as stale meanwhile).
    const held = await readFile(path, 'utf8').catch(() => undefined);
    if (held === token) await unlink(path).catch(() => undefined);
  }
}
