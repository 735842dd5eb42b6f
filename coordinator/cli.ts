/**
 * `aegis coordinator start`, and the operator commands that talk to a running coordinator over
 * its Admin service with the operator credential sealed in the data dir: `aegis clients
 * invite|list|revoke`. The `aegis round …` commands are in round-cli.ts.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { create } from '@bufbuild/protobuf';
import { Command } from 'commander';
import { parseDuration, parseIntOption, progress, reportError, printResult } from '../shared/cli/output.js';
import { splitCommand } from '../shared/trainer/process.js';
import { DEFAULT_EVALUATOR_TIMEOUT_MS, type EvaluatorOptions } from './jobs/evaluator.js';
import { cliKekSecrets } from '../shared/cli/passphrase.js';
import { applyConfigFile } from '../shared/cli/config.js';
import { kekInitOptions, VAULT_FILE, withKekOptions, withRotationOptions, type KekCliOptions, type RotationCliOptions } from '../shared/keystore/keys-cli.js';
import { effectivePolicy, recordPolicy, runKeyCheck, scheduleKeyChecks } from '../shared/keystore/policy.js';
import { SealedVault } from '../shared/keystore/vault.js';
import { claimDataDir } from '../shared/data-dir-lock.js';
import { AegisError, ErrorCode, isAegisError } from '../shared/errors.js';
import * as admin from '../shared/gen/aegis/v1/admin_pb.js';
import { createLogger } from '../shared/log.js';
import { CoordinatorMetrics } from './service/metrics.js';
import { crashPoints } from './service/crash-points.js';
import { serveMetrics } from '../shared/metrics/serve.js';
import { LaunchQueue } from './queue/launch-queue.js';
import { UnmaskQueue } from './queue/unmask-queue.js';
import { JobDirectory } from './queue/job-directory.js';
import { connectRedis, redactRedisUrl } from './queue/redis.js';
import { DEFAULT_REDIS_LOG_EVERY_MS, RedisHealth } from './queue/redis-health.js';
import { onStopSignals } from './service/shutdown.js';
import { builtInOperator, hasCoordinatorSecrets, loadRegistry, openCoordinatorSecrets, readEndpoint, reissueOperatorIfDue, removeEndpoint, writeEndpoint } from './service/data-dir.js';
import { LocalTokenLedger, RedisTokenLedger, TOKEN_LEDGER_FILE } from './auth/seen-tokens.js';
import { Coordinator } from './service/coordinator.js';
import { awaitOfflineCredentials, OfflineEnrollment, serverHostsFor } from './auth/offline-ca.js';
import { DEFAULT_STATE_UNREACHABLE_AFTER_MS, RedisRounds } from './queue/redis-rounds.js';
import { RedisRegistryStore } from './queue/redis-registry.js';
import type { MaskJob } from './round/index.js';
import { Phase } from '../shared/protocol/vocabulary.js';
import { readSnapshot } from '../shared/trust/registry-dir.js';
import { MemoryDataStore, readExampleFile } from '../shared/store/memory.js';
import { dashboardBanner, dashboardStartOptions, withDashboardOptions, type DashboardCliOptions } from './dashboard/cli.js';
import { call, DEFAULT_DIR, operatorTtlDays, run, usageErrorsExit2, withAdmin, type AdminOpts } from './admin-client.js';


// ---------------------------------------------------------------------------------------------
// aegis coordinator start

export function registerCoordinator(program: Command): void {
  const group = usageErrorsExit2(program.command('coordinator').description('run the coordinator'));
  group
    .command('unmask-worker')
    .description("expand unmask parts for the coordinators on a Redis (scale the unmasking phase out to more processes or machines)")
    .requiredOption('--redis <url>', 'the Redis the coordinators run on', process.env.AEGIS_REDIS_URL)
    .option('--redis-prefix <prefix>', 'the key prefix on Redis', 'aegis')
    .option('--data-dir <dir>', "a coordinator data dir (for the deployment's queue key, sealed under its KEK)", DEFAULT_DIR)
    .option('--concurrency <n>', 'parts expanded at once', parseIntOption('concurrency', 1, 64), 1)
    .option('--redis-log-every <duration>', 'while Redis is unreachable, at most one log line per this long', parseDuration('redis-log-every', 1000, 3_600_000), DEFAULT_REDIS_LOG_EVERY_MS)
    .action(async (o: { redis: string; redisPrefix: string; dataDir: string; concurrency: number; redisLogEvery: number }) => {
      const log = createLogger('unmask-worker');
      try {
        const dir = resolve(o.dataDir);
        if (!hasCoordinatorSecrets(dir)) throw new AegisError(ErrorCode.NotFound, `${dir} is not a coordinator data dir (start the coordinator there first)`);
        const secrets = await openCoordinatorSecrets(dir, cliKekSecrets(`the coordinator keys in ${dir}`));
        const redis = await connectRedis(o.redis);
        const health = new RedisHealth(redis, { url: redactRedisUrl(o.redis), log, logEveryMs: o.redisLogEvery }).start();
        const queue = new UnmaskQueue(redis, secrets.queueKey, { prefix: o.redisPrefix, watch: (e) => health.watch(e) });
        secrets.queueKey.fill(0);
        await secrets.kek.close();
        queue.work({ concurrency: o.concurrency });
        progress(`unmask worker on ${redactRedisUrl(o.redis)} (prefix ${o.redisPrefix}), ${o.concurrency} at once`);
        log.info({ concurrency: o.concurrency }, 'unmask worker running');
        onStopSignals(
          () => [
            // Redis down: nothing waits for it (its pending commands fail at once).
            ['redis-down', () => (health.up ? undefined : health.disconnectAll())],
            ['unmask-queue', () => (health.up ? queue.close() : queue.closeNow())],
            ['redis', () => (health.up ? redis.quit() : redis.disconnect())],
            ['redis-health', () => health.stop()],
          ],
          log,
        );
      } catch (err) {
        reportError(err, false);
        process.exit(2);
      }
    });

  withDashboardOptions(withRotationOptions(withKekOptions(group.command('start'), 'first start only: ')))
    .description('start the coordinator (embedded by default: one process, round state in memory; with --redis: one front end of rounds whose state is shared on Redis)')
    .requiredOption('--listen <host:port>', 'mTLS address for clients and operators')
    .option('--enroll-listen <host:port>', 'server-TLS address for enrollment (default: the next port)')
    .option('--data-dir <dir>', 'where the sealed CA/token keys and the client registry live', DEFAULT_DIR)
    .option('--client-cert-ttl <duration>', 'client certificate lifetime', parseDuration('client-cert-ttl', 60_000, 7 * 86_400_000), 24 * 3_600_000)
    .option('--max-message-mb <n>', 'largest message taken, MiB', parseIntOption('max-message-mb', 1, 1024), 64)
    .option('--registry <dir>', 'a publisher registry directory (aegis registry init): take only manifests its publishers signed, and serve its signed metadata')
    .option('--allow-unsigned', 'take unsigned manifests (no registry): local experiments only')
    .option('--redis <url>', 'run on Redis (redis://HOST:PORT): round state, phase deadlines and launches are shared by every coordinator (front end) on the same Redis and prefix (default: embedded, no Redis)', process.env.AEGIS_REDIS_URL)
    .option('--redis-prefix <prefix>', 'the key prefix on Redis (several deployments on one Redis)', 'aegis')
    .option('--unmask-workers <n>', 'with --redis: unmask parts this process expands at once (0: leave them to `aegis coordinator unmask-worker` processes)', parseIntOption('unmask-workers', 0, 64), 1)
    .option('--unmask-parts <n>', "with --redis: worker jobs a round's unmasking is split into", parseIntOption('unmask-parts', 1, 1024), 2)
    .option('--redis-log-every <duration>', 'with --redis: while Redis is unreachable, at most one log line per this long', parseDuration('redis-log-every', 1000, 3_600_000), DEFAULT_REDIS_LOG_EVERY_MS)
    .option('--redis-down-abort-after <duration>', 'with --redis: rounds followed here abort (state-unreachable) once Redis has been unreachable this long', parseDuration('redis-down-abort-after', 1000, 86_400_000), DEFAULT_STATE_UNREACHABLE_AFTER_MS)
    .option('--metrics <host:port>', 'serve Prometheus metrics on http://HOST:PORT/metrics (loopback only; counts, phases and reason codes, no client ids)')
    .option('--validation-data <name=file...>', "validation sets for the poisoning check of training jobs (JSONL examples; a manifest names one in validation.dataset)")
    .option('--evaluator-cmd <cmd>', 'the external evaluator that checks the models of safetensors-format training jobs on their validation set (trainer protocol, evaluate calls; run without a shell); a model it cannot check is held back (model-unchecked)')
    .option('--evaluator-timeout <duration>', 'how long one --evaluator-cmd evaluation may run before it is killed and the model held back', parseDuration('evaluator-timeout', 1000, 86_400_000), DEFAULT_EVALUATOR_TIMEOUT_MS)
    .option('--retention-round-days <n>', 'how long a finished round keeps which clients took part (then only counts, timeline, outcome and sum stay); config retention.round_days', parseIntOption('retention-round-days', 1, 36_500), 30)
    .option('--clients-lost-after <duration>', 'flag a client suspected-lost (warn log, metric, clients list) once it is silent this long; config clients.lost_after', parseDuration('clients-lost-after', 60_000, 365 * 86_400_000), 7 * 86_400_000)
    .option('--operator-ttl-days <days>', 'lifetime of operator certificates, the built-in admin credential included (reissued by the coordinator at 2/3 of it); config operator.ttl_days', operatorTtlDays('operator-ttl-days'), 7)
    .option('--offline-ca <ca.pem>', 'first start only: the CA is offline (aegis ca init): this host keeps only its certificate; certificates come from aegis ca sign-csr on the CA host (requests in DATA_DIR/ca-requests, signed ones back in DATA_DIR/ca-signed)')
    .option('--config <file>', 'a JSON file of these options by their long names in camelCase (e.g. {"redis": "redis://10.0.0.5:6379", "redisPrefix": "prod", "unmaskWorkers": 2}); options given on the command line win')
    .action(async (o: { operatorTtlDays: number; offlineCa?: string; retentionRoundDays: number; clientsLostAfter: number; config?: string; listen: string; enrollListen?: string; dataDir: string; clientCertTtl: number; maxMessageMb: number; registry?: string; allowUnsigned?: boolean; validationData?: string[]; evaluatorCmd?: string; evaluatorTimeout: number; metrics?: string; redis?: string; redisPrefix: string; unmaskWorkers: number; unmaskParts: number; redisLogEvery: number; redisDownAbortAfter: number } & DashboardCliOptions & KekCliOptions & RotationCliOptions, cmd: Command) => {
      const log = createLogger('coordinator');
      try {
        if (o.config) await applyConfigFile(o.config, o as unknown as Record<string, unknown>, cmd);
        // Before anything listens: the dashboard's flags and TLS files.
        const dashboardOptions = await dashboardStartOptions(o);
        if (!o.registry && !o.allowUnsigned) {
          throw new AegisError(ErrorCode.InvalidArgument, 'give --registry DIR (only manifests its publishers signed run), or --allow-unsigned for a local experiment');
        }
        // Every input file is read and checked here, before any key is opened: a bad one is
        // reported at start naming the file, the line and the field, not at the first launch.
        if (o.registry) await readSnapshot(resolve(o.registry));
        const validationSets: Record<string, MemoryDataStore> = {};
        for (const spec of o.validationData ?? []) {
          const m = /^([A-Za-z0-9_.-]{1,64})=(.+)$/.exec(spec);
          if (!m) throw new AegisError(ErrorCode.InvalidArgument, `--validation-data takes NAME=FILE, got '${spec.slice(0, 80)}'`, 'e.g. --validation-data digits=digits-val.jsonl (the name a manifest gives in validation.dataset)');
          validationSets[m[1]!] = new MemoryDataStore(await readExampleFile(m[2]!));
        }
        const evaluator = o.evaluatorCmd === undefined ? undefined : evaluatorOf(o.evaluatorCmd, o.evaluatorTimeout);
        const dir = resolve(o.dataDir);
        const first = !hasCoordinatorSecrets(dir);
        const offlineCaPem = o.offlineCa === undefined ? undefined : await readFile(o.offlineCa, 'utf8').catch(() => {
          throw new AegisError(ErrorCode.NotFound, `cannot read the offline CA certificate ${o.offlineCa}`, 'check the path');
        });
        const operatorTtlMs = Math.round(o.operatorTtlDays * 86_400_000);
        const secrets = await openCoordinatorSecrets(dir, cliKekSecrets(`the coordinator keys in ${dir}`, first), { kek: kekInitOptions(o), operatorTtlMs, ...(offlineCaPem !== undefined ? { offlineCaPem } : {}) });
        // Front ends may share the data dir; a key change (aegis keys …) may not run meanwhile.
        await claimDataDir(dir, { command: 'aegis coordinator start', mode: 'shared' });
        if (secrets.created && secrets.offline) log.info({ dataDir: dir, ca: join(dir, 'ca.pem') }, 'offline CA: created the token key, server key and operator key (sealed); no CA key on this host');
        else if (secrets.created) log.info({ dataDir: dir, ca: join(dir, 'ca.pem') }, 'created the coordinator CA, token key and operator credential (sealed)');
        const registry = await loadRegistry(dir);
        const redis = o.redis ? await connectRedis(o.redis) : undefined;
        const metrics = o.metrics ? new CoordinatorMetrics() : undefined;
        // Every connection, queue and worker on Redis reports its errors to one place: structured, rate-limited log lines, metrics, health.
        const redisHealth = redis ? new RedisHealth(redis, { url: redactRedisUrl(o.redis!), log, logEveryMs: o.redisLogEvery, ...(metrics ? { sink: metrics } : {}) }).start() : undefined;
        const watch = redisHealth ? { watch: <T extends Parameters<RedisHealth['watch']>[0]>(e: T): T => redisHealth.watch(e) } : {};
        const launchQueue = redis ? new LaunchQueue(redis, { prefix: o.redisPrefix, ...watch }) : undefined;
        const unmaskQueue = redis ? new UnmaskQueue(redis, secrets.queueKey, { prefix: o.redisPrefix, ...watch }) : undefined;
        if (unmaskQueue && o.unmaskWorkers > 0) unmaskQueue.work({ concurrency: o.unmaskWorkers });
        // Time-based key rotation (shared/keystore/policy.ts): at start, then every hour.
        const policy = await effectivePolicy(dir, o);
        await recordPolicy(dir, policy);
        // Round state on Redis: every coordinator on it is a front end of the same rounds.
        const redisRounds = redis
          ? new RedisRounds(redis, secrets.queueKey, {
              prefix: o.redisPrefix,
              log,
              ...watch,
              health: redisHealth!,
              stateUnreachableAfterMs: o.redisDownAbortAfter,
              ...(unmaskQueue ? { unmask: (key: string, jobs: readonly MaskJob[], words: number) => unmaskQueue.dispatch(key, jobs, words, o.unmaskParts) } : {}),
              onPhaseClosed: (meta, e) => {
                metrics?.phaseClosed(e);
                if (e.phase === Phase.Unmasking) metrics?.unmaskTime(e.seconds);
                log.debug({ job: meta.jobId, round: meta.index, ...(meta.groups > 1 ? { group: meta.group } : {}), phase: e.phase, next: e.next, clients: e.clients, expected: e.expected, ...(e.declines ? { declines: e.declines } : {}), ms: Math.round(e.seconds * 1000) }, 'phase closed');
              },
            })
          : undefined;
        if (redis) progress(`on Redis ${redactRedisUrl(o.redis!)} (prefix ${o.redisPrefix}) as front end ${redisRounds!.frontEndId}: the client registry, round state and launches are shared with every coordinator on it`);
        const metricsServer = metrics && o.metrics ? await serveMetrics(metrics, o.metrics) : undefined;
        if (metricsServer) progress(`metrics on http://${metricsServer.address}/metrics`);
        // Offline CA: the TLS server and operator certificates come from the CA host first.
        const offline = secrets.offline
          ? { server: await awaitOfflineCredentials(dir, secrets.kek, secrets.ca, { hosts: serverHostsFor(o.listen), log, announce: progress }), enrollment: new OfflineEnrollment(dir, secrets.ca, log) }
          : undefined;
        // Seen and revoked round tokens outlive a restart: on Redis (shared by the front ends) or in DATA_DIR/tokens.log.
        const tokenLedger = redis ? new RedisTokenLedger(redis, { prefix: o.redisPrefix }) : await LocalTokenLedger.open(join(dir, TOKEN_LEDGER_FILE), Math.floor(Date.now() / 1000));
        if ('skipped' in tokenLedger && tokenLedger.skipped > 0) log.warn({ lines: tokenLedger.skipped }, `skipped malformed lines of ${TOKEN_LEDGER_FILE} (a torn last line after a machine crash)`);
        const c = new Coordinator({
          ...(offline ? { serverCredential: offline.server, offlineCa: offline.enrollment } : {}),
          tokenLedger,
          operatorTtlMs,
          builtInOperator: builtInOperator(dir, secrets.kek, secrets.ca),
          ...(metrics ? { metrics } : {}),
          ...(launchQueue ? { launchQueue } : {}),
          ...(unmaskQueue ? { unmaskQueue, unmaskParts: o.unmaskParts } : {}),
          ...(redisRounds ? { redisRounds } : {}),
          ...(redis ? { jobDirectory: new JobDirectory(redis, { prefix: o.redisPrefix }) } : {}),
          // The client registry on Redis, shared by every front end (registry.json imported at
          // start and written as an export).
          ...(redis ? { registryStore: new RedisRegistryStore(redis, { prefix: o.redisPrefix, dataDir: dir, log, ...watch }) } : {}),
          ...(redisHealth ? { redisHealth } : {}),
          ca: secrets.ca,
          tokens: secrets.tokens,
          registry,
          dataDir: dir,
          log,
          clientCertTtlMs: o.clientCertTtl,
          roundRetentionMs: o.retentionRoundDays * 86_400_000,
          clientsLostAfterMs: o.clientsLostAfter,
          maxMessageBytes: o.maxMessageMb * 1024 * 1024,
          ...(o.registry ? { registryDir: resolve(o.registry) } : {}),
          ...(Object.keys(validationSets).length > 0 ? { validationSets } : {}),
          ...(evaluator ? { evaluator } : {}),
          ...crashPoints(process.env.AEGIS_TEST_KILL_AT),
        });
        const keyCheck = async (): Promise<void> => {
          await runKeyCheck({
            dir,
            kek: secrets.kek,
            holders: [await SealedVault.open(join(dir, VAULT_FILE))],
            policy,
            onTokenKey: (seed, version) => secrets.tokens.rotate(seed, version),
            // The built-in operator credential: reissued before it expires; the old serial is then revoked (superseded).
            extra: secrets.offline
              ? []
              : [() => reissueOperatorIfDue(dir, secrets.kek, secrets.ca, policy, { ttlMs: operatorTtlMs, isRevoked: (serial) => c.clients.isRevoked({ serial }), onReplaced: (der) => c.operators.builtInReplaced(der) })],
            log,
            ...(metrics ? { sink: { rotated: (r) => metrics.keyRotatedBy(r.key, r.reason), age: (k, sec) => metrics.keyAgeSeconds(k, sec) } } : {}),
          });
        };
        await keyCheck();
        const keyChecks = scheduleKeyChecks(() => keyCheck().catch((err: unknown) => log.warn({ code: isAegisError(err) ? err.code : 'internal' }, 'key rotation check failed')));
        const { address, enrollAddress } = await c.listen(o.listen, o.enrollListen);
        const dashboard = o.dashboard ? await c.startDashboard(o.dashboard, dashboardOptions) : undefined;
        if (dashboard) progress(dashboardBanner(dashboard, o, dir, secrets.ca.keyType));
        await writeEndpoint(dir, { address, enrollAddress, pid: process.pid, ...(metricsServer ? { metrics: metricsServer.address } : {}), ...(dashboard ? { dashboard: dashboard.address } : {}) });
        progress(`coordinator listening on ${address} (mTLS), enrollment on ${enrollAddress}; CA certificate: ${join(dir, 'ca.pem')}`);
        if (!secrets.offline) log.warn({ ca: 'embedded' }, EMBEDDED_CA_WARNING);
        onStopSignals(
          () => [
            ['key-checks', () => keyChecks.stop()],
            // Redis down: nothing waits for it (its pending commands fail at once, BullMQ closes without it).
            ['redis-down', () => (redisHealth && !redisHealth.up ? redisHealth.disconnectAll() : undefined)],
            ['coordinator', () => c.close()],
            ['endpoint', () => removeEndpoint(dir)],
            ['metrics', () => metricsServer?.close()],
            ['unmask-queue', () => (redisHealth?.up === false ? unmaskQueue?.closeNow() : unmaskQueue?.close())],
            ['redis', () => (redis === undefined ? undefined : redisHealth?.up ? redis.quit() : redis.disconnect())],
            ['redis-health', () => redisHealth?.stop()],
            ['kek', () => secrets.kek.close()],
          ],
          log,
        );
      } catch (err) {
        reportError(err, false);
        process.exit(2);
      }
    });
}

/**
 * Said once at start by a coordinator whose data dir holds its CA key: the limit of the embedded
 * CA that no client-side check can make up for.
 */
