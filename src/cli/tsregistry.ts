/** tsregistry: an OCI registry server. Subcommands load their modules lazily. */
import { Command } from 'commander';
import { runMain, rootController, VERSION } from './common.js';

export function program(): Command {
  const p = new Command('tsregistry')
    .description('An OCI Distribution Spec v1.1 registry server')
    .version(VERSION, '-v, --version')
    .option('--debug', 'print error causes and stack traces')
    .exitOverride();

  // ---- serve (registry engineer) ----
  p.command('serve')
    .description('run the registry (filesystem storage; see --help-config for every option)')
    .option('-c, --config <file>', 'YAML configuration file')
    .option('-a, --addr <host:port>', 'address to listen on (default 127.0.0.1:5000; port 0 = any free port)')
    .option('-r, --root <dir>', 'data directory (default $TSIMAGE_REGISTRY_ROOT or <tsimage root>/registry)')
    .option('--help-config', 'list every configuration key with its environment variable and default')
    .action(async (opts: { config?: string; addr?: string; root?: string; helpConfig?: boolean }) => {
      const { serve } = await import('./registry-serve.js');
      await serve(opts, rootController.signal);
    })
    .exitOverride();
  // ---- end serve ----

  return p;
}

export function run(): Promise<void> {
  return runMain('tsregistry', async (argv) => {
    await program().parseAsync(argv, { from: 'user' });
  });
}
