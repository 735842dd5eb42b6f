/**
 * `aegis keys status|rotate|passphrase|disable|enable|destroy --data-dir DIR` — the same commands
 * on a client data dir and on a coordinator data dir (DESIGN.md §5 "Rotation"). What a dir holds
 * under its KEK is found by looking: the client's store (store.db) and the sealed secrets
 * (secrets.vault.json, as coordinatorVaultHolder). `rotate --emergency` first moves the dir's
 * keyfiles to a new passphrase (passphrase-change.ts), then runs a leak rotation (rotation.ts:
 * fresh DEKs, token and queue keys replaced, old KEK versions destroyed). Output names versions,
 * states, dates, counts and file names — never key material or a passphrase.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { claimDataDir } from '../data-dir-lock.js';
import { AegisError, ErrorCode } from '../errors.js';
import { parseIntOption, printResult, progress, reportError } from '../cli/output.js';
import { cliKekSecrets, NEW_PASSPHRASE_ENV, obtainPassphrase } from '../cli/passphrase.js';
import { openKek, type KekInitOptions, type KekSecrets } from './kek-config.js';
import { changeDirPassphrase, passphraseKeyfiles } from './passphrase-change.js';
import { PassphraseKek } from './kek-passphrase.js';
import { coordinatorVaultHolder } from './vault-holder.js';
import { KEK_KINDS, type KekKind, type ManagedKek } from './kek.js';
import { DEFAULT_ROTATION_BATCH, destroyKeyVersion, disableKeyVersion, keyStatus, readJournal, rotateKeys, type KeyHolder, type RotationReport } from './rotation.js';
import { createRecipientIdentity } from './stream.js';
import { applyConfigFile } from '../cli/config.js';
import { effectivePolicy, keyAges, parseDaysOption, recordKey, recordPolicy, rotateDueKeys, type RotationPolicy } from './policy.js';

export const VAULT_FILE = 'secrets.vault.json';

/** Opens what else a data dir keeps under its KEK (the CLI root passes the client's store). */
export type HolderOpener = (dir: string, kek: ManagedKek) => Promise<(KeyHolder & { close?: () => void }) | undefined>;

interface Opened {
  kek: ManagedKek;
  holders: (KeyHolder & { close?: () => void })[];
  /** Where the dir's passphrase came from (asked once). */
  secrets: KekSecrets;
}

/** Opens a data dir's KEK and every holder, runs `fn`, closes everything. */
export async function withDirKeys<T>(
  dataDir: string,
  openers: readonly HolderOpener[],
  fn: (o: Opened & { dir: string }) => Promise<T>,
  /** The command, for one that changes keys: it holds the dir alone (no client or coordinator running on it). */
  changing?: string,
): Promise<T> {
  const dir = resolve(dataDir);
  const secrets = cliKekSecrets(`the keys in ${dir}`);
  const kek = await openKek(dir, secrets);
  const holders: Opened['holders'] = [];
  let release: (() => void) | undefined;
  try {
    if (changing !== undefined) release = await claimDataDir(dir, { command: changing, mode: 'exclusive' });
    for (const open of openers) {
      const h = await open(dir, kek);
      if (h !== undefined) holders.push(h);
    }
    if (existsSync(join(dir, VAULT_FILE))) holders.push(await coordinatorVaultHolder(dir));
    return await fn({ dir, kek, holders, secrets });
  } finally {
    for (const h of holders) h.close?.();
    await kek.close();
    release?.();
  }
}

/**
 * Finishes a rotation an earlier run left half-done (the journal says so); commands that open a
 * data dir's keys call it first, so a killed rotation never lingers.
 */
export async function resumePendingRotation(dir: string, kek: ManagedKek, holders: readonly KeyHolder[]): Promise<boolean> {
  if ((await readJournal(dir)) === undefined) return false;
  progress(`resuming the key rotation interrupted in ${dir}`);
  await rotateKeys(dir, kek, holders, { onProgress: (n, h) => progress(`  ${h}: ${n} values moved`) });
  return true;
}

const DAY = 86_400_000;

/**
 * Re-seals DIR's passphrase keyfiles under a new passphrase (passphrase-change.ts) and makes the
 * open KEK write under it from now on. With `leak`, the change also journals the leak rotation
 * (rotation.ts); a dir with no passphrase keyfile (OS keyring or PKCS#11 KEK, no identity key)
 * needs no new passphrase and only journals the rotation. Returns the files re-sealed.
 */
