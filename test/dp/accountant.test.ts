/**
 * The DDG accountant (shared/dp/accountant.ts): the RDP → (ε, δ) conversion against values
 * published in TF Privacy / dp_accounting's tests, the Gaussian baseline against its exact
 * (optimal) privacy curve, and the distributed discrete Gaussian against the continuous
 * Gaussian's ρ = Δ²/(2σ²), which it may never beat.
 */
import { describe, expect, test } from '@jest/globals';
import {
  accountDdg,
  accountDdgSampled,
  gaussianEpsilonSampled,
  poissonSampledRdp,
  ddgRdp,
  ddgRho,
  ddgTau,
  epsilonFromRdp,
  epsilonFromRdpOrders,
  epsilonFromZcdp,
  gaussianEpsilon,
  gaussianRdp,
  roundedNormBound2,
  type DdgRound,
} from '../../shared/dp/accountant.js';

/** erfc with relative error < 1.2e-7 (Numerical Recipes' erfcc, Chebyshev fit). */
function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? r : 2 - r;
}

/** The exact δ(ε) of the Gaussian mechanism with μ = Δ/σ (Balle and Wang 2018, Theorem 8). */
function gaussianDeltaExact(mu: number, eps: number): number {
  const phi = (x: number) => erfc(-x / Math.SQRT2) / 2;
  return phi(-eps / mu + mu / 2) - Math.exp(eps) * phi(-eps / mu - mu / 2);
}

describe('RDP → (ε, δ) conversion', () => {
  test('dp_accounting test_compute_epsilon_delta_pure_dp: RDP 1.1 at orders 2..32, δ = 1e-5 → ε = 1.32783806176 at order 32', () => {
    const orders = Array.from({ length: 31 }, (_, i) => i + 2);
    const r = epsilonFromRdpOrders(orders, orders.map(() => 1.1), 1e-5);
    expect(r.epsilon).toBeCloseTo(1.32783806176, 9);
    expect(r.order).toBe(32);
  });

  test('dp_accounting test_compute_epsilon_delta_gaussian: noise multiplier 4.530877117 is (1, 1e-6)-DP', () => {
    // Published on the order grid 1.000..99.999; the continuous search may only do as well or better.
    const r = epsilonFromRdp((a) => gaussianRdp(4.530877117, a), 1e-6);
    expect(r.epsilon).toBeCloseTo(1, 6);
    expect(r.epsilon).toBeLessThanOrEqual(1 + 1e-7);
  });

  test('the Gaussian ε from RDP is never below the exact optimal one (the conversion is an upper bound) and not far above', () => {
    for (const [z, rounds, delta] of [[1, 1, 1e-5], [0.8, 10, 1e-6], [2, 100, 1e-5], [5, 1000, 1e-8]] as const) {
      const eps = gaussianEpsilon(z, rounds, delta);
      const mu = Math.sqrt(rounds) / z; // R rounds of the Gaussian = one with Δ/σ = √R/z
      expect(gaussianDeltaExact(mu, eps)).toBeLessThanOrEqual(delta * (1 + 1e-4));
      expect(gaussianDeltaExact(mu, eps * 0.85)).toBeGreaterThan(delta); // within 15% of optimal
    }
  });

  test('zCDP conversion beats the textbook ρ + 2√(ρ ln(1/δ))', () => {
    for (const rho of [0.01, 0.5, 3]) {
      const e = epsilonFromZcdp(rho, 1e-6);
      expect(e).toBeLessThanOrEqual(rho + 2 * Math.sqrt(rho * Math.log(1e6)));
      expect(e).toBeGreaterThan(rho);
    }
  });

  test('δ outside (0, 1) and orders <= 1 are refused', () => {
    expect(() => epsilonFromRdp((a) => a, 0)).toThrow(/δ/);
    expect(() => epsilonFromRdp((a) => a, 1)).toThrow(/δ/);
    expect(() => epsilonFromRdpOrders([1], [1], 1e-5)).toThrow(/> 1/);
  });
});

describe('τ of KLS21 Theorem 1', () => {
  test('matches its definition 10·Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)) by hand', () => {
    expect(ddgTau(1, 0.25)).toBe(0); // one client: its noise is one discrete Gaussian
    expect(ddgTau(2, 0.25)).toBeCloseTo(10 * Math.exp(-(Math.PI ** 2) * 0.25), 12);
    expect(ddgTau(3, 1)).toBeCloseTo(10 * (Math.exp(-(Math.PI ** 2)) + Math.exp((-4 * Math.PI ** 2) / 3)), 15);
  });

  test('grows with the number of clients and vanishes as σ grows', () => {
    expect(ddgTau(100, 0.3)).toBeGreaterThan(ddgTau(10, 0.3));
    expect(ddgTau(100, 0.3)).toBeGreaterThan(ddgTau(100, 0.5));
    expect(ddgTau(1e5, 100)).toBe(0);
  });
});

