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

function wrap(target: Option | Argument): void {
  const parse = target.parseArg as Parser | undefined;
  if (parse !== undefined) target.parseArg = asUsageParser(parse) as typeof target.parseArg;
}

/** Usage errors exit 2 on `program` and every command under it (see above). */
export function usageErrorsExit2Everywhere(program: Command): Command {
  const visit = (cmd: Command): void => {
    cmd.exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
    for (const o of cmd.options) wrap(o);
    for (const a of cmd.registeredArguments) wrap(a);
    for (const sub of cmd.commands) visit(sub);
  };
  visit(program);
  return program;
}
