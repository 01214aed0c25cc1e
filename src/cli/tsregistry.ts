/** tsregistry: an OCI registry server. Subcommands load their modules lazily. */
import { Command } from 'commander';
import { runMain, VERSION } from './common.js';

export function program(): Command {
  const p = new Command('tsregistry')
    .description('An OCI Distribution Spec v1.1 registry server')
    .version(VERSION, '-v, --version')
    .option('--debug', 'print error causes and stack traces')
    .exitOverride();
  return p;
}

export function run(): Promise<void> {
  return runMain('tsregistry', async (argv) => {
    await program().parseAsync(argv, { from: 'user' });
  });
}
