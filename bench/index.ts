/**
 * `npm run bench -- <topic> [--json] [--quick] [--budget SECONDS]`: one file per topic, each
 * printing a table (or one JSON document with --json) and a ratio against a baseline measured
 * in the same run. Progress goes to stderr.
 */
import { Command } from 'commander';
import { parseIntOption, reportError } from '../shared/cli/output.js';
import { benchRpc } from './rpc.js';
import { benchSecagg } from './secagg.js';
import { benchTrain } from './train.js';
import { benchScale } from './scale.js';
import { benchRegistry } from './registry.js';
import { benchRefuse } from './refuse.js';
import { benchSoak } from './soak.js';
import { benchDp } from './dp.js';
import { benchClient } from './client.js';
import { benchFloor } from './floor.js';

const TOPICS: Record<string, (o: { json: boolean; quick: boolean; budgetSeconds: number }) => Promise<void>> = {
  secagg: benchSecagg,
  rpc: benchRpc,
  train: benchTrain,
  scale: benchScale,
  registry: benchRegistry,
  refuse: benchRefuse,
  soak: benchSoak,
  dp: benchDp,
  client: benchClient,
  floor: benchFloor,
};

const program = new Command();
program
  .name('bench')
  .argument('<topic>', `one of: ${Object.keys(TOPICS).join(', ')}`)
  .option('--json', 'print one JSON document on stdout')
  .option('--quick', 'a smaller grid (for a first look)')
  .option('--budget <seconds>', 'skip configurations estimated to take longer', parseIntOption('budget', 1, 86400), 300)
  .action(async (topic: string, o: { json?: boolean; quick?: boolean; budget: number }) => {
    const run = TOPICS[topic];
    if (!run) {
      process.stderr.write(`unknown benchmark topic "${topic}"; topics: ${Object.keys(TOPICS).join(', ')}\n`);
      process.exitCode = 2;
      return;
    }
    try {
      await run({ json: Boolean(o.json), quick: Boolean(o.quick), budgetSeconds: o.budget });
    } catch (err) {
      reportError(err, Boolean(o.json));
    }
  });
await program.parseAsync(process.argv);
