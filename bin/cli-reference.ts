/**
 * docs/cli-reference.md, written from the commander program itself (`buildProgram()`): every
 * command with its arguments, options, defaults and descriptions, in registration order.
 * `npm run docs:cli` (scripts/cli-reference.mjs) writes the file; test/docs/cli-reference.test.ts
 * checks that the committed file is exactly what this renders, so it cannot go stale.
 */
import type { Argument, Command, Option } from 'commander';

/** `|` would end a table cell; line breaks would end the row. */
function cell(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|');
}

function code(text: string): string {
  return `\`${text.replace(/\|/g, '\\|')}\``;
}

function defaultOf(o: Option | Argument): string {
  if (o.defaultValueDescription !== undefined) return o.defaultValueDescription;
  if (o.defaultValue === undefined || o.defaultValue === false) return '';
  return JSON.stringify(o.defaultValue);
}

function argumentLabel(a: Argument): string {
  const name = `${a.name()}${a.variadic ? '...' : ''}`;
  return a.required ? `<${name}>` : `[${name}]`;
}

function commandPath(c: Command): string {
  const names: string[] = [];
  for (let at: Command | null = c; at; at = at.parent) names.unshift(at.name());
  return names.join(' ');
}

/** GitHub's heading anchor for a heading made only of lowercase names, spaces and hyphens. */
function anchor(heading: string): string {
  return heading.toLowerCase().replace(/[^\p{L}\p{N}\- ]/gu, '').replace(/ /g, '-');
}

function visible(c: Command): Command[] {
  return c.commands.filter((s) => !(s as Command & { _hidden?: boolean })._hidden);
}

function renderCommand(c: Command, out: string[]): void {
  const path = commandPath(c);
  const subs = visible(c);
  out.push(`## ${path}`, '');
  if (c.description()) out.push(cell(c.description()), '');
  const args = c.registeredArguments.map(argumentLabel).join(' ');
  const usage = subs.length > 0 ? `${path} <command>` : `${path}${c.options.length > 0 ? ' [options]' : ''}${args ? ` ${args}` : ''}`;
  out.push('```', usage, '```', '');
  if (subs.length > 0) {
    out.push('| command | description |', '| --- | --- |');
    for (const s of subs) {
      const p = commandPath(s);
      out.push(`| [${code(p)}](#${anchor(p)}) | ${cell(s.description())} |`);
    }
    out.push('');
  }
  if (c.registeredArguments.length > 0) {
    out.push('| argument | description | default |', '| --- | --- | --- |');
    for (const a of c.registeredArguments) {
      out.push(`| ${code(argumentLabel(a))} | ${cell(a.description)} | ${cell(defaultOf(a))} |`);
    }
    out.push('');
  }
  if (c.options.length > 0) {
    out.push('| option | description | default |', '| --- | --- | --- |');
    for (const o of c.options) {
      const notes = [o.mandatory ? '(required)' : '', o.argChoices ? `one of: ${o.argChoices.join(', ')}` : '']
        .filter(Boolean)
        .join(' ');
      const text = [o.description, notes].filter(Boolean).join('; ');
      out.push(`| ${code(o.flags)} | ${cell(text)} | ${cell(defaultOf(o))} |`);
    }
    out.push('');
  }
  for (const s of subs) renderCommand(s, out);
}

export function cliReference(program: Command): string {
  const out: string[] = [
    '# CLI reference',
    '',
    '<!-- Generated from the program (bin/program.ts) by `npm run docs:cli`; do not edit by hand.',
    '     test/docs/cli-reference.test.ts fails when this file differs from what the program gives. -->',
    '',
    'Every `aegis` command with its arguments and options, as `aegis <command> --help` prints them.',
    'Every command also takes `-h, --help`; usage errors exit 2 (see',
    '["CLI conventions"](operator-guide.md#cli-conventions-exit-codes-and-errors)). Which command to',
    'use when is in the [operator guide](operator-guide.md) and the',
    '[ML engineer guide](ml-engineer-guide.md).',
    '',
  ];
  renderCommand(program, out);
  return `${out.join('\n').trimEnd()}\n`;
}
