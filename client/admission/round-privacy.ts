/**
 * A round's privacy cost, from its manifest, as the privacy budget charges it
 * (privacy-budget.ts): a manifest with a signed `dp` section costs, per round, the KLS21 RDP of
 * its own parameters (shared/protocol/dp-manifest.ts `dpRoundCost`: σ², B, minClients, the
 * padded dimension; never the claimed ε) at each order of the grid. A manifest without a `dp`
 * section is not differentially private.
 */
import type { JobManifest } from '../../shared/protocol/manifest.js';
import { dpRoundCost } from '../../shared/protocol/dp-manifest.js';
import { rdpOnGrid, type RoundPrivacy } from './privacy-budget.js';

/** Whether the round of `manifest` is differentially private, and if so its cost on the grid. */
export function roundPrivacyOf(manifest: JobManifest): RoundPrivacy {
  if (manifest.dp === undefined) return { dp: false };
  return { dp: true, rdp: rdpOnGrid(dpRoundCost(manifest).rdp) };
}
