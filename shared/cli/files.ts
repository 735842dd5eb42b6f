/**
 * Reading a JSON file given on the command line (`--input`, `--config`, a manifest): a missing
 * file is `not-found` naming the file and its flag, a file that is not JSON is
 * `invalid-argument` naming the file and the line where parsing stopped — never the content.
 */
import { readFile } from 'node:fs/promises';
import { AegisError, ErrorCode } from '../errors.js';

/** The file's text; `what` is the flag or argument it was given as (`--config`, `<manifest>`). */
export async function readTextFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new AegisError(ErrorCode.NotFound, `${what}: no such file: ${path}`, 'check the path');
    if (code === 'EISDIR') throw new AegisError(ErrorCode.InvalidArgument, `${what}: ${path} is a directory, not a file`, 'give the path of a file');
    if (code === 'EACCES') throw new AegisError(ErrorCode.PermissionDenied, `${what}: cannot read ${path} (permission denied)`, 'check the file is readable by this user');
    throw err;
  }
}

/** The file parsed as JSON (see the module comment for the errors). */
export async function readJsonFile(path: string, what: string): Promise<unknown> {
  const text = await readTextFile(path, what);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new AegisError(ErrorCode.InvalidArgument, `${what}: ${path} is not JSON${jsonErrorLine(text, err)}`, 'check the file is the JSON document the command takes');
  }
}

/** ` (line N)` from V8's "at position N", when it says one; its message itself quotes content. */
function jsonErrorLine(text: string, err: unknown): string {
  const m = /at position (\d+)/.exec(err instanceof Error ? err.message : '');
  if (!m) return text.trim() === '' ? ' (the file is empty)' : '';
  const line = text.slice(0, Number(m[1])).split('\n').length;
  return ` (line ${line})`;
}
