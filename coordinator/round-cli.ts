/**
 * `aegis round …`: launch a job's rounds and follow them, list jobs, read a round's status,
 * result and a training job's model, cancel a round — over the operator's Admin channel.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import cliProgress from 'cli-progress';
import { Command } from 'commander';
import { parseDuration, parseIntOption, progress, printResult } from '../shared/cli/output.js';
import { decodeWeightedSum } from '../shared/crypto/quantize.js';
import { AegisError, ErrorCode, isAegisError } from '../shared/errors.js';
import * as admin from '../shared/gen/aegis/v1/admin_pb.js';
import { phaseFromProto, vectorFromBytes, abortReasonFromProto, errorReasonFromProto } from '../shared/rpc/convert.js';
import { reasonOf } from '../shared/rpc/status.js';
import type * as secagg from '../shared/gen/aegis/v1/secagg_pb.js';
import { parseManifest, isTrainingManifest } from '../shared/protocol/manifest.js';
import { saveTfjsModel, weightsFromBytes } from '../shared/model/tfjs.js';
import { encodeSafetensors, flatToTensors } from '../shared/model/safetensors.js';
import { readLaunchFiles, type LaunchFiles } from './launch-files.js';
import { call, run, withAdmin, type AdminOpts, type AdminSession } from './admin-client.js';
import { roundJson, roundName } from '../shared/round-number.js';

const phaseName = (p: number): string => {
  try {
    return phaseFromProto(p);
  } catch {
    return 'unspecified';
  }
};

/** Declines as the CLI prints them: reason code -> clients, most first. */
function declinesJson(list: readonly admin.DeclineCount[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const d of list) {
    let reason: string;
    try {
      reason = errorReasonFromProto(d.reason);
    } catch {
      reason = 'unspecified';
    }
    out[reason] = (out[reason] ?? 0) + d.clients;
  }
  return out;
}

/** "declined 3 (approval-required 2, no-input 1)", or '' without declines. */
function declinesText(d: Record<string, number>): string {
  const entries = Object.entries(d).filter(([, n]) => n > 0);
  if (entries.length === 0) return '';
  return `declined ${entries.reduce((a, [, n]) => a + n, 0)} (${entries.map(([r, n]) => `${r} ${n}`).join(', ')})`;
}

const JOB_STATES: Record<number, string> = {
  [admin.JobState.RUNNING]: 'running',
  [admin.JobState.COMPLETED]: 'completed',
  [admin.JobState.FAILED]: 'failed',
  [admin.JobState.CANCELLED]: 'cancelled',
  [admin.JobState.ABORTED]: 'aborted',
};
const jobStateName = (s: admin.JobState): string => JOB_STATES[s] ?? 'unspecified';
const jobKindName = (k: admin.JobKind): string => (k === admin.JobKind.TRAINING ? 'training' : k === admin.JobKind.PLAIN ? 'plain' : 'unspecified');

/** An abort or hold reason's name: null when none, 'unspecified' for a value this build does not know. */
function reasonName(code: number): string | null {
  if (code === 0) return null;
  try {
    return abortReasonFromProto(code);
  } catch {
    return 'unspecified';
  }
}

/** A DP job's privacy in `--json` (snake_case); null for a job without DP. */
function dpJson(d: admin.DpStatus | undefined, rounds: number): Record<string, unknown> | null {
  if (!d) return null;
  return {
    mechanism: d.mechanism,
    delta: d.delta,
    epsilon_spent: d.epsilonSpent,
    epsilon_budget: d.epsilonBudget,
    epsilon_claimed: d.epsilonClaimed,
    rounds_charged: d.roundsCharged,
    rounds_total: rounds,
    noise_multiplier: d.noiseMultiplier,
    clip: d.clip,
    min_clients: d.minClients,
    per_round: d.rounds.map((r) => ({ ...roundJson(r.roundIndex), epsilon: r.epsilon })),
  };
}

/** How many rounds' ε the text shows (the latest); --json has them all. */
const DP_TEXT_ROUNDS = 10;

/** ε for people: four significant digits, no exponent for ordinary values. */
const eps = (x: number): string => (x === 0 ? '0' : Number(x.toPrecision(4)).toString());

