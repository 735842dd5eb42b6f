/**
 * Key objects from raw private keys (shared/crypto/okp.ts): right public keys, and no use of
 * generateKeyPairSync anywhere (on Node 20 it can deadlock a thread under GC — see okp.ts).
 */
import { describe, expect, test } from '@jest/globals';
import { diffieHellman } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ed25519 as nobleEd, x25519 as nobleX } from '@noble/curves/ed25519.js';
import { ed25519KeyPair, ed25519Sign, ed25519Verify } from '../../shared/crypto/ed25519.js';
import { okpPrivateKeyObject, okpPublicKey } from '../../shared/crypto/okp.js';
import { x25519, x25519KeyPair, x25519PublicKeyObject } from '../../shared/crypto/x25519.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

function* sources(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* sources(p);
    else if (p.endsWith('.ts')) yield p;
  }
}

describe('OKP key objects from raw private keys', () => {
  test('an X25519 key pair has the public key @noble/curves computes from its private key', () => {
    for (let i = 0; i < 20; i++) {
      const kp = x25519KeyPair();
      expect(Buffer.from(kp.publicKey)).toEqual(Buffer.from(nobleX.getPublicKey(kp.privateKey)));
      expect(Buffer.from(okpPublicKey(kp.privateKeyObject))).toEqual(Buffer.from(kp.publicKey));
    }
  });

  test('an Ed25519 key pair has the public key @noble/curves computes from its seed, and signs for it', () => {
    const msg = new TextEncoder().encode('aegis');
    for (let i = 0; i < 20; i++) {
      const kp = ed25519KeyPair();
      expect(Buffer.from(kp.publicKey)).toEqual(Buffer.from(nobleEd.getPublicKey(kp.privateKey)));
      expect(ed25519Verify(kp.publicKey, msg, ed25519Sign(kp.privateKey, msg))).toBe(true);
    }
  });

  test('the placeholder public half given at import never leaks into agreements: both sides agree', () => {
    const a = x25519KeyPair();
    const b = x25519KeyPair();
    const ab = x25519(a.privateKeyObject, b.publicKey);
    const ba = diffieHellman({ privateKey: okpPrivateKeyObject('X25519', b.privateKey), publicKey: x25519PublicKeyObject(a.publicKey) });
    expect(Buffer.from(ab)).toEqual(ba);
  });

  test('no source file makes keys with generateKeyPairSync or generateKeyPair', () => {
    const offenders: string[] = [];
    for (const dir of ['bin', 'shared', 'client', 'coordinator', 'bench']) {
      for (const file of sources(join(root, dir))) {
        const code = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
        if (/\bgenerateKeyPair(Sync)?\s*\(/.test(code)) offenders.push(file.slice(root.length));
      }
    }
    expect(offenders).toEqual([]);
  });
});
