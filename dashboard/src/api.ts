/**
 * The dashboard's JSON API (see coordinator/service/dashboard.ts): the shapes the page reads, and
 * lenient readers that turn whatever arrived into those shapes. The page renders only these
 * fields — counts, phases, reason codes (declines by reason too), job ids, hashes, accuracy and loss, a DP job's ε — and never dumps a
 * body as it came, so a field the server might add later cannot leak onto the page.
 */

export const PHASES = ['advertise-keys', 'share-keys', 'masked-input', 'consistency-check', 'unmasking'] as const;

export interface Signer {
  keyId: string;
  publisher: string | null;
}

export interface JobSummary {
  jobId: string;
  kind: string;
  state: string;
  signer: Signer | null;
  roundsDone: number | null;
  rounds: number | null;
  roundIndex: number | null;
  phase: string | null;
  startedAt: number | null;
  elapsedMs: number | null;
}

export interface PhaseMark {
  phase: string;
  at: number;
}

export interface PhaseCount {
  phase: string;
  clients: number | null;
  expected: number | null;
}

export interface RoundInfo {
  index: number;
  phase: string;
  ok: boolean;
  finished: boolean;
  startedAt: number | null;
  endedAt: number | null;
  elapsedMs: number | null;
  timeline: PhaseMark[];
  clientsPerPhase: PhaseCount[];
  invited: number | null;
  dropouts: number | null;
  refused: number | null;
  /** Clients that sat the round out, by reason code. */
  declines: DeclineCount[];
  abortReason: string | null;
  detail: string;
  poisoningFlagged: boolean;
}

export interface DeclineCount {
  reason: string;
  clients: number;
}

export interface ModelVersion {
  version: number;
  roundIndex: number | null;
  clients: number | null;
  accuracy: number | null;
  loss: number | null;
  sha256: string;
}

export interface Training {
  state: string;
  roundsCompleted: number | null;
  roundsAborted: number | null;
  flaggedRounds: number[];
  models: ModelVersion[];
}

/** ε after one charged round of a DP job. */
export interface DpRound {
  index: number;
  epsilon: number;
}

/** A DP job's privacy: ε (at delta) after each charged round against the job's budget. */
export interface Dp {
  mechanism: string;
  delta: number | null;
  epsilonBudget: number;
  epsilonSpent: number | null;
  roundsTotal: number | null;
  rounds: DpRound[];
}

export interface JobDetail {
  job: JobSummary;
  rounds: RoundInfo[];
  training: Training | null;
  /** null for a job without differential privacy. */
  dp: Dp | null;
}

export interface Overview {
  coordinator: { startedAt: number | null; connectedClients: number | null; enrolledClients: number | null } | null;
  registry: { version: number | null; publishers: number | null } | null;
  flags: { poisoningFlaggedRounds: number };
}

type Obj = Record<string, unknown>;