describe('distributed discrete Gaussian vs the continuous Gaussian', () => {
  const settings: [string, DdgRound][] = [
    ['large σ (τ negligible)', { sigma2: 400, clients: 100, dim: 1024, normBound2: 40000n }],
    ['σ = 1/2, many clients (τ dominates)', { sigma2: 0.25, clients: 1000, dim: 65536, normBound2: 30000n }],
    ['σ = 0.8, a few clients', { sigma2: 0.64, clients: 10, dim: 4096, normBound2: 9000n }],
  ];

  test.each(settings)('%s: ρ and every RDP order are at least the Gaussian ρ = Δ²/(2nσ²), and ε at least the Gaussian ε', (_name, r) => {
    const gaussRho = Number(r.normBound2) / (2 * r.clients * r.sigma2);
    expect(ddgRho(r)).toBeGreaterThanOrEqual(gaussRho);
    for (const a of [1.5, 2, 8, 64]) expect(ddgRdp(r, a)).toBeGreaterThanOrEqual(a * gaussRho);
    const z = Math.sqrt((r.clients * r.sigma2) / Number(r.normBound2)); // the Gaussian with the same Δ and total σ
    for (const rounds of [1, 50]) expect(accountDdg(r, rounds, 1e-5).epsilon).toBeGreaterThanOrEqual(gaussianEpsilon(z, rounds, 1e-5) * (1 - 1e-12));
  });

  test('with τ = 0 the accountant is exactly the Gaussian one', () => {
    const r: DdgRound = { sigma2: 2500, clients: 1, dim: 100, normBound2: 10000n };
    expect(ddgTau(1, 2500)).toBe(0);
    const z = Math.sqrt(2500 / 10000);
    expect(accountDdg(r, 7, 1e-6).epsilon).toBeCloseTo(gaussianEpsilon(z, 7, 1e-6), 6);
    expect(ddgRho(r)).toBeCloseTo(1 / (2 * z * z), 6);
  });

  test('ρ adds up over rounds, and ε grows with them', () => {
    const r = settings[2]![1];
    const one = accountDdg(r, 1, 1e-5);
    const ten = accountDdg(r, 10, 1e-5);
    expect(ten.rho).toBeCloseTo(10 * one.rho, 10);
    expect(ten.epsilon).toBeGreaterThan(one.epsilon);
    expect(ten.epsilon).toBeCloseTo(epsilonFromRdp((a) => 10 * ddgRdp(r, a), 1e-5).epsilon, 9);
  });

  test('with τD large the min picks a form where τ is scaled by the sensitivity (here the Δ₁ one), not the additive τD', () => {
    const r: DdgRound = { sigma2: 0.36, clients: 10, dim: 4096, normBound2: 2000n };
    const tau = ddgTau(r.clients, r.sigma2);
    const l2 = Math.sqrt(Number(r.normBound2) / (r.clients * r.sigma2));
    expect(tau * r.dim).toBeGreaterThan(100);
    expect(ddgRho(r)).toBeLessThan((l2 * l2) / 2 + tau * r.dim);
    // Δ₂ = √2000 < √D, so Δ₁ = Δ₂² (integer vectors): l₁ = 2000 / (√n σ).
    const l1 = 2000 / Math.sqrt(r.clients * r.sigma2);
    const viaL1 = (l2 * l2 + 2 * l1 * tau + tau * tau * r.dim) / 2;
    expect(viaL1).toBeLessThan((l2 + tau * Math.sqrt(r.dim)) ** 2 / 2);
    expect(ddgRho(r)).toBeCloseTo(viaL1, 9);
  });

  test('σ below 1/2 (outside KLS21 Theorem 1) is refused', () => {
    expect(() => ddgRho({ sigma2: 0.2, clients: 10, dim: 16, normBound2: 100n })).toThrow(/1\/4/);
  });
});

