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
import type { Command, Option } from 'commander';
import { AegisError, ErrorCode } from '../errors.js';
import { readJsonFile } from './files.js';

const CONFIG_HINT = 'a config file is one JSON object of options by their long names in camelCase (e.g. {"redisPrefix": "prod"}), or sections such as {"rotation": {"kek_days": 90}}';

const camel = (s: string): string => s.replace(/[-_]([a-z0-9])/g, (_, c: string) => c.toUpperCase());

export async function applyConfigFile(file: string, o: Record<string, unknown>, cmd: Command): Promise<void> {
  const json = await readJsonFile(file, '--config');
  if (!isObject(json)) throw new AegisError(ErrorCode.InvalidArgument, `--config: ${file} must hold one JSON object of options`, CONFIG_HINT);
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
      throw new AegisError(ErrorCode.InvalidArgument, `--config: ${file} names an unknown option '${shown.slice(0, 60)}'`, CONFIG_HINT);
    }
    try {
      return [attr, parseValue(opt, shown, value)];
    } catch (err) {
      if (err instanceof AegisError) throw new AegisError(err.code, `--config: ${file}: ${err.message}`, `the value of '${shown.slice(0, 60)}' is checked like --${opt.long?.replace(/^--/, '') ?? attr} on the command line`);
      throw err;
    }
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
