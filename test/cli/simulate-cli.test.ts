/**
 * `aegis simulate` end to end: the built CLI (dist/, made by `npm run build`, which `npm test`
 * runs first) in a child process, clients in real worker threads.
 */
import { describe, expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../../dist/bin/aegis.js', import.meta.url));

interface Run {
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

function aegis(...args: string[]): Run {
  if (!existsSync(cli)) throw new Error('dist/ is missing: run "npm run build" first');
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 180_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** The one JSON document on stdout; a run that printed none fails with what it did print. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a parsed JSON document, checked field by field below
function json(r: Run): any {
  try {
    return JSON.parse(r.stdout.trim());
  } catch {
    throw new Error(`no JSON on stdout (exit ${r.status}, signal ${r.signal}); stderr: ${r.stderr.slice(-400)}`);
  }
}

describe('aegis simulate', () => {
  test('a SecAgg+ round with dropouts over worker threads prints one exact JSON result on stdout and progress on stderr', () => {
    const r = aegis('simulate', '--json', '--clients', '40', '--dim', '3000', '--neighbors', '11', '--dropout', '0.1', '--drop-phase', 'masked', '--workers', '2', '--seed', '7');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const out = json({ ...r, stdout: lines[0]! });
    expect(out).toMatchObject({ ok: true, exact: true, clients: 40, survivors: 36, neighbors: 11, threshold: 6, workers: 2, mode: 'secagg+' });
    expect(out.max_abs_error).toBeGreaterThan(0);
    expect(out.max_abs_error).toBeLessThan(40 * (2 / 65535));
    for (const k of ['client_mean', 'client_max', 'server_unmask', 'total']) expect(out.timings_ms[k]).toBeGreaterThan(0);
    expect(out.prg_bytes).toBeGreaterThan(36 * 12 * 3001 * 4);
    expect(out.peak_rss_mb).toBeGreaterThan(0);
    expect(r.stderr).toContain('round completed');
    expect(r.stderr).not.toContain('{');
  });

  test('classic SecAgg is the default degree and the same seed gives the same survivors and weight', () => {
    const a = json(aegis('simulate', '--json', '--clients', '12', '--dim', '500', '--dropout', '0.25', '--seed', '3', '--workers', '2'));
    const b = json(aegis('simulate', '--json', '--clients', '12', '--dim', '500', '--dropout', '0.25', '--seed', '3', '--workers', '0'));
    expect(a).toMatchObject({ ok: true, exact: true, mode: 'secagg', neighbors: 11 });
    expect(b.survivors).toBe(a.survivors);
    expect(b.total_weight).toBe(a.total_weight);
    expect(b.sets).toEqual(a.sets);
  });

  test('a round left with fewer than t survivors prints ok:false with a typed reason and exits non-zero', () => {
    const r = aegis('simulate', '--json', '--clients', '20', '--dim', '100', '--neighbors', '6', '--dropout', '0.9', '--drop-phase', 'share', '--workers', '0');
    expect(r.status).not.toBe(0);
    const out = json(r);
    expect(out).toMatchObject({ ok: false, exact: false, reason: 'too-few-clients', aborted_at: 'share-keys' });
  });

  test('a SecAgg+ round whose neighbourhoods thin out below t after masking aborts before unmasking with insufficient-shares', () => {
    const r = aegis('simulate', '--json', '--clients', '20', '--dim', '100', '--neighbors', '6', '--dropout', '0.6', '--drop-phase', 'consistency', '--workers', '0');
    expect(r.status).not.toBe(0);
    const out = json(r);
    expect(out).toMatchObject({ ok: false, reason: 'insufficient-shares', aborted_at: 'consistency-check' });
  });

  test('parameters that could overflow 32 bits are refused with a code and a hint', () => {
    const r = aegis('simulate', '--json', '--clients', '300', '--dim', '10', '--bits', '24', '--workers', '0');
    expect(r.status).toBe(2);
    const out = json(r);
    expect(out.ok).toBe(false);
    expect(out.error.code).toBe('overflow-risk');
    expect(out.error.hint).toMatch(/n \* 2\^b < 2\^32/);
  });

  test('an unknown drop phase is refused before anything runs', () => {
    const r = aegis('simulate', '--drop-phase', 'sometimes');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/drop-phase/);
  });
});
