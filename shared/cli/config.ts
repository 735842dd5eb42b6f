/**
 * `--config FILE` for long-running commands (`coordinator start`, `client run`) and the commands
 * that read the same policy (`keys status`): one JSON object of options, parsed and checked like
 * the command line's; an option given on the command line wins.
 *
 * Keys are the long option names in camelCase (`"redisPrefix": "prod"`), or sections of
 * snake_case keys that stand for `--SECTION-KEY` (`{"rotation": {"kek_days": 30}}` is
 * `--rotation-kek-days 30`; `{"clients": {"lost_after": "7d"}}` is `--clients-lost-after 7d`).
 * A bad file is refused whole, before anything runs: never half read.
 */
import { readFile } from 'node:fs/promises';
import type { Command, Option } from 'commander';
import { AegisError, ErrorCode } from '../errors.js';

const camel = (s: string): string => s.replace(/[-_]([a-z0-9])/g, (_, c: string) => c.toUpperCase());

export async function applyConfigFile(file: string, o: Record<string, unknown>, cmd: Command): Promise<void> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new AegisError(code === 'ENOENT' ? ErrorCode.NotFound : ErrorCode.InvalidArgument, code === 'ENOENT' ? `no config file at ${file}` : `the config file ${file} is not JSON`);
  }
  if (!isObject(json)) throw new AegisError(ErrorCode.InvalidArgument, 'the config file must hold one JSON object of options');
  const entries: [string, string, unknown][] = [];
  for (const [key, value] of Object.entries(json)) {
    if (isObject(value)) {
      for (const [sub, v] of Object.entries(value)) entries.push([`${key}.${sub}`, camel(`${key}_${sub}`), v]);
    } else {
      entries.push([key, key, value]);
    }
  }
  const parsed: [string, unknown][] = entries.map(([shown, attr, value]) => {
    const opt = cmd.options.find((x) => x.attributeName() === attr);
    if (!opt || attr === 'config') {
      throw new AegisError(ErrorCode.InvalidArgument, `the config file names an unknown option '${shown.slice(0, 60)}' (use the long option names in camelCase, e.g. redisPrefix, or sections such as {"rotation": {"kek_days": 90}})`);
    }
    return [attr, parseValue(opt, shown, value)];
  });
  for (const [attr, value] of parsed) if (cmd.getOptionValueSource(attr) !== 'cli') o[attr] = value;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseValue(opt: Option, key: string, value: unknown): unknown {
  if (opt.isBoolean()) {
    if (typeof value !== 'boolean') throw new AegisError(ErrorCode.InvalidArgument, `config option '${key}' takes true or false`);
    return value;
  }
  if (opt.variadic) {
    if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new AegisError(ErrorCode.InvalidArgument, `config option '${key}' takes a list of strings`);
    return value;
  }
  if (typeof value !== 'string' && typeof value !== 'number') throw new AegisError(ErrorCode.InvalidArgument, `config option '${key}' takes a string or a number`);
  try {
    return opt.parseArg ? opt.parseArg(String(value), undefined) : String(value);
  } catch (err) {
    throw new AegisError(ErrorCode.InvalidArgument, `config option '${key}': ${err instanceof Error ? err.message : 'bad value'}`);
  }
}
