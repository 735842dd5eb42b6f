/**
 * The rotation matrix (after Tink's keyset rotation tests), run against any ManagedKek: a key
 * set goes through old primary → new added → new primary → old disabled → old destroyed; at
 * every stage a value is sealed, and every value sealed so far must open exactly when the KEK
 * version it names is still usable (primary or enabled) — no sooner refused, no later accepted.
 */
import { expect } from '@jest/globals';
import { openField, parseSealedHeader, sealField, type FieldContext } from '../../shared/keystore/envelope.js';
import type { KekVersionState, ManagedKek } from '../../shared/keystore/kek.js';
import { codeOfAsync } from './codes.js';

const CTX: FieldContext = { assetUuid: '6a0c1f2e-3b4d-4e5f-8a6b-7c8d9e0f1a2b', fieldName: 'transcript', schemaVersion: 1 };

export interface MatrixRow {
  stage: string;
  states: Record<number, KekVersionState>;
  /** For each value sealed so far (by the stage it was sealed at): opened or not. */
  opens: Record<string, boolean>;
}

/** Runs the matrix on a fresh provider holding only version 1 (primary); returns the rows seen. */
export async function runRotationMatrix(kek: ManagedKek): Promise<MatrixRow[]> {
  const sealed = new Map<string, { ct: Uint8Array; plain: string }>();
  const rows: MatrixRow[] = [];
  const stage = async (name: string, expectSealVersion: number): Promise<void> => {
    const plain = `value sealed at ${name}`;
    const ct = await sealField(kek, CTX, new TextEncoder().encode(plain));
    expect(parseSealedHeader(ct).kekVersion).toBe(expectSealVersion);
    sealed.set(name, { ct, plain });
    const infos = await kek.versions();
    const states: Record<number, KekVersionState> = {};
    for (const i of infos) states[i.version] = i.state;
    const opens: Record<string, boolean> = {};
    for (const [at, { ct: c, plain: p }] of sealed) {
      const v = parseSealedHeader(c).kekVersion;
      const usable = states[v] === 'primary' || states[v] === 'enabled';
      if (usable) {
        expect(new TextDecoder().decode(await openField(kek, CTX, c))).toBe(p);
        opens[at] = true;
      } else {
        expect(await codeOfAsync(openField(kek, CTX, c))).toBe('decryption-failed');
        opens[at] = false;
      }
    }
    rows.push({ stage: name, states, opens });
  };

  expect((await kek.versions()).map((i) => [i.version, i.state])).toEqual([[1, 'primary']]);
  await stage('old primary', 1);
  const v2 = await kek.addVersion();
  expect(v2).toBe(2);
  await stage('new added', 1);
  await kek.setPrimary(2);
  await stage('new primary', 2);
  await kek.disable(1);
  await stage('old disabled', 2);
  await kek.enable(1);
  await stage('old re-enabled', 2);
  await kek.disable(1);
  await kek.destroy(1);
  await stage('old destroyed', 2);
  expect(await codeOfAsync(kek.enable(1))).toBe('failed-precondition');
  expect(await codeOfAsync(kek.disable(2))).toBe('failed-precondition');
  expect(await codeOfAsync(kek.destroy(2))).toBe('failed-precondition');
  expect(await codeOfAsync(kek.disable(99))).toBe('not-found');

  // The expected table, written out: a value opens iff its version (1 for the first two stages,
  // 2 after) is usable at the stage where it is tried.
  const v1Usable: Record<string, boolean> = { 'old primary': true, 'new added': true, 'new primary': true, 'old disabled': false, 'old re-enabled': true, 'old destroyed': false };
  for (const row of rows) {
    for (const [at, opened] of Object.entries(row.opens)) {
      const version = at === 'old primary' || at === 'new added' ? 1 : 2;
      expect([row.stage, at, opened]).toEqual([row.stage, at, version === 1 ? v1Usable[row.stage] : true]);
    }
  }
  return rows;
}
