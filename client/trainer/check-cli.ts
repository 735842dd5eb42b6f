/**
 * `aegis trainer check`: runs an external trainer once, alone, against a job manifest — one fit
 * and one evaluate, exactly as a client would run them in a round — and reports whether its
 * replies and its output weights are valid. Exit 0: valid; 1: the trainer's reply is not
 * (the report names the problem); 2: a usage error (naming the flag or file).
 */
import { readFile } from 'node:fs/promises';
import { Command } from 'commander';
import { parseIntOption, reportError } from '../../shared/cli/output.js';
import { assertFileExists, readTextFile } from '../../shared/cli/files.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { decodeSafetensors, SafetensorsError, tensorsToFlat } from '../../shared/model/safetensors.js';
import { isTrainingManifest, parseManifest, type TrainingManifest } from '../../shared/protocol/manifest.js';
import { MemoryDataStore, readExampleFile } from '../store/memory.js';
import type { TrainingExamples } from '../../shared/store/types.js';
import { runEvaluate, runFit, splitCommand } from '../../shared/trainer/process.js';
import { isTrainerError } from '../../shared/trainer/protocol.js';
import { parseEnvelope } from '../../shared/trust/dsse.js';
import type { TrainingRound } from '../admission/training-round.js';
import { exampleRecords, trainerContext } from './external.js';

interface CheckOptions {
  trainerCmd: string;
  manifest: string;
  weights?: string;
  records?: string;
  synthetic?: number;
  featureDim?: number;
  classes?: number;
  timeout: number;
  json?: boolean;
}

