#!/usr/bin/env node
/**
 * The `aegis` CLI root: it only registers the command groups, which live with the code they
 * drive.
 */
import { Command } from 'commander';
import { registerSimulate } from '../bench/sim/cli.js';

const program = new Command();
program
  .name('aegis')
  .description('Federated learning with secure aggregation (SecAgg / SecAgg+)')
  .version('0.1.0')
  .showHelpAfterError();
registerSimulate(program);

await program.parseAsync(process.argv);