/** The `dp:` line of the status text: `dp: none`, or the mechanism, ε spent of the budget and ε per round. */
function dpText(d: Record<string, unknown> | null): string {
  if (!d) return '\n  dp: none';
  const per = d.per_round as { round_number: number; epsilon: number }[];
  const shown = per.slice(-DP_TEXT_ROUNDS).map((r) => `round ${r.round_number} ${eps(r.epsilon)}`);
  const earlier = per.length > shown.length ? `${per.length - shown.length} earlier in --json; ` : '';
  return (
    `\n  dp: ${d.mechanism} (noise multiplier ${d.noise_multiplier}, clip ${d.clip}, min clients ${d.min_clients}): ` +
    `ε spent ${eps(d.epsilon_spent as number)} of ${eps(d.epsilon_budget as number)} (δ ${d.delta}) after ${d.rounds_charged} of ${d.rounds_total} rounds` +
    (per.length > 0 ? `\n  ε after each round: ${earlier}${shown.join(', ')}` : '')
  );
}

function statusJson(s: admin.RoundStatusReply): Record<string, unknown> {
  const reason = reasonName(s.abortReason);
  const hold = reasonName(s.holdReason);
  const current = s.finished ? undefined : s.clientsPerPhase.find((c) => c.phase === s.phase);
  return {
    job_id: s.jobId,
    revision: s.revision,
    kind: jobKindName(s.kind),
    state: jobStateName(s.jobState),
    ...roundJson(s.roundIndex),
    rounds: s.rounds,
    rounds_done: s.roundsDone,
    phase: phaseName(s.phase),
    finished: s.finished,
    ok: s.ok,
    abort_reason: reason,
    // A completed round whose model was held back, not published (model-unchecked).
    hold_reason: hold,
    detail: s.detail || null,
    invited: s.invited,
    clients_per_phase: Object.fromEntries(s.clientsPerPhase.map((c) => [phaseName(c.phase), c.clients])),
    phases: s.clientsPerPhase.map((c) => ({ phase: phaseName(c.phase), clients: c.clients, expected: c.expected })),
    current_phase: current ? { phase: phaseName(current.phase), received: current.clients, expected: current.expected } : null,
    dropouts: s.dropouts,
    declines: declinesJson(s.declines),
    refused_messages: s.refused,
    started_at: s.startedAtMs > 0n ? new Date(Number(s.startedAtMs)).toISOString() : null,
    elapsed_ms: Number(s.elapsedMs),
    dp: dpJson(s.dp, s.rounds),
    ...(s.training
      ? {
          training: {
            state: s.training.state,
            rounds_completed: s.training.roundsCompleted,
            rounds_aborted: s.training.roundsAborted,
            model_version: s.training.model?.version ?? 0,
            model_sha256: Buffer.from(s.training.model?.sha256 ?? new Uint8Array()).toString('hex'),
            detail: s.training.detail || null,
            flagged_rounds: s.training.flaggedRounds.map((i) => i + 1),
            unchecked_rounds: s.training.uncheckedRounds.map((i) => i + 1),
          },
        }
      : {}),
  };
}

/** The one-line summary of a round's progress (elapsed time left out: it changes at every poll). */
function progressLine(j: Record<string, unknown>): string {
  const phases = (j.phases as { phase: string; clients: number; expected: number }[]).map((p) => `${p.phase} ${p.clients}/${p.expected}`).join(', ');
  const state = j.finished ? (j.ok ? (j.hold_reason ? `completed, model held back: ${j.hold_reason}` : 'completed') : `aborted: ${j.abort_reason}`) : `phase ${j.phase}`;
  const t = j.training as { state: string; rounds_completed: number } | undefined;
  const job = t ? `; job ${t.state}, ${t.rounds_completed} of ${j.rounds} rounds completed` : '';
  const declined = declinesText(j.declines as Record<string, number>);
  return `job ${j.job_id} round ${j.round_number}: ${state}; ${phases || 'no messages yet'}; ${declined ? `${declined}; ` : ''}dropouts ${j.dropouts}${job}`;
}

