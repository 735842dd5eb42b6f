/**
 * A dependency-free SVG chart of a federated training run (test accuracy and loss per round),
 * so the demo can leave a picture of its progress that any browser opens.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/** One round's result: accuracy on the held-out test set (0..1) and the loss. */
export interface ChartPoint {
  round: number;
  accuracy: number;
  loss: number;
}

/** Chart options; width and height are in pixels (200..10000). */
export interface ChartOptions {
  title?: string;
  width?: number;
  height?: number;
}

const ACC_COLOR = '#1f77b4';
const LOSS_COLOR = '#d62728';
const FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"';

/** Escapes text for SVG element content and attribute values. */
function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A coordinate with at most two decimals. */
function n(x: number): string {
  return String(Math.round(x * 100) / 100);
}

/** Tick values covering [lo, hi] with a 1/2/5×10^k step (at least `minStep`). */
function ticks(lo: number, hi: number, target: number, minStep = 0): { values: number[]; step: number } {
  const raw = Math.max((hi - lo) / Math.max(target, 1), minStep, Number.EPSILON);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max([1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag, minStep);
  const values: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) values.push(Math.round(v / step) * step);
  return { values, step };
}

function decimals(step: number): number {
  return step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step) - 1e-9));
}

function checkSize(v: number | undefined, dflt: number, what: string): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 200 || v > 10000) {
    throw new Error(`renderChart: ${what} must be a number from 200 to 10000 (got ${String(v)})`);
  }
  return v;
}

function header(width: number, height: number, title: string): string[] {
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${n(width)}" height="${n(height)}" viewBox="0 0 ${n(width)} ${n(height)}" role="img" aria-label="${esc(title)}">`,
    `<title>${esc(title)}</title>`,
    `<rect x="0" y="0" width="${n(width)}" height="${n(height)}" fill="#ffffff"/>`,
    `<text x="${n(width / 2)}" y="26" text-anchor="middle" font-size="18" font-weight="bold" ${FONT}>${esc(title)}</text>`,
  ];
}

interface Panel {
  top: number;
  bottom: number;
  left: number;
  right: number;
}

/**
 * Renders accuracy (as %, 0..100) and loss per round as a self-contained SVG with two stacked
 * panels sharing the round axis, ticks, a legend and the final accuracy annotated. Points with
 * a non-finite round are dropped; non-finite accuracy or loss values leave a gap in that series
 * only. An empty run gives an SVG that says "no rounds".
 */
