/** Durations on the command line: what --help shows as a default reads back as the same value. */
import { describe, expect, test } from '@jest/globals';
import { buildProgram } from '../../bin/program.js';
import { formatDuration, parseDuration } from '../../shared/cli/output.js';

describe('durations', () => {
  test('formatDuration gives the largest whole unit, and parseDuration reads it back', () => {
    const parse = parseDuration('x', 0, 400 * 86_400_000);
    for (const [ms, text] of [[604_800_000, '7d'], [86_400_000, '1d'], [3_600_000, '1h'], [900_000, '15m'], [10_000, '10s'], [1500, '1500ms'], [0, '0ms'], [90 * 60_000, '90m']] as const) {
      expect(formatDuration(ms)).toBe(text);
      expect(parse(text)).toBe(ms);
    }
  });

  test('every duration option of the program shows its default as typed, never in milliseconds', () => {
    const seen: string[] = [];
    const visit = (cmd: ReturnType<typeof buildProgram>): void => {
      for (const opt of cmd.options) {
        if (!/<duration>/.test(opt.flags) || typeof opt.defaultValue !== 'number') continue;
        seen.push(opt.long!);
        expect(opt.defaultValueDescription).toBe(formatDuration(opt.defaultValue));
      }
      cmd.commands.forEach(visit);
    };
    visit(buildProgram());
    expect(seen).toEqual(expect.arrayContaining(['--valid-for', '--gather', '--ttl']));
  });
});
