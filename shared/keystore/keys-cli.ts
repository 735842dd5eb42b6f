/**
 * `aegis keys status|rotate|disable|enable|destroy --data-dir DIR` — the same commands on a client
 * data dir and on a coordinator data dir (DESIGN.md §5 "Rotation"). What a dir holds under its KEK
 * is found by looking: the client's store (store.db) and the sealed secrets (secrets.vault.json).
 * Output names versions, states, dates and counts — never key material.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { AegisError, ErrorCode } from '../errors.js';
import { parseIntOption, printResult, progress, reportError } from '../cli/output.js';
import { cliKekSecrets, obtainPassphrase } from '../cli/passphrase.js';
import { openKek, type KekInitOptions } from './kek-config.js';
import { KEK_KINDS, type KekKind, type ManagedKek } from './kek.js';
import { DEFAULT_ROTATION_BATCH, destroyKeyVersion, disableKeyVersion, keyStatus, readJournal, rotateKeys, type KeyHolder } from './rotation.js';
import { SealedVault } from './vault.js';
import { createRecipientIdentity } from './stream.js';

export const VAULT_FILE = 'secrets.vault.json';

/** Opens what else a data dir keeps under its KEK (the CLI root passes the client's store). */
export type HolderOpener = (dir: string, kek: ManagedKek) => Promise<(KeyHolder & { close?: () => void }) | undefined>;

interface Opened {
  kek: ManagedKek;
  holders: (KeyHolder & { close?: () => void })[];
}

/** Opens a data dir's KEK and every holder, runs `fn`, closes everything. */
export async function withDirKeys<T>(dataDir: string, openers: readonly HolderOpener[], fn: (o: Opened & { dir: string }) => Promise<T>): Promise<T> {
  const dir = resolve(dataDir);
  const kek = await openKek(dir, cliKekSecrets(`the keys in ${dir}`));
  const holders: Opened['holders'] = [];
  try {
    for (const open of openers) {
      const h = await open(dir, kek);
      if (h !== undefined) holders.push(h);
    }
    if (existsSync(join(dir, VAULT_FILE))) holders.push(await SealedVault.open(join(dir, VAULT_FILE)));
    return await fn({ dir, kek, holders });
  } finally {
    for (const h of holders) h.close?.();
    await kek.close();
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

export function registerKeys(program: Command, openers: readonly HolderOpener[]): void {
  const keys = program.command('keys').description('KEK versions of a client or coordinator data dir: status, rotation, retirement');
  const dirOpt = ['--data-dir <dir>', 'the client or coordinator data dir', process.env.AEGIS_DATA_DIR ?? '.'] as const;

  keys
    .command('status')
    .description('every KEK version: state, age, and how many sealed values name it')
    .option(...dirOpt)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; json?: boolean }) => {
      try {
        const s = await withDirKeys(o.dataDir, openers, ({ dir, kek, holders }) => keyStatus(dir, kek, holders));
        const now = Date.now();
        const lines = s.versions.map((v) => {
          const refs = Object.entries(v.references)
            .map(([h, n]) => `${h} ${n}`)
            .join(', ');
          const age = v.createdAt ? `${Math.floor((now - Date.parse(v.createdAt)) / DAY)} d old` : 'age unknown';
          return `  v${v.version}  ${v.state.padEnd(9)}  ${age.padEnd(11)}  ${refs || 'nothing sealed'}`;
        });
        const pending = s.pendingRotation ? `\nrotation to v${s.pendingRotation.target ?? '?'} interrupted; resume it: aegis keys rotate --data-dir ${o.dataDir}` : '';
        printResult(o, { ok: true, ...s }, `KEK ${s.kek.id} (${s.kek.kind})\n${lines.join('\n')}${pending}`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });

  keys
    .command('rotate')
    .description('make a new KEK version primary and re-wrap every DEK under it (data untouched); resumes an interrupted rotation')
    .option(...dirOpt)
    .option('--emergency', 'also re-encrypt every value under a fresh DEK and disable every older version at once')
    .option('--batch-size <n>', 'values changed per transaction', parseIntOption('batch-size', 1, 100_000), DEFAULT_ROTATION_BATCH)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { dataDir: string; emergency?: boolean; batchSize: number; json?: boolean }) => {
      try {
        const kill = process.env.AEGIS_TEST_KILL_AFTER_BATCHES;
        const r = await withDirKeys(o.dataDir, openers, ({ dir, kek, holders }) =>
          rotateKeys(dir, kek, holders, {
            emergency: o.emergency === true,
            batchSize: o.batchSize,
            onProgress: (n, h) => progress(`${h}: ${n} values moved`),
            ...(kill !== undefined ? { killAfterBatches: Number(kill) } : {}),
          }),
        );
        const moved = Object.entries(r.moved)
          .map(([h, n]) => `${h} ${n}`)
          .join(', ');
        const text = `${r.resumed ? 'resumed and finished' : 'finished'} ${r.emergency ? 'emergency ' : ''}rotation: v${r.primary} is primary; moved ${moved || 'nothing'}${r.disabled.length ? `; disabled v${r.disabled.join(', v')}` : ''}`;
        printResult(o, { ok: true, ...r }, text);
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
        await withDirKeys(o.dataDir, openers, ({ dir, kek, holders }) => disableKeyVersion(dir, kek, holders, o.version, o.force === true));
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
        await withDirKeys(o.dataDir, openers, ({ kek }) => kek.enable(o.version));
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
        await withDirKeys(o.dataDir, openers, ({ dir, kek, holders }) => destroyKeyVersion(dir, kek, holders, o.version));
        printResult(o, { ok: true, version: o.version, state: 'destroyed' }, `v${o.version} destroyed`);
      } catch (err) {
        reportError(err, Boolean(o.json));
      }
    });
}