function statusText(j: Record<string, unknown>): string {
  const counts = (j.phases as { phase: string; clients: number; expected: number }[]).map((p) => `${p.phase} ${p.clients}/${p.expected}`).join(', ');
  const state = j.finished ? (j.ok ? (j.hold_reason ? `completed, model held back: ${j.hold_reason} (${j.detail})` : 'completed') : `aborted: ${j.abort_reason} (${j.detail})`) : `running, phase ${j.phase}`;
  const t = j.training as { state: string; rounds_completed: number; rounds_aborted: number; model_version: number; model_sha256: string; detail: string | null; unchecked_rounds: number[] } | undefined;
  const unchecked = t && t.unchecked_rounds.length > 0 ? `; unchecked (model held back): round${t.unchecked_rounds.length === 1 ? '' : 's'} ${t.unchecked_rounds.join(', ')}` : '';
  const training = t
    ? `\n  training job ${t.state}${t.detail ? ` (${t.detail})` : ''}: ${t.rounds_completed} of ${j.rounds} rounds completed, ${t.rounds_aborted} aborted or held back${unchecked}; model version ${t.model_version} sha256 ${t.model_sha256.slice(0, 16)}…`
    : `\n  job ${j.state}: ${j.rounds_done} of ${j.rounds} rounds completed`;
  // A training job's rounds go on after an aborted one until enough completed: its line below
  // counts those; a plain job's round is one of a fixed number.
  const of = t ? '' : ` of ${j.rounds}`;
  const declined = declinesText(j.declines as Record<string, number>);
  return `job ${j.job_id}${(j.revision as number) > 1 ? ` revision ${j.revision}` : ''} round ${j.round_number}${of}: ${state}\n  invited ${j.invited}; ${declined ? `${declined}; ` : ''}${counts || 'no messages yet'}; dropouts ${j.dropouts}; refused ${j.refused_messages}; ${((j.elapsed_ms as number) / 1000).toFixed(1)} s${training}${dpText(j.dp as Record<string, unknown> | null)}`;
}

/** How far a job (or, with a round given or for a plain job, its round) is, 0..1. */
function progressFraction(s: admin.RoundStatusReply, wholeJob: boolean): number {
  const order = ['advertise-keys', 'share-keys', 'masked-input', 'consistency-check', 'unmasking'];
  let round = 1;
  if (!s.finished) {
    const i = order.indexOf(phaseName(s.phase));
    const c = s.clientsPerPhase.find((x) => x.phase === s.phase);
    const within = c && c.expected > 0 ? Math.min(1, c.clients / c.expected) : 0;
    round = i < 0 ? 0 : (i + within) / order.length;
  }
  if (!wholeJob || !s.training || s.rounds === 0) return round;
  if (s.jobState === admin.JobState.COMPLETED) return 1;
  return Math.min(1, (s.roundsDone + (s.finished ? 0 : round)) / s.rounds);
}

/** A job's watch ends when its round ended (plain, or a given round) or the job ended (training). */
const watchDone = (s: admin.RoundStatusReply, wholeJob: boolean): boolean => (wholeJob && s.training ? s.jobState !== admin.JobState.RUNNING : s.finished);

/** True when the watched job (or round) ended well: exit 0. */
const watchOk = (s: admin.RoundStatusReply, wholeJob: boolean): boolean => (wholeJob && s.training ? s.jobState === admin.JobState.COMPLETED : s.ok);

/** Fetches a training job's model version (latest when undefined) and saves it in tfjs format in `dir`. */
/**
 * A training job's model saved to `dir`: a tfjs-layers job's as model.json + weights.bin, a
 * safetensors job's as model.safetensors (its declared tensors). `main` is the file to open,
 * `files` all it wrote.
 */
