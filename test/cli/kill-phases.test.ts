/**
 * A coordinator killed with SIGKILL in each phase of a training job's round, each a real
 * `aegis coordinator start` process (dist/) that kills itself at an exact point, with three
 * `aegis client run` processes training on real digits that reconnect with backoff to the
 * coordinator started again on the same data dir:
 *
 * - killed before any masked input left a client (phases advertise-keys, share-keys and
 *   masked-input before its broadcast reached anyone), the interrupted round is rerun under the
 *   next round index from the same model version, and the job completes;
 * - killed after the masked inputs left (consistency-check, unmasking), every client sits the
 *   rerun out (`replayed-round`: a coordinator that crashed cannot be told from one that learned
 *   that sum and asks for a second), so the rerun aborts with a typed reason and the job ends on
 *   its last published version — and a new revision launched from that version's model completes.
 *
 * The kill point is the first event of its kind in the job's 2nd round (the 4th with 3 clients).
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cliJson } from '../support/cli.js';
import { CoordinatorProcess, exited } from '../support/coordinator-process.js';

const h = new CoordinatorProcess('kill-phases');

beforeAll(() => h.setUp(), 120_000);
afterAll(() => h.tearDown());

/** Each phase of round 2 and the event whose first queueing in that round kills the coordinator. */
const PHASES: [phase: string, killAt: string, inputsLeft: boolean][] = [
  ['advertise-keys', 'round-start:4', false],
  ['share-keys', 'advertise-broadcast:4', false],
  ['masked-input', 'share-broadcast:4', false],
  ['consistency-check', 'consistency-request:4', true],
  ['unmasking', 'unmask-request:4', true],
];

describe('a coordinator killed with SIGKILL in each phase of a training round', () => {
  test.each(PHASES)('in %s (at %s): the job goes on from its last published model version', async (phase, killAt, inputsLeft) => {
    const job = `kill-${phase}`;
    await h.kill();
    const dying = await h.start({ AEGIS_TEST_KILL_AT: killAt });
    expect(h.launch(h.manifestFile(job, 3), false).status).toBe(0);
    expect(await exited(dying)).toBe('SIGKILL');
    await h.start();
    const s = h.watchToEnd(job);

    // Round 2 (index 1) died with the process: recorded interrupted, nothing published from it.
    expect(cliJson(h.admin('round', 'status', job, '--round', '2'))).toMatchObject({ finished: true, ok: false, abort_reason: 'interrupted' });
    const versions = h.exportedIndex(job).map((v) => [v.version, v.roundIndex ?? null]);
    if (!inputsLeft) {
      // No masked input had left a client: round 3 reran round 2 from version 1 with every client.
      expect(s).toMatchObject({ round_number: 3, finished: true, ok: true, state: 'completed' });
      expect(s.training).toMatchObject({ state: 'completed', rounds_completed: 2, rounds_aborted: 1, model_version: 2 });
      expect(versions).toEqual([[0, null], [1, 0], [2, 2]]);
      expect(cliJson(h.admin('round', 'result', job, '--round', '3')).survivors).toEqual(['dev-0', 'dev-1', 'dev-2']);
      return;
    }
    // Every client had sent its masked input of round 2: each declines the rerun of version 1.
    expect(s).toMatchObject({ round_number: 3, finished: true, ok: false, abort_reason: 'too-few-clients', declines: { 'replayed-round': 3 } });
    // Its round indexes are used up: it ends on the version it published, saying how far it got.
    expect(s.training).toMatchObject({ state: 'completed', rounds_completed: 1, rounds_aborted: 2, model_version: 1, detail: '1 of 3 rounds completed (2 aborted or held back)' });
    expect(versions).toEqual([[0, null], [1, 0]]);

    // The clean relaunch: a new revision whose initial weights are version 1's model.
    const out = join(h.root, `${job}-v1`);
    const saved = cliJson(h.admin('round', 'model', job, '--model-version', '1', '--out', out));
    const weights = join(out, 'weights.bin');
    const sha = createHash('sha256').update(readFileSync(weights)).digest('hex');
    expect(saved.sha256).toBe(sha);
    const again = cliJson(h.launch(h.manifestFile(job, 1, 2, 20_000, sha), true, weights));
    expect(again.status).toMatchObject({ job_id: job, revision: 2, state: 'completed', ok: true });
    expect(again.status.training).toMatchObject({ state: 'completed', rounds_completed: 1, model_version: 1 });
  });
});
