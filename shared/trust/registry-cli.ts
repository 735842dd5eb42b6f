/**
 * `aegis registry init|add-publisher|revoke-publisher|sign|rotate-root|show|publish` (ops): the
 * signed publisher registry in a directory (shared/trust/registry-dir.ts), and its copy at the
 * backup location (registry-publish.ts). The root keys are sealed under one passphrase
 * (AEGIS_PASSPHRASE or a prompt) and belong offline between uses.
 */
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { parseDuration, parseIntOption, progress, reportError, printResult } from '../cli/output.js';
import { obtainPassphrase } from '../cli/passphrase.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { AegisError, ErrorCode } from '../errors.js';
import { keyIdOf } from './dsse.js';
import { parseStrictJson } from './strict-json.js';
import { DEFAULT_EXPIRES_DAYS, addPublisher, initRegistry, listKeyFiles, readRegistry, revokePublisher, rotateRoot, signPublishers, type RegistryDocs } from './registry-dir.js';
import { MAX_ROOT_KEYS } from './registry.js';
import { publishRegistry } from './registry-publish.js';

const DAY_MS = 86_400_000;
const expiresOption = parseDuration('expires', 60_000, 10 * 365 * DAY_MS);

interface Common {
  dir: string;
  json?: boolean;
}


async function run(o: { json?: boolean }, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    reportError(err, Boolean(o.json));
  }
}

const passphraseFor = (dir: string, confirm = false): Promise<string> => obtainPassphrase({ confirm, what: `the root keys of the registry ${dir}` });

/** A valid Ed25519 point (not of small order): what a public key must be, unlike a key id. */
function isPublicKey(b: Uint8Array): boolean {
  try {
    return !ed25519.Point.fromBytes(b).isSmallOrder();
  } catch {
    return false;
  }
}

function decodeKeyText(text: string, what: string): Uint8Array {
  const t = text.trim();
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(t)) key = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9+/]{43}=$/.test(t) && Buffer.from(t, 'base64').toString('base64') === t) key = Buffer.from(t, 'base64');
  if (!key) throw new AegisError(ErrorCode.InvalidArgument, `${what} is not a 32-byte public key in base64 or hex, nor a publisher .pub.json file`);
  return new Uint8Array(key);
}

/**
 * `--public-key`: a file (a `.pub.json` with `publicKey`, or base64/hex text) or a literal
 * base64/hex key. 64 hex digits look like a key id too: those must decode to a valid Ed25519
 * key, and one that names a listed publisher is refused as a key id.
 */
export async function readPublisherKey(spec: string, listed: (keyid: string) => boolean = () => false): Promise<Uint8Array> {
  const isFile = await stat(spec).then(
    (st) => st.isFile(),
    () => false,
  );
  let key: Uint8Array;
  if (isFile) {
    const text = (await readFile(spec, 'utf8')).trim();
    if (text.startsWith('{')) {
      const o = parseStrictJson(text, spec) as { publicKey?: unknown; keyid?: unknown } | null;
      if (typeof o !== 'object' || o === null || typeof o.publicKey !== 'string') throw new AegisError(ErrorCode.InvalidArgument, `${spec} has no publicKey field`);
      key = decodeKeyText(o.publicKey, `the publicKey of ${spec}`);
      if (o.keyid !== undefined && o.keyid !== keyIdOf(key)) throw new AegisError(ErrorCode.InvalidArgument, `${spec}: keyid does not match its publicKey`);
    } else {
      key = decodeKeyText(text, spec);
    }
  } else {
    if (/^[0-9a-fA-F]{64}$/.test(spec) && listed(spec.toLowerCase())) {
      throw new AegisError(ErrorCode.InvalidArgument, `${spec} is the key id of a listed publisher, not a public key: pass the publisher's .pub.json file or its base64 public key`);
    }
    if (!/^[0-9a-fA-F]{64}$/.test(spec) && !/^[A-Za-z0-9+/]{43}=$/.test(spec)) {
      throw new AegisError(ErrorCode.NotFound, `${spec} is neither a readable file nor a base64/hex public key`);
    }
    key = decodeKeyText(spec, '--public-key');
  }
  if (!isPublicKey(key)) {
    throw new AegisError(
      ErrorCode.InvalidArgument,
      '--public-key is not a valid Ed25519 public key (64 hex digits are often a key id, which cannot be added): pass the publisher.pub.json written by aegis manifest keygen',
    );
  }
  return key;
}

