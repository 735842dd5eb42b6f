/**
 * `aegis registry publish --dir REGISTRY --to BACKUP` as ops run it, each a real `aegis` process
 * (dist/): the backup made and kept in step after add-publisher, what `manifest verify` reports
 * while it lags (`backup-behind` for the new publisher's job, the old publisher's still valid),
 * refusals (an older registry over a newer one, another registry, a non-registry directory, an
 * address), and the atomic replacement of each file.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { cpSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readSync, readdirSync, rmSync, statSync, writeFileSync, fstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, cliJson, runCli, type CliRun } from '../support/cli.js';

const env = { ...process.env, AEGIS_PASSPHRASE: 'registry publish test passphrase', AEGIS_LOG_LEVEL: 'warn' };
let root: string;

const aegis = (...args: string[]): CliRun => runCli(args, env);
const json = cliJson;
const code = (r: CliRun): string => {
  expect(r.status).toBe(2);
  return json(r).error.code as string;
};

/** Every file under `dir` (relative path → bytes), to show a refused publish changed nothing. */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p, `${rel}${name}/`);
      else out[`${rel}${name}`] = readFileSync(p).toString('base64');
    }
  };
  walk(dir, '');
  return out;
}

function readAll(fd: number): string {
  const buf = Buffer.alloc(fstatSync(fd).size);
  readSync(fd, buf, 0, buf.length, 0);
  return buf.toString('utf8');
}

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
  root = mkdtempSync(join(tmpdir(), 'aegis-registry-publish-'));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('registry publish', () => {
  test('makes the backup, keeps it in step, and manifest verify reports a lagging backup as backup-behind', () => {
    const reg = join(root, 'registry');
    const backup = join(root, 'backup');
    expect(aegis('registry', 'init', '--dir', reg, '--roots', '3', '--threshold', '2').status).toBe(0);
    for (const who of ['old', 'new']) expect(json(aegis('manifest', 'keygen', '--out', join(root, `${who}.key`), '--json')).keyid).toMatch(/^[0-9a-f]{64}$/);
    expect(aegis('registry', 'add-publisher', '--dir', reg, '--public-key', join(root, 'old.pub.json'), '--name', 'old-team').status).toBe(0);

    const made = json(aegis('registry', 'publish', '--dir', reg, '--to', backup, '--json'));
    expect(made).toMatchObject({ ok: true, changed: true, previous: null, root: { version: 1 }, publishers: { version: 2 } });
    // Only the public files: never the root keys.
    expect(Object.keys(tree(backup)).sort()).toEqual(['publishers.json', 'root/1.root.json']);
    expect(readFileSync(join(backup, 'publishers.json'))).toEqual(readFileSync(join(reg, 'publishers.json')));
    expect(json(aegis('registry', 'publish', '--dir', reg, '--to', backup, '--json'))).toMatchObject({ ok: true, changed: false });

    const sign = (who: string, job: string): string => {
      const out = join(root, `${job}.dsse.json`);
      expect(aegis('manifest', 'new', '--out', join(root, `${job}.json`), '--job', job, '--clients', '3').status).toBe(0);
      expect(aegis('manifest', 'sign', join(root, `${job}.json`), '--key', join(root, `${who}.key`), '--out', out).status).toBe(0);
      return out;
    };
    const oldJob = sign('old', 'old-job');
    expect(aegis('registry', 'add-publisher', '--dir', reg, '--public-key', join(root, 'new.pub.json'), '--name', 'new-team').status).toBe(0);
    const newJob = sign('new', 'new-job');

    // The backup lags (publishers v2, the primary v3): the old publisher's job is valid, the new one's is backup-behind.
    const ok = json(aegis('manifest', 'verify', oldJob, '--registry', reg, '--backup-registry', backup, '--json'));
    expect(ok).toMatchObject({ ok: true, job_id: 'old-job', registry: { publishers_version: 2, primary_publishers_version: 3 } });
    const behind = aegis('manifest', 'verify', newJob, '--registry', reg, '--backup-registry', backup, '--json');
    expect(code(behind)).toBe('backup-behind');
    expect(json(behind).error.hint).toContain('aegis registry publish');
    const text = aegis('manifest', 'verify', newJob, '--registry', reg, '--backup-registry', backup);
    expect(text.status).toBe(2);
    expect(text.stderr).toContain('error [backup-behind]');

    expect(json(aegis('registry', 'publish', '--dir', reg, '--to', backup, '--json'))).toMatchObject({ ok: true, changed: true, previous: { root_version: 1, publishers_version: 2 }, publishers: { version: 3 } });
    expect(json(aegis('manifest', 'verify', newJob, '--registry', reg, '--backup-registry', backup, '--json'))).toMatchObject({ ok: true, registry: { publishers_version: 3, primary_publishers_version: null } });

    // A root rotation is published too (new root file, then the list signed under it).
    expect(aegis('registry', 'rotate-root', '--dir', reg, '--add', '1').status).toBe(0);
    expect(json(aegis('registry', 'publish', '--dir', reg, '--to', backup, '--json'))).toMatchObject({ changed: true, root: { version: 2 }, publishers: { version: 4 } });
    expect(Object.keys(tree(backup)).sort()).toEqual(['publishers.json', 'root/1.root.json', 'root/2.root.json']);
    expect(json(aegis('manifest', 'verify', newJob, '--registry', reg, '--backup-registry', backup, '--json'))).toMatchObject({ ok: true, registry: { root_version: 2 } });
  });

  test('refuses to publish an older registry over a newer one, and changes nothing', () => {
    const reg = join(root, 'rb-registry');
    const backup = join(root, 'rb-backup');
    const saved = join(root, 'rb-saved');
    expect(aegis('registry', 'init', '--dir', reg, '--roots', '1', '--threshold', '1').status).toBe(0);
    cpSync(reg, saved, { recursive: true });
    expect(aegis('registry', 'sign', '--dir', reg).status).toBe(0);
    expect(aegis('registry', 'publish', '--dir', reg, '--to', backup).status).toBe(0);
    const before = tree(backup);
    const r = aegis('registry', 'publish', '--dir', saved, '--to', backup, '--json');
    expect(code(r)).toBe('rollback');
    expect(json(r).error.message).toContain('publishers v2');
    expect(tree(backup)).toEqual(before);
    // The same version with other contents (a fork of the history) is another registry's.
    expect(aegis('registry', 'sign', '--dir', saved).status).toBe(0);
    expect(code(aegis('registry', 'publish', '--dir', saved, '--to', backup, '--json'))).toBe('registry-mismatch');
    expect(tree(backup)).toEqual(before);
  });

  test('refuses another registry, a directory that holds something else, an address, and the registry itself', () => {
    const reg = join(root, 'x-registry');
    const other = join(root, 'x-other');
    const backup = join(root, 'x-backup');
    expect(aegis('registry', 'init', '--dir', reg, '--roots', '1', '--threshold', '1').status).toBe(0);
    expect(aegis('registry', 'init', '--dir', other, '--roots', '1', '--threshold', '1').status).toBe(0);
    expect(aegis('registry', 'publish', '--dir', other, '--to', backup).status).toBe(0);
    const before = tree(backup);
    const foreign = aegis('registry', 'publish', '--dir', reg, '--to', backup, '--json');
    expect(code(foreign)).toBe('registry-mismatch');
    expect(tree(backup)).toEqual(before);

    const junk = join(root, 'x-junk');
    mkdirSync(junk);
    writeFileSync(join(junk, 'notes.txt'), 'not a registry');
    const j = aegis('registry', 'publish', '--dir', reg, '--to', junk, '--json');
    expect(code(j)).toBe('already-exists');
    expect(json(j).error.message).toContain('--to');
    expect(readdirSync(junk)).toEqual(['notes.txt']);

    const addr = aegis('registry', 'publish', '--dir', reg, '--to', 'backup.example:7443', '--json');
    expect(code(addr)).toBe('invalid-argument');
    expect(json(addr).error.message).toContain('--to backup.example:7443');
    expect(code(aegis('registry', 'publish', '--dir', reg, '--to', reg, '--json'))).toBe('invalid-argument');
  });

  test('each file is replaced by a rename (a reader holding the old file still reads all of it), no temp file left', () => {
    const reg = join(root, 'at-registry');
    const backup = join(root, 'at-backup');
    expect(aegis('registry', 'init', '--dir', reg, '--roots', '1', '--threshold', '1').status).toBe(0);
    expect(aegis('registry', 'publish', '--dir', reg, '--to', backup).status).toBe(0);
    const path = join(backup, 'publishers.json');
    const oldText = readFileSync(path, 'utf8');
    const fd = openSync(path, 'r');
    try {
      const oldInode = fstatSync(fd).ino;
      expect(aegis('registry', 'sign', '--dir', reg).status).toBe(0);
      expect(aegis('registry', 'publish', '--dir', reg, '--to', backup).status).toBe(0);
      // Written in place, the open file would now hold the new bytes (or a mix of both).
      expect(readAll(fd)).toBe(oldText);
      expect(statSync(path).ino).not.toBe(oldInode);
      expect(readFileSync(path)).toEqual(readFileSync(join(reg, 'publishers.json')));
    } finally {
      closeSync(fd);
    }
    expect(Object.keys(tree(backup)).filter((n) => n.includes('.tmp'))).toEqual([]);
  });
});
