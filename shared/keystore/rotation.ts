/**
 * Key lifecycle across a data dir (`aegis keys status|rotate|disable|enable|destroy`, both sides):
 * a KEK (kek.ts) and the holders of values sealed under it — the client's store, the coordinator's
 * sealed secrets — which can count, re-wrap and re-seal what they hold.
 *
 * rotate: a new KEK version becomes primary and every DEK is re-wrapped under it (data untouched:
 * nonce, commitment and ciphertext stay byte-identical, envelope.ts `rewrapField`).
 * rotate --emergency: every value is re-encrypted under a fresh DEK wrapped by the new version,
 * then every older usable version is disabled at once.
 * A leak rotation (`leak` in the journal; `aegis keys rotate --emergency` from the CLI) is an
 * emergency rotation that assumes the old keys are known to someone else: after every value has
 * moved, the holders replace the secrets they can replace (`replaceSecrets`: the coordinator's
 * token and queue keys), then every older version is DESTROYED (its key material erased; it can
 * never be enabled again) instead of disabled.
 *
 * Crash safety: the rotation is journaled in `DATA_DIR/keys-rotation.json` (written atomically)
 * before anything changes, and each holder changes values in small transactions, each value
 * either old or new. A rotation killed at any point resumes on the next `aegis keys rotate` (and
 * on every command that opens the data dir's keys): the journal names the target version, and
 * only values not yet under it are touched. Nothing is lost: an old version is disabled only after
 * every value has moved, and is destroyed only by a leak rotation, after the check that no value
 * names it; a leak rotation killed after its secrets were replaced does not replace them twice
 * (`replaced` in the journal).
 */
import { existsSync } from 'node:fs';
import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AegisError, ErrorCode } from '../errors.js';
import { writeFileAtomic } from '../fs.js';
import type { KekVersionInfo, ManagedKek } from './kek.js';

export const ROTATION_JOURNAL = 'keys-rotation.json';
export const DEFAULT_ROTATION_BATCH = 256;

/** Anything that holds values sealed under a data dir's KEK. */
export interface KeyHolder {
  /** Shown in `aegis keys status` (e.g. 'store', 'secrets'). */
  readonly name: string;
  /** How many sealed values name each KEK version. `verify` re-reads every header instead of an index. */
  references(verify?: boolean): Promise<Map<number, number>>;
  /**
   * Moves up to `limit` values that are not yet under `target`: re-wraps their DEK, or with
   * `emergency` re-seals them under a fresh DEK. Returns how many it moved (0: none left).
   */
  rotateSome(kek: ManagedKek, target: number, emergency: boolean, limit: number): Promise<number>;
  /**
   * Leak rotations only: replaces the secrets this holder can replace without anyone else's help
   * (new random values, sealed under the new primary) and says what it could not replace and how
   * to replace it.
   */
  replaceSecrets?(kek: ManagedKek): Promise<SecretReplacement>;
}

export interface SecretReplacement {
  replaced: { secret: string; detail: string }[];
  notReplaced: { secret: string; how: string }[];
}

const JournalSchema = z
  .object({
    version: z.literal(1),
    emergency: z.boolean(),
    startedAt: z.string(),
    /** Unset until the new version exists (a crash in between re-uses a fresh enabled version). */
    target: z.number().int().positive().optional(),
    /** A leak rotation: replace what can be replaced, then destroy every older version. */
    leak: z.boolean().optional(),
    /** The secrets a leak rotation already replaced (so a resumed one does not replace them again). */
    replaced: z.array(z.object({ secret: z.string(), detail: z.string() }).strict()).optional(),
    notReplaced: z.array(z.object({ secret: z.string(), how: z.string() }).strict()).optional(),
  })
  .strict();
export type RotationJournal = z.infer<typeof JournalSchema>;

export async function readJournal(dir: string): Promise<RotationJournal | undefined> {
  const path = join(dir, ROTATION_JOURNAL);
  if (!existsSync(path)) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    throw new AegisError(ErrorCode.Malformed, `${path} is not a rotation journal`);
  }
  const r = JournalSchema.safeParse(json);
  if (!r.success) throw new AegisError(ErrorCode.Malformed, `${path} is not a rotation journal`);
  return r.data;
}

const writeJournal = (dir: string, j: RotationJournal): Promise<void> => writeFileAtomic(join(dir, ROTATION_JOURNAL), `${JSON.stringify(j)}\n`);

