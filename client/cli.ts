/** `aegis client enroll` and `aegis client run`: what a client operator runs on a device. */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { z } from 'zod';
import { reportError } from '../shared/cli/output.js';
import { obtainPassphrase } from '../shared/cli/passphrase.js';
import { encodeWeightedInput } from '../shared/crypto/quantize.js';
import { DeterministicRng } from '../shared/crypto/rng.js';
import { claimDataDir } from '../shared/data-dir-lock.js';
import { AegisError, ErrorCode, isAegisError } from '../shared/errors.js';
import { createLogger } from '../shared/log.js';
import type { RoundRef } from '../shared/protocol/messages.js';
import type { RoundParams } from '../shared/protocol/params.js';
import { ClientRunner, type RunnerEvent } from './agent/connection.js';
import { enrollAndWait, ENROLL_WAIT_MS } from './enroll/wait.js';
import { DEFAULT_TLS_KEY_TYPE, type TlsKeyType } from './enroll/csr.js';
import { TLS_KEY_TYPES } from '../shared/keystore/round-key.js';
import { parseDuration, parseIntOption, progress } from '../shared/cli/output.js';
import { loadClient, openOrCreateIdentity, readClientConfig, saveCertificate, saveEnrollment } from './agent/data-dir.js';
import type { TrainingRound } from './admission/training-round.js';
import { MemoryDataStore, readExampleFile } from './store/memory.js';
import { assertFileExists, readJsonFile } from '../shared/cli/files.js';
import { trainLocally, validateLocally } from './trainer/index.js';
import { externalTrainerRunner } from './trainer/external.js';
import { splitCommand } from '../shared/trainer/process.js';
import { registerAudit } from './audit/cli.js';
import { registerData } from './store/cli.js';
import { SqliteDataStore, STORE_FILE } from './store/sqlite.js';
import { hasKek, initKek, openKek } from '../shared/keystore/kek-config.js';
import { obtainPin } from '../shared/cli/passphrase.js';
import { kekInitOptions, resumePendingRotation, withKekOptions, withRotationOptions, type KekCliOptions, type RotationCliOptions } from '../shared/keystore/keys-cli.js';
import type { ManagedKek } from '../shared/keystore/kek.js';
import { effectivePolicy, recordPolicy, runKeyCheck, scheduleKeyChecks, type RotatedKey, type RotationSink } from '../shared/keystore/policy.js';
import { serveMetrics } from '../shared/metrics/serve.js';
import { ClientMetrics } from './agent/metrics.js';
import { applyConfigFile } from '../shared/cli/config.js';
import { rekeyIfDue, type Rekeyer } from './agent/data-dir.js';
import { rawInputId } from './admission/ledger.js';
import { openLedger } from './admission/ledger-file.js';
import { registerLedger } from './admission/ledger-cli.js';
import { privacyBudgetOption, registerPrivacy } from './admission/privacy-cli.js';
import { existsSync } from 'node:fs';
import { AuditBook } from './audit/audit.js';
import { TrustBook } from '../shared/trust/trust-book.js';
import { registrySource } from '../shared/trust/registry-source.js';

const DEFAULT_DIR = process.env.AEGIS_CLIENT_DIR ?? './aegis-client';

/** `--input FILE`: `{ "values": [...], "weight": 1 }` (weight: the client's example count). */
const InputSchema = z.object({ values: z.array(z.number()).min(1), weight: z.number().int().min(0).default(1) }).strict();

/** Reads the input file at each round (so a fresh update is picked up) and quantizes it. */
async function readInput(path: string): Promise<{ values: number[]; weight: number }> {
  const json = await readJsonFile(path, '--input');
  const r = InputSchema.safeParse(Array.isArray(json) ? { values: json } : json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const [field, index] = issue.path;
    const where = field === undefined ? '' : ` field '${String(field)}'${index === undefined ? '' : ` value ${String(index)}`}`;
    throw new AegisError(ErrorCode.InvalidArgument, `${path}:${where} ${issue.message.toLowerCase()}`, 'an --input file holds {"values": [numbers], "weight": integer} (or a bare array of numbers)');
  }
  return r.data;
}

