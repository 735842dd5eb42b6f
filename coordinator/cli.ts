/**
 * `aegis coordinator start`, and the operator commands that talk to a running coordinator over
 * its Admin service with the operator credential sealed in the data dir: `aegis clients
 * invite|list|revoke` and `aegis round launch|status|result|model`.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import cliProgress from 'cli-progress';
import { Command } from 'commander';
import { parseDuration, parseIntOption, progress, reportError, printResult } from '../shared/cli/output.js';
import { cliKekSecrets } from '../shared/cli/passphrase.js';
import { applyConfigFile } from '../shared/cli/config.js';
import { kekInitOptions, VAULT_FILE, withKekOptions, withRotationOptions, type KekCliOptions, type RotationCliOptions } from '../shared/keystore/keys-cli.js';
import { effectivePolicy, recordPolicy, runKeyCheck, scheduleKeyChecks } from '../shared/keystore/policy.js';
import { SealedVault } from '../shared/keystore/vault.js';
import { decodeWeightedSum } from '../shared/crypto/quantize.js';
import { claimDataDir } from '../shared/data-dir-lock.js';
import { AegisError, ErrorCode, isAegisError } from '../shared/errors.js';
import * as admin from '../shared/gen/aegis/v1/admin_pb.js';
import { createLogger } from '../shared/log.js';
import { phaseFromProto, vectorFromBytes, abortReasonFromProto, errorReasonFromProto } from '../shared/rpc/convert.js';
import { reasonOf } from '../shared/rpc/status.js';
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
import type * as secagg from '../shared/gen/aegis/v1/secagg_pb.js';
import { parseManifest, isTrainingManifest } from '../shared/protocol/manifest.js';
import { saveTfjsModel, weightsFromBytes } from '../shared/model/tfjs.js';
import { readSnapshot } from '../shared/trust/registry-dir.js';
import { MemoryDataStore, readExampleFile } from '../shared/store/memory.js';
import { readLaunchFiles, type LaunchFiles } from './launch-files.js';
import { dashboardBanner, dashboardStartOptions, withDashboardOptions, type DashboardCliOptions } from './dashboard/cli.js';
import { call, DEFAULT_DIR, operatorTtlDays, run, usageErrorsExit2, withAdmin, type AdminOpts, type AdminSession } from './admin-client.js';
import { roundJson, roundName } from '../shared/round-number.js';


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
    .option('--retention-round-days <n>', 'how long a finished round keeps which clients took part (then only counts, timeline, outcome and sum stay); config retention.round_days', parseIntOption('retention-round-days', 1, 36_500), 30)
    .option('--clients-lost-after <duration>', 'flag a client suspected-lost (warn log, metric, clients list) once it is silent this long; config clients.lost_after', parseDuration('clients-lost-after', 60_000, 365 * 86_400_000), 7 * 86_400_000)
    .option('--operator-ttl-days <days>', 'lifetime of operator certificates, the built-in admin credential included (reissued by the coordinator at 2/3 of it); config operator.ttl_days', operatorTtlDays('operator-ttl-days'), 7)
    .option('--offline-ca <ca.pem>', 'first start only: the CA is offline (aegis ca init): this host keeps only its certificate; certificates come from aegis ca sign-csr on the CA host (requests in DATA_DIR/ca-requests, signed ones back in DATA_DIR/ca-signed)')
    .option('--config <file>', 'a JSON file of these options by their long names in camelCase (e.g. {"redis": "redis://10.0.0.5:6379", "redisPrefix": "prod", "unmaskWorkers": 2}); options given on the command line win')
    .action(async (o: { operatorTtlDays: number; offlineCa?: string; retentionRoundDays: number; clientsLostAfter: number; config?: string; listen: string; enrollListen?: string; dataDir: string; clientCertTtl: number; maxMessageMb: number; registry?: string; allowUnsigned?: boolean; validationData?: string[]; metrics?: string; redis?: string; redisPrefix: string; unmaskWorkers: number; unmaskParts: number; redisLogEvery: number; redisDownAbortAfter: number } & DashboardCliOptions & KekCliOptions & RotationCliOptions, cmd: Command) => {
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

function statusJson(s: admin.RoundStatusReply): Record<string, unknown> {
  let reason: string | null = null;
  if (s.abortReason !== 0) {
    try {
      reason = abortReasonFromProto(s.abortReason);
    } catch {
      reason = 'unspecified';
    }
  }
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
    ...(s.training
      ? {
          training: {
            state: s.training.state,
            rounds_completed: s.training.roundsCompleted,
            rounds_aborted: s.training.roundsAborted,
            model_version: s.training.model?.version ?? 0,
            model_sha256: Buffer.from(s.training.model?.sha256 ?? new Uint8Array()).toString('hex'),
            detail: s.training.detail || null,
          },
        }
      : {}),
  };
}

/** The one-line summary of a round's progress (elapsed time left out: it changes at every poll). */
function progressLine(j: Record<string, unknown>): string {
  const phases = (j.phases as { phase: string; clients: number; expected: number }[]).map((p) => `${p.phase} ${p.clients}/${p.expected}`).join(', ');
  const state = j.finished ? (j.ok ? 'completed' : `aborted: ${j.abort_reason}`) : `phase ${j.phase}`;
  const t = j.training as { state: string; rounds_completed: number } | undefined;
  const job = t ? `; job ${t.state}, ${t.rounds_completed} of ${j.rounds} rounds completed` : '';
  const declined = declinesText(j.declines as Record<string, number>);
  return `job ${j.job_id} round ${j.round_number}: ${state}; ${phases || 'no messages yet'}; ${declined ? `${declined}; ` : ''}dropouts ${j.dropouts}${job}`;
}

