/**
 * The parts of `aegis simulate`'s result that every transport computes the same way: the
 * round's shape and timings, and the comparison of the unmasked sum with the ground truth.
 */
import type { CoordinatorState, CompletedState } from '../../coordinator/round/index.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import type { DropPhase } from './client-host.js';
import type { SimulateResult } from './simulate.js';

export const round1 = (x: number): number => Math.round(x * 10) / 10;

/** What a client host (worker thread or client process) reports after the round. */
export interface ClientStats {
  clientMs: number[];
  prgWords: number;
  aborted: readonly unknown[];
}

type Base = Omit<SimulateResult, 'ok' | 'reason' | 'detail' | 'aborted_at' | 'exact' | 'max_abs_error' | 'survivors' | 'total_weight' | 'peak_rss_mb'>;

export function resultBase(a: {
  transport: SimulateResult['transport'];
  clients: number;
  params: RoundParams;
  schedule: readonly (DropPhase | null)[];
  seed: number;
  dropPhase: DropPhase | 'any';
  dropout: number;
  workers: number;
  final: CoordinatorState;
  refused: number;
  stats: readonly ClientStats[];
  setupMs: number;
  unmaskMs: number;
  totalMs: number;
}): Base {
  const { params, final, stats } = a;
  const clientMs = stats.flatMap((s) => s.clientMs);
  return {
    transport: a.transport,
    clients: a.clients,
    dropped: a.schedule.filter(Boolean).length,
    neighbors: params.neighbors,
    threshold: params.threshold,
    mode: params.neighbors >= params.cohort - 1 ? 'secagg' : 'secagg+',
    dim: params.dim,
    bits: params.bits,
    clip: params.clip,
    seed: a.seed,
    drop_phase: a.dropPhase,
    dropout: a.dropout,
    workers: a.workers,
    sets: { u1: final.stats.u1, u2: final.stats.u2, u3: final.stats.u3, u4: final.stats.u4 },
    refused_messages: a.refused,
    client_aborts: stats.reduce((n, s) => n + s.aborted.length, 0),
    timings_ms: {
      setup: round1(a.setupMs),
      client_mean: round1(clientMs.reduce((x, y) => x + y, 0) / Math.max(1, clientMs.length)),
      client_max: round1(Math.max(0, ...clientMs)),
      server_unmask: round1(a.unmaskMs),
      total: round1(a.totalMs),
    },
    prg_bytes: (stats.reduce((n, s) => n + s.prgWords, 0) + final.stats.prgWords) * 4,
  };
}

/**
 * `exact`: the unmasked integer sum equals `qSum` word for word (and `survivorsMatch`);
 * `maxErr`: the largest difference between the decoded sum and the float sum `xSum`.
 */
export function compareToTruth(final: CompletedState, qSum: Uint32Array, xSum: Float64Array, survivorsMatch: boolean): { exact: boolean; maxErr: number } {
  let exact = survivorsMatch;
  for (let i = 0; exact && i < qSum.length; i++) if (qSum[i] !== final.sum[i]) exact = false;
  let maxErr = 0;
  for (let i = 0; i < xSum.length; i++) maxErr = Math.max(maxErr, Math.abs(final.result.sum[i]! - xSum[i]!));
  return { exact, maxErr };
}
