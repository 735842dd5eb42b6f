/**
 * `aegis operators list|issue|revoke|reissue` and `aegis tokens revoke`: operator credentials and
 * round-token revocation, against a running coordinator over its Admin service
 * (coordinator/admin-client.ts). A new operator's key (ECDSA P-256, from 32 random bytes) is made
 * here and never leaves this host:
 * the coordinator gets a CSR and returns the certificate, and the credential file is sealed under
 * a passphrase (AEGIS_OPERATOR_PASSPHRASE, or asked twice on the terminal) and never overwrites a
 * file. A bad flag or value exits 2, naming it.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { link, open, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { create } from '@bufbuild/protobuf';
import { Command, InvalidArgumentError } from 'commander';
import { printResult, progress } from '../shared/cli/output.js';
import { obtainPassphrase } from '../shared/cli/passphrase.js';
import { AegisError, ErrorCode } from '../shared/errors.js';
import * as admin from '../shared/gen/aegis/v1/admin_pb.js';
import { sealSecrets } from '../shared/keystore/passphrase-keyfile.js';
import { p256Spki, P256Purpose } from '../shared/keystore/webcrypto-p256.js';
import { call, OPERATOR_CREDENTIAL_LABEL, OPERATOR_PASSPHRASE_ENV, operatorTtlDays, run, usageErrorsExit2, withAdmin, type AdminOpts, type AdminSession } from './admin-client.js';
import { assertClientId, certificateSpki, csrForSeed } from './auth/ca.js';
import { parseRevocationReason, REVOCATION_REASONS } from './auth/enrollment.js';
import { BUILT_IN_OPERATOR } from './auth/operators.js';
import { JTI_PATTERN } from './auth/seen-tokens.js';

const iso = (ms: bigint | number): string | null => (Number(ms) > 0 ? new Date(Number(ms)).toISOString() : null);

function parseName(v: string): string {
  try {
    return assertClientId(v);
  } catch {
    throw new InvalidArgumentError('an operator name is 1..128 characters of [A-Za-z0-9._:@-]');
  }
}

const ttlSeconds = (days: number | undefined): number => (days === undefined ? 0 : Math.round(days * 86_400));

const STATUS: Record<number, string> = { [admin.OperatorStatus.ACTIVE]: 'active', [admin.OperatorStatus.EXPIRED]: 'expired', [admin.OperatorStatus.REVOKED]: 'revoked' };

function operatorJson(r: admin.OperatorInfo): Record<string, unknown> {
  return {
    name: r.name,
    serial: r.serial,
    status: STATUS[r.status] ?? 'unspecified',
    built_in: r.builtIn,
    issued_at: iso(r.issuedAtMs),
    expires_at: iso(r.expiresAtMs),
    revoked_at: iso(r.revokedAtMs),
    revocation_reason: r.revocationReason || null,
    revocation_detail: r.revocationDetail || null,
  };
}

/** Where `--out` puts NAME's credential: DIR/NAME.operator.json for a directory, else the file itself, which must not exist. */
async function credentialPath(out: string, name: string): Promise<string> {
  const given = resolve(out);
  const st = await stat(given).catch(() => undefined);
  const path = st?.isDirectory() ? join(given, `${name}.operator.json`) : given;
  if (await stat(path).then(() => true, () => false)) throw new AegisError(ErrorCode.AlreadyExists, `--out: ${path} exists (nothing is overwritten); give a new file or a directory`);
  const parent = await stat(dirname(path)).catch(() => undefined);
  if (!parent?.isDirectory()) throw new AegisError(ErrorCode.NotFound, `--out: there is no directory ${dirname(path)}`);
  return path;
}

