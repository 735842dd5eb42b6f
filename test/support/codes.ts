/** Test helpers shared by the suites. */
import { isAegisError } from '../../shared/errors.js';

/** The AegisError code `fn` throws, undefined when it returns, a marker for any other throw. */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    return isAegisError(e) ? e.code : `unexpected: ${String(e)}`;
  }
}

/** The AegisError code a promise rejects with, undefined when it resolves. */
export async function codeOfAsync(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return isAegisError(e) ? e.code : `unexpected: ${String(e)}`;
  }
}

/**
 * The small-order X25519 u-coordinates (libsodium's list), written out here independently of
 * shared/crypto/x25519.ts: 0, 1, the two points of order 8, and p - 1, p, p + 1.
 */
export const SMALL_ORDER_X25519_HEX = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
] as const;