export function renderChart(points: readonly ChartPoint[], opts: ChartOptions = {}): string {
  const width = checkSize(opts.width, 800, 'width');
  const height = checkSize(opts.height, 520, 'height');
  const title = opts.title ?? 'Federated training: test accuracy and loss per round';
  const pts = points.filter((p) => Number.isFinite(p.round)).sort((a, b) => a.round - b.round);
  const out = header(width, height, title);
  if (pts.length === 0) {
    out.push(
      `<text x="${n(width / 2)}" y="${n(height / 2)}" text-anchor="middle" font-size="16" fill="#666666" ${FONT}>no rounds</text>`,
      '</svg>',
    );
    return `${out.join('\n')}\n`;
  }

  const left = 72;
  const right = width - 24;
  const gap = 44;
  const plotTop = 64;
  const plotBottom = height - 48;
  const panelH = (plotBottom - plotTop - gap) / 2;
  const acc: Panel = { top: plotTop, bottom: plotTop + panelH, left, right };
  const loss: Panel = { top: plotTop + panelH + gap, bottom: plotBottom, left, right };

  // x: the round range (one point gets a range of width 2 centred on it).
  let xLo = pts[0]!.round;
  let xHi = pts[pts.length - 1]!.round;
  if (xHi === xLo) {
    xLo -= 1;
    xHi += 1;
  }
  const xOf = (r: number): number => left + ((r - xLo) / (xHi - xLo)) * (right - left);
  const xTicks =
    pts.length === 1 || pts[0]!.round === pts[pts.length - 1]!.round
      ? [pts[0]!.round]
      : ticks(xLo, xHi, Math.max(2, Math.floor((right - left) / 70)), 1).values;

  // y: accuracy 0..100 %, loss from min(0, min loss) to a nice max.
  const accY = (a: number): number => acc.bottom - Math.min(1, Math.max(0, a)) * (acc.bottom - acc.top);
  const losses = pts.map((p) => p.loss).filter(Number.isFinite);
  const lossMin = Math.min(0, ...losses);
  let lossMaxRaw = Math.max(0, ...losses);
  if (lossMaxRaw <= lossMin) lossMaxRaw = lossMin + 1;
  const lt = ticks(lossMin, lossMaxRaw, 4);
  // Round the top up to a whole tick so the axis ends on a labelled value.
  let lossMax = lt.values[lt.values.length - 1] ?? lossMaxRaw;
  if (lossMax < lossMaxRaw - 1e-12) {
    lossMax = Math.round((lossMax + lt.step) / lt.step) * lt.step;
    lt.values.push(lossMax);
  }
  const lossY = (l: number): number => loss.bottom - ((l - lossMin) / (lossMax - lossMin)) * (loss.bottom - loss.top);

  const panel = (p: Panel, yTicks: { v: number; label: string; y: number }[], yLabel: string): void => {
    out.push(`<g class="panel" ${FONT} font-size="11" fill="#333333">`);
    for (const t of yTicks) {
      out.push(
        `<line x1="${n(p.left)}" y1="${n(t.y)}" x2="${n(p.right)}" y2="${n(t.y)}" stroke="#e5e5e5" stroke-width="1"/>`,
        `<text x="${n(p.left - 6)}" y="${n(t.y + 4)}" text-anchor="end">${esc(t.label)}</text>`,
      );
    }
    for (const r of xTicks) {
      const x = xOf(r);
      out.push(
        `<line x1="${n(x)}" y1="${n(p.bottom)}" x2="${n(x)}" y2="${n(p.bottom + 4)}" stroke="#333333" stroke-width="1"/>`,
        `<text x="${n(x)}" y="${n(p.bottom + 16)}" text-anchor="middle">${esc(String(r))}</text>`,
      );
    }
    out.push(
      `<rect x="${n(p.left)}" y="${n(p.top)}" width="${n(p.right - p.left)}" height="${n(p.bottom - p.top)}" fill="none" stroke="#333333" stroke-width="1"/>`,
      `<text x="${n(p.left - 50)}" y="${n((p.top + p.bottom) / 2)}" text-anchor="middle" font-size="12" transform="rotate(-90 ${n(p.left - 50)} ${n((p.top + p.bottom) / 2)})">${esc(yLabel)}</text>`,
      '</g>',
    );
  };

  const series = (cls: string, color: string, vals: { r: number; v: number }[], yOf: (v: number) => number, fmt: (v: number) => string): void => {
    // Break the line wherever a value is missing.
    const runs: string[][] = [[]];
    for (const q of vals) {
      if (Number.isFinite(q.v)) runs[runs.length - 1]!.push(`${n(xOf(q.r))},${n(yOf(q.v))}`);
      else if (runs[runs.length - 1]!.length > 0) runs.push([]);
    }
    out.push(`<g class="${cls}">`);
    for (const run of runs) {
      if (run.length > 1) out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${run.join(' ')}"/>`);
    }
    const r = pts.length > 60 ? 1.5 : 3;
    for (const q of vals) {
      if (!Number.isFinite(q.v)) continue;
      out.push(
        `<circle class="${cls}-point" cx="${n(xOf(q.r))}" cy="${n(yOf(q.v))}" r="${r}" fill="${color}"><title>${esc(`after ${q.r} rounds: ${fmt(q.v)}`)}</title></circle>`,
      );
    }
    out.push('</g>');
  };

  const pct = (a: number): string => `${(a * 100).toFixed(1)}%`;
  panel(acc, [0, 0.2, 0.4, 0.6, 0.8, 1].map((v) => ({ v, label: `${v * 100}%`, y: accY(v) })), 'test accuracy');
  const ld = decimals(lt.step);
  panel(loss, lt.values.map((v) => ({ v, label: v.toFixed(ld), y: lossY(v) })), 'loss');
  out.push(
    `<text x="${n((left + right) / 2)}" y="${n(height - 10)}" text-anchor="middle" font-size="12" fill="#333333" ${FONT}>rounds completed</text>`,
  );
  series('accuracy', ACC_COLOR, pts.map((p) => ({ r: p.round, v: p.accuracy })), accY, pct);
  series('loss', LOSS_COLOR, pts.map((p) => ({ r: p.round, v: p.loss })), lossY, (v) => v.toPrecision(4));

  // Legend (top left) and the final accuracy (top right of the accuracy panel).
  out.push(
    `<g class="legend" ${FONT} font-size="12" fill="#333333">`,
    `<line x1="${n(left)}" y1="46" x2="${n(left + 22)}" y2="46" stroke="${ACC_COLOR}" stroke-width="2"/>`,
    `<text x="${n(left + 28)}" y="50">test accuracy (%)</text>`,
    `<line x1="${n(left + 150)}" y1="46" x2="${n(left + 172)}" y2="46" stroke="${LOSS_COLOR}" stroke-width="2"/>`,
    `<text x="${n(left + 178)}" y="50">loss</text>`,
    '</g>',
  );
  const last = [...pts].reverse().find((p) => Number.isFinite(p.accuracy));
  if (last) {
    const x = xOf(last.round);
    const y = accY(last.accuracy);
    out.push(
      `<circle class="final" cx="${n(x)}" cy="${n(y)}" r="6" fill="none" stroke="${ACC_COLOR}" stroke-width="1.5"/>`,
      // Above the final point when there is room, below it otherwise (never across the line's top).
      `<text class="final-label" x="${n(right - 6)}" y="${n(y - acc.top > 28 ? y - 12 : y + 24)}" text-anchor="end" font-size="13" font-weight="bold" fill="${ACC_COLOR}" ${FONT}>${esc(`final accuracy ${pct(last.accuracy)} (after ${last.round} rounds)`)}</text>`,
    );
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** Renders the chart and writes it to `path` (creating parent directories); returns `path`. */
export async function writeChart(path: string, points: readonly ChartPoint[], opts?: ChartOptions): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, renderChart(points, opts), 'utf8');
  return path;
}
