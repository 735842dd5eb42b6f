/**
 * `npm run bench -- client [--json] [--quick]`: what one SecAgg+ client spends per round, against
 * the crypto it cannot avoid, both measured in this run and in this thread.
 *
 * The client: a real in-process round (`simulate`, no worker threads, so each client's timed
 * sections are its own CPU on this thread) at n = 500, m = 10^5, k = 19 (t = 10), no dropout; its
 * figure is the mean per-client compute time over the round (`timings_ms.client_mean`: every
 * state-machine step, quantizing the input included; the synthetic update itself, which stands
 * for what training hands the client, is made outside the timing).
 *
 * The baseline — the unavoidable crypto of one such client, with the same primitives the client
 * uses (shared/crypto): 2k X25519 agreements (share keys and mask keys with k neighbours), k + t
 * Ed25519 verifications (the neighbours' key advertisements, t consistency signatures), 2
 * Ed25519 signatures (its advertisement and its consistency signature), k + 1 keystreams of
 * (m + 1)·4 bytes of AES-256-CTR, each under a key of its own (the self mask and k pairwise
 * masks), and the Shamir split of its two secrets among its k neighbours. Nothing else the client
 * does is in it.
 *
 * The two alternate (baseline, round, baseline, …) and the medians are compared: client /
 * baseline is the figure of merit (target ≤ 1.5). Each repeat's baseline is the median of
 * BASELINE_RUNS runs (one run is a few milliseconds, so one slow moment of the machine would
 * otherwise be the baseline), and each repeat's own ratio is kept: their spread shows how far
 * the machine's noise reaches, beside the median the verdict is taken from. `--quick`: n = 100,
 * m = 10^4, fewer repeats.
 */
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { ed25519KeyPair, ed25519PrivateKeyObject, ed25519Sign, ed25519Verify } from '../shared/crypto/ed25519.js';
import { keystreamOnly } from '../shared/crypto/prg.js';
import { split } from '../shared/crypto/shamir.js';
import { x25519, x25519KeyPair } from '../shared/crypto/x25519.js';
import { simulate } from './sim/simulate.js';
import { fmt, median, table } from './table.js';

/** Milliseconds of each part of one client's unavoidable crypto, and their sum. */
export interface CryptoBaseline {
  x25519_ms: number;
  verify_ms: number;
  sign_ms: number;
  keystream_ms: number;
  split_ms: number;
  total_ms: number;
}

/** Runs one client's unavoidable crypto once (k neighbours, threshold t, m values) and times its parts. */
export function unavoidableCrypto(k: number, t: number, m: number): CryptoBaseline {
  // Inputs made outside the timed parts: the peers' keys and signed messages.
  const mine = { c: x25519KeyPair(), s: x25519KeyPair() };
  const peers = Array.from({ length: k }, () => ({ c: x25519KeyPair().publicKey, s: x25519KeyPair().publicKey }));
  const signers = Array.from({ length: k + t }, (_, i) => {
    const kp = ed25519KeyPair();
    const msg = new Uint8Array(randomBytes(i < k ? 200 : 64));
    return { pk: kp.publicKey, msg, sig: ed25519Sign(kp.privateKey, msg) };
  });
  const identity = ed25519PrivateKeyObject(ed25519KeyPair().privateKey);
  const toSign = [new Uint8Array(randomBytes(200)), new Uint8Array(randomBytes(64))];
  const secrets = [new Uint8Array(randomBytes(32)), new Uint8Array(randomBytes(32))];
  const xs = Array.from({ length: k }, (_, i) => i + 1);
  const keys = Array.from({ length: k + 1 }, () => new Uint8Array(randomBytes(32)));

  const time = (f: () => void): number => {
    const t0 = performance.now();
    f();
    return performance.now() - t0;
  };
  const x25519Ms = time(() => {
    for (const p of peers) {
      x25519(mine.c.privateKeyObject, p.c);
      x25519(mine.s.privateKeyObject, p.s);
    }
  });
  const verifyMs = time(() => {
    for (const s of signers) if (!ed25519Verify(s.pk, s.msg, s.sig)) throw new Error('baseline signature does not verify');
  });
  const signMs = time(() => {
    for (const msg of toSign) ed25519Sign(identity, msg);
  });
  const keystreamMs = time(() => {
    for (const key of keys) keystreamOnly(key, (m + 1) * 4);
  });
  const splitMs = time(() => split(secrets, t, xs));
  return { x25519_ms: x25519Ms, verify_ms: verifyMs, sign_ms: signMs, keystream_ms: keystreamMs, split_ms: splitMs, total_ms: x25519Ms + verifyMs + signMs + keystreamMs + splitMs };
}

