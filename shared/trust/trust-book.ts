/**
 * What a client remembers of the trust registries and of the jobs it accepted, so that nothing
 * older is ever taken back: the registry versions it has seen (rollback, and a forked root
 * history, are refused) and the highest revision of each job. Kept in `DATA_DIR/trust.json`
 * (0600, written atomically); a damaged file is refused, never reset.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AegisError, ErrorCode } from '../errors.js';
import { writeFileAtomic } from '../fs.js';
import type { TrustState } from './registry.js';

export const TRUST_FILE = 'trust.json';

const RegistryVersionsSchema = z.strictObject({ rootVersion: z.number().int().min(1), rootSha256: z.string().regex(/^[0-9a-f]{64}$/), publishersVersion: z.number().int().min(1) });

const TrustFileSchema = z.strictObject({
  version: z.literal(1),
  registry: z
    .strictObject({
      ...RegistryVersionsSchema.shape,
      /** The primary's own versions, recorded while it was ahead of a lagging backup. */
      primary: RegistryVersionsSchema.optional(),
    })
    .optional(),
  revisions: z.record(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/), z.number().int().min(1)),
});
type TrustFile = z.infer<typeof TrustFileSchema>;

export class TrustBook {
  private constructor(private readonly path: string) {}

  static open(dataDir: string): TrustBook {
    return new TrustBook(join(dataDir, TRUST_FILE));
  }

  async load(): Promise<{ registry?: TrustState; revisions: Record<string, number> }> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { revisions: {} };
      throw err;
    }
    let parsed: TrustFile;
    try {
      parsed = TrustFileSchema.parse(JSON.parse(text));
    } catch {
      throw new AegisError(ErrorCode.InvalidArgument, `${this.path} is damaged; inspect it (it records the registry versions and job revisions this client accepted)`);
    }
    return { ...(parsed.registry ? { registry: parsed.registry } : {}), revisions: parsed.revisions };
  }

  /** Records the registry state and a job's revision (never lowering anything). */
  async accept(registry: TrustState, jobId: string, revision: number): Promise<void> {
    const cur = await this.load();
    const revisions = { ...cur.revisions, [jobId]: Math.max(revision, cur.revisions[jobId] ?? 0) };
    const file: TrustFile = { version: 1, registry, revisions };
    await writeFileAtomic(this.path, `${JSON.stringify(file, null, 2)}\n`, 0o600);
  }
}
