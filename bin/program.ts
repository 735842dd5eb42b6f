/**
 * The `aegis` program: the root command with every command group registered (they live with the
 * code they drive) and the usage-error conventions applied. `bin/aegis.ts` runs it; the CLI
 * error test walks it to reach every command.
 */
import { Command } from 'commander';
import { registerDemo } from '../bench/demo/cli.js';
import { registerSimulate } from '../bench/sim/cli.js';
import { registerClient } from '../client/cli.js';
import { registerTrainer } from '../client/trainer/check-cli.js';
import { registerClients, registerCoordinator } from '../coordinator/cli.js';
import { registerRound } from '../coordinator/round-cli.js';
import { registerDashboard } from '../coordinator/dashboard/cli.js';
import { registerCa } from '../coordinator/ca-cli.js';
import { registerOperators, registerTokens } from '../coordinator/operators-cli.js';
import { registerManifest } from '../shared/trust/manifest-cli.js';
import { registerRegistry } from '../shared/trust/registry-cli.js';
import { formatDuration } from '../shared/cli/output.js';
import { usageErrorsExit2Everywhere } from '../shared/cli/usage.js';
import { registerKeys } from '../shared/keystore/keys-cli.js';
import { registerDp } from '../shared/dp/cli.js';
import { openStoreHolder } from '../client/store/cli.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('aegis')
    .description('Federated learning with secure aggregation (SecAgg / SecAgg+)')
    .version('0.1.0')
    // Root options only before the subcommand, so `aegis keys destroy --version N` is the subcommand's.
    .enablePositionalOptions()
    .showHelpAfterError();
  registerCoordinator(program);
  registerClients(program);
  registerOperators(program);
  registerTokens(program);
  registerCa(program);
  registerRound(program);
  registerDashboard(program);
  registerClient(program);
  registerTrainer(program);
  registerManifest(program);
  registerRegistry(program);
  registerDp(program);
  registerKeys(program, [openStoreHolder]);
  registerSimulate(program);
  registerDemo(program);
  describeDurationDefaults(program);
  // Every bad flag or value exits 2 naming it (shared/cli/usage.ts), whatever its parser throws.
  return usageErrorsExit2Everywhere(program);
}

/** Help shows a duration option's default as it would be typed ("7d"), not in milliseconds. */
function describeDurationDefaults(cmd: Command): void {
  for (const opt of cmd.options) {
    if (/<duration>/.test(opt.flags) && typeof opt.defaultValue === 'number' && opt.defaultValueDescription === undefined) opt.defaultValueDescription = formatDuration(opt.defaultValue);
  }
  for (const sub of cmd.commands) describeDurationDefaults(sub);
}