async function newDirPassphrase(dir: string, kek: ManagedKek, secrets: KekSecrets, leak: boolean): Promise<string[]> {
  if ((await passphraseKeyfiles(dir)).length === 0) {
    if (!leak) throw new AegisError(ErrorCode.NotFound, `no passphrase-sealed keyfile in ${dir}: its KEK needs no passphrase`);
    return [];
  }
  const old = await secrets.passphrase();
  const next = await obtainPassphrase({ env: NEW_PASSPHRASE_ENV, confirm: true, what: `the NEW passphrase of ${dir}` });
  const killAt = process.env.AEGIS_TEST_KILL_AT;
  const files = await changeDirPassphrase(dir, old, next, { thenLeakRotation: leak, ...(killAt !== undefined ? { killAt } : {}) });
  if (kek instanceof PassphraseKek) await kek.adoptPassphrase(next);
  return files;
}

/** One line per fact of a rotation: what moved, what was disabled or destroyed, what was (not) replaced. */
function rotationText(r: RotationReport & { resealed?: string[] }): string {
  const moved = Object.entries(r.moved)
    .map(([h, n]) => `${h} ${n}`)
    .join(', ');
  const lines = [`${r.resumed ? 'resumed and finished' : 'finished'} ${r.emergency ? 'emergency ' : ''}rotation: v${r.primary} is primary; moved ${moved || 'nothing'}${r.disabled.length ? `; disabled v${r.disabled.join(', v')}` : ''}`];
  if (r.resealed?.length) lines.push(`re-sealed under the new passphrase: ${r.resealed.join(', ')}`);
  if (r.destroyed !== undefined) lines.push(r.destroyed.length ? `destroyed v${r.destroyed.join(', v')} (key material erased; cannot be enabled again)` : 'no older version to destroy');
  for (const x of r.replaced ?? []) lines.push(`replaced ${x.secret}: ${x.detail}`);
  for (const x of r.notReplaced ?? []) lines.push(`NOT replaced ${x.secret}: ${x.how}`);
  return lines.join('\n');
}

/** The options that choose a new data dir's KEK: --kek, --pkcs11-module, --pkcs11-token. */
export interface KekCliOptions {
  kek: string;
  pkcs11Module?: string;
  pkcs11Token: string;
}

/** Adds the KEK choice to a command that creates a data dir (`when` says when it applies). */
export function withKekOptions(cmd: Command, when = ''): Command {
  return cmd
    .option('--kek <provider>', `${when}the KEK provider: passphrase (a sealed keyfile; AEGIS_PASSPHRASE), os (the Secret Service keyring), pkcs11 (an HSM; AEGIS_PKCS11_PIN), or auto (os where a Secret Service runs, else passphrase)`, 'passphrase')
    .option('--pkcs11-module <path>', `${when}the PKCS#11 module (default: AEGIS_PKCS11_MODULE or SoftHSM2's)`)
    .option('--pkcs11-token <label>', `${when}the PKCS#11 token label`, 'aegis');
}

export function kekInitOptions(o: KekCliOptions): KekInitOptions {
  if (!KEK_KINDS.includes(o.kek as KekKind) && o.kek !== 'auto') throw new AegisError(ErrorCode.InvalidArgument, '--kek must be passphrase, os, pkcs11 or auto');
  return { kind: o.kek as KekKind | 'auto', pkcs11: { ...(o.pkcs11Module ? { module: o.pkcs11Module } : {}), token: o.pkcs11Token } };
}

/** The rotation policy's options (`coordinator start`, `client run`, `keys status|rotate`); `{"rotation": {"kek_days": 30}}` in a --config file. */
export function withRotationOptions(cmd: Command): Command {
  return cmd
    .option('--rotation-kek-days <n>', "rotate the KEK's primary version once it is this many days old (default: the value recorded in the data dir, else 90)", parseDaysOption('rotation-kek-days'))
    .option('--rotation-signing-days <n>', 'rotate the token key and the CA-issued keys (operator credential, client identity key) once this many days old (default: recorded, else 90)', parseDaysOption('rotation-signing-days'));
}

export interface RotationCliOptions {
  rotationKekDays?: number;
  rotationSigningDays?: number;
}

/** The policy in force for DIR: options over the one recorded in the dir, over the defaults. */
export const policyOf = (dir: string, o: RotationCliOptions): Promise<RotationPolicy> => effectivePolicy(dir, o);

