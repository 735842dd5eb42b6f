#!/usr/bin/env node
/**
 * The `aegis` CLI entry: the crash handler, then the program (bin/program.ts).
 */
import { installCrashHandler } from '../shared/log.js';
import { buildProgram } from './program.js';

installCrashHandler();

await buildProgram().parseAsync(process.argv);
