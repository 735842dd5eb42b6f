/**
 * The Aegis dashboard page (vanilla TypeScript, built by Vite into dist/dashboard/ and served by
 * the coordinator's dashboard server). Two views, hash-routed:
 *   #/            jobs: id, kind, manifest signer, state, rounds done/total, current round and phase
 *   #/job/<id>    a job: the current round's phase timeline (clients per phase out of expected,
 *                 declines by reason, dropouts, refusals, abort reason), accuracy and loss per
 *                 round (uPlot), the rounds table, poisoning flags
 * Live: Server-Sent Events from /api/events; when the stream drops the page polls the JSON API
 * and reopens the stream now and then. A 401 stops everything and says how to sign in.
 * Session: the event stream alone does not keep the session alive (the server's idle timeout
 * counts requests); a click, key, wheel or the tab coming back into view sends a light
 * `GET /api/session` at most once a minute. "Sign out" in the header is a form POST to /logout.
 * Everything the API sends is rendered as text (textContent / text nodes), never as HTML.
 */
import './style.css';
import {
  getJson,
  jobPath,
  NotFound,
  PHASES,
  readJobDetail,
  readJobs,
  readOverview,
  Unauthenticated,
  type JobDetail,
  type JobSummary,
  type Overview,
  type RoundInfo,
} from './api.js';
import { ACCURACY, LOSS, epsilonChart, metricChart } from './charts.js';
import { fmtClock, fmtMs, fmtNum, fmtOf, fmtPct, h, setText } from './dom.js';

const POISONING_TEXT = 'held back: suspected poisoning; clients enter audit mode';
const POLL_MS = 2000;
const POLL_MAX_MS = 30_000;
const REOPEN_STREAM_MS = 15_000;
/** The operator's activity tells the server at most this often. */
const ACTIVITY_PING_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// State

const state = {
  overview: null as Overview | null,
  jobs: null as JobSummary[] | null,
  details: new Map<string, JobDetail>(),
  missing: new Set<string>(),
  signedOut: false,
};

function byId(id: string): HTMLElement {
  const e = document.getElementById(id);
  if (!e) throw new Error(`#${id} is missing from index.html`);
  return e;
}

const app = byId('app');
const connEl = byId('conn');
const registryEl = byId('registry');
const flagsEl = byId('flags');
const clientsEl = byId('clients');

/** How many clients sat a round out. */
const declinedCount = (r: RoundInfo): number => r.declines.reduce((a, d) => a + d.clients, 0);
/** "approval-required 2, no-input 1" ('' without declines). */
const declinesText = (r: RoundInfo): string => r.declines.map((d) => `${d.reason} ${d.clients}`).join(', ');

function summaryOf(jobId: string): JobSummary | null {
  return state.jobs?.find((j) => j.jobId === jobId) ?? state.details.get(jobId)?.job ?? null;
}

function applyJobs(jobs: JobSummary[]): void {
  state.jobs = jobs;
  for (const j of jobs) state.missing.delete(j.jobId);
}

function applyDetail(d: JobDetail): void {
  state.details.set(d.job.jobId, d);
  state.missing.delete(d.job.jobId);
  // Keep the jobs list as fresh as the newest detail.
  if (state.jobs) {
    const i = state.jobs.findIndex((j) => j.jobId === d.job.jobId);
    if (i >= 0) state.jobs[i] = d.job;
    else state.jobs.push(d.job);
  }
}

// ---------------------------------------------------------------------------------------------
// Header

function renderHeader(): void {
  const o = state.overview;
  if (!o) return;
  if (o.registry && o.registry.version !== null) {
    const pubs = o.registry.publishers;
    setText(registryEl, `registry v${o.registry.version}${pubs === null ? '' : ` · ${pubs} publisher${pubs === 1 ? '' : 's'}`}`);
    registryEl.setAttribute('data-value', String(o.registry.version));
  } else {
    setText(registryEl, 'no registry');
    registryEl.setAttribute('data-value', '');
  }
  const n = o.flags.poisoningFlaggedRounds;
  flagsEl.hidden = n === 0;
  flagsEl.className = 'badge warn';
  setText(flagsEl, `audit mode: ${n} round${n === 1 ? '' : 's'} held back (suspected poisoning)`);
  const c = o.coordinator;
  setText(clientsEl, c ? `${fmtOf(c.connectedClients, c.enrolledClients)} clients connected` : '');
}

