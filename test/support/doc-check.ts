/**
 * Checks for the documentation (README.md and docs/*.md), used by test/docs/doc-commands.test.ts:
 * the command lines its fenced code blocks show, against the real commander program, and its
 * relative links, against the files and headings they point to.
 */
import type { Command, Option } from 'commander';

export interface Problem {
  file: string;
  line: number;
  message: string;
}

export interface CommandLine {
  line: number;
  text: string;
  /** The block's info string (`sh`, `json`, `text`…; '' when it has none). */
  lang: string;
}

/** The fenced code blocks' lines, continuation lines (a trailing `\`) joined to their first line. */
export function codeLines(markdown: string): CommandLine[] {
  const out: CommandLine[] = [];
  const lines = markdown.split('\n');
  let fence: string | undefined;
  let lang = '';
  let pending: CommandLine | undefined;
  lines.forEach((raw, i) => {
    const m = /^\s*(`{3,}|~{3,})\s*([^\s`]*)/.exec(raw);
    if (m) {
      if (fence === undefined) {
        fence = m[1];
        lang = m[2]!.toLowerCase();
      } else if (m[1]!.startsWith(fence)) fence = undefined;
      pending = undefined;
      return;
    }
    if (fence === undefined) return;
    const continues = /\\\s*$/.test(raw);
    const text = raw.replace(/\\\s*$/, '');
    if (pending) pending.text += ` ${text.trim()}`;
    else {
      pending = { line: i + 1, text: text.trim(), lang };
      out.push(pending);
    }
    if (!continues) pending = undefined;
  });
  return out;
}

/** Shell-like words: quotes group, a word starting with `#` starts a comment. */
export function words(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: string | undefined;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = undefined;
      else cur += ch;
      continue;
    }
    if (ch === "'" || ch === '"') {
      quote = ch;
      inWord = true;
      continue;
    }
    if (/\s/.test(ch)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
      continue;
    }
    if (ch === '#' && !inWord) break;
    if (ch === ';') {
      if (inWord) out.push(cur);
      out.push(';');
      cur = '';
      inWord = false;
      continue;
    }
    cur += ch;
    inWord = true;
  }
  if (inWord) out.push(cur);
  return out;
}

/** One shell line cut into simple commands at `;`, `&&` and `||`. */
export function simpleCommands(text: string): string[][] {
  const out: string[][] = [[]];
  for (const w of words(text)) {
    if (w === ';' || w === '&&' || w === '||') out.push([]);
    else out[out.length - 1]!.push(w);
  }
  return out.filter((c) => c.length > 0);
}

const ENV_ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=/;

/**
 * What a simple command runs: the `aegis` words after the program name (for `aegis …`,
 * `npx aegis …`, `npm run [-s] aegis -- …`, `npm run [-s] demo -- …`), an npm script name, or
 * nothing to check.
 */
export function classify(cmd: string[]): { aegis: string[] } | { script: string } | undefined {
  let w = cmd;
  if (w[0] === '$') w = w.slice(1);
  while (w.length > 0 && ENV_ASSIGNMENT.test(w[0]!)) w = w.slice(1);
  if (w[0] === 'aegis') return { aegis: w.slice(1) };
  if (w[0] === 'npx' && w[1] === 'aegis') return { aegis: w.slice(2) };
  if (w[0] !== 'npm') return undefined;
  if (w[1] === 'test' || w[1] === 't') return { script: 'test' };
  if (w[1] !== 'run' && w[1] !== 'run-script') return undefined;
  let i = 2;
  while (i < w.length && /^-(s|-silent)$/.test(w[i]!)) i++;
  const script = w[i];
  if (script === undefined) return undefined;
  const rest = w[i + 1] === '--' ? w.slice(i + 2) : w.slice(i + 1);
  if (script === 'aegis') return { aegis: rest };
  if (script === 'demo') return { aegis: ['demo', ...rest] };
  return { script };
}

/** `[--ttl`, `1h]`, `(see`: the brackets the docs put around optional parts are not the words. */
function bare(word: string): string {
  return word.replace(/^[[(]+/, '').replace(/[\])]+$/, '');
}

function pathOf(c: Command): string {
  const names: string[] = [];
  for (let at: Command | null = c; at; at = at.parent) names.unshift(at.name());
  return names.join(' ');
}

function findOption(c: Command, flag: string): Option | 'help' | undefined {
  const o = c.options.find((x) => x.long === flag || x.short === flag);
  if (o) return o;
  if (flag === '--help' || flag === '-h') return 'help';
  return undefined;
}

/**
 * Why the `aegis` words do not run on this program (unknown command, unknown flag, flag without
 * value). `prose`: a fragment quoted in running text (`aegis demo --dashboard`), which may name a
 * flag without its value or a command group, and `<command>` for any command.
 */
