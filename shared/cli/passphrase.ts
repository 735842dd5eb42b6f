/**
 * The passphrase that opens a data dir's sealed keys: `AEGIS_PASSPHRASE` when set, otherwise a
 * prompt on the terminal (input not echoed; asked twice when it will seal new keys). Without a
 * terminal and without the variable, a clear error — never a default passphrase.
 */
import { AegisError, ErrorCode } from '../errors.js';
import { MIN_PASSPHRASE_LENGTH, PASSPHRASE_ENV, passphraseFromEnv } from '../keystore/passphrase-keyfile.js';

/** Reads one line from the TTY without echoing it. */
function promptHidden(question: string): Promise<string> {
  const { stdin, stderr } = process;
  return new Promise((resolve, reject) => {
    stderr.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    let value = '';
    const done = (err?: Error): void => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return done();
        if (ch === '\u0003') return done(new AegisError(ErrorCode.InvalidArgument, 'cancelled at the passphrase prompt'));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on('data', onData);
  });
}

/** The new passphrase of a data dir (`aegis keys passphrase`, `aegis keys rotate --emergency`). */
export const NEW_PASSPHRASE_ENV = 'AEGIS_NEW_PASSPHRASE';
/** The passphrase a backed-up dir had, when a restore goes under another (`aegis client restore`). */
export const SOURCE_PASSPHRASE_ENV = 'AEGIS_SOURCE_PASSPHRASE';

/** The passphrase of backups (separate from the data dir's: a backup outlives the dir's keys). */
export const BACKUP_PASSPHRASE_ENV = 'AEGIS_BACKUP_PASSPHRASE';

export async function obtainPassphrase(opts: { confirm?: boolean; what?: string; env?: string } = {}): Promise<string> {
  const env = opts.env ?? PASSPHRASE_ENV;
  if (process.env[env] !== undefined) {
    const v = process.env[env];
    if (env === PASSPHRASE_ENV) return passphraseFromEnv();
    if ([...v].length < MIN_PASSPHRASE_LENGTH) throw new AegisError(ErrorCode.InvalidArgument, `${env} must hold at least ${MIN_PASSPHRASE_LENGTH} characters`);
    return v;
  }
  if (!process.stdin.isTTY) {
    throw new AegisError(ErrorCode.InvalidArgument, `set ${env} or run on a terminal to be asked for the passphrase`);
  }
  const what = opts.what ?? 'the data dir';
  const first = await promptHidden(`passphrase for ${what}: `);
  if ([...first].length < MIN_PASSPHRASE_LENGTH) throw new AegisError(ErrorCode.InvalidArgument, `the passphrase must have at least ${MIN_PASSPHRASE_LENGTH} characters`);
  if (opts.confirm) {
    const again = await promptHidden('repeat the passphrase: ');
    if (again !== first) throw new AegisError(ErrorCode.InvalidArgument, 'the passphrases differ');
  }
  return first;
}

/** The PKCS#11 user PIN: AEGIS_PKCS11_PIN when set, otherwise a prompt without echo. */
export async function obtainPin(): Promise<string> {
  const env = process.env.AEGIS_PKCS11_PIN;
  if (env !== undefined) {
    if (env.length === 0) throw new AegisError(ErrorCode.InvalidArgument, 'AEGIS_PKCS11_PIN is set but empty');
    return env;
  }
  if (!process.stdin.isTTY) throw new AegisError(ErrorCode.InvalidArgument, 'set AEGIS_PKCS11_PIN or run on a terminal to be asked for the PKCS#11 PIN');
  return promptHidden('PKCS#11 user PIN: ');
}

/** Passphrase and PIN sources for opening a data dir's KEK from the CLI (each asked at most once). */
export function cliKekSecrets(what: string, confirm = false): { passphrase: () => Promise<string>; pin: () => Promise<string> } {
  let pass: Promise<string> | undefined;
  let pin: Promise<string> | undefined;
  return {
    passphrase: () => (pass ??= obtainPassphrase({ confirm, what })),
    pin: () => (pin ??= obtainPin()),
  };
}
