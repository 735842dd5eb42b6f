/**
 * Round admission without a network: the registries are directories, the coordinator's registry
 * and model downloads are functions, the audit and trust books files in a temporary directory.
 * Each test hands `admitRound` one round start and checks the decision and what was recorded.
 */
import { afterEach, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { admitRound, newAdmissionMemory, recordRoundOutcome, type AdmissionContext, type AdmissionEvent } from '../../client/admission/admission.js';
import { memoryLedger } from '../../client/admission/ledger.js';
import type { TrainingRound } from '../../client/admission/training-round.js';
import type { TrustSources } from '../../client/admission/trust.js';
import { samplingNoise } from '../../client/admission/validation.js';
import { AuditBook } from '../../client/audit/audit.js';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { parseManifest } from '../../shared/protocol/manifest.js';
import type { RoundStart } from '../../shared/protocol/messages.js';
import { signManifest } from '../../shared/trust/manifest.js';
import { snapshotBytes } from '../../shared/trust/registry.js';
import { addPublisher, initRegistry, readSnapshot } from '../../shared/trust/registry-dir.js';
import { TrustBook } from '../../shared/trust/trust-book.js';
import { manifest } from '../support/cluster.js';

const sha = (b: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(b).digest());
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const float32Bytes = (w: Float32Array): Uint8Array => new Uint8Array(Buffer.from(w.buffer, w.byteOffset, w.byteLength));

const DIM = 4;
const weights = new Float32Array([0.5, -1.25, 3, 0]);

/** A training job of dim 4; `validation` adds a gate. */
function trainingJob(jobId: string, validation?: { gate: number; localFraction: number }): Uint8Array {
  return manifest({
    jobId,
    rounds: 3,
    round: { dim: DIM, cohort: 3, clip: 8, bits: 16 },
    model: { format: 'tfjs-layers', architecture: { class_name: 'Sequential', config: {} }, initialWeightsSha256: hex(sha(float32Bytes(weights))) },
    training: {},
    ...(validation ? { validation } : {}),
  });
}

const plainJob = (jobId: string): Uint8Array => manifest({ jobId, round: { dim: DIM, cohort: 3 } });

/** The round start of `json`, as a coordinator sends it. */
function roundStart(json: Uint8Array, over: Partial<RoundStart> & { roundIndex?: number } = {}): RoundStart {
  const { roundIndex = 0, ...rest } = over;
  const m = parseManifest(json).manifest;
  const group = { index: 0, count: 1, members: ['client-a', 'client-b', ME] };
  return { type: 'round-start', round: { manifestHash: sha(json), roundIndex }, params: m.round, deadlines: m.deadlines, manifestJson: json, group, ...rest };
}

/** The client under test. */
const ME = 'client-me';

let dir: string;
let events: AdmissionEvent[];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'aegis-admission-'));
  events = [];
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A context with no trust, no audit book and no trainer; a model fetch that fails the test. */
function context(over: Partial<AdmissionContext> = {}): AdmissionContext {
  return {
    clientId: ME,
    hasPlainInput: true,
    fetchModel: () => Promise.reject(new Error('no model fetch expected')),
    memory: newAdmissionMemory(),
    ledger: memoryLedger(),
    onEvent: (e) => events.push(e),
    ...over,
  };
}

