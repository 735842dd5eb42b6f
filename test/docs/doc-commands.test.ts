/**
 * The documentation shows only what exists: every command line in a fenced code block of
 * README.md or docs/*.md (`aegis …`, `npx aegis …`, `npm run -s aegis -- …`, `npm run demo -- …`,
 * after `$ ` or environment assignments, continuation lines joined) names a real command of the
 * program (bin/program.ts), only options that command has, each option that takes a value with
 * one; every `npm run NAME` names a script of package.json; every relative link and image points
 * to a file that exists, and every `#anchor` to a heading of that file (GitHub's anchors).
 * docs/cli-reference.md is left out of the command check: it is generated from the program.
 */
import { describe, expect, test } from '@jest/globals';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildProgram } from '../../bin/program.js';
import { anchors, checkAegis, checkCommands, checkInlineCommands, codeLines, links, type Problem } from '../support/doc-check.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const docFiles = [
  join(root, 'README.md'),
  ...readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => join(root, 'docs', f)),
];
const scripts = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
const show = (ps: Problem[]): string[] => ps.map((p) => `${p.file}:${p.line}: ${p.message}`);

describe('the checker itself', () => {
  const program = buildProgram();
  const problems = (md: string): string[] => show(checkCommands('x.md', md, program, scripts));

  test('finds an unknown command, an unknown option and an option without its value, naming file:line', () => {
    const md = ['text', '```sh', '# a comment line: aegis nothing --here', 'aegis roud list', 'npx aegis round list --nope',
      'AEGIS_PASSPHRASE=x aegis clients invite --data-dir ./coord \\', '  --ttl', 'npm run -s nosuchscript', '```'].join('\n');
    expect(problems(md)).toEqual([
      "x.md:4: unknown command 'aegis roud': aegis roud list",
      "x.md:5: unknown option --nope for 'aegis round list': npx aegis round list --nope",
      "x.md:6: option --ttl <duration> of 'aegis clients invite' is shown without its value: AEGIS_PASSPHRASE=x aegis clients invite --data-dir ./coord --ttl",
      "x.md:8: npm script 'nosuchscript' is not in package.json",
    ]);
  });

  test('takes the forms the docs use: optional parts in brackets, comments, ;-separated commands, npm run', () => {
    const md = ['```sh', '$ aegis round status JOB [--round 0] [--watch] --json   # --not-an-option in a comment',
      'aegis round status JOB --watch; npm run -s aegis -- round result JOB --out DIR',
      'npm ci && npm run demo -- --clients 3 --rounds 2', 'aegis operators revoke NAME | --serial HEX [--reason CODE]',
      'aegis manifest new --valid-for=30d --out job.json', 'aegis --version', '```'].join('\n');
    expect(problems(md)).toEqual([]);
    expect(checkAegis(program, ['demo', '--rounds'])).toEqual(["option --rounds <r> of 'aegis demo' is shown without its value"]);
    expect(checkAegis(program, ['client', 'audit'])).toHaveLength(1);
    expect(codeLines('```\na \\\n  b\nc\n```').map((l) => [l.line, l.text])).toEqual([[2, 'a b'], [4, 'c']]);
    expect(problems('```text\naegis roud\n```\n```json\naegis roud\n```')).toEqual([]);
    expect(checkAegis(program, ['client', 'restore', 'F', '--kek', '…'])).toEqual([]);
  });

  test('reads links and headings as GitHub does', () => {
    const md = '# A `b`: c (d)\n## A `b`: c (d)\n```\n## not a heading\n[x](nowhere.md)\n```\n[see `[x](y)`](#a-b-c-d-1) ![i](z.png "t")';
    expect([...anchors(md)]).toEqual(['a-b-c-d', 'a-b-c-d-1']);
    expect(links(md)).toEqual([{ line: 7, target: '#a-b-c-d-1' }, { line: 7, target: 'z.png' }]);
  });
});

describe('README.md and docs/*.md', () => {
  test('every command line shown exists, with the options shown', () => {
    const program = buildProgram();
    const problems = docFiles
      .filter((f) => !f.endsWith('cli-reference.md'))
      .flatMap((f) => checkCommands(relative(root, f), readFileSync(f, 'utf8'), program, scripts));
    expect(show(problems)).toEqual([]);
  });

  test('every `aegis …` quoted in the running text names a real command and its real options', () => {
    const program = buildProgram();
    const problems = docFiles
      .filter((f) => !f.endsWith('cli-reference.md'))
      .flatMap((f) => checkInlineCommands(relative(root, f), readFileSync(f, 'utf8'), program));
    expect(show(problems)).toEqual([]);
    expect(show(checkInlineCommands('x.md', 'run `aegis demo --dashboard` or `aegis round lst`\n```\n`aegis nope`\n```', program)))
      .toEqual(["x.md:1: unknown command 'aegis round lst': aegis round lst"]);
  });

  test('the docs show commands at all (the scan is not empty)', () => {
    const lines = docFiles.flatMap((f) => codeLines(readFileSync(f, 'utf8'))).filter((l) => /^(\$ )?aegis /.test(l.text));
    expect(lines.length).toBeGreaterThan(100);
  });

  test('every relative link and image points to an existing file, and every anchor to a heading', () => {
    const problems: Problem[] = [];
    let count = 0;
    for (const f of docFiles) {
      const file = relative(root, f);
      for (const { line, target } of links(readFileSync(f, 'utf8'))) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
        count++;
        const [path, anchor] = target.split('#', 2) as [string, string | undefined];
        const dest = path === '' ? f : join(dirname(f), decodeURIComponent(path));
        if (!existsSync(dest)) {
          problems.push({ file, line, message: `link to ${target}: no such file ${relative(root, dest)}` });
          continue;
        }
        if (anchor === undefined) continue;
        if (!dest.endsWith('.md') || statSync(dest).isDirectory()) {
          problems.push({ file, line, message: `link to ${target}: an anchor into a file that is not markdown` });
        } else if (!anchors(readFileSync(dest, 'utf8')).has(decodeURIComponent(anchor))) {
          problems.push({ file, line, message: `link to ${target}: no heading #${anchor} in ${relative(root, dest)}` });
        }
      }
    }
    expect(show(problems)).toEqual([]);
    expect(count).toBeGreaterThan(20);
  });

  test('README.md links every file of docs/', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const linked = new Set(links(readme).map((l) => l.target.split('#')[0]));
    const missing = readdirSync(join(root, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .filter((f) => !linked.has(`docs/${f}`));
    expect(missing).toEqual([]);
  });
});
