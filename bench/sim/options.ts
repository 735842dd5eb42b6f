/**
 * What `aegis simulate` is asked to run, whatever the transport (in-process, gRPC, several front
 * ends): its options, and the seeded dropout schedule every transport draws from them, so the
 * same seed drops the same clients in the same phases everywhere.
 */
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { DROP_PHASES, type DropPhase } from './client-host.js';

export interface SimulateOptions {
  clients: number;
  dim: number;
  /** k; default n - 1 (classic SecAgg). */
  neighbors?: number;
  /** t; default floor(k/2) + 1. */
  threshold?: number;
  /** Fraction of clients that drop, 0..1. */
  dropout?: number;
  /** The phase they drop in; 'any' spreads them over all five. */
  dropPhase?: DropPhase | 'any';
  seed?: number;
  clip?: number;
  bits?: number;
  /** Worker threads for the clients; 0 runs everything in the calling thread. Default: cores. */
  workers?: number;
  /** Human progress lines (stderr in the CLI). */
  progress?: (line: string) => void;
  /**
   * `local` (default): coordinator and clients in this process and its worker threads.
   * `grpc`: a real coordinator over loopback gRPC/mTLS here, the clients in `workers` child
   * processes (bench/sim/grpc-sim.ts).
   */
  transport?: 'local' | 'grpc';
  /** grpc only: every phase deadline, ms; default scaled to the round (simulationDeadlines). */
  phaseTimeoutMs?: number;
  /** grpc only: masked-input uploads in flight per client process (0: no limit); default 1. */
  uploadsInFlight?: number;
  /**
   * grpc only: first run one round of another job with the same clients (nobody drops; inputs of
   * another seed), then the measured round — as a job's later rounds run: channels open, tokens
   * fetched, the peers' certificates checked and remembered on both sides.
   */
  warmUp?: boolean;
  /**
   * Aggregation groups (coordinator/round/groups.ts): with more clients than this, the cohort is
   * split into groups of at most this size, each its own SecAgg(+) instance (k and t apply per
   * group, capped at its size), and the round's sum is the sum of the completed groups' sums.
   */
  groupSize?: number;
  /**
   * Grouped rounds: this many groups (picked by the seed) lose every client in `dropPhase`, as
   * when the front end or region serving them fails; the round must still complete from the rest.
   */
  failGroups?: number;
}

/** Which clients drop, and when: a seeded choice of round(P * n) clients. */
export function dropSchedule(n: number, p: number, phase: DropPhase | 'any', seed: number): (DropPhase | null)[] {
  const rng = DeterministicRng.fromSeed('aegis-sim-dropout', seed);
  const count = Math.round(p * n);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const out: (DropPhase | null)[] = new Array(n).fill(null);
  for (const i of order.slice(0, count)) out[i] = phase === 'any' ? DROP_PHASES[rng.nextInt(DROP_PHASES.length)]! : phase;
  return out;
}
