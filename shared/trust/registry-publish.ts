/**
 * `aegis registry publish`: copies a registry's public files (the root chain and the publishers
 * list, never keys/) to its backup location, a directory that clients read directly
 * (`client run --backup-registry DIR`) or that a backup coordinator serves (`coordinator start
 * --registry DIR`, read afresh on every request).
 *
 * Both sides are verified first (signatures, chain, strict parsing; not expiry, as the registry
 * tools), and the target is only ever moved forward along the same registry's history: a target
 * whose root at its version is not the source's is another registry (`registry-mismatch`); a
 * target newer than the source is kept (`rollback`); one at the same publishers version must hold
 * the same bytes (then nothing is written). Each file is replaced atomically (temp file, fsync,
 * rename): the new root files first, publishers.json last, so a reader sees either the old
 * registry or the new one — except during a root rotation, where a reader between the two steps
 * sees the new root with the old list, which clients refuse as stale (`rollback`, one round sat
 * out), never as a disagreement. The result is read back and verified before returning.
 */
import { mkdir, readdir, realpath } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { AegisError, ErrorCode } from '../errors.js';
import { canonicalJson } from './strict-json.js';
import { loadVerified, publishersPath, rootPath, writeEnvelope } from './registry-dir.js';
import { isRegistryAddress } from './registry-source.js';
import { rootSha256, type PublishersDoc, type RootDoc } from './registry.js';

export interface PublishResult {
  /** The target directory. */
  to: string;
  root: RootDoc;
  publishers: PublishersDoc;
  /** What the target held before (absent: there was no registry there). */
  previous?: { rootVersion: number; publishersVersion: number };
  /** False when the target already held exactly this registry (nothing was written). */
  changed: boolean;
}

const realOrSelf = (p: string): Promise<string> => realpath(p).catch(() => p);

/** The target's verified registry, or undefined when the directory is absent or empty. */
async function currentTarget(to: string): Promise<Awaited<ReturnType<typeof loadVerified>> | undefined> {
  let names: string[];
  try {
    names = await readdir(to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  if (names.length === 0) return undefined;
  if (!names.includes('root')) {
    throw new AegisError(ErrorCode.AlreadyExists, `--to ${to} is not empty and holds no registry (no root/): publish into a new or empty directory, or into an earlier copy of this registry`);
  }
  try {
    return await loadVerified(to);
  } catch (e) {
    if (e instanceof AegisError) throw new AegisError(e.code, `--to ${to}: the registry there does not verify (${e.message}); it is left as it is`);
    throw e;
  }
}

/** Publishes the registry in `dir` to the directory `to` (see the module comment). */
export async function publishRegistry(dir: string, toSpec: string): Promise<PublishResult> {
  if (isRegistryAddress(toSpec)) {
    throw new AegisError(
      ErrorCode.InvalidArgument,
      `--to ${toSpec} is an address: a coordinator serves the registry directory it was started with (coordinator start --registry DIR) and takes no uploads; run aegis registry publish --to DIR on its host, into that directory`,
    );
  }
  const from = resolve(dir);
  const to = resolve(toSpec);
  if ((await realOrSelf(from)) === (await realOrSelf(to))) throw new AegisError(ErrorCode.InvalidArgument, '--to names the registry directory itself: give the backup location');
  const source = await loadVerified(from);
  const target = await currentTarget(to);
  let firstNewRoot = 1;
  if (target) {
    if (target.root.version > source.root.version) {
      throw new AegisError(ErrorCode.Rollback, `--to ${to} holds root v${target.root.version}, newer than this registry's v${source.root.version}: an older registry is never published over a newer one`);
    }
    const same = source.roots[target.root.version - 1];
    if (!same || rootSha256(same) !== rootSha256(target.root)) {
      throw new AegisError(ErrorCode.RegistryMismatch, `--to ${to} holds another registry (its root v${target.root.version} is not this registry's): nothing was written`);
    }
    if (target.publishers.version > source.publishers.version) {
      throw new AegisError(
        ErrorCode.Rollback,
        `--to ${to} holds publishers v${target.publishers.version}, newer than this registry's v${source.publishers.version}: an older registry is never published over a newer one`,
      );
    }
    if (target.publishers.version === source.publishers.version) {
      if (canonicalJson(target.snapshot.publishers) !== canonicalJson(source.snapshot.publishers)) {
        throw new AegisError(ErrorCode.RegistryMismatch, `--to ${to} holds other publishers under the same version v${source.publishers.version}: nothing was written`);
      }
      if (target.root.version === source.root.version) {
        return { to, root: source.root, publishers: source.publishers, previous: { rootVersion: target.root.version, publishersVersion: target.publishers.version }, changed: false };
      }
    }
    firstNewRoot = target.root.version + 1;
  }
  await mkdir(join(to, 'root'), { recursive: true, mode: 0o755 });
  // Roots first, the publishers list (which names its root) last.
  for (let v = firstNewRoot; v <= source.root.version; v++) await writeEnvelope(rootPath(to, v), source.snapshot.roots[v - 1]!);
  await writeEnvelope(publishersPath(to), source.snapshot.publishers);
  const written = await loadVerified(to);
  if (canonicalJson(written.snapshot) !== canonicalJson(source.snapshot)) {
    throw new AegisError(ErrorCode.FailedPrecondition, `--to ${to} changed while it was being published: publish again`);
  }
  return {
    to,
    root: source.root,
    publishers: source.publishers,
    ...(target ? { previous: { rootVersion: target.root.version, publishersVersion: target.publishers.version } } : {}),
    changed: true,
  };
}
