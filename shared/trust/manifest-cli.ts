/**
 * `aegis manifest keygen|new|sign|inspect|verify` (ML engineers and ops): publisher keys sealed
 * like every other private key, an example manifest to edit, DSSE signing, and checks.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { parseChoice, parseDuration, parseFloatOption, parseIntOption, reportError } from '../cli/output.js';
import { calibrate } from '../dp/calibrate.js';
import { dpSpecOfCalibration } from '../protocol/dp-manifest.js';
import { obtainPassphrase } from '../cli/passphrase.js';
import { ed25519PublicFromSeed } from '../crypto/ed25519.js';
import { AegisError, ErrorCode } from '../errors.js';
import { writeFileAtomic } from '../fs.js';
import { readKeyfile, writeKeyfile } from '../keystore/passphrase-keyfile.js';
import { DIGITS_TRAINING, digitsModel } from '../model/digits.js';
import { loadTf, weightsToBytes } from '../model/tfjs.js';
import { parseManifest, type JobManifestInput } from '../protocol/manifest.js';
import { validateRoundParams } from '../protocol/params.js';
import { keyIdOf, MANIFEST_PAYLOAD_TYPE, parseEnvelope, verifyEnvelope } from './dsse.js';
import { describeManifest, PUBLISHER_KEY_LABEL, signManifest, verifySignedManifest } from './manifest.js';
import { checkRegistries, verifyWithPublishers } from './registry.js';
import { registrySource } from './registry-source.js';
import { TrustBook } from './trust-book.js';

async function readOrFail(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch {
    throw new AegisError(ErrorCode.NotFound, `cannot read ${what} ${path}`, 'check the path');
  }
}

/** The public half of a publisher key file: `<key>.pub.json`. */
export const publicKeyPath = (keyPath: string): string => `${keyPath.replace(/\.key$/, '')}.pub.json`;

/** Reads a publisher public key from a `.pub.json` file, or a file/literal of base64 or hex. */
export async function readPublicKey(spec: string): Promise<Uint8Array> {
  let text = spec;
  if (!/^[A-Za-z0-9+/=]{43,44}$/.test(spec) && !/^[0-9a-f]{64}$/.test(spec)) text = (await readOrFail(spec, 'the public key')).toString('utf8').trim();
  if (text.startsWith('{')) {
    const o = JSON.parse(text) as { publicKey?: unknown };
    if (typeof o.publicKey !== 'string') throw new AegisError(ErrorCode.InvalidArgument, 'the public key file has no publicKey field');
    text = o.publicKey;
  }
  const key = /^[0-9a-f]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (key.length !== 32) throw new AegisError(ErrorCode.InvalidArgument, 'a publisher public key is 32 bytes (base64 or hex)');
  return new Uint8Array(key);
}

interface NewOptions {
  out: string;
  kind: 'training' | 'plain';
  weightsOut?: string;
  job: string;
  clients: number;
  rounds?: number;
  dim: number;
  validFor: number;
  dp?: boolean;
  epsilon: number;
  delta: number;
  dpClip: number;
  json?: boolean;
}

