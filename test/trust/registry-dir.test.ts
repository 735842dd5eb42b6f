/**
 * The registry as files (shared/trust/registry-dir.ts) and its CLI (registry-cli.ts): init, add,
 * revoke, sign, rotate, checked the way a client checks (readSnapshot + checkRegistries); sealed
 * 0600 root keyfiles; refusals.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { ed25519PublicFromSeed } from '../../shared/crypto/ed25519.js';
import { isAegisError } from '../../shared/errors.js';
import { parseKeyfile, readKeyfile } from '../../shared/keystore/passphrase-keyfile.js';
import { keyIdOf } from '../../shared/trust/dsse.js';
import { checkRegistries, publisherKey, type TrustState } from '../../shared/trust/registry.js';
import { ROOT_KEY_LABEL, addPublisher, initRegistry, readSnapshot, revokePublisher, rotateRoot, signPublishers } from '../../shared/trust/registry-dir.js';
import { registerRegistry } from '../../shared/trust/registry-cli.js';

const PASS = 'correct horse battery staple';
let base: string;

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'aegis-registry-'));
});
afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'none';
  } catch (e) {
    if (isAegisError(e)) return e.code;
    throw e;
  }
}

const publisher = (): { keyid: string; publicKey: Uint8Array } => {
  const publicKey = ed25519PublicFromSeed(new Uint8Array(randomBytes(32)));
  return { keyid: keyIdOf(publicKey), publicKey };
};

describe('registry directory', () => {
  test('init, add, revoke, sign, rotate: each verified like a client would', async () => {
    const dir = join(base, 'reg');
    const init = await initRegistry(dir, { roots: 3, threshold: 2, passphrase: PASS });
    expect(init.root.version).toBe(1);
    expect(readdirSync(join(dir, 'root'))).toEqual(['1.root.json']);
    expect(readdirSync(join(dir, 'keys')).sort()).toEqual(['root-1.key', 'root-2.key', 'root-3.key']);
    expect(readFileSync(join(dir, 'README.txt'), 'utf8')).toMatch(/OFFLINE/);

    const now = new Date();
    let snap = await readSnapshot(dir);
    let checked = checkRegistries(snap, snap, undefined, now);
    expect(checked.state).toMatchObject({ rootVersion: 1, publishersVersion: 1 });
    let state: TrustState = checked.state;
    const v1 = snap;

    const alice = publisher();
    const bob = publisher();
    const added = await addPublisher(dir, { publicKey: alice.publicKey, name: 'alice', passphrase: PASS });
    expect(added.keyid).toBe(alice.keyid);
    await addPublisher(dir, { publicKey: bob.publicKey, name: 'bob', passphrase: PASS });
    snap = await readSnapshot(dir);
    checked = checkRegistries(snap, snap, state, now);
    expect(checked.publishers.version).toBe(3);
    expect(Buffer.from(publisherKey(checked.publishers, alice.keyid)!)).toEqual(Buffer.from(alice.publicKey));
    // A backup still serving v1 only lags (jobs are checked against v1); a primary serving v1
    // behind a backup at v3 disagrees; v1 alone is now a rollback.
    const lagging = checkRegistries(snap, v1, state, now);
    expect([lagging.publishers.version, lagging.primaryPublishers?.version]).toEqual([1, 3]);
    expect(() => checkRegistries(v1, snap, state, now)).toThrow(expect.objectContaining({ code: 'registry-mismatch' }));
    state = checked.state;
    expect(() => checkRegistries(v1, v1, state, now)).toThrow(expect.objectContaining({ code: 'rollback' }));

    expect(await codeOf(addPublisher(dir, { publicKey: alice.publicKey, name: 'again', passphrase: PASS }))).toBe('already-exists');
    await revokePublisher(dir, { keyid: bob.keyid, passphrase: PASS });
    expect(await codeOf(revokePublisher(dir, { keyid: bob.keyid, passphrase: PASS }))).toBe('already-exists');
    expect(await codeOf(addPublisher(dir, { publicKey: bob.publicKey, name: 'bob', passphrase: PASS }))).toBe('already-exists');
    expect(await codeOf(revokePublisher(dir, { keyid: publisher().keyid, passphrase: PASS }))).toBe('not-found');
    snap = await readSnapshot(dir);
    checked = checkRegistries(snap, snap, state, now);
    expect(publisherKey(checked.publishers, bob.keyid)).toBeUndefined();
    expect(checked.publishers.publishers[bob.keyid]).toMatchObject({ name: 'bob', revoked: true });
    state = checked.state;

    const signed = await signPublishers(dir, { passphrase: PASS, expiresDays: 30 });
    expect(signed.publishers.version).toBe(state.publishersVersion + 1);
    expect(Date.parse(signed.publishers.expires) - Date.now()).toBeGreaterThan(29 * 86_400_000);

    // Rotate: drop root key 1, add two, threshold 3 of 4.
    const dropped = Object.keys(init.root.keys).find((id) => id === init.keyFiles[0]!.keyid)!;
    const rotated = await rotateRoot(dir, { passphrase: PASS, add: 2, remove: [dropped], threshold: 3 });
    expect(rotated.root.version).toBe(2);
    expect(Object.keys(rotated.root.keys)).toHaveLength(4);
    expect(rotated.root.keys[dropped]).toBeUndefined();
    expect(rotated.retiredKeyFiles.map((k) => k.keyid)).toEqual([dropped]);
    expect(rotated.addedKeyFiles.map((k) => k.path.split('/').pop())).toEqual(['root-4.key', 'root-5.key']);
    expect(rotated.publishers.rootVersion).toBe(2);
    snap = await readSnapshot(dir);
    expect(snap.roots).toHaveLength(2);
    checked = checkRegistries(snap, snap, state, now);
    expect(checked.state.rootVersion).toBe(2);
    expect(checked.root.threshold).toBe(3);
    expect(publisherKey(checked.publishers, alice.keyid)).toBeDefined();
    state = checked.state;

    // Still workable after the rotation (signing now needs 3 of the new root's keys).
    await addPublisher(dir, { publicKey: publisher().publicKey, name: 'carol', passphrase: PASS });
    snap = await readSnapshot(dir);
    expect(checkRegistries(snap, snap, state, now).publishers.version).toBe(rotated.publishers.version + 1);

    // Root keys moved offline: nothing can be signed.
    renameSync(join(dir, 'keys'), join(base, 'offline-keys'));
    expect(await codeOf(signPublishers(dir, { passphrase: PASS }))).toBe('not-found');
    renameSync(join(base, 'offline-keys'), join(dir, 'keys'));
    expect(await codeOf(signPublishers(dir, { passphrase: 'not the passphrase' }))).toBe('decryption-failed');
  });

  test('root keyfiles are sealed, mode 0600, and hold no plain key', async () => {
    const dir = join(base, 'sealed');
    const r = await initRegistry(dir, { roots: 2, threshold: 1, passphrase: PASS, expiresDays: 10 });
    for (const k of r.keyFiles) {
      expect(statSync(k.path).mode & 0o777).toBe(0o600);
      const text = readFileSync(k.path, 'utf8');
      expect(parseKeyfile(text).label).toBe(ROOT_KEY_LABEL);
      const { seed } = await readKeyfile(k.path, PASS, { expectedLabel: ROOT_KEY_LABEL });
      expect(seed).toHaveLength(32);
      expect(keyIdOf(ed25519PublicFromSeed(seed!))).toBe(k.keyid);
      for (const enc of ['base64', 'hex', 'base64url'] as const) expect(text).not.toContain(Buffer.from(seed!).toString(enc));
      expect(text).not.toContain(Buffer.from(seed!.subarray(0, 12)).toString('base64'));
    }
  });

  test('init refuses a non-empty directory and thresholds outside 1..N', async () => {
    const dir = join(base, 'busy');
    cpSync(join(base, 'sealed'), dir, { recursive: true });
    expect(await codeOf(initRegistry(dir, { roots: 1, threshold: 1, passphrase: PASS }))).toBe('already-exists');
    const other = join(base, 'other');
    expect(await codeOf(initRegistry(other, { roots: 2, threshold: 3, passphrase: PASS }))).toBe('invalid-argument');
    expect(await codeOf(initRegistry(other, { roots: 2, threshold: 0, passphrase: PASS }))).toBe('invalid-argument');
    expect(await codeOf(rotateRoot(join(base, 'sealed'), { passphrase: PASS, threshold: 3 }))).toBe('invalid-argument');
    expect(await codeOf(readSnapshot(other))).toBe('not-found');
  });

  test('a tampered registry directory is never re-signed', async () => {
    const dir = join(base, 'tampered');
    await initRegistry(dir, { roots: 1, threshold: 1, passphrase: PASS });
    const path = join(dir, 'publishers.json');
    const env = JSON.parse(readFileSync(path, 'utf8')) as { payload: string };
    const doc = JSON.parse(Buffer.from(env.payload, 'base64').toString('utf8')) as { version: number };
    doc.version = 7;
    env.payload = Buffer.from(JSON.stringify(doc)).toString('base64');
    writeFileSync(path, JSON.stringify(env));
    expect(await codeOf(signPublishers(dir, { passphrase: PASS }))).toBe('bad-signature');
  });
});

describe('aegis registry CLI', () => {
  /** Runs `aegis registry ...args --json` in-process; returns the parsed JSON line. */
  async function cli(...args: string[]): Promise<Record<string, unknown>> {
    const program = new Command().exitOverride();
    registerRegistry(program);
    const lines: string[] = [];
    const write = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    const err = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const before = process.exitCode;
    try {
      await program.parseAsync(['node', 'aegis', 'registry', ...args, '--json']);
    } finally {
      write.mockRestore();
      err.mockRestore();
    }
    const failed = process.exitCode === 2;
    process.exitCode = before;
    const out = JSON.parse(lines.join('').trim()) as Record<string, unknown>;
    return { ...out, failed };
  }

  test('init, add-publisher from a .pub.json, revoke, sign, rotate-root, show', async () => {
    const saved = process.env.AEGIS_PASSPHRASE;
    process.env.AEGIS_PASSPHRASE = PASS;
    try {
      const dir = join(base, 'cli');
      const init = await cli('init', '--dir', dir, '--roots', '2', '--threshold', '2', '--expires', '90d');
      expect(init).toMatchObject({ ok: true, failed: false, root: { version: 1, threshold: 2 } });

      const p = publisher();
      const pubFile = join(base, 'publisher.pub.json');
      writeFileSync(pubFile, JSON.stringify({ keyid: p.keyid, publicKey: Buffer.from(p.publicKey).toString('base64') }));
      expect(await cli('add-publisher', '--dir', dir, '--public-key', pubFile, '--name', 'ml-team')).toMatchObject({ ok: true, keyid: p.keyid });
      // A literal hex key works; the key id of a listed publisher is refused as such.
      const q = publisher();
      expect(await cli('add-publisher', '--dir', dir, '--public-key', Buffer.from(q.publicKey).toString('hex'), '--name', 'hex')).toMatchObject({ ok: true, keyid: q.keyid });
      const asId = await cli('add-publisher', '--dir', dir, '--public-key', p.keyid, '--name', 'oops');
      expect(asId).toMatchObject({ ok: false, failed: true, error: { code: 'invalid-argument' } });

      expect(await cli('revoke-publisher', '--dir', dir, '--keyid', q.keyid)).toMatchObject({ ok: true });
      expect(await cli('sign', '--dir', dir, '--expires', '30d')).toMatchObject({ ok: true, publishers: { version: 5 } });
      const rot = await cli('rotate-root', '--dir', dir, '--add', '1', '--threshold', '2');
      expect(rot).toMatchObject({ ok: true, root: { version: 2, threshold: 2 }, publishers: { root_version: 2 } });

      const show = await cli('show', '--dir', dir);
      expect(show).toMatchObject({ ok: true, root: { version: 2, expired: false }, publishers: { version: 6, expired: false } });
      const keys = (show.publishers as { keys: { name: string; revoked: boolean }[] }).keys;
      expect(keys.map((k) => [k.name, k.revoked])).toEqual([
        ['hex', true],
        ['ml-team', false],
      ]);
      expect((show.root as { keyids: string[] }).keyids).toHaveLength(3);

      expect(await cli('init', '--dir', dir, '--roots', '1', '--threshold', '1')).toMatchObject({ ok: false, error: { code: 'already-exists' } });
    } finally {
      if (saved === undefined) delete process.env.AEGIS_PASSPHRASE;
      else process.env.AEGIS_PASSPHRASE = saved;
    }
  });
});
