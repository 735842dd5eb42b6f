/**
 * Usage errors of the `aegis` CLI: a bad flag, a missing one, or a value a flag's parser refuses
 * exits 2 with commander's message, which names the flag ("option '--wait <duration>' argument
 * 'abc' is invalid. --wait must be …") or the argument — never a crash report.
 *
 * Commander turns only an `InvalidArgumentError` thrown by a parser into a usage error; any other
 * error escapes `parseAsync` and would end in the crash handler (exit 70). `usageErrorsExit2`
 * therefore wraps the parser of every option and argument of every command, so whatever a
 * parser throws (`AegisError`, `Error`) becomes an `InvalidArgumentError` with its message, and
 * sets every command's exit override to exit 2 (0 for --help and --version). Run it on the root
 * program after every command is registered.
 *
 * A usage error is printed like every other error (shared/cli/output.ts): `error [invalid-argument]:
 * <commander's message>` and a hint with the command's usage line, or, with `--json` anywhere on
 * the command line, one JSON document `{ ok: false, error: { code, message, hint } }` on stdout.
 * An empty value (`--out ''`, `revoke ''`) is refused for every option and argument: no command
 * takes an empty path, name or number.
 */
import { InvalidArgumentError, type Argument, type Command, type Option } from 'commander';

type Parser = (value: string, previous: unknown) => unknown;

/** A parser that throws only `InvalidArgumentError`. */
function asUsageParser(parse: Parser): Parser {
  return (value, previous) => {
    try {
      return parse(value, previous);
    } catch (err) {
      if (err instanceof InvalidArgumentError) throw err;
      throw new InvalidArgumentError(err instanceof Error ? err.message : String(err));
    }
  };
}

const ownParser = new WeakSet<Option | Argument>();

/** Whether an option or argument checks its value with a parser of its own (beyond non-empty). */
export function hasOwnParser(target: Option | Argument): boolean {
  return ownParser.has(target);
}

/** The parser of an option or argument, refusing an empty value before its own check. */
function wrap(target: Option | Argument, label: string): void {
  const parse = target.parseArg as Parser | undefined;
  if (parse !== undefined) ownParser.add(target);
  // Without a parser of its own, commander collects a variadic argument's values itself: keep that.
  if (parse === undefined && target.variadic && !('long' in target)) return;
  const inner = parse === undefined ? undefined : asUsageParser(parse);
  const defaultValue: unknown = target.defaultValue;
  target.parseArg = ((value: string, previous: unknown) => {
    if (value === '') throw new InvalidArgumentError(`${label} needs a value`);
    if (inner !== undefined) return inner(value, previous);
    // A variadic option without a parser: commander's own collection (the default is replaced).
    if (target.variadic) return previous === defaultValue || !Array.isArray(previous) ? [value] : [...(previous as unknown[]), value];
    return value;
  }) as typeof target.parseArg;
}

/** `aegis clients revoke`: the command's full name. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c !== null; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Prints commander's error in the CLI's error format (see above). */
function usageErrorPrinter(cmd: Command) {
  return (str: string, write: (s: string) => void): void => {
    const message = str.replace(/^error: /, '').trimEnd();
    const path = commandPath(cmd);
    const hint = `usage: ${path} ${cmd.usage()} (see ${path} --help)`;
    if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify({ ok: false, error: { code: 'invalid-argument', message, hint } })}\n`);
    else write(`error [invalid-argument]: ${message}\n  hint: ${hint}\n`);
  };
}

/** Usage errors exit 2 on `program` and every command under it (see above). */
export function usageErrorsExit2Everywhere(program: Command): Command {
  const visit = (cmd: Command): void => {
    cmd.exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
    cmd.configureOutput({ outputError: usageErrorPrinter(cmd) });
    // The hint names the usage line and --help; the whole help after every error buried the message.
    cmd.showHelpAfterError(false);
    for (const o of cmd.options) if (o.required || o.optional) wrap(o, o.long ?? o.name());
    for (const a of cmd.registeredArguments) wrap(a, `<${a.name()}>`);
    for (const sub of cmd.commands) visit(sub);
  };
  visit(program);
  return program;
}
