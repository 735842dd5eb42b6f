/** Files written so a crash never leaves half of one: temp file, fsync, rename, fsync the folder. */
import { randomBytes } from 'node:crypto';
import { open as openFile, readFile, rename, unlink, constants as fsc } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { AegisError, ErrorCode } from './errors.js';

/** Writes `data` to `path` atomically with `mode` (default 0600: owner only). */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await openFile(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, mode);
  try {
    await fh.chmod(mode); // the umask can only narrow it; be explicit either way
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
  const dir = await openFile(dirname(path), fsc.O_RDONLY).catch(() => undefined);
  if (dir) {
    await dir.sync().catch(() => undefined);
    await dir.close();
  }
}

/**
 * A JSON file checked with `schema`: undefined when it does not exist; `malformed` (naming the
 * file as `name`, never its content) when it is not JSON or does not fit.
 */
export async function readJsonFile<T>(path: string, schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } }, name = path, what = 'malformed'): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new AegisError(ErrorCode.Malformed, `${name} is not JSON`);
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new AegisError(ErrorCode.Malformed, `${name} is ${what}`);
  return r.data;
}
