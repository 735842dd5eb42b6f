/** Test-side byte helpers, written independently of shared/bytes.ts so tests check it rather than reuse it. */
import { isAegisError } from '../../shared/errors.js';

/** u32 big-endian length + bytes per item. */
export function lp(...items: (string | Uint8Array)[]): Buffer {
  return Buffer.concat(
    items.map((it) => {
      const b = typeof it === 'string' ? Buffer.from(it, 'utf8') : Buffer.from(it);
      const n = Buffer.alloc(4);
      n.writeUInt32BE(b.length);
      return Buffer.concat([n, b]);
    }),
  );
}

export const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

/** The code and message a promise rejects with ('no error' if it resolves). */
export async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (isAegisError(e)) return { code: e.code, message: e.message };
    return { message: `unexpected: ${String(e)}` };
  }
  return { message: 'no error' };
}
