/**
 * Accuracy and loss per round (round 0 = the initial model), and a DP job's ε per round against
 * its budget, as uPlot line charts. Each chart is
 * made once per job view and updated in place with setData as new model versions arrive; its
 * element carries `data-points` = the number of points drawn (the browser test reads it).
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { Dp, ModelVersion } from './api.js';
import { h } from './dom.js';

export interface MetricChart {
  readonly element: HTMLElement;
  update(models: ModelVersion[]): void;
  destroy(): void;
}

interface MetricSpec {
  testId: string;
  title: string;
  label: string;
  color: string;
  pick: (m: ModelVersion) => number | null;
  /** The value as plotted (accuracy in percent). */
  scale: (v: number) => number;
  /** Formats a plotted value. */
  format: (v: number) => string;
  range?: [number, number];
}

export const ACCURACY: MetricSpec = {
  testId: 'accuracy-chart',
  title: 'Test accuracy per round',
  label: 'accuracy (%)',
  color: '#2563eb',
  pick: (m) => m.accuracy,
  scale: (v) => v * 100,
  format: (v) => `${v.toFixed(1)}%`, // of the plotted (percent) value
  range: [0, 100],
};

export const LOSS: MetricSpec = {
  testId: 'loss-chart',
  title: 'Test loss per round',
  label: 'loss',
  color: '#dc2626',
  pick: (m) => m.loss,
  scale: (v) => v,
  format: (v) => v.toFixed(3),
};

function points(models: ModelVersion[], spec: MetricSpec): [number[], number[]] {
  const xs: number[] = [];
  const ys: number[] = [];
  for (const m of models) {
    const v = spec.pick(m);
    if (v === null) continue;
    xs.push(m.version);
    ys.push(spec.scale(v));
  }
  return [xs, ys];
}

const HEIGHT = 220;

/** A uPlot drawn into `plot` once there is data, kept as wide as `element`: what every chart here shares. */
function lazyPlot(element: HTMLElement, plot: HTMLElement, options: (width: number) => uPlot.Options) {
  let chart: uPlot | null = null;
  const width = (): number => Math.max(280, Math.floor(plot.clientWidth || element.clientWidth || 480));
  const resize = new ResizeObserver(() => {
    if (chart) chart.setSize({ width: width(), height: HEIGHT });
  });
  resize.observe(element);
  return {
    /** Updates the drawn chart, or draws it when `create` (it is not drawn for data that is all empty). */
    setData(data: uPlot.AlignedData, create = true): void {
      if (chart) chart.setData(data);
      else if (create) chart = new uPlot(options(width()), data, plot);
    },
    destroy(): void {
      resize.disconnect();
      chart?.destroy();
      chart = null;
    },
  };
}

export function metricChart(spec: MetricSpec): MetricChart {
  const plot = h('div', { class: 'plot' });
  const caption = h('figcaption', {}, spec.title);
  const empty = h('p', { class: 'muted chart-empty' }, 'No checked model yet.');
  const element = h(
    'figure',
    { class: 'chart', 'data-testid': spec.testId, 'data-points': 0 },
    caption,
    plot,
    empty,
  );
  let last = '';
  const chart = lazyPlot(element, plot, (width) => ({
    width,
    height: HEIGHT,
    scales: {
      x: { time: false, range: (_u, min, max) => [Math.min(0, min), Math.max(max, 1)] },
      y: spec.range ? { range: spec.range } : { range: (_u, min, max) => [0, Math.max(max * 1.1, 0.1)] },
    },
    axes: [
      { label: 'model version (0 = initial; +1 per completed round)', incrs: [1, 2, 5, 10, 20, 50, 100], values: (_u, vals) => vals.map((v) => String(v)) },
      { label: spec.label, size: 56 },
    ],
    cursor: { drag: { x: false, y: false } },
    legend: { show: false },
    series: [
      { label: 'model version' },
      {
        label: spec.label,
        stroke: spec.color,
        width: 2,
        points: { show: true, size: 7, fill: spec.color },
      },
    ],
  }));

  return {
    element,
    update(models) {
      const [xs, ys] = points(models, spec);
      const key = `${xs.join(',')}|${ys.join(',')}`;
      if (key === last) return;
      last = key;
      chart.setData([xs, ys], xs.length > 0);
      empty.hidden = xs.length > 0;
      element.setAttribute('data-points', String(xs.length));
      const lastY = ys[ys.length - 1];
      caption.textContent = lastY === undefined ? spec.title : `${spec.title} · latest ${spec.format(lastY)}`;
    },
    destroy() {
      chart.destroy();
    },
  };
}

