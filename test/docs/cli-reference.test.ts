/**
 * docs/cli-reference.md is exactly what the program renders (bin/cli-reference.ts, the same code
 * `npm run docs:cli` runs), so a command or option added, removed or reworded without
 * regenerating it fails here. Defaults that come from the environment (AEGIS_COORDINATOR_DIR,
 * AEGIS_REDIS_URL…) are read when the modules load: they are cleared first, as the script does.
 */
import { beforeAll, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
let rendered: string;

beforeAll(async () => {
  for (const k of Object.keys(process.env)) if (k.startsWith('AEGIS_')) delete process.env[k];
  const { buildProgram } = await import('../../bin/program.js');
  const { cliReference } = await import('../../bin/cli-reference.js');
  rendered = cliReference(buildProgram());
});

test('docs/cli-reference.md is what `npm run docs:cli` writes from the program', () => {
  const committed = readFileSync(join(root, 'docs', 'cli-reference.md'), 'utf8');
  if (committed !== rendered) {
    const a = committed.split('\n');
    const b = rendered.split('\n');
    const i = a.findIndex((l, n) => l !== b[n]);
    throw new Error(`docs/cli-reference.md is stale (first difference at line ${i + 1}: ${JSON.stringify(a[i])} vs ${JSON.stringify(b[i])}): run npm run docs:cli`);
  }
});

test('it lists every command and every option of the program', async () => {
  const { buildProgram } = await import('../../bin/program.js');
  const walk = (c: ReturnType<typeof buildProgram>, path: string[]): void => {
    const p = [...path, c.name()];
    expect(rendered).toContain(`## ${p.join(' ')}\n`);
    for (const o of c.options) expect(rendered).toContain(`| \`${o.flags.replace(/\|/g, "\\|")}\` |`);
    for (const s of c.commands) walk(s, p);
  };
  walk(buildProgram(), []);
});