async function auditLog(): Promise<Record<string, unknown>[]> {
  const text = await readFile(join(dir, 'audit.log'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('plain rounds', () => {
  it('admits a plain round when the client has an input', async () => {
    const json = plainJob('plain');
    const d = await admitRound(context(), roundStart(json));
    expect(d).toMatchObject({ admitted: true, kind: 'plain', manifest: { jobId: 'plain' } });
    expect(events).toEqual([]);
  });

  it('declines a start without a manifest: its parameters could not be checked (manifest-required)', async () => {
    const start = roundStart(plainJob('old'));
    delete start.manifestJson;
    expect(await admitRound(context(), start)).toMatchObject({ admitted: false, code: ErrorCode.ManifestRequired });
  });

  it('declines a plain round without an input, reports it sat out and logs the refusal', async () => {
    const json = manifest({ jobId: 'no-input', rounds: 3, round: { dim: DIM, cohort: 3 } });
    const audit = await AuditBook.open(dir);
    const d = await admitRound(context({ hasPlainInput: false, audit }), roundStart(json, { roundIndex: 2 }));
    expect(d).toMatchObject({ admitted: false, code: ErrorCode.NoInput });
    expect(events).toEqual([{ kind: 'sat-out', roundIndex: 2, code: ErrorCode.NoInput, message: expect.stringContaining('no input') }]);
    // The approval step ran first (outside audit mode it only logs the job), then the refusal.
    const lines = await auditLog();
    expect(lines.map((l) => [l.event, l.reason])).toEqual([
      ['admit-run', 'not-in-audit-mode'],
      ['refused', 'no-input'],
    ]);
    expect(lines[1]).toMatchObject({ jobId: 'no-input', manifestSha256: hex(sha(json)) });
  });

  it('declines a manifest that is not the round’s, or parameters that are not the manifest’s', async () => {
    const json = plainJob('tampered');
    const other = roundStart(json, { round: { manifestHash: sha(plainJob('other')), roundIndex: 0 } });
    expect(await admitRound(context(), other)).toMatchObject({ admitted: false, code: ErrorCode.HashMismatch });
    const start = roundStart(json);
    const params = { ...start.params, threshold: start.params.threshold - 1 };
    expect(await admitRound(context(), { ...start, params })).toMatchObject({ admitted: false, code: ErrorCode.ParametersMismatch });
  });
});

describe('audit mode', () => {
  it('declines a job without the operator’s approval (logged by the book itself), admits it once approved', async () => {
    const json = plainJob('audited');
    const audit = await AuditBook.open(dir);
    await audit.enter('operator', 'test');
    const ctx = context({ audit });
    expect(await admitRound(ctx, roundStart(json))).toMatchObject({ admitted: false, code: ErrorCode.ApprovalRequired });
    expect((await auditLog()).map((l) => l.event)).toEqual(['enter', 'admit-refused']);
    await audit.approve('audited', hex(sha(json)));
    expect(await admitRound(ctx, roundStart(json))).toMatchObject({ admitted: true, kind: 'plain' });
    expect((await audit.status()).remaining).toBe(4);
  });

  it('a poisoning flag on a round outcome enters audit mode', async () => {
    const audit = await AuditBook.open(dir);
    await recordRoundOutcome(context({ audit }), { type: 'round-outcome', round: { manifestHash: sha(plainJob('p')), roundIndex: 3 }, ok: false, poisoningFlagged: true });
    expect(events).toEqual([{ kind: 'poisoning-flag', roundIndex: 3 }]);
    expect(await audit.status()).toMatchObject({ inAuditMode: true, reason: 'poisoning-flag' });
    // An outcome without the flag changes nothing.
    await recordRoundOutcome(context({ audit }), { type: 'round-outcome', round: { manifestHash: sha(plainJob('p')), roundIndex: 4 }, ok: true });
    expect(events).toHaveLength(1);
  });
});

describe('signed manifests', () => {
  const PASS = 'registry passphrase for tests';
  const publisher = randomBytes(32);
  const rogue = randomBytes(32);
  let registry: string;
  let rogueRegistry: string;

  beforeAll(async () => {
    const base = await mkdtemp(join(tmpdir(), 'aegis-admission-registry-'));
    registry = join(base, 'real');
    rogueRegistry = join(base, 'rogue');
    await initRegistry(registry, { roots: 1, threshold: 1, passphrase: PASS });
    await addPublisher(registry, { publicKey: ed25519PublicFromSeed(publisher), name: 'ml-team', passphrase: PASS });
    await initRegistry(rogueRegistry, { roots: 1, threshold: 1, passphrase: PASS });
    await addPublisher(rogueRegistry, { publicKey: ed25519PublicFromSeed(rogue), name: 'rogue', passphrase: PASS });
  });

  /** Trust with the coordinator serving `coordinatorDir` and the backup `registry`. */
  const trust = (coordinatorDir: string): TrustSources => ({
    coordinatorRegistry: async () => snapshotBytes(await readSnapshot(coordinatorDir)),
    backup: () => readSnapshot(registry),
    book: TrustBook.open(dir),
  });
  const signed = (json: Uint8Array, seed: Uint8Array): Uint8Array => new TextEncoder().encode(JSON.stringify(signManifest(json, [seed])));

  it('admits a manifest a listed publisher signed and remembers its revision', async () => {
    const json = plainJob('signed');
    const d = await admitRound(context({ trust: trust(registry) }), roundStart(json, { signedManifest: signed(json, publisher) }));
    expect(d).toMatchObject({ admitted: true, kind: 'plain' });
    expect((await TrustBook.open(dir).load()).revisions).toEqual({ signed: 1 });
  });

  it('declines an unsigned round, and one signed by a key the registries do not list', async () => {
    const json = plainJob('unsigned');
    expect(await admitRound(context({ trust: trust(registry) }), roundStart(json))).toMatchObject({ admitted: false, code: ErrorCode.ManifestRequired });
    expect(await admitRound(context({ trust: trust(registry) }), roundStart(json, { signedManifest: signed(json, rogue) }))).toMatchObject({ admitted: false, code: ErrorCode.UnknownKey });
  });

  it('declines a signed manifest that is not the round’s', async () => {
    const json = plainJob('bound');
    const d = await admitRound(context({ trust: trust(registry) }), roundStart(json, { signedManifest: signed(plainJob('another'), publisher) }));
    expect(d).toMatchObject({ admitted: false, code: ErrorCode.HashMismatch });
  });

  it('a coordinator whose registry disagrees with the backup is declined, and the client enters audit mode', async () => {
    const json = plainJob('rogue-job');
    const audit = await AuditBook.open(dir);
    const d = await admitRound(context({ trust: trust(rogueRegistry), audit }), roundStart(json, { signedManifest: signed(json, rogue) }));
    expect(d).toMatchObject({ admitted: false, code: ErrorCode.RegistryMismatch });
    expect(await audit.status()).toMatchObject({ inAuditMode: true, reason: 'registry-mismatch' });
    expect((await auditLog()).map((l) => [l.event, l.reason, l.jobId])).toEqual([
      ['enter', 'registry-mismatch', undefined],
      ['refused', 'registry-mismatch', 'rogue-job'],
    ]);
  });

  it('a registry the coordinator cannot serve declines the round with the reason the runner reads', async () => {
    const json = plainJob('unreachable');
    const failing = { ...trust(registry), coordinatorRegistry: () => Promise.reject(new Error('connection refused')) };
    const start = roundStart(json, { signedManifest: signed(json, publisher) });
    expect(await admitRound(context({ trust: failing }), start)).toMatchObject({ admitted: false, code: ErrorCode.Unavailable, message: 'connection refused' });
    const asError = (err: unknown): AegisError => new AegisError(ErrorCode.Unauthenticated, `read: ${(err as Error).message}`);
    expect(await admitRound(context({ trust: failing, asError }), start)).toMatchObject({ admitted: false, code: ErrorCode.Unauthenticated, message: 'read: connection refused' });
  });
});

describe('training rounds', () => {
  const modelRef = (version: number, bytes = float32Bytes(weights)) => ({ version, sha256: sha(bytes) });

  it('fetches and verifies the global model, starts training, and admits the round with the input being made', async () => {
    const json = trainingJob('train');
    const fetched: [string, number, number][] = [];
    const trained: TrainingRound[] = [];
    const ctx = context({
      hasPlainInput: false,
      fetchModel: async (manifestHash, version, expectedBytes) => {
        fetched.push([hex(manifestHash), version, expectedBytes]);
        return float32Bytes(weights);
      },
      train: async (round) => {
        trained.push(round);
        return { values: new Float32Array([1, 0, -1, 0.5]), weight: 3, examples: 30, loss: 0.25, trainMs: 7 };
      },
    });
    const d = await admitRound(ctx, roundStart(json, { model: modelRef(0) }));
    expect(d).toMatchObject({ admitted: true, kind: 'training', modelVersion: 0, manifest: { jobId: 'train' } });
    if (!d.admitted || d.kind !== 'training') throw new Error('admitted for training');
    const input = (await d.input) as Uint32Array;
    expect(input).toHaveLength(DIM + 1);
    expect(input[DIM]).toBe(3); // the weight travels in the last word
    expect(fetched).toEqual([[hex(sha(json)), 0, DIM * 4]]);
    expect(trained).toHaveLength(1);
    expect(Array.from(trained[0]!.globalWeights)).toEqual(Array.from(weights));
    expect(events).toEqual([{ kind: 'trained', roundIndex: 0, modelVersion: 0, examples: 30, loss: 0.25, trainMs: 7, fetchMs: expect.any(Number) }]);
  });

  it('declines a model that does not hash to the announced value, and never trains', async () => {
    const json = trainingJob('tampered-model');
    let trainedOnce = false;
    const ctx = context({
      fetchModel: async () => float32Bytes(new Float32Array([9, 9, 9, 9])),
      train: async () => {
        trainedOnce = true;
        return { values: new Float32Array(DIM), weight: 1 };
      },
    });
    expect(await admitRound(ctx, roundStart(json, { model: modelRef(0) }))).toMatchObject({ admitted: false, code: ErrorCode.HashMismatch });
    expect(trainedOnce).toBe(false);
  });

  it('declines a training round without a trainer, or without a model version', async () => {
    const json = trainingJob('no-trainer');
    expect(await admitRound(context(), roundStart(json, { model: modelRef(0) }))).toMatchObject({ admitted: false, code: ErrorCode.NoInput });
    const train = async () => ({ values: new Float32Array(DIM), weight: 1 });
    expect(await admitRound(context({ train }), roundStart(json))).toMatchObject({ admitted: false, code: ErrorCode.HashMismatch });
  });

  it('an update the manifest does not allow fails the input, not the admission', async () => {
    const json = trainingJob('heavy');
    const ctx = context({ fetchModel: async () => float32Bytes(weights), train: async () => ({ values: new Float32Array(DIM), weight: 2 ** 16 }) });
    const d = await admitRound(ctx, roundStart(json, { model: modelRef(0) }));
    if (!d.admitted || d.kind !== 'training') throw new Error('admitted for training');
    await expect(d.input).rejects.toMatchObject({ code: ErrorCode.InvalidArgument });
  });

  describe('the validation gate', () => {
    const gate = { gate: 0.05, localFraction: 0.2 };
    const next = new Float32Array([0.5, -1, 3, 0.25]);
    const train = async () => ({ values: new Float32Array(DIM), weight: 1 });

    /** Admits version 1 at accuracy 0.9, then version 2 at `accuracy`; returns the second decision. */
    async function twoVersions(accuracy: number, audit?: AuditBook) {
      const json = trainingJob('gated', gate);
      const accuracies = [0.9, accuracy];
      const ctx = context({
        ...(audit ? { audit } : {}),
        train,
        fetchModel: async () => float32Bytes(next),
        validate: async () => ({ accuracy: accuracies.shift()!, examples: 1000 }),
      });
      expect(await admitRound(ctx, roundStart(json, { roundIndex: 1, model: modelRef(1, float32Bytes(next)) }))).toMatchObject({ admitted: true });
      expect(ctx.memory.validated.get('gated')).toEqual({ version: 1, accuracy: 0.9 });
      return admitRound(ctx, roundStart(json, { roundIndex: 2, model: modelRef(2, float32Bytes(next)) }));
    }

    it('a drop within the gate and the sampling noise is admitted', async () => {
      const within = 0.9 - (0.05 + samplingNoise(1000)) + 0.001;
      expect(await twoVersions(within)).toMatchObject({ admitted: true, kind: 'training' });
    });

    it('a larger drop enters audit mode: the job then needs the operator’s approval', async () => {
      const audit = await AuditBook.open(dir);
      expect(await twoVersions(0.5, audit)).toMatchObject({ admitted: false, code: ErrorCode.ApprovalRequired });
      expect(await audit.status()).toMatchObject({ inAuditMode: true, reason: 'validation-drop' });
    });

    it('without an audit book, a larger drop is declined as approval-required', async () => {
      expect(await twoVersions(0.5)).toMatchObject({ admitted: false, code: ErrorCode.ApprovalRequired });
    });
  });
});
