/**
 * Child-process entry of `aegis demo` and `npm run bench -- train`: hosts some of the demo's
 * clients, each a real `ClientRunner` (its own mTLS channel, round tokens, Subscribe stream)
 * with a tfjs trainer — or an external trainer process (`--trainer pytorch|numpy`) — reading its
 * shard through the client's local data store interface (`MemoryDataStore`). The shard is this process's own: it re-derives the seeded split
 * (bench/demo/mnist.ts) and keeps the shards of its clients, so no training sample crosses IPC.
 *
 * Dropouts: with probability `dropout` per client and round (seeded), a client vanishes in one
 * of the round's phases — it stops its runner (stream and channel gone) when the message that
 * opens that phase arrives — and comes back, as a new runner with the same identity, once the
 * parent says the round is over.
 */
import { ClientRunner, type RunnerEvent } from '../../client/agent/connection.js';
import type { TrainingRound } from '../../client/admission/training-round.js';
import { createIdentity, type ClientIdentity } from '../../client/enroll/csr.js';
import { MemoryDataStore } from '../../client/store/memory.js';
import { trainLocally, validateLocally } from '../../client/trainer/index.js';
import { externalTrainerRunner } from '../../client/trainer/external.js';
import { AuditBook } from '../../client/audit/audit.js';
import { TrustBook } from '../../shared/trust/trust-book.js';
import { readSnapshot } from '../../shared/trust/registry-dir.js';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadTf } from '../../shared/model/tfjs.js';
import type { ServerEvent } from '../../shared/protocol/messages.js';
import { dropPlan, OPENED_BY, type DemoClient, type DemoInit, type DemoReport, type DemoRequest } from './ipc.js';
import { splitDigits } from './mnist.js';

interface Hosted {
  c: DemoClient;
  identity: ClientIdentity;
  store: MemoryDataStore;
  dataDir: string;
  audit: AuditBook;
  /** The external trainer process's fit and evaluate (demo --trainer pytorch|numpy); absent: tfjs. */
  external: ReturnType<typeof externalTrainerRunner> | undefined;
  runner: ClientRunner | undefined;
  /** The round this client vanished from; it comes back when that round is over. */
  droppedIn: number | undefined;
}

const hosted: Hosted[] = [];
let init: DemoInit | undefined;

const send = (r: DemoReport): void => void process.send?.(r);

function startRunner(h: Hosted): void {
  const req = init!;
  const runner = new ClientRunner({
    address: req.address,
    caPem: req.caPem,
    clientId: h.c.clientId,
    identity: h.identity,
    certificateDer: h.c.certificateDer,
    backoffMs: { min: 50, max: 1000 },
    // The client's trust: the coordinator's registry checked against the backup registry, its
    // own audit book, and its local validation of every global model.
    trust: { backup: () => readSnapshot(req.registryDir), book: TrustBook.open(h.dataDir) },
    audit: h.audit,
    // An external trainer trains before the client answers phase 0 (trainFirst), so a failure declines the round.
    ...(h.external
      ? h.external
      : {
          validate: async (round: TrainingRound) => validateLocally({ manifest: round.manifest, weights: round.globalWeights, data: h.store }),
          train: async (round: TrainingRound) => trainLocally({ manifest: round.manifest, globalWeights: round.globalWeights, data: h.store, maxWeight: 2 ** round.manifest.round.bits - 1 }),
        }),
    onEvent: (e: RunnerEvent) => {
      if (e.kind === 'trained') send({ op: 'trained', clientId: h.c.clientId, roundIndex: e.roundIndex, modelVersion: e.modelVersion, examples: e.examples, loss: e.loss, trainMs: e.trainMs, fetchMs: e.fetchMs });
      else if (e.kind === 'sat-out') send({ op: 'sat-out', clientId: h.c.clientId, roundIndex: e.roundIndex, code: e.code });
      else if (e.kind === 'poisoning-flag') send({ op: 'audit', clientId: h.c.clientId, roundIndex: e.roundIndex });
      else if (e.kind === 'left') send({ op: 'left', clientId: h.c.clientId, roundIndex: e.roundIndex, code: e.code });
      else if (e.kind === 'computed' && e.type === 'share-broadcast') send({ op: 'masked', clientId: h.c.clientId, roundIndex: e.roundIndex, ms: e.ms });
      else if (e.kind === 'fatal') send({ op: 'fatal', clientId: h.c.clientId, code: e.code, message: e.message });
    },
  });
  // Drop on schedule.
  const agent = runner.agent;
  const original = agent.onEvent.bind(agent);
  agent.onEvent = async (ev: ServerEvent): Promise<void> => {
    if (h.droppedIn !== undefined) return;
    const round = agent.currentRound ?? (ev.type === 'round-start' ? ev.round : null);
    if (round) {
      const plan = dropPlan(req.seed, h.c.clientId, round.roundIndex, req.dropout);
      if (plan !== null && OPENED_BY[plan] === ev.type) {
        h.droppedIn = round.roundIndex;
        send({ op: 'dropped', clientId: h.c.clientId, roundIndex: round.roundIndex, phase: plan });
        void runner.stop(); // not awaited: stop() must not wait for this very handler
        return;
      }
    }
    return original(ev);
  };
  h.runner = runner;
  runner.start();
}

async function start(req: DemoInit): Promise<void> {
  init = req;
  const { backend } = await loadTf();
  const split = splitDigits({ clients: req.split.clients, seed: req.split.seed, alpha: req.split.alpha, ...(req.split.perDigitLimit ? { perDigitLimit: req.split.perDigitLimit } : {}) });
  for (const c of req.clients) {
    const dataDir = join(req.clientsDir, c.clientId);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const store = new MemoryDataStore(split.shards[c.index]!);
    const h: Hosted = {
      c,
      identity: await createIdentity(c.identitySeed),
      store,
      external: req.trainerCmd === undefined ? undefined : externalTrainerRunner({ cmd: req.trainerCmd, timeoutMs: 600_000, data: store }),
      dataDir,
      audit: await AuditBook.open(dataDir),
      runner: undefined,
      droppedIn: undefined,
    };
    hosted.push(h);
  }
  for (const h of hosted) startRunner(h);
  send({ op: 'ready', backend });
}

/** Clients that vanished from a round that is now over come back. */
function roundEnded(roundIndex: number): void {
  for (const h of hosted) {
    if (h.droppedIn !== undefined && h.droppedIn <= roundIndex) {
      h.droppedIn = undefined;
      startRunner(h);
    }
  }
}

async function stop(): Promise<void> {
  await Promise.all(hosted.map((h) => h.runner?.stop()));
  process.send?.({ op: 'stopped' } satisfies DemoReport, () => process.exit(0));
}

process.on('message', (req: DemoRequest) => {
  const run = async (): Promise<void> => {
    switch (req.op) {
      case 'init':
        return start(req);
      case 'round-ended':
        return roundEnded(req.roundIndex);
      case 'stop':
        return stop();
    }
  };
  run().catch((err: unknown) => send({ op: 'error', message: err instanceof Error ? err.message : String(err) }));
});
process.on('disconnect', () => process.exit(0));