export function registerManifest(program: Command): void {
  const group = program.command('manifest').description('job manifests: publisher keys, an example to edit, signing, checks');

  group
    .command('keygen')
    .description('make a publisher key (sealed with a passphrase) and print its key id and public key')
    .requiredOption('--out <file>', 'the sealed private key file (the public key goes beside it as <name>.pub.json)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { out: string; json?: boolean }) => {
      try {
        const seed = randomBytes(32);
        const publicKey = ed25519PublicFromSeed(seed);
        const passphrase = await obtainPassphrase({ confirm: true, what: `the publisher key ${o.out}` });
        await writeKeyfile(o.out, passphrase, PUBLISHER_KEY_LABEL, { seed });
        seed.fill(0);
        const pub = { keyid: keyIdOf(publicKey), publicKey: Buffer.from(publicKey).toString('base64') };
        await writeFileAtomic(publicKeyPath(o.out), `${JSON.stringify(pub, null, 2)}\n`, 0o644);
        if (o.json) process.stdout.write(`${JSON.stringify({ ...pub, key_file: o.out, public_key_file: publicKeyPath(o.out) })}\n`);
        else process.stdout.write(`key id     ${pub.keyid}\npublic key ${pub.publicKey}\nsealed key ${o.out}; public key ${publicKeyPath(o.out)} (give it to the registry: aegis registry add-publisher)\n`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  group
    .command('new')
    .description("write a complete, valid manifest to edit: a training job (the demo's digits model, with its initial weights) or a plain job (clients sum vectors they supply)")
    .requiredOption('--out <file>', 'the manifest (JSON)')
    .option('--kind <kind>', 'training (a model trained by FedAvg) or plain (a sum of vectors)', parseChoice('kind', ['training', 'plain']), 'training')
    .option('--weights-out <file>', 'training: the initial weights (default: <out>.weights.bin)')
    .option('--job <id>', 'the job id', 'digits')
    .option('--clients <n>', 'the cohort size n (rounds need at least t = n/2 + 1 of them connected)', parseIntOption('clients', 3, 10_000), 10)
    .option('--rounds <n>', 'rounds the job runs (default: 10 for training, 1 for plain)', parseIntOption('rounds', 1, 10_000))
    .option('--dim <m>', 'plain: values per client vector', parseIntOption('dim', 1, 10_000_000), 10)
    .option('--valid-for <duration>', 'how long the manifest stays valid from now (e.g. 7d, 30d, 12h)', parseDuration('valid-for', 60_000, 366 * 86_400_000), 7 * 86_400_000)
    .option('--dp', 'training: add a dp section (distributed discrete Gaussian noise inside the sum), calibrated for the whole job by aegis dp calibrate')
    .option('--epsilon <e>', 'with --dp: the job’s total epsilon', parseFloatOption('epsilon', 0.01, 1000), 8)
    .option('--delta <d>', 'with --dp: the job’s delta', parseFloatOption('delta', 1e-15, 0.1), 1e-5)
    .option('--dp-clip <c>', 'with --dp: the L2 norm each client update is clipped to', parseFloatOption('dp-clip', 1e-6, 1e6), 1)
    .option('--json', 'print one JSON object on stdout')
    .action(async function (this: Command, o: NewOptions) {
      if (o.dp && o.kind !== 'training') this.error("error: option '--dp' needs --kind training (differential privacy protects a model's updates)", { exitCode: 2, code: 'aegis.manifest.dp-kind' });
      for (const [flag, given] of [['--epsilon', 'epsilon'], ['--delta', 'delta'], ['--dp-clip', 'dpClip']] as const) {
        if (!o.dp && this.getOptionValueSource(given) === 'cli') this.error(`error: option '${flag}' needs --dp`, { exitCode: 2, code: 'aegis.manifest.dp-option' });
      }
      try {
        const now = Date.now();
        const common = {
          version: 1 as const,
          jobId: o.job,
          revision: 1,
          deadlines: { advertiseMs: 60_000, shareMs: 30_000, maskedMs: 600_000, consistencyMs: 30_000, unmaskMs: 30_000 },
          issuedAt: new Date(now).toISOString(),
          expiresAt: new Date(now + o.validFor).toISOString(),
        };
        // The threshold the manifest will carry (the round parameters' default: a majority of the neighbours).
        const { threshold } = validateRoundParams({ dim: 1, cohort: o.clients, clip: 1, bits: 16 });
        let m: JobManifestInput;
        let weights: Float32Array | undefined;
        if (o.kind === 'plain') {
          m = { ...common, rounds: o.rounds ?? 1, round: { dim: o.dim, cohort: o.clients, clip: 1, bits: 16 } };
        } else {
          const { tf } = await loadTf();
          const digits = await digitsModel(tf);
          weights = digits.weights;
          const rounds = o.rounds ?? 10;
          m = {
            ...common,
            rounds,
            round: { dim: weights.length, cohort: o.clients, clip: 4096, bits: 24 },
            model: digits.spec,
            training: { ...DIGITS_TRAINING },
            validation: { gate: 0.05, localFraction: 0.1 },
          };
          if (o.dp) {
            // The noise must hold with the fewest survivors a round can complete with: the threshold.
            const c = calibrate({ epsilon: o.epsilon, delta: o.delta, rounds, clients: threshold, maxClients: o.clients, dim: weights.length, clip: o.dpClip });
            m.dp = dpSpecOfCalibration(c);
          }
        }
        const bytes = new TextEncoder().encode(`${JSON.stringify(m, null, 2)}\n`);
        const parsed = parseManifest(bytes); // what we write is valid
        const weightsOut = weights ? (o.weightsOut ?? `${o.out.replace(/\.json$/, '')}.weights.bin`) : undefined;
        await writeFile(o.out, bytes);
        if (weights && weightsOut) await writeFile(weightsOut, weightsToBytes(weights));
        const signed = `${o.out.replace(/\.json$/, '')}.dsse.json`;
        const out = {
          manifest: o.out,
          kind: o.kind,
          ...(weightsOut ? { weights: weightsOut, initial_weights_sha256: parsed.manifest.model?.initialWeightsSha256 } : {}),
          job_id: o.job,
          dim: parsed.manifest.round.dim,
          clients: o.clients,
          threshold,
          rounds: parsed.manifest.rounds,
          expires_at: parsed.manifest.expiresAt,
          dp: parsed.manifest.dp
            ? { epsilon: parsed.manifest.dp.epsilon, delta: parsed.manifest.dp.delta, noise_multiplier: parsed.manifest.dp.noiseMultiplier, clip: parsed.manifest.dp.clip, min_clients: parsed.manifest.dp.minClients, bits: parsed.manifest.dp.bits }
            : null,
        };
        if (o.json) process.stdout.write(`${JSON.stringify(out)}\n`);
        else {
          process.stdout.write(
            `wrote ${o.out} (${o.kind} job ${o.job}, ${out.dim} ${o.kind === 'plain' ? 'values per client' : 'parameters'}, ${out.rounds} round${out.rounds === 1 ? '' : 's'}, cohort ${o.clients}: rounds start with at least ${threshold} clients connected; valid until ${out.expires_at})` +
              `${weightsOut ? ` and ${weightsOut}` : ''}` +
              `${out.dp ? `; differential privacy (epsilon ${out.dp.epsilon.toPrecision(4)}, delta ${out.dp.delta} for the whole job, noise multiplier ${out.dp.noise_multiplier.toPrecision(4)}, updates clipped to L2 norm ${out.dp.clip})` : ''}` +
              `; edit it, then: aegis manifest sign ${o.out} --key publisher.key --out ${signed}\n`,
          );
        }
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  group
    .command('sign')
    .description('sign a manifest (checked first) into a DSSE envelope')
    .argument('<manifest>', 'the manifest (JSON)')
    .requiredOption('--key <file>', 'the sealed publisher key')
    .requiredOption('--out <file>', 'the envelope to write')
    .option('--json', 'print one JSON object on stdout')
    .action(async (file: string, o: { key: string; out: string; json?: boolean }) => {
      try {
        const bytes = await readOrFail(file, 'the manifest');
        const { seed } = await readKeyfile(o.key, await obtainPassphrase({ what: `the publisher key ${o.key}` }), { expectedLabel: PUBLISHER_KEY_LABEL });
        if (!seed) throw new AegisError(ErrorCode.InvalidArgument, `${o.key} is not a publisher key`);
        const env = signManifest(bytes, [seed]);
        seed.fill(0);
        await writeFile(o.out, `${JSON.stringify(env, null, 2)}\n`);
        const { manifest, hash } = parseManifest(bytes);
        const out = { envelope: o.out, job_id: manifest.jobId, revision: manifest.revision, manifest_sha256: Buffer.from(hash).toString('hex'), keyid: env.signatures[0]!.keyid };
        if (o.json) process.stdout.write(`${JSON.stringify(out)}\n`);
        else process.stdout.write(`signed job ${out.job_id} revision ${out.revision} (manifest sha256 ${out.manifest_sha256}) with key ${out.keyid}: ${o.out}\n`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  group
    .command('verify')
    .description('check a signed manifest as a client would: both registries agree, a listed publisher signed it, nothing expired or older (exit 0), else a reason code')
    .argument('<envelope>', 'the signed manifest (DSSE JSON)')
    .requiredOption('--registry <dir|host:port>', "the registry: a registry directory, or a coordinator's enrollment address")
    .requiredOption('--backup-registry <dir|host:port>', 'the backup registry, from another place')
    .option('--ca <file>', 'the CA certificate for registry addresses')
    .option('--state <data-dir>', "a client data dir: check against the versions it accepted (rollback); nothing is written")
    .option('--json', 'print one JSON object on stdout')
    .action(async (file: string, o: { registry: string; backupRegistry: string; ca?: string; state?: string; json?: boolean }) => {
      try {
        const ca = o.ca ? (await readOrFail(o.ca, 'the CA certificate')).toString('utf8') : undefined;
        const [primary, backup] = await Promise.all([registrySource(o.registry, ca)(), registrySource(o.backupRegistry, ca)()]);
        const seen = o.state ? await TrustBook.open(o.state).load() : { revisions: {} as Record<string, number> };
        const now = new Date();
        const checked = checkRegistries(primary, backup, seen.registry, now);
        const envelope = await readOrFail(file, 'the envelope');
        const v = verifyWithPublishers(checked, (key) => verifySignedManifest(envelope, key, { now }));
        const previous = seen.revisions[v.manifest.jobId];
        if (previous !== undefined && v.manifest.revision < previous) {
          throw new AegisError(ErrorCode.Rollback, `revision ${v.manifest.revision} of job '${v.manifest.jobId}' is older than revision ${previous}, already accepted`);
        }
        const signers = v.signers.map((keyid) => ({ keyid, name: checked.publishers.publishers[keyid]?.name ?? '' }));
        const out = {
          ok: true,
          job_id: v.manifest.jobId,
          revision: v.manifest.revision,
          manifest_sha256: Buffer.from(v.hash).toString('hex'),
          expires_at: v.manifest.expiresAt,
          signers,
          registry: {
            root_version: checked.root.version,
            publishers_version: checked.publishers.version,
            // Set while the backup lags: the primary's newer publishers version.
            primary_publishers_version: checked.primaryPublishers?.version ?? null,
          },
        };
        const agreement = checked.primaryPublishers
          ? `the backup lags (root v${out.registry.root_version}, publishers v${out.registry.publishers_version}; the primary has publishers v${checked.primaryPublishers.version})`
          : `registries agree at root v${out.registry.root_version}, publishers v${out.registry.publishers_version}`;
        if (o.json) process.stdout.write(`${JSON.stringify(out)}\n`);
        else process.stdout.write(`valid: job ${out.job_id} revision ${out.revision} (manifest sha256 ${out.manifest_sha256}), signed by ${signers.map((s) => `${s.name} (${s.keyid.slice(0, 16)}…)`).join(', ')}; ${agreement}\n`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  group
    .command('inspect')
    .description('print the signed fields and the signers in plain words (no trust decision: see verify)')
    .argument('<envelope>', 'the signed manifest (DSSE JSON)')
    .option('--public-key <file...>', "publisher public keys to check the signatures against (.pub.json, base64 or hex)")
    .option('--json', 'print one JSON object on stdout')
    .action(async (file: string, o: { publicKey?: string[]; json?: boolean }) => {
      try {
        const env = parseEnvelope(await readOrFail(file, 'the envelope'));
        if (env.payloadType !== MANIFEST_PAYLOAD_TYPE) throw new AegisError(ErrorCode.Malformed, `not a signed manifest (payload type ${env.payloadType.slice(0, 80)})`);
        const payload = Buffer.from(env.payload, 'base64');
        const { manifest, hash } = parseManifest(payload, new Date(0));
        const keys = await Promise.all((o.publicKey ?? []).map(readPublicKey));
        const signers = env.signatures.map((s) => {
          const pk = keys.find((k) => keyIdOf(k) === s.keyid);
          if (!pk) return { keyid: s.keyid };
          let verified = true;
          try {
            verifyEnvelope({ ...env, signatures: [s] }, MANIFEST_PAYLOAD_TYPE, (id) => (id === s.keyid ? pk : undefined));
          } catch {
            verified = false;
          }
          return { keyid: s.keyid, verified };
        });
        const expired = Date.parse(manifest.expiresAt) <= Date.now();
        if (o.json) process.stdout.write(`${JSON.stringify({ manifest_sha256: Buffer.from(hash).toString('hex'), expired, manifest, signers })}\n`);
        else process.stdout.write(`${[`manifest sha256 ${Buffer.from(hash).toString('hex')}${expired ? ' (EXPIRED)' : ''}`, ...describeManifest(manifest, signers)].join('\n')}\n`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