type ConnState = 'connecting' | 'live' | 'polling' | 'offline' | 'signed-out';
const CONN_TEXT: Record<ConnState, string> = {
  connecting: 'connecting…',
  live: '● live',
  polling: '◌ polling (live stream lost)',
  offline: '○ coordinator unreachable, retrying',
  'signed-out': 'signed out',
};

function setConn(s: ConnState): void {
  connEl.setAttribute('data-state', s);
  setText(connEl, CONN_TEXT[s]);
}

// ---------------------------------------------------------------------------------------------
// Views

interface View {
  update(): void;
  destroy(): void;
}
let view: View | null = null;

function stateBadge(s: string, testId?: string): HTMLElement {
  return h('span', { class: `badge state-${s.replace(/[^a-z-]/g, '')}`, 'data-testid': testId }, s || '–');
}

function signerText(j: JobSummary): string {
  if (!j.signer) return 'unsigned';
  const key = j.signer.keyId.length > 16 ? `${j.signer.keyId.slice(0, 16)}…` : j.signer.keyId;
  return j.signer.publisher ? `${j.signer.publisher} (${key})` : key;
}

const jobHref = (jobId: string): string => `#/job/${encodeURIComponent(jobId)}`;

/**
 * Rounds are shown counted from 1, as everywhere people read them (the CLI, the demo); the API's
 * round index counts from 0 and stays in the elements' data-value. Model version v is the model
 * after v completed rounds: the charts' x axis is the model version, 0 the initial model.
 */
const roundNo = (index: number | null): string => (index === null ? '–' : String(index + 1));

function jobsView(): View {
  const tbody = h('tbody');
  const empty = h('p', { class: 'muted', 'data-testid': 'jobs-empty' }, 'No jobs yet.');
  const heads = ['Job', 'Kind', 'Signer', 'State', 'Rounds done', 'Round', 'Phase', 'Elapsed'];
  app.replaceChildren(
    h(
      'section',
      { 'data-testid': 'jobs-view' },
      h('h1', {}, 'Jobs'),
      h('table', { class: 'grid', 'data-testid': 'jobs-table' }, h('thead', {}, h('tr', {}, ...heads.map((t) => h('th', {}, t)))), tbody),
      empty,
    ),
  );
  const row = (j: JobSummary): HTMLElement => {
    const tr = h(
      'tr',
      { 'data-testid': `job-row-${j.jobId}`, class: 'clickable' },
      h('td', {}, h('a', { href: jobHref(j.jobId), 'data-testid': 'job-link' }, j.jobId)),
      h('td', {}, j.kind || '–'),
      h('td', { class: 'mono', title: j.signer?.keyId }, signerText(j)),
      h('td', {}, stateBadge(j.state, 'job-state')),
      h('td', { 'data-testid': 'job-rounds' }, fmtOf(j.roundsDone, j.rounds)),
      h('td', { 'data-testid': 'job-round-index', 'data-value': fmtNum(j.roundIndex) }, roundNo(j.roundIndex)),
      h('td', { 'data-testid': 'job-phase', 'data-value': j.phase ?? '' }, j.phase ?? '–'),
      h('td', {}, fmtMs(j.elapsedMs)),
    );
    tr.addEventListener('click', (e) => {
      if ((e.target as Element | null)?.closest('a')) return;
      location.hash = jobHref(j.jobId);
    });
    return tr;
  };
  return {
    update() {
      const jobs = state.jobs ?? [];
      empty.hidden = jobs.length > 0;
      if (state.jobs === null) setText(empty, 'Loading…');
      else setText(empty, 'No jobs yet.');
      tbody.replaceChildren(...jobs.map(row));
    },
    destroy() {},
  };
}

/** The round the job is in (or last ran). */
function currentRound(d: JobDetail | undefined, j: JobSummary | null): RoundInfo | undefined {
  if (!d || d.rounds.length === 0) return undefined;
  const idx = j?.roundIndex ?? null;
  const matching = idx === null ? [] : d.rounds.filter((r) => r.index === idx);
  return matching[matching.length - 1] ?? d.rounds[d.rounds.length - 1];
}