/**
 * Journals a leak rotation (passphrase-change.ts calls it once the new passphrase is in place).
 * A pending normal rotation becomes a leak rotation towards a fresh version (the values it
 * re-wrapped kept their old DEKs); a pending emergency one just gains `leak`.
 */
export async function markLeakRotation(dir: string): Promise<void> {
  const pending = await readJournal(dir);
  if (pending?.leak === true) return;
  const j: RotationJournal = pending ?? { version: 1, emergency: true, startedAt: new Date().toISOString() };
  if (!j.emergency) {
    j.emergency = true;
    delete j.target;
  }
  j.leak = true;
  await writeJournal(dir, j);
}

export interface RotationOptions {
  emergency?: boolean;
  batchSize?: number;
  /** Called after every batch with the running total of values moved. */
  onProgress?: (moved: number, holder: string) => void;
  /**
   * Fault injection for the crash-recovery test: after this many batches the process kills itself
   * with SIGKILL (read from AEGIS_TEST_KILL_AFTER_BATCHES by the CLI; never set in production).
   */
  killAfterBatches?: number;
  /** A leak rotation (see the header); `keys rotate --emergency` journals it with the passphrase change instead. */
  leak?: boolean;
}

export interface RotationReport {
  /** The version every value is now under. */
  primary: number;
  emergency: boolean;
  /** True when this call finished a rotation an earlier, interrupted run had started. */
  resumed: boolean;
  moved: Record<string, number>;
  /** Versions disabled at the end (emergency only). */
  disabled: number[];
  /** Leak rotations: versions destroyed at the end. */
  destroyed?: number[];
  /** Leak rotations: what the holders replaced and what they could not. */
  replaced?: SecretReplacement['replaced'];
  notReplaced?: SecretReplacement['notReplaced'];
}

/**
 * Rotates (or resumes an interrupted rotation). An interrupted rotation is always finished as it
 * was started (normal or emergency); asking for an emergency while a normal one is pending
 * upgrades it to an emergency towards a fresh version, so every value gets a fresh DEK.
 */
export async function rotateKeys(dir: string, kek: ManagedKek, holders: readonly KeyHolder[], opts: RotationOptions = {}): Promise<RotationReport> {
  if (opts.leak === true) await markLeakRotation(dir);
  const batch = opts.batchSize ?? DEFAULT_ROTATION_BATCH;
  if (!Number.isInteger(batch) || batch < 1 || batch > 100_000) throw new AegisError(ErrorCode.InvalidArgument, 'the batch size must be 1..100000');
  const pending = await readJournal(dir);
  const resumed = pending !== undefined;
  const journal: RotationJournal = pending ?? { version: 1, emergency: opts.emergency === true, startedAt: new Date().toISOString() };
  if (opts.emergency === true && !journal.emergency) {
    // An emergency on top of an interrupted normal rotation: the values that rotation already
    // re-wrapped still carry their old DEKs, so aim at a fresh version and re-seal everything.
    journal.emergency = true;
    delete journal.target;
  }
  await writeJournal(dir, journal);

  if (journal.target === undefined) {
    // A crash between addVersion and the journal write leaves a fresh enabled version above the
    // primary: take it rather than make another.
    const infos = await kek.versions();
    const primary = await kek.primaryVersion();
    const spare = infos.filter((i) => i.state === 'enabled' && i.version > primary).at(-1);
    journal.target = spare?.version ?? (await kek.addVersion());
    await writeJournal(dir, journal);
  }
  const target = journal.target;
  if ((await kek.primaryVersion()) !== target) await kek.setPrimary(target);

  const moved: Record<string, number> = {};
  let batches = 0;
  for (const h of holders) {
    moved[h.name] = 0;
    let total = 0;
    for (;;) {
      const n = await h.rotateSome(kek, target, journal.emergency, batch);
      if (n === 0) break;
      total += n;
      moved[h.name] = total;
      opts.onProgress?.(total, h.name);
      batches++;
      if (opts.killAfterBatches !== undefined && batches >= opts.killAfterBatches) process.kill(process.pid, 'SIGKILL');
    }
  }
  // Every value is under the target now; check it rather than trust the holders' loops.
  for (const h of holders) {
    for (const [v, n] of await h.references(true)) {
      if (v !== target && n > 0) throw new AegisError(ErrorCode.FailedPrecondition, `${h.name} still holds ${n} values under KEK version ${v}; run aegis keys rotate again`);
    }
  }
  const disabled: number[] = [];
  const destroyed: number[] = [];
  const leak: Pick<RotationReport, 'replaced' | 'notReplaced'> = {};
  if (journal.leak === true) {
    // Replace what can be replaced (once: a resumed run finds it in the journal), then erase
    // every older version: nothing names them any more.
    if (journal.replaced === undefined) {
      const replaced: SecretReplacement['replaced'] = [];
      const notReplaced: SecretReplacement['notReplaced'] = [];
      for (const h of holders) {
        const r = await h.replaceSecrets?.(kek);
        replaced.push(...(r?.replaced ?? []));
        notReplaced.push(...(r?.notReplaced ?? []));
      }
      journal.replaced = replaced;
      journal.notReplaced = notReplaced;
      await writeJournal(dir, journal);
    }
    for (const i of await kek.versions()) {
      if (i.version !== target && (i.state === 'enabled' || i.state === 'disabled')) {
        await kek.destroy(i.version);
        destroyed.push(i.version);
      }
    }
    leak.replaced = journal.replaced;
    leak.notReplaced = journal.notReplaced ?? [];
  } else if (journal.emergency) {
    for (const i of await kek.versions()) {
      if (i.version !== target && i.state === 'enabled') {
        await kek.disable(i.version);
        disabled.push(i.version);
      }
    }
  }
  await unlink(join(dir, ROTATION_JOURNAL));
  return { primary: target, emergency: journal.emergency, resumed, moved, disabled, ...(journal.leak === true ? { destroyed, ...leak } : {}) };
}

