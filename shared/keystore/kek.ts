/**
 * KEK providers with a key lifecycle (DESIGN.md §5 "Rotation"; the states follow Tink's keyset
 * model): every KEK version is in exactly one state.
 *
 *   primary    new DEKs are wrapped under it; it unwraps. Exactly one version is primary.
 *   enabled    it unwraps (and wraps when a version is named explicitly, as a re-wrap may do).
 *   disabled   it neither wraps nor unwraps; the key material is still held, so `enable` undoes it.
 *   destroyed  the key material is gone for good; only the record of the version may remain.
 *
 * Transitions: addVersion() → enabled; setPrimary(v) (v enabled) → primary, the old primary
 * becomes enabled; disable(v) (v not primary) → disabled; enable(v) (v disabled) → enabled;
 * destroy(v) (v not primary) → destroyed. Whether anything still references a version is the
 * caller's question (`aegis keys destroy` asks the store); the provider only keeps the primary
 * from being disabled or destroyed.
 *
 * Errors: an unwrap under a disabled, destroyed or unknown version is the one
 * `decryption-failed` error (as for any bad wrapped DEK); a lifecycle call on an unknown version
 * is `not-found`; a forbidden transition is `failed-precondition`; a provider that cannot be
 * reached (no Secret Service, no PKCS#11 module or token) is `unavailable` with a message that
 * says what is missing and names the fallback.
 */
import type { KekProvider } from './envelope.js';

export type KekKind = KekProvider['kind'];
export const KEK_KINDS: readonly KekKind[] = Object.freeze(['passphrase', 'os', 'pkcs11'] as const);

export type KekVersionState = 'primary' | 'enabled' | 'disabled' | 'destroyed';

export interface KekVersionInfo {
  version: number;
  state: KekVersionState;
  /** When the version was created, ISO 8601 (day precision where the provider keeps no more). */
  createdAt: string;
}

export interface ManagedKek extends KekProvider {
  /** Every version the provider knows, ascending by version (destroyed ones where it remembers them). */
  versions(): Promise<KekVersionInfo[]>;
  /** Creates version (highest known + 1) in state `enabled` and returns it. */
  addVersion(): Promise<number>;
  /** Makes an enabled version primary; the previous primary becomes enabled. */
  setPrimary(version: number): Promise<void>;
  /** addVersion() then setPrimary() on it; returns the new primary version. */
  rotate(): Promise<number>;
  disable(version: number): Promise<void>;
  enable(version: number): Promise<void>;
  /** Erases a non-primary version's key material; irreversible. */
  destroy(version: number): Promise<void>;
  /** Releases the provider (zeroes keys held in memory, closes sessions); unusable afterwards. */
  close(): void | Promise<void>;
}
