#!/usr/bin/env node
// Writes docs/cli-reference.md from the built program (dist/: run after `npm run build`, as
// `npm run docs:cli` does). `--check` writes nothing and exits 1 when the file is stale.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// Some defaults come from the environment (AEGIS_COORDINATOR_DIR, AEGIS_REDIS_URL…), read when
// the modules load: the reference shows the defaults of an empty environment.
for (const k of Object.keys(process.env)) if (k.startsWith('AEGIS_')) delete process.env[k];
const { buildProgram } = await import(join(root, 'dist', 'bin', 'program.js'));
const { cliReference } = await import(join(root, 'dist', 'bin', 'cli-reference.js'));
const file = join(root, 'docs', 'cli-reference.md');
const text = cliReference(buildProgram());
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(file, 'utf8');
  } catch {
    // a missing file is stale
  }
  if (current !== text) {
    process.stderr.write('docs/cli-reference.md is stale: run npm run docs:cli\n');
    process.exit(1);
  }
} else {
  writeFileSync(file, text);
  process.stderr.write(`wrote docs/cli-reference.md (${text.split('\n').length - 1} lines)\n`);
}
