/**
 * The coordinator's side of a DP training round (the manifest's `dp` section): decoding the
 * unmasked sum and the privacy the job's completed rounds have spent.
 *
 * Every client sends its update unweighted, DP-encoded in D = encodedLength words mod 2^bits,
 * and the weight word 1. The SecAgg sum is mod 2^32; 2^bits divides 2^32, so reducing it mod
 * 2^bits gives exactly the sum mod 2^bits. `dpDecodeSum` lifts it to the centred range, scales by
 * γ and un-rotates with the round's public seed (derived from the session id); divided by the
 * weight word's sum (the survivor count) it is the plain mean update FedAvg applies.
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';
import type { WeightedSum } from '../../shared/crypto/quantize.js';
import { dpDecodeSum64, encodedLength } from '../../shared/dp/encode.js';
import { dpEpsilonAfter, dpParamsOfManifest, dpSessionSeed, type DpManifestView } from '../../shared/protocol/dp-manifest.js';

/** The mean update of a completed DP round: the decoded noisy sum over the survivor count. */
export function decodeDpRoundSum(manifest: DpManifestView, sum: Uint32Array, survivors: number, sessionId: Uint8Array | undefined): WeightedSum {
  const p = dpParamsOfManifest(manifest);
  const d = encodedLength(p);
  if (sum.length !== d + 1) throw new AegisError(ErrorCode.InvalidArgument, `the DP round's sum has ${sum.length} words, the manifest wants ${d + 1}`);
  if (!sessionId) throw new AegisError(ErrorCode.InvalidArgument, "the DP round's session id is not on record: its sum cannot be decoded");
  const totalWeight = sum[d]!;
  // Every survivor's weight word is 1: anything else is not the round the manifest describes.
  if (totalWeight !== survivors) throw new AegisError(ErrorCode.InvalidArgument, `the DP round's weight word sums to ${totalWeight}, not its ${survivors} survivors`);
  const decoded = dpDecodeSum64(sum.subarray(0, d), p, dpSessionSeed(sessionId));
  const mean = new Float64Array(decoded.length);
  for (let i = 0; i < mean.length; i++) mean[i] = decoded[i]! / totalWeight;
  return { sum: decoded, totalWeight, mean };
}

/** ε (at the manifest's δ) spent by `completed` rounds of a DP job, from the accountant; 0 for none. */
export const dpEpsilonSpent = (manifest: DpManifestView, completed: number): number => dpEpsilonAfter(manifest, completed);