export function checkAegis(program: Command, argv: string[], prose = false): string[] {
  const problems: string[] = [];
  // `…` stands for a value or arguments left out; `|` between alternatives (`NAME | --serial HEX`)
  const tokens = argv.map(bare).filter((t) => t !== '' && t !== '|');
  let cmd = program;
  let i = 0;
  while (i < tokens.length) {
    const t = tokens[i]!;
    i++;
    if (/^-{1,2}[A-Za-z]/.test(t)) {
      const eq = t.indexOf('=');
      const flag = eq > 0 ? t.slice(0, eq) : t;
      const o = findOption(cmd, flag);
      if (o === undefined) {
        problems.push(`unknown option ${flag} for '${pathOf(cmd)}'`);
        continue;
      }
      if (o === 'help' || eq > 0) continue;
      if (!o.required && !o.optional) continue;
      const next = tokens[i];
      const isValue = next !== undefined && !/^--?[A-Za-z]/.test(next);
      if (o.required && !isValue && !prose) problems.push(`option ${o.flags} of '${pathOf(cmd)}' is shown without its value`);
      if (isValue) {
        i++;
        if (o.variadic) while (i < tokens.length && !/^--?[A-Za-z]/.test(tokens[i]!)) i++;
      }
      continue;
    }
    if (t === '…' || t === '...') continue;
    if (prose && t === '<command>') return problems;
    if (cmd.commands.length > 0) {
      const sub = cmd.commands.find((s) => s.name() === t || s.aliases().includes(t));
      if (!sub) {
        problems.push(`unknown command '${pathOf(cmd)} ${t}'`);
        return problems;
      }
      cmd = sub;
    }
    // a leaf command's other words are its arguments (placeholders like JOB in the docs)
  }
  if (cmd.commands.length > 0 && cmd !== program && !prose) {
    problems.push(`'${pathOf(cmd)}' is a group: name one of its commands (${cmd.commands.map((s) => s.name()).join(', ')})`);
  }
  if (cmd === program && tokens.length === 0) problems.push('no command after aegis');
  return problems;
}

/** Blocks that hold shell lines; `text`, `json` and the like hold something else (a tree, a sample). */
const SHELL = new Set(['', 'sh', 'shell', 'bash', 'zsh', 'console']);

/** Every command line of one markdown file's shell code blocks, checked. */
export function checkCommands(file: string, markdown: string, program: Command, scripts: Record<string, string>): Problem[] {
  const problems: Problem[] = [];
  for (const { line, text, lang } of codeLines(markdown)) {
    if (!SHELL.has(lang) || text.startsWith('#')) continue;
    for (const cmd of simpleCommands(text)) {
      const what = classify(cmd);
      if (what === undefined) continue;
      if ('script' in what) {
        if (!(what.script in scripts)) problems.push({ file, line, message: `npm script '${what.script}' is not in package.json` });
        continue;
      }
      for (const message of checkAegis(program, what.aegis)) problems.push({ file, line, message: `${message}: ${cmd.join(' ')}` });
    }
  }
  return problems;
}

/** `aegis …` fragments in inline code of the running text, checked for their command and flag names. */
export function checkInlineCommands(file: string, markdown: string, program: Command): Problem[] {
  const problems: Problem[] = [];
  const text = markdown.replace(/^\s*(`{3,}|~{3,})[\s\S]*?^\s*\1\s*$/gm, (block) => block.replace(/[^\n]/g, ' '));
  for (const m of text.matchAll(/`((?:npx |npm run -s )?aegis [^`]+)`/g)) {
    const line = text.slice(0, m.index).split('\n').length;
    for (const cmd of simpleCommands(m[1]!.replace(/\s+/g, ' '))) {
      const what = classify(cmd);
      if (what === undefined || !('aegis' in what)) continue;
      for (const message of checkAegis(program, what.aegis, true)) problems.push({ file, line, message: `${message}: ${cmd.join(' ')}` });
    }
  }
  return problems;
}

/** GitHub's anchor for a heading: rendered text, lowercased, punctuation dropped, spaces to `-`. */
export function slug(heading: string): string {
  return heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/`/g, '')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '')
    .replace(/ /g, '-');
}

/** The anchors of a markdown file's headings (outside code blocks), duplicates numbered as GitHub does. */
export function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fence: string | undefined;
  for (const raw of markdown.split('\n')) {
    const f = /^\s*(`{3,}|~{3,})/.exec(raw);
    if (f) {
      if (fence === undefined) fence = f[1];
      else if (f[1]!.startsWith(fence)) fence = undefined;
      continue;
    }
    if (fence !== undefined) continue;
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(raw);
    if (!h) continue;
    const base = slug(h[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** The markdown outside fenced code blocks, with code spans blanked (same offsets, so line numbers hold). */
function prose(markdown: string): string {
  let fence: string | undefined;
  return markdown
    .split('\n')
    .map((raw) => {
      const f = /^\s*(`{3,}|~{3,})/.exec(raw);
      if (f) {
        if (fence === undefined) fence = f[1];
        else if (f[1]!.startsWith(fence)) fence = undefined;
        return ' '.repeat(raw.length);
      }
      if (fence !== undefined) return ' '.repeat(raw.length);
      return raw;
    })
    .join('\n')
    .replace(/`[^`\n]*`/g, (s) => ' '.repeat(s.length));
}

export interface Link {
  line: number;
  target: string;
}

/** Inline links and images (`[text](target)`, `![alt](target "title")`) outside code. */
export function links(markdown: string): Link[] {
  const text = prose(markdown);
  const out: Link[] = [];
  for (const m of text.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
    out.push({ line: text.slice(0, m.index).split('\n').length, target: m[1]! });
  }
  return out;
}
