/**
 * Phase 4, Unmasking. Takes from each U4 member exactly the shares it was asked for. As soon as
 * every secret it needs has t shares — b_v for each v in U3, s_sk_v for each v that dropped
 * after sharing (U2 \ U3) — it reconstructs them (a reconstructed s_sk must match the s_pk its
 * owner advertised), removes the self masks PRG(b_v) and the pairwise masks the dropped clients
 * left in their neighbours' inputs, and decodes the sum. Too few shares abort the round with a
 * typed reason; nothing partial is published.
 *
 * Mask removal is the coordinator's heavy step, so it is split: `plan` turns the shares into a
 * list of keystreams (`MaskJob`s), `applyMaskJobs` expands any subset of them into a partial sum
 * (a worker thread, later a queue worker), and `finish` adds the partials in. `close` does all
 * three in the calling thread.
 */
import { reduceInto } from '../../shared/crypto/bitpack.js';
import { expandInto } from '../../shared/crypto/prg.js';
import { combine, decodeShareValue, type Share } from '../../shared/crypto/shamir.js';
import { addInto, VectorAccumulator } from '../../shared/crypto/vecops.js';
import { x25519PrivateKeyObject, x25519PublicFromPrivate } from '../../shared/crypto/x25519.js';
import { AegisError, ErrorCode, isAegisError } from '../../shared/errors.js';
import { pairwiseMaskKey, selfMaskKey } from '../../shared/protocol/keys.js';
import type { RevealedShare, UnmaskResponse } from '../../shared/protocol/messages.js';
import { maskSign } from '../../shared/protocol/session.js';
import { AbortReason } from '../../shared/protocol/vocabulary.js';
import { abortRound } from './aborted.js';
import { assertSession, refuseResend } from './checks.js';
import { roundSumBits } from '../../shared/protocol/params.js';
import { sameBytes } from '../../shared/bytes.js';
import { completeRound } from './completed.js';
import type { CoordinatorTransition, MaskJob, UnmaskingState } from './types.js';

function assertExactly(got: RevealedShare[], want: readonly string[], what: string): void {
  if (got.length !== want.length) throw new AegisError(ErrorCode.InvalidArgument, `${what}: expected ${want.length} shares`);
  const w = new Set(want);
  for (const s of got) {
    if (!w.delete(s.owner)) throw new AegisError(ErrorCode.InvalidArgument, `${what}: a share that was not asked for, or twice`);
    decodeShareValue(s.value);
  }
}

/** Secrets still short of t shares, given the responses so far. */
function missingSecrets(state: UnmaskingState): number {
  const t = state.cfg.params.threshold;
  const counts = new Map<string, number>();
  for (const r of state.responses.values()) {
    for (const s of r.selfMaskShares) counts.set(`b:${s.owner}`, (counts.get(`b:${s.owner}`) ?? 0) + 1);
    for (const s of r.keyShares) counts.set(`s:${s.owner}`, (counts.get(`s:${s.owner}`) ?? 0) + 1);
  }
  const inU3 = new Set(state.u3);
  let missing = 0;
  for (const v of state.u3) if ((counts.get(`b:${v}`) ?? 0) < t) missing++;
  for (const v of state.u2) if (!inU3.has(v) && (counts.get(`s:${v}`) ?? 0) < t) missing++;
  return missing;
}

export function receive(state: UnmaskingState, msg: UnmaskResponse): CoordinatorTransition {
  assertSession(msg.sessionId, state.roster.sessionId);
  if (!state.expected.has(msg.clientId)) throw new AegisError(ErrorCode.UnknownSender, 'sender is not in U4');
  const prior = state.responses.get(msg.clientId);
  if (prior) {
    const same = (a: RevealedShare[], b: RevealedShare[]): boolean => a.length === b.length && a.every((s, i) => s.owner === b[i]!.owner && sameBytes(s.value, b[i]!.value));
    refuseResend(msg.type, same(prior.keyShares, msg.keyShares) && same(prior.selfMaskShares, msg.selfMaskShares));
  }
  const req = state.requests.get(msg.clientId)!;
  assertExactly(msg.keyShares, req.keyShareOf, 'key shares');
  assertExactly(msg.selfMaskShares, req.selfMaskShareOf, 'self-mask shares');
  state.responses.set(msg.clientId, msg);
  return { next: state, outbound: [] };
}

