/**
 * The job history across coordinator restarts, each a real `aegis` process (dist/): a
 * coordinator killed with SIGKILL answers `round list | status | result | model` the same when it
 * starts again; a training job it was running resumes from its last model version — killed
 * between two rounds (killed inside a round, in each of its phases: test/cli/kill-phases.test.ts); and an ended job id is
 * launched again under a higher revision without a restart. Three `aegis client run` processes
 * train on real digits throughout and reconnect to each new coordinator process by themselves.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cliJson } from '../support/cli.js';
import { CoordinatorProcess, exited, type TrainingStatus } from '../support/coordinator-process.js';

const h = new CoordinatorProcess('job-history');
const { admin, aegis, launch, clientProcesses } = h;
const json = cliJson;
const startCoordinator = (extraEnv: Record<string, string> = {}): Promise<ChildProcess> => h.start(extraEnv);
const killCoordinator = (): Promise<void> => h.kill();
const manifestFile = (jobId: string, rounds: number, revision = 1, advertiseMs = 20_000): string => h.manifestFile(jobId, rounds, revision, advertiseMs);
const watchToEnd = (jobId: string): TrainingStatus => h.watchToEnd(jobId);
const exportedIndex = (dir: string): { version: number; roundIndex?: number; sha256: string }[] => h.exportedIndex(dir);
let root: string;
let coordDir: string;
let initialSha: string;

beforeAll(async () => {
  await h.setUp();
  ({ root, coordDir, initialSha } = h);
});

afterAll(() => h.tearDown());

describe('the job history across coordinator restarts', () => {
  test('a coordinator killed with SIGKILL answers round list, status, result and model identically when it starts again', async () => {
    const l = json(launch(manifestFile('hist-a', 2), true));
    expect(l.status.training).toMatchObject({ state: 'completed', rounds_completed: 2, model_version: 2 });
    let outs = 0;
    const answers = (): Record<string, unknown> => {
      const out = join(root, `model-out-${outs++}`);
      const model = json(admin('round', 'model', 'hist-a', '--out', out));
      return {
        list: json(admin('round', 'list')),
        status: json(admin('round', 'status', 'hist-a')),
        status0: json(admin('round', 'status', 'hist-a', '--round', '1')),
        result: json(admin('round', 'result', 'hist-a')),
        result0: json(admin('round', 'result', 'hist-a', '--round', '1')),
        model: { version: model.version, sha256: model.sha256, weights: readFileSync(join(out, 'weights.bin')).toString('base64') },
        model0: json(admin('round', 'model', 'hist-a', '--model-version', '0', '--out', join(root, `model-out-${outs++}`))).sha256,
      };
    };
    const before = answers();
    expect((before.result as { survivors: string[] }).survivors).toEqual(['dev-0', 'dev-1', 'dev-2']);
    expect(before.model0).toBe(initialSha);
    await killCoordinator();
    // The history is private to the coordinator's account.
    expect(statSync(join(coordDir, 'jobs.db')).mode & 0o777).toBe(0o600);
    await startCoordinator();
    expect(answers()).toEqual(before);
  });

  test('a training job whose coordinator was killed between two rounds resumes from its last model version and completes', async () => {
    await killCoordinator();
    // This process kills itself once round 1's model version is in the history, before round 2 starts.
    const dying = await startCoordinator({ AEGIS_TEST_KILL_AT: 'between-rounds:1' });
    expect(launch(manifestFile('hist-b', 3), false).status).toBe(0);
    expect(await exited(dying)).toBe('SIGKILL');
    await startCoordinator();
    const s = watchToEnd('hist-b');
    expect(s.training).toMatchObject({ state: 'completed', rounds_completed: 3, rounds_aborted: 0, model_version: 3 });
    // Model versions go on from version 1 (made by round 1 before the kill): one per round.
    expect(exportedIndex('hist-b').map((v) => [v.version, v.roundIndex ?? null])).toEqual([[0, null], [1, 0], [2, 1], [3, 2]]);
    for (const round of ['1', '2', '3']) expect(json(admin('round', 'result', 'hist-b', '--round', round)).survivors).toEqual(['dev-0', 'dev-1', 'dev-2']);
  });

  test('an ended job id is launched again under a higher revision, with no restart', async () => {
    // A completed job: the same manifest is refused, so is another of the same revision.
    expect(json(launch(manifestFile('hist-a', 2), false)).error.code).toBe('already-exists');
    const same = json(launch(manifestFile('hist-a', 1), false));
    expect(same.error.code).toBe('already-exists');
    expect(same.error.message).toMatch(/higher revision/);
    const again = json(launch(manifestFile('hist-a', 1, 2), true));
    expect(again.status).toMatchObject({ job_id: 'hist-a', revision: 2, state: 'completed' });
    expect(again.status.training).toMatchObject({ state: 'completed', rounds_completed: 1, model_version: 1 });
    expect(json(admin('round', 'list')).jobs.find((j: { job_id: string }) => j.job_id === 'hist-a')).toMatchObject({ revision: 2, state: 'completed', rounds_done: 1, rounds_total: 1 });
    expect(aegis(['round', 'status', 'hist-a', '--data-dir', coordDir]).stdout).toMatch(/^job hist-a revision 2 round 1: completed\n(.*\n)* {2}training job completed: 1 of 1 rounds completed/);
    // Revision 2's model versions are exported apart from revision 1's.
    expect(exportedIndex('hist-a@r2').map((v) => v.version)).toEqual([0, 1]);
    expect(exportedIndex('hist-a').map((v) => v.version)).toEqual([0, 1, 2]);

    // A cancelled job too: its round waits for the keys of clients held stopped until it is cancelled.
    for (const c of clientProcesses) c.kill('SIGSTOP');
    try {
      expect(launch(manifestFile('hist-d', 2, 1, 600_000), false).status).toBe(0);
      expect(json(admin('round', 'cancel', 'hist-d'))).toMatchObject({ ok: true, job_id: 'hist-d', round_index: 0, round_number: 1 });
    } finally {
      for (const c of clientProcesses) c.kill('SIGCONT');
    }
    expect(json(admin('round', 'status', 'hist-d'))).toMatchObject({ revision: 1, state: 'cancelled' });
    expect(json(launch(manifestFile('hist-d', 2, 1, 600_000), false)).error.code).toBe('already-exists');
    const d2 = json(launch(manifestFile('hist-d', 1, 2), true));
    expect(d2.status).toMatchObject({ job_id: 'hist-d', revision: 2, state: 'completed' });

    // After a restart the latest revision answers.
    await killCoordinator();
    await startCoordinator();
    const list = json(admin('round', 'list')).jobs as { job_id: string; revision: number; state: string }[];
    // Oldest launch first: a job launched again under a new revision moves to its new launch.
    expect(list.map((j) => [j.job_id, j.revision, j.state])).toEqual([
      ['hist-b', 1, 'completed'],
      ['hist-a', 2, 'completed'],
      ['hist-d', 2, 'completed'],
    ]);
  });
});