export interface KeyVersionStatus extends KekVersionInfo {
  /** Sealed values naming this version, per holder. */
  references: Record<string, number>;
}

export interface KeyStatus {
  kek: { kind: string; id: string };
  versions: KeyVersionStatus[];
  /** A rotation that was interrupted and resumes on the next `aegis keys rotate`. */
  pendingRotation?: RotationJournal;
}

export async function keyStatus(dir: string, kek: ManagedKek, holders: readonly KeyHolder[]): Promise<KeyStatus> {
  const refs = await Promise.all(holders.map(async (h) => [h.name, await h.references()] as const));
  const versions = (await kek.versions()).map((i) => {
    const references: Record<string, number> = {};
    for (const [name, m] of refs) references[name] = m.get(i.version) ?? 0;
    return { ...i, references };
  });
  // Values naming a version the provider does not know (destroyed and forgotten): shown too.
  for (const [name, m] of refs) {
    for (const [v, n] of m) {
      if (n > 0 && !versions.some((x) => x.version === v)) versions.push({ version: v, state: 'destroyed', createdAt: '', references: { [name]: n } });
    }
  }
  versions.sort((a, b) => a.version - b.version);
  const pendingRotation = await readJournal(dir);
  return { kek: { kind: kek.kind, id: kek.id }, versions, ...(pendingRotation ? { pendingRotation } : {}) };
}

/** Destroys a KEK version; refused while a rotation is pending or any value still names it. */
export async function destroyKeyVersion(dir: string, kek: ManagedKek, holders: readonly KeyHolder[], version: number): Promise<void> {
  if ((await readJournal(dir)) !== undefined) throw new AegisError(ErrorCode.FailedPrecondition, 'a key rotation is pending; finish it first (aegis keys rotate)');
  for (const h of holders) {
    const n = (await h.references(true)).get(version) ?? 0;
    if (n > 0) throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${version} still protects ${n} values in ${h.name}; rotate first (aegis keys rotate)`);
  }
  await kek.destroy(version);
}

/** Disables a KEK version; refused while any value still names it (they would become unreadable). */
export async function disableKeyVersion(dir: string, kek: ManagedKek, holders: readonly KeyHolder[], version: number, force = false): Promise<void> {
  if (!force) {
    for (const h of holders) {
      const n = (await h.references(true)).get(version) ?? 0;
      if (n > 0) throw new AegisError(ErrorCode.FailedPrecondition, `KEK version ${version} still protects ${n} values in ${h.name}; rotate first, or pass --force to make them unreadable until it is enabled again`);
    }
  }
  await kek.disable(version);
}