/** The registry as one JSON object (for `show --json` and after changes). */
function describe(docs: RegistryDocs, now = new Date()): Record<string, unknown> {
  const { root, publishers } = docs;
  return {
    root: { version: root.version, expires: root.expires, expired: Date.parse(root.expires) <= now.getTime(), threshold: root.threshold, keyids: Object.keys(root.keys).sort() },
    publishers: {
      version: publishers.version,
      expires: publishers.expires,
      expired: Date.parse(publishers.expires) <= now.getTime(),
      root_version: publishers.rootVersion,
      keys: Object.entries(publishers.publishers)
        .map(([keyid, p]) => ({ keyid, name: p.name, public_key: p.publicKey, revoked: p.revoked === true, revoked_at: p.revokedAt ?? null }))
        .sort((a, b) => a.name.localeCompare(b.name) || a.keyid.localeCompare(b.keyid)),
    },
  };
}

function describeText(docs: RegistryDocs, now = new Date()): string {
  const { root, publishers } = docs;
  const flag = (expires: string): string => (Date.parse(expires) <= now.getTime() ? '  EXPIRED' : '');
  const lines = [
    `root v${root.version}: threshold ${root.threshold} of ${Object.keys(root.keys).length} keys, expires ${root.expires}${flag(root.expires)}`,
    ...Object.keys(root.keys)
      .sort()
      .map((id) => `  root key ${id}`),
    `publishers v${publishers.version} (signed under root v${publishers.rootVersion}), expires ${publishers.expires}${flag(publishers.expires)}`,
  ];
  const entries = Object.entries(publishers.publishers);
  if (entries.length === 0) lines.push('  no publishers');
  for (const [id, p] of entries) lines.push(`  ${id}  ${p.revoked ? `REVOKED ${p.revokedAt ?? ''}`.trim() : 'active'}  ${p.name}`);
  return lines.join('\n');
}

const days = (ms: number | undefined): number | undefined => (ms === undefined ? undefined : ms / DAY_MS);

