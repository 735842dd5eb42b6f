/**
 * The coordinator's vault (secrets.vault.json) as a key holder (rotation.ts): what every rotation
 * moves, plus what a leak rotation (`aegis keys rotate --emergency`) replaces in it.
 *
 * Replaced (new random values, sealed under the new primary KEK version):
 *   token-seed  the round-token signing key: version + 1, and no replaced key verifies anything
 *               any more (policy.ts `rotateTokenKey` with retainOld false); tokens signed before
 *               are refused and clients fetch new ones.
 *   queue-key   the key sealing what coordinator processes pass each other through Redis. Replaced
 *               with the coordinator stopped: processes read it at start, and the unmask parts or
 *               round state still in Redis under the old key no longer open (those rounds abort
 *               and run again).
 * Not replaced, with how to replace it:
 *   the CA      clients pin it (ca.pem): a new CA means a new data dir and every client re-enrolled.
 *   operator    the built-in operator credential: `aegis operators reissue admin` (needs the CA
 *               and the running coordinator, which revokes the old certificate).
 *   dashboard   nothing is stored: login tokens and sessions live in the coordinator's memory
 *               only; restarting it ends them all.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { ManagedKek } from './kek.js';
import { rotateTokenKey, VAULT_FILE_NAME } from './policy.js';
import type { KeyHolder, SecretReplacement } from './rotation.js';
import { SealedVault } from './vault.js';

export const TOKEN_SEED = 'token-seed';
export const QUEUE_KEY = 'queue-key';

/** What a leak rotation cannot replace in a coordinator vault with these entries, and how to. */
export function notReplaceable(names: readonly string[]): SecretReplacement['notReplaced'] {
  const out: SecretReplacement['notReplaced'] = [];
  if (names.includes('ca-seed')) {
    out.push({ secret: 'ca', how: 'clients pin the CA: start the coordinator on a new data dir (a new CA) and re-enroll every client against its new ca.pem with a new invite' });
  } else if (names.includes('ca-certificate')) {
    out.push({ secret: 'ca', how: 'the CA is offline (not on this host): replace it with aegis ca init if its key may have leaked, then re-enroll every client' });
  }
  if (names.includes('operator-seed')) out.push({ secret: 'operator', how: 'with the coordinator running: aegis operators reissue admin (the old certificate is revoked)' });
  out.push({ secret: 'dashboard', how: 'nothing is stored: login tokens and sessions live in memory only; restarting the coordinator ends them all' });
  return out;
}

/** Opens DIR's vault as a holder that also replaces the token and queue keys in a leak rotation. */
export async function coordinatorVaultHolder(dir: string): Promise<KeyHolder> {
  const path = join(dir, VAULT_FILE_NAME);
  const vault = await SealedVault.open(path);
  return {
    name: vault.name,
    references: () => vault.references(),
    rotateSome: (kek, target, emergency) => vault.rotateSome(kek, target, emergency),
    async replaceSecrets(kek: ManagedKek): Promise<SecretReplacement> {
      // Each replacement reads the file afresh (rotateTokenKey writes it through its own copy).
      const names = (await SealedVault.open(path)).names();
      const replaced: SecretReplacement['replaced'] = [];
      if (names.includes(QUEUE_KEY)) {
        const key = new Uint8Array(randomBytes(32));
        try {
          await (await SealedVault.open(path)).put(kek, QUEUE_KEY, key);
        } finally {
          key.fill(0);
        }
        replaced.push({ secret: 'queue-key', detail: 'new Redis payload key; restart every coordinator process (work queued under the old key is dropped: its rounds abort and run again)' });
      }
      if (names.includes(TOKEN_SEED)) {
        const r = await rotateTokenKey(dir, kek, Date.now, { retainOld: false });
        r.seed.fill(0);
        replaced.push({ secret: 'token-key', detail: `token signing key v${r.previousVersion} -> v${r.version}; tokens signed by older keys are refused` });
      }
      return { replaced, notReplaced: notReplaceable(names) };
    },
  };
}