function obj(v: unknown): Obj | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : null;
}
function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}
function str(v: unknown, fallback = ''): string {
  return typeof v === 'string' ? v : fallback;
}
function strOrNull(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function readSigner(v: unknown): Signer | null {
  const o = obj(v);
  if (!o) return null;
  return { keyId: str(o.keyId), publisher: strOrNull(o.publisher) };
}

export function readJobSummary(v: unknown): JobSummary | null {
  const o = obj(v);
  if (!o || typeof o.jobId !== 'string') return null;
  return {
    jobId: o.jobId,
    kind: str(o.kind),
    state: str(o.state),
    signer: readSigner(o.signer),
    roundsDone: num(o.roundsDone),
    rounds: num(o.rounds),
    roundIndex: num(o.roundIndex),
    phase: strOrNull(o.phase),
    startedAt: num(o.startedAt),
    elapsedMs: num(o.elapsedMs),
  };
}

export function readJobs(v: unknown): JobSummary[] {
  return arr(obj(v)?.jobs)
    .map(readJobSummary)
    .filter((j): j is JobSummary => j !== null);
}

function readRound(v: unknown): RoundInfo | null {
  const o = obj(v);
  const index = num(o?.index);
  if (!o || index === null) return null;
  return {
    index,
    phase: str(o.phase),
    ok: o.ok === true,
    finished: o.finished === true,
    startedAt: num(o.startedAt),
    endedAt: num(o.endedAt),
    elapsedMs: num(o.elapsedMs),
    timeline: arr(o.timeline).flatMap((m) => {
      const x = obj(m);
      const at = num(x?.at);
      return x && typeof x.phase === 'string' && at !== null ? [{ phase: x.phase, at }] : [];
    }),
    clientsPerPhase: arr(o.clientsPerPhase).flatMap((m) => {
      const x = obj(m);
      return x && typeof x.phase === 'string' ? [{ phase: x.phase, clients: num(x.clients), expected: num(x.expected) }] : [];
    }),
    invited: num(o.invited),
    dropouts: num(o.dropouts),
    refused: num(o.refused),
    declines: arr(o.declines).flatMap((m) => {
      const x = obj(m);
      const clients = num(x?.clients);
      return x && typeof x.reason === 'string' && clients !== null && clients > 0 ? [{ reason: x.reason, clients }] : [];
    }),
    abortReason: strOrNull(o.abortReason),
    detail: str(o.detail),
    poisoningFlagged: o.poisoningFlagged === true,
  };
}

function readModel(v: unknown): ModelVersion | null {
  const o = obj(v);
  const version = num(o?.version);
  if (!o || version === null) return null;
  return {
    version,
    roundIndex: num(o.roundIndex),
    clients: num(o.clients),
    accuracy: num(o.accuracy),
    loss: num(o.loss),
    sha256: str(o.sha256),
  };
}

function readTraining(v: unknown): Training | null {
  const o = obj(v);
  if (!o) return null;
  return {
    state: str(o.state),
    roundsCompleted: num(o.roundsCompleted),
    roundsAborted: num(o.roundsAborted),
    flaggedRounds: arr(o.flaggedRounds).filter((x): x is number => typeof x === 'number'),
    models: arr(o.models)
      .map(readModel)
      .filter((m): m is ModelVersion => m !== null)
      .sort((a, b) => a.version - b.version),
  };
}

function readDp(v: unknown): Dp | null {
  const o = obj(v);
  const budget = num(o?.epsilonBudget);
  if (!o || budget === null) return null;
  return {
    mechanism: str(o.mechanism),
    delta: num(o.delta),
    epsilonBudget: budget,
    epsilonSpent: num(o.epsilonSpent),
    roundsTotal: num(o.roundsTotal),
    rounds: arr(o.rounds)
      .flatMap((m) => {
        const x = obj(m);
        const index = num(x?.index);
        const epsilon = num(x?.epsilon);
        return index !== null && epsilon !== null ? [{ index, epsilon }] : [];
      })
      .sort((a, b) => a.index - b.index),
  };
}

export function readJobDetail(v: unknown): JobDetail | null {
  const o = obj(v);
  const job = readJobSummary(o?.job);
  if (!o || !job) return null;
  return {
    job,
    rounds: arr(o.rounds)
      .map(readRound)
      .filter((r): r is RoundInfo => r !== null),
    training: readTraining(o.training),
    dp: readDp(o.dp),
  };
}

export function readOverview(v: unknown): Overview | null {
  const o = obj(v);
  if (!o) return null;
  const c = obj(o.coordinator);
  const r = obj(o.registry);
  const f = obj(o.flags);
  return {
    coordinator: c ? { startedAt: num(c.startedAt), connectedClients: num(c.connectedClients), enrolledClients: num(c.enrolledClients) } : null,
    registry: r ? { version: num(r.version), publishers: num(r.publishers) } : null,
    flags: { poisoningFlaggedRounds: num(f?.poisoningFlaggedRounds) ?? 0 },
  };
}

/** The session is missing or expired: the page stops and asks for a new token. */
export class Unauthenticated extends Error {
  constructor() {
    super('unauthenticated');
    this.name = 'Unauthenticated';
  }
}

/** The job does not exist (404). */
export class NotFound extends Error {
  constructor(what: string) {
    super(`not found: ${what}`);
    this.name = 'NotFound';
  }
}

/** GETs an API path with the session cookie; 401 → Unauthenticated, 404 → NotFound. */
export async function getJson(path: string): Promise<unknown> {
  const res = await fetch(path, { headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' });
  if (res.status === 401) throw new Unauthenticated();
  if (res.status === 404) throw new NotFound(path);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return (await res.json()) as unknown;
}

export const jobPath = (jobId: string): string => `/api/jobs/${encodeURIComponent(jobId)}`;
