/**
 * `aegis ca init|sign-csr`: the offline CA, run on a host the coordinator cannot reach
 * (coordinator/auth/offline-ca.ts). The coordinator started with `--offline-ca CADIR/ca.pem`
 * holds only the CA certificate and writes signing requests; ops sign them here.
 */
import { createInterface } from 'node:readline/promises';
import { resolve } from 'node:path';
import { Command } from 'commander';
import { parseDuration, printResult, progress, reportError } from '../shared/cli/output.js';
import { cliKekSecrets } from '../shared/cli/passphrase.js';
import { AegisError, ErrorCode } from '../shared/errors.js';
import { kekInitOptions, withKekOptions, type KekCliOptions } from '../shared/keystore/keys-cli.js';
import { MAX_OFFLINE_CERT_TTL_MS } from './auth/ca.js';
import { assertNotCoordinatorDir, initOfflineCa, OFFLINE_CERT_TTL_MS, signRequests, type RequestSummary, type RevocationEntry } from './auth/offline-ca.js';

function describe(s: RequestSummary): string {
  const what = s.kind === 'server' ? `server certificate for ${(s.hosts ?? []).join(', ')}` : s.kind === 'operator' ? `operator certificate for '${s.subject}'` : `client certificate for '${s.subject}'`;
  // A client is named by its Ed25519 round key (the device's identity whatever its TLS key type).
  const key = s.kind === 'client' ? `round key ${s.fingerprint} (TLS key ${s.keyType === 'p256' ? 'P-256' : 'Ed25519'})` : `${s.keyType === 'p256' ? 'P-256' : 'Ed25519'} key ${s.fingerprint}`;
  return `  ${s.id}  ${what}\n      ${key}${s.invite ? `\n      from invite ${s.invite}` : ''}`;
}

async function askYesNo(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

export function registerCa(program: Command): void {
  const group = program.command('ca').description('an offline CA: keep the CA key off the coordinator host (ops)');

  withKekOptions(group.command('init'))
    .description('create a CA (ECDSA P-256) whose key is sealed in DIR under a KEK; writes DIR/ca.pem (start the coordinator with --offline-ca DIR/ca.pem)')
    .requiredOption('--dir <dir>', 'the CA directory (new; keep it on the CA host)')
    .option('--name <name>', 'the CA name (subject CN)', 'Aegis offline CA')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: KekCliOptions & { dir: string; name: string; json?: boolean }) => {
      try {
        const dir = resolve(o.dir);
        assertNotCoordinatorDir(dir);
        const r = await initOfflineCa(dir, { name: o.name, kek: kekInitOptions(o), secrets: cliKekSecrets(`the CA key in ${dir}`, true) });
        printResult(o, { ok: true, dir: r.dir, ca: resolve(dir, 'ca.pem'), fingerprint: r.fingerprint }, `offline CA created in ${r.dir} (${r.fingerprint})\nstart the coordinator with: aegis coordinator start --offline-ca ${resolve(dir, 'ca.pem')} …`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  group
    .command('sign-csr')
    .description("sign the coordinator's requests (DATA_DIR/ca-requests): shows each, asks, writes certificates (and the CRL) into --out")
    .argument('<requests>', 'a directory of request files (or one file) the coordinator wrote')
    .requiredOption('--dir <dir>', 'the CA directory (aegis ca init)')
    .requiredOption('--out <dir>', 'where the signed certificates go (bring it back as DATA_DIR/ca-signed)')
    .option('--cert-ttl <duration>', 'certificate lifetime (there is no online renewal with an offline CA)', parseDuration('cert-ttl', 60_000, MAX_OFFLINE_CERT_TTL_MS), OFFLINE_CERT_TTL_MS)
    .option('--yes', 'sign without asking')
    .option('--json', 'print one JSON object on stdout')
    .action(async (requests: string, o: { dir: string; out: string; certTtl: number; yes?: boolean; json?: boolean }) => {
      try {
        const approve = async (summaries: RequestSummary[], crl: RevocationEntry[] | undefined): Promise<boolean> => {
          const text = [
            `${summaries.length} signing request(s):`,
            ...summaries.map(describe),
            ...(crl ? [`  a revocation list of ${crl.length} serial(s) to sign as a CRL`] : []),
          ].join('\n');
          progress(text);
          if (o.yes) return true;
          if (!process.stdin.isTTY) throw new AegisError(ErrorCode.FailedPrecondition, 'no terminal to ask on: check the requests above and give --yes to sign them');
          return askYesNo('sign these? [y/N] ');
        };
        const r = await signRequests({ caDir: o.dir, requests, out: o.out, secrets: cliKekSecrets(`the CA key in ${resolve(o.dir)}`), ttlMs: o.certTtl, approve });
        const lines = [
          ...r.signed.map((s) => `signed ${s.kind} ${s.subject} (serial ${s.serial}) -> ${s.certificate}`),
          ...(r.crl ? [`signed CRL #${r.crl.crlNumber} (${r.crl.entries} entries) -> ${r.crl.file}`] : []),
          ...(r.skipped.length > 0 ? [`${r.skipped.length} request(s) already signed in ${resolve(o.out)}`] : []),
        ];
        printResult(o, { ok: true, signed: r.signed.map((s) => ({ id: s.id, kind: s.kind, subject: s.subject, serial: s.serial, fingerprint: s.fingerprint, key_type: s.keyType, certificate: s.certificate })), skipped: r.skipped, crl: r.crl ?? null }, lines.length > 0 ? lines.join('\n') : 'nothing to sign');
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
