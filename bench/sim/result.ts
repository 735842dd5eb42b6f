/**
 * `aegis simulate`'s result (`SimulateResult`, what `--json` prints) and the parts of it that
 * every transport computes the same way: the round's shape and timings, and the comparison of
 * the unmasked sum with the ground truth.
 */
import { decodeRoundSum, type CoordinatorState, type CompletedState } from '../../coordinator/round/index.js';
import { roundSumBits, type RoundParams } from '../../shared/protocol/params.js';
import type { DropPhase } from './client-host.js';
import { bytesReport, mergeCounts, type BytesPerClient, type WireCounts } from './wire-count.js';

/** Per-group figures of a grouped round. */
export interface GroupsReport {
  group_size: number;
  count: number;
  completed: number;
  failed: { group: number; reason: string; at: string; members: number }[];
  sizes: number[];
}

export interface SimulateResult {
  ok: boolean;
  /** How coordinator and clients talked: in-process calls, or gRPC over loopback mTLS. */
  transport: 'local' | 'grpc';
  reason?: string;
  detail?: string;
  /** Phase in which the round aborted. */
  aborted_at?: string;
  exact: boolean;
  max_abs_error: number | null;
  clients: number;
  survivors: number;
  dropped: number;
  neighbors: number;
  threshold: number;
  mode: 'secagg' | 'secagg+';
  dim: number;
  bits: number;
  clip: number;
  seed: number;
  drop_phase: DropPhase | 'any';
  dropout: number;
  workers: number;
  sets: { u1?: number; u2?: number; u3?: number; u4?: number };
  total_weight: number | null;
  refused_messages: number;
  client_aborts: number;
  timings_ms: { setup: number; client_mean: number; client_max: number; server_unmask: number; total: number };
  prg_bytes: number;
  /**
   * Mean payload bytes a client sent per phase (protobuf envelopes of the protocol messages,
   * wire-count.ts; each phase's mean over the clients that sent its message) and their sum.
   */
  bytes_per_client: BytesPerClient;
  /** The same for the messages a client was sent (each counted in the phase it closes). */
  bytes_down_per_client: BytesPerClient;
  /** r: the bits of the round's sum, which each masked word travels at. */
  sum_bits: number;
  /** The masked upload's floor m·r/8 bytes, beside `bytes_per_client.masked`. */
  masked_floor_bytes: number;
  /**
   * gRPC: the coordinator's process CPU time (user + system) from launch to outcome, divided by
   * n, ms. null in process, where the clients' worker threads share the process.
   */
  coordinator_cpu_ms_per_client: number | null;
  /** grpc `--warm-up`: the measured round is the clients' second (a round of another job ran first with the same clients). */
  warm_up: boolean;
  /**
   * grpc: the peers' certificates the clients parsed and checked against the CA in the round (a
   * client checks each neighbour's once, then remembers it); null in process, where there are none.
   */
  peer_certificate_checks: number | null;
  peak_rss_mb: number;
  /** Present for a grouped round. */
  groups?: GroupsReport;
}

/** `x` rounded to tenths (timings in ms with one decimal). */
const toTenths = (x: number): number => Math.round(x * 10) / 10;

/** What a client host (worker thread or client process) reports after the round. */
export interface ClientStats {
  clientMs: number[];
  prgWords: number;
  aborted: readonly unknown[];
  /** Bytes of the messages its clients sent and were sent, by phase. */
  wire: WireCounts;
}

/** The fields every transport fills the same way; the outcome, exactness, survivors and peak RSS each fills itself. */
type CommonFields = Omit<SimulateResult, 'ok' | 'reason' | 'detail' | 'aborted_at' | 'exact' | 'max_abs_error' | 'survivors' | 'total_weight' | 'peak_rss_mb'>;

/** The common fields, from the round's parameters, its final state and the client hosts' reports. */
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
  /** The coordinator's CPU time over the round, ms, where it is measured alone (gRPC). */
  coordinatorCpuMs?: number;
  warmUp?: boolean;
  /** gRPC: peers' certificates the clients checked in the round. */
  certificateChecks?: number;
}): CommonFields {
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
      setup: toTenths(a.setupMs),
      client_mean: toTenths(clientMs.reduce((x, y) => x + y, 0) / Math.max(1, clientMs.length)),
      client_max: toTenths(Math.max(0, ...clientMs)),
      server_unmask: toTenths(a.unmaskMs),
      total: toTenths(a.totalMs),
    },
    prg_bytes: (stats.reduce((n, s) => n + s.prgWords, 0) + final.stats.prgWords) * 4,
    coordinator_cpu_ms_per_client: a.coordinatorCpuMs === undefined ? null : Math.round((a.coordinatorCpuMs / a.clients) * 100) / 100,
    warm_up: a.warmUp === true,
    peer_certificate_checks: a.certificateChecks ?? null,
    ...bytesReport(
      mergeCounts(stats.map((s) => s.wire)),
      params.dim,
      roundSumBits(final.cfg),
    ),
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
  const decoded = decodeRoundSum(final.sum, final.survivors.length, final.cfg.params).sum;
  for (let i = 0; i < xSum.length; i++) maxErr = Math.max(maxErr, Math.abs(decoded[i]! - xSum[i]!));
  return { exact, maxErr };
}
