/**
 * A small set of named secrets (a CA key, token keys, an operator credential) sealed one by one
 * with envelope encryption under a data dir's KEK (DESIGN.md §5: "coordinator secrets are wrapped
 * by the same machinery"). One JSON file, written atomically, mode 0600:
 *
 *   { "format": "aegis-vault", "version": 1, "id": "<uuid>", "label": "<what>",
 *     "entries": { "<name>": "<base64 of an AEF1 sealed value>" } }
 *
 * Each value's AAD binds (vault id, "<label>/<name>", schema 1), so an entry renamed, moved to
 * another vault or relabelled no longer opens. The file holds no key in clear: without the KEK
 * (held by the passphrase keyfile, the OS keyring or the HSM) it is useless.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { AegisError, ErrorCode } from '../errors.js';
import { writeFileAtomic } from '../fs.js';
import { openField, parseSealedHeader, rewrapField, sealField, type FieldContext } from './envelope.js';
import type { ManagedKek } from './kek.js';
import type { KeyHolder } from './rotation.js';

const VAULT_SCHEMA = 1;
const NAME = /^[A-Za-z0-9._-]{1,64}$/;

const VaultSchema = z
  .object({
    format: z.literal('aegis-vault'),
    version: z.literal(1),
    id: z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/),
    label: z.string().regex(/^[A-Za-z0-9._/-]{1,64}$/),
    entries: z.record(z.string().regex(NAME), z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/).max(65536)),
  })
  .strict();

export class SealedVault implements KeyHolder {
  readonly name: string;
  readonly path: string;
  readonly #id: string;
  readonly #label: string;
  #entries: Map<string, Uint8Array>;

  private constructor(path: string, id: string, label: string, entries: Map<string, Uint8Array>, name: string) {
    this.path = path;
    this.#id = id;
    this.#label = label;
    this.#entries = entries;
    this.name = name;
  }

  static exists(path: string): boolean {
    return existsSync(path);
  }

  /** Seals `secrets` into a new vault file at `path` (refuses an existing one). */
  static async create(path: string, kek: ManagedKek, label: string, secrets: Record<string, Uint8Array>, name = 'secrets'): Promise<SealedVault> {
    if (existsSync(path)) throw new AegisError(ErrorCode.AlreadyExists, `${path} already exists`);
    const v = new SealedVault(path, randomUUID(), label, new Map(), name);
    for (const [n, value] of Object.entries(secrets)) {
      if (!NAME.test(n)) throw new AegisError(ErrorCode.InvalidArgument, `a vault entry name must match ${NAME.source}`);
      v.#entries.set(n, await sealField(kek, v.#ctx(n), value));
    }
    await v.#save();
    return v;
  }

  static async open(path: string, name = 'secrets'): Promise<SealedVault> {
    let json: unknown;
    try {
      json = JSON.parse(await readFile(path, 'utf8'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new AegisError(ErrorCode.NotFound, `no sealed secrets at ${path}`);
      throw new AegisError(ErrorCode.Malformed, `${path} is not a sealed vault`);
    }
    const r = VaultSchema.safeParse(json);
    if (!r.success) throw new AegisError(ErrorCode.Malformed, `${path} is not a sealed vault`);
    const entries = new Map(Object.entries(r.data.entries).map(([k, b]) => [k, new Uint8Array(Buffer.from(b, 'base64'))]));
    return new SealedVault(path, r.data.id, r.data.label, entries, name);
  }

  names(): string[] {
    return [...this.#entries.keys()].sort();
  }

  /** The secret `name`, opened; the caller zeroes it. Any failure is `decryption-failed`. */
  async get(kek: ManagedKek, name: string): Promise<Uint8Array> {
    const sealed = this.#entries.get(name);
    if (sealed === undefined) throw new AegisError(ErrorCode.NotFound, `no secret '${name}' in ${this.path}`);
    return openField(kek, this.#ctx(name), sealed);
  }

  /** Adds (or replaces) the secret `name`, sealed under the KEK's primary version, and saves the file. */
  async put(kek: ManagedKek, name: string, value: Uint8Array): Promise<void> {
    if (!NAME.test(name)) throw new AegisError(ErrorCode.InvalidArgument, `a vault entry name must match ${NAME.source}`);
    const before = this.#entries;
    this.#entries = new Map(before).set(name, await sealField(kek, this.#ctx(name), value));
    try {
      await this.#save();
    } catch (e) {
      this.#entries = before;
      throw e;
    }
  }

  async references(): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    for (const sealed of this.#entries.values()) {
      const v = parseSealedHeader(sealed).kekVersion;
      out.set(v, (out.get(v) ?? 0) + 1);
    }
    return out;
  }

  /** The vault is small: everything moves in one atomic file write. */
  async rotateSome(kek: ManagedKek, target: number, emergency: boolean): Promise<number> {
    const next = new Map(this.#entries);
    let moved = 0;
    for (const [n, sealed] of this.#entries) {
      if (parseSealedHeader(sealed).kekVersion === target) continue;
      if (emergency) {
        const plain = await openField(kek, this.#ctx(n), sealed);
        try {
          next.set(n, await sealField(kek, this.#ctx(n), plain));
        } finally {
          plain.fill(0);
        }
      } else {
        next.set(n, await rewrapField(kek, kek, sealed, target));
      }
      moved++;
    }
    if (moved > 0) {
      const before = this.#entries;
      this.#entries = next;
      try {
        await this.#save();
      } catch (e) {
        this.#entries = before;
        throw e;
      }
    }
    return moved;
  }

  #ctx(name: string): FieldContext {
    return { assetUuid: this.#id, fieldName: `${this.#label}/${name}`, schemaVersion: VAULT_SCHEMA };
  }

  async #save(): Promise<void> {
    const entries: Record<string, string> = {};
    for (const [k, v] of [...this.#entries].sort(([a], [b]) => (a < b ? -1 : 1))) entries[k] = Buffer.from(v).toString('base64');
    await writeFileAtomic(this.path, `${JSON.stringify({ format: 'aegis-vault', version: 1, id: this.#id, label: this.#label, entries }, null, 1)}\n`);
  }
}
