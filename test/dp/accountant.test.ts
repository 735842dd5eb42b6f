/**
 * The DDG accountant (shared/dp/accountant.ts): the RDP → (ε, δ) conversion against values
 * published in TF Privacy / dp_accounting's tests, the Gaussian baseline against its exact
 * (optimal) privacy curve, and the distributed discrete Gaussian against the continuous
 * Gaussian's ρ = Δ²/(2σ²), which it may never beat.
 */
import { describe, expect, test } from '@jest/globals';
import {
  accountDdg,
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