describe('the rounded norm bound (KLS21 Theorem 1, eq. 2)', () => {
  test('is min{(c + √D)², c² + D/4 + √(2 ln(1/β))(c + √D/2)}, floored to an integer', () => {
    expect(roundedNormBound2(100, 1024, 0)).toBe(BigInt(Math.floor((100 + 32) ** 2)));
    const b = Math.exp(-0.5);
    expect(roundedNormBound2(100, 1024, b)).toBe(BigInt(Math.floor(100 ** 2 + 256 + 1 * (100 + 16))));
    expect(roundedNormBound2(1, 1024, b)).toBe(BigInt(Math.floor(Math.min(33 ** 2, 1 + 256 + 17))));
  });
});

describe('opt-in accounting under honest Poisson sampling (Zhu and Wang 2019, Theorem 6)', () => {
  /** The sampled Gaussian mechanism's exact RDP at integer α (Mironov, Talwar and Zhang 2019), written out independently. */
  function sgmLogA(q: number, z: number, alpha: number): number {
    const terms: number[] = [];
    let logBinom = 0;
    for (let k = 0; k <= alpha; k++) {
      if (k > 0) logBinom += Math.log(alpha - k + 1) - Math.log(k);
      terms.push(logBinom + (alpha - k) * Math.log1p(-q) + k * Math.log(q) + (k * k - k) / (2 * z * z));
    }
    const m = Math.max(...terms);
    return m + Math.log(terms.reduce((acc, t) => acc + Math.exp(t - m), 0));
  }

  test('the independent sampled-Gaussian formula reproduces TF Privacy test_compute_rdp values (q 0.1, z 2, 10 steps, α 5 → 0.07737; q 0.01, z 2.5, 50 steps, α 5/50 → 0.00218075/0.023846)', () => {
    expect(10 * (sgmLogA(0.1, 2, 5) / 4)).toBeCloseTo(0.07737, 5);
    expect(50 * (sgmLogA(0.01, 2.5, 5) / 4)).toBeCloseTo(0.00218075, 6);
    expect(50 * (sgmLogA(0.01, 2.5, 50) / 49)).toBeCloseTo(0.023846, 5);
  });

  test('on the Gaussian the general bound lies between the exact sampled-Gaussian RDP and the same sum with its j >= 3 terms tripled, and never above the unsampled RDP', () => {
    for (const [q, z] of [
      [0.1, 2],
      [0.01, 2.5],
      [0.3, 0.8],
    ] as const) {
      for (const alpha of [2, 3, 5, 16, 64]) {
        const bound = poissonSampledRdp((a) => gaussianRdp(z, a), q, alpha);
        const exact = Math.min(sgmLogA(q, z, alpha) / (alpha - 1), gaussianRdp(z, alpha));
        expect(bound).toBeGreaterThanOrEqual(exact * (1 - 1e-12));
        expect(bound * (alpha - 1)).toBeLessThanOrEqual(Math.log(3) + sgmLogA(q, z, alpha) + 1e-12);
        expect(bound).toBeLessThanOrEqual(gaussianRdp(z, alpha));
      }
    }
    expect(poissonSampledRdp((a) => gaussianRdp(1, a), 1, 7)).toBe(gaussianRdp(1, 7));
  });

  test('sampling lowers the DDG ε, more the rarer a client is sampled, and never below the sampled continuous Gaussian', () => {
    const r: DdgRound = { sigma2: 400, clients: 50, dim: 1024, normBound2: 40_000n };
    const worst = accountDdg(r, 100, 1e-5).epsilon;
    const rates = [1, 0.5, 0.1, 0.01];
    const eps = rates.map((q) => accountDdgSampled(r, 100, 1e-5, q).epsilon);
    expect(eps[0]).toBeCloseTo(worst, 9);
    for (let i = 1; i < eps.length; i++) expect(eps[i]!).toBeLessThan(eps[i - 1]!);
    expect(eps[3]!).toBeLessThan(worst / 10);
    const z = Math.sqrt(r.clients * r.sigma2) / Math.sqrt(Number(r.normBound2));
    rates.forEach((q, i) => expect(eps[i]!).toBeGreaterThanOrEqual(gaussianEpsilonSampled(z, 100, 1e-5, q) * (1 - 1e-9)));
  });

  test('a rate outside (0, 1] and a non-integer order are refused', () => {
    const r: DdgRound = { sigma2: 400, clients: 50, dim: 1024, normBound2: 40_000n };
    expect(() => accountDdgSampled(r, 1, 1e-5, 0)).toThrow(/sampling rate/);
    expect(() => accountDdgSampled(r, 1, 1e-5, 1.5)).toThrow(/sampling rate/);
    expect(() => poissonSampledRdp((a) => a, 0.1, 2.5)).toThrow(/integer Rényi order/);
  });
});