export interface ClientBenchResult {
  bench: 'client';
  cores: number;
  n: number;
  m: number;
  k: number;
  t: number;
  repeats: number;
  /** Median over repeats of the round's mean per-client compute time, ms. */
  client_ms: number;
  /** Median over repeats of the unavoidable crypto (each repeat: the median of BASELINE_RUNS runs), ms, and its parts. */
  baseline: CryptoBaseline;
  /** client_ms / baseline.total_ms. */
  ratio: number;
  /** Each repeat in the order they ran: its client time, its own baseline and their ratio. */
  runs: { client_ms: number; baseline_ms: number; ratio: number }[];
  target: number;
  met: boolean;
  exact: boolean;
}

/** Runs of the baseline per repeat; the repeat takes their median. */
export const BASELINE_RUNS = 15;

export async function runClientBench(o: { n: number; m: number; k: number; repeats: number }): Promise<ClientBenchResult> {
  const t = Math.floor(o.k / 2) + 1;
  unavoidableCrypto(o.k, t, o.m); // warm-up
  const baselines: CryptoBaseline[] = [];
  const runs: ClientBenchResult['runs'] = [];
  let exact = true;
  for (let r = 0; r < o.repeats; r++) {
    const samples = Array.from({ length: BASELINE_RUNS }, () => unavoidableCrypto(o.k, t, o.m));
    const baseline = samples.sort((a, b) => a.total_ms - b.total_ms)[BASELINE_RUNS >> 1]!;
    baselines.push(baseline);
    const res = await simulate({ clients: o.n, dim: o.m, neighbors: o.k, workers: 0, seed: r + 1 });
    exact &&= res.ok && res.exact;
    runs.push({ client_ms: res.timings_ms.client_mean, baseline_ms: baseline.total_ms, ratio: res.timings_ms.client_mean / baseline.total_ms });
  }
  const part = (key: keyof CryptoBaseline): number => median(baselines.map((b) => b[key]));
  const baseline: CryptoBaseline = { x25519_ms: part('x25519_ms'), verify_ms: part('verify_ms'), sign_ms: part('sign_ms'), keystream_ms: part('keystream_ms'), split_ms: part('split_ms'), total_ms: part('total_ms') };
  const client = median(runs.map((x) => x.client_ms));
  const ratio = client / baseline.total_ms;
  return { bench: 'client', cores: cpus().length, n: o.n, m: o.m, k: o.k, t, repeats: o.repeats, client_ms: client, baseline, ratio, runs, target: 1.5, met: ratio <= 1.5, exact };
}

/** The repeats' own ratios, lowest to highest, and how many of them meet the target. */
function perRepeat(r: ClientBenchResult): string {
  const ratios = r.runs.map((x) => x.ratio);
  return `${fmt(Math.min(...ratios), 2)}-${fmt(Math.max(...ratios), 2)}x (${ratios.filter((x) => x <= r.target).length}/${ratios.length} met)`;
}

export async function benchClient(opts: { json: boolean; quick: boolean }): Promise<void> {
  const o = opts.quick ? { n: 100, m: 10_000, k: 19, repeats: 3 } : { n: 500, m: 100_000, k: 19, repeats: 5 };
  process.stderr.write(`client cost: n=${o.n} m=${o.m} k=${o.k}, ${o.repeats} repeats (baseline and round alternating)\n`);
  const r = await runClientBench(o);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  const b = r.baseline;
  process.stdout.write(
    `One SecAgg+ client per round (n = ${r.n}, m = ${r.m}, k = ${r.k}, t = ${r.t}), in process, one thread; medians of ${r.repeats} alternating repeats. Cores: ${r.cores}.\n\n` +
      `${table(
        ['client ms', 'crypto baseline ms', 'client / baseline', 'per repeat', 'target', 'X25519 ms', 'Ed25519 verify ms', 'sign ms', 'AES-CTR keystream ms', 'Shamir split ms', 'exact'],
        [[fmt(r.client_ms), fmt(b.total_ms), `${fmt(r.ratio, 2)}x`, perRepeat(r), `<= ${r.target}x (${r.met ? 'met' : 'NOT met'})`, fmt(b.x25519_ms, 2), fmt(b.verify_ms, 2), fmt(b.sign_ms, 2), fmt(b.keystream_ms, 2), fmt(b.split_ms, 2), String(r.exact)]],
      )}\n\n` +
      `"crypto baseline": ${2 * r.k} X25519 agreements, ${r.k + r.t} Ed25519 verifications, 2 signatures, ${r.k + 1} AES-256-CTR keystreams under keys of their own (${fmt(((r.k + 1) * (r.m + 1) * 4) / 1e6, 1)} MB) and the Shamir split of 2 secrets among ${r.k} — one client's unavoidable crypto, with the primitives the client uses, measured in this run (each repeat: the median of ${BASELINE_RUNS} runs).\n` +
      '"per repeat": each repeat\'s client time over its own baseline, lowest to highest, and how many meet the target; the verdict is the medians\' ratio.\n' +
      '"client ms": the round\'s mean per-client compute time (every state-machine step, quantizing its input included).\n',
  );
}