/** The data dir's store for a long-running `client run` (its KEK stays open while the process runs). */
async function openStoreForRun(dir: string, passphrase: string, keep?: (kek: ManagedKek) => void): Promise<SqliteDataStore> {
  const kek = await openKek(dir, { passphrase: async () => passphrase, pin: obtainPin });
  const store = await SqliteDataStore.open(dir, kek);
  await resumePendingRotation(dir, kek, [store]);
  keep?.(kek);
  return store;
}

/** `--heartbeat-interval`: 0 (off) or 1 s .. 1 day. */
function heartbeatInterval(v: string): number {
  const ms = parseDuration('heartbeat-interval', 0, 86_400_000)(v);
  if (ms !== 0 && ms < 1000) throw new Error('--heartbeat-interval must be 0 (off) or a duration of at least 1s');
  return ms;
}

/** `--tls-key`: p256 or ed25519 (checked in the action, so a bad value is an `invalid-argument` exit 2 like any CLI error). */
function tlsKeyOption(v: string | undefined): TlsKeyType | undefined {
  if (v === undefined) return undefined;
  if (!(TLS_KEY_TYPES as readonly string[]).includes(v)) throw new AegisError(ErrorCode.InvalidArgument, `--tls-key must be one of ${TLS_KEY_TYPES.join(', ')}, got '${v.slice(0, 40)}'`);
  return v as TlsKeyType;
}

/** `--trainer-cmd`: the argv, or a usage error naming the flag. */
function trainerCommand(line: string): string[] {
  try {
    return splitCommand(line);
  } catch (err) {
    throw new AegisError(ErrorCode.InvalidArgument, `--trainer-cmd: ${err instanceof Error ? err.message : String(err)}`, "quote the command as a shell would, e.g. --trainer-cmd '/usr/bin/python3 train.py --epochs 2'");
  }
}

function addressPlusOne(address: string): string {
  const m = /^(.*):(\d+)$/.exec(address);
  if (!m) throw new AegisError(ErrorCode.InvalidArgument, `--coordinator must be HOST:PORT, got '${address}'`);
  return `${m[1]}:${Number(m[2]) + 1}`;
}