export function registerKeys(program: Command, openers: readonly HolderOpener[]): void {
  const keys = program.command('keys').description('KEK versions of a client or coordinator data dir: status, rotation, retirement');
  const dirOpt = ['--data-dir <dir>', 'the client or coordinator data dir', process.env.AEGIS_DATA_DIR ?? '.'] as const;

  withRotationOptions(
    keys
      .command('status')
      .description('every KEK version (state, age, how many sealed values name it) and every key of the dir: version, age, next rotation (due date)')
      .option(...dirOpt)
      .option('--json', 'print one JSON object on stdout'),
  )
    .option('--config <file>', 'a JSON config file, as for coordinator start / client run (e.g. {"rotation": {"kek_days": 30, "signing_days": 30}}); options given on the command line win')
    .action(async (o: { dataDir: string; json?: boolean; config?: string } & RotationCliOptions, cmd: Command) => {
      try {
        if (o.config) await applyConfigFile(o.config, o as unknown as Record<string, unknown>, cmd);
        const { s: st, ages, policy } = await withDirKeys(o.dataDir, openers, async ({ dir, kek, holders }) => {
          const policy = await policyOf(dir, o);
          return { s: await keyStatus(dir, kek, holders), ages: await keyAges(dir, kek, policy), policy };
        });
        const s = { ...st, policy, keys: ages };
        const now = Date.now();
        const lines = s.versions.map((v) => {
          const refs = Object.entries(v.references)
            .map(([h, n]) => `${h} ${n}`)
            .join(', ');
          const age = v.createdAt ? `${Math.floor((now - Date.parse(v.createdAt)) / DAY)} d old` : 'age unknown';
          return `  v${v.version}  ${v.state.padEnd(9)}  ${age.padEnd(11)}  ${refs || 'nothing sealed'}`;
        });
        const pending = s.pendingRotation ? `\nrotation to v${s.pendingRotation.target ?? '?'} interrupted; resume it: aegis keys rotate --data-dir ${o.dataDir}` : '';
        const keyLines = ages.map((k) => {
          const v = k.version !== undefined ? `v${k.version}` : '';
          const due = k.dueAt ? `${k.due ? 'DUE since' : 'due'} ${k.dueAt.slice(0, 10)}` : k.expiresAt ? `expires ${k.expiresAt.slice(0, 10)}` : '';
          const src = k.dateSource === 'recorded' || k.dateSource === 'provider' ? '' : ` (date from ${k.dateSource})`;
          return `  ${k.key.padEnd(18)} ${v.padEnd(4)} created ${k.createdAt.slice(0, 10)}${src}, ${k.ageDays} d old, ${due}${k.note ? `; ${k.note}` : ''}`;
        });
        const head = `policy: KEK every ${policy.kekDays} d, signing keys every ${policy.signingDays} d`;
        printResult(o, { ok: true, ...s }, `KEK ${s.kek.id} (${s.kek.kind})\n${lines.join('\n')}${pending}\n${head}\n${keyLines.join('\n')}`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  withRotationOptions(
    keys
      .command('rotate')
      .description('make a new KEK version primary and re-wrap every DEK under it (data untouched); resumes an interrupted rotation; --due: rotate only what the policy says is due')
      .option(...dirOpt)
      .option('--emergency', `the keys may have leaked: a new passphrase (${NEW_PASSPHRASE_ENV} or a prompt) for the passphrase keyfiles, every value re-encrypted under a fresh DEK, the coordinator's token and queue keys replaced, every older KEK version destroyed`)
      .option('--due', 'rotate only the keys past their due date under the rotation policy (KEK, token key), as a running coordinator or client does')
      .option('--batch-size <n>', 'values changed per transaction', parseIntOption('batch-size', 1, 100_000), DEFAULT_ROTATION_BATCH)
      .option('--json', 'print one JSON object on stdout'),
  )
    .action(async (o: { dataDir: string; emergency?: boolean; due?: boolean; batchSize: number; json?: boolean } & RotationCliOptions) => {
      try {
        if (o.due) {
          if (o.emergency) throw new AegisError(ErrorCode.InvalidArgument, '--due and --emergency do not go together (--emergency rotates now, whatever the dates)');
          const rotated = await withDirKeys(o.dataDir, openers, async ({ dir, kek, holders }) => {
            const policy = await policyOf(dir, o);
            await recordPolicy(dir, policy);
            return rotateDueKeys({ dir, kek, holders, policy });
          }, 'aegis keys rotate --due');
          const text = rotated.length ? rotated.map((r) => `${r.key}: v${r.previousVersion} -> v${r.version} (due)`).join('\n') : 'nothing is due';
          printResult(o, { ok: true, rotated }, text);
          return;
        }
        const kill = process.env.AEGIS_TEST_KILL_AFTER_BATCHES;
        const r = await withDirKeys(o.dataDir, openers, async ({ dir, kek, holders, secrets }) => {
          // An emergency assumes the keys leaked: a new passphrase first (so no new key is ever
          // sealed under the old one), then the leak rotation it journals.
          const resealed = o.emergency ? await newDirPassphrase(dir, kek, secrets, true) : [];
          const r = await rotateKeys(dir, kek, holders, {
            emergency: o.emergency === true,
            ...(o.emergency ? { leak: true } : {}),
            batchSize: o.batchSize,
            onProgress: (n, h) => progress(`${h}: ${n} values moved`),
            ...(kill !== undefined ? { killAfterBatches: Number(kill) } : {}),
          });
          // The new primary's age starts now (the policy's due date follows it).
          await recordKey(dir, 'kek', { version: r.primary, createdAt: new Date().toISOString(), dateSource: 'recorded' });
          return { ...r, ...(o.emergency ? { resealed } : {}) };
        }, 'aegis keys rotate');
        printResult(o, { ok: true, ...r }, rotationText(r));
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  keys
    .command('passphrase')
    .description(`seal the data dir's keyfiles (KEK keyfile, identity key) under a new passphrase (${NEW_PASSPHRASE_ENV} or a prompt); the old one opens nothing afterwards`)
    .option(...dirOpt)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; json?: boolean }) => {
      try {
        const resealed = await withDirKeys(o.dataDir, openers, ({ dir, kek, secrets }) => newDirPassphrase(dir, kek, secrets, false), 'aegis keys passphrase');
        printResult(o, { ok: true, resealed }, `re-sealed under the new passphrase: ${resealed.join(', ')}`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  keys
    .command('recipient')
    .description('make an X25519 recipient identity (sealed under a passphrase) and print its public key, for encrypted exports and backups')
    .requiredOption('--out <file>', 'the identity file to create (kept by the recipient; refuses to overwrite)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { out: string; json?: boolean }) => {
      try {
        const { recipient } = await createRecipientIdentity(o.out, await obtainPassphrase({ confirm: true, what: `the identity ${o.out}` }));
        printResult(o, { ok: true, recipient, identity: resolve(o.out) }, `${recipient}\n(give this key to whoever exports to you; keep ${o.out} and its passphrase)`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  const versionOpt = ['--version <n>', 'the KEK version', parseIntOption('version', 1, 0xffffffff)] as const;
  keys
    .command('disable')
    .description('stop a KEK version from wrapping or unwrapping (refused while values still name it, unless --force)')
    .option(...dirOpt)
    .requiredOption(...versionOpt)
    .option('--force', 'disable even though values still name it (they stay unreadable until it is enabled again)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; version: number; force?: boolean; json?: boolean }) => {
      try {
        await withDirKeys(o.dataDir, openers, ({ dir, kek, holders }) => disableKeyVersion(dir, kek, holders, o.version, o.force === true), 'aegis keys disable');
        printResult(o, { ok: true, version: o.version, state: 'disabled' }, `v${o.version} disabled`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  keys
    .command('enable')
    .description('enable a disabled KEK version again')
    .option(...dirOpt)
    .requiredOption(...versionOpt)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; version: number; json?: boolean }) => {
      try {
        await withDirKeys(o.dataDir, openers, ({ kek }) => kek.enable(o.version), 'aegis keys enable');
        printResult(o, { ok: true, version: o.version, state: 'enabled' }, `v${o.version} enabled`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  keys
    .command('destroy')
    .description('erase a KEK version for good (refused while any sealed value names it or a rotation is pending)')
    .option(...dirOpt)
    .requiredOption(...versionOpt)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; version: number; json?: boolean }) => {
      try {
        await withDirKeys(o.dataDir, openers, ({ dir, kek, holders }) => destroyKeyVersion(dir, kek, holders, o.version), 'aegis keys destroy');
        printResult(o, { ok: true, version: o.version, state: 'destroyed' }, `v${o.version} destroyed`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
