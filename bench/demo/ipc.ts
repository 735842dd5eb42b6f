/**
 * What the demo's parent process and its client processes say to each other (IPC), and the
 * seeded dropout plan both sides agree on.
 */
import { DeterministicRng } from '../../shared/crypto/rng.js';
import type { ServerEvent } from '../../shared/protocol/messages.js';

/** The phases a demo client can vanish in, named by the message that opens them. */
export const DEMO_DROP_PHASES = ['share-keys', 'masked-input', 'consistency-check', 'unmasking'] as const;
export type DemoDropPhase = (typeof DEMO_DROP_PHASES)[number];
export const OPENED_BY: Record<DemoDropPhase, ServerEvent['type']> = {
  'share-keys': 'advertise-broadcast',
  'masked-input': 'share-broadcast',
  'consistency-check': 'consistency-request',
  unmasking: 'unmask-request',
};

export interface DemoClient {
  clientId: string;
  /** Index of the client's shard in the split. */
  index: number;
  identitySeed: Uint8Array;
  certificateDer: Uint8Array;
}

export interface DemoInit {
  op: 'init';
  address: string;
  caPem: string;
  /** The split: same options in every process, so the same shards. */
  split: { clients: number; seed: number; alpha: number; perDigitLimit?: number };
  dropout: number;
  seed: number;
  clients: DemoClient[];
  /** The registry directory the clients use as their backup registry. */
  registryDir: string;
  /** A folder for the clients' data dirs (trust state, audit book). */
  clientsDir: string;
  /** An external trainer's command line (client run --trainer-cmd); absent: tfjs trains. */
  trainerCmd?: string;
}

export type DemoRequest = DemoInit | { op: 'round-ended'; roundIndex: number } | { op: 'stop' };

/** What a client process reports (events carry counts and timings, never data). */
export type DemoReport =
  | { op: 'ready'; backend: string }
  | { op: 'error'; message: string }
  | { op: 'stopped' }
  | { op: 'trained'; clientId: string; roundIndex: number; modelVersion: number; examples: number; loss: number; trainMs: number; fetchMs: number }
  /** The client's compute for its masked input (quantized update plus k + 1 masks). */
  | { op: 'masked'; clientId: string; roundIndex: number; ms: number }
  | { op: 'dropped'; clientId: string; roundIndex: number; phase: DemoDropPhase }
  | { op: 'sat-out'; clientId: string; roundIndex: number; code: string }
  | { op: 'left'; clientId: string; roundIndex: number; code: string }
  | { op: 'audit'; clientId: string; roundIndex: number }
  | { op: 'fatal'; clientId: string; code: string; message: string };

/** Whether (and where) a client drops out of a round: seeded per (seed, client, round). */
export function dropPlan(seed: number, clientId: string, roundIndex: number, dropout: number): DemoDropPhase | null {
  if (dropout <= 0) return null;
  const rng = DeterministicRng.fromSeed('aegis-demo-dropout', `${seed}:${clientId}:${roundIndex}`);
  if (rng.nextFloat() >= dropout) return null;
  return DEMO_DROP_PHASES[Math.floor(rng.nextFloat() * DEMO_DROP_PHASES.length)]!;
}
