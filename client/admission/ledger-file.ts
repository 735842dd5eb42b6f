/**
 * The contribution ledger in the client's data dir (the rules are in ledger.ts):
 *
 *   ledger.json            what the client joined and contributed, sealed (below); 0600, written
 *                          through a temp file, fsync and rename before the message it records
 *                          leaves
 *   ledger.restored-*.json a ledger a restore brought into a dir that had one; merged (the union)
 *                          into ledger.json the next time the ledger is opened, then removed
 *   ledger.lock            held while one process reads, merges and writes the ledger (O_EXCL)
 *
 * The file is `{"format":"aegis-contribution-ledger","version":1,"ledger":{…},"seals":[…]}`.
 * Each seal carries the input-digest keys, encrypted (AES-256-GCM) under a key derived with
 * HKDF-SHA256 from the client's identity seed, and an HMAC-SHA256, under another key derived
 * from that seed, over the canonical JSON of the format, version, ledger and those encrypted
 * keys. A file opens only when a seal verifies under this client's identity: a byte changed, a
 * truncated file or another identity's ledger is refused, never read as empty. There are two
 * seals only while the identity key rotates (the old identity's and the new one's), so the file
 * opens under whichever identity the rotation settles on.
 *
 * Every write merges what is on disk first (under the lock), so two processes on one data dir
 * — `client run` and `client ledger` — never lose each other's entries.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { open as aeadOpen, seal as aeadSeal } from '../../shared/crypto/aead.js';
import { hkdfSha256 } from '../../shared/crypto/hkdf.js';
import { utf8 } from '../../shared/bytes.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { writeFileAtomic } from '../../shared/fs.js';
import { withFileLock } from '../../shared/fs-lock.js';
import { canonicalJson, parseStrictJson } from '../../shared/trust/strict-json.js';
import { MAX_CHARGES, RDP_ORDERS } from './privacy-budget.js';
import { emptyLedgerData, inputKeyId, Ledger, MAX_INPUTS, MAX_JOBS, MAX_RANGES, mergeLedgers, RECENT_ROUNDS, type LedgerData, type LedgerStore } from './ledger.js';

export const LEDGER_FILE = 'ledger.json';
export const LEDGER_LOCK = 'ledger.lock';
const RESTORED = /^ledger\.restored-[0-9a-f]{12}\.json$/;
/** A temp file of writeFileAtomic: a write a crash interrupted; never read. */
const TEMP = /^\.ledger\.json\.[0-9a-f]{12}\.tmp$/;

/** The name a restore gives the backup's ledger in a dir that already has one. */
export const restoredLedgerName = (): string => `ledger.restored-${randomBytes(6).toString('hex')}.json`;
/** Whether a data dir entry belongs to the ledger (a restore may go into a dir that holds only these). */
export const isLedgerFile = (name: string): boolean => name === LEDGER_FILE || name === LEDGER_LOCK || RESTORED.test(name) || TEMP.test(name);
/** Whether a data dir entry is a ledger a restore keeps (the ledger and unmerged restored ones). */
export const isKeptLedgerFile = (name: string): boolean => name === LEDGER_FILE || RESTORED.test(name);

/** Files that show a data dir took part in rounds before (a missing ledger there is refused). */
export const RAN_BEFORE_FILES: readonly string[] = ['audit.log', 'audit.json', 'trust.json'];

const FORMAT = 'aegis-contribution-ledger';
const VERSION = 1;
const MAX_FILE_BYTES = 8 << 20;
const SALT = utf8('aegis/v1/contribution-ledger');
const KEYS_AAD = utf8('aegis/v1/contribution-ledger/input-keys');

/** The two keys a seal needs, derived from one identity seed. */
interface SealKey {
  mac: Uint8Array;
  wrap: Uint8Array;
}

export function sealKeyOf(seed: Uint8Array): SealKey {
  return { mac: hkdfSha256(seed, SALT, utf8('hmac-sha256'), 32), wrap: hkdfSha256(seed, SALT, utf8('input-keys'), 32) };
}

// ---------------------------------------------------------------------------------------------
// The file.

const Hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const Iso = z.string().min(1).max(40);
const Index = z.number().int().min(0).max(2 ** 32);
const RoundSchema = z.strictObject({
  roundIndex: Index,
  modelVersion: Index.optional(),
  joinedAt: Iso,
  contributedAt: Iso.optional(),
  outcome: z.enum(['ok', 'aborted', 'flagged']).optional(),
});
const JobSchema = z.strictObject({
  manifestSha256: Hex64,
  jobId: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).optional(),
  kind: z.enum(['plain', 'training']),
  rounds: z.number().int().min(1).max(10_000).optional(),
  expiresAt: Iso.optional(),
  joined: z.array(z.tuple([Index, Index])).max(MAX_RANGES),
  contributedFrom: Index.optional(),
  contributions: z.number().int().min(0),
  recent: z.array(RoundSchema).max(RECENT_ROUNDS),
});
const InputSchema = z.strictObject({ digest: Hex64, key: z.string().regex(/^[0-9a-f]{16}$/), manifestSha256: Hex64, roundIndex: Index, at: Iso });
// Generous bounds: the writer keeps the file far smaller (ledger.ts), but a merge of several
// ledgers must still read back.
const ChargeSchema = z.strictObject({
  publisher: z.string().min(1).max(200),
  manifestSha256: Hex64,
  jobId: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).optional(),
  roundIndex: Index,
  at: Iso,
  rdp: z.array(z.number().nonnegative()).length(RDP_ORDERS.length),
});
// `privacy` (the privacy budget's charges) is absent from ledgers written before it existed.
const ContentSchema = z.strictObject({ jobs: z.array(JobSchema).max(MAX_JOBS * 64), inputs: z.array(InputSchema).max(MAX_INPUTS), privacy: z.array(ChargeSchema).max(MAX_CHARGES * 4).optional() });
const FileSchema = z.strictObject({
  format: z.literal(FORMAT),
  version: z.literal(VERSION),
  ledger: ContentSchema,
  seals: z.array(z.strictObject({ inputKeys: z.string().max(65_536), mac: Hex64 })).min(1).max(2),
});
type Content = z.infer<typeof ContentSchema>;

const macOf = (key: SealKey, ledger: Content, inputKeys: string): Buffer =>
  createHmac('sha256', key.mac).update(canonicalJson({ format: FORMAT, version: VERSION, ledger, inputKeys })).digest();

/** The file's text: the ledger and one seal per key (the identity's, and during a rotation the next one's). */
export function sealLedger(data: LedgerData, keys: readonly SealKey[]): string {
  const ledger: Content = JSON.parse(JSON.stringify({ jobs: data.jobs, inputs: data.inputs, ...(data.privacy.length > 0 ? { privacy: data.privacy } : {}) })) as Content;
  const plain = Buffer.concat([...data.inputKeys.values()].map((k) => Buffer.from(k)));
  const seals = keys.map((k) => {
    const inputKeys = Buffer.from(aeadSeal(k.wrap, plain, KEYS_AAD)).toString('base64');
    return { inputKeys, mac: macOf(k, ledger, inputKeys).toString('hex') };
  });
  return `${JSON.stringify({ format: FORMAT, version: VERSION, ledger, seals })}\n`;
}

/** The ledger in `text` (named `name` in errors), if a seal verifies under `key`; refused otherwise. */
export function openSealedLedger(text: string, key: SealKey, name: string): LedgerData {
  const damaged = (why: string): AegisError =>
    new AegisError(ErrorCode.Malformed, `${name} is ${why}: the client does not run with a damaged contribution ledger (it is never read as empty); restore it from a backup (aegis client restore)`);
  let json: unknown;
  try {
    json = parseStrictJson(text, name);
  } catch {
    throw damaged('not valid JSON (truncated or altered)');
  }
  const r = FileSchema.safeParse(json);
  if (!r.success) throw damaged(`not a version-${VERSION} contribution ledger`);
  const file = r.data;
  for (const s of file.seals) {
    const expected = macOf(key, file.ledger, s.inputKeys);
    if (!timingSafeEqual(expected, Buffer.from(s.mac, 'hex'))) continue;
    let plain: Uint8Array;
    try {
      plain = aeadOpen(key.wrap, Buffer.from(s.inputKeys, 'base64'), KEYS_AAD);
    } catch {
      break;
    }
    if (plain.length === 0 || plain.length % 32 !== 0) break;
    const inputKeys = new Map<string, Uint8Array>();
    for (let o = 0; o < plain.length; o += 32) {
      const k = plain.slice(o, o + 32);
      inputKeys.set(inputKeyId(k), k);
    }
    return { jobs: file.ledger.jobs, inputs: file.ledger.inputs, inputKeys, privacy: file.ledger.privacy ?? [] };
  }
  throw new AegisError(
    ErrorCode.BadSignature,
    `${name} fails its integrity check (HMAC-SHA256 under this client's identity): it was altered, or belongs to another identity; the client does not run with it — restore it from a backup (aegis client restore)`,
  );
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    const st = await stat(path);
    if (st.size > MAX_FILE_BYTES) throw new AegisError(ErrorCode.TooLarge, `${path} is larger than ${MAX_FILE_BYTES} bytes; a contribution ledger never is`);
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// The store.

/** The ledger files of `dir`: ledger.json and any restored ones waiting to be merged. */
async function restoredFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => RESTORED.test(n)).sort();
}