/** Every member of U4 has answered, or every secret needed already has t shares. */
export const complete = (state: UnmaskingState): boolean => state.responses.size >= state.u4.length || missingSecrets(state) === 0;

export type UnmaskPlan = { jobs: MaskJob[] } | { aborted: CoordinatorTransition };

export function plan(state: UnmaskingState): UnmaskPlan {
  const { roster, cfg } = state;
  const t = cfg.params.threshold;
  const sid = roster.sessionId;
  const bShares = new Map<string, Share[]>();
  const sShares = new Map<string, Share[]>();
  for (const r of state.responses.values()) {
    const x = roster.xOf(r.clientId);
    for (const s of r.selfMaskShares) (bShares.get(s.owner) ?? bShares.set(s.owner, []).get(s.owner)!).push({ x, y: decodeShareValue(s.value) });
    for (const s of r.keyShares) (sShares.get(s.owner) ?? sShares.set(s.owner, []).get(s.owner)!).push({ x, y: decodeShareValue(s.value) });
  }
  const jobs: MaskJob[] = [];
  const inU3 = new Set(state.u3);
  try {
    for (const v of state.u3) {
      const b = combine(bShares.get(v) ?? [], t);
      jobs.push({ key: selfMaskKey(sid, b, v), sign: -1 });
    }
    for (const v of state.u2) {
      if (inU3.has(v)) continue;
      const sSk = combine(sShares.get(v) ?? [], t);
      if (Buffer.compare(x25519PublicFromPrivate(sSk), roster.entries.get(v)!.sPk) !== 0) {
        return { aborted: abortRound(state, AbortReason.ReconstructionMismatch, 'a reconstructed mask key does not match its advertised public key') };
      }
      const sSkObj = x25519PrivateKeyObject(sSk);
      for (const w of roster.neighboursOf(v)) {
        if (!inU3.has(w)) continue;
        // w added maskSign(w, v) * PRG(s_wv) to its input; take it out again.
        jobs.push({ key: pairwiseMaskKey(sid, sSkObj, roster.publicKey(w, 's'), v, w), sign: maskSign(w, v) === 1 ? -1 : 1 });
      }
    }
  } catch (err) {
    if (isAegisError(err, ErrorCode.InsufficientShares)) return { aborted: abortRound(state, AbortReason.InsufficientShares, 'too few shares to reconstruct a secret') };
    if (isAegisError(err, ErrorCode.MalformedShares)) return { aborted: abortRound(state, AbortReason.ReconstructionMismatch, 'shares do not reconstruct a valid secret') };
    throw err;
  }
  return { jobs };
}

/** acc += the keystreams of `jobs`, each with its sign. */
export function applyMaskJobs(acc: VectorAccumulator, jobs: readonly MaskJob[]): void {
  for (const j of jobs) expandInto(acc, j.key, j.sign);
}

/** Adds the partial sums of all mask jobs into the running sum and completes the round. */
export function finish(state: UnmaskingState, partials: readonly Uint32Array[], jobCount: number): CoordinatorTransition {
  const sum = state.sum.slice();
  for (const p of partials) addInto(sum, p);
  // The masks cancel mod 2^r (2^r divides 2^32): the sum's low r bits are the survivors' sum.
  reduceInto(sum, roundSumBits(state.cfg));
  return { next: completeRound(state, sum, jobCount * (state.cfg.params.dim + 1)), outbound: [] };
}

export function close(state: UnmaskingState): CoordinatorTransition {
  const p = plan(state);
  if ('aborted' in p) return p.aborted;
  const acc = new VectorAccumulator(state.cfg.params.dim + 1);
  applyMaskJobs(acc, p.jobs);
  return finish(state, [acc.vector], p.jobs.length);
}
