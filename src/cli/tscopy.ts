/** tscopy: a Skopeo-style image copy tool. Subcommands load their modules lazily. */
import { Command } from 'commander';
import { runMain, VERSION } from './common.js';
import { registerSignCommands } from './tscopy-sign.js';
import { registerCopyCommands } from './tscopy-copy.js';
import { registerRegistryCommands } from './tscopy-registry.js';

export function program(): Command {
  const p = new Command('tscopy')
    .description('Inspect, copy, mirror and sign container images between registries and local layouts (skopeo-compatible)')
    .version(VERSION, '-v, --version')
    .option('--debug', 'print error causes and stack traces')
    .exitOverride();
  // --- copy, inspect, sync (src/cli/tscopy-copy.ts) ---
  registerCopyCommands(p);
  // --- login, logout, list-tags, delete (src/cli/tscopy-registry.ts) ---
  registerRegistryCommands(p);
  // --- sign: generate-key-pair, sign, verify, attach, referrers (src/cli/tscopy-sign.ts) ---
  registerSignCommands(p);
  // --- end sign ---
  return p;
}

export function run(): Promise<void> {
  return runMain('tscopy', async (argv) => {
    await program().parseAsync(argv, { from: 'user' });
  });
}
