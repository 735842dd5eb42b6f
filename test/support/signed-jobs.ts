/** A publisher registry in a temp dir and jobs its publisher signed, for the job-level attack tests. */
import { createHash } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { parseManifest, type JobManifest } from '../../shared/protocol/manifest.js';
import type { RoundStart } from '../../shared/protocol/messages.js';
import { signManifest } from '../../shared/trust/manifest.js';
import { addPublisher, initRegistry } from '../../shared/trust/registry-dir.js';
import { manifest } from './cluster.js';
import { maskedRoundParams } from '../../shared/protocol/dp-manifest.js';

const PASS = 'registry passphrase for tests';

export const sha256 = (b: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(b).digest());
export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** A registry directory (one root key) listing `publisher`'s key as ml-team. */
export async function publisherRegistry(publisher: Uint8Array): Promise<string> {
  const dir = join(await mkdtemp(join(tmpdir(), 'aegis-signed-registry-')), 'r');
  await initRegistry(dir, { roots: 1, threshold: 1, passphrase: PASS });
  await addPublisher(dir, { publicKey: ed25519PublicFromSeed(publisher), name: 'ml-team', passphrase: PASS });
  return dir;
}

export interface SignedJob {
  json: Uint8Array;
  manifest: JobManifest;
  hash: Uint8Array;
  /** The DSSE envelope `publisher` signed, as bytes. */
  envelope: Uint8Array;
}

/** A job manifest (test/support/cluster.ts `manifest`) and its envelope signed by `publisher`. */
export function signedJob(publisher: Uint8Array, over: Parameters<typeof manifest>[0]): SignedJob {
  const json = manifest(over);
  return { json, manifest: parseManifest(json).manifest, hash: sha256(json), envelope: new TextEncoder().encode(JSON.stringify(signManifest(json, [publisher]))) };
}

/** The round start an honest coordinator sends for `job` to a single group of `members`. */
export function signedRoundStart(job: SignedJob, members: readonly string[], roundIndex = 0): RoundStart {
  return {
    type: 'round-start',
    round: { manifestHash: job.hash, roundIndex },
    // A DP job masks its encoded length (the parameters an honest coordinator sends).
    params: maskedRoundParams(job.manifest, job.manifest.round),
    deadlines: job.manifest.deadlines,
    manifestJson: job.json,
    signedManifest: job.envelope,
    group: { index: 0, count: 1, members: [...members].sort() },
  };
}