class FileStore implements LedgerStore {
  constructor(
    private readonly dir: string,
    /** The identity's key first; during an identity rotation, the next identity's too. */
    public keys: SealKey[],
  ) {}

  private get path(): string {
    return join(this.dir, LEDGER_FILE);
  }

  /** What is on disk (ledger.json and restored ones), verified; undefined when there is none. */
  async read(): Promise<{ data: LedgerData | undefined; restored: string[] }> {
    let data: LedgerData | undefined;
    const text = await readIfExists(this.path);
    if (text !== undefined) data = openSealedLedger(text, this.keys[0]!, this.path);
    const restored = await restoredFiles(this.dir);
    for (const name of restored) {
      const t = await readIfExists(join(this.dir, name));
      if (t === undefined) continue;
      const r = openSealedLedger(t, this.keys[0]!, join(this.dir, name));
      data = data ? mergeLedgers(data, r) : r;
    }
    return { data, restored };
  }

  async sync(mine: LedgerData): Promise<LedgerData> {
    return withFileLock(join(this.dir, LEDGER_LOCK), 'aegis client run or client ledger', async () => {
      const { data: disk, restored } = await this.read();
      const merged = disk ? mergeLedgers(mine, disk) : mine;
      await writeFileAtomic(this.path, sealLedger(merged, this.keys), 0o600);
      for (const name of restored) await unlink(join(this.dir, name)).catch(() => undefined);
      return merged;
    });
  }
}

/** A contribution ledger kept in a data dir. */
export class FileLedger extends Ledger {
  constructor(
    data: LedgerData,
    private readonly fileStore: FileStore,
    clock?: () => number,
  ) {
    super(data, fileStore, clock);
  }

  /**
   * Identity rotation, first step (before the coordinator certifies the new key): the file is
   * sealed for the current and the next identity, so it opens under whichever one a crash leaves.
   */
  sealAlsoFor(nextSeed: Uint8Array): Promise<void> {
    return this.exclusive(async () => {
      this.fileStore.keys = [this.fileStore.keys[0]!, sealKeyOf(nextSeed)];
      await this.save();
    });
  }

  /** Identity rotation, last step (the new key is in place): sealed for `seed` only. */
  sealOnlyFor(seed: Uint8Array): Promise<void> {
    return this.exclusive(async () => {
      // The file on disk carries a seal for the new identity (sealAlsoFor), so it reads under it.
      this.fileStore.keys = [sealKeyOf(seed)];
      await this.save();
    });
  }
}

/** What `openLedger` does when the data dir has no ledger. */
export type MissingLedger =
  /** Refuse (`aegis client ledger`). */
  | 'refuse'
  /** Create an empty one, unless the dir shows it took part in rounds before (`client run`, `client enroll`). */
  | 'create-if-new'
  /** Create an empty one (`client run --new-ledger`). */
  | 'create';

/**
 * Opens the ledger of data dir `dir` under the identity `seed`: verified, with any restored
 * ledger merged in. Without one, `missing` decides (see MissingLedger); a dir that took part in
 * rounds before (RAN_BEFORE_FILES) gets a new one only with 'create'.
 */
export async function openLedger(dir: string, seed: Uint8Array, opts: { missing: MissingLedger; clock?: () => number }): Promise<{ ledger: FileLedger; created: boolean }> {
  if (!existsSync(dir)) throw new AegisError(ErrorCode.NotFound, `the data dir ${dir} does not exist`);
  const store = new FileStore(dir, [sealKeyOf(seed)]);
  const { data, restored } = await store.read();
  if (data) {
    const ledger = new FileLedger(data, store, opts.clock);
    // A restored ledger is merged into ledger.json now, and its file removed.
    if (restored.length > 0) await store.sync(ledger.data());
    return { ledger, created: false };
  }
  const path = join(dir, LEDGER_FILE);
  if (opts.missing === 'refuse') throw new AegisError(ErrorCode.NotFound, `${path} does not exist: this data dir has no contribution ledger (aegis client enroll or client run creates it)`);
  if (opts.missing === 'create-if-new') {
    const evidence = RAN_BEFORE_FILES.filter((f) => existsSync(join(dir, f)));
    if (evidence.length > 0) {
      throw new AegisError(
        ErrorCode.FailedPrecondition,
        `${path} is missing, but ${evidence.join(' and ')} show${evidence.length === 1 ? 's' : ''} this client took part in rounds before: without its ledger it could join a replayed round. Restore the ledger from a backup (aegis client restore), or pass --new-ledger to start an empty one`,
      );
    }
  }
  const ledger = new FileLedger(emptyLedgerData(), store, opts.clock);
  await store.sync(ledger.data());
  return { ledger, created: true };
}
