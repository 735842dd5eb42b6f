/**
 * Child-process entry of `aegis simulate --transport grpc`: hosts many `ClientRunner`s, each
 * with its own mTLS gRPC channel to the coordinator, driven by IPC messages from the parent
 * (bench/sim/grpc-sim.ts). Inputs are the simulator's synthetic inputs with its seeded rounding
 * (client-host.ts), so the parent can recompute the ground truth without any vector over IPC.
 *
 * Uploads: the masked input (m + 1 words) is computed and sent when `share-broadcast` arrives.
 * All clients of a process share one thread, so without pacing they would compute one vector
 * after another while none of the uploads makes progress, and then all send at once.
 * `uploadsInFlight` (CLI default 0: no limit — the coordinator's upload gate bounds its memory)
 * lets at most that many clients of a process compute-and-upload at a time — each waits for the
 * coordinator's reply before the next starts, as one device with one uplink would.
 *
 * A client scheduled to drop at phase P stops its runner (ends its stream, closes its channel)
 * when the message that opens P arrives, and answers nothing from then on — the same mapping
 * from incoming message to phase as client-host.ts, plus `round-start` for `advertise`.
 */
import { ClientRunner, type RunnerEvent } from '../../client/agent/connection.js';
import { rawInputId } from '../../client/admission/ledger.js';
import { createIdentity } from '../../client/enroll/csr.js';
import { encodeWeightedInput } from '../../shared/crypto/quantize.js';
import { DeterministicRng } from '../../shared/crypto/rng.js';
import type { ServerEvent } from '../../shared/protocol/messages.js';
import type { RoundParams } from '../../shared/protocol/params.js';
import { DROP_PHASES, syntheticInput, type DropPhase } from './client-host.js';
import { countAgentTraffic, emptyCounts, settleCounts, type WireCounts } from './wire-count.js';

export interface GrpcWorkerClient {
  clientId: string;
  index: number;
  /** The 32-byte Ed25519 identity seed. */
  identitySeed: Uint8Array;
  certificateDer: Uint8Array;
  dropAt: DropPhase | null;
}

export interface GrpcWorkerInit {
  op: 'init';
  address: string;
  caPem: string;
  seed: number;
  /** Masked-input uploads in flight per client process; 0: no limit. */
  uploadsInFlight: number;
  /** A warm-up round comes first (until `measure`): nobody drops, inputs from another seed. */
  warmUp?: boolean;
  clients: GrpcWorkerClient[];
}

export interface GrpcWorkerStats {
  clientMs: number[];
  prgWords: number;
  aborted: { id: string; reason: string }[];
  /** Clients that stopped on their drop schedule. */
  dropped: string[];
  /** Peak RSS of this client process, MB. */
  peakRssMb: number;
  /** Bytes of the protocol messages its clients sent and were sent, by phase. */
  wire: WireCounts;
  /** Peers' certificates its clients parsed and checked against the CA (remembered ones are not checked again). */
  certificateChecks: number;
}

/** `measure`: the warm-up round is over; the counts start again from zero for the measured round. */
export type GrpcWorkerRequest = GrpcWorkerInit | { op: 'measure' } | { op: 'stats' } | { op: 'stop' };
export type GrpcWorkerReply = { op: 'ready' } | { op: 'measuring' } | { op: 'stats'; stats: GrpcWorkerStats } | { op: 'stopped' } | { op: 'error'; message: string };

/** The warm-up round's inputs come from this seed offset (the ledger refuses one input in two rounds). */
const WARM_UP_SEED_OFFSET = 1_000_003;

/** The phase whose message a client would send in answer to each coordinator event. */
const ANSWER_PHASE: Record<ServerEvent['type'], DropPhase | null> = {
  'round-start': 'advertise',
  'advertise-broadcast': 'share',
  'share-broadcast': 'masked',
  'consistency-request': 'consistency',
  'unmask-request': 'unmask',
  'round-outcome': null,
};

interface Hosted {
  c: GrpcWorkerClient;
  runner: ClientRunner;
  ms: number;
  prgWords: number;
  dropped: boolean;
  aborted?: string;
  /** Its runner's certificate checks when the measured round began. */
  checksBefore: number;
  /** The round's parameters, from its start. */
  params?: RoundParams;
  /**
   * The synthetic update, made before the step that masks it is timed: it stands for what local
   * training hands a real client (quantizing it is the client's work, and is timed).
   */
  prepared?: { x: Float64Array; weight: number };
}

const hosted: Hosted[] = [];
let wire = emptyCounts();
/** In the warm-up round (until `measure`). */
let warming = false;

