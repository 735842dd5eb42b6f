/**
 * Logs and crash reports carry no secret and no sensitive value (shared/log.ts): pino's redaction
 * of sensitive field names, and the crash handler that reports only a code and a message. Run in
 * a child process on the built module, as the CLI runs it, so what is checked is the real stderr.
 */
import { describe, expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { encodingsOf, makeCanaries, scanBytes } from '../support/canary.js';

const LOG = fileURLToPath(new URL('../../dist/shared/log.js', import.meta.url));
const c = makeCanaries();

function run(body: string): { status: number | null; stderr: string } {
  const script = `import { createLogger, installCrashHandler } from ${JSON.stringify(LOG)};\nconst c = ${JSON.stringify({ ...c, key: c.key.toString('hex') })};\n${body}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, AEGIS_LOG_LEVEL: 'debug' } });
  return { status: r.status, stderr: r.stderr };
}

describe('log redaction and crash reports', () => {
  test('sensitive fields are redacted at the top level and one level down; ids and counts stay', () => {
    const r = run(`const log = createLogger('t');
      log.debug({ address: c.address, lat: c.lat, lon: c.lon, transcript: c.transcript, records: 3, client: 'dev-1' }, 'plain');
      log.info({ rec: { address: c.address, lat: c.lat, lon: c.lon, transcript: c.transcript }, auth: { token: c.token, passphrase: c.passphrase, pin: c.passphrase, key: c.key, dek: c.key } }, 'nested');`);
    expect(r.status).toBe(0);
    const lines = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ address: '[redacted]', lat: '[redacted]', transcript: '[redacted]', records: 3, client: 'dev-1' });
    expect(lines[1]).toMatchObject({ rec: { address: '[redacted]', lon: '[redacted]' }, auth: { token: '[redacted]', passphrase: '[redacted]', key: '[redacted]', dek: '[redacted]' } });
    expect(scanBytes(Buffer.from(r.stderr), encodingsOf(c))).toEqual([]);
  });

  test('metadata the coordinator does not keep is redacted too: a client IP or peer, certificate serial and subject', () => {
    const r = run(`const log = createLogger('t');
      log.warn({ client: 'dev-1', ip: '203.0.113.7', peer: 'ipv4:203.0.113.7:50122', serial: '0a1b2c3d4e5f', subject: 'CN=dev-1', phase: 'masked-input', clients: 3 }, 'flat');
      log.info({ conn: { remoteAddress: '203.0.113.7', certificate: 'MIIBdevcert' } }, 'nested');`);
    expect(r.status).toBe(0);
    const lines = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ client: 'dev-1', ip: '[redacted]', peer: '[redacted]', serial: '[redacted]', subject: '[redacted]', phase: 'masked-input', clients: 3 });
    expect(lines[1]).toMatchObject({ conn: { remoteAddress: '[redacted]', certificate: '[redacted]' } });
    expect(r.stderr).not.toMatch(/203\.0\.113\.7|0a1b2c3d4e5f|MIIBdevcert/);
  });

  test('a crash reports its code and message only (no stack, no object dump) and exits 70', () => {
    const r = run(`installCrashHandler(createLogger('t'));
      const e = new Error('the store could not be opened');
      e.code = 'decryption-failed';
      e.detail = { address: c.address, transcript: c.transcript, key: c.key };
      setTimeout(() => { throw e; }, 0);`);
    expect(r.status).toBe(70);
    const line = JSON.parse(r.stderr.trim().split('\n').at(-1)!) as Record<string, unknown>;
    expect(line).toMatchObject({ level: 60, kind: 'uncaught-exception', code: 'decryption-failed', error: { type: 'Error', message: 'the store could not be opened' }, msg: 'crashed' });
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/); // no stack frames
    expect(scanBytes(Buffer.from(r.stderr), encodingsOf(c))).toEqual([]);
  });

  test('the scan would see a leak: an unredacted field is found', () => {
    const r = run(`const log = createLogger('t'); log.info({ note: c.transcript, where: String(c.lat) }, 'leak on purpose');`);
    const found = scanBytes(Buffer.from(r.stderr), encodingsOf(c)).flatMap((w) => w.split(' | '));
    expect(found.some((w) => w.startsWith('transcript'))).toBe(true);
    expect(found.some((w) => w.startsWith('lat'))).toBe(true);
  });
});