type StepState = 'pending' | 'current' | 'done' | 'failed';

function stepper(): { element: HTMLElement; update(r: RoundInfo | undefined, running: boolean): void } {
  const items = PHASES.map((p) => {
    const time = h('span', { class: 'step-time', 'data-testid': 'step-time' }, '–');
    const clients = h('span', { class: 'step-clients', 'data-testid': 'step-clients' }, '');
    const li = h('li', { class: 'step', 'data-testid': `step-${p}`, 'data-state': 'pending' }, h('span', { class: 'step-name' }, p), time, clients);
    return { phase: p, li, time, clients };
  });
  const element = h('ol', { class: 'stepper', 'data-testid': 'phase-timeline' }, ...items.map((i) => i.li));
  return {
    element,
    update(r, running) {
      const start = r?.startedAt ?? r?.timeline[0]?.at ?? null;
      const lastMark = r?.timeline[r.timeline.length - 1];
      for (const it of items) {
        const k = r ? r.timeline.findIndex((m) => m.phase === it.phase) : -1;
        const mark = k >= 0 ? r?.timeline[k] : undefined;
        let s: StepState = 'pending';
        let text = '–';
        if (r && mark) {
          const next = r.timeline[k + 1]?.at ?? (r.finished ? r.endedAt : null);
          const isLast = mark === lastMark;
          if (!r.finished && running && isLast) s = 'current';
          else if (r.finished && !r.ok && isLast) s = 'failed';
          else s = 'done';
          const from = start === null ? fmtClock(mark.at) : `at +${fmtMs(mark.at - start)}`;
          text = next === null ? `${from} · running` : `${from} · took ${fmtMs(next - mark.at)}`;
        }
        it.li.setAttribute('data-state', s);
        setText(it.time, text);
        const c = r?.clientsPerPhase.find((x) => x.phase === it.phase);
        setText(it.clients, c ? `${fmtOf(c.clients, c.expected)} clients` : '');
      }
    },
  };
}

