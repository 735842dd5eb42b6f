/**
 * The time-based key rotation metrics (shared/keystore/policy.ts), the same on the coordinator
 * and on a client: `aegis_key_rotations_total{key,reason}` and `aegis_key_age_seconds{key}`.
 * `key` is a `RotatedKeyName`, `reason` a `RotationReason`; anything else is reported as `other`.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { isDuration, label } from './labels.js';

/** The keys the time-based rotation policy rotates (the `key` label). */
export const RotatedKeyName = { Kek: 'kek', Token: 'token', Identity: 'identity', Operator: 'operator' } as const;
export type RotatedKeyName = (typeof RotatedKeyName)[keyof typeof RotatedKeyName];

/** Why a key was rotated (the `reason` label). */
export type RotationReason = 'due' | 'emergency';

const ROTATED_KEYS = new Set<string>(Object.values(RotatedKeyName));
const ROTATION_REASONS = new Set<string>(['due', 'emergency'] satisfies RotationReason[]);

/** The `key` label for `key`: a `RotatedKeyName`, or `other`. */
export const rotatedKeyLabel = (key: unknown): string => label(ROTATED_KEYS, key);

/** The `reason` label for `reason`: a `RotationReason`, or `other`. */
export const rotationReasonLabel = (reason: unknown): string => label(ROTATION_REASONS, reason);

/** The rotation counter and key-age gauge, registered in `registers` (a client's registry). */
export function rotationMetrics(registers: Registry[]): { rotated(key: RotatedKeyName, reason: RotationReason): void; age(key: RotatedKeyName, seconds: number): void } {
  const rotations = new Counter({ name: 'aegis_key_rotations_total', help: 'Key rotations by key and reason (time-based policy).', labelNames: ['key', 'reason'] as const, registers });
  const age = new Gauge({ name: 'aegis_key_age_seconds', help: "Age of each key's current version at the last rotation check.", labelNames: ['key'] as const, registers });
  return {
    rotated: (key, reason) => rotations.inc({ key: rotatedKeyLabel(key), reason: rotationReasonLabel(reason) }),
    age: (key, seconds) => {
      if (isDuration(seconds)) age.set({ key: rotatedKeyLabel(key) }, seconds);
    },
  };
}