export interface EpsilonChart {
  readonly element: HTMLElement;
  update(dp: Dp | null): void;
  destroy(): void;
}

const EPSILON_COLOR = '#7c3aed';
const BUDGET_COLOR = '#9ca3af';

/**
 * A DP job's ε after each round whose noisy sum was released, with the job's budget (ε after all
 * its rounds) as a horizontal dashed line across every round. The element carries `data-points`
 * (rounds drawn), `data-budget` and `data-epsilons` (the plotted values, comma-separated) for the
 * browser test; it is hidden for a job without DP.
 */
export function epsilonChart(): EpsilonChart {
  const title = 'Privacy spent (ε) per round';
  const plot = h('div', { class: 'plot' });
  const caption = h('figcaption', {}, title);
  const empty = h('p', { class: 'muted chart-empty' }, 'No round released yet: nothing spent.');
  const legend = h('p', { class: 'muted', 'data-testid': 'dp-budget-key' }, '');
  const element = h('figure', { class: 'chart', 'data-testid': 'dp-epsilon-chart', 'data-points': 0, hidden: true }, caption, plot, empty, legend);
  let last = '';
  const chart = lazyPlot(element, plot, (width) => ({
    width,
    height: HEIGHT,
    scales: {
      x: { time: false },
      y: { range: (_u, _min, max) => [0, Math.max(max * 1.1, 0.1)] },
    },
    axes: [
      { label: 'round', incrs: [1, 2, 5, 10, 20, 50, 100], values: (_u, vals) => vals.map((v) => String(v)) },
      { label: 'ε spent', size: 56 },
    ],
    cursor: { drag: { x: false, y: false } },
    legend: { show: false },
    series: [
      { label: 'round' },
      { label: 'ε after the round', stroke: EPSILON_COLOR, width: 2, points: { show: true, size: 7, fill: EPSILON_COLOR } },
      { label: 'budget (ε after all rounds)', stroke: BUDGET_COLOR, width: 1.5, dash: [6, 4], points: { show: false } },
    ],
  }));

  return {
    element,
    update(dp) {
      element.hidden = dp === null;
      if (!dp) return;
      const rounds = dp.rounds.map((r) => r.index + 1);
      const total = Math.max(dp.roundsTotal ?? 0, rounds[rounds.length - 1] ?? 0, 1);
      // x runs from round 0 (nothing spent) to the job's last round, so the budget line spans the job.
      const xs = [0, ...rounds];
      const ys: (number | null)[] = [0, ...dp.rounds.map((r) => r.epsilon)];
      if (xs[xs.length - 1]! < total) {
        xs.push(total);
        ys.push(null);
      }
      const key = `${xs.join(',')}|${ys.join(',')}|${dp.epsilonBudget}`;
      if (key === last) return;
      last = key;
      chart.setData([xs, ys, xs.map(() => dp.epsilonBudget)]);
      empty.hidden = rounds.length > 0;
      element.setAttribute('data-points', String(rounds.length));
      element.setAttribute('data-budget', String(dp.epsilonBudget));
      element.setAttribute('data-epsilons', dp.rounds.map((r) => r.epsilon).join(','));
      const spent = dp.rounds[dp.rounds.length - 1]?.epsilon ?? 0;
      const delta = dp.delta === null ? '' : ` (δ ${dp.delta})`;
      caption.textContent = `${title} · ${fmtEps(spent)} of ${fmtEps(dp.epsilonBudget)}${delta}`;
      legend.textContent = `Dashed: the job's budget, ε ${fmtEps(dp.epsilonBudget)} after all ${total} rounds. Round 0: nothing spent.`;
    },
    destroy() {
      chart.destroy();
    },
  };
}

/** ε for people: four significant digits. */
const fmtEps = (x: number): string => (x === 0 ? '0' : Number(x.toPrecision(4)).toString());