export function registerRegistry(program: Command): void {
  const group = program.command('registry').description('the signed publisher registry: root keys, publishers, rotation (ops)');
  const withDir = (cmd: Command): Command => cmd.requiredOption('--dir <dir>', 'the registry directory').option('--json', 'print one JSON object on stdout');

  withDir(group.command('init').description('create a registry: root keys (sealed), root v1, an empty publishers list'))
    .requiredOption('--roots <n>', 'how many root keys', parseIntOption('roots', 1, MAX_ROOT_KEYS))
    .requiredOption('--threshold <t>', 'how many root keys must sign a change', parseIntOption('threshold', 1, MAX_ROOT_KEYS))
    .option('--expires <duration>', `how long root and publishers stay valid (default ${DEFAULT_EXPIRES_DAYS}d)`, expiresOption)
    .action((o: Common & { roots: number; threshold: number; expires?: number }) =>
      run(o, async () => {
        const dir = resolve(o.dir);
        const passphrase = await passphraseFor(dir, true);
        const r = await initRegistry(dir, { roots: o.roots, threshold: o.threshold, passphrase, expiresDays: days(o.expires) });
        progress(`MOVE THE ROOT KEYS OFFLINE: copy ${dir}/keys/ to offline media and delete it here; bring a threshold back only to sign (see ${dir}/README.txt)`);
        printResult(
          o,
          { ok: true, ...describe(r), key_files: r.keyFiles.map((k) => ({ path: k.path, keyid: k.keyid })) },
          `${describeText(r)}\nroot keys (sealed): ${r.keyFiles.map((k) => k.path).join(', ')}`,
        );
      }),
    );

  withDir(group.command('add-publisher').description('list a publisher key (re-signs the publishers list)'))
    .requiredOption('--public-key <file|key>', 'the publisher.pub.json (aegis manifest keygen), or a base64/hex public key')
    .requiredOption('--name <name>', 'who holds the key')
    .option('--expires <duration>', `how long the new publishers list stays valid (default ${DEFAULT_EXPIRES_DAYS}d)`, expiresOption)
    .action((o: Common & { publicKey: string; name: string; expires?: number }) =>
      run(o, async () => {
        const dir = resolve(o.dir);
        const current = await readRegistry(dir);
        const publicKey = await readPublisherKey(o.publicKey, (id) => Object.hasOwn(current.publishers.publishers, id));
        const r = await addPublisher(dir, { publicKey, name: o.name, passphrase: await passphraseFor(dir), expiresDays: days(o.expires) });
        printResult(o, { ok: true, keyid: r.keyid, ...describe(r) }, `added ${o.name}: key id ${r.keyid}; publishers v${r.publishers.version}, expires ${r.publishers.expires}`);
      }),
    );

  withDir(group.command('revoke-publisher').description('revoke a publisher key: clients refuse its manifests once they fetch the new list'))
    .requiredOption('--keyid <keyid>', 'the publisher key id (aegis registry show)')
    .option('--expires <duration>', `how long the new publishers list stays valid (default ${DEFAULT_EXPIRES_DAYS}d)`, expiresOption)
    .action((o: Common & { keyid: string; expires?: number }) =>
      run(o, async () => {
        const dir = resolve(o.dir);
        const r = await revokePublisher(dir, { keyid: o.keyid, passphrase: await passphraseFor(dir), expiresDays: days(o.expires) });
        printResult(o, { ok: true, keyid: o.keyid, ...describe(r) }, `revoked ${o.keyid}; publishers v${r.publishers.version}, expires ${r.publishers.expires}`);
      }),
    );

  withDir(group.command('sign').description('re-sign the publishers list with a new version and expiry (before it expires: clients freeze on an expired list)'))
    .option('--expires <duration>', `how long it stays valid (default ${DEFAULT_EXPIRES_DAYS}d)`, expiresOption)
    .action((o: Common & { expires?: number }) =>
      run(o, async () => {
        const dir = resolve(o.dir);
        const r = await signPublishers(dir, { passphrase: await passphraseFor(dir), expiresDays: days(o.expires) });
        printResult(o, { ok: true, ...describe(r) }, `publishers v${r.publishers.version} signed, expires ${r.publishers.expires}`);
      }),
    );

  withDir(group.command('rotate-root').description('root v+1: add or remove root keys, change the threshold, or renew its expiry; signed by the old and the new threshold'))
    .option('--add <n>', 'new root keys to create', parseIntOption('add', 0, MAX_ROOT_KEYS), 0)
    .option('--remove <keyid...>', 'root key ids to drop')
    .option('--threshold <t>', 'the new threshold (default: unchanged)', parseIntOption('threshold', 1, MAX_ROOT_KEYS))
    .option('--expires <duration>', `how long the new root and publishers stay valid (default ${DEFAULT_EXPIRES_DAYS}d)`, expiresOption)
    .action((o: Common & { add: number; remove?: string[]; threshold?: number; expires?: number }) =>
      run(o, async () => {
        const dir = resolve(o.dir);
        const r = await rotateRoot(dir, { passphrase: await passphraseFor(dir), add: o.add, remove: o.remove, threshold: o.threshold, expiresDays: days(o.expires) });
        if (r.addedKeyFiles.length > 0) progress(`new root keys: ${r.addedKeyFiles.map((k) => k.path).join(', ')}: move them offline`);
        if (r.retiredKeyFiles.length > 0) progress(`no longer root keys (destroy once root v${r.root.version} is served everywhere): ${r.retiredKeyFiles.map((k) => k.path).join(', ')}`);
        printResult(
          o,
          {
            ok: true,
            ...describe(r),
            added_key_files: r.addedKeyFiles.map((k) => ({ path: k.path, keyid: k.keyid })),
            retired_key_files: r.retiredKeyFiles.map((k) => ({ path: k.path, keyid: k.keyid })),
          },
          `root v${r.root.version}: threshold ${r.root.threshold} of ${Object.keys(r.root.keys).length} keys, expires ${r.root.expires}; publishers v${r.publishers.version} re-signed`,
        );
      }),
    );

  withDir(group.command('publish').description("copy the signed registry (root chain and publishers, never keys/) to the backup location clients check against; after every change"))
    .requiredOption('--to <dir>', 'the backup registry directory (what client run --backup-registry reads, or what a backup coordinator serves with --registry)')
    .action((o: Common & { to: string }) =>
      run(o, async () => {
        const r = await publishRegistry(o.dir, o.to);
        const before = r.previous ? `root v${r.previous.rootVersion}, publishers v${r.previous.publishersVersion}` : 'no registry';
        const now = `root v${r.root.version}, publishers v${r.publishers.version}`;
        printResult(
          o,
          { ok: true, to: r.to, changed: r.changed, previous: r.previous ? { root_version: r.previous.rootVersion, publishers_version: r.previous.publishersVersion } : null, ...describe(r) },
          r.changed ? `published to ${r.to}: ${now} (was ${before})` : `${r.to} is up to date: ${now}`,
        );
      }),
    );

  withDir(group.command('show').description('the registry: root version, threshold and keys, publishers, versions and expiries (verified)')).action((o: Common) =>
    run(o, async () => {
      const dir = resolve(o.dir);
      const r = await readRegistry(dir);
      const keyFiles = await listKeyFiles(dir);
      const warn = keyFiles.length > 0 ? `\nwarning: ${keyFiles.length} root keyfile(s) in ${dir}/keys: keep root keys offline between uses` : '';
      printResult(o, { ok: true, ...describe(r), key_files_present: keyFiles.map((k) => k.path) }, `${describeText(r)}${warn}`);
    }),
  );
}
