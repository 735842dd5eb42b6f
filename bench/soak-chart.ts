/**
 * Pictures of a soak run (`npm run bench -- soak`): a dependency-free SVG with one panel per
 * figure (the soak coordinator and the idle coordinator per round), and one-line text sparklines.
 */

export interface SoakSeries {
  title: string;
  unit: string;
  /** The coordinator running the rounds, one value per round (round i + 1 at index i). */
  soak: number[];
  /** The idle coordinator sampled at the same moments. */
  idle: number[];
}

const BARS = '▁▂▃▄▅▆▇█';

/** A sparkline of `values` (at most `width` characters: longer series are averaged in buckets). */
export function sparkline(values: readonly number[], width = 60): string {
  const vs = values.filter(Number.isFinite);
  if (vs.length === 0) return '';
  const buckets = Math.min(width, vs.length);
  const out: number[] = [];
  for (let b = 0; b < buckets; b++) {
    const part = vs.slice(Math.floor((b * vs.length) / buckets), Math.floor(((b + 1) * vs.length) / buckets));
    out.push(part.reduce((a, x) => a + x, 0) / part.length);
  }
  const lo = Math.min(...out);
  const hi = Math.max(...out);
  return out.map((v) => BARS[hi === lo ? 0 : Math.min(BARS.length - 1, Math.floor(((v - lo) / (hi - lo)) * BARS.length))]).join('');
}

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const r2 = (x: number): string => String(Math.round(x * 100) / 100);
const FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"';

/** Panels stacked vertically; y axes from 0 to a little above the largest value, so a flat line reads as flat. */
export function renderSoakChart(series: readonly SoakSeries[], title: string, warmup: number): string {
  const width = 820;
  const panelH = 150;
  const gap = 46;
  const top = 56;
  const left = 80;
  const right = width - 150;
  const height = top + series.length * (panelH + gap) + 10;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="28" text-anchor="middle" font-size="16" fill="#222222" ${FONT}>${esc(title)}</text>`,
  ];
  series.forEach((s, i) => {
    const y0 = top + i * (panelH + gap);
    const y1 = y0 + panelH;
    const rounds = Math.max(s.soak.length, s.idle.length, 2);
    const all = [...s.soak, ...s.idle].filter(Number.isFinite);
    const hi = Math.max(1e-9, ...all) * 1.1;
    const xOf = (k: number): number => left + (k / (rounds - 1)) * (right - left);
    const yOf = (v: number): number => y1 - (v / hi) * (y1 - y0);
    out.push(`<g ${FONT} font-size="11" fill="#333333">`);
    for (const f of [0, 0.5, 1]) {
      const v = hi * f;
      out.push(`<line x1="${left}" y1="${r2(yOf(v))}" x2="${right}" y2="${r2(yOf(v))}" stroke="#e5e5e5"/>`, `<text x="${left - 6}" y="${r2(yOf(v) + 4)}" text-anchor="end">${esc(v >= 100 ? v.toFixed(0) : v.toFixed(1))}</text>`);
    }
    for (const k of [0, Math.floor((rounds - 1) / 2), rounds - 1]) out.push(`<text x="${r2(xOf(k))}" y="${y1 + 15}" text-anchor="middle">${k + 1}</text>`);
    if (warmup > 1 && warmup <= rounds) {
      const x = xOf(warmup - 1);
      out.push(`<line x1="${r2(x)}" y1="${y0}" x2="${r2(x)}" y2="${y1}" stroke="#999999" stroke-dasharray="3 3"/>`);
    }
    out.push(
      `<rect x="${left}" y="${y0}" width="${right - left}" height="${panelH}" fill="none" stroke="#333333"/>`,
      `<text x="${left}" y="${y0 - 8}" font-size="12">${esc(`${s.title} (${s.unit})`)}</text>`,
      '</g>',
    );
    const line = (vals: number[], color: string, dash: string): void => {
      const pts = vals.map((v, k) => (Number.isFinite(v) ? `${r2(xOf(k))},${r2(yOf(v))}` : '')).filter(Boolean);
      if (pts.length > 1) out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5"${dash} points="${pts.join(' ')}"/>`);
    };
    line(s.idle, '#7f7f7f', ' stroke-dasharray="4 3"');
    line(s.soak, '#1f77b4', '');
    out.push(
      `<g ${FONT} font-size="11"><line x1="${right + 12}" y1="${y0 + 12}" x2="${right + 32}" y2="${y0 + 12}" stroke="#1f77b4" stroke-width="2"/><text x="${right + 36}" y="${y0 + 16}" fill="#333333">rounds</text>`,
      `<line x1="${right + 12}" y1="${y0 + 30}" x2="${right + 32}" y2="${y0 + 30}" stroke="#7f7f7f" stroke-width="2" stroke-dasharray="4 3"/><text x="${right + 36}" y="${y0 + 34}" fill="#333333">idle</text></g>`,
    );
  });
  out.push(`<text x="${(left + right) / 2}" y="${height - 6}" text-anchor="middle" font-size="12" fill="#333333" ${FONT}>round (dashed vertical: end of warm-up)</text>`, '</svg>');
  return `${out.join('\n')}\n`;
}