function statusText(j: Record<string, unknown>): string {
  const counts = (j.phases as { phase: string; clients: number; expected: number }[]).map((p) => `${p.phase} ${p.clients}/${p.expected}`).join(', ');
  const state = j.finished ? (j.ok ? 'completed' : `aborted: ${j.abort_reason} (${j.detail})`) : `running, phase ${j.phase}`;
  const t = j.training as { state: string; rounds_completed: number; rounds_aborted: number; model_version: number; model_sha256: string; detail: string | null } | undefined;
  const training = t
    ? `\n  training job ${t.state}${t.detail ? ` (${t.detail})` : ''}: ${t.rounds_completed} of ${j.rounds} rounds completed, ${t.rounds_aborted} aborted; model version ${t.model_version} sha256 ${t.model_sha256.slice(0, 16)}…`
    : `\n  job ${j.state}: ${j.rounds_done} of ${j.rounds} rounds completed`;
  // A training job's rounds go on after an aborted one until enough completed: its line below
  // counts those; a plain job's round is one of a fixed number.
  const of = t ? '' : ` of ${j.rounds}`;
  const declined = declinesText(j.declines as Record<string, number>);
  return `job ${j.job_id}${(j.revision as number) > 1 ? ` revision ${j.revision}` : ''} round ${j.round_number}${of}: ${state}\n  invited ${j.invited}; ${declined ? `${declined}; ` : ''}${counts || 'no messages yet'}; dropouts ${j.dropouts}; refused ${j.refused_messages}; ${((j.elapsed_ms as number) / 1000).toFixed(1)} s${training}`;
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
async function saveJobModel(session: AdminSession, job: string, version: number | undefined, dir: string): Promise<{ version: number; sha256: string; modelJson: string; weightsBin: string }> {
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
  const files = await saveTfjsModel(dir, manifest.model, weightsFromBytes(bytes));
  return { version: first.model.version, sha256: Buffer.from(first.model.sha256).toString('hex'), ...files };
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
    .option('--weights <file>', "a training job's initial weights (float32 little-endian, tfjs weights.bin layout); must hash to the manifest's model.initialWeightsSha256")
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
  withAdmin(group.command('model').description("a training job's global model, saved in tfjs format (model.json + weights.bin)").argument('<job-id>'))
    .requiredOption('--out <dir>', 'the folder to write model.json and weights.bin to')
    .option('--model-version <n>', 'the model version (default: the latest)', parseIntOption('model-version', 0, 1e6))
    .action((job: string, o: AdminOpts & { out: string; modelVersion?: number }) =>
      run(o, async (client) => {
        const m = await saveJobModel(client, job, o.modelVersion, resolve(o.out));
        printResult(o, { job_id: job, version: m.version, sha256: m.sha256, model_json: m.modelJson, weights_bin: m.weightsBin }, `model version ${m.version} of ${job} (sha256 ${m.sha256}) written to ${m.modelJson}`);
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
          ...(model ? { model: { version: model.version, sha256: model.sha256, model_json: 'model.json', weights_bin: 'weights.bin' } } : {}),
        };
        await writeFile(resultJson, `${JSON.stringify(doc)}\n`, { flag: 'wx' });
        const files = [resultJson, ...(model ? [model.modelJson, model.weightsBin] : [])];
        const text = `wrote ${resultJson}: ${doc.dim} values from ${r.survivorCount || r.survivors.length} clients, total weight ${decoded.totalWeight}${model ? `; model version ${model.version} (sha256 ${model.sha256.slice(0, 16)}…) in ${model.modelJson}` : ''}`;
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
