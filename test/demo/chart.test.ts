import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { renderChart, writeChart } from '../../bench/demo/chart.js';

const ENTITY = /&(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/g;
const TAG = /^<(\/)?([A-Za-z_][\w.:-]*)((?:\s+[A-Za-z_][\w.:-]*="[^"<]*")*)\s*(\/)?>$/;

/** A small well-formedness check: one root, balanced tags, quoted attributes, valid entities. */
function wellFormed(xml: string): { ok: true } | { ok: false; why: string } {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const tokens = body.match(/<[^<>]*>|[^<]+/g) ?? [];
  if (tokens.join('') !== body) return { ok: false, why: 'stray < or >' };
  const stack: string[] = [];
  let roots = 0;
  for (const t of tokens) {
    if (t.startsWith('<')) {
      const m = TAG.exec(t);
      if (!m) return { ok: false, why: `bad tag ${t}` };
      const [, close, name, attrs, selfClose] = m;
      if ((attrs ?? '').replace(ENTITY, '').includes('&')) return { ok: false, why: `bad entity in ${t}` };
      const names = [...(attrs ?? '').matchAll(/([\w.:-]+)=/g)].map((a) => a[1]);
      if (new Set(names).size !== names.length) return { ok: false, why: `duplicate attribute in ${t}` };
      if (close) {
        if (selfClose || attrs) return { ok: false, why: `bad end tag ${t}` };
        if (stack.pop() !== name) return { ok: false, why: `unbalanced ${t}` };
      } else {
        if (stack.length === 0) roots++;
        if (!selfClose) stack.push(name!);
      }
    } else {
      if (t.replace(ENTITY, '').includes('&') || t.includes('>')) return { ok: false, why: `bad text ${t}` };
      if (stack.length === 0 && t.trim() !== '') return { ok: false, why: 'text outside the root' };
    }
  }
  if (stack.length > 0) return { ok: false, why: `unclosed ${stack.join(',')}` };
  if (roots !== 1) return { ok: false, why: `${roots} root elements` };
  return { ok: true };
}

const run = (n: number): { round: number; accuracy: number; loss: number }[] =>
  Array.from({ length: n }, (_, i) => ({ round: i + 1, accuracy: 1 - 0.9 / (i + 1.5), loss: 2.3 / (i + 1) }));
const count = (s: string, re: RegExp): number => (s.match(re) ?? []).length;

describe('training chart', () => {
  it('the checker itself rejects broken XML', () => {
    expect(wellFormed('<svg><g></svg>').ok).toBe(false);
    expect(wellFormed('<svg><text>a & b</text></svg>').ok).toBe(false);
    expect(wellFormed('<svg><text>a < b</text></svg>').ok).toBe(false);
    expect(wellFormed('<svg a="1" a="2"/>').ok).toBe(false);
    expect(wellFormed('<svg/><svg/>').ok).toBe(false);
    expect(wellFormed('<svg><text>a &amp; b</text></svg>').ok).toBe(true);
  });

  it.each([1, 10, 150])('draws one accuracy and one loss point per round (%i rounds), well-formed', (n) => {
    const svg = renderChart(run(n));
    expect(wellFormed(svg)).toEqual({ ok: true });
    expect(svg.startsWith('<?xml')).toBe(true);
    expect(count(svg, /<circle class="accuracy-point"/g)).toBe(n);
    expect(count(svg, /<circle class="loss-point"/g)).toBe(n);
    const last = run(n)[n - 1]!;
    expect(svg).toContain(`final accuracy ${(last.accuracy * 100).toFixed(1)}% (after ${n} rounds)`);
    expect(svg).toContain('>test accuracy (%)</text>');
    expect(svg).toContain('>loss</text>');
    expect(svg).toContain('>100%</text>');
    if (n > 1) {
      const polyPoints = [...svg.matchAll(/<polyline[^>]*points="([^"]*)"/g)].map((m) => m[1]!.split(' ').length);
      expect(polyPoints).toEqual([n, n]);
    }
  });

  it('labels the x axis with round numbers', () => {
    const svg = renderChart(run(10));
    for (const r of [2, 4, 6, 8, 10]) expect(svg).toMatch(new RegExp(`text-anchor="middle">${r}</text>`));
  });

  it('escapes the title', () => {
    const svg = renderChart(run(3), { title: 'a <b> & "c" \'d\'' });
    expect(wellFormed(svg)).toEqual({ ok: true });
    expect(svg).toContain('a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#39;');
    expect(svg).not.toContain('<b>');
  });

  it('says "no rounds" for an empty run', () => {
    const svg = renderChart([], { title: '<&>' });
    expect(wellFormed(svg)).toEqual({ ok: true });
    expect(svg).toContain('>no rounds</text>');
    expect(svg).toContain('&lt;&amp;&gt;');
    expect(svg).not.toContain('<circle');
  });

  it('leaves gaps for non-finite values and refuses bad sizes', () => {
    const pts = run(5);
    pts[2] = { ...pts[2]!, loss: Number.NaN };
    const svg = renderChart(pts, { width: 400, height: 300 });
    expect(wellFormed(svg)).toEqual({ ok: true });
    expect(count(svg, /<circle class="loss-point"/g)).toBe(4);
    expect(svg).not.toContain('NaN');
    expect(() => renderChart(pts, { width: 10 })).toThrow(/width/);
    expect(() => renderChart(pts, { height: Number.NaN })).toThrow(/height/);
  });

  it('writes the file, creating directories', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'aegis-chart-'));
    try {
      const path = join(dir, 'a', 'b', 'chart.svg');
      expect(await writeChart(path, run(4), { title: 'demo' })).toBe(path);
      const text = await readFile(path, 'utf8');
      expect(text).toBe(renderChart(run(4), { title: 'demo' }));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('training chart axes', () => {
  const yLabels = (svg: string): string[] => [...svg.matchAll(/text-anchor="end">([^<]*)<\/text>/g)].map((m) => m[1]!);

  it('ends the loss axis on a labelled tick above the largest loss, without repeated labels', () => {
    const svg = renderChart([{ round: 1, accuracy: 0.4, loss: 2.3 }, { round: 2, accuracy: 0.6, loss: 1.1 }]);
    const loss = yLabels(svg).filter((l) => !l.endsWith('%'));
    expect(new Set(loss).size).toBe(loss.length);
    expect(Math.max(...loss.map(Number))).toBeGreaterThanOrEqual(2.3);
  });

  it('labels only the real round when there is one point', () => {
    const svg = renderChart([{ round: 7, accuracy: 0.5, loss: 1 }]);
    const xs = [...svg.matchAll(/text-anchor="middle">(\d+)<\/text>/g)].map((m) => m[1]);
    expect(new Set(xs)).toEqual(new Set(['7']));
  });
});