export const EMBEDDED_CA_WARNING =
  'embedded CA: this host holds the CA key, so whoever controls it can mint client certificates and enroll clients of its own (a Sybil attack on secure aggregation: a round of one honest client and sybils gives away the honest input); an offline CA closes it (aegis ca init on another host, then coordinator start --offline-ca ca.pem on a new data dir)';

// ---------------------------------------------------------------------------------------------
// aegis clients invite|list|revoke

export function registerClients(program: Command): void {
  const group = program.command('clients').description('enrolled clients: invite, list, revoke, crl (operators)');
  withAdmin(group.command('invite').description('print a one-time enrollment token'))
    .option('--ttl <duration>', 'how long the token stays valid', parseDuration('ttl', 1000, 7 * 86_400_000), 15 * 60_000)
    .option('--id <client-id>', 'the token enrolls only this client id')
    .action((o: AdminOpts & { ttl: number; id?: string }) =>
      run(o, async (client) => {
        const r = await call<admin.CreateInviteRequest, admin.CreateInviteReply>(
          client,
          'createInvite',
          create(admin.CreateInviteRequestSchema, { ttlSeconds: Math.ceil(o.ttl / 1000), clientId: o.id ?? '' }),
        );
        const dir = resolve(o.dataDir);
        const endpoint = await readEndpoint(dir);
        const expiresAt = new Date(Number(r.expiresAtMs)).toISOString();
        const hint = `aegis client enroll --coordinator ${o.coordinator ?? endpoint?.address ?? 'HOST:PORT'} --token ${r.token} --ca ${join(dir, 'ca.pem')} --data-dir CLIENT_DIR${o.id ? ` --id ${o.id}` : ''}`;
        if (!o.json) progress(`one-time token, valid until ${expiresAt}; on the device run:\n  ${hint}`);
        printResult(o, { token: r.token, expires_at: expiresAt, client_id: o.id ?? null, enroll_address: endpoint?.enrollAddress ?? null }, r.token);
      }),
    );
  withAdmin(group.command('list').description('list enrolled clients')).action((o: AdminOpts) =>
    run(o, async (client) => {
      const r = await call<admin.ListClientsRequest, admin.ListClientsReply>(client, 'listClients', create(admin.ListClientsRequestSchema, {}));
      const rows = r.clients.map((c) => ({
        client_id: c.clientId,
        status: CLIENT_STATUSES[c.status] ?? (c.revoked ? 'revoked' : 'active'),
        enrolled_at: new Date(Number(c.enrolledAtMs)).toISOString(),
        last_seen_at: c.lastSeenAtMs === undefined ? null : new Date(Number(c.lastSeenAtMs)).toISOString(),
        certificate_expires_at: new Date(Number(c.certificateExpiresAtMs)).toISOString(),
        revoked: c.revoked,
        revoked_at: c.revoked && c.revokedAtMs > 0n ? new Date(Number(c.revokedAtMs)).toISOString() : null,
        revocation_reason: c.revocationReason || null,
        revocation_detail: c.revocationDetail || null,
      }));
      const text =
        rows.length === 0
          ? 'no enrolled clients'
          : rows.map((x) => `${x.client_id}\t${x.status}\tlast seen ${x.last_seen_at ?? 'never'}\tcert until ${x.certificate_expires_at}${x.revoked ? `\trevoked: ${x.revocation_reason ?? 'unspecified'}` : ''}`).join('\n');
      printResult(o, { clients: rows }, text);
    }),
  );
  withAdmin(group.command('revoke').description('revoke a client: refused from its next call on').argument('<client-id>'))
    .option('--reason <code>', 'why, a code: unspecified, key-compromise, lost-device, superseded, retired (written on the CRL as an RFC 5280 reason)', 'unspecified')
    .option('--detail <text>', 'free text kept with the revocation in the registry')
    .action((id: string, o: AdminOpts & { reason: string; detail?: string }) =>
      run(o, async (client) => {
        const req = create(admin.RevokeClientRequestSchema, { clientId: id, reason: o.reason, detail: o.detail ?? '' });
        const r = await call<admin.RevokeClientRequest, admin.RevokeClientReply>(client, 'revokeClient', req);
        const at = new Date(Number(r.revokedAtMs)).toISOString();
        printResult(o, { client_id: id, revoked_at: at, reason: r.reason || null, serials: r.serials }, `revoked ${id} at ${at} (${r.reason || 'unspecified'}); on the CRL: ${r.serials.join(', ')}`);
      }),
    );
  withAdmin(group.command('crl').description('a certificate revocation list of every revoked client certificate, signed now by the coordinator CA (PEM)'))
    .option('--out <file>', 'write the PEM to this new file (an existing file is not overwritten); without it the PEM goes to stdout')
    .action((o: AdminOpts & { out?: string }) =>
      run(o, async (client) => {
        const out = o.out === undefined ? undefined : resolve(o.out);
        if (out !== undefined && (await stat(out).catch(() => undefined)) !== undefined) {
          throw new AegisError(ErrorCode.AlreadyExists, `${out} exists; give a new file to --out (nothing is overwritten)`);
        }
        const r = await call<admin.GetCrlRequest, admin.GetCrlReply>(client, 'getCrl', create(admin.GetCrlRequestSchema, {}));
        const info = {
          this_update: new Date(Number(r.thisUpdateMs)).toISOString(),
          next_update: new Date(Number(r.nextUpdateMs)).toISOString(),
          crl_number: Number(r.crlNumber),
          entries: r.entries,
        };
        if (out === undefined) return printResult(o, { ...info, pem: r.pem }, r.pem.trimEnd());
        try {
          await writeFile(out, r.pem, { flag: 'wx', mode: 0o644 });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new AegisError(ErrorCode.AlreadyExists, `${out} exists; give a new file to --out (nothing is overwritten)`);
          throw new AegisError(ErrorCode.InvalidArgument, `cannot write ${out}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
        }
        printResult(o, { ...info, out }, `CRL ${info.crl_number} with ${info.entries} entries, valid until ${info.next_update}, written to ${out}`);
      }),
    );
}

const CLIENT_STATUSES: Record<number, string> = {
  [admin.ClientStatus.ACTIVE]: 'active',
  [admin.ClientStatus.SUSPECTED_LOST]: 'suspected-lost',
  [admin.ClientStatus.REVOKED]: 'revoked',
};

// ---------------------------------------------------------------------------------------------
// aegis round launch|list|status|cancel|result|model

/** `--evaluator-cmd`, checked at start: a command line that splits into at least one word. */
function evaluatorOf(cmd: string, timeoutMs: number): EvaluatorOptions {
  let words: string[];
  try {
    words = splitCommand(cmd);
  } catch {
    throw new AegisError(ErrorCode.InvalidArgument, '--evaluator-cmd is not a valid command line (an unclosed quote?)', "e.g. --evaluator-cmd '/usr/bin/python3 examples/pytorch-digits/train.py'");
  }
  if (words.length === 0) throw new AegisError(ErrorCode.InvalidArgument, '--evaluator-cmd is empty', "e.g. --evaluator-cmd '/usr/bin/python3 examples/pytorch-digits/train.py'");
  return { cmd, timeoutMs };
}