export function registerClient(program: Command): void {
  const group = program.command('client').description('enroll this device and take part in rounds (client operators)');
  withKekOptions(group.command('enroll'), 'when the data dir has no KEK yet: ')
    .description('create the identity key, send a CSR with a one-time token, store the certificate; a new data dir also gets its KEK and encrypted store')
    .requiredOption('--coordinator <host:port>', "the coordinator's address")
    .requiredOption('--token <token>', 'the one-time enrollment token (aegis clients invite)')
    .requiredOption('--ca <file>', "the coordinator's CA certificate (PEM) to trust")
    .option('--data-dir <dir>', 'where the sealed identity key and certificate go', DEFAULT_DIR)
    .option('--id <client-id>', 'the client id to enroll as (default: a random one)')
    .option('--enroll-address <host:port>', 'the enrollment address (default: coordinator port + 1)')
    .option('--wait <duration>', 'with an offline CA: how long to wait for ops to sign the request', parseDuration('wait', 0, 7 * 86_400_000), ENROLL_WAIT_MS)
    .option('--tls-key <type>', 'the TLS key type: p256 (accepted by every TLS stack), or ed25519 (for a coordinator from before P-256)', DEFAULT_TLS_KEY_TYPE)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: KekCliOptions & { coordinator: string; token: string; ca: string; dataDir: string; id?: string; enrollAddress?: string; wait: number; tlsKey: string; json?: boolean }) => {
      try {
        const tlsKeyType = tlsKeyOption(o.tlsKey);
        const dir = resolve(o.dataDir);
        const kekOptions = kekInitOptions(o);
        const existing = await readClientConfig(dir);
        if (existing && o.id && o.id !== existing.clientId) {
          throw new AegisError(ErrorCode.KeyAlreadyBound, `${dir} already holds client '${existing.clientId}'; use another data dir for another id`);
        }
        const caPem = await readFile(o.ca, 'utf8').catch(() => {
          throw new AegisError(ErrorCode.NotFound, `cannot read the CA certificate ${o.ca}`, 'check the path');
        });
        const passphrase = await obtainPassphrase({ confirm: existing === undefined, what: `the identity key in ${dir}` });
        const { identity } = await openOrCreateIdentity(dir, passphrase);
        const clientId = o.id ?? existing?.clientId ?? `client-${Buffer.from(identity.publicKey.subarray(0, 6)).toString('hex')}`;
        const enrollAddress = o.enrollAddress ?? addressPlusOne(o.coordinator);
        const r = await enrollAndWait({
          enrollAddress,
          caPem,
          token: o.token,
          identity,
          clientId,
          waitMs: o.wait,
          ...(tlsKeyType ? { tlsKeyType } : {}),
          onPending: (id) => progress(`waiting for the offline CA to sign request ${id} (up to ${Math.round(o.wait / 1000)} s; ops run aegis ca sign-csr)`),
        });
        await saveEnrollment(dir, { config: { version: 1, clientId: r.clientId, coordinator: o.coordinator, enrollAddress }, certificateDer: r.certificateDer, caDer: r.caDer });
        // The contribution ledger starts with the enrollment. A dir that took part in rounds
        // before keeps the ledger it has; without one, `client run` decides (--new-ledger).
        await openLedger(dir, identity.seed, { missing: 'create-if-new' }).catch((err: unknown) => {
          if (!isAegisError(err, ErrorCode.FailedPrecondition)) throw err;
        });
        // The data dir's KEK and encrypted store, as `aegis client init` makes them (kept if already there).
        if (!(await hasKek(dir))) {
          const kek = await initKek(dir, kekOptions, { passphrase: async () => passphrase, pin: obtainPin });
          try {
            (await SqliteDataStore.open(dir, kek)).close();
          } finally {
            await kek.close();
          }
        }
        if (o.json) process.stdout.write(`${JSON.stringify({ ok: true, client_id: r.clientId, data_dir: dir })}\n`);
        else process.stdout.write(`enrolled as ${r.clientId}; run: aegis client run --data-dir ${dir}\n`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  withRotationOptions(group.command('run'))
    .description('wait for rounds and take part; reconnects with backoff, renews the certificate; rotates its keys when due (KEK of the store, identity key)')
    .option('--config <file>', 'a JSON file of these options by their long names in camelCase, or sections (e.g. {"rotation": {"kek_days": 30, "signing_days": 30}}); options given on the command line win')
    .option('--data-dir <dir>', 'the enrolled data dir', DEFAULT_DIR)
    .option('--input <file>', 'for plain rounds: this client\'s update {"values": [...], "weight": n}, read at each round')
    .option(
      '--input-reuse',
      'contribute the same plain input to more than one round; off by default (such a round is sat out with input-reused): a coordinator that sums one input in two cohorts learns it as the difference of the sums',
    )
    .option(
      '--privacy-budget <epsilon=E,delta=D>',
      "this client's privacy budget over every DP round it contributes to (all publishers and jobs): a round whose cost would take the total past epsilon at delta is declined privacy-budget, and so is every round that is not differentially private; without it DP rounds are still charged (aegis client privacy status)",
    )
    .option('--new-ledger', 'start an empty contribution ledger in a data dir that took part in rounds before but has no ledger.json (what it joined and contributed is then forgotten)')
    .option('--train-data <file>', 'for training jobs: local examples, one JSON object per line with the fields the manifest names (e.g. {"pixels": [...], "digit": 3})')
    .option('--trainer-cmd <command>', 'for training jobs: run local training (fit, and the validation evaluate) in this external process instead of tfjs, one process per call (docs/trainer-protocol.md); the job\'s model must be format safetensors. Split like a shell line, run without a shell')
    .option('--trainer-timeout <seconds>', 'with --trainer-cmd: the most one trainer call may take (a round\'s phase-0 deadline may cut it shorter)', parseIntOption('trainer-timeout', 1, 7 * 86_400), 600)
    .option('--coordinator <host:port[,host:port...]>', 'override the address recorded at enrollment; a comma-separated list of coordinator front ends (sharing one Redis) is accepted: the client uses one and fails over to the next when it goes away')
    .option('--backup-registry <dir|host:port>', "take only publisher-signed jobs, checked against the coordinator's registry and this backup registry (a registry directory, or another coordinator's enrollment address)")
    .option('--allow-unsigned', 'take part in unsigned jobs (no registries): local experiments only')
    .option('--registry-ca <file>', 'the CA of a backup registry address (default: the pinned coordinator CA)')
    .option('--heartbeat-interval <duration>', 'while connected, tell the coordinator this device is alive about this often (jittered; 0 = off); config heartbeat.interval', heartbeatInterval, 60_000)
    .option('--metrics <host:port>', 'serve Prometheus metrics on http://HOST:PORT/metrics (loopback only): key rotations and ages, heartbeats')
    .option('--tls-key <type>', 'move the TLS certificate to this key type (p256 or ed25519) at start, keeping the round key; default: keep the current certificate\'s')
    .action(async (o: { tlsKey?: string; metrics?: string; heartbeatInterval: number; config?: string; dataDir: string; input?: string; inputReuse?: boolean; newLedger?: boolean; privacyBudget?: string; trainData?: string; trainerCmd?: string; trainerTimeout: number; coordinator?: string; backupRegistry?: string; registryCa?: string; allowUnsigned?: boolean } & RotationCliOptions, cmd: Command) => {
      const log = createLogger('client');
      try {
        if (o.config) await applyConfigFile(o.config, o as unknown as Record<string, unknown>, cmd);
        const tlsKeyType = tlsKeyOption(o.tlsKey);
        const dirForStore = resolve(o.dataDir);
        const hasStore = existsSync(join(dirForStore, STORE_FILE)) && (await hasKek(dirForStore));
        const noData = 'give --input (plain rounds), --train-data (training jobs), or import training data into the encrypted store (aegis client data import)';
        if (!o.input && !o.trainData && !hasStore) throw new AegisError(ErrorCode.InvalidArgument, noData);
        if (!o.backupRegistry && !o.allowUnsigned) {
          throw new AegisError(ErrorCode.InvalidArgument, 'give --backup-registry DIR|HOST:PORT (only jobs a trusted publisher signed run), or --allow-unsigned for a local experiment');
        }
        // The input files are checked before any key is opened: a bad one is reported at start,
        // naming the file, the line and the field.
        if (o.input) await readInput(o.input);
        const privacyBudget = o.privacyBudget === undefined ? undefined : privacyBudgetOption(o.privacyBudget);
        if (o.registryCa) await assertFileExists(o.registryCa, '--registry-ca');
        const trainerArgv = o.trainerCmd === undefined ? undefined : trainerCommand(o.trainerCmd);
        if (trainerArgv && !o.trainData && !hasStore) throw new AegisError(ErrorCode.InvalidArgument, "--trainer-cmd needs training data: --train-data FILE, or records imported into the data dir's encrypted store (aegis client data import)");
        const trainRecords = o.trainData ? await readExampleFile(o.trainData) : undefined;
        const dir = resolve(o.dataDir);
        const passphrase = await obtainPassphrase({ what: `the identity key in ${dir}` });
        let storeKek: ManagedKek | undefined;
        const loaded = await loadClient(dir, passphrase);
        // One client per data dir, and no key change under it while it runs (released at exit).
        await claimDataDir(dir, { command: 'aegis client run', mode: 'exclusive' });
        // The contribution ledger (DATA_DIR/ledger.json), verified under the identity: a damaged
        // one, or none in a dir that took part in rounds before, stops the client here.
        const { ledger, created } = await openLedger(dir, loaded.identity.seed, { missing: o.newLedger ? 'create' : 'create-if-new' });
        if (created) log.info({ file: join(dir, 'ledger.json') }, 'contribution ledger created');
        // Training data: a plain JSONL file given here, or else the data dir's encrypted store.
        const store = trainRecords
          ? new MemoryDataStore(trainRecords)
          : hasStore
            ? await openStoreForRun(dir, passphrase, (k) => (storeKek = k))
            : undefined;
        const records = store ? await store.count() : 0;
        if (!o.input && records === 0) throw new AegisError(ErrorCode.InvalidArgument, `${noData}: the store in ${dir} is empty`);
        if (store) log.info({ records }, 'training data loaded');
        let pending: Uint32Array | null = null;
        // A plain round's input is read once, when the round is admitted (its reuse check needs
        // it), and that same input is then quantized for the round.
        const roundKey = (r: RoundRef): string => `${Buffer.from(r.manifestHash).toString('hex')}:${r.roundIndex}`;
        let admittedInput: { round: string; x: { values: number[]; weight: number } } | undefined;
        const inputFile = o.input;
        const input = (_round: unknown, params: RoundParams): Uint32Array => {
          if (!pending || pending.length !== params.dim + 1) throw new AegisError(ErrorCode.InvalidArgument, `the input has ${pending ? pending.length - 1 : 0} values, the round wants ${params.dim}`);
          return pending;
        };
        const metrics = o.metrics ? new ClientMetrics() : undefined;
        const metricsServer = metrics && o.metrics ? await serveMetrics(metrics, o.metrics) : undefined;
        if (metricsServer) progress(`metrics on http://${metricsServer.address}/metrics`);
        const runner = new ClientRunner({
          address: o.coordinator ?? loaded.config.coordinator,
          caPem: loaded.caPem,
          clientId: loaded.config.clientId,
          identity: loaded.identity,
          certificateDer: loaded.certificateDer,
          ...(tlsKeyType ? { tlsKeyType } : {}),
          ...(inputFile
            ? {
                input,
                inputIdentity: async (round: RoundRef) => {
                  const x = await readInput(inputFile);
                  admittedInput = { round: roundKey(round), x };
                  return rawInputId(x.values, x.weight);
                },
              }
            : {}),
          ...(o.inputReuse ? { inputReuse: true } : {}),
          ledger,
          ...(privacyBudget ? { privacyBudget } : {}),
          audit: await AuditBook.open(dir),
          ...(o.backupRegistry
            ? { trust: { backup: registrySource(o.backupRegistry, o.registryCa ? await readFile(o.registryCa, 'utf8') : loaded.caPem), book: TrustBook.open(dir) } }
            : {}),
          ...(store && trainerArgv
            ? {
                ...externalTrainerRunner({
                  cmd: trainerArgv,
                  timeoutMs: o.trainerTimeout * 1000,
                  data: store,
                  // The trainer's stderr is logged only redacted (shared/trainer/redact.ts).
                  onFailure: (err, call, round) => log.warn({ code: err.code, kind: err.kind, call, round: round.roundIndex, ...(err.tensor ? { tensor: err.tensor } : {}), reason: err.message, stderrTail: err.stderrTail }, 'trainer failed'),
                }),
              }
            : {}),
          ...(store && !trainerArgv
            ? {
                train: (round: TrainingRound) =>
                  trainLocally({ manifest: round.manifest, globalWeights: round.globalWeights, data: store, maxWeight: 2 ** round.manifest.round.bits - 1 }),
                validate: async (round: TrainingRound) => validateLocally({ manifest: round.manifest, weights: round.globalWeights, data: store }),
              }
            : {}),
          beforeRound: async (round, params) => {
            if (!inputFile) return;
            // The input is quantized (fresh randomness for the rounding) at each round.
            try {
              const x = admittedInput?.round === roundKey(round) ? admittedInput.x : await readInput(inputFile);
              pending = encodeWeightedInput(x.values, x.weight, params, DeterministicRng.secure());
            } catch (err) {
              pending = null;
              log.error({ code: err instanceof AegisError ? err.code : 'internal' }, 'cannot read the input for this round');
            }
          },
          onCertificate: (der) => saveCertificate(dir, der),
          heartbeatMs: o.heartbeatInterval,
          onEvent: (e: RunnerEvent) => {
            if (e.kind === 'heartbeat') metrics?.heartbeat(e.ok);
            if (e.kind === 'fatal') log.error({ code: e.code, reason: e.message }, 'cannot go on');
            else if (e.kind === 'disconnected') log.warn({ code: e.code, retryInMs: e.retryInMs }, 'disconnected');
            else if (e.kind === 'computed' || (e.kind === 'heartbeat' && e.ok)) log.debug(e, e.kind);
            else log.info(e, e.kind);
          },
        });
        // Time-based key rotation (shared/keystore/policy.ts): at start, then every hour — the
        // store's KEK (same code as aegis keys rotate) and the identity key (new key, certificate
        // renewed for it over mTLS). Logged, and counted with --metrics.
        const policy = await effectivePolicy(dir, o);
        await recordPolicy(dir, policy);
        const sink: RotationSink | undefined = metrics ? { rotated: (r) => metrics.keyRotatedBy(r.key, r.reason), age: (k, sec) => metrics.keyAgeSeconds(k, sec) } : undefined;
        // An identity rotation re-seals the ledger: first for both identities (before the
        // coordinator certifies the new key), then for the new one alone, so a crash at any step
        // leaves a ledger that opens under the identity the data dir settles on.
        let rotatingTo: Uint8Array | undefined;
        const rekeyer: Rekeyer = {
          rekey: async (next) => {
            await ledger.sealAlsoFor(next.seed);
            rotatingTo = Uint8Array.from(next.seed);
            return runner.rekey(next);
          },
        };
        const rotateIdentity = async (): Promise<RotatedKey | undefined> => {
          const r = await rekeyIfDue(dir, passphrase, policy, rekeyer);
          if (r && rotatingTo) await ledger.sealOnlyFor(rotatingTo);
          rotatingTo = undefined;
          return r;
        };
        const keyCheck = async (): Promise<void> => {
          const identity = rotateIdentity;
          if (storeKek && store instanceof SqliteDataStore) await runKeyCheck({ dir, kek: storeKek, holders: [store], policy, extra: [identity], log, ...(sink ? { sink } : {}) });
          else {
            const r = await identity();
            if (r) {
              log.info({ keyName: r.key, version: r.version, previousVersion: r.previousVersion, reason: r.reason }, 'key rotated');
              sink?.rotated?.(r);
            }
          }
        };
        const keyCheckLogged = (attempt = 0): Promise<void> =>
          keyCheck().catch((err: unknown) => {
            const code = err instanceof AegisError ? err.code : 'internal';
            log.warn({ code }, 'key rotation check failed');
            // The coordinator not reachable yet, or busy with this client's certificate renewal:
            // try again soon rather than at the next hourly check.
            if (code === ErrorCode.Unavailable && attempt < 5) setTimeout(() => void keyCheckLogged(attempt + 1), 5_000).unref();
          });
        runner.start();
        await keyCheckLogged();
        const keyChecks = scheduleKeyChecks(() => keyCheckLogged());
        log.info({ client: loaded.config.clientId, coordinator: o.coordinator ?? loaded.config.coordinator }, 'client running');
        const stop = (signal: string): void => {
          log.info({ signal }, 'shutting down');
          keyChecks.stop();
          void runner.stop().then(() => process.exit(0));
        };
        process.on('SIGINT', () => stop('SIGINT'));
        process.on('SIGTERM', () => stop('SIGTERM'));
        const err = await runner.done;
        if (err) {
          reportError(err, false);
          process.exit(2);
        }
      } catch (err) {
        reportError(err, false);
        process.exit(2);
      }
    });
  registerAudit(group);
  registerLedger(group);
  registerPrivacy(group);
  registerData(group);
}
