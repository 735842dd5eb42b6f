/**
 * n_min enforcement: a DP manifest's parse makes round.threshold >= dp.minClients, and a client
 * signs U3 (the inputs in the sum, after which it sends its unmasking shares) only when U3 holds
 * at least the threshold. So a coordinator that tries to complete a DP round with fewer than
 * minClients survivors gets an abort from every honest client, never a signature or a share.
 * Real client state machines, a real honest round (test/support/round-fixture.ts) run with the
 * DP manifest's threshold, its consistency request then tampered with as a hostile coordinator would.
 */
import { describe, expect, it } from '@jest/globals';
import { handle } from '../../client/round/index.js';
import { parseManifest } from '../../shared/protocol/manifest.js';
import { AbortReason, Phase } from '../../shared/protocol/vocabulary.js';
import { dpSection } from '../support/dp.js';
import { manifest } from '../support/cluster.js';
import { HonestRound } from '../support/round-fixture.js';

const N = 6;
const MIN = 4;
const dp = dpSection({ dim: 8, minClients: MIN, maxClients: N });
const model = { format: 'safetensors', tensors: [{ name: 'w', shape: [8], dtype: 'F32' }], initialWeightsSha256: '0'.repeat(64) };

describe('a DP round cannot complete with fewer than dp.minClients survivors', () => {
  const { manifest: m } = parseManifest(manifest({ jobId: 'dp-nmin', round: { dim: 8, cohort: N, threshold: MIN, clip: 4, bits: 16 }, model, training: {}, dp } as never));
  const fx = new HonestRound({ n: N, t: m.round.threshold, dim: 8 });
  const me = fx.u3[0]!;

  it('the manifest sets the threshold the client checks to at least minClients', () => {
    expect(m.round.threshold).toBeGreaterThanOrEqual(m.dp!.minClients);
    expect(fx.params.threshold).toBe(MIN);
  });

  it('a U3 of minClients − 1 clients (this one included) makes the client abort, signing nothing', () => {
    const msg = fx.message('consistency-request', me);
    msg.u3 = [me, ...msg.u3.filter((id) => id !== me)].slice(0, MIN - 1);
    const t = handle(fx.stateBefore('consistency-request', me), msg);
    expect(t.next).toMatchObject({ phase: Phase.Aborted, reason: AbortReason.TooFewClients });
    expect(t.outbound).toEqual([]);
  });

  it('(control) a U3 of exactly minClients is signed', () => {
    const msg = fx.message('consistency-request', me);
    msg.u3 = [me, ...msg.u3.filter((id) => id !== me)].slice(0, MIN);
    const t = handle(fx.stateBefore('consistency-request', me), msg);
    expect(t.outbound.map((o) => o.type)).toEqual(['consistency-signature']);
  });
});