function jobView(jobId: string): View {
  const title = h('h1', {}, 'Job ', h('span', { class: 'mono', 'data-testid': 'job-id' }, jobId), ' ');
  const stateSlot = h('span', {});
  title.append(stateSlot);
  const missing = h('p', { class: 'notice', 'data-testid': 'job-missing', hidden: true }, 'No such job on this coordinator.');
  const dd = (testId: string): HTMLElement => h('dd', { 'data-testid': testId }, '–');
  const kind = dd('job-kind');
  const signer = dd('job-signer');
  const roundsDone = dd('rounds-done');
  const started = dd('job-started');
  const elapsed = dd('job-elapsed');
  const modelVersion = dd('model-version');
  const summary = h(
    'dl',
    { class: 'facts' },
    ...[
      ['Kind', kind],
      ['Manifest signer', signer],
      ['Rounds done', roundsDone],
      ['Started', started],
      ['Elapsed', elapsed],
      ['Model version', modelVersion],
    ].flatMap(([k, v]) => [h('dt', {}, k as string), v as HTMLElement]),
  );
  const poisoning = h('p', { class: 'notice warn', 'data-testid': 'poisoning-badge', hidden: true }, '');

  const roundIndex = h('span', { class: 'big', 'data-testid': 'round-index', 'data-value': '' }, '–');
  const roundOf = h('span', { class: 'muted' }, '');
  const phase = h('span', { class: 'big phase', 'data-testid': 'phase', 'data-value': '' }, '–');
  const steps = stepper();
  const stat = (label: string, testId: string): [HTMLElement, HTMLElement] => {
    const v = h('span', { class: 'stat-value', 'data-testid': testId }, '–');
    return [h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, label), v), v];
  };
  const [invitedBox, invited] = stat('invited', 'invited');
  const [dropoutsBox, dropouts] = stat('dropouts', 'dropouts');
  const [declinedBox, declined] = stat('declined', 'declined');
  const [refusedBox, refused] = stat('refused', 'refused');
  const [abortBox, abort] = stat('abort reason', 'abort-reason');
  const [roundTimeBox, roundTime] = stat('round time', 'round-time');
  const current = h(
    'section',
    { class: 'panel', 'data-testid': 'current-round' },
    h('h2', {}, 'Round ', roundIndex, roundOf, ' · ', phase),
    steps.element,
    h('div', { class: 'stats' }, invitedBox, declinedBox, dropoutsBox, refusedBox, abortBox, roundTimeBox),
  );

  const acc = metricChart(ACCURACY);
  const loss = metricChart(LOSS);
  // A DP job's privacy spent sits beside its accuracy.
  const epsilon = epsilonChart();
  const charts = h('section', { class: 'charts' }, acc.element, epsilon.element, loss.element);
  const noTraining = h('p', { class: 'muted', 'data-testid': 'no-training', hidden: true }, 'Not a training job: no model to check.');

  const heads = ['Round', 'Outcome', 'Clients', 'Invited', 'Declined', 'Dropouts', 'Refused', 'Time', 'Model', 'Test acc', 'Test loss', 'Flags'];
  const tbody = h('tbody');
  const rounds = h(
    'section',
    { class: 'panel' },
    h('h2', {}, 'Rounds'),
    h('table', { class: 'grid', 'data-testid': 'rounds-table' }, h('thead', {}, h('tr', {}, ...heads.map((t) => h('th', {}, t)))), tbody),
  );

  app.replaceChildren(
    h(
      'section',
      { 'data-testid': 'job-view' },
      h('p', {}, h('a', { href: '#/', 'data-testid': 'back' }, '← all jobs')),
      title,
      missing,
      summary,
      poisoning,
      current,
      charts,
      noTraining,
      rounds,
    ),
  );

  const roundRow = (r: RoundInfo, d: JobDetail): HTMLElement => {
    const model = d.training?.models.find((m) => m.roundIndex === r.index && r.ok);
    const lastCount = r.clientsPerPhase[r.clientsPerPhase.length - 1];
    const flagged = r.poisoningFlagged || (d.training?.flaggedRounds.includes(r.index) ?? false);
    const outcome = r.finished ? (r.ok ? 'completed' : `aborted${r.abortReason ? `: ${r.abortReason}` : ''}`) : r.phase || 'running';
    return h(
      'tr',
      { 'data-testid': `round-row-${r.index}`, class: r.finished ? (r.ok ? '' : 'aborted') : 'running' },
      h('td', {}, roundNo(r.index)),
      h('td', { title: r.detail || undefined }, outcome),
      h('td', {}, lastCount ? fmtOf(lastCount.clients, lastCount.expected) : '–'),
      h('td', {}, fmtNum(r.invited)),
      h('td', { title: declinesText(r) || undefined, 'data-testid': `round-declined-${r.index}` }, fmtNum(declinedCount(r))),
      h('td', {}, fmtNum(r.dropouts)),
      h('td', {}, fmtNum(r.refused)),
      h('td', {}, fmtMs(r.elapsedMs)),
      h('td', { class: 'mono', title: model?.sha256 || undefined }, model ? `v${model.version}` : '–'),
      h('td', {}, model ? fmtPct(model.accuracy) : '–'),
      h('td', {}, model && model.loss !== null ? model.loss.toFixed(4) : '–'),
      h('td', {}, flagged ? h('span', { class: 'badge warn', 'data-testid': 'round-poisoning' }, POISONING_TEXT) : ''),
    );
  };

  return {
    update() {
      const j = summaryOf(jobId);
      const d = state.details.get(jobId);
      missing.hidden = !(state.missing.has(jobId) && !j);
      stateSlot.replaceChildren(j ? stateBadge(j.state, 'job-state') : '');
      if (j) {
        setText(kind, j.kind || '–');
        setText(signer, signerText(j));
        if (j.signer) signer.title = j.signer.keyId;
        setText(roundsDone, fmtOf(j.roundsDone, j.rounds));
        setText(started, fmtClock(j.startedAt));
        setText(elapsed, fmtMs(j.elapsedMs));
      }
      const r = currentRound(d, j);
      const running = j ? j.state === 'running' : !(r?.finished ?? true);
      const idx = j?.roundIndex ?? r?.index ?? null;
      const ph = (running ? j?.phase : null) ?? r?.phase ?? j?.state ?? null;
      setText(roundIndex, roundNo(idx));
      // A training job's rounds go on after an aborted one until enough completed: it shows that
      // count; a plain job's round is one of a fixed number.
      setText(roundOf, !j?.rounds ? '' : j.kind === 'training' ? ` (${j.roundsDone ?? 0} of ${j.rounds} completed)` : ` of ${j.rounds}`);
      roundIndex.setAttribute('data-value', idx === null ? '' : String(idx));
      setText(phase, ph ?? '–');
      phase.setAttribute('data-value', ph ?? '');
      steps.update(r, running);
      setText(invited, fmtNum(r?.invited ?? null));
      setText(dropouts, fmtNum(r?.dropouts ?? null));
      setText(declined, r ? `${fmtNum(declinedCount(r))}${declinesText(r) ? ` (${declinesText(r)})` : ''}` : '–');
      declinedBox.classList.toggle('bad', r ? declinedCount(r) > 0 : false);
      setText(refused, fmtNum(r?.refused ?? null));
      setText(abort, r?.abortReason ?? (r?.finished ? 'none' : '–'));
      abort.parentElement?.classList.toggle('bad', Boolean(r?.abortReason));
      setText(roundTime, fmtMs(r?.elapsedMs ?? null));
      dropoutsBox.classList.toggle('bad', (r?.dropouts ?? 0) > 0);
      refusedBox.classList.toggle('bad', (r?.refused ?? 0) > 0);
      invitedBox.hidden = false;
      roundTimeBox.hidden = false;

      const t = d?.training ?? null;
      const models = t?.models ?? [];
      const latest = models[models.length - 1];
      setText(modelVersion, latest ? `v${latest.version} · ${latest.sha256.slice(0, 12)}…` : '–');
      noTraining.hidden = !(d && !t);
      charts.hidden = Boolean(d && !t);
      acc.update(models);
      loss.update(models);
      epsilon.update(d?.dp ?? null);
      const flagged = new Set<number>([...(t?.flaggedRounds ?? []), ...(d?.rounds ?? []).filter((x) => x.poisoningFlagged).map((x) => x.index)]);
      poisoning.hidden = flagged.size === 0;
      const flaggedNos = [...flagged].sort((a, b) => a - b).map((i) => roundNo(i));
      setText(poisoning, `Round${flagged.size === 1 ? '' : 's'} ${flaggedNos.join(', ')} ${POISONING_TEXT}.`);
      tbody.replaceChildren(...(d ? d.rounds.map((x) => roundRow(x, d)) : []));
    },
    destroy() {
      acc.destroy();
      loss.destroy();
      epsilon.destroy();
    },
  };
}