/** The manifest of a file holding a manifest or a signed (DSSE) manifest; its dates are not checked here. */
async function readManifest(path: string): Promise<TrainingManifest> {
  const text = await readTextFile(path, '--manifest');
  let bytes: Uint8Array = Buffer.from(text, 'utf8');
  try {
    const json = JSON.parse(text) as Record<string, unknown>;
    if (typeof json.payloadType === 'string') bytes = Buffer.from(parseEnvelope(text).payload, 'base64');
  } catch {
    // not JSON, or not an envelope: parseManifest says what is wrong
  }
  let manifest;
  try {
    manifest = parseManifest(bytes, new Date(0)).manifest;
  } catch (err) {
    throw new AegisError(ErrorCode.InvalidArgument, `--manifest ${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!isTrainingManifest(manifest)) throw new AegisError(ErrorCode.InvalidArgument, `--manifest ${path}: not a training job (no model and training sections)`);
  if (manifest.model.format !== 'safetensors') throw new AegisError(ErrorCode.InvalidArgument, `--manifest ${path}: the model is ${manifest.model.format}; an external trainer takes a safetensors model (model.format "safetensors" with model.tensors)`);
  return manifest;
}

/** The initial weights: a safetensors file or a flat float32 file; zeros without --weights. */
async function readWeights(path: string | undefined, manifest: TrainingManifest & { model: { format: 'safetensors' } }): Promise<Float32Array> {
  const dim = manifest.round.dim;
  if (path === undefined) return new Float32Array(dim);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch {
    throw new AegisError(ErrorCode.NotFound, `--weights: cannot read ${path}`, 'check the path');
  }
  if (bytes.length === dim * 4 && !path.endsWith('.safetensors')) return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  try {
    return tensorsToFlat(decodeSafetensors(bytes), manifest.model.tensors);
  } catch (err) {
    if (err instanceof SafetensorsError) throw new AegisError(ErrorCode.InvalidArgument, `--weights ${path}: ${err.message} (give a safetensors file of the manifest's tensors, or a flat float32 file of ${dim * 4} bytes)`);
    throw err;
  }
}

/** Synthetic examples: features uniform in 0..1, labels uniform in 0..classes − 1 (seeded). */
function synthetic(n: number, featureDim: number, classes: number): TrainingExamples {
  const rng = DeterministicRng.fromSeed('aegis/trainer-check', 1);
  const features = new Float32Array(n * featureDim);
  for (let i = 0; i < features.length; i++) features[i] = rng.nextFloat();
  const labels = Float32Array.from({ length: n }, () => rng.nextInt(classes));
  return { features, featureDim, labels, count: n };
}

interface Report {
  ok: boolean;
  trainer: string[];
  job: string;
  examples: number;
  fit?: { num_examples: number; metrics: Record<string, number>; weight: number; changed_values: number; clipped_values: number };
  evaluate?: { num_examples: number; loss: number; metrics: Record<string, number> };
  problem?: { call: 'fit' | 'evaluate'; kind: string; message: string; tensor?: string; stderr_tail: string };
}

function printReport(r: Report, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  const lines = [`trainer: ${r.trainer.join(' ')}`, `job: ${r.job}, ${r.examples} examples`];
  if (r.fit) {
    lines.push(`fit: ok — num_examples ${r.fit.num_examples} (update weight ${r.fit.weight}), metrics ${JSON.stringify(r.fit.metrics)}`);
    lines.push(`     ${r.fit.changed_values} values changed, ${r.fit.clipped_values} of the update past the clip range`);
  }
  if (r.evaluate) lines.push(`evaluate: ok — num_examples ${r.evaluate.num_examples}, loss ${r.evaluate.loss}, metrics ${JSON.stringify(r.evaluate.metrics)}`);
  if (r.problem) {
    lines.push(`${r.problem.call}: INVALID (${r.problem.kind}${r.problem.tensor ? `, tensor ${r.problem.tensor}` : ''}): ${r.problem.message}`);
    if (r.problem.stderr_tail) lines.push("the trainer's stderr (end, redacted):", ...r.problem.stderr_tail.trimEnd().split('\n').map((l) => `  | ${l}`));
  }
  lines.push(r.ok ? 'the trainer follows the protocol' : 'the trainer does not follow the protocol');
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function check(o: CheckOptions): Promise<void> {
  let argv: string[];
  try {
    argv = splitCommand(o.trainerCmd);
  } catch (err) {
    throw new AegisError(ErrorCode.InvalidArgument, `--trainer-cmd: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (o.records !== undefined && o.synthetic !== undefined) throw new AegisError(ErrorCode.InvalidArgument, 'give --records or --synthetic, not both');
  // Every file named is there before any is read.
  await assertFileExists(o.manifest, '--manifest');
  if (o.weights !== undefined) await assertFileExists(o.weights, '--weights');
  if (o.records !== undefined) await assertFileExists(o.records, '--records');
  const manifest = (await readManifest(o.manifest)) as TrainingManifest & { model: { format: 'safetensors' } };
  const global = await readWeights(o.weights, manifest);
  const tensors = manifest.model.tensors;
  let examples: TrainingExamples;
  if (o.records !== undefined) {
    const records = await readExampleFile(o.records);
    examples = await new MemoryDataStore(records).trainingExamples({ features: manifest.training.features, label: manifest.training.label }).catch((err: unknown) => {
      throw new AegisError(ErrorCode.InvalidArgument, `--records ${o.records}: ${err instanceof Error ? err.message : String(err)}`);
    });
    if (examples.count === 0) throw new AegisError(ErrorCode.InvalidArgument, `--records ${o.records}: no record has the fields '${manifest.training.features}' and '${manifest.training.label}'`);
  } else {
    const featureDim = o.featureDim ?? tensors[0]!.shape[0] ?? 1;
    const classes = o.classes ?? tensors.at(-1)!.shape.at(-1) ?? 2;
    examples = synthetic(o.synthetic ?? 32, featureDim, Math.max(1, classes));
  }
  const round: TrainingRound = { roundIndex: 0, manifest, globalWeights: global, modelVersion: 0 };
  const context = trainerContext(round);
  const report: Report = { ok: false, trainer: argv, job: manifest.jobId, examples: examples.count };
  const timeoutMs = o.timeout * 1000;
  let call: 'fit' | 'evaluate' = 'fit';
  try {
    const maxWeight = 2 ** manifest.round.bits - 1;
    const sent = Math.min(examples.count, maxWeight);
    const fit = await runFit({ cmd: argv, timeoutMs, context, tensors, global, records: exampleRecords(examples, sent) });
    const weight = Math.min(fit.numExamples, sent);
    let changed = 0;
    let clipped = 0;
    for (let i = 0; i < global.length; i++) {
      const u = (fit.trained[i]! - global[i]!) * weight;
      if (u !== 0) changed++;
      if (!Number.isFinite(u) || Math.abs(u) > manifest.round.clip) clipped++;
    }
    report.fit = { num_examples: fit.numExamples, metrics: fit.metrics, weight, changed_values: changed, clipped_values: clipped };
    call = 'evaluate';
    const ev = await runEvaluate({ cmd: argv, timeoutMs, context: { ...context, model_version: 1 }, tensors, global: fit.trained, records: exampleRecords(examples) });
    report.evaluate = { num_examples: ev.numExamples, loss: ev.loss, metrics: ev.metrics };
    report.ok = true;
  } catch (err) {
    if (!isTrainerError(err)) throw err;
    // A command that cannot be started is a usage error (the flag names a program that is not there).
    if (err.kind === 'unavailable') throw new AegisError(ErrorCode.InvalidArgument, `--trainer-cmd: ${err.message}`, err.hint ?? null);
    report.problem = { call, kind: err.kind, message: err.message, ...(err.tensor ? { tensor: err.tensor } : {}), stderr_tail: err.stderrTail };
  }
  printReport(report, Boolean(o.json));
  process.exitCode = report.ok ? 0 : 1;
}

export function registerTrainer(program: Command): void {
  const group = program.command('trainer').description('external trainers (docs/trainer-protocol.md)');
  group
    .command('check')
    .description("run a trainer once against a job manifest (one fit, one evaluate) and check its replies and output weights; exit 0 valid, 1 invalid (the problem named), 2 usage error")
    .requiredOption('--trainer-cmd <command>', 'the trainer command, as client run --trainer-cmd takes it')
    .requiredOption('--manifest <file>', "the job's manifest (plain or signed); its model must be format safetensors")
    .option('--weights <file>', "the weights to start from: a safetensors file of the manifest's tensors, or a flat float32 file (default: zeros)")
    .option('--records <file>', "examples, one JSON object per line with the manifest's fields (as client run --train-data)")
    .option('--synthetic <n>', 'n random examples instead of --records (default 32)', parseIntOption('synthetic', 1, 1_000_000))
    .option('--feature-dim <n>', "with --synthetic: the features per example (default: the first tensor's first dimension)", parseIntOption('feature-dim', 1, 1_000_000_000))
    .option('--classes <n>', "with --synthetic: labels are 0..n-1 (default: the last tensor's last dimension)", parseIntOption('classes', 1, 1_000_000))
    .option('--timeout <seconds>', 'the most each call may take', parseIntOption('timeout', 1, 86_400), 600)
    .option('--json', 'print the report as one JSON object on stdout')
    .action(async (o: CheckOptions) => {
      try {
        await check(o);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
