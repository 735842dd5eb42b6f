/**
 * Every command of the built `aegis` CLI (dist/, real processes) refuses bad input with exit 2
 * and a message that names what was wrong — never the crash handler's exit 70.
 *
 * The commands are not listed here: they are read from the program itself (dist/bin/program.js,
 * walked in a child process), so a new command or option is covered as soon as it is registered:
 * - each required argument left out: `missing required argument 'NAME'`;
 * - each required option left out (the others given): `required option '--FLAG …' not specified`;
 * - each option that takes a value, given an empty one: `error [invalid-argument]` naming the flag;
 * - each option with a parser of its own, given a malformed value: the same;
 * - each option or argument that names an input file (its placeholder says file, pem, manifest,
 *   envelope…) must have a case in MISSING_FILE below, which gives a path that does not exist and
 *   expects the path named; a new file option without a case fails the test.
 * Then a wrong passphrase for each kind of keyfile names the file and says the passphrase is
 * wrong or the file was altered, and bad input files are refused naming the file, line and field.
 * Commands that talk to a coordinator are exercised offline, for their argument and file errors.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CLI, runCli, type CliRun } from '../support/cli.js';

const PASSPHRASE = 'cli errors test passphrase';
const WRONG = 'not the passphrase it was sealed with';
const root = mkdtempSync(join(tmpdir(), 'aegis-cli-errors-'));
let env: NodeJS.ProcessEnv;

interface Opt {
  flags: string;
  long: string;
  takesValue: boolean;
  mandatory: boolean;
  parser: boolean;
  placeholder: string;
}
interface Cmd {
  path: string[];
  args: { name: string; required: boolean }[];
  options: Opt[];
}

/** The program's leaf commands, read from dist/bin/program.js by a child process. */
function commandTree(): Cmd[] {
  const program = pathToFileURL(join(CLI, '..', 'program.js')).href;
  const usage = pathToFileURL(join(CLI, '..', '..', 'shared', 'cli', 'usage.js')).href;
  const script = `
    const { buildProgram } = await import(${JSON.stringify(program)});
    const { hasOwnParser } = await import(${JSON.stringify(usage)});
    const walk = (c, path) => c.commands.flatMap((s) => {
      const p = [...path, s.name()];
      if (s.commands.length > 0) return walk(s, p);
      return [{
        path: p,
        args: s.registeredArguments.map((a) => ({ name: a.name(), required: a.required })),
        options: s.options.map((o) => ({
          flags: o.flags, long: o.long, takesValue: o.required || o.optional, mandatory: o.mandatory,
          parser: hasOwnParser(o),
          placeholder: (/[<[]([^>\\]]+)[>\\]]/.exec(o.flags) ?? [])[1] ?? '',
        })),
      }];
    });
    process.stdout.write(JSON.stringify(walk(buildProgram(), [])));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`cannot read the command tree: ${r.stderr}`);
  return JSON.parse(r.stdout) as Cmd[];
}

/** Runs every case, a few processes at a time (each is a Node start, ~0.3 s). */
async function runAll(cases: string[][], at = 4): Promise<CliRun[]> {
  const out: CliRun[] = new Array(cases.length);
  let next = 0;
  const one = (args: string[]): Promise<CliRun> =>
    new Promise((resolve) => {
      const p = spawn(process.execPath, [CLI, ...args], { env, cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.on('close', (status) => resolve({ status, stdout, stderr }));
    });
  await Promise.all(
    Array.from({ length: at }, async () => {
      while (next < cases.length) {
        const i = next++;
        out[i] = await one(cases[i]!);
      }
    }),
  );
  return out;
}

/** A value each option's parser takes, so that leaving out another one is the only error. */
function sample(o: Opt): string {
  if (o.long === '--set') return 'digit=1';
  if (o.long === '--delta' || o.long === '--clip') return '0.5'; // dp calibrate: a probability, a norm
  if (/^(n|t|days|version)$/.test(o.placeholder)) return '1';
  if (o.placeholder === 'duration') return '1m';
  if (o.placeholder === 'date') return '2099-01-01';
  return join(root, 'sample');
}

const cmdName = (c: Cmd): string => c.path.join(' ');

/**
 * Why a run is not a refusal with exit 2 and the expected text (no crash report), or undefined.
 * The tests collect these for every case and expect none, so one run names every failing case.
 */
function notRefused(label: string, r: CliRun, ...texts: (string | RegExp)[]): string | undefined {
  const err = `${r.stderr}${r.stdout}`;
  const missing = texts.filter((t) => (typeof t === 'string' ? !err.includes(t) : !t.test(err)));
  if (r.status === 2 && missing.length === 0 && !/crashed|uncaught|unhandled/i.test(err)) return undefined;
  return `${label}: exit ${r.status}, expected ${missing.map(String).join(' and ') || 'exit 2'}; got ${err.slice(0, 300)}`;
}

function expectRefused(label: string, r: CliRun, ...texts: (string | RegExp)[]): void {
  expect(notRefused(label, r, ...texts)).toBeUndefined();
}

/*
 * The environment and the command tree are made when the file is collected:
 * the tests below are one per command, so each has the time of its own few processes (a Node
 * start each) rather than one time limit for hundreds.
 */
if (!existsSync(CLI)) throw new Error('dist/ is missing: run "npm run build" first');
env = {
  ...process.env,
  AEGIS_PASSPHRASE: PASSPHRASE,
  AEGIS_OPERATOR_PASSPHRASE: PASSPHRASE,
  AEGIS_LOG_LEVEL: 'warn',
  AEGIS_COORDINATOR_DIR: join(root, 'no-coordinator'),
  AEGIS_CLIENT_DIR: join(root, 'no-client'),
};
delete env.AEGIS_REDIS_URL;
delete env.AEGIS_OPERATOR_CREDENTIAL;
const tree: Cmd[] = commandTree();

/**
 * A test's time limit from the processes it starts, at most 4 at a time, each allowed 2 minutes
 * (a CLI refusing bad input takes well under a second on an idle machine).
 */
const forProcesses = (n: number): number => 120_000 * Math.ceil(n / 4) + 60_000;

/** A publisher key, a signed manifest, a registry, a client dir and an offline CA dir, made once. */
let fixtures: Promise<void> | undefined;
const FIXTURE_PROCESSES = 6;
function makeFixtures(): Promise<void> {
  fixtures ??= (async () => {
    const made = await runAll([
      ['manifest', 'keygen', '--out', 'pub.key'],
      ['manifest', 'new', '--out', 'job.json'],
      ['registry', 'init', '--dir', 'reg', '--roots', '1', '--threshold', '1'],
      ['client', 'init', '--data-dir', 'cl'],
      ['ca', 'init', '--dir', 'cadir'],
    ]);
    writeFileSync(join(root, 'input-ok.json'), '{"values": [1, 2]}');
    const signed = await runAll([['manifest', 'sign', 'job.json', '--key', 'pub.key', '--out', 'job.dsse.json']]);
    for (const r of [...made, ...signed]) if (r.status !== 0) throw new Error(`fixture failed: ${r.stderr}`);
  })();
  return fixtures;
}

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('every command', () => {
  test('the command tree is read from the program', () => {
    const names = tree.map(cmdName);
    expect(names).toEqual(expect.arrayContaining(['coordinator start', 'clients invite', 'round launch', 'client run', 'manifest sign', 'registry init', 'keys destroy', 'simulate', 'demo']));
    expect(tree.length).toBeGreaterThan(50);
  });

  /** Each required argument left out, and each required option left out with the others given. */
  const missingRequired = (c: Cmd): { label: string; args: string[]; text: string }[] => {
    const cases: { label: string; args: string[]; text: string }[] = [];
    const mandatory = c.options.filter((o) => o.mandatory);
    const given = mandatory.flatMap((o) => [o.long, sample(o)]);
    c.args.forEach((a, i) => {
      if (!a.required) return;
      const before = c.args.slice(0, i).map(() => 'x');
      cases.push({ label: `${cmdName(c)} without <${a.name}>`, args: [...c.path, ...given, ...before], text: `missing required argument '${a.name}'` });
    });
    const args = c.args.filter((a) => a.required).map(() => 'x');
    for (const o of mandatory) {
      const others = mandatory.filter((m) => m !== o).flatMap((m) => [m.long, sample(m)]);
      cases.push({ label: `${cmdName(c)} without ${o.long}`, args: [...c.path, ...args, ...others], text: `required option '${o.flags}' not specified` });
    }
    return cases;
  };
  const withRequired = tree.filter((c) => missingRequired(c).length > 0);

  test('commands with required arguments or options are found', () => {
    expect(withRequired.flatMap(missingRequired).length).toBeGreaterThan(30);
  });

  describe('a missing required argument or required option exits 2 naming it', () => {
    test.each(withRequired.map((c) => [cmdName(c), c] as const))('%s', async (_name, c) => {
      const cases = missingRequired(c);
      const runs = await runAll(cases.map((k) => k.args));
      expect(cases.map((k, i) => notRefused(k.label, runs[i]!, k.text, 'error [invalid-argument]')).filter(Boolean)).toEqual([]);
    });
  });

  // A malformed value where the option checks its form; an empty one where it takes any text
  // (a path, a name): both are refused before the command runs.
  const badValues = (c: Cmd): { o: Opt; args: string[] }[] => c.options.filter((o) => o.takesValue).map((o) => ({ o, args: [...c.path, o.long, o.parser ? '%bad' : ''] }));
  const withValues = tree.filter((c) => badValues(c).length > 0);

  test('options with parsers of their own are found', () => {
    expect(withValues.flatMap(badValues).filter((k) => k.o.parser).length).toBeGreaterThan(40);
  });

  describe('a bad value for each option that takes one exits 2 naming the flag and the usage line', () => {
    test.each(withValues.map((c) => [cmdName(c), c] as const))('%s', async (_name, c) => {
      const cases = badValues(c);
      const runs = await runAll(cases.map((k) => k.args));
      const failures = cases.map((k, i) =>
        notRefused(`${cmdName(c)} ${k.o.long} '${k.args.at(-1) ?? ''}'`, runs[i]!, `option '${k.o.flags}' argument`, /^error \[invalid-argument\]: /, `hint: usage: aegis ${cmdName(c)} `),
      );
      expect(failures.filter(Boolean)).toEqual([]);
    });
  });

  test('an unknown option exits 2 naming it; with --json the error is one JSON document', async () => {
    // Commands with nothing required (commander reports a missing required option first).
    const free = tree.filter((c) => !c.args.some((a) => a.required) && !c.options.some((o) => o.mandatory));
    const some = [free[0]!, free[Math.floor(free.length / 2)]!, free.at(-1)!];
    const runs = await runAll(some.map((c) => [...c.path, '--no-such-flag']));
    some.forEach((c, i) => expectRefused(cmdName(c), runs[i]!, "unknown option '--no-such-flag'"));
    const json = runCli(['clients', 'list', '--json', '--no-such-flag'], env);
    expect(json.status).toBe(2);
    expect(JSON.parse(json.stdout)).toEqual({ ok: false, error: { code: 'invalid-argument', message: "unknown option '--no-such-flag'", hint: expect.stringContaining('aegis clients list --help') } });
  });

  /**
   * The options and arguments that name an input file, each with an invocation (run in the
   * fixtures dir) that reaches its check offline. A missing path there must exit 2 naming it.
   */
  const MISSING = 'missing/nothing-here.json';
  const MISSING_FILE: Record<string, string[]> = {
    'coordinator start --config': ['coordinator', 'start', '--listen', '127.0.0.1:0', '--allow-unsigned', '--data-dir', 'co', '--config', MISSING],
    'coordinator start --validation-data': ['coordinator', 'start', '--listen', '127.0.0.1:0', '--allow-unsigned', '--data-dir', 'co', '--validation-data', `digits=${MISSING}`],
    'coordinator start --offline-ca': ['coordinator', 'start', '--listen', '127.0.0.1:0', '--allow-unsigned', '--data-dir', 'co', '--offline-ca', MISSING],
    'coordinator start --dashboard-tls-cert': ['coordinator', 'start', '--listen', '127.0.0.1:0', '--allow-unsigned', '--data-dir', 'co', '--dashboard', '127.0.0.1:0', '--dashboard-tls-cert', MISSING, '--dashboard-tls-key', 'job.json'],
    'coordinator start --dashboard-tls-key': ['coordinator', 'start', '--listen', '127.0.0.1:0', '--allow-unsigned', '--data-dir', 'co', '--dashboard', '127.0.0.1:0', '--dashboard-tls-cert', 'job.json', '--dashboard-tls-key', MISSING],
    'ca sign-csr <requests>': ['ca', 'sign-csr', MISSING, '--dir', 'cadir', '--out', 'signed'],
    'round launch <signed-manifest>': ['round', 'launch', MISSING, '--coordinator', '127.0.0.1:1'],
    'round launch --manifest': ['round', 'launch', '--manifest', MISSING, '--coordinator', '127.0.0.1:1'],
    'round launch --weights': ['round', 'launch', '--manifest', 'job.json', '--weights', MISSING, '--coordinator', '127.0.0.1:1'],
    'client enroll --ca': ['client', 'enroll', '--coordinator', '127.0.0.1:1', '--token', 'x'.repeat(43), '--ca', MISSING, '--data-dir', 'never'],
    'client run --config': ['client', 'run', '--allow-unsigned', '--data-dir', 'never', '--config', MISSING],
    'client privacy status --config': ['client', 'privacy', 'status', '--data-dir', 'never', '--config', MISSING],
    'client run --input': ['client', 'run', '--allow-unsigned', '--data-dir', 'never', '--input', MISSING],
    'client run --train-data': ['client', 'run', '--allow-unsigned', '--data-dir', 'never', '--train-data', MISSING],
    'client run --registry-ca': ['client', 'run', '--allow-unsigned', '--data-dir', 'never', '--input', 'input-ok.json', '--registry-ca', MISSING],
    'client restore <file>': ['client', 'restore', MISSING, '--data-dir', 'never'],
    'client data import <file>': ['client', 'data', 'import', MISSING, '--data-dir', 'never'],
    'manifest sign <manifest>': ['manifest', 'sign', MISSING, '--key', 'pub.key', '--out', 'never.json'],
    'manifest sign --key': ['manifest', 'sign', 'job.json', '--key', MISSING, '--out', 'never.json'],
    'manifest verify <envelope>': ['manifest', 'verify', MISSING, '--registry', 'reg', '--backup-registry', 'reg'],
    'manifest verify --ca': ['manifest', 'verify', 'job.dsse.json', '--registry', 'reg', '--backup-registry', 'reg', '--ca', MISSING],
    'manifest inspect <envelope>': ['manifest', 'inspect', MISSING],
    'manifest inspect --public-key': ['manifest', 'inspect', 'job.dsse.json', '--public-key', MISSING],
    'registry add-publisher --public-key': ['registry', 'add-publisher', '--dir', 'reg', '--public-key', MISSING, '--name', 'p'],
    'keys status --config': ['keys', 'status', '--data-dir', 'cl', '--config', MISSING],
    'trainer check --manifest': ['trainer', 'check', '--trainer-cmd', '/bin/true', '--manifest', MISSING],
    'trainer check --weights': ['trainer', 'check', '--trainer-cmd', '/bin/true', '--manifest', 'job.json', '--weights', MISSING],
    'trainer check --records': ['trainer', 'check', '--trainer-cmd', '/bin/true', '--manifest', 'job.json', '--records', MISSING],
  };
  /** What a command checks before it reads the credential (one of two flags, a file). */
  const CREDENTIAL_EXTRA: Record<string, string[]> = {
    'operators reissue': ['--out', 'never.pem'],
    'operators revoke': ['x'],
    'tokens revoke': ['--client', 'x'],
    'round launch': ['job.dsse.json'],
  };
  /** File inputs whose check needs state this offline test does not build, and where it is tested. */
  const ELSEWHERE: Record<string, string> = {
    'client restore --identity': 'read only for a backup encrypted to a recipient key (test/cli/keys-rekey.test.ts, store backup tests)',
  };
  const isFileInput = (name: string, placeholder: string): boolean =>
    !/^--(out|weights-out|manifest-sha256)$/.test(name) && /file|pem|manifest|envelope|requests/.test(`${name} ${placeholder}`);

  test('a missing input file exits 2 naming the file, for every option and argument that takes one', async () => {
    await makeFixtures();
    const inputs: string[] = [];
    for (const c of tree) {
      for (const a of c.args) if (isFileInput(a.name, a.name)) inputs.push(`${cmdName(c)} <${a.name}>`);
      for (const o of c.options) if (o.takesValue && isFileInput(o.long, o.placeholder)) inputs.push(`${cmdName(c)} ${o.long}`);
    }
    // The operator credential of every command that calls the coordinator.
    const credential = inputs.filter((k) => k.endsWith(' --credential'));
    expect(credential.length).toBeGreaterThan(10);
    const cases: [string, string[]][] = Object.entries(MISSING_FILE);
    for (const k of credential) {
      const c = tree.find((t) => `${cmdName(t)} --credential` === k)!;
      const args = c.args.filter((a) => a.required).map(() => 'x');
      const mandatory = c.options.filter((o) => o.mandatory).flatMap((o) => [o.long, sample(o)]);
      cases.push([k, [...c.path, ...args, ...mandatory, ...(CREDENTIAL_EXTRA[cmdName(c)] ?? []), '--coordinator', '127.0.0.1:1', '--credential', MISSING]]);
    }
    // Every file input has a case (or says where it is tested): a new one without fails here.
    const covered = new Set([...cases.map(([k]) => k), ...Object.keys(ELSEWHERE)]);
    expect(inputs.filter((k) => !covered.has(k))).toEqual([]);
    const runs = await runAll(cases.map(([, args]) => args));
    expect(cases.map(([k], i) => notRefused(k, runs[i]!, MISSING, /error \[not-found\]/)).filter(Boolean)).toEqual([]);
    expect(existsSync(join(root, 'co'))).toBe(false); // nothing was created before the check
    expect(existsSync(join(root, 'never'))).toBe(false);
  }, forProcesses(FIXTURE_PROCESSES + Object.keys(MISSING_FILE).length + tree.filter((c) => c.options.some((o) => o.long === '--credential')).length));

  test('a wrong passphrase names the keyfile and says the passphrase is wrong or the file was altered', async () => {
    await makeFixtures();
    const cases: [string, string[], string][] = [
      ['publisher key', ['manifest', 'sign', 'job.json', '--key', 'pub.key', '--out', 'never.json'], 'pub.key'],
      ['registry root key', ['registry', 'add-publisher', '--dir', 'reg', '--public-key', 'pub.pub.json', '--name', 'p'], join('reg', 'keys', 'root-1.key')],
      ['client KEK', ['keys', 'status', '--data-dir', 'cl'], join('cl', 'kek.keyfile.json')],
      ['client KEK (rotation)', ['keys', 'rotate', '--data-dir', 'cl'], join('cl', 'kek.keyfile.json')],
    ];
    const saved = env;
    env = { ...env, AEGIS_PASSPHRASE: WRONG };
    let runs: CliRun[];
    try {
      runs = await runAll(cases.map(([, args]) => args));
    } finally {
      env = saved;
    }
    const failures = cases.map(([k, , file], i) => notRefused(k, runs[i]!, 'error [decryption-failed]', `${file} does not open: the passphrase is wrong or the file was altered`, 'hint: check the passphrase'));
    expect(failures.filter(Boolean)).toEqual([]);
    for (const r of runs!) expect(`${r.stdout}${r.stderr}`).not.toContain(WRONG);
    expect(existsSync(join(root, 'never.json'))).toBe(false);
  });

  test('a bad input file is refused when it is given, naming the file, the line and the field', async () => {
    await makeFixtures();
    writeFileSync(join(root, 'digits-val.jsonl'), `${'{"pixels":[0,1,0,1],"digit":1}\n'.repeat(11)}{"pixels":null,"digit":2}\n`);
    writeFileSync(join(root, 'ragged.jsonl'), '{"pixels":[0,1],"digit":1}\n\n{"pixels":[0,1,null],"digit":2}\n');
    writeFileSync(join(root, 'short.jsonl'), '{"pixels":[0,1],"digit":1}\n{"pixels":[0],"digit":2}\n');
    writeFileSync(join(root, 'input.json'), '{"values": [1, 2, "three"]}');
    writeFileSync(join(root, 'config.json'), '{\n  "redisPrefix": "x",\n  "listen": \n}\n');
    const start = ['coordinator', 'start', '--listen', '127.0.0.1:0', '--allow-unsigned', '--data-dir', 'co'];
    const cases: [string, string[], string][] = [
      ['--validation-data null', [...start, '--validation-data', 'digits=digits-val.jsonl'], "digits-val.jsonl line 12: field 'pixels' holds null"],
      ['--train-data null in an array', ['client', 'run', '--allow-unsigned', '--data-dir', 'never', '--train-data', 'ragged.jsonl'], "ragged.jsonl line 3: field 'pixels' value 2 holds null"],
      ['--validation-data ragged', [...start, '--validation-data', 'digits=short.jsonl'], "short.jsonl line 2: field 'pixels' has 1 values, line 1 has 2"],
      ['--input', ['client', 'run', '--allow-unsigned', '--data-dir', 'never', '--input', 'input.json'], "input.json: field 'values' value 2"],
      ['--config', [...start, '--config', 'config.json'], '--config: config.json is not JSON (line 4)'],
      ['unsigned manifest to round launch', ['round', 'launch', 'job.json', '--coordinator', '127.0.0.1:1'], 'job.json: envelope: not signed'],
      ['unsigned manifest to manifest verify', ['manifest', 'verify', 'job.json', '--registry', 'reg', '--backup-registry', 'reg'], 'not signed'],
    ];
    const runs = await runAll(cases.map(([, args]) => args));
    expect(cases.map(([k, , text], i) => notRefused(k, runs[i]!, text)).filter(Boolean)).toEqual([]);
    expect(runs[5]!.stderr).toContain('hint: sign the manifest first: aegis manifest sign');
    expect(existsSync(join(root, 'co'))).toBe(false);
    // The data's values are never quoted.
    expect(readFileSync(join(root, 'input.json'), 'utf8')).toContain('three');
    for (const r of runs) expect(r.stderr).not.toContain('three');
  });
});
