/**
 * coordinator/auth/crl.ts and the revocation bookkeeping it reads (coordinator/auth/enrollment.ts):
 * a CRL v2 signed by the CA (ecdsa-with-SHA256 for a P-256 CA; an Ed25519 CA's in
 * certificate-keys.test.ts) with one entry per serial, its date and RFC 5280 reason, CRL number and AKI; it verifies under the CA only, and (when openssl is on the machine)
 * OpenSSL reads and verifies it too. Reason codes are a fixed set; registries of older releases
 * (free-text reasons, revocations without details) still load.
 */
import { describe, expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa } from '../../coordinator/auth/ca.js';
import { CRL_REASON_OF, parseCrl, signCrl, verifyCrl } from '../../coordinator/auth/crl.js';
import { parseRevocationReason, REVOCATION_REASONS, Revocations } from '../../coordinator/auth/enrollment.js';
import { Registry } from '../../coordinator/clients/registry.js';
import { codeOf, codeOfAsync } from '../support/codes.js';

const T = Date.UTC(2026, 10, 24, 12, 0, 0);
const DAY = 86_400_000;

describe('signCrl / parseCrl / verifyCrl', () => {
  test('every entry with its date and reason; numbered; verifies under its CA only; OpenSSL agrees', async () => {
    const ca = await createCa({ name: 'Aegis CRL test CA' });
    const entries = [
      { serial: '4a0b', revokedAt: T - DAY, reason: 'lost-device' },
      { serial: '00ff01', revokedAt: T - 2 * DAY, reason: 'key-compromise' },
      { serial: '7', revokedAt: T - 3 * DAY, reason: 'unspecified' },
      { serial: '5c', revokedAt: T - 4 * DAY, reason: 'superseded' },
      { serial: '5d', revokedAt: T - 5 * DAY, reason: 'retired' },
    ];
    const crl = await signCrl(ca, entries, { thisUpdate: T, nextUpdate: T + 7 * DAY, crlNumber: 42 });
    expect(crl.pem).toMatch(/^-----BEGIN X509 CRL-----/);
    const p = await parseCrl(crl.der);
    expect(p).toMatchObject({ thisUpdate: T, nextUpdate: T + 7 * DAY, crlNumber: 42 });
    expect(p.entries).toEqual([
      { serial: '4a0b', revokedAt: T - DAY, crlReason: 'cessationOfOperation' },
      { serial: 'ff01', revokedAt: T - 2 * DAY, crlReason: 'keyCompromise' },
      { serial: '7', revokedAt: T - 3 * DAY, crlReason: undefined },
      { serial: '5c', revokedAt: T - 4 * DAY, crlReason: 'superseded' },
      { serial: '5d', revokedAt: T - 5 * DAY, crlReason: 'cessationOfOperation' },
    ]);
    await expect(verifyCrl(crl.pem, ca)).resolves.toBe(true);
    await expect(verifyCrl(crl.pem, await createCa({ name: 'Aegis CRL test CA' }))).resolves.toBe(false);
    expect(Object.keys(CRL_REASON_OF).sort()).toEqual([...REVOCATION_REASONS].sort());

    if (spawnSync('openssl', ['version']).status !== 0) return;
    const dir = mkdtempSync(join(tmpdir(), 'aegis-crl-'));
    try {
      writeFileSync(join(dir, 'crl.pem'), crl.pem);
      writeFileSync(join(dir, 'ca.pem'), ca.certificatePem);
      const text = spawnSync('openssl', ['crl', '-in', join(dir, 'crl.pem'), '-noout', '-text'], { encoding: 'utf8' });
      expect({ status: text.status, stderr: text.stderr }).toEqual({ status: 0, stderr: '' });
      expect(text.stdout).toMatch(/Version 2/);
      expect(text.stdout).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
      expect(text.stdout).toMatch(/X509v3 CRL Number:\s*\n\s*42/);
      expect(text.stdout).toMatch(/X509v3 Authority Key Identifier/);
      expect(text.stdout).toMatch(/Serial Number: 4A0B\s*\n\s*Revocation Date: [^\n]+\n\s*CRL entry extensions:\s*\n\s*X509v3 CRL Reason Code:\s*\n\s*Cessation Of Operation/);
      expect(text.stdout).toMatch(/Serial Number: FF01[\s\S]*?Key Compromise/);
      const verified = spawnSync('openssl', ['crl', '-in', join(dir, 'crl.pem'), '-CAfile', join(dir, 'ca.pem'), '-noout'], { encoding: 'utf8' });
      expect(`${verified.stdout}${verified.stderr}`).toMatch(/verify OK/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('refuses an unknown reason, a malformed serial, times out of order, a negative number', async () => {
    const ca = await createCa({ name: 'Aegis CRL test CA' });
    const opts = { thisUpdate: T, nextUpdate: T + DAY, crlNumber: 1 };
    await expect(codeOfAsync(signCrl(ca, [{ serial: '01', revokedAt: T, reason: 'lost device, maybe' }], opts))).resolves.toBe('invalid-argument');
    await expect(codeOfAsync(signCrl(ca, [{ serial: 'xyz', revokedAt: T, reason: 'unspecified' }], opts))).resolves.toBe('invalid-argument');
    await expect(codeOfAsync(signCrl(ca, [{ serial: 'ab'.repeat(21), revokedAt: T, reason: 'unspecified' }], opts))).resolves.toBe('invalid-argument');
    await expect(codeOfAsync(signCrl(ca, [], { ...opts, nextUpdate: T }))).resolves.toBe('invalid-argument');
    await expect(codeOfAsync(signCrl(ca, [], { ...opts, crlNumber: -1 }))).resolves.toBe('invalid-argument');
    // An empty CRL is fine.
    expect((await parseCrl((await signCrl(ca, [], opts)).pem)).entries).toEqual([]);
  });
});

describe('revocation reasons and records', () => {
  test('a fixed set of codes (case, spaces and underscores forgiven); anything else names the valid ones', () => {
    expect(parseRevocationReason('lost-device')).toBe('lost-device');
    expect(parseRevocationReason('Lost device')).toBe('lost-device');
    expect(parseRevocationReason('KEY_COMPROMISE')).toBe('key-compromise');
    expect(parseRevocationReason('')).toBe('unspecified');
    expect(codeOf(() => parseRevocationReason('stolen'))).toBe('invalid-argument');
    expect(() => parseRevocationReason('stolen')).toThrow(/valid reasons: unspecified, key-compromise, lost-device, superseded, retired/);
  });

  test('revoked serials keep their first date and reason across JSON; older JSON without them loads', () => {
    const r = new Revocations();
    r.revokeSerial('0A1B', { revokedAt: T, reason: 'lost-device' });
    r.revokeSerial('a1b', { revokedAt: T + 1, reason: 'retired' }); // the same serial: the first stays
    r.revokeSerial('ccc');
    const back = Revocations.fromJSON(JSON.parse(JSON.stringify(r.toJSON())));
    expect(back.entries()).toEqual([{ serial: 'a1b', revokedAt: T, reason: 'lost-device' }, { serial: 'ccc' }]);
    const old = Revocations.fromJSON({ version: 1, clients: ['lost-laptop'], serials: ['abc'] });
    expect(old.isRevoked({ serial: '0abc' })).toBe(true);
    expect(old.entries()).toEqual([{ serial: 'abc' }]);
    expect(codeOf(() => Revocations.fromJSON({ version: 1, clients: [], serials: [], details: [{ serial: 'abc', revokedAt: T, reason: 'lost-device' }] }))).toBe('invalid-argument');
    expect(codeOf(() => Revocations.fromJSON({ version: 1, clients: [], serials: ['abc'], details: [{ serial: 'abc', revokedAt: T, reason: 'stolen' }] }))).toBe('invalid-argument');
  });

  test('a registry of an older release (free-text reason, no last seen) still loads; new fields load too', () => {
    const client = {
      clientId: 'old-1',
      publicKey: 'A'.repeat(43),
      enrolledAt: T,
      serial: '4a0b',
      certificateExpiresAt: T + DAY,
      certificate: 'AAAA',
      revokedAt: T,
      revocationReason: 'laptop stolen from the car, reported by IT',
    };
    const json = { version: 1, clients: [client], invites: { version: 1, invites: [] }, revocations: { version: 1, clients: ['old-1'], serials: ['4a0b'] }, bindings: { version: 1, bindings: [] } };
    expect(Registry.fromJSON(json).clients.get('old-1')!.revocationReason).toBe(client.revocationReason);
    const now = { ...client, revocationReason: 'lost-device', revocationDetail: 'train', lastSeenAt: T - 60_000, previousSerials: [{ serial: '4a0a', expiresAt: T + 1 }] };
    expect(Registry.fromJSON({ ...json, clients: [now] }).clients.get('old-1')).toEqual(now);
    expect(codeOf(() => Registry.fromJSON({ ...json, clients: [{ ...now, lastSeenAt: 'yesterday' }] }))).toBe('invalid-argument');
  });
});
