/** Plain-text tables for benchmark output (stdout), one row per configuration. */

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => String(c)))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export const fmt = (x: number, digits = 1): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');

/** The byte columns of a round's row: what a client sends in all, and its masked upload against the floor m·r/8. */
export const BYTES_HEADERS = ['sent kB/client', 'masked kB', 'floor m·r/8 kB', 'r bits'];

export function bytesCells(r: { bytes_per_client: { total: number; masked: number }; masked_floor_bytes: number; sum_bits: number }): string[] {
  return [fmt(r.bytes_per_client.total / 1000), fmt(r.bytes_per_client.masked / 1000), fmt(r.masked_floor_bytes / 1000), String(r.sum_bits)];
}

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
