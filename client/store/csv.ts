/**
 * Reading records to import: JSON Lines, or CSV with a header row (RFC 4180 quoting). Errors
 * name line numbers and columns, never a value.
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { AegisError, ErrorCode, fail } from '../../shared/errors.js';
import { readJsonlLines } from '../../shared/store/memory.js';
import type { DataRecord } from '../../shared/store/types.js';

type FieldValue = number | string | number[];

/** A cell: a finite number, a JSON array of numbers (starting with '['), else the string. */
export function csvCell(line: number, column: string, raw: string): FieldValue {
  const t = raw.trim();
  if (t.startsWith('[')) {
    let v: unknown;
    try {
      v = JSON.parse(t);
    } catch {
      v = undefined;
    }
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      fail(ErrorCode.InvalidArgument, `line ${line}, column '${column}': not a JSON array of numbers`);
    }
    return v as number[];
  }
  if (t !== '' && Number.isFinite(Number(t))) return Number(t);
  return raw;
}

/**
 * Splits CSV text (RFC 4180: quoted fields may hold commas, newlines and doubled quotes) into
 * rows, each with the 1-based line it starts on.
 */
function csvRows(text: string): { line: number; cells: string[] }[] {
  const rows: { line: number; cells: string[] }[] = [];
  let cells: string[] = [];
  let cell = '';
  let line = 1;
  let start = 1;
  let i = 0;
  let quoted = false; // the current cell began with a quote (and it is closed)
  const endRow = (): void => {
    cells.push(cell);
    if (!(cells.length === 1 && cells[0] === '' && !quoted)) rows.push({ line: start, cells });
    cells = [];
    cell = '';
    quoted = false;
  };
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"' && cell === '' && !quoted) {
      // A quoted cell: read to the closing quote.
      i++;
      for (;;) {
        if (i >= text.length) fail(ErrorCode.InvalidArgument, `line ${start}: unterminated quoted field`);
        const q = text[i]!;
        if (q === '"') {
          if (text[i + 1] === '"') {
            cell += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        if (q === '\n') line++;
        cell += q;
        i++;
      }
      quoted = true;
      const next = text[i];
      if (next !== undefined && next !== ',' && next !== '\n' && next !== '\r') fail(ErrorCode.InvalidArgument, `line ${line}: text after a closing quote`);
      continue;
    }
    if (c === ',') {
      cells.push(cell);
      cell = '';
      quoted = false;
      i++;
    } else if (c === '\r' || c === '\n') {
      endRow();
      i += c === '\r' && text[i + 1] === '\n' ? 2 : 1;
      line++;
      start = line;
    } else {
      if (c === '"' || quoted) fail(ErrorCode.InvalidArgument, `line ${line}: a quote inside an unquoted field`);
      cell += c;
      i++;
    }
  }
  if (cell !== '' || cells.length > 0 || quoted) endRow();
  return rows;
}

/** Parses a CSV file's text: a header row, then records; an empty cell leaves the field out. */
export function parseCsvRecords(text: string): DataRecord[] {
  return parseCsvLines(text).records;
}

/** `parseCsvRecords`, with the line (1-based) each record starts on. */
function parseCsvLines(text: string): { records: DataRecord[]; lines: number[] } {
  const rows = csvRows(text.startsWith('\uFEFF') ? text.slice(1) : text);
  const header = rows.shift();
  if (header === undefined) fail(ErrorCode.InvalidArgument, 'the CSV file has no header row');
  const names = header.cells.map((c) => c.trim());
  const seen = new Set<string>();
  for (const n of names) {
    if (n === '') fail(ErrorCode.InvalidArgument, `line ${header.line}: an empty column name`);
    if (seen.has(n)) fail(ErrorCode.InvalidArgument, `line ${header.line}: column '${n}' appears twice`);
    seen.add(n);
  }
  const records = rows.map(({ line, cells }) => {
    if (cells.length !== names.length) fail(ErrorCode.InvalidArgument, `line ${line} has ${cells.length} fields, the header has ${names.length}`);
    const rec: Record<string, FieldValue> = {};
    cells.forEach((raw, j) => {
      const name = names[j]!;
      if (raw !== '') rec[name] = csvCell(line, name, raw);
    });
    return rec;
  });
  return { records, lines: rows.map((r) => r.line) };
}

/** Reads records from JSON Lines (one object per line) or, for a `.csv` name, CSV with a header. */
export async function readRecordsFile(path: string): Promise<DataRecord[]> {
  return (await readRecordsFileLines(path)).records;
}

/**
 * `readRecordsFile`, with the line (1-based) each record starts on, so that a record the store
 * refuses later is named by its file and line. Errors name the file.
 */
export async function readRecordsFileLines(path: string): Promise<{ records: DataRecord[]; lines: number[] }> {
  if (extname(path).toLowerCase() !== '.csv') return readJsonlLines(path);
  const text = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new AegisError(ErrorCode.NotFound, `no such file: ${path}`, 'check the path');
    if (e.code === 'EISDIR') throw new AegisError(ErrorCode.InvalidArgument, `${path} is a directory, not a CSV file`);
    throw e;
  });
  try {
    return parseCsvLines(text);
  } catch (err) {
    if (err instanceof AegisError) throw new AegisError(err.code, `${path}: ${err.message}`, 'fix that line: a header row, then the same number of fields on every line (RFC 4180 quoting)');
    throw err;
  }
}