/** Writes `data` to a new file `path` (mode 0600) whole or not at all, never over an existing file. */
async function writeNewFile(path: string, data: string): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
  } catch (err) {
    throw new AegisError(ErrorCode.AlreadyExists, `--out: ${path} ${(err as NodeJS.ErrnoException).code === 'EEXIST' ? 'exists (nothing is overwritten)' : 'cannot be written'}`);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** A new operator key (ECDSA P-256 from a fresh seed), its CSR, and the passphrase its credential file will be sealed under (asked before anything is issued). */
async function newKey(name: string): Promise<{ seed: Uint8Array; csrDer: Uint8Array; passphrase: string }> {
  const passphrase = await obtainPassphrase({ env: OPERATOR_PASSPHRASE_ENV, confirm: true, what: `the new credential of operator '${name}'` });
  const seed = new Uint8Array(randomBytes(32));
  return { seed, csrDer: await csrForSeed(seed, `operator:${name}`, P256Purpose.Operator), passphrase };
}

/** Checks the certificate is for our key and issued by the CA the channel pins, then seals the credential into `path`. */
async function saveCredential(session: AdminSession, path: string, key: { seed: Uint8Array; passphrase: string }, certificateDer: Uint8Array): Promise<void> {
  try {
    const cert = new X509Certificate(Buffer.from(certificateDer));
    const ca = new X509Certificate(session.caPem);
    const ours = Buffer.from(p256Spki(key.seed, P256Purpose.Operator));
    if (!ours.equals(Buffer.from(certificateSpki(certificateDer))) || !cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
      throw new AegisError(ErrorCode.BadSignature, 'the coordinator returned a certificate that is not for this key or not from its CA; nothing was written');
    }
    const sealed = await sealSecrets(key.passphrase, OPERATOR_CREDENTIAL_LABEL, { 'operator-seed': key.seed, 'operator-certificate': certificateDer, 'ca-certificate': new Uint8Array(ca.raw) });
    await writeNewFile(path, `${JSON.stringify(sealed, null, 2)}\n`);
  } finally {
    key.seed.fill(0);
  }
}

export function registerOperators(program: Command): void {
  const group = usageErrorsExit2(program.command('operators').description('operator credentials for the Admin service: list, issue, revoke, reissue (operators)'));

  withAdmin(group.command('list').description('every operator certificate on record: name, serial, status, issued, expires, revocation')).action((o: AdminOpts) =>
    run(o, async (client) => {
      const r = await call<admin.ListOperatorsRequest, admin.ListOperatorsReply>(client, 'listOperators', create(admin.ListOperatorsRequestSchema, {}));
      const rows = r.operators.map(operatorJson);
      const text = rows.map((x) => `${x.name}${x.built_in ? ' (built-in)' : ''}\t${x.status}\tserial ${x.serial}\tissued ${x.issued_at}\texpires ${x.expires_at}${x.revoked_at ? `\trevoked ${x.revoked_at}: ${x.revocation_reason}` : ''}`).join('\n');
      printResult(o, { operators: rows }, rows.length === 0 ? 'no operator certificates on record' : text);
    }),
  );

  withAdmin(group.command('issue').description('a credential for a new operator: the key is made here, the coordinator signs its certificate; sealed into --out').argument('<name>', 'the operator name', parseName))
    .requiredOption('--out <file-or-dir>', 'a new file, or a directory (then DIR/NAME.operator.json); never overwritten')
    .option('--ttl <days>', "the certificate's lifetime in days (default: the coordinator's operator.ttl_days, 7 unless set; at most 90)", operatorTtlDays('ttl'))
    .action(async (name: string, o: AdminOpts & { out: string; ttl?: number }) => {
      let path = '';
      const checkOut = async (): Promise<void> => {
        path = await credentialPath(o.out, name);
      };
      await run(
        o,
        async (client) => {
          const key = await newKey(name);
          const req = create(admin.IssueOperatorRequestSchema, { name, csrDer: key.csrDer, ttlSeconds: ttlSeconds(o.ttl) });
          const r = await call<admin.IssueOperatorRequest, admin.IssueOperatorReply>(client, 'issueOperator', req);
          await saveCredential(client, path, key, r.certificateDer);
          const info = operatorJson(r.operator!);
          printResult(o, { ok: true, ...info, out: path }, `issued operator '${name}' (serial ${info.serial}, expires ${info.expires_at}); credential sealed in ${path}\nuse it with: aegis clients list --credential ${path} --coordinator HOST:PORT`);
        },
        checkOut,
      );
    });

  withAdmin(group.command('reissue').description(`a new credential for an operator; its earlier ones are revoked (superseded). For the built-in '${BUILT_IN_OPERATOR}' the coordinator replaces the data dir's credential`).argument('<name>', 'the operator name', parseName))
    .option('--out <file-or-dir>', `where the new credential goes (every name but '${BUILT_IN_OPERATOR}'); never overwritten`)
    .option('--ttl <days>', "the new certificate's lifetime in days (default: the coordinator's operator.ttl_days)", operatorTtlDays('ttl'))
    .action(async (name: string, o: AdminOpts & { out?: string; ttl?: number }) => {
      const builtIn = name === BUILT_IN_OPERATOR;
      let path: string | undefined;
      const checkOut = async (): Promise<void> => {
        if (builtIn && o.out !== undefined) throw new AegisError(ErrorCode.InvalidArgument, `--out: the built-in '${BUILT_IN_OPERATOR}' credential stays in the data dir; reissue it without --out (or issue a credential under another name)`);
        if (!builtIn && o.out === undefined) throw new AegisError(ErrorCode.InvalidArgument, `--out is needed: where the new credential of '${name}' goes`);
        if (o.out !== undefined) path = await credentialPath(o.out, name);
      };
      await run(
        o,
        async (client) => {
          const key = path === undefined ? undefined : await newKey(name);
          const req = create(admin.ReissueOperatorRequestSchema, { name, ...(key ? { csrDer: key.csrDer } : {}), ttlSeconds: ttlSeconds(o.ttl) });
          const r = await call<admin.ReissueOperatorRequest, admin.ReissueOperatorReply>(client, 'reissueOperator', req);
          if (key && path) await saveCredential(client, path, key, r.certificateDer);
          const info = operatorJson(r.operator!);
          const where = path ?? `the data dir's vault (${resolve(o.dataDir)})`;
          printResult(o, { ok: true, ...info, superseded: r.superseded, out: path ?? null }, `reissued operator '${name}' (serial ${info.serial}, expires ${info.expires_at}) into ${where}; revoked as superseded: ${r.superseded.join(', ') || 'none'}`);
        },
        checkOut,
      );
    });

  withAdmin(group.command('revoke').description("revoke an operator's credentials (every active one of NAME, or one --serial): refused from their next Admin call on, listed on the CRL").argument('[name]', 'the operator name', parseName))
    .option('--serial <hex>', 'one certificate serial instead of a name (also one the coordinator has no record of, e.g. signed by an offline CA)')
    .option('--reason <code>', `why: ${REVOCATION_REASONS.join(', ')} (written on the CRL)`, 'unspecified')
    .option('--detail <text>', 'free text kept with the record')
    .action(async (name: string | undefined, o: AdminOpts & { serial?: string; reason: string; detail?: string }) => {
      const checkFlags = (): void => {
        if ((name === undefined) === (o.serial === undefined)) throw new AegisError(ErrorCode.InvalidArgument, 'give an operator NAME or --serial HEX (one of the two)');
        if (o.serial !== undefined && !/^[0-9a-fA-F]{1,40}$/.test(o.serial)) throw new AegisError(ErrorCode.InvalidArgument, '--serial is a certificate serial in hex (at most 20 bytes)');
        parseRevocationReason(o.reason);
      };
      await run(
        o,
        async (client) => {
          const req = create(admin.RevokeOperatorRequestSchema, { name: name ?? '', serial: o.serial ?? '', reason: o.reason, detail: o.detail ?? '' });
          const r = await call<admin.RevokeOperatorRequest, admin.RevokeOperatorReply>(client, 'revokeOperator', req);
          if (!r.known && !o.json) progress(`serial ${r.serials[0]} is not on record here (an operator certificate signed elsewhere, e.g. by the offline CA host); revoked anyway`);
          const at = iso(r.revokedAtMs);
          printResult(o, { ok: true, name: name ?? null, serials: r.serials, revoked_at: at, reason: r.reason, known: r.known }, `revoked ${name ? `operator '${name}'` : 'serial'} at ${at} (${r.reason}); on the CRL: ${r.serials.join(', ')}`);
        },
        checkFlags,
      );
    });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}

export function registerTokens(program: Command): void {
  const group = usageErrorsExit2(program.command('tokens').description('round-call tokens: revoke them (operators)'));
  withAdmin(group.command('revoke').description('revoke round tokens: one (--jti or --token) or every token of a client issued up to now (--client); refused as revoked on every front end until they expire'))
    .option('--jti <jti>', 'one token by its jti (22 base64url characters)', (v: string) => {
      if (!JTI_PATTERN.test(v)) throw new InvalidArgumentError('a jti is 22 base64url characters');
      return v;
    })
    .option('--token <jwt>', 'one token, whole (- reads it from stdin, so it stays out of the process list)')
    .option('--client <client-id>', "every token of this client issued up to now (the client stays enrolled and gets new ones; revoke the client itself with aegis clients revoke)", parseName)
    .action(async (o: AdminOpts & { jti?: string; token?: string; client?: string }) => {
      let token = o.token;
      const checkFlags = async (): Promise<void> => {
        if ([o.jti, o.token, o.client].filter((v) => v !== undefined).length !== 1) throw new AegisError(ErrorCode.InvalidArgument, 'give exactly one of --jti, --token and --client');
        if (token === '-') token = await readStdin();
        if (token !== undefined && token.length === 0) throw new AegisError(ErrorCode.InvalidArgument, '--token: no token given');
      };
      await run(
        o,
        async (client) => {
          const req = create(admin.RevokeTokensRequestSchema, { jti: o.jti ?? '', token: token ?? '', clientId: o.client ?? '' });
          const r = await call<admin.RevokeTokensRequest, admin.RevokeTokensReply>(client, 'revokeTokens', req);
          const out = { ok: true, jti: r.jti || null, client_id: r.clientId || null, issued_up_to: iso(r.issuedUpToMs), until: iso(r.untilMs), already_expired: r.alreadyExpired };
          const text = r.alreadyExpired
            ? `token ${r.jti} had expired already: nothing to revoke`
            : o.client
              ? `revoked every token of ${r.clientId} issued up to ${out.issued_up_to} (kept until ${out.until})`
              : `revoked token ${r.jti}${r.clientId ? ` of ${r.clientId}` : ''} (kept until ${out.until})`;
          printResult(o, out, text);
        },
        checkFlags,
      );
    });
}