async function saveJobModel(session: AdminSession, job: string, version: number | undefined, dir: string): Promise<{ version: number; sha256: string; main: string; files: string[] }> {
  const req = create(admin.FetchJobModelRequestSchema, { jobId: job, ...(version === undefined ? {} : { version }) });
  const chunks = await new Promise<secagg.ModelChunk[]>((resolveChunks, reject) => {
    const got: secagg.ModelChunk[] = [];
    const stream = session.client.fetchModel(req, new grpc.Metadata(), { deadline: Date.now() + 600_000 });
    stream.on('data', (c: secagg.ModelChunk) => got.push(c));
    stream.on('error', (err: unknown) => {
      const code = reasonOf(err);
      const details = (err as { details?: string }).details ?? String(err);
      reject(new AegisError(code ?? ErrorCode.Unavailable, code ? details : `coordinator unreachable: ${details}`));
    });
    stream.on('end', () => resolveChunks(got));
  });
  const first = chunks[0];
  if (!first?.model) throw new AegisError(ErrorCode.Unavailable, 'the coordinator sent no model');
  const bytes = Buffer.concat(chunks.map((c) => c.data));
  if (bytes.length !== Number(first.totalBytes) || !createHash('sha256').update(bytes).digest().equals(Buffer.from(first.model.sha256))) {
    throw new AegisError(ErrorCode.HashMismatch, 'the model that arrived does not hash to the version the coordinator named');
  }
  // The architecture is read from the job's manifest (valid or since expired: the model stays the job's).
  const { manifest } = parseManifest(first.manifestJson, new Date(0));
  if (!isTrainingManifest(manifest)) throw new AegisError(ErrorCode.InvalidArgument, `job '${job}' is not a training job`);
  const ref = { version: first.model.version, sha256: Buffer.from(first.model.sha256).toString('hex') };
  if (manifest.model.format === 'safetensors') {
    const file = join(dir, 'model.safetensors');
    await mkdir(dir, { recursive: true });
    await writeFile(file, encodeSafetensors(flatToTensors(weightsFromBytes(bytes), manifest.model.tensors), { format: 'pt' }));
    return { ...ref, main: file, files: [file] };
  }
  const files = await saveTfjsModel(dir, manifest.model, weightsFromBytes(bytes));
  return { ...ref, main: files.modelJson, files: [files.modelJson, files.weightsBin] };
}

/** Refuses an output folder that exists and is not an empty directory. */
async function assertEmptyOutDir(dir: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new AegisError(ErrorCode.InvalidArgument, `cannot use ${dir} (${(err as NodeJS.ErrnoException).code ?? 'io'})`);
  }
  if (!isDir) throw new AegisError(ErrorCode.AlreadyExists, `${dir} exists and is not a directory; give a new or empty directory to --out`);
  if ((await readdir(dir)).length > 0) throw new AegisError(ErrorCode.AlreadyExists, `${dir} is not empty; give a new or empty directory to --out (nothing is overwritten)`);
}

const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));

