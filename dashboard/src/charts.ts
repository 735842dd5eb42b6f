/**
 * Accuracy and loss per round (round 0 = the initial model) as uPlot line charts. Each chart is
 * made once per job view and updated in place with setData as new model versions arrive; its
 * element carries `data-points` = the number of points drawn (the browser test reads it).
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { ModelVersion } from './api.js';
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
  let chart: uPlot | null = null;
  const width = (): number => Math.max(280, Math.floor(plot.clientWidth || element.clientWidth || 480));

  const make = (data: uPlot.AlignedData): uPlot =>
    new uPlot(
      {
        width: width(),
        height: 220,
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
      },
      data,
      plot,
    );

  const resize = new ResizeObserver(() => {
    if (chart) chart.setSize({ width: width(), height: 220 });
  });
  resize.observe(element);

  return {
    element,
    update(models) {
      const [xs, ys] = points(models, spec);
      const key = `${xs.join(',')}|${ys.join(',')}`;
      if (key === last) return;
      last = key;
      const data: uPlot.AlignedData = [xs, ys];
      if (chart) chart.setData(data);
      else if (xs.length > 0) chart = make(data);
      empty.hidden = xs.length > 0;
      element.setAttribute('data-points', String(xs.length));
      const lastY = ys[ys.length - 1];
      caption.textContent = lastY === undefined ? spec.title : `${spec.title} · latest ${spec.format(lastY)}`;
    },
    destroy() {
      resize.disconnect();
      chart?.destroy();
      chart = null;
    },
  };
}
