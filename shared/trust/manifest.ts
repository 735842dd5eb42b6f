/**
 * Signed job manifests: a manifest's exact JSON bytes in a DSSE envelope signed by a publisher
 * key (Ed25519). The manifest hash — what binds a round's session id — is the SHA-256 of those
 * bytes, so clients holding different manifests cannot complete one round together.
 */
import { AegisError, ErrorCode } from '../errors.js';
import { parseManifest, type JobManifest } from '../protocol/manifest.js';
import { dpEpsilonAfter } from '../protocol/dp-manifest.js';
import { MANIFEST_PAYLOAD_TYPE, parseEnvelope, signEnvelope, verifyEnvelope, type DsseEnvelope } from './dsse.js';

export const PUBLISHER_KEY_LABEL = 'aegis-publisher-key';

/** Signs manifest bytes after checking them (a publisher never signs an invalid manifest). */
export function signManifest(manifestJson: Uint8Array, seeds: readonly Uint8Array[], now = new Date()): DsseEnvelope {
  parseManifest(manifestJson, now);
  return signEnvelope(MANIFEST_PAYLOAD_TYPE, manifestJson, seeds);
}

export interface SignedManifest {
  manifest: JobManifest;
  /** The signed bytes. */
  manifestJson: Uint8Array;
  /** SHA-256 of the signed bytes. */
  hash: Uint8Array;
  /** Key ids of the publishers whose signatures verified. */
  signers: string[];
}

/**
 * Verifies a signed manifest: strict envelope, a valid signature by a key `publisherKey` trusts
 * (unknown or revoked → `unknown-key`; forged or altered → `bad-signature`), a valid manifest
 * that has not expired (`expired`), and — given the highest revision of this job the caller
 * has accepted — not an older one (`rollback`).
 */
export function verifySignedManifest(
  envelope: Uint8Array | string | DsseEnvelope,
  publisherKey: (keyid: string) => Uint8Array | undefined,
  opts: { now?: Date; seenRevision?: number } = {},
): SignedManifest {
  const env = typeof envelope === 'object' && !(envelope instanceof Uint8Array) ? envelope : parseEnvelope(envelope);
  const { payload, signers } = verifyEnvelope(env, MANIFEST_PAYLOAD_TYPE, publisherKey);
  const { manifest, hash } = parseManifest(payload, opts.now ?? new Date());
  if (opts.seenRevision !== undefined && manifest.revision < opts.seenRevision) {
    throw new AegisError(ErrorCode.Rollback, `revision ${manifest.revision} of job '${manifest.jobId}' is older than revision ${opts.seenRevision}, already accepted`);
  }
  return { manifest, manifestJson: payload, hash, signers };
}

/** The signed manifest's fields in plain words (aegis manifest inspect). */
export function describeManifest(m: JobManifest, signers: { keyid: string; name?: string; verified?: boolean }[]): string[] {
  const r = m.round;
  const lines = [
    `job ${m.jobId}, revision ${m.revision}: ${m.rounds} round${m.rounds === 1 ? '' : 's'}`,
    `valid from ${m.issuedAt} until ${m.expiresAt}`,
    `secure aggregation: ${r.dim} values per client, cohort ${r.cohort}, threshold ${r.threshold}, ${r.neighbors >= r.cohort - 1 ? 'classic SecAgg (everyone masks with everyone)' : `SecAgg+ with ${r.neighbors} neighbours`}, values clipped to ±${r.clip} and quantized to ${r.bits} bits`,
    `phase deadlines: advertise ${m.deadlines.advertiseMs} ms, share ${m.deadlines.shareMs} ms, masked input ${m.deadlines.maskedMs} ms, consistency ${m.deadlines.consistencyMs} ms, unmask ${m.deadlines.unmaskMs} ms`,
  ];
  if (m.model && m.training) {
    const t = m.training;
    lines.push(
      `model: ${m.model.format}, initial weights sha256 ${m.model.initialWeightsSha256}`,
      `local training: ${t.epochs} epoch${t.epochs === 1 ? '' : 's'}, batch ${t.batchSize}, ${t.optimizer} at learning rate ${t.learningRate}, loss ${t.loss}, features '${t.features}', label '${t.label}'; up to ${t.maxAbortedRounds} aborted rounds in a row`,
    );
  } else {
    lines.push('no model: clients aggregate the vectors they are given');
  }
  if (m.dp) {
    const d = m.dp;
    lines.push(
      `differential privacy: ${d.mechanism}, updates clipped to L2 norm ${d.clip}, noise multiplier ${d.noiseMultiplier} with at least ${d.minClients} clients in every sum; (epsilon, delta) = (${dpEpsilonAfter(m, m.rounds).toPrecision(6)}, ${d.delta}) over all ${m.rounds} rounds (recomputed from the parameters; the manifest claims ${d.epsilon.toPrecision(6)}); modulus 2^${d.bits}, granularity ${d.gamma.toPrecision(6)}`,
    );
  } else {
    lines.push('differential privacy: none (the released sums carry no noise)');
  }
  if (m.validation) {
    lines.push(
      `validation gate: a new model may lose at most ${(m.validation.gate * 100).toFixed(1)} points of accuracy${m.validation.dataset ? ` (coordinator checks on '${m.validation.dataset}')` : ''}; clients hold out ${(m.validation.localFraction * 100).toFixed(0)}% of their examples to check it`,
    );
  }
  for (const s of signers) lines.push(`signed by ${s.keyid}${s.name ? ` (${s.name})` : ''}${s.verified === undefined ? '' : s.verified ? ': signature valid' : ': signature NOT valid'}`);
  return lines;
}
