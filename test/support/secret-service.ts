/**
 * A private, real Secret Service for tests: its own dbus-daemon (a unix socket in a temp dir,
 * no service activation) and a gnome-keyring-daemon (secrets component only) whose keyrings live
 * in that temp dir, its login collection created and unlocked with a throwaway password. Nothing
 * touches the user's session bus or keyrings.
 *
 * Needs the dbus-daemon, dbus-send and gnome-keyring-daemon binaries (Debian/Ubuntu:
 * `apt-get install -y --no-install-recommends dbus gnome-keyring`). When one is missing,
 * `startSecretService` throws (a test that needs it fails; it does not skip).
 *
 * The keyring binding reads DBUS_SESSION_BUS_ADDRESS from the real process environment, which a
 * Jest test cannot change (its `process.env` is a copy), so code under test runs in a child
 * process started with `env`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsc, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export const SECRET_SERVICE_APT_PACKAGES = ['dbus', 'gnome-keyring'] as const;
const TOOLS = ['dbus-daemon', 'dbus-send', 'gnome-keyring-daemon'] as const;

export interface SecretService {
  /** DBUS_SESSION_BUS_ADDRESS of the private bus. */
  address: string;
  /** Environment for a child process that should see this Secret Service (and only it). */
  env: NodeJS.ProcessEnv;
  /** Object path of the login collection (for Lock). */
  collection: string;
  /** Locks the login collection (unlocking needs a prompt, which this service cannot show). */
  lock(): Promise<void>;
  /** Stops both daemons and removes the temp dir. */
  stop(): Promise<void>;
}

function which(tool: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, tool);
    try {
      accessSync(p, fsc.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

/** Throws, naming the apt packages, when a binary the Secret Service needs is missing. */
export function assertSecretServiceTools(): void {
  const missing = TOOLS.filter((t) => which(t) === undefined);
  if (missing.length > 0) {
    throw new Error(
      `a real Secret Service is needed for this test but ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not installed: ` +
        `apt-get install -y --no-install-recommends ${SECRET_SERVICE_APT_PACKAGES.join(' ')}`,
    );
  }
}

function dbusSend(address: string, args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    execFile('dbus-send', [`--bus=${address}`, '--print-reply', ...args], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) rej(new Error(`dbus-send ${args.slice(0, 3).join(' ')} failed: ${stderr.trim() || err.message}`));
      else res(stdout);
    });
  });
}

/** Locks a collection of the Secret Service at `address` (what a screen lock or logout does). */
export async function lockSecretServiceCollection(address: string, collection: string): Promise<void> {
  await dbusSend(address, ['--dest=org.freedesktop.secrets', '/org/freedesktop/secrets', 'org.freedesktop.Secret.Service.Lock', `array:objpath:${collection}`]);
}

function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((res) => p.once('exit', () => res()));
}

async function kill(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 3000);
  await exited(p);
  clearTimeout(t);
}

/** Starts the private bus and an unlocked gnome-keyring on it; resolves once org.freedesktop.secrets answers. */
export async function startSecretService(): Promise<SecretService> {
  assertSecretServiceTools();
  const dir = mkdtempSync(join(tmpdir(), 'aegis-secret-service-'));
  const run = join(dir, 'run');
  mkdirSync(run, { mode: 0o700 });
  const socket = join(dir, 'bus');
  const conf = join(dir, 'bus.conf');
  writeFileSync(
    conf,
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=${socket}</listen>
  <policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>
</busconfig>
`,
  );
  const procs: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const p of procs.reverse()) await kill(p);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const bus = spawn('dbus-daemon', ['--config-file', conf, '--nofork', '--print-address=1'], { stdio: ['ignore', 'pipe', 'ignore'] });
    procs.push(bus);
    const address = await new Promise<string>((res, rej) => {
      let out = '';
      const t = setTimeout(() => rej(new Error('dbus-daemon did not print its address within 10 s')), 10_000);
      bus.once('error', (e) => {
        clearTimeout(t);
        rej(e);
      });
      bus.once('exit', (code) => {
        clearTimeout(t);
        rej(new Error(`dbus-daemon exited (${String(code)})`));
      });
      bus.stdout!.on('data', (d: Buffer) => {
        out += d.toString('utf8');
        if (out.includes('\n')) {
          clearTimeout(t);
          res(out.split('\n')[0]!.trim());
        }
      });
    });
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: dir,
      XDG_DATA_HOME: join(dir, 'data'),
      XDG_CONFIG_HOME: join(dir, 'config'),
      XDG_CACHE_HOME: join(dir, 'cache'),
      XDG_RUNTIME_DIR: run,
      DBUS_SESSION_BUS_ADDRESS: address,
    };
    const gk = spawn('gnome-keyring-daemon', ['--foreground', '--components=secrets', '--unlock'], { env, stdio: ['pipe', 'ignore', 'ignore'] });
    procs.push(gk);
    gk.stdin!.end('aegis-test-keyring-password');
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (gk.exitCode !== null) throw new Error(`gnome-keyring-daemon exited (${gk.exitCode})`);
      const owned = await dbusSend(address, ['--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.NameHasOwner', 'string:org.freedesktop.secrets']).catch(() => '');
      if (/boolean true/.test(owned)) {
        // The login collection is made by --unlock; wait until the default alias names it.
        const alias = await dbusSend(address, ['--dest=org.freedesktop.secrets', '/org/freedesktop/secrets', 'org.freedesktop.Secret.Service.ReadAlias', 'string:default']).catch(() => '');
        const m = /object path "([^"]+)"/.exec(alias);
        if (m !== null && m[1] !== '/') {
          const collection = m[1]!;
          return { address, env, collection, lock: () => lockSecretServiceCollection(address, collection), stop };
        }
      }
      if (Date.now() > deadline) throw new Error('the Secret Service (gnome-keyring-daemon) did not come up within 15 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    await stop();
    throw e;
  }
}
