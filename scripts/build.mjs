#!/usr/bin/env node
// Compiles the TypeScript sources to ESM JavaScript in dist/ with @swc/core (type checking is a
// separate step: `npm run typecheck`), then builds the dashboard page (dashboard/) with Vite into
// dist/dashboard/, bundled with everything it needs so the coordinator serves it offline.
// `--if-stale` rebuilds only when a source is newer than the last build, so `npm run aegis`
// stays fast after the first run.
import { transformFileSync } from '@swc/core';
import { build as viteBuild } from 'vite';
import { chmodSync, mkdirSync, readdirSync, statSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { join, dirname, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist');
const stamp = join(out, '.build-stamp');
const SOURCE_DIRS = ['bin', 'shared', 'client', 'coordinator', 'bench'];
const DASHBOARD = join(root, 'dashboard');

function* walk(dir, keep = (p) => p.endsWith('.ts') && !p.endsWith('.d.ts')) {
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* walk(p, keep);
    else if (keep(p)) yield p;
  }
}

const sources = SOURCE_DIRS.flatMap((d) => [...walk(join(root, d))]);
const pageSources = [...walk(DASHBOARD, (p) => /\.(ts|css|html|json)$/.test(p))];
if (process.argv.includes('--if-stale') && existsSync(stamp)) {
  const built = statSync(stamp).mtimeMs;
  if ([...sources, ...pageSources].every((s) => statSync(s).mtimeMs <= built)) process.exit(0);
}
rmSync(out, { recursive: true, force: true });
for (const src of sources) {
  const rel = relative(root, src).replace(/\.ts$/, '.js');
  const { code, map } = transformFileSync(src, {
    jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
    module: { type: 'es6' },
    sourceMaps: true,
  });
  const dest = join(out, rel);
  mkdirSync(dirname(dest), { recursive: true });
  writeFileSync(dest, `${code}\n//# sourceMappingURL=${rel.split('/').pop()}.map\n`);
  if (map) writeFileSync(`${dest}.map`, map);
  if (code.startsWith('#!')) chmodSync(dest, 0o755); // the CLI entry (bin/aegis.ts)
}
// The dashboard page: dashboard/vite.config.ts (root dashboard/, out dist/dashboard/, relative
// asset paths). Quiet unless something is wrong.
await viteBuild({ configFile: join(DASHBOARD, 'vite.config.ts'), logLevel: 'warn', mode: 'production' });
writeFileSync(stamp, new Date().toISOString());
if (!process.argv.includes('--quiet') && !process.argv.includes('--if-stale')) {
  process.stderr.write(`built ${sources.length} modules and the dashboard page into dist/\n`);
}
