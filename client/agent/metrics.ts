/**
 * A client's Prometheus metrics (`aegis client run --metrics HOST:PORT`, loopback only): the
 * time-based key rotations and key ages (shared/metrics/key-rotation.ts, as on the coordinator),
 * heartbeats by outcome, and the process's own metrics. No label names a client, a round or an
 * address.
 *
 * | metric                         | type    | labels      |
 * |--------------------------------|---------|-------------|
 * | `aegis_key_rotations_total`    | counter | key, reason |
 * | `aegis_key_age_seconds`        | gauge   | key         |
 * | `aegis_heartbeats_total`       | counter | outcome (`ok`, `refused`) |
 */
import { collectDefaultMetrics, Counter, Registry } from 'prom-client';
import { rotationMetrics, type RotatedKeyName, type RotationReason } from '../../shared/metrics/key-rotation.js';
import type { MetricsSource } from '../../shared/metrics/serve.js';

export class ClientMetrics implements MetricsSource {
  readonly registry = new Registry();
  private readonly rotation = rotationMetrics([this.registry]);
  private readonly heartbeats = new Counter({ name: 'aegis_heartbeats_total', help: 'Heartbeats sent, by outcome.', labelNames: ['outcome'] as const, registers: [this.registry] });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    for (const outcome of ['ok', 'refused']) this.heartbeats.inc({ outcome }, 0);
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'aegis_' });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  keyRotatedBy(key: RotatedKeyName, reason: RotationReason): void {
    this.rotation.rotated(key, reason);
  }

  keyAgeSeconds(key: RotatedKeyName, seconds: number): void {
    this.rotation.age(key, seconds);
  }

  heartbeat(ok: boolean): void {
    this.heartbeats.inc({ outcome: ok ? 'ok' : 'refused' });
  }
}