/** A counting semaphore; `limit` 0 never waits. */
class Gate {
  private active = 0;
  private readonly queue: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async run<T>(f: () => Promise<T>): Promise<T> {
    if (this.limit > 0 && this.active >= this.limit) await new Promise<void>((r) => this.queue.push(r));
    this.active++;
    try {
      return await f();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}

function reply(r: GrpcWorkerReply): void {
  process.send?.(r);
}

async function init(req: GrpcWorkerInit): Promise<void> {
  const uploads = new Gate(req.uploadsInFlight);
  warming = req.warmUp === true;
  const seedNow = (): number => (warming ? req.seed + WARM_UP_SEED_OFFSET : req.seed);
  for (const c of req.clients) {
    const identity = await createIdentity(c.identitySeed);
    const index = c.index;
    const h: Hosted = { c, runner: undefined as unknown as ClientRunner, ms: 0, prgWords: 0, dropped: false, checksBefore: 0 };
    h.runner = new ClientRunner({
      address: req.address,
      caPem: req.caPem,
      clientId: c.clientId,
      identity,
      certificateDer: c.certificateDer,
      // The synthetic input stands for what local training hands the client: made once per
      // round, when admission first asks for it. The ledger identifies it by its values, as
      // `aegis client run --input` does; the masking step takes the same values.
      inputIdentity: async (_round, params) => {
        const { x, weight } = (h.prepared ??= syntheticInput(seedNow(), index, params.dim, params.clip));
        return rawInputId(x, weight);
      },
      input: (_round, params) => {
        const ready = h.prepared;
        h.prepared = undefined;
        const seed = seedNow();
        const { x, weight } = ready ?? syntheticInput(seed, index, params.dim, params.clip);
        return encodeWeightedInput(x, weight, params, DeterministicRng.fromSeed('aegis-sim-rounding', `${seed}:${index}`));
      },
      backoffMs: { min: 50, max: 1000 },
      onEvent: (e: RunnerEvent) => {
        if (e.kind === 'aborted') h.aborted = e.reason;
      },
    });
    // Intercept the agent's events: drop on schedule, and time the client's own compute (the
    // synchronous part of handling an event: the state machine and encoding the reply, not the
    // network round trip).
    const agent = h.runner.agent;
    // Every protocol message the client sends and takes (a dropped client takes none: the
    // interception below swallows them before they reach the count).
    countAgentTraffic(agent, () => wire);
    const original = agent.onEvent.bind(agent);
    agent.onEvent = async (ev: ServerEvent): Promise<void> => {
      if (h.dropped) return;
      const answers = ANSWER_PHASE[ev.type];
      if (!warming && c.dropAt !== null && answers !== null && DROP_PHASES.indexOf(c.dropAt) <= DROP_PHASES.indexOf(answers)) {
        h.dropped = true;
        void h.runner.stop(); // not awaited: stop() waits for this very handler to return
        return;
      }
      if (ev.type === 'round-start') h.params = ev.params;
      if (ev.type === 'share-broadcast' && h.params) h.prepared ??= syntheticInput(seedNow(), index, h.params.dim, h.params.clip);
      const handle = async (): Promise<void> => {
        const t = performance.now();
        const p = original(ev);
        h.ms += performance.now() - t;
        await p;
      };
      if (ev.type === 'share-broadcast') await uploads.run(handle);
      else await handle();
      const state = agent['state'];
      if (state) h.prgWords = Math.max(h.prgWords, state.stats.prgWords);
    };
    hosted.push(h);
  }
  for (const h of hosted) h.runner.start();
  reply({ op: 'ready' });
}

/** The warm-up round is over: what the clients spent and sent starts from zero again. */
function measure(): void {
  warming = false;
  wire = emptyCounts();
  for (const h of hosted) {
    h.ms = 0;
    h.prgWords = 0;
    delete h.aborted;
    h.prepared = undefined; // an input made for the warm-up round is not the measured round's
    h.checksBefore = h.runner.peerCertificateChecks;
  }
}

function stats(): GrpcWorkerStats {
  const joined = hosted.filter((h) => h.ms > 0);
  return {
    clientMs: joined.map((h) => h.ms),
    prgWords: hosted.reduce((a, h) => a + h.prgWords, 0),
    aborted: hosted.filter((h) => h.aborted !== undefined).map((h) => ({ id: h.c.clientId, reason: h.aborted! })),
    dropped: hosted.filter((h) => h.dropped).map((h) => h.c.clientId),
    peakRssMb: Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10,
    wire: settleCounts(wire),
    certificateChecks: hosted.reduce((a, h) => a + h.runner.peerCertificateChecks - h.checksBefore, 0),
  };
}

async function stop(): Promise<void> {
  await Promise.all(hosted.map((h) => h.runner.stop()));
  process.send?.({ op: 'stopped' } satisfies GrpcWorkerReply, () => process.exit(0));
}

process.on('message', (req: GrpcWorkerRequest) => {
  const run = async (): Promise<void> => {
    switch (req.op) {
      case 'init':
        return init(req);
      case 'measure':
        measure();
        return reply({ op: 'measuring' });
      case 'stats':
        return reply({ op: 'stats', stats: stats() });
      case 'stop':
        return stop();
    }
  };
  run().catch((err: unknown) => reply({ op: 'error', message: err instanceof Error ? err.message : String(err) }));
});
// The parent went away: nothing left to do here.
process.on('disconnect', () => process.exit(0));