function routeJobId(): string | null {
  const m = /^#\/job\/(.+)$/.exec(location.hash);
  if (!m?.[1]) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

function mount(): void {
  if (state.signedOut) return;
  view?.destroy();
  const jobId = routeJobId();
  view = jobId === null ? jobsView() : jobView(jobId);
  view.update();
  if (jobId !== null && !state.details.has(jobId)) void loadDetail(jobId);
}

function render(): void {
  if (state.signedOut) return;
  renderHeader();
  view?.update();
}

// ---------------------------------------------------------------------------------------------
// Data: first load, Server-Sent Events, polling fallback

function signOut(): void {
  if (state.signedOut) return;
  state.signedOut = true;
  live.es?.close();
  live.es = null;
  stopPolling();
  window.clearTimeout(live.reopenTimer);
  view?.destroy();
  view = null;
  setConn('signed-out');
  app.replaceChildren(
    h(
      'section',
      { class: 'notice signed-out', 'data-testid': 'unauthenticated' },
      h('h1', {}, 'Not signed in'),
      h('p', {}, 'Not signed in: run ', h('code', {}, 'aegis dashboard token'), ' and open the link it prints (each link works once), or ', h('a', { href: '/login', 'data-testid': 'sign-in-link' }, 'sign in'), ' with a token.'),
    ),
  );
}

async function loadDetail(jobId: string): Promise<void> {
  try {
    const d = readJobDetail(await getJson(jobPath(jobId)));
    if (d) applyDetail(d);
  } catch (e) {
    if (e instanceof Unauthenticated) return signOut();
    if (e instanceof NotFound) state.missing.add(jobId);
  }
  render();
}

/** Fetches everything the current view shows (first load and polling). */
async function refreshAll(): Promise<void> {
  const jobId = routeJobId();
  const [o, j, d] = await Promise.all([
    getJson('/api/overview'),
    getJson('/api/jobs'),
    jobId === null
      ? Promise.resolve(null)
      : getJson(jobPath(jobId)).catch((e: unknown) => {
          if (e instanceof NotFound) {
            state.missing.add(jobId);
            return null;
          }
          throw e;
        }),
  ]);
  state.overview = readOverview(o) ?? state.overview;
  applyJobs(readJobs(j));
  const detail = d === null ? null : readJobDetail(d);
  if (detail) applyDetail(detail);
  render();
}

const live = {
  es: null as EventSource | null,
  pollTimer: 0,
  pollDelay: POLL_MS,
  reopenTimer: 0,
};

function parse(e: Event): unknown {
  try {
    return JSON.parse((e as MessageEvent<string>).data) as unknown;
  } catch {
    return null;
  }
}

function openStream(): void {
  if (state.signedOut || live.es) return;
  const es = new EventSource('/api/events');
  live.es = es;
  es.addEventListener('open', () => {
    stopPolling();
    setConn('live');
  });
  es.addEventListener('jobs', (e) => {
    applyJobs(readJobs(parse(e)));
    render();
  });
  es.addEventListener('job', (e) => {
    const d = readJobDetail(parse(e));
    if (d) applyDetail(d);
    render();
  });
  es.addEventListener('overview', (e) => {
    state.overview = readOverview(parse(e)) ?? state.overview;
    render();
  });
  es.addEventListener('error', () => {
    if (live.es !== es) return;
    // The stream dropped (or was refused: the first poll tells a 401 apart). Poll meanwhile and
    // try the stream again later; EventSource's own retry is turned off by closing it.
    es.close();
    live.es = null;
    if (state.signedOut) return;
    setConn('polling');
    startPolling();
    window.clearTimeout(live.reopenTimer);
    live.reopenTimer = window.setTimeout(openStream, REOPEN_STREAM_MS);
  });
}

function startPolling(): void {
  if (live.pollTimer !== 0 || state.signedOut) return;
  live.pollDelay = POLL_MS;
  live.pollTimer = window.setTimeout(() => void pollOnce(), 0);
}

function stopPolling(): void {
  window.clearTimeout(live.pollTimer);
  live.pollTimer = 0;
}

async function pollOnce(): Promise<void> {
  try {
    await refreshAll();
    live.pollDelay = POLL_MS;
    if (!live.es || live.es.readyState !== EventSource.OPEN) setConn('polling');
  } catch (e) {
    if (e instanceof Unauthenticated) return signOut();
    live.pollDelay = Math.min(live.pollDelay * 2, POLL_MAX_MS);
    setConn('offline');
  }
  if (live.pollTimer === 0 || state.signedOut) return; // stopped meanwhile (the stream is back)
  live.pollTimer = window.setTimeout(() => void pollOnce(), live.pollDelay);
}

/** The operator is using the page: the session's idle timeout starts again (throttled). */
let lastActivityPing = Date.now();
function activity(): void {
  if (state.signedOut || Date.now() - lastActivityPing < ACTIVITY_PING_MS) return;
  lastActivityPing = Date.now();
  getJson('/api/session').catch((e: unknown) => {
    if (e instanceof Unauthenticated) signOut();
  });
}

async function start(): Promise<void> {
  window.addEventListener('hashchange', mount);
  for (const ev of ['pointerdown', 'keydown', 'wheel']) window.addEventListener(ev, activity, { passive: true });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') activity();
  });
  mount();
  try {
    await refreshAll();
  } catch (e) {
    if (e instanceof Unauthenticated) return signOut();
    setConn('offline');
    startPolling();
  }
  openStream();
}

void start();