export function registerRound(program: Command): void {
  const group = program.command('round').description('launch rounds and follow them (ML engineers)');
  withAdmin(
    group
      .command('launch')
      .description('launch the next round of the job a manifest describes; a training job (manifest with model and training) is launched once, with --weights, and runs all its rounds'),
  )
    .argument('[signed-manifest]', 'the publisher-signed manifest (DSSE envelope, aegis manifest sign)')
    .option('--manifest <file>', 'an unsigned manifest (JSON): only a coordinator without a registry takes it')
    .option('--weights <file>', "a training job's initial weights: float32 little-endian (tfjs weights.bin layout), or a .safetensors file of a safetensors job's tensors; must hash (as the flat vector) to the manifest's model.initialWeightsSha256")
    .option('--gather <duration>', 'wait this long for a full cohort of connected clients', parseDuration('gather', 0, 3_600_000), 10_000)
    .option('--wait', 'follow the round (a training job: all its rounds) until it ends (exit 1 if it aborts or fails)')
    .action((signedPath: string | undefined, o: AdminOpts & { manifest?: string; weights?: string; gather: number; wait?: boolean }) => {
      let files: LaunchFiles | undefined;
      return run(o, async (client) => {
        const { manifestJson: bytes, signedManifest, initialWeights } = files!;
        const r = await call<admin.LaunchRoundRequest, admin.LaunchRoundReply>(
          client,
          'launchRound',
          create(admin.LaunchRoundRequestSchema, { manifestJson: bytes, gatherMs: o.gather, ...(initialWeights ? { initialWeights } : {}), ...(signedManifest ? { signedManifest } : {}) }),
        );
        const launched = { job_id: r.jobId, ...roundJson(r.roundIndex), manifest_hash: Buffer.from(r.manifestHash).toString('hex'), cohort: r.cohort, ...(r.queuedAs ? { queued_as: r.queuedAs } : {}) };
        const said = r.queuedAs ? `queued ${roundName(r.roundIndex)} of job ${r.jobId} as ${r.queuedAs} (a coordinator on the same Redis takes it)` : `launched ${roundName(r.roundIndex)} of job ${r.jobId} with ${r.cohort.length} clients`;
        if (!o.wait) return printResult(o, launched, said);
        progress(said);
        let last = '';
        // A queued launch has no status until a coordinator takes it: wait for that, up to the gather time and a minute.
        const takenBy = Date.now() + o.gather + 60_000;
        for (;;) {
          let reply: admin.RoundStatusReply;
          try {
            reply = await call<admin.RoundStatusRequest, admin.RoundStatusReply>(client, 'roundStatus', create(admin.RoundStatusRequestSchema, { jobId: r.jobId, ...(initialWeights ? {} : { roundIndex: r.roundIndex }) }));
          } catch (e) {
            if (r.queuedAs && isAegisError(e, ErrorCode.NotFound) && Date.now() < takenBy) {
              await new Promise((res) => setTimeout(res, 250));
              continue;
            }
            throw e;
          }
          const s = statusJson(reply);
          if (reply.training) {
            // A training job: follow its rounds until the job completes or fails.
            const line = statusText(s);
            if (line !== last && !o.json) progress(line.split('\n').join(' '));
            last = line;
            if (reply.training.state !== 'running') {
              printResult(o, { ...launched, status: s }, statusText(s));
              if (reply.training.state !== 'completed') process.exitCode = 1;
              return;
            }
            await new Promise((res) => setTimeout(res, 500));
            continue;
          }
          const line = statusText(s);
          if (line !== last && !o.json) progress(line.split('\n').join(' '));
          last = line;
          if (s.finished) {
            printResult(o, { ...launched, status: s }, statusText(s));
            if (!s.ok) process.exitCode = 1;
            return;
          }
          await new Promise((res) => setTimeout(res, 250));
        }
      }, async () => {
        // The files are read and checked before any passphrase is asked or the coordinator called.
        files = await readLaunchFiles(signedPath, o);
      });
    });
  withAdmin(group.command('list').description('every job the coordinator knows (with a data dir: also from before a restart), with its revision, state, progress and the latest round\'s declines')).action((o: AdminOpts) =>
    run(o, async (client) => {
      const r = await call<admin.ListRoundsRequest, admin.ListRoundsReply>(client, 'listRounds', create(admin.ListRoundsRequestSchema, {}));
      const jobs = r.jobs.map((j) => ({
        job_id: j.jobId,
        revision: j.revision,
        kind: jobKindName(j.kind),
        state: jobStateName(j.state),
        rounds_done: j.roundsDone,
        rounds_total: j.roundsTotal,
        rounds_aborted: j.roundsAborted,
        ...roundJson(j.roundIndex),
        phase: phaseName(j.phase),
        invited: j.invited,
        declines: declinesJson(j.declines),
        started_at: new Date(Number(j.startedAtMs)).toISOString(),
        elapsed_ms: Number(j.elapsedMs),
      }));
      const header = 'JOB\tREVISION\tKIND\tSTATE\tROUNDS\tROUND\tPHASE\tSTARTED\tELAPSED\tDECLINED';
      const declined = (d: Record<string, number>): string => Object.entries(d).map(([r, n]) => `${r} ${n}`).join(', ') || '-';
      const rows = jobs.map((j) => `${j.job_id}\t${j.revision}\t${j.kind}\t${j.state}\t${j.rounds_done}/${j.rounds_total}\t${j.round_number}\t${j.phase}\t${j.started_at}\t${(j.elapsed_ms / 1000).toFixed(1)} s\t${declined(j.declines)}`);
      printResult(o, { jobs }, jobs.length === 0 ? 'no jobs have run on this coordinator' : [header, ...rows].join('\n'));
    }),
  );
  withAdmin(group.command('status').description("a job's current (or given) round; --watch follows it until it ends").argument('<job-id>'))
    .option('--round <n>', 'the round by its number as shown (1 = the first)', parseIntOption('round', 1, 1e6))
    .option('--watch', 'follow the job (with --round: that round) until it ends, with a progress bar on stderr, then print its final status (exit 1 if it did not complete)')
    .option('--interval <duration>', 'how often --watch asks', parseDuration('interval', 100, 60_000), 1000)
    .action((job: string, o: AdminOpts & { round?: number; watch?: boolean; interval: number }) =>
      run(o, async (client) => {
        const req = create(admin.RoundStatusRequestSchema, { jobId: job, ...(o.round === undefined ? {} : { roundIndex: o.round - 1 }) });
        const ask = (): Promise<admin.RoundStatusReply> => call<admin.RoundStatusRequest, admin.RoundStatusReply>(client, 'roundStatus', req);
        if (!o.watch) {
          const s = statusJson(await ask());
          printResult(o, s, statusText(s));
          return;
        }
        const wholeJob = o.round === undefined;
        const tty = process.stderr.isTTY === true;
        const bar = tty
          ? new cliProgress.SingleBar(
              { format: '{bar} {percentage}% | {line} | {elapsed} s', hideCursor: true, clearOnComplete: false, stopOnComplete: false, stream: process.stderr },
              cliProgress.Presets.shades_classic,
            )
          : undefined;
        let last = '';
        let reply = await ask();
        try {
          for (let first = true; ; first = false) {
            const s = statusJson(reply);
            const line = progressLine(s);
            const elapsed = ((s.elapsed_ms as number) / 1000).toFixed(1);
            const value = Math.round(progressFraction(reply, wholeJob) * 1000);
            if (bar && first) bar.start(1000, value, { line, elapsed });
            else if (bar) bar.update(value, { line, elapsed });
            else if (line !== last) progress(`${line}; ${elapsed} s`);
            last = line;
            if (watchDone(reply, wholeJob)) break;
            await sleep(o.interval);
            reply = await ask();
          }
        } finally {
          bar?.stop();
        }
        const s = statusJson(reply);
        printResult(o, s, statusText(s));
        if (!watchOk(reply, wholeJob)) process.exitCode = 1;
      }),
    );
  withAdmin(group.command('cancel').description("cancel a job's running round (it aborts with reason cancelled, nothing is published); a training job starts no further round").argument('<job-id>'))
    .option('--reason <text>', 'why (kept in the log and the round\'s abort detail)', '')
    .action((job: string, o: AdminOpts & { reason: string }) =>
      run(o, async (client) => {
        const r = await call<admin.CancelRoundRequest, admin.CancelRoundReply>(client, 'cancelRound', create(admin.CancelRoundRequestSchema, { jobId: job, reason: o.reason }));
        const at = new Date(Number(r.cancelledAtMs)).toISOString();
        printResult(o, { ok: true, job_id: r.jobId, ...roundJson(r.roundIndex), phase: phaseName(r.phase), cancelled_at: at }, `cancelled ${roundName(r.roundIndex)} of job ${r.jobId} (in phase ${phaseName(r.phase)}) at ${at}`);
      }),
    );
  withAdmin(group.command('model').description("a training job's global model: tfjs format (model.json + weights.bin), or model.safetensors for a safetensors job").argument('<job-id>'))
    .requiredOption('--out <dir>', 'the folder to write the model files to')
    .option('--model-version <n>', 'the model version (default: the latest)', parseIntOption('model-version', 0, 1e6))
    .action((job: string, o: AdminOpts & { out: string; modelVersion?: number }) =>
      run(o, async (client) => {
        const m = await saveJobModel(client, job, o.modelVersion, resolve(o.out));
        const files = m.main.endsWith('.safetensors') ? { safetensors: m.main } : { model_json: m.files[0], weights_bin: m.files[1] };
        printResult(o, { job_id: job, version: m.version, sha256: m.sha256, ...files }, `model version ${m.version} of ${job} (sha256 ${m.sha256}) written to ${m.main}`);
      }),
    );
  withAdmin(group.command('result').description('the unmasked sum of a completed round').argument('<job-id>'))
    .option('--round <n>', 'the round by its number as shown (1 = the first; default: the last completed)', parseIntOption('round', 1, 1e6))
    .option('--out <dir>', 'write DIR/result.json (and, for a training job, its latest model in tfjs format) to a new or empty directory')
    .action((job: string, o: AdminOpts & { round?: number; out?: string }) =>
      run(o, async (client) => {
        const out = o.out === undefined ? undefined : resolve(o.out);
        if (out !== undefined) await assertEmptyOutDir(out);
        const req = create(admin.RoundResultRequestSchema, { jobId: job, ...(o.round === undefined ? {} : { roundIndex: o.round - 1 }) });
        const r = await call<admin.RoundResultRequest, admin.RoundResultReply>(client, 'roundResult', req);
        const words = vectorFromBytes(r.sum);
        const decoded = decodeWeightedSum(words, r.survivorCount || r.survivors.length, { clip: r.clip, bits: r.bits });
        const result = {
          job_id: r.jobId,
          ...roundJson(r.roundIndex),
          manifest_hash: Buffer.from(r.manifestHash).toString('hex'),
          survivors: r.survivors,
          survivor_count: r.survivorCount || r.survivors.length,
          total_weight: decoded.totalWeight,
          integer_sum: Array.from(words),
          sum: Array.from(decoded.sum),
          mean: Array.from(decoded.mean),
        };
        // Without --json or --out: a short summary (a training round's sum holds a value per
        // model parameter, megabytes of JSON a terminal has no use for).
        if (out === undefined) return printResult(o, result, resultSummary(result));
        // A training job's latest model goes next to the result.
        const status = await call<admin.RoundStatusRequest, admin.RoundStatusReply>(client, 'roundStatus', create(admin.RoundStatusRequestSchema, { jobId: job }));
        await assertEmptyOutDir(out);
        await mkdir(out, { recursive: true });
        const model = status.training ? await saveJobModel(client, job, undefined, out) : undefined;
        const resultJson = join(out, 'result.json');
        const doc = {
          ...result,
          dim: decoded.mean.length,
          clip: r.clip,
          bits: r.bits,
          ...(model
            ? { model: { version: model.version, sha256: model.sha256, ...(model.main.endsWith('.safetensors') ? { safetensors: 'model.safetensors' } : { model_json: 'model.json', weights_bin: 'weights.bin' }) } }
            : {}),
        };
        await writeFile(resultJson, `${JSON.stringify(doc)}\n`, { flag: 'wx' });
        const files = [resultJson, ...(model ? model.files : [])];
        const text = `wrote ${resultJson}: ${doc.dim} values from ${r.survivorCount || r.survivors.length} clients, total weight ${decoded.totalWeight}${model ? `; model version ${model.version} (sha256 ${model.sha256.slice(0, 16)}…) in ${model.main}` : ''}`;
        printResult(
          o,
          { ok: true, job_id: r.jobId, ...roundJson(r.roundIndex), dir: out, files, survivors: r.survivors, dim: doc.dim, total_weight: decoded.totalWeight, model: model ? { version: model.version, sha256: model.sha256 } : null },
          text,
        );
      }),
    );
}

/** `round result` for people: the counts and the first values of the mean, and where the rest is. */
function resultSummary(r: { job_id: string; round_number: number; survivor_count: number; total_weight: number; mean: number[] }): string {
  const shown = r.mean.slice(0, 8).map((x) => Number(x.toPrecision(6)));
  const more = r.mean.length > shown.length ? `, … (${r.mean.length - shown.length} more)` : '';
  return [
    `job ${r.job_id} round ${r.round_number}: ${r.survivor_count} survivors, total weight ${r.total_weight}, ${r.mean.length} values`,
    `mean: [${shown.join(', ')}${more}]`,
    `the whole sum, mean and survivors: --json (stdout) or --out DIR (result.json, and a training job's model)`,
  ].join('\n');
}
