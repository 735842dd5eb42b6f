/**
 * The privacy a DP job has spent, as the coordinator reports it (round status, the dashboard,
 * `/metrics`): the accountant's ε after each round whose noisy sum was released, against the ε the
 * whole job spends after all its rounds. Computed from the manifest's own parameters
 * (`dpEpsilonAfter`), never from its claimed `epsilon`.
 *
 * A round is charged when its sum was unmasked (the round completed), whether or not its model was
 * then published: a model held back by the poisoning check or the evaluator was still computed
 * from a released sum. An aborted round released nothing and costs nothing here (the clients
 * charge themselves earlier and more: every round they sent a masked input to,
 * docs/differential-privacy.md "The client's budget").
 */
import { dpEpsilonAfter, type DpManifestView } from '../../shared/protocol/dp-manifest.js';
import type { Job } from './types.js';

/** ε after one charged round of a DP job. */
export interface DpRoundEpsilon {
  /** The round's index (0-based, as the Admin replies carry it). */
  index: number;
  /** ε (at the manifest's δ) after this round and every charged round before it. */
  epsilon: number;
}

/** A DP job's privacy: its mechanism, what it has spent and what it will spend. */
export interface DpJobStatus {
  mechanism: string;
  delta: number;
  noiseMultiplier: number;
  clip: number;
  minClients: number;
  /** ε the manifest claims for all its rounds (at least the accountant's; checked at launch). */
  epsilonClaimed: number;
  /** ε after all the manifest's rounds, from the accountant: the job's budget. */
  epsilonBudget: number;
  /** ε after the rounds charged so far (0 before the first), from the accountant. */
  epsilonSpent: number;
  /** Rounds whose noisy sum was released. */
  roundsCharged: number;
  /** The manifest's rounds. */
  roundsTotal: number;
  /** ε after each charged round, in round order. */
  rounds: DpRoundEpsilon[];
}

/**
 * ε after k rounds of a manifest, computed once per manifest object and k (one accountant run
 * takes milliseconds; status and scrapes ask again and again).
 */
const epsilonCache = new WeakMap<DpManifestView, Map<number, number>>();

export function cachedEpsilonAfter(manifest: DpManifestView, rounds: number): number {
  let byRounds = epsilonCache.get(manifest);
  if (!byRounds) epsilonCache.set(manifest, (byRounds = new Map()));
  let eps = byRounds.get(rounds);
  if (eps === undefined) byRounds.set(rounds, (eps = dpEpsilonAfter(manifest, rounds)));
  return eps;
}

/** A job's privacy, or undefined for a job without a `dp` section. */
export function dpStatusOf(job: Pick<Job, 'manifest' | 'rounds'>): DpJobStatus | undefined {
  const m = job.manifest;
  const dp = m.dp;
  if (!dp) return undefined;
  const charged = job.rounds.filter((r) => r.outcome?.ok).sort((a, b) => a.index - b.index);
  const rounds = charged.map((r, k) => ({ index: r.index, epsilon: cachedEpsilonAfter(m, k + 1) }));
  return {
    mechanism: dp.mechanism,
    delta: dp.delta,
    noiseMultiplier: dp.noiseMultiplier,
    clip: dp.clip,
    minClients: dp.minClients,
    epsilonClaimed: dp.epsilon,
    epsilonBudget: cachedEpsilonAfter(m, m.rounds),
    epsilonSpent: rounds.length === 0 ? 0 : rounds[rounds.length - 1]!.epsilon,
    roundsCharged: rounds.length,
    roundsTotal: m.rounds,
    rounds,
  };
}

/** ε spent and budget of each DP job among `jobs` (for the label-free DP gauges on /metrics). */
export function dpSpendingOf(jobs: readonly Job[], cancelled: (jobId: string) => boolean): { spent: number; budget: number; running: boolean }[] {
  return jobs.flatMap((job) => {
    const d = dpStatusOf(job);
    // A DP job is a training job: it runs until its training state leaves `running`.
    return d ? [{ spent: d.epsilonSpent, budget: d.epsilonBudget, running: job.training?.state === 'running' && !cancelled(job.jobId) }] : [];
  });
}
