/** coordinator/service/upload-gate.ts: at most `slots` uploads admitted at once, in order. */
import { describe, expect, test } from '@jest/globals';
import { UploadGate } from '../../coordinator/service/upload-gate.js';

const never = (): void => undefined;

describe('upload gate', () => {
  test('grants up to its slots, queues the rest in order, and admits the next on each release', async () => {
    const g = new UploadGate(2);
    const granted: string[] = [];
    const ask = (id: string) => g.acquire(id, never).then(() => granted.push(id));
    await Promise.all([ask('a'), ask('b')]);
    const c = ask('c');
    const d = ask('d');
    await new Promise((r) => setTimeout(r, 10));
    expect(granted).toEqual(['a', 'b']);
    g.release('a');
    await c;
    expect(granted).toEqual(['a', 'b', 'c']);
    expect(g.inUse).toBe(2);
    g.release('b');
    await d;
    expect(g.peak).toBe(2);
  });

  test('a holder asking again is not counted twice; a waiter that gives up is skipped', async () => {
    const g = new UploadGate(1);
    await g.acquire('a', never);
    await g.acquire('a', never);
    expect(g.inUse).toBe(1);
    let cancel!: () => void;
    let bGranted = false;
    void g.acquire('b', (cb) => (cancel = cb)).then(() => (bGranted = true));
    const c = g.acquire('c', never);
    cancel();
    g.release('a');
    await c;
    expect(bGranted).toBe(false);
    expect(g.inUse).toBe(1);
  });

  test('a lease that runs out frees the slot; open() lets every waiter through', async () => {
    const g = new UploadGate(1, 30);
    await g.acquire('idle', never);
    await g.acquire('next', never); // granted once the idle holder's lease ran out
    expect(g.inUse).toBe(1);
    const w = [g.acquire('x', never), g.acquire('y', never)];
    g.open();
    await Promise.all(w);
    expect(g.inUse).toBe(0);
  });

  test('slots follow the memory budget: 96 MiB admits 8 vectors of 10^6 words and 80 of 10^5', () => {
    expect(UploadGate.forDim(1_000_000, 96 * 1024 * 1024).slots).toBe(8);
    expect(UploadGate.forDim(100_000, 96 * 1024 * 1024).slots).toBe(83);
    expect(UploadGate.forDim(10_000_000, 1).slots).toBe(1);
  });
});
