/**
 * Who is using a data dir, so that commands that must not overlap do not: `aegis client run`
 * holds its dir alone for as long as it runs, and so do the commands that change its keys
 * (`keys rotate|passphrase|enable|disable|destroy`) and `client restore`; coordinator processes
 * share theirs (several front ends may run on one data dir) but not with a key change.
 *
 * Each user of the dir has an entry `DATA_DIR/in-use/<pid>.<random>.json` ({pid, command, mode,
 * since}) for as long as it runs. Claiming reads the entries under a short lock file (so two
 * claims cannot both see the dir free), drops those whose process is gone (killed with SIGKILL),
 * refuses when a live entry conflicts, and adds its own. The entry is removed when the process
 * exits, whatever the cause short of SIGKILL (and a later claim drops it then).
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, unlinkSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AegisError, ErrorCode } from './errors.js';
import { processAlive, withFileLock } from './fs-lock.js';

export const IN_USE_DIR = 'in-use';
const CLAIM_LOCK = 'in-use.lock';

export interface DataDirUse {
  /** What uses the dir, for the message another command gets: e.g. `aegis client run`. */
  command: string;
  /** `shared`: others in shared mode may use the dir too; `exclusive`: nobody else. */
  mode: 'shared' | 'exclusive';
}

interface Entry extends DataDirUse {
  pid: number;
  since: string;
}

const held = new Set<string>();
let exitHook = false;

/**
 * Claims `dir` for `use`; returns the release. Refuses with `failed-precondition`, naming the
 * command and process using the dir, when the uses conflict. The dir must exist.
 */
export async function claimDataDir(dir: string, use: DataDirUse): Promise<() => void> {
  const entries = join(dir, IN_USE_DIR);
  await mkdir(entries, { recursive: true, mode: 0o700 });
  const name = `${process.pid}.${randomBytes(6).toString('hex')}.json`;
  await withFileLock(join(dir, CLAIM_LOCK), 'another aegis command on this data dir', async () => {
    for (const file of readdirSync(entries)) {
      if (!file.endsWith('.json')) continue;
      const path = join(entries, file);
      let e: Entry;
      try {
        e = JSON.parse(await readFile(path, 'utf8')) as Entry;
      } catch {
        continue; // being written by a claim that holds the lock: cannot happen; or torn by a kill
      }
      if (!Number.isInteger(e.pid) || !processAlive(e.pid)) {
        try {
          unlinkSync(path);
        } catch {
          // already gone
        }
        continue;
      }
      if (use.mode === 'exclusive' || e.mode === 'exclusive') {
        throw new AegisError(
          ErrorCode.FailedPrecondition,
          `${dir} is in use by ${e.command} (pid ${e.pid}, since ${e.since}); stop it first, or wait until it ends`,
        );
      }
    }
    const entry: Entry = { ...use, pid: process.pid, since: new Date().toISOString() };
    await writeFile(join(entries, name), `${JSON.stringify(entry)}\n`, { mode: 0o600, flag: 'wx' });
  });
  const path = join(entries, name);
  held.add(path);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const p of held) {
        try {
          unlinkSync(p);
        } catch {
          // gone
        }
      }
    });
  }
  return () => {
    if (!held.delete(path)) return;
    try {
      unlinkSync(path);
    } catch {
      // gone
    }
  };
}

/** Runs `fn` with `dir` claimed for `use`, released afterwards. */
export async function withDataDir<T>(dir: string, use: DataDirUse, fn: () => Promise<T>): Promise<T> {
  const release = await claimDataDir(dir, use);
  try {
    return await fn();
  } finally {
    release();
  }
}
