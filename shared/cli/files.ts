/**
 * Reading a JSON file given on the command line (`--input`, `--config`, a manifest): a missing
 * file is `not-found` naming the file and its flag, a file that is not JSON is
 * `invalid-argument` naming the file and the line where parsing stopped — never the content.
 */
import { readFile, stat } from 'node:fs/promises';
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
  } catch {
    throw new AegisError(ErrorCode.InvalidArgument, `${what}: ${path} is not JSON${jsonErrorLine(text)}`, 'check the file is the JSON document the command takes');
  }
}

/**
 * ` (line N)`: the first line whose end no longer reads as the start of a JSON document (for a
 * good prefix V8 says "Unexpected end of JSON input" or names the position at its very end; past
 * the error it names an earlier position or none). Its message itself is never shown: it quotes
 * the content. Files over 2,000 lines get no line number.
 */
function jsonErrorLine(text: string): string {
  if (text.trim() === '') return ' (the file is empty)';
  const lines = text.split('\n');
  if (lines.length > 2000) return '';
  for (let n = 1; n <= lines.length; n++) {
    try {
      JSON.parse(lines.slice(0, n).join('\n'));
    } catch (err) {
      if (!(err instanceof SyntaxError)) return '';
      const prefix = lines.slice(0, n).join('\n').trimEnd();
      const at = /at position (\d+)/.exec(err.message);
      const atEnd = /Unexpected end of JSON input/.test(err.message) || (at !== null && Number(at[1]) >= prefix.length);
      if (!atEnd) return ` (line ${n})`;
    }
  }
  return '';
}

/** Refuses a path that does not exist (before a command that streams the file opens it). */
export async function assertFileExists(path: string, what: string): Promise<void> {
  try {
    await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new AegisError(ErrorCode.NotFound, `${what}: no such file: ${path}`, 'check the path');
    throw err;
  }
}
