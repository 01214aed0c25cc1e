/** tsbuild: a Buildah-style image builder. Subcommands load their modules lazily. */
import { Command } from 'commander';
import { runMain, VERSION } from './common.js';

export function program(): Command {
  const p = new Command('tsbuild')
    .description('Build OCI container images from Dockerfiles/Containerfiles (buildah-compatible)')
    .version(VERSION, '-v, --version')
    .option('--debug', 'print error causes and stack traces')
    .exitOverride();
  return p;
}

export function run(): Promise<void> {
  return runMain('tsbuild', async (argv) => {
    await program().parseAsync(argv, { from: 'user' });
  });
}
