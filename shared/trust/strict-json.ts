/**
 * JSON for signed data, parsed strictly: a document with the same key twice in one object is
 * refused (`malformed`). `JSON.parse` silently keeps the last of duplicate keys, so two parsers
 * could read one signed manifest differently — the classic way to smuggle a field past a
 * signature check. The scan below only checks keys; values are then parsed by JSON.parse.
 */
import { AegisError, ErrorCode } from '../errors.js';

const malformed = (what: string): never => {
  throw new AegisError(ErrorCode.Malformed, what);
};

/** Parses `text` as JSON, refusing duplicate keys in any object, at any depth. */
export function parseStrictJson(text: string, what = 'document'): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return malformed(`${what} is not valid JSON`);
  }
  checkDuplicateKeys(text, what);
  return value;
}

/** Walks the (already valid) JSON text, tracking the keys of each open object. */
function checkDuplicateKeys(text: string, what: string): void {
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const top = stack[stack.length - 1];
      if (expectKey && top) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.has(key)) malformed(`${what} has the key "${key.slice(0, 40)}" twice in one object`);
        top.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === '{') {
      stack.push(new Set());
      expectKey = true;
    } else if (c === '[') {
      stack.push(null);
    } else if (c === '}' || c === ']') {
      stack.pop();
    } else if (c === ',') {
      expectKey = stack[stack.length - 1] instanceof Set;
    }
  }
}

/** Canonical bytes of a JSON value for signing: keys sorted at every depth, no whitespace. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}
