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

  // ---- gc / scrub (registry engineer) ----
  p.command('gc')
    .description('garbage-collect the storage: apply retention policies, then delete unreferenced blobs (and untagged manifests with --delete-untagged) older than the grace period')
    .option('-c, --config <file>', 'YAML configuration file (storage root, gc and retention settings)')
    .option('-r, --root <dir>', 'data directory (overrides the config)')
    .option('-n, --dry-run', 'report what would be deleted; delete nothing')
    .option('--grace-period <duration>', 'keep blobs and manifests younger than this (default gc.gracePeriod, 1h)')
    .option('--delete-untagged', 'also delete manifests that no tag, index or referrer reaches')
    .option('--no-retention', 'skip the retention policies of the config')
    .option('--format <fmt>', 'output: text or json', 'text')
    .option('-q, --quiet', 'print nothing but errors')
    .action(async (opts) => {
      const { gc } = await import('./registry-admin.js');
      process.exitCode = await gc(opts, rootController.signal);
    })
    .exitOverride();

  p.command('scrub')
    .description('re-hash every stored blob and manifest; report corrupt ones and move them to <root>/quarantine (exit 1 when any was found)')
    .option('-c, --config <file>', 'YAML configuration file (storage root)')
    .option('-r, --root <dir>', 'data directory (overrides the config)')
    .option('-n, --dry-run', 'report only; quarantine nothing')
    .option('-j, --jobs <n>', 'blobs hashed in parallel', '4')
    .option('--format <fmt>', 'output: text or json', 'text')
    .option('-q, --quiet', 'print only problems')
    .action(async (opts: { jobs?: string }) => {
      const { scrubCmd } = await import('./registry-admin.js');
      process.exitCode = await scrubCmd({ ...opts, concurrency: opts.jobs }, rootController.signal);
    })
    .exitOverride();
  // ---- end gc / scrub ----

  return p;
}

export function run(): Promise<void> {
  return runMain('tsregistry', async (argv) => {
    await program().parseAsync(argv, { from: 'user' });
    // commands that report a status (gc, scrub) set process.exitCode
    return typeof process.exitCode === 'number' ? process.exitCode : undefined;
  });
}
